// Every service at a glance (desired and ready instances, load, status) and the
// cluster's health.

import { api, encode } from '../api';
import { Card, Link, LoadError, StatusBadge } from '../components/ui';
import { useApp, useCanWrite } from '../context';
import { formatLatency, formatRate, serviceHealth } from '../format';
import { usePoll } from '../hooks';
import { latest, peak } from '../series';
import type { Cluster, MetricSeries, Service } from '../types';

interface Load {
  rps: number | null;
  p99: number | null;
}

async function loadAll(): Promise<{ services: Service[]; load: Map<string, Load> }> {
  const { services } = await api.get<{ services: Service[] }>('/services');
  const series = await Promise.all(
    services.map((service) =>
      api.get<MetricSeries>(`/services/${encode(service.name)}/metrics?window=30s`).catch(() => null),
    ),
  );
  const load = new Map<string, Load>();
  services.forEach((service, i) => {
    const samples = series[i]?.samples ?? [];
    load.set(service.name, {
      rps: latest(samples, 'requests_per_second'),
      p99: peak(samples.slice(-10), 'latency_p99_ms'),
    });
  });
  return { services, load };
}

export function Overview() {
  const { live } = useApp();
  const canWrite = useCanWrite();
  const services = usePoll(loadAll, 2000, [live.version]);
  const cluster = usePoll(() => api.get<Cluster>('/cluster'), 3000, [live.leader, live.term]);

  return (
    <div class="page">
      <div class="page-title">
        <h1>Services</h1>
        {canWrite ? (
          <Link href="/deploy" class="button button-primary">
            Deploy a service
          </Link>
        ) : null}
      </div>
      <LoadError error={services.error} what="the services" />
      <Card title="Deployed services">
        {services.data === undefined ? (
          <p class="muted">Loading…</p>
        ) : services.data.services.length === 0 ? (
          <p class="empty">
            No services yet.{' '}
            {canWrite ? <Link href="/deploy">Deploy one</Link> : 'An admin can deploy one.'}
          </p>
        ) : (
          <div class="table-wrap">
            <table class="services">
              <thead>
                <tr>
                  <th scope="col">Service</th>
                  <th scope="col">Status</th>
                  <th scope="col" class="num">Ready / desired</th>
                  <th scope="col" class="num">Requests/s</th>
                  <th scope="col" class="num">p99 latency</th>
                </tr>
              </thead>
              <tbody>
                {services.data.services.map((service) => {
                  const load = services.data!.load.get(service.name);
                  const health = serviceHealth(service);
                  return (
                    <tr key={service.name} data-service={service.name}>
                      <th scope="row">
                        <Link href={`/services/${encode(service.name)}`}>{service.name}</Link>
                      </th>
                      <td>
                        <StatusBadge service={service} />
                        {health.detail ? <div class="failure-reason">{health.detail}</div> : null}
                      </td>
                      <td class="num" data-label="ready">
                        <span class="ready-count">{service.ready_replicas}</span> / {service.desired_replicas}
                      </td>
                      <td class="num">{formatRate(load?.rps)}</td>
                      <td class="num">{formatLatency(load?.p99)}</td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
        )}
      </Card>
      <ClusterHealth cluster={cluster.data} />
    </div>
  );
}

function ClusterHealth({ cluster }: { cluster: Cluster | undefined }) {
  if (!cluster) return null;
  const healthy = cluster.leader !== null;
  const voters = cluster.members.filter((member) => member.role === 'voter').length;
  return (
    <Card title="Cluster" actions={<Link href="/cluster">Details</Link>}>
      <dl class="facts">
        <div>
          <dt>Health</dt>
          <dd>
            <span class={`badge ${healthy ? 'badge-serving' : 'badge-failing'}`}>
              {healthy ? 'leader elected' : 'no leader'}
            </span>
          </dd>
        </div>
        <div>
          <dt>Leader</dt>
          <dd>{cluster.leader === null ? '–' : `node ${cluster.leader}`}</dd>
        </div>
        <div>
          <dt>Term</dt>
          <dd>{cluster.term}</dd>
        </div>
        <div>
          <dt>Members</dt>
          <dd>
            {cluster.members.length} ({voters} voting)
          </dd>
        </div>
      </dl>
    </Card>
  );
}
