//! A sidecar's membership in a Strata deployment: it registers with the control
//! plane, reports ready with the function's descriptors, heartbeats, and follows
//! the route watch to learn which shards it owns (and every service's routes,
//! for its function's forwards and side effects). Commands for other shards are
//! refused as "not owner"; entities of shards it lost are passivated. A shard it
//! hands off (the routes name its next owner) takes no new command: its entities
//! finish what they have and passivate, then the sidecar releases it; commands for
//! a shard handed to it wait until it holds the shard. Without a control plane
//! (plain `strata proxy`) the sidecar owns everything.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use strata_proto::cloudstate::EntitySpec;
use strata_proto::strata::controlplane::v1::{
    DrainRequest, EntityRoute, HeartbeatRequest, RegisterInstanceRequest, ReleaseShardsRequest, ReportReadyRequest,
    RouteSnapshot,
};
use strata_tls::ClientTls;
use tokio::sync::watch;

use super::entity::{Done, Entities};
use crate::{
    backoff::Backoff,
    routing::{
        control_plane::{fails_over, ControlPlaneClient, ControlPlaneError},
        route_watch,
        routes::RouteTable,
    },
    shard::shard_of,
};

/// How to reach the control plane and who this instance is.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// The control plane's data-plane addresses, comma-separated, e.g.
    /// `http://10.0.0.1:9101,http://10.0.0.2:9101` (calls fail over between them).
    pub control_plane: String,
    pub token: Option<String>,
    pub instance_id: String,
    /// The registry's service (deployment) name.
    pub service: String,
    /// Where gateways reach this sidecar (host:port).
    pub advertise: String,
    /// Where the autoscaler reads its /metrics (host:port); set by the sidecar
    /// once its admin listener is bound.
    pub admin_advertise: String,
    /// How long one call to the control plane may take (register, ready,
    /// heartbeat, drain, poke; a route watch until it starts).
    pub timeout: Duration,
    /// The CA to trust and the certificate to present at `https://` addresses.
    pub tls: ClientTls,
    /// The revision of the service this instance runs (0: not said).
    pub revision: u64,
}

/// The shards this instance owns, from the route snapshot of `version`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    pub version: u64,
    pub shard_count: u32,
    pub owned: HashSet<u32>,
    /// The epoch at which each owned shard is held (what fences its timers).
    pub epochs: BTreeMap<u32, u64>,
    /// Shards this instance still holds but hands off: no new command runs here.
    pub releasing: BTreeSet<u32>,
    /// Shards handed to this instance: their commands wait until it holds them.
    pub incoming: HashSet<u32>,
}

impl Ownership {
    pub fn owns(&self, entity_id: &str) -> bool {
        self.shard_count > 0 && self.owned.contains(&shard_of(entity_id, self.shard_count))
    }

    /// Whether this instance owns shard `shard` (of however many there are).
    pub fn owns_shard(&self, shard: u32) -> bool {
        self.owned.contains(&shard)
    }

    /// Whether `entity_id`'s shard is on its way to this instance.
    pub fn receives(&self, entity_id: &str) -> bool {
        self.shard_count > 0 && self.incoming.contains(&shard_of(entity_id, self.shard_count))
    }

    /// Whether the same shards are owned at the same epochs, and the same handed
    /// off and to (whatever the versions).
    fn same_shards(&self, other: &Ownership) -> bool {
        self.shard_count == other.shard_count
            && self.epochs == other.epochs
            && self.releasing == other.releasing
            && self.incoming == other.incoming
    }

    /// This instance's shards in a snapshot of every service's routes.
    pub fn from_snapshot(snapshot: &RouteSnapshot, service: &str, instance_id: &str) -> Self {
        let Some(routes) = snapshot.services.iter().find(|s| s.name == service) else {
            return Ownership {
                version: snapshot.version,
                ..Ownership::default()
            };
        };
        let mut ownership = Ownership {
            version: snapshot.version,
            shard_count: routes.shards.len() as u32,
            ..Ownership::default()
        };
        for (number, shard) in routes.shards.iter().enumerate() {
            let number = number as u32;
            if shard.owner == instance_id && shard.handoff_to.is_empty() {
                ownership.owned.insert(number);
                ownership.epochs.insert(number, shard.epoch);
            } else if shard.owner == instance_id {
                ownership.releasing.insert(number);
            } else if shard.handoff_to == instance_id {
                ownership.incoming.insert(number);
            }
        }
        ownership
    }
}

