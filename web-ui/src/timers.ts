// How timers and schedules read on the page: a due time relative to now, and a
// schedule run's outcome in a few words. Pure, so Vitest checks every wording.

import { formatUptime } from './format';
import type { ScheduleRun } from './types';

/** "in 12s", "now", or "3s overdue" for a due time seen at `nowMs`. */
export function formatDue(dueMs: number, nowMs: number): string {
  const ahead = dueMs - nowMs;
  if (Math.abs(ahead) < 1000) return 'now';
  const span = formatUptime(Math.abs(ahead));
  return ahead > 0 ? `in ${span}` : `${span} overdue`;
}

/** A run's outcome: "ok", "failed: why", "skipped 3 missed times", "running"... */
export function describeRun(run: ScheduleRun): string {
  switch (run.outcome) {
    case 'failed':
      return run.error ? `failed: ${run.error}` : 'failed';
    case 'skipped':
      return `skipped ${run.missed} missed time${run.missed === 1 ? '' : 's'}`;
    case 'interrupted':
      return 'interrupted by a change of leader';
    default:
      return run.missed > 0 ? `${run.outcome} (for ${run.missed + 1} missed times)` : run.outcome;
  }
}

/** Whether a run's outcome is bad news. */
export function runFailed(run: ScheduleRun | null): boolean {
  return run?.outcome === 'failed' || run?.outcome === 'interrupted';
}
