//! The view of the deployment that routing works from, rebuilt from each route
//! snapshot the control plane sends: every service's model (for decoding and
//! transcoding, and as the targets of a managed sidecar's forwards) and who owns
//! each of its shards. Pure data; building it does no I/O.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use strata_proto::cloudstate::{Entity, EntitySpec};
use strata_proto::strata::controlplane::v1::{RouteSnapshot, ServiceRoutes};

use tokio::sync::watch;

use crate::model::{Catalog, MethodModel, ServiceModel, Targets};

/// A service's canary split from its routes: `None` without a canary, or while
/// either side has no ready instance (then every ready instance serves).
fn canary_split(routes: &ServiceRoutes, target: &dyn Fn(&str) -> Option<Target>) -> Option<CanarySplit> {
    if routes.canary_revision == 0 {
        return None;
    }
    let (canary, stable): (Vec<_>, Vec<_>) = routes
        .instances
        .iter()
        .filter(|i| i.state == "ready")
        .partition(|i| i.revision == routes.canary_revision);
    let targets = |instances: Vec<&_>| -> Vec<Target> {
        instances
            .into_iter()
            .filter_map(|i: &strata_proto::strata::controlplane::v1::InstanceRoute| target(&i.id))
            .collect()
    };
    let (canary, stable) = (targets(canary), targets(stable));
    (!canary.is_empty() && !stable.is_empty()).then_some(CanarySplit {
        percent: routes.canary_percent,
        canary,
        stable,
    })
}

/// One reachable instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub instance: String,
    pub address: String,
}

/// The routes of one deployed service.
#[derive(Debug)]
pub struct ServiceTable {
    pub name: String,
    /// `None` until an instance has been ready once (no descriptors yet).
    pub model: Option<Arc<ServiceModel>>,
    descriptor_set: Vec<u8>,
    /// Owner of each shard, `None` when unowned.
    pub shards: Vec<Option<Target>>,
    pub ready: Vec<Target>,
    /// A canary's share of the actions' calls, while both it and the serving
    /// revision have ready instances.
    pub canary: Option<CanarySplit>,
    /// How long a request may wait for the service to wake from zero; `None`: the
    /// gateway's own default.
    pub hold_timeout: Option<Duration>,
}

/// The ready instances of a canary and of the rest, and the canary's percentage.
#[derive(Debug)]
pub struct CanarySplit {
    pub percent: u32,
    pub canary: Vec<Target>,
    pub stable: Vec<Target>,
}

impl ServiceTable {
    /// Where an action's call may go: with a canary, to its instances for its
    /// percentage of the calls (by `turn`, a count of calls: exactly that many
    /// of every hundred), to the others for the rest; else to any ready instance.
    pub fn action_targets(&self, turn: usize) -> &[Target] {
        match &self.canary {
            Some(split) if turn % 100 < split.percent as usize => &split.canary,
            Some(split) => &split.stable,
            None => &self.ready,
        }
    }

    pub fn owner(&self, shard: u32) -> Option<&Target> {
        self.shards.get(shard as usize).and_then(Option::as_ref)
    }

    pub fn shard_count(&self) -> u32 {
        self.shards.len() as u32
    }

    #[cfg(test)]
    pub(crate) fn for_tests(name: &str, ready: Vec<Target>) -> Self {
        Self {
            name: name.into(),
            model: None,
            descriptor_set: Vec::new(),
            shards: Vec::new(),
            ready,
            canary: None,
            hold_timeout: None,
        }
    }
}

/// Everything the gateway routes by.
#[derive(Debug, Default)]
pub struct RouteTable {
    pub version: u64,
    pub services: HashMap<String, ServiceTable>,
    /// Fully qualified gRPC service name -> deployed service.
    pub deployment_of: HashMap<String, String>,
    pub catalog: Arc<Catalog>,
}

impl RouteTable {
    /// Builds the table for a snapshot, reusing the models of `previous` whose
    /// descriptors did not change (decoding descriptors is the expensive part).
    pub fn build(snapshot: &RouteSnapshot, previous: &RouteTable) -> RouteTable {
        let mut table = RouteTable {
            version: snapshot.version,
            ..RouteTable::default()
        };
        for routes in &snapshot.services {
            let model = match previous.services.get(&routes.name) {
                Some(old) if old.descriptor_set == routes.descriptor_set && old.model.is_some() => old.model.clone(),
                _ => build_model(routes),
            };
            if let Some(model) = &model {
                for name in model.service_names() {
                    table.deployment_of.insert(name.to_string(), routes.name.clone());
                }
            }
            let address_of: HashMap<&str, &str> = routes
                .instances
                .iter()
                .map(|i| (i.id.as_str(), i.address.as_str()))
                .collect();
            let target = |id: &str| {
                address_of.get(id).map(|address| Target {
                    instance: id.to_string(),
                    address: address.to_string(),
                })
            };
            table.services.insert(
                routes.name.clone(),
                ServiceTable {
                    name: routes.name.clone(),
                    model,
                    descriptor_set: routes.descriptor_set.clone(),
                    shards: routes
                        .shards
                        .iter()
                        // A shard being handed off is routed to its next owner,
                        // which holds its calls until the old owner releases it.
                        .map(|s| {
                            let to = if s.handoff_to.is_empty() {
                                &s.owner
                            } else {
                                &s.handoff_to
                            };
                            (!to.is_empty()).then(|| target(to)).flatten()
                        })
                        .collect(),
                    ready: routes
                        .instances
                        .iter()
                        .filter(|i| i.state == "ready")
                        .filter_map(|i| target(&i.id))
                        .collect(),
                    canary: canary_split(routes, &target),
                    hold_timeout: (routes.hold_timeout_ms > 0).then(|| Duration::from_millis(routes.hold_timeout_ms)),
                },
            );
        }
        let mut named: Vec<_> = table
            .services
            .values()
            .filter_map(|s| Some((s.name.clone(), s.model.clone()?)))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        table.catalog = Arc::new(Catalog::new(named.into_iter().map(|(_, model)| model).collect()));
        table
    }

