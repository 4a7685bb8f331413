//! What a process's telemetry is, read from its environment: the log format
//! (`STRATA_LOG_FORMAT`), the log filter (`RUST_LOG`), OTLP export (the
//! standard `OTEL_*` variables) and the export to Strata's own trace store
//! (`STRATA_TRACE_STORE`, which `strata dev` sets for its children, and
//! `STRATA_TRACE_SAMPLE_RATIO`, the share of calls it traces). Pure: the environment comes in as a lookup, so
//! tests pass a map. An invalid value is an error naming the variable.

use std::fmt;

use crate::sampling::HeadRule;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per line, with the trace and span ids of the span it was
    /// written in.
    Json,
}

/// The OTLP transport (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// Which calls are traced (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    /// The caller's decision when there is a caller, else the inner one.
    ParentBased(Root),
}

/// The decision for a trace that starts here, under a parent-based sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
}

/// Where spans go, and which: to the user's collector, whose endpoint the
/// exporter reads itself (`OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), to Strata's trace store, or both.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    /// The transport to the user's collector; `None` when no endpoint is set.
    pub collector: Option<Protocol>,
    /// Strata's own trace store (`strata dev`'s control plane).
    pub trace_store: Option<TraceStore>,
    pub service_name: String,
    pub sampler: Sampler,
}

/// The OTLP/HTTP traces endpoint of Strata's trace store
/// (`STRATA_TRACE_STORE`), the credential it is called with (`STRATA_TOKEN`,
/// the process's own), and the share of calls traced for it when no collector
/// is set (`STRATA_TRACE_SAMPLE_RATIO`).
#[derive(Clone, PartialEq)]
pub struct TraceStore {
    pub endpoint: String,
    pub token: Option<String>,
    pub sample_ratio: f64,
}

/// The share of calls traced for the trace store alone: one in a hundred.
pub const DEFAULT_STORE_SAMPLE_RATIO: f64 = 0.01;

impl fmt::Debug for TraceStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceStore")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("sample_ratio", &self.sample_ratio)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    pub filter: String,
    /// `None` when neither an OTLP endpoint nor the trace store is set:
    /// nothing is exported.
    pub export: Option<Export>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?} is not valid: {expected}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        })
    }
}

impl TelemetryConfig {
    /// The configuration `lookup` (an environment) describes, for a process whose
    /// service name is `default_service` unless `OTEL_SERVICE_NAME` says otherwise,
    /// logging by `default_filter` unless `RUST_LOG` is set.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        default_service: &str,
        default_filter: &str,
    ) -> Result<TelemetryConfig, ConfigError> {
        let set = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let log_format = match set("STRATA_LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => return Err(invalid("STRATA_LOG_FORMAT", other, "text or json")),
        };
        let filter = set("RUST_LOG").unwrap_or_else(|| default_filter.to_string());
        let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let collector = match endpoint {
            None => None,
            Some(_) => Some(protocol(
                set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL")),
            )?),
        };
        let trace_store = match set("STRATA_TRACE_STORE") {
            None => None,
            Some(endpoint) => Some(TraceStore {
                endpoint: endpoint.trim().to_string(),
                token: set("STRATA_TOKEN"),
                sample_ratio: store_ratio(set("STRATA_TRACE_SAMPLE_RATIO"))?,
            }),
        };
        let export = match (collector, trace_store) {
            (None, None) => None,
            (collector, trace_store) => Some(Export {
                collector,
                trace_store,
                service_name: set("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service.to_string()),
                sampler: sampler(set("OTEL_TRACES_SAMPLER"), set("OTEL_TRACES_SAMPLER_ARG"))?,
            }),
        };
        Ok(TelemetryConfig {
            log_format,
            filter,
            export,
        })
    }
}

impl Export {
    /// Which calls the ingress traces: with a collector, its sampler decides
    /// (and the store keeps what it samples); with the store alone, the store's
    /// ratio, honouring a caller's sampled flag.
    pub fn head_rule(&self) -> HeadRule {
        let store_ratio = self
            .trace_store
            .as_ref()
            .map_or(DEFAULT_STORE_SAMPLE_RATIO, |store| store.sample_ratio);
        let root = |root: Root| match root {
            Root::AlwaysOn => 1.0,
            Root::AlwaysOff => 0.0,
            Root::Ratio(ratio) => ratio,
        };
        let (parent_based, ratio) = match (self.collector, self.sampler) {
            (None, _) => (true, store_ratio),
            (Some(_), Sampler::AlwaysOn) => (false, 1.0),
            (Some(_), Sampler::AlwaysOff) => (false, 0.0),
            (Some(_), Sampler::Ratio(ratio)) => (false, ratio),
            (Some(_), Sampler::ParentBased(inner)) => (true, root(inner)),
        };
        HeadRule { parent_based, ratio }
    }
}

/// `STRATA_TRACE_SAMPLE_RATIO`, from 0 to 1.
pub fn store_ratio(value: Option<String>) -> Result<f64, ConfigError> {
    let Some(text) = value else {
        return Ok(DEFAULT_STORE_SAMPLE_RATIO);
    };
    match text.trim().parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(invalid(
            "STRATA_TRACE_SAMPLE_RATIO",
            &text,
            "a ratio from 0 to 1, such as 0.01 (one call in a hundred)",
        )),
    }
}

fn invalid(variable: &'static str, value: &str, expected: &'static str) -> ConfigError {
    ConfigError {
        variable,
        value: value.to_string(),
        expected,
    }
}

