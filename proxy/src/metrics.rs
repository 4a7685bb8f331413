//! The sidecar's Prometheus metrics (names prefixed `strata_`), served at
//! `/metrics`. Owns metric definitions only; the ingress and the entity actors
//! record into them.

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use strata_store::Store;

pub struct Metrics {
    registry: Registry,
    /// Requests by service, method, protocol (grpc, grpc-web, http) and gRPC code.
    pub requests: IntCounterVec,
    /// Request latency by service and method, from arrival to answer.
    pub request_seconds: HistogramVec,
    /// Requests being handled now, by service (what the autoscaler scales on).
    pub in_flight: IntGaugeVec,
    pub entities_active: IntGauge,
    /// The estimated bytes of state the active entities hold (the registry's
    /// byte budget counts these).
    pub entity_bytes: IntGauge,
    pub activations: IntCounterVec,
    pub passivations: IntCounterVec,
    /// Time to load an entity's state and replay it into the function.
    pub activation_seconds: HistogramVec,
    /// Time for an entity's write to become durable (group commit included).
    pub persist_seconds: HistogramVec,
    /// Gateway: time from a request's arrival at a service with no ready
    /// instance until it is released to the first ready one.
    pub cold_start_seconds: HistogramVec,
    /// Gateway: requests waiting for a service to scale from zero.
    pub held: IntGaugeVec,
    /// Gateway: commands routed again, by why (`not_owner`, `unreachable`, `no_owner`).
    pub reroutes: IntCounterVec,
    /// Side effects performed for the function, by target (`service.Method`),
    /// mode (`synchronous`, `asynchronous`) and outcome (`ok`, `failed`).
    pub side_effects: IntCounterVec,
    /// Forwards performed for the function, by target and outcome.
    pub forwards: IntCounterVec,
    /// Events an event-log subscriber handled, by subscriber (`service.Method`).
    pub events_delivered: IntCounterVec,
    /// Deliveries of an event that failed (each retried), by subscriber.
    pub event_failures: IntCounterVec,
    /// 1 while this instance runs the subscription, by subscriber.
    pub subscriptions_running: IntGaugeVec,
    /// Calls of due timers, by target (`service.Method`) and outcome (`ok`,
    /// `retry`: failed and retried later, `failed`: out of attempts).
    pub timer_calls: IntCounterVec,
    store_writes: IntGauge,
    store_transactions: IntGauge,
    store_conflicts: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let latency = || exponential_buckets(0.0005, 2.0, 16).expect("valid buckets");
        let registry = Registry::new();
        let metrics = Metrics {
            requests: IntCounterVec::new(
                Opts::new("strata_proxy_requests_total", "Requests answered, by outcome"),
                &["service", "method", "protocol", "code"],
            )
            .expect("valid metric"),
            request_seconds: HistogramVec::new(
                HistogramOpts::new("strata_proxy_request_duration_seconds", "Request latency").buckets(latency()),
                &["service", "method"],
            )
            .expect("valid metric"),
            in_flight: IntGaugeVec::new(
                Opts::new("strata_proxy_in_flight_requests", "Requests being handled now"),
                &["service"],
            )
            .expect("valid metric"),
            entities_active: IntGauge::new("strata_entities_active", "Entities with an open stream to the function")
                .expect("valid metric"),
            entity_bytes: IntGauge::new(
                "strata_entities_active_bytes",
                "Estimated bytes of state held by the active entities",
            )
            .expect("valid metric"),
            activations: IntCounterVec::new(
                Opts::new("strata_entity_activations_total", "Entities loaded and started"),
                &["service"],
            )
            .expect("valid metric"),
            passivations: IntCounterVec::new(
                Opts::new(
                    "strata_entity_passivations_total",
                    "Entities stopped after their idle timeout",
                ),
                &["service"],
            )
            .expect("valid metric"),
            activation_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "strata_entity_activation_seconds",
                    "Time to recover and replay an entity",
                )
                .buckets(latency()),
                &["service"],
            )
            .expect("valid metric"),
            persist_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "strata_entity_persist_seconds",
                    "Time for an entity write to become durable",
                )
                .buckets(latency()),
                &["service"],
            )
            .expect("valid metric"),
            cold_start_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "strata_cold_start_seconds",
                    "Time a request waited for its service to scale from zero",
                )
                .buckets(exponential_buckets(0.01, 2.0, 14).expect("valid buckets")),
                &["service"],
            )
            .expect("valid metric"),
            held: IntGaugeVec::new(
                Opts::new(
                    "strata_gateway_held_requests",
                    "Requests waiting for a service to scale from zero",
                ),
                &["service"],
            )
            .expect("valid metric"),
            reroutes: IntCounterVec::new(
                Opts::new(
                    "strata_gateway_reroutes_total",
                    "Commands routed again after a routing miss",
                ),
                &["service", "reason"],
            )
            .expect("valid metric"),
            side_effects: IntCounterVec::new(
                Opts::new(
                    "strata_proxy_side_effects_total",
                    "Side effects performed for the function",
                ),
                &["target", "mode", "outcome"],
            )
            .expect("valid metric"),
            forwards: IntCounterVec::new(
                Opts::new("strata_proxy_forwards_total", "Forwards performed for the function"),
                &["target", "outcome"],
            )
            .expect("valid metric"),
            events_delivered: IntCounterVec::new(
                Opts::new(
                    "strata_eventing_events_delivered_total",
                    "Events an event-log subscriber handled",
                ),
                &["subscriber"],
            )
            .expect("valid metric"),
            event_failures: IntCounterVec::new(
                Opts::new(
                    "strata_eventing_delivery_failures_total",
                    "Deliveries of an event to its subscriber that failed and are retried",
                ),
                &["subscriber"],
            )
            .expect("valid metric"),
            subscriptions_running: IntGaugeVec::new(
                Opts::new(
                    "strata_eventing_subscription_running",
                    "1 while this instance consumes the subscription's event log",
                ),
                &["subscriber"],
            )
            .expect("valid metric"),
            timer_calls: IntCounterVec::new(
                Opts::new("strata_timer_calls_total", "Calls of due timers, by target and outcome"),
                &["target", "outcome"],
            )
            .expect("valid metric"),
            store_writes: IntGauge::new("strata_store_writes_committed", "Writes committed by the store")
                .expect("valid metric"),
            store_transactions: IntGauge::new("strata_store_transactions", "Transactions (batches) committed")
                .expect("valid metric"),
            store_conflicts: IntGauge::new("strata_store_conflicts", "Writes refused for a taken sequence number")
                .expect("valid metric"),
            registry,
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(metrics.requests.clone()),
            Box::new(metrics.request_seconds.clone()),
            Box::new(metrics.in_flight.clone()),
            Box::new(metrics.entities_active.clone()),
            Box::new(metrics.entity_bytes.clone()),
            Box::new(metrics.activations.clone()),
            Box::new(metrics.passivations.clone()),
            Box::new(metrics.activation_seconds.clone()),
            Box::new(metrics.persist_seconds.clone()),
            Box::new(metrics.cold_start_seconds.clone()),
            Box::new(metrics.held.clone()),
            Box::new(metrics.reroutes.clone()),
            Box::new(metrics.side_effects.clone()),
            Box::new(metrics.forwards.clone()),
            Box::new(metrics.events_delivered.clone()),
            Box::new(metrics.event_failures.clone()),
            Box::new(metrics.subscriptions_running.clone()),
            Box::new(metrics.timer_calls.clone()),
            Box::new(metrics.store_writes.clone()),
            Box::new(metrics.store_transactions.clone()),
            Box::new(metrics.store_conflicts.clone()),
        ];
        for collector in collectors {
            metrics.registry.register(collector).expect("metric names are unique");
        }
        // Spans exported and dropped, and malformed traceparents: the process's.
        strata_telemetry::register_metrics(&metrics.registry);
        metrics
    }

    /// The Prometheus text exposition of every metric, store counters refreshed.
    pub fn render(&self, store: Option<&dyn Store>) -> String {
        if let Some(store) = store {
            let stats = store.stats();
            self.store_writes.set(stats.writes_committed as i64);
            self.store_transactions.set(stats.transactions as i64);
            self.store_conflicts.set(stats.conflicts as i64);
        }
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
