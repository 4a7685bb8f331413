import { describe, expect, it } from 'vitest';

import { formatMicros, NEWEST_COLD_START, NEWEST_FAILED, NO_FILTER, traceHref, tracesQuery, waterfall } from '../src/traces';
import type { TraceSpan, TraceView } from '../src/types';

const span = (id: string, parent: string | null, start: number, duration: number): TraceSpan => ({
  trace_id: 't',
  span_id: id,
  parent_span_id: parent,
  name: `span ${id}`,
  kind: 'server',
  process: 'strata',
  service: null,
  start_unix_micros: start,
  duration_micros: duration,
  status: 'ok',
  status_message: null,
  attributes: {},
});

const trace = (spans: TraceSpan[]): TraceView => ({
  trace_id: 't',
  root: 'span a',
  start_unix_micros: 0,
  duration_micros: 0,
  status: 'ok',
  spans: spans.length,
  services: [],
  entity_ids: [],
  cold_start: false,
  sampled: true,
  kept_because: 'recent',
  span_list: spans,
});

describe('tracesQuery', () => {
  it('sends only the filters that are set', () => {
    expect(tracesQuery(NO_FILTER)).toBe('limit=50');
    expect(tracesQuery({ status: 'error', minDuration: ' 250ms ', entityId: 'ann', coldStarts: false }, 20)).toBe(
      'status=error&min_duration=250ms&entity_id=ann&limit=20',
    );
    expect(tracesQuery(NEWEST_COLD_START, 1)).toBe('cold_start=true&limit=1');
    expect(tracesQuery(NEWEST_FAILED, 1)).toBe('status=error&limit=1');
  });
});

describe('formatMicros', () => {
  it('picks the unit', () => {
    expect(formatMicros(850)).toBe('850µs');
    expect(formatMicros(1_234)).toBe('1.23ms');
    expect(formatMicros(12_345)).toBe('12.3ms');
    expect(formatMicros(4_200_000)).toBe('4.20s');
  });
});

describe('waterfall', () => {
  it('puts each span under its parent, siblings by start, as shares of the trace', () => {
    // The client's span (the root's parent) is not in the trace.
    const rows = waterfall(
      trace([
        span('c', 'b', 600, 200),
        span('a', 'client', 0, 1000),
        span('d', 'a', 900, 100),
        span('b', 'a', 100, 700),
      ]),
    );
    expect(rows.map((row) => [row.span.span_id, row.depth, row.offset, row.width])).toEqual([
      ['a', 0, 0, 100],
      ['b', 1, 10, 70],
      ['c', 2, 60, 20],
      ['d', 1, 90, 10],
    ]);
  });

  it('gives an instant span a visible width', () => {
    const rows = waterfall(trace([span('a', null, 0, 1000), span('b', 'a', 500, 0)]));
    expect(rows[1].width).toBe(0.5);
  });
});

describe('traceHref', () => {
  it('opens the service page on one trace', () => {
    expect(traceHref('my cart', '4bf92f3577b34da6a3ce929d0e0e4736')).toBe(
      '/services/my%20cart?trace=4bf92f3577b34da6a3ce929d0e0e4736',
    );
  });
});
