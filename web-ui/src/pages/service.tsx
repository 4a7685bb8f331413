// One service: live charts over the last 15 minutes, the autoscaler's decisions with
// its reasons, instances, the shard map, its revisions (diff, rollback), its
// timers, its recent traces (list and waterfall), the instances' logs followed live,
// its settings, and delete.

import { useMemo, useState } from 'preact/hooks';

import { api, ApiError, encode } from '../api';
import { Chart } from '../components/chart';
import { LogsCard } from '../components/logs';
import { RevisionsCard } from '../components/revisions';
import { ShardMapPicture } from '../components/shardmap';
import { TimersCard } from '../components/timers';
import { TraceLinks, TracesCard } from '../components/traces';
import { SettingFields } from '../components/settings';
import { Card, Link, LoadError, StatusBadge } from '../components/ui';
import { useApp, useCanWrite } from '../context';
import { formatClock, formatLatency, formatRate, formatUptime, serviceHealth } from '../format';
import { useNow, usePoll } from '../hooks';
import { serviceTimeline } from '../live';
import { navigate } from '../router';
import { latest, toColumns } from '../series';
import type { Instance, MetricSeries, Service, ShardMap } from '../types';
import { loadSettingFields, settingValues, type SettingField } from '../settings';
import { validateSettings } from '../validate';

const WINDOW_S = 15 * 60;

export function ServicePage({ name }: { name: string }) {
  const { live } = useApp();
  const canWrite = useCanWrite();
  const path = `/services/${encode(name)}`;
  const service = usePoll(() => api.get<Service>(path), 2000, [name, live.version]);
  const metrics = usePoll(() => api.get<MetricSeries>(`${path}/metrics?window=15m`), 2000, [name]);
  const instances = usePoll(() => api.get<{ instances: Instance[] }>(`${path}/instances`), 2000, [name, live.version]);
  const shards = usePoll(() => api.get<ShardMap>(`${path}/shards`), 2000, [name, live.version]);
  const timeline = serviceTimeline(live.events, name);

  if (service.error instanceof ApiError && service.error.status === 404) {
    return (
      <div class="page">
        <h1>No service {name}</h1>
        <p class="notice">
          There is no service named <code>{name}</code>. <Link href="/">Back to all services</Link>
        </p>
      </div>
    );
  }
  const current = service.data;
  const health = current ? serviceHealth(current) : undefined;
  return (
    <div class="page">
      <div class="page-title">
        <h1>
          <span class="muted">Service</span> {name}
        </h1>
        {current ? <StatusBadge service={current} /> : null}
      </div>
      <LoadError error={service.error} what="the service" />
      {health?.detail ? (
        <p class="notice notice-error" role="status">
          Instances are failing: {health.detail}
        </p>
      ) : null}
      {current ? <Summary service={current} samples={metrics.data} /> : null}
      <Charts series={metrics.data} error={metrics.error} />
      <TraceLinks service={name} />
      <div class="columns">
        <Card title="Scale events">
          {timeline.length === 0 ? (
            <p class="muted">No events for this service since the page opened its event stream.</p>
          ) : (
            <ol class="timeline" aria-label="Scale events, newest first">
              {timeline.map((event) => (
                <li key={event.id} class={`event event-${event.kind}`}>
                  <time dateTime={new Date(event.at_ms).toISOString()}>{formatClock(event.at_ms)}</time>
                  <span class="event-kind">{event.kind.replace(/_/g, ' ')}</span>
                  <span class="event-reason">
                    {event.instance ? <code>{event.instance}</code> : null} {event.reason}
                  </span>
                </li>
              ))}
            </ol>
          )}
        </Card>
        <Card title="Instances">
          <InstanceTable instances={instances.data?.instances} shards={shards.data} />
        </Card>
      </div>
      <Card title="Shard map">
        {shards.data ? <ShardMapPicture map={shards.data} /> : <p class="muted">Loading…</p>}
      </Card>
      <RevisionsCard service={name} instances={instances.data?.instances} canWrite={canWrite} version={live.version} />
      <TimersCard service={name} />
      <TracesCard service={name} />
      <LogsCard service={name} />
      {current ? (
        <div class="columns">
          <Settings service={current} canWrite={canWrite} onSaved={service.reload} />
          {canWrite ? <Danger name={name} /> : null}
        </div>
      ) : null}
    </div>
  );
}

