// A service's durable timers, as the store keeps them: the pending ones soonest
// first (name, entity, when due, calls so far) and the failed ones with their error.

import { api, encode } from '../api';
import { Card, LoadError } from './ui';
import { formatClock } from '../format';
import { useNow, usePoll } from '../hooks';
import { formatDue } from '../timers';
import type { Timer, Timers } from '../types';

export function TimersCard({ service }: { service: string }) {
  const timers = usePoll(() => api.get<Timers>(`/services/${encode(service)}/timers?limit=20`), 2000, [service]);
  const now = useNow();
  const data = timers.data;
  return (
    <Card title="Timers">
      <LoadError error={timers.error} what="the timers" />
      {!data ? (
        <p class="muted">Loading…</p>
      ) : (
        <>
          <p class="muted" data-timer-counts>
            {data.pending_count} pending, {data.failed_count} failed
          </p>
          {data.pending.length > 0 ? (
            <TimerTable label="Pending timers, soonest first" timers={data.pending} now={now} failed={false} />
          ) : (
            <p class="empty">No pending timers.</p>
          )}
          {data.failed.length > 0 ? (
            <TimerTable label="Failed timers, latest first" timers={data.failed} now={now} failed />
          ) : null}
        </>
      )}
    </Card>
  );
}

function TimerTable({ label, timers, now, failed }: { label: string; timers: Timer[]; now: number; failed: boolean }) {
  return (
    <div class="table-wrap">
      <table class="timers" aria-label={label}>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Entity</th>
            <th scope="col">{failed ? 'Failed at' : 'Due'}</th>
            <th scope="col" class="num">Attempts</th>
            {failed ? <th scope="col">Error</th> : <th scope="col">Call</th>}
          </tr>
        </thead>
        <tbody>
          {timers.map((timer) => (
            <tr key={`${timer.owner}/${timer.entity_id}/${timer.name}`} data-timer={timer.name} data-entity={timer.entity_id}>
              <td>
                <code>{timer.name}</code>
              </td>
              <td>{timer.entity_id || '–'}</td>
              <td>
                <time dateTime={new Date(failed ? timer.attempt_at_ms : timer.due_ms).toISOString()}>
                  {failed ? formatClock(timer.attempt_at_ms) : formatDue(timer.due_ms, now)}
                </time>
              </td>
              <td class="num">
                {timer.attempts} / {timer.max_attempts}
              </td>
              {failed ? <td class="error-text">{timer.error ?? '–'}</td> : <td><code>{timer.call}</code></td>}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
