//! The Kubernetes driver: an operator for the `StatefulService` resource, run by
//! `strata control-plane --runtime kubernetes`. It watches the resources of its
//! namespace and the Deployments they own, and reconciles one resource on each of
//! its changes, on each registry change that concerns its service (a desired count,
//! the ready set), and periodically (`reconcile`); deleted resources are
//! deregistered by `sweep`, and resources of other namespaces are reported by
//! `foreign`. Only the Raft leader acts; the other nodes watch and wait. The
//! pods' logs are read through the API (`logs`).

pub mod crd;
pub mod events;
pub mod foreign;
pub mod logs;
pub mod names;
pub mod network_policy;
pub mod objects;
#[cfg(test)]
mod objects_tests;
pub mod observe;
pub mod reconcile;
pub mod render;
pub mod sweep;

use std::{future::Future, sync::Arc};

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    runtime::{reflector::ObjectRef, watcher, Controller},
    Api, Client,
};
use strata_control_plane::{node::ControlPlane, registry::Effect};

use crd::StatefulService;
use objects::OperatorSettings;
use reconcile::{error_policy, reconcile, Context};

/// Runs the operator until `stop` resolves. Watch errors (an API server that is down
/// or refuses) are retried with backoff inside the controller; it never exits on them.
pub async fn run(
    node: Arc<ControlPlane>,
    client: Client,
    settings: OperatorSettings,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let stop = stop.shared();
    let services: Api<StatefulService> = Api::namespaced(client.clone(), &settings.namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &settings.namespace);
    let changes = registry_changes(node.clone(), settings.namespace.clone());
    let gained = leadership_gained(&node);
    tracing::info!(namespace = %settings.namespace, "the kubernetes runtime is watching StatefulServices");
    let context = Arc::new(Context::new(client, node, settings));
    let controller = Controller::new(services, watcher::Config::default())
        .owns(deployments, watcher::Config::default())
        .reconcile_on(changes)
        .reconcile_all_on(gained)
        .graceful_shutdown_on(stop.clone());
    let store = controller.store();
    let reconciling = controller
        .run(reconcile, error_policy, context.clone())
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(service = %object.name, "reconciled"),
                Err(error) => tracing::warn!(%error, "the kubernetes runtime could not reconcile"),
            }
        });
    let sweeping = sweep::run(context.clone(), store);
    let reporting = foreign::run(context);
    tokio::select! {
        _ = reconciling => {}
        _ = async { futures::join!(sweeping, reporting) } => {}
        _ = stop => {}
    }
    tracing::info!("the kubernetes runtime stopped");
}

/// The resources whose service the registry changed: a desired count, the ready set
/// (through the routes), an instance to stop. Every service when some were missed.
fn registry_changes(
    node: Arc<ControlPlane>,
    namespace: String,
) -> impl Stream<Item = ObjectRef<StatefulService>> + Send + 'static {
    let receiver = node.subscribe();
    futures::stream::unfold((receiver, node), |(mut receiver, node)| async move {
        loop {
            let names: Vec<String> = match receiver.recv().await {
                Ok(applied) => applied
                    .effects
                    .iter()
                    .filter_map(|effect| match effect {
                        Effect::DesiredReplicasChanged { service, .. }
                        | Effect::RoutesChanged { service }
                        | Effect::StopInstance { service, .. } => Some(service.clone()),
                        _ => None,
                    })
                    .collect(),
                // Missed some: every service once covers them.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    node.read(|registry| registry.services.keys().cloned().collect())
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            };
            if !names.is_empty() {
                return Some((names, (receiver, node)));
            }
        }
    })
    .flat_map(move |names| {
        let namespace = namespace.clone();
        futures::stream::iter(
            names
                .into_iter()
                .map(move |name| ObjectRef::new(&name).within(&namespace)),
        )
    })
}

/// One item each time this node becomes the leader: it reconciles everything.
fn leadership_gained(node: &ControlPlane) -> impl Stream<Item = ()> + Send + Sync + 'static {
    let leadership = node.leadership();
    futures::stream::unfold((leadership, false), |(mut leadership, mut leading)| async move {
        loop {
            leadership.changed().await.ok()?;
            let now_leading = leadership.borrow().leading;
            let gained = now_leading && !leading;
            leading = now_leading;
            if gained {
                return Some(((), (leadership, leading)));
            }
        }
    })
}

/// A client from the pod's service account, or else from `KUBECONFIG` / `~/.kube/config`.
pub async fn client() -> Result<Client, NoCluster> {
    Client::try_default().await.map_err(NoCluster)
}

#[derive(Debug, thiserror::Error)]
#[error("no Kubernetes API to talk to; run in a pod or set KUBECONFIG")]
pub struct NoCluster(#[source] kube::Error);
