// The Raft cluster: members with their role, the leader, term and log indexes; add
// and remove members.

import { useState } from 'preact/hooks';

import { api, ApiError } from '../api';
import { Card, Field, LoadError } from '../components/ui';
import { useApp, useCanWrite } from '../context';
import { formatIndex } from '../format';
import { usePoll } from '../hooks';
import type { Cluster } from '../types';

export function ClusterPage() {
  const { live } = useApp();
  const canWrite = useCanWrite();
  const cluster = usePoll(() => api.get<Cluster>('/cluster'), 2000, [live.leader, live.term]);
  const data = cluster.data;
  return (
    <div class="page">
      <h1>Cluster</h1>
      <LoadError error={cluster.error} what="the cluster" />
      {data ? (
        <>
          <dl class="facts facts-wide" aria-label="Raft status">
            <div>
              <dt>Leader</dt>
              <dd data-testid="leader">{data.leader === null ? 'none (election in progress)' : `node ${data.leader}`}</dd>
            </div>
            <div>
              <dt>Term</dt>
              <dd>{data.term}</dd>
            </div>
            <div>
              <dt>Answered by</dt>
              <dd>
                node {data.node_id} ({data.state})
              </dd>
            </div>
            <div>
              <dt>Last log index</dt>
              <dd>{formatIndex(data.last_log_index)}</dd>
            </div>
            <div>
              <dt>Committed</dt>
              <dd>{formatIndex(data.committed_index)}</dd>
            </div>
            <div>
              <dt>Applied</dt>
              <dd>{formatIndex(data.applied_index)}</dd>
            </div>
          </dl>
          <Card title="Members">
            <Members cluster={data} canWrite={canWrite} onChanged={cluster.reload} />
          </Card>
          {canWrite ? <AddMember onAdded={cluster.reload} /> : null}
        </>
      ) : (
        <p class="muted">Loading…</p>
      )}
    </div>
  );
}

function Members({ cluster, canWrite, onChanged }: { cluster: Cluster; canWrite: boolean; onChanged: () => void }) {
  const [confirming, setConfirming] = useState<number | null>(null);
  const [error, setError] = useState<string | null>(null);
  const remove = async (nodeId: number) => {
    setError(null);
    try {
      await api.delete(`/cluster/members/${nodeId}`);
      setConfirming(null);
      onChanged();
    } catch (failure) {
      setError(failure instanceof Error ? failure.message : String(failure));
    }
  };
  return (
    <>
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              <th scope="col">Node</th>
              <th scope="col">Role</th>
              <th scope="col">Raft address</th>
              <th scope="col">API address</th>
              <th scope="col" class="num">Matched index</th>
              {canWrite ? <th scope="col">Actions</th> : null}
            </tr>
          </thead>
          <tbody>
            {cluster.members.map((member) => (
              <tr key={member.node_id}>
                <th scope="row">
                  node {member.node_id}
                  {member.is_leader ? <span class="badge badge-serving leader-badge">leader</span> : null}
                </th>
                <td>{member.role}</td>
                <td>
                  <code>{member.address}</code>
                </td>
                <td>
                  <code>{member.api_address}</code>
                </td>
                <td class="num">{formatIndex(member.matched_index)}</td>
                {canWrite ? (
                  <td>
                    {confirming === member.node_id ? (
                      <span role="group" aria-label={`Confirm removing node ${member.node_id}`}>
                        <button type="button" class="button button-danger button-small" onClick={() => remove(member.node_id)}>
                          Remove node {member.node_id}
                        </button>{' '}
                        <button type="button" class="button button-small" onClick={() => setConfirming(null)}>
                          Cancel
                        </button>
                      </span>
                    ) : (
                      <button type="button" class="button button-small" onClick={() => setConfirming(member.node_id)}>
                        Remove…
                      </button>
                    )}
                  </td>
                ) : null}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {error ? (
        <p class="error-text" role="alert">
          {error}
        </p>
      ) : null}
    </>
  );
}

function AddMember({ onAdded }: { onAdded: () => void }) {
  const [form, setForm] = useState({ node_id: '', address: '', api_address: '' });
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState(false);
  const set = (field: keyof typeof form) => (value: string) => setForm({ ...form, [field]: value });
  const submit = async (event: Event) => {
    event.preventDefault();
    const found: Record<string, string> = {};
    if (!/^\d+$/.test(form.node_id.trim())) found.node_id = 'Enter the new node’s numeric id.';
    if (!form.address.trim()) found.address = 'Enter its Raft address (its --listen).';
    if (!form.api_address.trim()) found.api_address = 'Enter its API address (its --api-listen).';
    setErrors(found);
    if (Object.keys(found).length) return;
    setBusy(true);
    try {
      await api.post('/cluster/members', {
        node_id: Number(form.node_id.trim()),
        address: form.address.trim(),
        api_address: form.api_address.trim(),
      });
      setForm({ node_id: '', address: '', api_address: '' });
      onAdded();
    } catch (error) {
      if (error instanceof ApiError) setErrors({ [error.field ?? '_']: error.message });
    } finally {
      setBusy(false);
    }
  };
  return (
    <Card title="Add a member">
      <p class="hint">
        Start the new node with <code>strata control-plane --node-id N --listen … --api-listen …</code> and the
        cluster’s secret, then add it here (or start it with <code>--join</code>).
      </p>
      <form class="form" onSubmit={submit} aria-label="Add a member" noValidate>
        <div class="form-grid">
          <Field label="Node id" name="node_id" value={form.node_id} onInput={set('node_id')} error={errors.node_id} inputMode="numeric" />
          <Field label="Raft address" name="address" value={form.address} onInput={set('address')} error={errors.address} placeholder="127.0.0.1:9201" />
          <Field label="API address" name="api_address" value={form.api_address} onInput={set('api_address')} error={errors.api_address} placeholder="127.0.0.1:9101" />
        </div>
        {errors._ ? (
          <p class="error-text" role="alert">
            {errors._}
          </p>
        ) : null}
        <div class="form-actions">
          <button type="submit" class="button button-primary" disabled={busy}>
            {busy ? 'Adding…' : 'Add member'}
          </button>
        </div>
      </form>
    </Card>
  );
}
