// The service page's Traces card: the recent traces the trace store keeps for
// this service (`strata dev`), filterable by status, duration, entity and cold
// start, and a waterfall of the one picked, each span's attributes a click away;
// and the page's links to the newest failed call's and cold start's traces,
// which open the card on that trace (`?trace=ID`).

import { useEffect, useState } from 'preact/hooks';

import { api, encode } from '../api';
import { formatClock } from '../format';
import { usePoll } from '../hooks';
import {
  formatMicros,
  NEWEST_COLD_START,
  NEWEST_FAILED,
  NO_FILTER,
  traceHref,
  tracesQuery,
  waterfall,
  type TraceFilter,
} from '../traces';
import { useRoute } from '../router';
import type { TraceList, TraceView } from '../types';
import { Card, Field, Link, LoadError } from './ui';

/** Links to the newest kept trace of a failed call and of a cold start. */
export function TraceLinks({ service }: { service: string }) {
  const newest = (filter: TraceFilter) => () =>
    api.get<TraceList>(`/services/${encode(service)}/traces?${tracesQuery(filter, 1)}`);
  const failed = usePoll(newest(NEWEST_FAILED), 5000, [service]);
  const cold = usePoll(newest(NEWEST_COLD_START), 5000, [service]);
  if (failed.error || cold.error) return null;
  const link = (list: TraceList | undefined, what: string) => {
    const trace = list?.traces[0];
    if (!list) return <span class="muted">{what}: …</span>;
    if (!trace) return <span class="muted">no {what} kept</span>;
    return <Link href={traceHref(service, trace.trace_id)}>{what}</Link>;
  };
  return (
    <p class="trace-links" data-trace-links>
      Trace of the newest {link(cold.data, 'cold start')} · {link(failed.data, 'failed call')}
    </p>
  );
}

export function TracesCard({ service }: { service: string }) {
  const linked = useRoute().query.get('trace');
  const [filter, setFilter] = useState<TraceFilter>(NO_FILTER);
  const [picked, setPicked] = useState<string | null>(linked);
  useEffect(() => {
    if (!linked) return;
    setPicked(linked);
    document.getElementById('traces')?.scrollIntoView();
  }, [linked]);
  const list = usePoll(
    () => api.get<TraceList>(`/services/${encode(service)}/traces?${tracesQuery(filter)}`),
    3000,
    [service, filter.status, filter.minDuration, filter.entityId, filter.coldStarts],
  );
  const set = (key: keyof TraceFilter) => (value: string) => setFilter({ ...filter, [key]: value } as TraceFilter);
  const traces = list.data?.traces;
  return (
    <Card title="Traces">
      <div class="trace-filters" data-trace-filters id="traces">
        <Field label="Status" name="trace-status" value={filter.status} onInput={set('status')} choices={['ok', 'error']} placeholder="any" />
        <Field label="At least" name="trace-min-duration" value={filter.minDuration} onInput={set('minDuration')} placeholder="250ms" />
        <Field label="Entity" name="trace-entity" value={filter.entityId} onInput={set('entityId')} placeholder="any" />
        <label class="trace-cold">
          <input type="checkbox" name="trace-cold" checked={filter.coldStarts} onChange={(event) => setFilter({ ...filter, coldStarts: (event.target as HTMLInputElement).checked })} />{' '}
          Cold starts only
        </label>
      </div>
      <LoadError error={list.error} what="the traces" />
      {!traces ? (
        <p class="muted">Loading…</p>
      ) : traces.length === 0 ? (
        <p class="empty">No traces kept for this service{JSON.stringify(filter) === JSON.stringify(NO_FILTER) ? '' : ' that match'}.</p>
      ) : (
        <div class="table-wrap">
          <table class="traces" aria-label="Traces, newest first">
            <thead>
              <tr>
                <th scope="col">Started</th>
                <th scope="col">Call</th>
                <th scope="col" class="num">Took</th>
                <th scope="col">Entity</th>
                <th scope="col">Kept because</th>
              </tr>
            </thead>
            <tbody>
              {traces.map((trace) => (
                <tr key={trace.trace_id} data-trace={trace.trace_id} class={trace.status === 'error' ? 'trace-error' : undefined}>
                  <td>{formatClock(trace.start_unix_micros / 1000)}</td>
                  <td>
                    <button type="button" class="link" onClick={() => setPicked(trace.trace_id)}>
                      {trace.root}
                    </button>
                    {trace.cold_start ? <span class="badge">cold start</span> : null}
                    {trace.sampled ? null : <span class="badge">not sampled</span>}
                  </td>
                  <td class="num">{formatMicros(trace.duration_micros)}</td>
                  <td>{trace.entity_ids.join(', ') || '–'}</td>
                  <td>{trace.kept_because}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {picked ? <Waterfall traceId={picked} onClose={() => setPicked(null)} /> : null}
    </Card>
  );
}

function Waterfall({ traceId, onClose }: { traceId: string; onClose: () => void }) {
  const trace = usePoll(() => api.get<TraceView>(`/traces/${encode(traceId)}`), 0, [traceId]);
  const data = trace.data;
  return (
    <section class="waterfall" aria-label={`Trace ${traceId}`} data-waterfall={traceId}>
      <header>
        <h3>
          Trace <code>{traceId}</code> {data ? `· ${formatMicros(data.duration_micros)} · ${data.spans} spans` : null}
        </h3>
        <button type="button" onClick={onClose}>
          Close
        </button>
      </header>
      <LoadError error={trace.error} what="the trace" />
      {data && !data.sampled ? (
        <p class="notice" data-unsampled>
          This call was not sampled, so no hop made spans for it; it is kept because it {data.status === 'error' ? 'failed' : 'was among the slowest'}, as
          the record its ingress sent.
        </p>
      ) : null}
      {data ? (
        <ol class="waterfall-rows">
          {waterfall(data).map((row) => (
            <li key={row.span.span_id} data-span={row.span.name} class={row.span.status === 'error' ? 'span-error' : undefined}>
              <details>
                <summary>
                  <span class="span-name" style={{ paddingLeft: `${row.depth * 1.2}em` }}>
                    {row.span.name}
                  </span>
                  <span class="span-track">
                    <span class="span-bar" style={{ marginLeft: `${row.offset}%`, width: `${row.width}%` }} />
                  </span>
                  <span class="num">{formatMicros(row.span.duration_micros)}</span>
                </summary>
                <dl class="span-attributes">
                  <dt>process</dt>
                  <dd>{row.span.process}</dd>
                  {row.span.status_message ? (
                    <>
                      <dt>error</dt>
                      <dd class="error-text">{row.span.status_message}</dd>
                    </>
                  ) : null}
                  {Object.entries(row.span.attributes).map(([key, value]) => (
                    <>
                      <dt>{key}</dt>
                      <dd>{value}</dd>
                    </>
                  ))}
                </dl>
              </details>
            </li>
          ))}
        </ol>
      ) : null}
    </section>
  );
}
