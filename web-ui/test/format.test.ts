import { describe, expect, it } from 'vitest';

import { formatAgo, formatLatency, formatRate, formatUptime, serviceHealth } from '../src/format';

describe('formatRate', () => {
  it('keeps three significant digits and never prints NaN', () => {
    expect(formatRate(0)).toBe('0');
    expect(formatRate(0.004)).toBe('<0.01');
    expect(formatRate(1.5)).toBe('1.5');
    expect(formatRate(2)).toBe('2');
    expect(formatRate(12.34)).toBe('12.3');
    expect(formatRate(250.4)).toBe('250');
    expect(formatRate(12_345)).toBe('12.3k');
    expect(formatRate(null)).toBe('–');
    expect(formatRate(Number.NaN)).toBe('–');
  });
});

describe('formatLatency', () => {
  it('picks a unit that reads well', () => {
    expect(formatLatency(0)).toBe('0 ms');
    expect(formatLatency(0.42)).toBe('0.42 ms');
    expect(formatLatency(12)).toBe('12 ms');
    expect(formatLatency(12.34)).toBe('12.3 ms');
    expect(formatLatency(450.6)).toBe('451 ms');
    expect(formatLatency(1500)).toBe('1.5 s');
    expect(formatLatency(undefined)).toBe('–');
  });
});

describe('formatUptime and formatAgo', () => {
  it('are coarse on purpose', () => {
    expect(formatUptime(45_000)).toBe('45s');
    expect(formatUptime(200_000)).toBe('3m 20s');
    expect(formatUptime(2 * 3600_000 + 5 * 60_000)).toBe('2h 5m');
    expect(formatUptime(3 * 86400_000 + 4 * 3600_000)).toBe('3d 4h');
    expect(formatUptime(-5)).toBe('0s');
    expect(formatAgo(1_000, 13_000)).toBe('12s ago');
    expect(formatAgo(1_000, 1_500)).toBe('just now');
    expect(formatAgo(0, 5 * 60_000 + 3000)).toBe('5m ago');
  });
});

describe('serviceHealth', () => {
  const base = { failure: null, ready_replicas: 1, desired_replicas: 1 };
  it('names the four states a user cares about', () => {
    expect(serviceHealth({ ...base, status: 'ready' }).label).toBe('serving');
    expect(serviceHealth({ ...base, status: 'scaled_to_zero', ready_replicas: 0, desired_replicas: 0 }).label).toBe(
      'scaled to zero',
    );
    expect(serviceHealth({ ...base, status: 'pending', ready_replicas: 0 }).label).toBe('starting');
    expect(serviceHealth({ ...base, status: 'scaling', desired_replicas: 3 }).label).toBe('serving, scaling to 3');
  });
  it('says why a service is failing', () => {
    const failing = serviceHealth({
      status: 'pending',
      ready_replicas: 0,
      desired_replicas: 1,
      failure: { reason: 'cannot start the command "nope"', at_ms: 1 },
    });
    expect(failing).toEqual({ health: 'failing', label: 'failing', detail: 'cannot start the command "nope"' });
    // A failure followed by enough ready instances is history, not the status.
    expect(
      serviceHealth({ status: 'ready', ready_replicas: 2, desired_replicas: 2, failure: { reason: 'x', at_ms: 1 } }).health,
    ).toBe('serving');
  });
});
