// How numbers, times and states read on the dashboard. Pure functions, unit-tested.

import type { Service } from './types';

/** Requests per second and similar rates: 3 significant digits, never "NaN". */
export function formatRate(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '–';
  if (value === 0) return '0';
  if (value < 0.01) return '<0.01';
  if (value < 10) return value.toFixed(2).replace(/\.?0+$/, '');
  if (value < 1000) return value.toFixed(value < 100 ? 1 : 0).replace(/\.0$/, '');
  return `${(value / 1000).toFixed(1).replace(/\.0$/, '')}k`;
}

/** A latency in milliseconds: "0.42 ms", "12 ms", "1.5 s". */
export function formatLatency(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
  if (ms === 0) return '0 ms';
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 100) return `${ms.toFixed(1).replace(/\.0$/, '')} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1).replace(/\.?0+$/, '')} s`;
}

/** An elapsed time, coarsely: "45s", "3m 20s", "2h 5m", "3d 4h". */
export function formatUptime(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m ${seconds % 60}s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${hours}h ${minutes % 60}m`;
  return `${Math.floor(hours / 24)}d ${hours % 24}h`;
}

/** "12s ago", "5m ago", or the date for anything older than a day. */
export function formatAgo(atMs: number, nowMs: number): string {
  const elapsed = nowMs - atMs;
  if (elapsed < 0) return 'just now';
  if (elapsed < 24 * 3600_000) return elapsed < 1000 ? 'just now' : `${formatUptime(elapsed).split(' ')[0]} ago`;
  return new Date(atMs).toISOString().slice(0, 16).replace('T', ' ');
}

/** Wall-clock time of day, "14:03:27", in the browser's time zone. */
export function formatClock(atMs: number): string {
  const date = new Date(atMs);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

export type Health = 'serving' | 'scaled-to-zero' | 'starting' | 'failing';

export interface ServiceHealth {
  health: Health;
  label: string;
  /** Why, for a failing service. */
  detail?: string;
}

/** What the overview says about a service: serving, scaled to zero, starting, or failing with its reason. */
export function serviceHealth(service: Pick<Service, 'status' | 'failure' | 'ready_replicas' | 'desired_replicas'>): ServiceHealth {
  if (service.failure && service.ready_replicas < Math.max(1, service.desired_replicas)) {
    return { health: 'failing', label: 'failing', detail: service.failure.reason };
  }
  switch (service.status) {
    case 'ready':
      return { health: 'serving', label: 'serving' };
    case 'scaled_to_zero':
      return { health: 'scaled-to-zero', label: 'scaled to zero' };
    case 'scaling':
      return { health: 'serving', label: `serving, scaling to ${service.desired_replicas}` };
    default:
      return { health: 'starting', label: 'starting' };
  }
}

/** A Raft log index that may be unknown. */
export function formatIndex(index: number | null | undefined): string {
  return index === null || index === undefined ? '–' : String(index);
}