/// The live membership of a managed sidecar.
pub struct Membership {
    config: MembershipConfig,
    client: ControlPlaneClient,
    ownership: watch::Receiver<Ownership>,
    ownership_tx: watch::Sender<Ownership>,
    routes: watch::Sender<Arc<RouteTable>>,
    /// The entities to passivate when their shards move away; set once the
    /// sidecar serves (before that none is active).
    entities: OnceLock<Arc<Entities>>,
    /// Shards whose release is under way (waiting for their entities, or sent).
    releasing: Arc<Mutex<BTreeSet<u32>>>,
    heartbeat_interval: Duration,
}

impl Membership {
    /// Registers the instance (state: starting), retrying while the control plane
    /// is not reachable, for at most `patience`.
    pub async fn register(config: MembershipConfig, patience: Duration) -> Result<Self, ControlPlaneError> {
        let client = ControlPlaneClient::with_tls(
            &config.control_plane,
            config.token.as_deref(),
            config.timeout,
            &config.tls,
        )?;
        let started = tokio::time::Instant::now();
        let mut backoff = Backoff::default();
        let response = loop {
            let request = RegisterInstanceRequest {
                instance_id: config.instance_id.clone(),
                service: config.service.clone(),
                address: config.advertise.clone(),
                admin_address: config.admin_advertise.clone(),
                revision: config.revision,
            };
            let registered = client
                .call("register", |mut client| {
                    let request = request.clone();
                    async move { client.register_instance(request).await }
                })
                .await;
            match registered {
                Ok(response) => break response,
                Err(status) if fails_over(&status) && started.elapsed() + backoff.peek() < patience => {
                    tracing::debug!(error = %status.message(), "control plane not ready, retrying registration");
                    backoff.wait().await;
                }
                Err(status) if fails_over(&status) => {
                    return Err(ControlPlaneError::Unreachable {
                        address: config.control_plane.clone(),
                        message: status.message().to_string(),
                    })
                }
                Err(status) => {
                    return Err(ControlPlaneError::Refused {
                        what: "the registration",
                        message: status.message().to_string(),
                    })
                }
            }
        };
        tracing::info!(instance = %config.instance_id, service = %config.service, "registered with the control plane");
        let (ownership_tx, ownership) = watch::channel(Ownership::default());
        Ok(Self {
            config,
            client,
            ownership,
            ownership_tx,
            routes: watch::channel(Arc::new(RouteTable::default())).0,
            entities: OnceLock::new(),
            releasing: Arc::default(),
            heartbeat_interval: Duration::from_millis(u64::from(response.heartbeat_interval_ms.max(100))),
        })
    }

    /// Reports discovery done, with the function's descriptors (repeated files
    /// merged) and entities.
    /// Reports the instance ready with what discovery found: the descriptors, the
    /// entities, and the event logs its actions subscribe to (so their writers
    /// may wake it from zero).
    pub async fn report_ready(
        &self,
        spec: &EntitySpec,
        descriptor_set: Vec<u8>,
        subscriptions: Vec<String>,
    ) -> Result<(), ControlPlaneError> {
        let request = ReportReadyRequest {
            instance_id: self.config.instance_id.clone(),
            descriptor_set,
            entities: spec
                .entities
                .iter()
                .map(|e| EntityRoute {
                    entity_type: e.entity_type.clone(),
                    service_name: e.service_name.clone(),
                    persistence_id: e.persistence_id.clone(),
                })
                .collect(),
            subscriptions,
        };
        self.client
            .call("report ready", |mut client| {
                let request = request.clone();
                async move { client.report_ready(request).await }
            })
            .await
            .map_err(|status| ControlPlaneError::Refused {
                what: "the ready report",
                message: status.message().to_string(),
            })?;
        tracing::info!(instance = %self.config.instance_id, "reported ready");
        Ok(())
    }

    pub fn ownership(&self) -> watch::Receiver<Ownership> {
        self.ownership.clone()
    }

    /// Every deployed service's routes, as of the latest snapshot.
    pub fn routes(&self) -> watch::Receiver<Arc<RouteTable>> {
        self.routes.subscribe()
    }

    /// The control plane's data-plane client.
    pub fn client(&self) -> ControlPlaneClient {
        self.client.clone()
    }

    /// Heartbeats until the control plane forgets this instance; then resolves,
    /// so the sidecar can stop (its runtime starts a fresh instance).
    pub async fn heartbeat_until_forgotten(&self) {
        let mut ticks = tokio::time::interval(self.heartbeat_interval);
        loop {
            ticks.tick().await;
            let request = HeartbeatRequest {
                instance_id: self.config.instance_id.clone(),
            };
            let answer = self
                .client
                .call("heartbeat", |mut client| {
                    let request = request.clone();
                    async move { client.heartbeat(request).await }
                })
                .await;
            match answer {
                Ok(response) if !response.known => {
                    tracing::error!(instance = %self.config.instance_id, "the control plane no longer knows this instance; stopping");
                    return;
                }
                Ok(_) => {}
                Err(status) => tracing::warn!(error = %status.message(), "heartbeat failed"),
            }
        }
    }

