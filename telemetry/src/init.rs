//! Installs a process's telemetry: the `tracing` subscriber (the log filter, text
//! or JSON lines on stderr) and, when an OTLP endpoint or the trace store is
//! set, the OpenTelemetry layer whose spans a batch processor per destination
//! (bounded queue, own thread) exports, and the rule by which the ingress
//! decides which calls are traced. Nothing of OpenTelemetry is installed when
//! neither is set.

use opentelemetry::trace::TracerProvider as _;
use std::{collections::HashMap, time::Duration};

use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::{
    trace::{self as sdk, BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanProcessor as _},
    Resource,
};
use tracing::{subscriber::Interest, Level, Metadata};
use tracing_subscriber::{
    filter::LevelFilter,
    layer::{self, Filter, SubscriberExt},
    util::SubscriberInitExt,
    EnvFilter, Layer, Registry,
};

use crate::{
    config::{Export, LogFormat, Protocol, TelemetryConfig, TraceStore},
    export::CountedExporter,
    log_json::JsonLines,
    record::StoreProcessor,
};

/// How long a stopping process waits for its last spans to be exported.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);
/// How often spans go to the trace store: short, because the store decides
/// which traces to keep once their spans stop arriving.
const TRACE_STORE_DELAY: Duration = Duration::from_millis(500);
/// How long one export to the trace store may take before its spans are dropped.
const TRACE_STORE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("the OTLP exporter ({protocol}) could not be built: {reason}")]
    Exporter { protocol: Protocol, reason: String },
    #[error("a tracing subscriber is installed already")]
    AlreadyInstalled,
}

/// Keeps the exporter alive; dropping it flushes the spans still queued.
#[must_use = "dropping the guard stops the export of spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    exporting: bool,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.exporting
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Bounded, so an endpoint that is down never holds up a stop.
            let _ = provider.shutdown_with_timeout(SHUTDOWN_FLUSH);
        }
    }
}

/// Installs telemetry for this process from its environment (see
/// [`TelemetryConfig::from_lookup`]). `service` is the default service name of
/// its spans; `None` for a process that serves no calls (a command-line verb),
/// which exports nothing. With the gRPC transport, call it inside a Tokio
/// runtime.
pub fn init(service: Option<&str>, default_filter: &str) -> Result<Telemetry, InitError> {
    init_with_trace_store(service, default_filter, None)
}

/// As [`init`], with `trace_store`, when given, in place of the
/// `STRATA_TRACE_STORE` and `STRATA_TOKEN` variables: `strata dev` sends its
/// own gateway's spans to its own store. Its share of calls sampled is read
/// from `STRATA_TRACE_SAMPLE_RATIO`, as the sidecars `strata dev` starts read it.
pub fn init_with_trace_store(
    service: Option<&str>,
    default_filter: &str,
    trace_store: Option<TraceStore>,
) -> Result<Telemetry, InitError> {
    let lookup = |name: &str| match (name, &trace_store) {
        ("STRATA_TRACE_STORE", Some(store)) => Some(store.endpoint.clone()),
        ("STRATA_TOKEN", Some(store)) => store.token.clone(),
        _ => std::env::var(name).ok(),
    };
    let mut config = TelemetryConfig::from_lookup(lookup, service.unwrap_or("strata"), default_filter)?;
    if service.is_none() {
        config.export = None;
    }
    install(&config)
}

/// Installs telemetry as `config` describes.
pub fn install(config: &TelemetryConfig) -> Result<Telemetry, InitError> {
    let filter = EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(JsonLines)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let provider = match (&config.export, config.log_format) {
        (Some(export), _) => Some(provider(export)?),
        // JSON lines carry trace and span ids, so spans get them even when
        // nothing is exported.
        (None, LogFormat::Json) => Some(SdkTracerProvider::builder().build()),
        (None, LogFormat::Text) => None,
    };
    // Only Strata's own spans (the data path's, the SDK's) become OpenTelemetry
    // spans; libraries' spans and every event stay out of the export. The data
    // path's spans are at debug, below the text log's default filter: without this
    // layer nothing wants them, so an untraced call creates none.
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("strata"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_filter(StrataSpans)
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans)
        .try_init()
        .map_err(|_| InitError::AlreadyInstalled)?;
    if let Some(export) = &config.export {
        crate::sampling::set_rule(export.head_rule());
    }
    let exporting = config.export.is_some();
    Ok(Telemetry { provider, exporting })
}

/// The spans the OpenTelemetry layer takes: Strata's own, at debug or above.
/// Decided once per callsite from its static metadata, so the libraries'
/// many trace events and spans stay disabled outright rather than being
/// asked about on every call.
struct StrataSpans;

impl StrataSpans {
    fn wants(metadata: &Metadata<'_>) -> bool {
        metadata.is_span() && metadata.target().starts_with("strata") && *metadata.level() <= Level::DEBUG
    }
}

impl<S> Filter<S> for StrataSpans {
    fn enabled(&self, metadata: &Metadata<'_>, _: &layer::Context<'_, S>) -> bool {
        Self::wants(metadata)
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        if Self::wants(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::DEBUG)
    }
}

fn provider(export: &Export) -> Result<SdkTracerProvider, InitError> {
    let mut builder = SdkTracerProvider::builder();
    if let Some(protocol) = export.collector {
        let built = match protocol {
            Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder().with_tonic().build(),
            Protocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build(),
        };
        let exporter = built.map_err(|error| InitError::Exporter {
            protocol,
            reason: error.to_string(),
        })?;
        // A bounded queue (OTEL_BSP_MAX_QUEUE_SIZE, 2048 spans by default) on its
        // own thread: past it spans are dropped rather than memory grown.
        builder = builder.with_span_processor(BatchSpanProcessor::builder(CountedExporter::new(exporter)).build());
    }
    let resource = Resource::builder()
        .with_service_name(export.service_name.clone())
        .build();
    if let Some(store) = &export.trace_store {
        // Shared with the records of unsampled calls, which bypass the
        // provider: its resource is set here, as the provider's is.
        let mut processor = trace_store_processor(store)?;
        processor.set_resource(&resource);
        builder = builder.with_span_processor(StoreProcessor::share(processor));
    }
    // The ingress decides which calls are traced (`sampling.rs`) and the
    // decision travels in `traceparent`'s flag: every span the data path makes
    // is of a sampled call, or starts one.
    Ok(builder
        .with_sampler(sdk::Sampler::ParentBased(Box::new(sdk::Sampler::AlwaysOn)))
        .with_resource(resource)
        .build())
}

/// The second processor, to Strata's trace store over OTLP/HTTP: its own
/// bounded queue and thread, so the store and the user's collector never wait
/// on each other. Its spans are not counted with the collector's.
fn trace_store_processor(store: &TraceStore) -> Result<BatchSpanProcessor, InitError> {
    let headers = store
        .token
        .iter()
        .map(|token| ("authorization".to_string(), format!("Bearer {token}")))
        .collect::<HashMap<_, _>>();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(store.endpoint.clone())
        .with_headers(headers)
        .with_timeout(TRACE_STORE_TIMEOUT)
        .build()
        .map_err(|error| InitError::Exporter {
            protocol: Protocol::HttpProtobuf,
            reason: format!("to the trace store {}: {error}", store.endpoint),
        })?;
    let config = BatchConfigBuilder::default()
        .with_scheduled_delay(TRACE_STORE_DELAY)
        .build();
    Ok(BatchSpanProcessor::builder(exporter).with_batch_config(config).build())
}
