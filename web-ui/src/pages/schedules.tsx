// The cron schedules the control plane's leader runs: each one's expression and
// time zone, the call it makes, when it runs next, and how its last run went.

import { api } from '../api';
import { LoadError } from '../components/ui';
import { formatClock } from '../format';
import { useNow, usePoll } from '../hooks';
import { describeRun, formatDue, runFailed } from '../timers';
import type { Schedule } from '../types';

export function SchedulesPage() {
  const schedules = usePoll(() => api.get<{ schedules: Schedule[] }>('/schedules'), 2000, []);
  const now = useNow();
  const list = schedules.data?.schedules;
  return (
    <div class="page">
      <h1>Schedules</h1>
      <p class="muted">
        Calls the control plane makes at each time of a cron expression. Create them with{' '}
        <code>strata schedule create</code>.
      </p>
      <LoadError error={schedules.error} what="the schedules" />
      {!list ? (
        <p class="muted">Loading…</p>
      ) : list.length === 0 ? (
        <p class="empty">No schedules yet.</p>
      ) : (
        <div class="table-wrap">
          <table class="schedules">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">When</th>
                <th scope="col">Call</th>
                <th scope="col">Next run</th>
                <th scope="col">Last run</th>
              </tr>
            </thead>
            <tbody>
              {list.map((schedule) => (
                <tr key={schedule.name} data-schedule={schedule.name}>
                  <td>
                    <code>{schedule.name}</code>
                  </td>
                  <td>
                    <code>{schedule.cron}</code> <span class="muted">{schedule.time_zone}</span>
                  </td>
                  <td>
                    <code>
                      {schedule.service}/{schedule.method}
                    </code>
                  </td>
                  <td data-next-run>{schedule.next_run_ms === null ? 'never' : formatDue(schedule.next_run_ms, now)}</td>
                  <td data-last-run class={runFailed(schedule.last_run) ? 'error-text' : ''}>
                    {schedule.last_run ? (
                      <>
                        <time dateTime={new Date(schedule.last_run.time_ms).toISOString()}>
                          {formatClock(schedule.last_run.time_ms)}
                        </time>{' '}
                        {describeRun(schedule.last_run)}
                      </>
                    ) : (
                      'not yet'
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