    /// From now on, the entities of shards this instance loses are passivated.
    pub fn passivate_lost_shards(&self, entities: Arc<Entities>) {
        let _ = self.entities.set(entities);
    }

    /// Follows the route watch forever (reconnecting), publishing this instance's
    /// shards and passivating the entities of shards it no longer owns (see
    /// [`Membership::passivate_lost_shards`]).
    pub async fn follow_routes(&self) {
        route_watch::follow(&self.client, |snapshot| self.apply(&snapshot)).await
    }

    fn apply(&self, snapshot: &RouteSnapshot) {
        let table = RouteTable::build(snapshot, &self.routes.borrow());
        self.routes.send_replace(Arc::new(table));
        let ownership = Ownership::from_snapshot(snapshot, &self.config.service, &self.config.instance_id);
        if ownership.same_shards(&self.ownership.borrow()) {
            // Nothing moved, but the version advanced: calls routed by it may go on.
            self.ownership_tx.send_replace(ownership);
            return;
        }
        tracing::info!(
            instance = %self.config.instance_id,
            owned = ownership.owned.len(),
            of = ownership.shard_count,
            version = snapshot.version,
            "shard ownership changed"
        );
        let released: Vec<Done> = self.entities.get().map_or_else(Vec::new, |entities| {
            entities.release(|_, entity_id| !ownership.owns(entity_id))
        });
        if !released.is_empty() {
            tracing::info!(
                released = released.len(),
                "passivating entities of shards this instance lost or hands off"
            );
        }
        self.release_when_done(&ownership.releasing, ownership.shard_count, released);
        self.ownership_tx.send_replace(ownership);
    }

    /// Once the entities of the shards it hands off have ended (their commands
    /// answered, their writes durable), tells the control plane so their next
    /// owners may hold them. Each shard's release is under way once.
    fn release_when_done(&self, handing_off: &BTreeSet<u32>, shard_count: u32, entities: Vec<Done>) {
        let shards: Vec<u32> = {
            let mut under_way = self.releasing.lock().expect("poisoned");
            under_way.retain(|shard| handing_off.contains(shard));
            let new: Vec<u32> = handing_off.difference(&under_way).copied().collect();
            under_way.extend(&new);
            new
        };
        if shards.is_empty() {
            return;
        }
        let (client, instance_id, releasing) = (
            self.client.clone(),
            self.config.instance_id.clone(),
            Arc::clone(&self.releasing),
        );
        let waiting = self.entities.get().cloned();
        tokio::spawn(async move {
            for mut done in entities {
                while done.changed().await.is_ok() {}
            }
            // A command that passed its owner check just before the hand-off began
            // may have started its entity since: let it finish too.
            if let Some(entities) = waiting {
                let stragglers = entities.release(|_, entity_id| shards.contains(&shard_of(entity_id, shard_count)));
                for mut done in stragglers {
                    while done.changed().await.is_ok() {}
                }
            }
            let request = ReleaseShardsRequest {
                instance_id,
                shards: shards.clone(),
            };
            let released = client
                .call("release shards", |mut client| {
                    let request = request.clone();
                    async move { client.release_shards(request).await }
                })
                .await;
            match released {
                Ok(_) => tracing::info!(shards = ?shards, "released shards handed off"),
                Err(status) => {
                    tracing::warn!(error = %status.message(), shards = ?shards, "could not release shards; the control plane completes the hand-off after its timeout");
                    // Asked again on the next route change.
                    let mut under_way = releasing.lock().expect("poisoned");
                    for shard in &shards {
                        under_way.remove(shard);
                    }
                }
            }
        });
    }

    /// Gives the shards up before stopping, and waits (bounded) until the
    /// control plane has moved them.
    pub async fn drain(&self, reason: &str, patience: Duration) {
        let request = DrainRequest {
            instance_id: self.config.instance_id.clone(),
            reason: reason.to_string(),
        };
        let drained = self
            .client
            .call("drain", |mut client| {
                let request = request.clone();
                async move { client.drain(request).await }
            })
            .await;
        if let Err(status) = drained {
            tracing::warn!(error = %status.message(), "drain request failed");
            return;
        }
        let mut ownership = self.ownership.clone();
        let _ = tokio::time::timeout(patience, ownership.wait_for(|o| o.owned.is_empty())).await;
    }
}