function Summary({ service, samples }: { service: Service; samples: MetricSeries | undefined }) {
  const points = samples?.samples ?? [];
  const entity = service.entities[0];
  return (
    <dl class="facts facts-wide">
      <div>
        <dt>Ready / desired</dt>
        <dd>
          <span data-testid="ready-replicas">{service.ready_replicas}</span> / {service.desired_replicas}
        </dd>
      </div>
      <div>
        <dt>Requests/s</dt>
        <dd>{formatRate(latest(points, 'requests_per_second'))}</dd>
      </div>
      <div>
        <dt>In flight</dt>
        <dd>{formatRate(latest(points, 'concurrency'))}</dd>
      </div>
      <div>
        <dt>p99</dt>
        <dd>{formatLatency(latest(points, 'latency_p99_ms'))}</dd>
      </div>
      <div>
        <dt>Command</dt>
        <dd>
          <code>{service.command ?? service.image ?? '–'}</code>
        </dd>
      </div>
      {entity ? (
        <div>
          <dt>Entities</dt>
          <dd>
            <Link href={`/entities?service=${encode(service.name)}`}>Inspect {entity.persistence_id}</Link>
          </dd>
        </div>
      ) : null}
      {service.subscriptions?.length ? (
        <div>
          <dt>Subscribes to</dt>
          <dd>{service.subscriptions.join(', ')}</dd>
        </div>
      ) : null}
    </dl>
  );
}

function Charts({ series, error }: { series: MetricSeries | undefined; error: Error | undefined }) {
  const samples = series?.samples ?? [];
  const now = Date.now() / 1000;
  // Up to 15 minutes; a younger series is shown from a little before its first sample.
  const first = samples.length ? samples[0].at_ms / 1000 - 30 : now - 120;
  const range: [number, number] = [Math.floor(Math.max(now - WINDOW_S, first)), Math.ceil(now)];
  const data = useMemo(
    () => ({
      requests: toColumns(samples, ['requests_per_second']),
      concurrency: toColumns(samples, ['concurrency']),
      instances: toColumns(samples, ['desired_replicas', 'ready_replicas']),
      latency: toColumns(samples, ['latency_p50_ms', 'latency_p99_ms']),
      cold: toColumns(samples, ['cold_start_ms']),
    }),
    [series],
  );
  const coldStarts = samples.reduce((sum, sample) => sum + sample.cold_starts, 0);
  return (
    <section class="charts" aria-label="Metrics over the last 15 minutes" data-samples={samples.length}>
      <LoadError error={error} what="the metrics" />
      <Chart
        title="Requests per second"
        summary={formatRate(latest(samples, 'requests_per_second'))}
        data={data.requests}
        lines={[{ label: 'requests/s', color: '#355dd3' }]}
        format={formatRate}
        range={range}
      />
      <Chart
        title="Concurrency (requests in flight)"
        summary={formatRate(latest(samples, 'concurrency'))}
        data={data.concurrency}
        lines={[{ label: 'in flight', color: '#2e9e6b' }]}
        format={formatRate}
        range={range}
      />
      <Chart
        title="Instances: desired vs ready"
        summary={`${latest(samples, 'ready_replicas') ?? '–'} ready of ${latest(samples, 'desired_replicas') ?? '–'} desired`}
        data={data.instances}
        lines={[
          { label: 'desired', color: '#e0803a', stepped: true, dash: [6, 4] },
          { label: 'ready', color: '#355dd3', stepped: true },
        ]}
        format={(value) => String(Math.round(value * 10) / 10)}
        range={range}
      />
      <Chart
        title="Latency"
        summary={`p50 ${formatLatency(latest(samples, 'latency_p50_ms'))}, p99 ${formatLatency(latest(samples, 'latency_p99_ms'))}`}
        data={data.latency}
        lines={[
          { label: 'p50', color: '#2e9e6b' },
          { label: 'p99', color: '#b94a9e' },
        ]}
        format={formatLatency}
        range={range}
      />
      <Chart
        title="Cold starts"
        summary={`${coldStarts} in 15 minutes`}
        data={data.cold}
        lines={[{ label: 'cold start', color: '#d14b4b', points: true }]}
        format={formatLatency}
        range={range}
      />
    </section>
  );
}

