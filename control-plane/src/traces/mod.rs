//! Strata's own trace store, for `strata dev` without a collector: spans
//! arrive over OTLP/HTTP from the gateway and the sidecars (`span.rs` reads
//! them), and `store.rs` keeps recent traces within a fixed byte ceiling,
//! deciding per trace once its spans stop arriving. The REST API's trace
//! routes and the `/v1/traces` ingest live in `crate::api::traces`.

mod metrics;
mod span;
mod store;
#[cfg(test)]
mod store_tests;

use std::sync::{Arc, Mutex};

pub use metrics::render_metrics;
pub use span::{spans_of_request, SpanStatus, TraceSpan};
pub use store::{KeptBecause, TraceCounts, TraceFilter, TraceLimits, TraceStore, TraceSummary, TraceView};

/// The store as the API shares it between its handlers.
pub type SharedTraceStore = Arc<Mutex<TraceStore>>;
