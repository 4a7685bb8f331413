// The shapes of the management API (/api/v1) that the dashboard reads; see
// /api/v1/openapi.json for the whole document.

export type Access = 'admin' | 'read_only';

export interface Failure {
  reason: string;
  at_ms: number;
}

export interface Service {
  name: string;
  command: string | null;
  image: string | null;
  min_scale: number;
  max_scale: number;
  target_concurrency: number;
  scale_to_zero_grace: string;
  stable_window: string | null;
  keep_alive: 'fixed' | 'histogram';
  prewarm_percentile: number;
  keep_alive_percentile: number;
  /** How long a gateway holds a request while it wakes; null: the gateway's default. */
  hold_timeout: string | null;
  desired_replicas: number;
  ready_replicas: number;
  /** `ready`, `scaling`, `pending` or `scaled_to_zero`. */
  status: string;
  revision: number;
  shard_count: number;
  entities: { entity_type: string; service_name: string; persistence_id: string }[];
  /** The event logs its actions subscribe to: events written to them wake it from zero. */
  subscriptions?: string[];
  created_at_ms: number;
  updated_at_ms: number;
  failure: Failure | null;
}

export interface Instance {
  id: string;
  service: string;
  address: string;
  state: 'starting' | 'ready' | 'draining';
  /** The revision of the service it runs (0: it did not say). */
  revision: number;
  registered_at_ms: number;
  state_changed_at_ms: number;
}

/** One immutable revision of a service (`GET /services/{name}/revisions`). */
export interface Revision {
  number: number;
  serving: boolean;
  command?: string;
  image?: string;
  args?: string[];
  env?: { name: string; value: string }[];
  /** Kubernetes: a digest of the rest of the function's pod template. */
  template?: string;
  created_at_ms: number;
  created_by: string;
  /** Why its rollout stopped. */
  failure?: string;
}

export interface RevisionList {
  service: string;
  serving: number;
  revision_history: number;
  rollout?: { from: number; to: number; started_at_ms: number; failures: number };
  canary?: Canary;
  revisions: Revision[];
}

/** A revision serving a slice of the traffic (its first `shards` shards) beside the serving one. */
export interface Canary {
  revision: number;
  percent: number;
  shards: number;
  started_at_ms: number;
  max_error_rate?: number;
  min_calls?: number;
  window_ms?: number;
  /** With a latency limit: how many times the serving revision's p99 the canary's may be. */
  max_p99_ratio?: number;
}

export interface ShardMap {
  service: string;
  shard_count: number;
  shards: { shard: number; owner: string | null; epoch: number; handoff_to?: string }[];
}

export interface Sample {
  at_ms: number;
  requests_per_second: number | null;
  concurrency: number | null;
  desired_replicas: number;
  ready_replicas: number;
  latency_p50_ms: number | null;
  latency_p99_ms: number | null;
  cold_starts: number;
  cold_start_ms: number | null;
}

export interface MetricSeries {
  service: string;
  window: string;
  interval_ms: number;
  samples: Sample[];
}

export interface Member {
  node_id: number;
  address: string;
  api_address: string;
  role: string;
  is_leader: boolean;
  matched_index: number | null;
}

export interface Cluster {
  node_id: number;
  state: string;
  leader: number | null;
  term: number;
  last_log_index: number | null;
  committed_index: number | null;
  applied_index: number | null;
  members: Member[];
}

export interface Payload {
  type_name: string;
  value: unknown;
  error?: string;
}

export interface EntityState {
  service: string;
  entity_id: string;
  grpc_service: string;
  persistence_id: string;
  entity_type: 'event_sourced' | 'value';
  state: Payload | null;
  snapshot_seq_nr: number | null;
  last_seq_nr: number | null;
}

export interface JournalEvent extends Payload {
  seq_nr: number;
}

export interface EventPage {
  events: JournalEvent[];
  next_before: number | null;
}

/** One entry of the registry's history, as `/api/v1/events` sends it. */
export interface RegistryEvent {
  id: number;
  at_ms: number;
  kind:
    | 'service_created'
    | 'service_updated'
    | 'service_deleted'
    | 'scale'
    | 'instance_registered'
    | 'instance_ready'
    | 'instance_draining'
    | 'instance_removed'
    | 'instance_failed'
    | 'cluster';
  service: string | null;
  instance: string | null;
  reason: string;
}

/** One line an instance's function or sidecar wrote (`GET /services/{name}/logs`). */
export interface LogLine {
  instance: string;
  /** `function` or `sidecar`. */
  process: string;
  at_ms: number;
  /** The same time as RFC 3339. */
  at: string;
  line: string;
}

/** One management write (`GET /audit`). */
export interface AuditRecord {
  id: number;
  at_ms: number;
  principal: string;
  method: string;
  path: string;
  target: string | null;
  status: number;
}

export interface AuditPage {
  records: AuditRecord[];
  next_after: number | null;
}

/** One stored timer (`GET /services/{name}/timers`). */
export interface Timer {
  name: string;
  owner: string;
  entity_id: string;
  due_ms: number;
  attempt_at_ms: number;
  call: string;
  attempts: number;
  max_attempts: number;
  error?: string;
}

export interface Timers {
  service: string;
  pending_count: number;
  failed_count: number;
  pending: Timer[];
  failed: Timer[];
}

/** One time of a schedule and how its call went. */
export interface ScheduleRun {
  time_ms: number;
  started_at_ms: number;
  finished_at_ms: number | null;
  outcome: 'running' | 'ok' | 'failed' | 'interrupted' | 'skipped';
  error?: string;
  missed: number;
}

export interface Schedule {
  name: string;
  cron: string;
  time_zone: string;
  catch_up: 'run_once' | 'skip';
  service: string;
  method: string;
  body: unknown;
  created_at_ms: number;
  next_run_ms: number | null;
  last_run: ScheduleRun | null;
  runs: ScheduleRun[];
}

/** One span of a kept trace (`GET /traces/{id}`). */
export interface TraceSpan {
  trace_id: string;
  span_id: string;
  parent_span_id: string | null;
  name: string;
  kind: string;
  process: string;
  service: string | null;
  start_unix_micros: number;
  duration_micros: number;
  status: 'ok' | 'error';
  status_message: string | null;
  attributes: Record<string, string>;
}

/** One trace in a service's list (`GET /services/{name}/traces`). */
export interface TraceSummary {
  trace_id: string;
  root: string;
  start_unix_micros: number;
  duration_micros: number;
  status: 'ok' | 'error';
  spans: number;
  services: string[];
  entity_ids: string[];
  cold_start: boolean;
  /** False for an unsampled call kept as its ingress's record alone. */
  sampled: boolean;
  kept_because: 'recent' | 'sampled' | 'slow' | 'failed';
}

export interface TraceList {
  traces: TraceSummary[];
  store_bytes: number;
  store_max_bytes: number;
}

export interface TraceView extends TraceSummary {
  span_list: TraceSpan[];
}