fn protocol(value: Option<String>) -> Result<Protocol, ConfigError> {
    match value.as_deref().map(str::trim) {
        None | Some("grpc") => Ok(Protocol::Grpc),
        Some("http/protobuf") => Ok(Protocol::HttpProtobuf),
        Some(other) => Err(invalid("OTEL_EXPORTER_OTLP_PROTOCOL", other, "grpc or http/protobuf")),
    }
}

fn sampler(name: Option<String>, argument: Option<String>) -> Result<Sampler, ConfigError> {
    let ratio = || -> Result<f64, ConfigError> {
        let Some(text) = argument.as_deref() else {
            return Ok(1.0);
        };
        match text.trim().parse::<f64>() {
            Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
            _ => Err(invalid(
                "OTEL_TRACES_SAMPLER_ARG",
                text,
                "a ratio from 0 to 1, such as 0.1",
            )),
        }
    };
    Ok(match name.as_deref().map(str::trim) {
        None | Some("parentbased_always_on") => Sampler::ParentBased(Root::AlwaysOn),
        Some("parentbased_always_off") => Sampler::ParentBased(Root::AlwaysOff),
        Some("parentbased_traceidratio") => Sampler::ParentBased(Root::Ratio(ratio()?)),
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("traceidratio") => Sampler::Ratio(ratio()?),
        Some(other) => {
            return Err(invalid(
                "OTEL_TRACES_SAMPLER",
                other,
                "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio",
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<TelemetryConfig, ConfigError> {
        let env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        TelemetryConfig::from_lookup(|name| env.get(name).cloned(), "strata", "info")
    }

    #[test]
    fn nothing_set_is_text_logs_and_no_export() {
        assert_eq!(
            config(&[]).unwrap(),
            TelemetryConfig {
                log_format: LogFormat::Text,
                filter: "info".into(),
                export: None,
            }
        );
    }

    #[test]
    fn an_endpoint_turns_export_on_with_the_standard_defaults() {
        let config = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")]).unwrap();
        assert_eq!(
            config.export,
            Some(Export {
                collector: Some(Protocol::Grpc),
                trace_store: None,
                service_name: "strata".into(),
                sampler: Sampler::ParentBased(Root::AlwaysOn),
            })
        );
    }

    #[test]
    fn the_standard_variables_are_read() {
        let config = config(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", "shop"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("STRATA_LOG_FORMAT", "json"),
            ("RUST_LOG", "debug"),
        ])
        .unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.filter, "debug");
        assert_eq!(
            config.export,
            Some(Export {
                collector: Some(Protocol::HttpProtobuf),
                trace_store: None,
                service_name: "shop".into(),
                sampler: Sampler::ParentBased(Root::Ratio(0.25)),
            })
        );
    }

    #[test]
    fn the_trace_store_alone_or_beside_a_collector_turns_export_on() {
        let store = ("STRATA_TRACE_STORE", "http://127.0.0.1:9100/v1/traces");
        let alone = config(&[store, ("STRATA_TOKEN", "secret")]).unwrap().export.unwrap();
        assert_eq!(alone.collector, None);
        assert_eq!(
            alone.trace_store,
            Some(TraceStore {
                endpoint: "http://127.0.0.1:9100/v1/traces".into(),
                token: Some("secret".into()),
                sample_ratio: DEFAULT_STORE_SAMPLE_RATIO,
            })
        );
        assert!(!format!("{alone:?}").contains("secret"), "the token is never logged");
        let both = config(&[store, ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")])
            .unwrap()
            .export
            .unwrap();
        assert_eq!(both.collector, Some(Protocol::Grpc));
        assert!(both.trace_store.is_some());
    }

    #[test]
    fn the_store_alone_samples_by_its_ratio_and_a_collectors_sampler_decides_for_both() {
        let store = ("STRATA_TRACE_STORE", "http://127.0.0.1:9100/v1/traces");
        let rule = |pairs: &[(&str, &str)]| config(pairs).unwrap().export.unwrap().head_rule();
        assert_eq!(
            rule(&[store]),
            HeadRule {
                parent_based: true,
                ratio: 0.01
            }
        );
        assert_eq!(
            rule(&[store, ("STRATA_TRACE_SAMPLE_RATIO", "0.5")]),
            HeadRule {
                parent_based: true,
                ratio: 0.5
            }
        );
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        assert_eq!(
            rule(&[store, endpoint]),
            HeadRule {
                parent_based: true,
                ratio: 1.0
            }
        );
        assert_eq!(
            rule(&[
                store,
                endpoint,
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.2")
            ]),
            HeadRule {
                parent_based: false,
                ratio: 0.2
            }
        );
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        let cases: [(&[(&str, &str)], &str); 5] = [
            (
                &[
                    ("STRATA_TRACE_STORE", "http://127.0.0.1:9100/v1/traces"),
                    ("STRATA_TRACE_SAMPLE_RATIO", "often"),
                ],
                "STRATA_TRACE_SAMPLE_RATIO",
            ),
            (&[("STRATA_LOG_FORMAT", "yaml")], "STRATA_LOG_FORMAT"),
            (
                &[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (&[endpoint, ("OTEL_TRACES_SAMPLER", "sometimes")], "OTEL_TRACES_SAMPLER"),
            (
                &[
                    endpoint,
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "2"),
                ],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
        ];
        for (pairs, variable) in cases {
            let error = config(pairs).unwrap_err();
            assert_eq!(error.variable, variable);
            assert!(error.to_string().starts_with(variable), "{error}");
        }
    }
}
