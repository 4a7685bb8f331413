//! The Kubernetes driver's instance logs: a service's pods (by the service
//! label) are its instances, their `function` and `strata-sidecar` containers its
//! processes, and the lines are read from the API server's `pods/{name}/log`
//! with the kubelet's timestamps. Following a pod keeps its log streams open;
//! pods started after a follow began are not picked up by it.

use std::sync::Arc;

use futures::{stream::BoxStream, AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use strata_control_plane::logs::{LogError, LogLine, LogQuery, LogSource};

use super::objects::{FUNCTION_CONTAINER, SERVICE_LABEL, SIDECAR_CONTAINER};

/// Each container of an instance's pod, and the process name its lines carry.
const PROCESSES: [(&str, &str); 2] = [(FUNCTION_CONTAINER, "function"), (SIDECAR_CONTAINER, "sidecar")];

pub struct KubeLogs {
    pods: Api<Pod>,
}

impl KubeLogs {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        KubeLogs {
            pods: Api::namespaced(client, namespace),
        }
    }

    /// The pods of the instances `query` asks for: one, or all of the service's.
    async fn pods_of(&self, query: &LogQuery) -> Result<Vec<String>, LogError> {
        let known = self.instances(&query.service).await?;
        match &query.instance {
            None => Ok(known),
            Some(instance) if known.contains(instance) => Ok(vec![instance.clone()]),
            Some(instance) => Err(LogError::UnknownInstance {
                service: query.service.clone(),
                instance: instance.clone(),
                known,
            }),
        }
    }

    fn params(container: &str, query: &LogQuery) -> LogParams {
        LogParams {
            container: Some(container.to_owned()),
            follow: query.follow,
            timestamps: true,
            since_time: query
                .since_ms
                .and_then(|ms| chrono::DateTime::from_timestamp_millis(ms as i64)),
            ..LogParams::default()
        }
    }
}

/// One line of a log read with `timestamps=true`: the kubelet's RFC 3339 time,
/// a space, the text. A line without a time (it should not happen) is dated 0.
pub fn parse_line(instance: &str, process: &str, text: &str) -> LogLine {
    let (at_ms, line) = text
        .split_once(' ')
        .and_then(|(time, line)| {
            let at = chrono::DateTime::parse_from_rfc3339(time).ok()?;
            Some((at.timestamp_millis().max(0) as u64, line))
        })
        .unwrap_or((0, text));
    LogLine::new(instance, process, at_ms, line)
}

fn unavailable(error: kube::Error) -> LogError {
    LogError::Unavailable(format!("the Kubernetes API: {error}"))
}

#[async_trait::async_trait]
impl LogSource for KubeLogs {
    async fn instances(&self, service: &str) -> Result<Vec<String>, LogError> {
        let selector = format!("{SERVICE_LABEL}={service}");
        let pods = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(unavailable)?;
        let mut names: Vec<String> = pods.items.into_iter().filter_map(|pod| pod.metadata.name).collect();
        names.sort();
        Ok(names)
    }

    async fn read(&self, query: LogQuery) -> Result<BoxStream<'static, LogLine>, LogError> {
        let pods = self.pods_of(&query).await?;
        let since = query.since_ms.unwrap_or(0);
        if !query.follow {
            let mut lines = Vec::new();
            for pod in &pods {
                for (container, process) in PROCESSES {
                    let text = self
                        .pods
                        .logs(pod, &Self::params(container, &query))
                        .await
                        .map_err(unavailable)?;
                    lines.extend(text.lines().map(|line| parse_line(pod, process, line)));
                }
            }
            lines.retain(|line| line.at_ms >= since);
            // Stable: a container's lines keep their order when times are equal.
            lines.sort_by_key(|line| line.at_ms);
            return Ok(futures::stream::iter(lines).boxed());
        }
        let mut streams = Vec::new();
        for pod in pods {
            for (container, process) in PROCESSES {
                let reader = self
                    .pods
                    .log_stream(&pod, &Self::params(container, &query))
                    .await
                    .map_err(unavailable)?;
                let pod: Arc<str> = pod.as_str().into();
                let lines = reader
                    .lines()
                    .map_ok(move |text| parse_line(&pod, process, &text))
                    .take_while(|line| std::future::ready(line.is_ok()))
                    .filter_map(|line| std::future::ready(line.ok()))
                    .filter(move |line| std::future::ready(line.at_ms >= since));
                streams.push(lines.boxed());
            }
        }
        Ok(futures::stream::select_all(streams).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timestamped_line_is_dated_by_the_kubelet() {
        let line = parse_line(
            "cart-1",
            "sidecar",
            "2026-12-07T12:00:00.123456789Z proxy ready on 9000",
        );
        assert_eq!(line.at_ms, 1_796_644_800_123);
        assert_eq!(line.at, "2026-12-07T12:00:00.123Z");
        assert_eq!(line.line, "proxy ready on 9000");
        assert_eq!((line.instance.as_str(), line.process.as_str()), ("cart-1", "sidecar"));
        let undated = parse_line("cart-1", "function", "no time here");
        assert_eq!((undated.at_ms, undated.line.as_str()), (0, "no time here"));
    }
}
