//! The exporter wrapper that counts what the OTLP endpoint took and what it
//! did not. The batch processor in front of it has a bounded queue and its own
//! thread, so an endpoint that is down costs dropped spans, never a slower or
//! failed call.

use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SpanData, SpanExporter},
    Resource,
};

use crate::stats;

#[derive(Debug)]
pub struct CountedExporter<E> {
    inner: E,
}

impl<E> CountedExporter<E> {
    pub fn new(inner: E) -> Self {
        CountedExporter { inner }
    }
}

impl<E: SpanExporter> SpanExporter for CountedExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => stats::exported(spans),
            Err(error) => stats::dropped(spans, error),
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource)
    }
}
