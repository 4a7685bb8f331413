//! The Kubernetes driver: an operator for the `StatefulService` resource, run by
//! `strata control-plane --runtime kubernetes`. It watches the resources of its
//! namespace and the Deployments they own, and reconciles each one on every change,
//! on every registry change that moves a desired or ready count, and periodically
//! (`reconcile`). Only the Raft leader acts; the other nodes watch and wait.

pub mod crd;
pub mod objects;
pub mod reconcile;

use std::{future::Future, sync::Arc};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    runtime::{watcher, Controller},
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
    let services: Api<StatefulService> = Api::namespaced(client.clone(), &settings.namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &settings.namespace);
    let changes = registry_changes(&node);
    tracing::info!(namespace = %settings.namespace, "the kubernetes runtime is watching StatefulServices");
    let context = Arc::new(Context::new(client, node, settings));
    Controller::new(services, watcher::Config::default())
        .owns(deployments, watcher::Config::default())
        .reconcile_all_on(changes)
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(service = %object.name, "reconciled"),
                Err(error) => tracing::warn!(%error, "the kubernetes runtime could not reconcile"),
            }
        })
        .await;
    tracing::info!("the kubernetes runtime stopped");
}

/// One item each time the registry changes a desired count or a service's ready set.
fn registry_changes(node: &ControlPlane) -> impl Stream<Item = ()> + Send + Sync + 'static {
    let receiver = node.subscribe();
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(applied) => {
                    let relevant = applied.effects.iter().any(|effect| {
                        matches!(
                            effect,
                            Effect::DesiredReplicasChanged { .. } | Effect::RoutesChanged { .. }
                        )
                    });
                    if relevant {
                        return Some(((), receiver));
                    }
                }
                // Missed some: reconcile everything once, which covers them.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return Some(((), receiver)),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
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
