// Following a service's instance logs: `GET /services/{name}/logs?follow=true` answers
// newline-delimited JSON that never ends, read here chunk by chunk (EventSource cannot
// send the bearer token). Splitting chunks into lines and keeping the latest lines
// are pure functions; `followLogs` is the thin reader around them.

import { authHeaders } from './api';
import type { LogLine } from './types';

/** How many lines the Logs card keeps; older ones scroll away. */
export const KEPT_LINES = 500;

/** Splits what has arrived into whole lines and the unfinished rest. */
export function splitLines(pending: string, chunk: string): { lines: string[]; rest: string } {
  const parts = (pending + chunk).split('\n');
  const rest = parts.pop() ?? '';
  return { lines: parts.filter((line) => line.trim() !== ''), rest };
}

/** `kept` with `more` after it, the oldest dropped past `max`. */
export function keepLatest<T>(kept: T[], more: T[], max = KEPT_LINES): T[] {
  const all = kept.concat(more);
  return all.length > max ? all.slice(all.length - max) : all;
}

/** Reads one NDJSON line as a log line; anything else is skipped. */
export function parseLogLine(text: string): LogLine | null {
  try {
    const value = JSON.parse(text) as Partial<LogLine>;
    return typeof value.line === 'string' && typeof value.instance === 'string' ? (value as LogLine) : null;
  } catch {
    return null;
  }
}

/** Follows `service`'s logs from `since` ago until `signal` aborts; batches of lines
 * go to `onLines`. Resolves when the answer ends, rejects with the API's message. */
export async function followLogs(
  service: string,
  since: string,
  onLines: (lines: LogLine[]) => void,
  signal: AbortSignal,
): Promise<void> {
  const path = `/api/v1/services/${encodeURIComponent(service)}/logs?follow=true&since=${encodeURIComponent(since)}`;
  const response = await fetch(path, { headers: authHeaders(), signal, cache: 'no-store' });
  if (!response.ok || !response.body) {
    const body = (await response.json().catch(() => null)) as { error?: { message?: string } } | null;
    throw new Error(body?.error?.message ?? `The API answered HTTP ${response.status}.`);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const split = splitLines(pending, value);
    pending = split.rest;
    const lines = split.lines.map(parseLogLine).filter((line): line is LogLine => line !== null);
    if (lines.length) onLines(lines);
  }
}
