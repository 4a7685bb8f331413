// The audit log: every management write (who, what, on which target, the outcome,
// when), newest first. The API pages it oldest first (`after`); the whole log is
// bounded by the registry (10 000 records), so the page reads it all and shows the
// latest, more on request.

import { useState } from 'preact/hooks';

import { api } from '../api';
import { LoadError } from '../components/ui';
import { formatClock } from '../format';
import { usePoll } from '../hooks';
import type { AuditPage, AuditRecord } from '../types';

const SHOWN = 200;

/** Every kept record, newest first. */
export async function loadAudit(get: (path: string) => Promise<AuditPage> = (path) => api.get<AuditPage>(path)) {
  const records: AuditRecord[] = [];
  let after: number | null = 0;
  while (after !== null) {
    const page: AuditPage = await get(`/audit?limit=1000${after ? `&after=${after}` : ''}`);
    records.push(...page.records);
    after = page.next_after;
  }
  return records.reverse();
}

export function AuditLogPage() {
  const audit = usePoll(() => loadAudit(), 5000, []);
  const [shown, setShown] = useState(SHOWN);
  const records = audit.data;
  return (
    <div class="page">
      <h1>Audit log</h1>
      <p class="muted">Every management write, who made it and how it was answered, newest first.</p>
      <LoadError error={audit.error} what="the audit log" />
      {!records ? (
        <p class="muted">Loading…</p>
      ) : records.length === 0 ? (
        <p class="empty">No management writes yet.</p>
      ) : (
        <div class="table-wrap">
          <table class="audit">
            <thead>
              <tr>
                <th scope="col">When</th>
                <th scope="col">Who</th>
                <th scope="col">Request</th>
                <th scope="col">Target</th>
                <th scope="col" class="num">Status</th>
              </tr>
            </thead>
            <tbody>
              {records.slice(0, shown).map((record) => (
                <tr key={record.id} data-audit-id={record.id}>
                  <td>
                    <time dateTime={new Date(record.at_ms).toISOString()}>{formatClock(record.at_ms)}</time>
                  </td>
                  <td>{record.principal}</td>
                  <td>
                    <code>
                      {record.method} {record.path}
                    </code>
                  </td>
                  <td>{record.target ?? '–'}</td>
                  <td class={`num ${record.status >= 400 ? 'error-text' : ''}`}>{record.status}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {records && records.length > shown ? (
        <button type="button" class="button" onClick={() => setShown(shown + SHOWN)}>
          Show older
        </button>
      ) : null}
    </div>
  );
}