    /// Whether a deployed service has no descriptors yet (its first instance
    /// is starting): its paths are not known until it is ready.
    pub fn has_pending(&self) -> bool {
        self.services.values().any(|service| service.descriptor_set.is_empty())
    }

    /// The longest hold timeout a service whose first instance is starting asked
    /// for: a request for a path it may serve waits at least that long.
    pub fn longest_pending_hold(&self) -> Option<Duration> {
        self.services
            .values()
            .filter(|service| service.descriptor_set.is_empty())
            .filter_map(|service| service.hold_timeout)
            .max()
    }

    /// Whether `heard` (the control plane's routes, asked directly) is newer and
    /// holds a service, or descriptors, that this table does not.
    pub fn is_behind(&self, heard: &RouteSnapshot) -> bool {
        heard.version > self.version
            && heard
                .services
                .iter()
                .any(|routes| match self.services.get(&routes.name) {
                    None => true,
                    Some(known) => known.descriptor_set != routes.descriptor_set,
                })
    }

    /// Every address a call could be routed to: the shards' owners and the
    /// ready instances of every service.
    pub fn addresses(&self) -> HashSet<&str> {
        self.services
            .values()
            .flat_map(|service| service.ready.iter().chain(service.shards.iter().flatten()))
            .map(|target| target.address.as_str())
            .collect()
    }

    /// The deployed service serving a gRPC service.
    pub fn service_for(&self, grpc_service: &str) -> Option<&ServiceTable> {
        self.services.get(self.deployment_of.get(grpc_service)?)
    }
}

fn build_model(routes: &ServiceRoutes) -> Option<Arc<ServiceModel>> {
    if routes.descriptor_set.is_empty() {
        return None;
    }
    let spec = EntitySpec {
        proto: routes.descriptor_set.clone(),
        entities: routes
            .entities
            .iter()
            .map(|e| Entity {
                entity_type: e.entity_type.clone(),
                service_name: e.service_name.clone(),
                persistence_id: e.persistence_id.clone(),
                passivation_strategy: None,
            })
            .collect(),
        service_info: None,
    };
    match ServiceModel::from_spec(&spec) {
        Ok(model) if !model.entities.is_empty() => Some(Arc::new(model)),
        Ok(_) => None,
        Err(error) => {
            tracing::warn!(service = %routes.name, %error, "cannot serve this service's descriptors");
            None
        }
    }
}

/// The methods of every deployed service, for a managed sidecar's forwards and
/// side effects.
pub struct RoutedTargets(pub watch::Receiver<Arc<RouteTable>>);

impl Targets for RoutedTargets {
    fn method(&self, service: &str, method: &str) -> Option<Arc<MethodModel>> {
        Targets::method(self.0.borrow().catalog.as_ref(), service, method)
    }
}

#[cfg(test)]
mod tests {
    use strata_proto::strata::controlplane::v1::InstanceRoute;

    use super::*;

    fn instance(id: &str, revision: u64, state: &str) -> InstanceRoute {
        InstanceRoute {
            id: id.into(),
            address: format!("{id}:1"),
            state: state.into(),
            revision,
        }
    }

    fn table(instances: Vec<InstanceRoute>, canary_revision: u64, canary_percent: u32) -> Arc<RouteTable> {
        let snapshot = RouteSnapshot {
            version: 1,
            services: vec![ServiceRoutes {
                name: "hello".into(),
                instances,
                canary_revision,
                canary_percent,
                ..Default::default()
            }],
        };
        Arc::new(RouteTable::build(&snapshot, &RouteTable::default()))
    }

    fn canary_calls(table: &RouteTable) -> usize {
        let service = &table.services["hello"];
        (0..100)
            .filter(|&turn| service.action_targets(turn).iter().any(|t| t.instance == "c"))
            .count()
    }

    #[test]
    fn a_canary_serves_exactly_its_share_of_each_hundred_action_calls() {
        let both = table(
            vec![
                instance("a", 1, "ready"),
                instance("b", 1, "ready"),
                instance("c", 2, "ready"),
            ],
            2,
            25,
        );
        assert_eq!(canary_calls(&both), 25);
        let service = &both.services["hello"];
        assert!(service.action_targets(99).iter().all(|t| t.instance != "c"));
        assert_eq!(service.action_targets(99).len(), 2);
        // --- a canary not ready yet, or no canary: every ready instance serves
        let starting = table(vec![instance("a", 1, "ready"), instance("c", 2, "starting")], 2, 25);
        assert!(starting.services["hello"].canary.is_none());
        let none = table(vec![instance("a", 1, "ready"), instance("c", 2, "ready")], 0, 0);
        assert_eq!(canary_calls(&none), 100, "every call may go to either");
        assert_eq!(none.services["hello"].action_targets(7).len(), 2);
    }
}
