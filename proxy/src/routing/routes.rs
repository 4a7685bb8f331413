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
    /// How long a request may wait for the service to wake from zero; `None`: the
    /// gateway's own default.
    pub hold_timeout: Option<Duration>,
}

impl ServiceTable {
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
