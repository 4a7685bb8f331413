//! `WatchRoutes`: the routing view of the registry (services, descriptors, instances,
//! shard owners, desired replicas) as full snapshots, one at once and one after every
//! applied change that affects routing. Any node serves it from what it has applied.

use std::sync::Arc;

use base64::Engine;
use strata_proto::strata::controlplane::v1::{EntityRoute, InstanceRoute, RouteSnapshot, ServiceRoutes, ShardRoute};
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use crate::node::ControlPlane;
use crate::raft::state_machine::AppliedEffects;
use crate::registry::{Effect, EventKind, InstanceState, Registry};
use crate::tasks::Stopping;

/// The full routing view at applied log index `version`.
pub fn route_snapshot(registry: &Registry, version: u64) -> RouteSnapshot {
    let services = registry
        .services
        .values()
        .map(|service| ServiceRoutes {
            name: service.name.clone(),
            descriptor_set: service
                .descriptor_set
                .as_deref()
                .and_then(|encoded| base64::engine::general_purpose::STANDARD.decode(encoded).ok())
                .unwrap_or_default(),
            entities: service
                .entities
                .iter()
                .map(|entity| EntityRoute {
                    entity_type: entity.entity_type.clone(),
                    service_name: entity.service_name.clone(),
                    persistence_id: entity.persistence_id.clone(),
                })
                .collect(),
            shards: service
                .shards
                .iter()
                .map(|shard| ShardRoute {
                    owner: shard.owner.clone().unwrap_or_default(),
                    epoch: shard.epoch,
                    handoff_to: shard
                        .handoff
                        .as_ref()
                        .map(|handoff| handoff.to.clone())
                        .unwrap_or_default(),
                })
                .collect(),
            instances: registry
                .instances_of(&service.name)
                .map(|instance| InstanceRoute {
                    id: instance.id.clone(),
                    address: instance.address.clone(),
                    state: match instance.state {
                        InstanceState::Starting => "starting",
                        InstanceState::Ready => "ready",
                        InstanceState::Draining => "draining",
                    }
                    .to_owned(),
                    revision: instance.revision,
                })
                .collect(),
            desired_replicas: service.desired_replicas,
            revision: service.generation,
            hold_timeout_ms: service.hold_timeout_ms.unwrap_or(0),
            canary_revision: service.canary.as_ref().map_or(0, |canary| canary.revision),
            canary_percent: service.canary.as_ref().map_or(0, |canary| canary.percent),
        })
        .collect();
    RouteSnapshot { version, services }
}

/// Whether an applied entry changed anything a route snapshot shows.
pub fn affects_routes(effects: &[Effect]) -> bool {
    effects.iter().any(|effect| match effect {
        Effect::RoutesChanged { .. } | Effect::ShardMoved { .. } | Effect::DesiredReplicasChanged { .. } => true,
        Effect::StopInstance { .. } => true,
        Effect::Event(event) => matches!(
            event.kind,
            EventKind::InstanceRegistered
                | EventKind::InstanceReady
                | EventKind::InstanceDraining
                | EventKind::InstanceRemoved
                | EventKind::ServiceCreated
                | EventKind::ServiceUpdated
                | EventKind::ServiceDeleted
        ),
    })
}

fn current(node: &ControlPlane) -> RouteSnapshot {
    node.read_at(route_snapshot)
}

/// Feeds one watcher until it hangs up or the node stops. Bursts of applied entries
/// are coalesced into one snapshot; a watcher that fell behind the effect stream gets
/// a fresh full snapshot, which is all it needs.
pub(super) async fn watch(
    node: Arc<ControlPlane>,
    out: mpsc::Sender<Result<RouteSnapshot, Status>>,
    stopping: Stopping,
) {
    // Subscribe before the first snapshot so that no change falls between the two.
    let mut applied = node.subscribe();
    let first = current(&node);
    let mut sent_version = first.version;
    if out.send(Ok(first)).await.is_err() {
        return;
    }
    let stop = stopping.wait();
    tokio::pin!(stop);
    loop {
        let received = tokio::select! {
            () = &mut stop => return,
            () = out.closed() => return,
            received = applied.recv() => received,
        };
        let Some(mut changed) = relevance(received) else {
            return;
        };
        loop {
            match applied.try_recv() {
                Ok(next) => changed |= affects_routes(&next.effects),
                Err(broadcast::error::TryRecvError::Lagged(_)) => changed = true,
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(broadcast::error::TryRecvError::Closed) => return,
            }
        }
        if !changed {
            continue;
        }
        let snapshot = current(&node);
        // The first snapshot (or the previous one) may already include this change.
        if snapshot.version <= sent_version {
            continue;
        }
        sent_version = snapshot.version;
        tokio::select! {
            () = &mut stop => return,
            sent = out.send(Ok(snapshot)) => if sent.is_err() { return },
        }
    }
}

/// `Some(changed)` for a received entry, `None` when the effect stream has closed.
fn relevance(received: Result<AppliedEffects, broadcast::error::RecvError>) -> Option<bool> {
    match received {
        Ok(applied) => Some(affects_routes(&applied.effects)),
        Err(broadcast::error::RecvError::Lagged(_)) => Some(true),
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{apply, Command, ServiceSettings, ServiceSpec};
    use strata_settings::HumanDuration;

    #[test]
    fn snapshot_shows_owners_instances_and_descriptors() {
        let mut registry = Registry::default();
        let at = 1_000;
        apply(
            &mut registry,
            Command::CreateService(ServiceSpec {
                name: "cart".into(),
                runs: crate::registry::RevisionSpec::command("./cart"),
                settings: ServiceSettings {
                    shard_count: Some(2),
                    hold_timeout: Some(HumanDuration::from_secs(300)),
                    ..Default::default()
                },
            }),
            at,
        );
        apply(
            &mut registry,
            Command::RegisterInstance {
                id: "a".into(),
                service: "cart".into(),
                address: "127.0.0.1:1".into(),
                admin_address: String::new(),
                revision: 0,
            },
            at,
        );
        let snapshot = route_snapshot(&registry, 7);
        assert_eq!(snapshot.version, 7);
        let cart = &snapshot.services[0];
        assert_eq!(
            cart.shards,
            vec![
                ShardRoute {
                    owner: String::new(),
                    epoch: 0,
                    handoff_to: String::new(),
                };
                2
            ]
        );
        assert_eq!(cart.instances[0].state, "starting");
        assert!(cart.descriptor_set.is_empty());
        assert_eq!(
            cart.hold_timeout_ms, 300_000,
            "the gateway holds its requests this long"
        );

        let descriptors = base64::engine::general_purpose::STANDARD.encode(b"\x0a\x00");
        apply(
            &mut registry,
            Command::InstanceReady {
                id: "a".into(),
                descriptor_set: Some(descriptors),
                subscriptions: vec![],
                entities: vec![],
            },
            at,
        );
        let cart = &route_snapshot(&registry, 8).services[0];
        assert_eq!(cart.descriptor_set, b"\x0a\x00");
        assert!(cart.shards.iter().all(|shard| shard.owner == "a" && shard.epoch == 1));
        assert_eq!(cart.instances[0].state, "ready");
        assert_eq!(cart.desired_replicas, 1);
        assert_eq!(cart.revision, 2);
    }

    #[test]
    fn history_only_entries_do_not_affect_routes() {
        let mut registry = Registry::default();
        let applied = apply(
            &mut registry,
            Command::RecordClusterEvent {
                reason: "node 2 joined".into(),
            },
            1,
        );
        assert!(!affects_routes(&applied.effects));
    }
}
