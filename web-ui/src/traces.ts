// How the Traces card reads: the list's filter as a query string, durations in
// words, and a trace laid out as a waterfall (each span under its parent, with
// its offset and width as shares of the whole). Pure, so Vitest checks them.

import type { TraceSpan, TraceView } from './types';

export interface TraceFilter {
  status: '' | 'ok' | 'error';
  /** As typed, e.g. "250ms"; empty for none. */
  minDuration: string;
  entityId: string;
  /** Only traces that held a request through a cold start. */
  coldStarts: boolean;
}

export const NO_FILTER: TraceFilter = { status: '', minDuration: '', entityId: '', coldStarts: false };

/** The list query of the newest kept trace of one kind: a failed call, or a
 *  cold start. */
export const NEWEST_FAILED: TraceFilter = { ...NO_FILTER, status: 'error' };
export const NEWEST_COLD_START: TraceFilter = { ...NO_FILTER, coldStarts: true };

/** Where a link to one trace of `service` goes: its page, with the Traces card
 *  open on that trace's waterfall. */
export function traceHref(service: string, traceId: string): string {
  return `/services/${encodeURIComponent(service)}?trace=${encodeURIComponent(traceId)}`;
}

/** The query string of `GET /services/{name}/traces` for `filter`. */
export function tracesQuery(filter: TraceFilter, limit = 50): string {
  const query = new URLSearchParams();
  if (filter.status) query.set('status', filter.status);
  if (filter.minDuration.trim()) query.set('min_duration', filter.minDuration.trim());
  if (filter.entityId.trim()) query.set('entity_id', filter.entityId.trim());
  if (filter.coldStarts) query.set('cold_start', 'true');
  query.set('limit', String(limit));
  return query.toString();
}

/** "850µs", "12.3ms", "4.20s". */
export function formatMicros(micros: number): string {
  if (micros < 1000) return `${Math.round(micros)}µs`;
  if (micros < 1_000_000) return `${(micros / 1000).toFixed(micros < 10_000 ? 2 : 1)}ms`;
  return `${(micros / 1_000_000).toFixed(2)}s`;
}

export interface WaterfallRow {
  span: TraceSpan;
  /** How many ancestors it has in this trace. */
  depth: number;
  /** Where it starts and how long it lasts, in percent of the trace. */
  offset: number;
  width: number;
}

/** The trace's spans in tree order (a parent before its children, siblings by
 *  start); a span whose parent is not in the trace is a root. */
export function waterfall(trace: TraceView): WaterfallRow[] {
  const spans = trace.span_list;
  const ids = new Set(spans.map((span) => span.span_id));
  const children = new Map<string | null, TraceSpan[]>();
  for (const span of spans) {
    const parent = span.parent_span_id && ids.has(span.parent_span_id) ? span.parent_span_id : null;
    children.set(parent, [...(children.get(parent) ?? []), span]);
  }
  const start = Math.min(...spans.map((span) => span.start_unix_micros));
  const end = Math.max(...spans.map((span) => span.start_unix_micros + span.duration_micros));
  const whole = Math.max(1, end - start);
  const rows: WaterfallRow[] = [];
  const visit = (parent: string | null, depth: number) => {
    const here = [...(children.get(parent) ?? [])].sort((a, b) => a.start_unix_micros - b.start_unix_micros);
    for (const span of here) {
      rows.push({
        span,
        depth,
        offset: ((span.start_unix_micros - start) / whole) * 100,
        width: Math.max(0.5, (span.duration_micros / whole) * 100),
      });
      visit(span.span_id, depth + 1);
    }
  };
  visit(null, 0);
  return rows;
}