function InstanceTable({ instances, shards }: { instances: Instance[] | undefined; shards: ShardMap | undefined }) {
  const now = useNow();
  if (!instances) return <p class="muted">Loading…</p>;
  if (instances.length === 0) return <p class="empty">No instances: the service is scaled to zero.</p>;
  const owned = new Map<string, number>();
  shards?.shards.forEach((shard) => {
    if (shard.owner) owned.set(shard.owner, (owned.get(shard.owner) ?? 0) + 1);
  });
  return (
    <div class="table-wrap">
      <table>
        <thead>
          <tr>
            <th scope="col">Instance</th>
            <th scope="col">Address</th>
            <th scope="col">State</th>
            <th scope="col" class="num">Revision</th>
            <th scope="col" class="num">Uptime</th>
            <th scope="col" class="num">Shards</th>
          </tr>
        </thead>
        <tbody>
          {instances.map((instance) => (
            <tr key={instance.id}>
              <th scope="row">
                <code>{instance.id}</code>
              </th>
              <td>
                <code>{instance.address}</code>
              </td>
              <td>
                <span class={`badge badge-instance-${instance.state}`}>{instance.state}</span>
              </td>
              <td class="num">{instance.revision || '–'}</td>
              <td class="num">{formatUptime(now - instance.registered_at_ms)}</td>
              <td class="num">{owned.get(instance.id) ?? 0}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function Settings({ service, canWrite, onSaved }: { service: Service; canWrite: boolean; onSaved: () => void }) {
  const fields = usePoll(loadSettingFields, 0, []);
  if (!fields.data) {
    return (
      <Card title="Settings">
        {fields.error ? <LoadError error={fields.error} what="the settings a service takes" /> : <p>Loading…</p>}
      </Card>
    );
  }
  if (!canWrite) {
    const values = settingValues(fields.data, service as unknown as Record<string, unknown>);
    return (
      <Card title="Settings">
        <dl class="facts">
          {fields.data.map((field) => (
            <div key={field.name}>
              <dt>{field.label}</dt>
              <dd>{values[field.name] || 'default'}</dd>
            </div>
          ))}
        </dl>
      </Card>
    );
  }
  return <SettingsForm fields={fields.data} service={service} onSaved={onSaved} />;
}

function SettingsForm({ fields, service, onSaved }: { fields: SettingField[]; service: Service; onSaved: () => void }) {
  const current = settingValues(fields, service as unknown as Record<string, unknown>);
  const [form, setForm] = useState<Record<string, string> | null>(null);
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [saved, setSaved] = useState(false);
  const shown = form ?? current;
  const set = (name: string, value: string) => {
    setForm({ ...shown, [name]: value });
    setSaved(false);
  };
  const submit = async (event: Event) => {
    event.preventDefault();
    const { errors: found, body } = validateSettings(fields, shown, current);
    setErrors(found);
    if (Object.keys(found).length > 0) return;
    try {
      await api.patch(`/services/${encode(service.name)}`, body);
      setForm(null);
      setSaved(true);
      onSaved();
    } catch (error) {
      if (error instanceof ApiError) setErrors({ [error.field ?? '_']: error.message });
    }
  };
  return (
    <Card title="Settings">
      <form class="form" onSubmit={submit} aria-label="Service settings" noValidate>
        <div class="form-grid">
          <SettingFields fields={fields} values={shown} errors={errors} onInput={set} />
        </div>
        {errors._ ? (
          <p class="error-text" role="alert">
            {errors._}
          </p>
        ) : null}
        <div class="form-actions">
          <button type="submit" class="button button-primary">
            Save settings
          </button>
          {saved ? (
            <span class="saved" role="status">
              Saved.
            </span>
          ) : null}
        </div>
      </form>
    </Card>
  );
}

function Danger({ name }: { name: string }) {
  const [confirming, setConfirming] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const remove = async () => {
    try {
      await api.delete(`/services/${encode(name)}`);
      navigate('/');
    } catch (failure) {
      setError(failure instanceof Error ? failure.message : String(failure));
    }
  };
  return (
    <Card title="Delete" class="card-danger">
      <p>Deleting stops every instance. Stored entity state stays in the store.</p>
      {confirming ? (
        <div class="form-actions" role="group" aria-label="Confirm deletion">
          <button type="button" class="button button-danger" onClick={remove}>
            Delete {name} now
          </button>
          <button type="button" class="button" onClick={() => setConfirming(false)}>
            Cancel
          </button>
        </div>
      ) : (
        <button type="button" class="button button-danger" onClick={() => setConfirming(true)}>
          Delete service…
        </button>
      )}
      {error ? (
        <p class="error-text" role="alert">
          {error}
        </p>
      ) : null}
    </Card>
  );
}
