import { describe, expect, it } from 'vitest';

import { describeRun, formatDue, runFailed } from '../src/timers';
import type { ScheduleRun } from '../src/types';

const run = (outcome: ScheduleRun['outcome'], extra: Partial<ScheduleRun> = {}): ScheduleRun => ({
  time_ms: 0,
  started_at_ms: 0,
  finished_at_ms: null,
  outcome,
  missed: 0,
  ...extra,
});

describe('formatDue', () => {
  it('says how far ahead or overdue a timer is', () => {
    expect(formatDue(61_000, 0)).toBe('in 1m 1s');
    expect(formatDue(500, 0)).toBe('now');
    expect(formatDue(0, 3_000)).toBe('3s overdue');
  });
});

describe('describeRun', () => {
  it('names the outcome, the error of a failure and the missed times', () => {
    expect(describeRun(run('ok'))).toBe('ok');
    expect(describeRun(run('ok', { missed: 2 }))).toBe('ok (for 3 missed times)');
    expect(describeRun(run('failed', { error: 'UNAVAILABLE (14): no instance' }))).toBe(
      'failed: UNAVAILABLE (14): no instance',
    );
    expect(describeRun(run('skipped', { missed: 1 }))).toBe('skipped 1 missed time');
    expect(describeRun(run('interrupted'))).toBe('interrupted by a change of leader');
    expect(describeRun(run('running'))).toBe('running');
  });

  it('marks failures and interruptions as bad news', () => {
    expect(runFailed(run('failed'))).toBe(true);
    expect(runFailed(run('interrupted'))).toBe(true);
    expect(runFailed(run('ok'))).toBe(false);
    expect(runFailed(null)).toBe(false);
  });
});
