//! Strata's logs and traces, shared by every process: the `tracing` subscriber
//! each binary installs (text or JSON lines, OTLP export when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set), W3C `traceparent` parsing, the bridge
//! between `tracing` spans and trace context, and the trace counters shown on
//! `/metrics`. Where spans are made is the business of the data path, not this.

//!
//! The `process` feature (default) is what a Strata process installs; without
//! it (as `strata-sdk` uses the crate) only trace context and the bridge remain.

#[cfg(feature = "process")]
mod config;
mod context;
#[cfg(feature = "process")]
mod export;
#[cfg(feature = "process")]
mod init;
#[cfg(feature = "process")]
mod log_json;
#[cfg(feature = "process")]
mod record;
#[cfg(feature = "process")]
mod sampling;
#[cfg(feature = "process")]
mod stats;
mod traceparent;

#[cfg(feature = "process")]
pub use config::{
    ConfigError, Export, LogFormat, Protocol, Root, Sampler, TelemetryConfig, TraceStore, DEFAULT_STORE_SAMPLE_RATIO,
};
pub use context::{continue_trace, outgoing_traceparent, traceparent_of};
#[cfg(feature = "process")]
pub use init::{init, init_with_trace_store, install, InitError, Telemetry};
#[cfg(feature = "process")]
pub use record::{record as record_unsampled, records_unsampled, worth_recording, UnsampledCall, UNSAMPLED_ATTRIBUTE};
#[cfg(feature = "process")]
pub use sampling::{chosen, decide, fresh_span_id, head_decision, makes_spans, HeadRule};
#[cfg(feature = "process")]
pub use stats::{malformed_traceparent, register as register_metrics};
pub use traceparent::{MalformedTraceParent, TraceParent, TRACEPARENT, TRACESTATE};
