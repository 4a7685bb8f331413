import { describe, expect, it } from 'vitest';

import { latest, mean, peak, toColumns } from '../src/series';
import type { Sample } from '../src/types';

function sample(at_ms: number, rps: number | null, ready = 1): Sample {
  return {
    at_ms,
    requests_per_second: rps,
    concurrency: rps === null ? null : rps / 10,
    desired_replicas: 2,
    ready_replicas: ready,
    latency_p50_ms: null,
    latency_p99_ms: null,
    cold_starts: 0,
    cold_start_ms: null,
  };
}

describe('toColumns', () => {
  it('gives uPlot one x column in seconds and one column per field', () => {
    const columns = toColumns([sample(1000, 5), sample(2000, 7, 2)], ['requests_per_second', 'ready_replicas']);
    expect(columns).toEqual([
      [1, 2],
      [5, 7],
      [1, 2],
    ]);
  });

  it('keeps unmeasured samples as gaps', () => {
    expect(toColumns([sample(1000, null), sample(2000, 3)], ['requests_per_second'])).toEqual([
      [1, 2],
      [null, 3],
    ]);
  });

  it('breaks the line where sampling stopped', () => {
    const columns = toColumns([sample(1000, 1), sample(2000, 2), sample(10_000, 3)], ['requests_per_second']);
    expect(columns).toEqual([
      [1, 2, 3, 10],
      [1, 2, null, 3],
    ]);
  });

  it('handles no samples', () => {
    expect(toColumns([], ['requests_per_second', 'concurrency'])).toEqual([[], [], []]);
  });
});

describe('latest, mean and peak', () => {
  const samples = [sample(1000, 4), sample(2000, 8), sample(3000, null)];
  it('skip what was not measured', () => {
    expect(latest(samples, 'requests_per_second')).toBe(8);
    expect(mean(samples, 'requests_per_second')).toBe(6);
    expect(peak(samples, 'requests_per_second')).toBe(8);
    expect(latest([], 'concurrency')).toBeNull();
    expect(mean([sample(1, null)], 'concurrency')).toBeNull();
  });
});
