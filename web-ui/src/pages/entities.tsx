// The entity inspector: pick a service and an entity id; see the current value or
// latest snapshot, and every journal event decoded to JSON, newest first, in pages.

import { useEffect, useState } from 'preact/hooks';

import { api, ApiError, encode } from '../api';
import { Card, LoadError } from '../components/ui';
import { usePoll } from '../hooks';
import { navigate } from '../router';
import type { EntityState, EventPage, Payload, Service } from '../types';

const PAGE_SIZE = 20;

export function EntitiesPage({ query }: { query: URLSearchParams }) {
  const services = usePoll(() => api.get<{ services: Service[] }>('/services'), 0, []);
  const service = query.get('service') ?? '';
  const id = query.get('id') ?? '';
  const [chosenService, setChosenService] = useState(service);
  const [chosenId, setChosenId] = useState(id);
  useEffect(() => {
    setChosenService(service || services.data?.services[0]?.name || '');
    setChosenId(id);
  }, [service, id, services.data]);

  const submit = (event: Event) => {
    event.preventDefault();
    if (!chosenService || !chosenId.trim()) return;
    navigate(`/entities?service=${encode(chosenService)}&id=${encode(chosenId.trim())}`);
  };

  return (
    <div class="page">
      <h1>Entity inspector</h1>
      <LoadError error={services.error} what="the services" />
      <Card title="Find an entity">
        <form class="form form-inline" onSubmit={submit} aria-label="Find an entity">
          <div class="field">
            <label for="inspect-service">Service</label>
            <select
              id="inspect-service"
              name="service"
              value={chosenService}
              onChange={(event) => setChosenService((event.target as HTMLSelectElement).value)}
            >
              {(services.data?.services ?? []).map((option) => (
                <option key={option.name} value={option.name}>
                  {option.name}
                </option>
              ))}
            </select>
          </div>
          <div class="field">
            <label for="inspect-id">Entity id</label>
            <input
              id="inspect-id"
              name="entity_id"
              value={chosenId}
              placeholder="alice"
              autoComplete="off"
              onInput={(event) => setChosenId((event.target as HTMLInputElement).value)}
            />
          </div>
          <div class="form-actions">
            <button type="submit" class="button button-primary" disabled={!chosenService || !chosenId.trim()}>
              Inspect
            </button>
          </div>
        </form>
      </Card>
      {service && id ? <Entity key={`${service}/${id}`} service={service} id={id} /> : null}
    </div>
  );
}

function Entity({ service, id }: { service: string; id: string }) {
  const path = `/services/${encode(service)}/entities/${encode(id)}`;
  const state = usePoll(() => api.get<EntityState>(path), 5000, [path]);
  const [before, setBefore] = useState<number[]>([]);
  const cursor = before[before.length - 1];
  const page = usePoll(
    () =>
      state.data?.entity_type === 'event_sourced'
        ? api.get<EventPage>(`${path}/events?limit=${PAGE_SIZE}${cursor ? `&before=${cursor}` : ''}`)
        : Promise.resolve(undefined),
    cursor ? 0 : 5000,
    [path, cursor, state.data?.entity_type],
  );

  if (state.error instanceof ApiError && state.error.status === 404) {
    return (
      <p class="notice" role="status" data-testid="no-such-entity">
        No such entity: <code>{service}</code> has nothing stored for <code>{id}</code>.
      </p>
    );
  }
  if (state.error) return <LoadError error={state.error} what="the entity" />;
  if (!state.data) return <p class="muted">Loading…</p>;
  const entity = state.data;
  return (
    <>
      <Card title={entity.entity_type === 'value' ? 'Current value' : 'Latest snapshot'}>
        <dl class="facts">
          <div>
            <dt>Entity</dt>
            <dd>
              <code>{entity.entity_id}</code> of <code>{entity.grpc_service}</code>
            </dd>
          </div>
          <div>
            <dt>Persistence id</dt>
            <dd>
              <code>{entity.persistence_id}</code>
            </dd>
          </div>
          {entity.entity_type === 'event_sourced' ? (
            <div>
              <dt>Events</dt>
              <dd>
                {entity.last_seq_nr ?? 0}
                {entity.snapshot_seq_nr ? `, snapshot at ${entity.snapshot_seq_nr}` : ', no snapshot yet'}
              </dd>
            </div>
          ) : null}
        </dl>
        {entity.state ? <PayloadBlock payload={entity.state} /> : <p class="muted">No snapshot yet: the state is the events below.</p>}
      </Card>
      {entity.entity_type === 'event_sourced' ? (
        <Card title="Journal, newest first">
          <LoadError error={page.error} what="the events" />
          {page.data ? (
            <>
              <ol class="journal" aria-label="Journal events">
                {page.data.events.map((event) => (
                  <li key={event.seq_nr} class="journal-event">
                    <span class="seq" aria-label={`sequence number ${event.seq_nr}`}>
                      #{event.seq_nr}
                    </span>
                    <PayloadBlock payload={event} compact />
                  </li>
                ))}
              </ol>
              <div class="form-actions" role="group" aria-label="Pages">
                <button type="button" class="button" disabled={before.length === 0} onClick={() => setBefore(before.slice(0, -1))}>
                  Newer
                </button>
                <button
                  type="button"
                  class="button"
                  disabled={page.data.next_before === null}
                  onClick={() => page.data?.next_before && setBefore([...before, page.data.next_before])}
                >
                  Older
                </button>
              </div>
            </>
          ) : (
            <p class="muted">Loading…</p>
          )}
        </Card>
      ) : null}
    </>
  );
}

function PayloadBlock({ payload, compact }: { payload: Payload; compact?: boolean }) {
  return (
    <div class="payload">
      <div class="payload-type">{payload.type_name}</div>
      {payload.error ? (
        <p class="error-text">Cannot decode: {payload.error}</p>
      ) : (
        <pre class={`json${compact ? ' json-compact' : ''}`}>{JSON.stringify(payload.value, null, compact ? undefined : 2)}</pre>
      )}
    </div>
  );
}
