// The service page's Revisions card: every kept revision (what it runs, who deployed
// it, when, why its rollout stopped), the rollout under way and which revision each
// instance runs, the traffic split of a canary (with promote and end buttons), a diff
// between any two, and a rollback (with confirmation) to any earlier one, which rolls
// the service over as a deploy does.

import { useState } from 'preact/hooks';

import { api, ApiError, encode } from '../api';
import { formatClock } from '../format';
import { usePoll } from '../hooks';
import { canaryLine, diffRevisions, runsLine } from '../revisions';
import type { Instance, RevisionList } from '../types';
import { Card, LoadError } from './ui';

export function RevisionsCard(props: { service: string; instances: Instance[] | undefined; canWrite: boolean; version: number }) {
  const path = `/services/${encode(props.service)}/revisions`;
  const list = usePoll(() => api.get<RevisionList>(path), 2000, [props.service, props.version]);
  const [from, setFrom] = useState<number | null>(null);
  const [to, setTo] = useState<number | null>(null);
  const data = list.data;
  if (!data) {
    return (
      <Card title="Revisions">
        {list.error ? <LoadError error={list.error} what="the revisions" /> : <p class="muted">Loading…</p>}
      </Card>
    );
  }
  const running = new Map<number, number>();
  for (const instance of props.instances ?? []) {
    running.set(instance.revision, (running.get(instance.revision) ?? 0) + 1);
  }
  const numbers = data.revisions.map((revision) => revision.number);
  const left = data.revisions.find((revision) => revision.number === (from ?? numbers[1] ?? numbers[0]));
  const right = data.revisions.find((revision) => revision.number === (to ?? numbers[0]));
  return (
    <Card title="Revisions">
      {data.rollout ? (
        <p class="notice" role="status" data-testid="rollout">
          Rolling out revision {data.rollout.to} (from {data.rollout.from}): waiting for an instance of it to be
          ready{data.rollout.failures ? `; ${data.rollout.failures} failed so far` : ''}.
        </p>
      ) : null}
      {data.canary ? (
        <p class="notice" role="status" data-testid="canary">
          {canaryLine(data.canary, data.serving)}{' '}
          {props.canWrite ? (
            <CanaryButtons service={props.service} revision={data.canary.revision} onDone={list.reload} />
          ) : null}
        </p>
      ) : null}
      <div class="table-wrap">
        <table aria-label="Revisions, newest first">
          <thead>
            <tr>
              <th scope="col">Revision</th>
              <th scope="col">Runs</th>
              <th scope="col">Deployed</th>
              <th scope="col" class="num">Instances</th>
              {props.canWrite ? <th scope="col">Roll back</th> : null}
            </tr>
          </thead>
          <tbody>
            {data.revisions.map((revision) => (
              <tr key={revision.number} data-revision={revision.number} class={revision.serving ? 'row-serving' : ''}>
                <th scope="row">
                  {revision.number}
                  {revision.serving ? <span class="badge badge-instance-ready"> serving</span> : null}
                  {data.canary?.revision === revision.number ? (
                    <span class="badge badge-instance-starting"> canary {data.canary.percent}%</span>
                  ) : null}
                  {revision.failure ? <span class="badge badge-instance-draining"> failed</span> : null}
                </th>
                <td>
                  <code>{runsLine(revision)}</code>
                  {revision.failure ? <div class="error-text">Its rollout stopped: {revision.failure}</div> : null}
                </td>
                <td>
                  {formatClock(revision.created_at_ms)} by {revision.created_by}
                </td>
                <td class="num">{running.get(revision.number) ?? 0}</td>
                {props.canWrite ? (
                  <td>
                    {revision.serving || data.canary?.revision === revision.number ? null : (
                      <RollbackButton service={props.service} to={revision.number} onDone={list.reload} />
                    )}
                  </td>
                ) : null}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {numbers.length > 1 && left && right ? (
        <div class="diff" aria-label="Differences between two revisions">
          <label>
            From{' '}
            <select aria-label="Diff from revision" value={left.number} onInput={(e) => setFrom(Number(e.currentTarget.value))}>
              {numbers.map((n) => (
                <option key={n} value={n}>
                  {n}
                </option>
              ))}
            </select>
          </label>{' '}
          <label>
            to{' '}
            <select aria-label="Diff to revision" value={right.number} onInput={(e) => setTo(Number(e.currentTarget.value))}>
              {numbers.map((n) => (
                <option key={n} value={n}>
                  {n}
                </option>
              ))}
            </select>
          </label>
          <Diff changes={diffRevisions(left, right)} />
        </div>
      ) : null}
    </Card>
  );
}

function Diff({ changes }: { changes: ReturnType<typeof diffRevisions> }) {
  if (changes.length === 0) return <p class="muted">They run the same.</p>;
  return (
    <table aria-label="Changes">
      <tbody>
        {changes.map((change) => (
          <tr key={change.what}>
            <th scope="row">{change.what}</th>
            <td>
              <del>{change.from ?? 'unset'}</del>
            </td>
            <td>
              <ins>{change.to ?? 'unset'}</ins>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function RollbackButton(props: { service: string; to: number; onDone: () => void }) {
  const [confirming, setConfirming] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const rollback = async () => {
    try {
      await api.post(`/services/${encode(props.service)}/rollback`, { to: props.to });
      setConfirming(false);
      setError(null);
      props.onDone();
    } catch (failure) {
      setError(messageOf(failure));
    }
  };
  return (
    <span>
      {confirming ? (
        <span role="group" aria-label={`Confirm the rollback to revision ${props.to}`}>
          <button type="button" class="button button-danger" onClick={rollback}>
            Serve revision {props.to}
          </button>{' '}
          <button type="button" class="button" onClick={() => setConfirming(false)}>
            Cancel
          </button>
        </span>
      ) : (
        <button type="button" class="button" onClick={() => setConfirming(true)}>
          Roll back to {props.to}…
        </button>
      )}
      <ErrorNote error={error} />
    </span>
  );
}

function CanaryButtons(props: { service: string; revision: number; onDone: () => void }) {
  const [error, setError] = useState<string | null>(null);
  const act = async (path: string, body: unknown) => {
    try {
      await api.post(`/services/${encode(props.service)}/${path}`, body);
      setError(null);
      props.onDone();
    } catch (failure) {
      setError(messageOf(failure));
    }
  };
  return (
    <span>
      <button type="button" class="button" onClick={() => act('promote', {})}>
        Promote revision {props.revision}
      </button>{' '}
      <button type="button" class="button button-danger" onClick={() => act('rollback', {})}>
        End the canary
      </button>
      <ErrorNote error={error} />
    </span>
  );
}

function messageOf(failure: unknown): string {
  return failure instanceof ApiError || failure instanceof Error ? failure.message : String(failure);
}

function ErrorNote({ error }: { error: string | null }) {
  if (!error) return null;
  return (
    <span class="error-text" role="alert">
      {' '}
      {error}
    </span>
  );
}
