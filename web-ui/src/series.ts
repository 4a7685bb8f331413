// Shapes the API's metric samples into the column arrays uPlot draws: one x axis in
// seconds and one array per line, with gaps (null) where nothing was measured and
// where the sampling stopped (a missing second is a gap, not a straight line).

import type { Sample } from './types';

/** uPlot's data: `[xs, ...ys]`, every array the same length. */
export type Columns = [number[], ...(number | null)[][]];

export type Field = keyof Omit<Sample, 'at_ms'>;

/**
 * Columns for `fields` over the samples (oldest first). Where two samples are more
 * than `gapMs` apart a null row is inserted, so lines break instead of bridging time
 * that was never measured.
 */
export function toColumns(samples: Sample[], fields: Field[], gapMs = 3000): Columns {
  const xs: number[] = [];
  const ys: (number | null)[][] = fields.map(() => []);
  let previous: number | null = null;
  for (const sample of samples) {
    if (previous !== null && sample.at_ms - previous > gapMs) {
      xs.push((previous + 1000) / 1000);
      ys.forEach((column) => column.push(null));
    }
    xs.push(sample.at_ms / 1000);
    fields.forEach((field, i) => {
      const value = sample[field];
      ys[i].push(typeof value === 'number' && Number.isFinite(value) ? value : null);
    });
    previous = sample.at_ms;
  }
  return [xs, ...ys];
}

/** The newest sample's value of `field`, or null. */
export function latest(samples: Sample[], field: Field): number | null {
  for (let i = samples.length - 1; i >= 0; i--) {
    const value = samples[i][field];
    if (typeof value === 'number') return value;
  }
  return null;
}

/** The mean of `field` over the samples that measured it, or null. */
export function mean(samples: Sample[], field: Field): number | null {
  let sum = 0;
  let count = 0;
  for (const sample of samples) {
    const value = sample[field];
    if (typeof value === 'number' && Number.isFinite(value)) {
      sum += value;
      count++;
    }
  }
  return count === 0 ? null : sum / count;
}

/** The largest value of `field` over the samples, or null. */
export function peak(samples: Sample[], field: Field): number | null {
  let best: number | null = null;
  for (const sample of samples) {
    const value = sample[field];
    if (typeof value === 'number' && Number.isFinite(value) && (best === null || value > best)) best = value;
  }
  return best;
}
