//! The autoscaler on the control plane: while this node leads, it tracks every
//! service (settings from the registry, targets = the `/metrics` of its ready
//! sidecars), runs the KPA decision each second, and writes changed desired counts
//! to the registry with their reasons. A desired count changed by someone else (a
//! poke from the gateway, an operator) is adopted.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use strata_autoscaler::{
    collector::{Collector, PrometheusSource, ScaleSink, SinkError, SCRAPE_TIMEOUT},
    settings::ScalingSettings,
};

use crate::{
    metrics_history::RecordingSource,
    node::ControlPlane,
    registry::{Command, InstanceState},
};

/// Autoscaler settings that are not (yet) per service.
#[derive(Debug, Clone)]
pub struct AutoscaleConfig {
    pub stable_window: Duration,
}

impl Default for AutoscaleConfig {
    fn default() -> Self {
        Self {
            stable_window: ScalingSettings::default().stable_window,
        }
    }
}

struct RegistrySink {
    node: Arc<ControlPlane>,
}

#[async_trait]
impl ScaleSink for RegistrySink {
    async fn set_desired(&self, service: &str, replicas: u32, reason: &str) -> Result<(), SinkError> {
        let command = Command::SetDesiredReplicas {
            service: service.to_string(),
            replicas,
            reason: reason.to_string(),
        };
        self.node
            .write(command)
            .await
            .map(|_| ())
            .map_err(|error| SinkError::new(error.to_string()))
    }
}

/// Runs until `stop` resolves.
pub async fn run(node: Arc<ControlPlane>, config: AutoscaleConfig, stop: impl std::future::Future<Output = ()>) {
    let source = match PrometheusSource::new(SCRAPE_TIMEOUT) {
        Ok(source) => source,
        Err(error) => {
            tracing::error!(%error, "the autoscaler cannot scrape metrics; it is off");
            return;
        }
    };
    // Every scrape also feeds the dashboard's metric series.
    let source = RecordingSource::new(source, node.clone());
    let mut collector = Collector::new(source, RegistrySink { node: node.clone() });
    // What the collector last wrote (or adopted) per service.
    let mut known: BTreeMap<String, u32> = BTreeMap::new();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticks.tick() => {}
        }
        if !node.is_leader() {
            // Another node scales; start fresh if leadership comes back.
            for service in std::mem::take(&mut known).keys() {
                collector.forget(service);
            }
            continue;
        }
        let services = node.read(|registry| {
            registry
                .services
                .values()
                .map(|service| {
                    let targets: Vec<String> = registry
                        .instances
                        .values()
                        .filter(|i| i.service == service.name && i.state == InstanceState::Ready)
                        .map(|i| format!("http://{}/metrics", i.address))
                        .collect();
                    let settings = ScalingSettings {
                        target_concurrency: f64::from(service.target_concurrency.max(1)),
                        min_scale: service.min_scale,
                        max_scale: service.max_scale,
                        scale_to_zero_grace: Duration::from_millis(service.scale_to_zero_grace_ms),
                        stable_window: service
                            .stable_window_ms
                            .map_or(config.stable_window, Duration::from_millis),
                        ..ScalingSettings::default()
                    };
                    (service.name.clone(), (settings, targets, service.desired_replicas))
                })
                .collect::<BTreeMap<_, _>>()
        });
        for gone in known
            .keys()
            .filter(|s| !services.contains_key(*s))
            .cloned()
            .collect::<Vec<_>>()
        {
            collector.forget(&gone);
            known.remove(&gone);
        }
        for (service, (settings, targets, desired)) in services {
            // Adopt a count someone else wrote (a poke, an operator's PATCH).
            if collector.desired(&service).is_some_and(|mine| mine != desired) && known.get(&service) != Some(&desired)
            {
                collector.forget(&service);
            }
            if let Err(error) = collector.track(&service, settings, targets, Some(desired)).await {
                tracing::warn!(%service, %error, "invalid scaling settings; not autoscaling this service");
                continue;
            }
            known.insert(service, desired);
        }
        collector.tick().await;
        for (service, count) in known.iter_mut() {
            if let Some(desired) = collector.desired(service) {
                *count = desired;
            }
        }
    }
}
