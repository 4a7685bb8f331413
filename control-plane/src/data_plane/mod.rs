//! The data-plane gRPC API (`strata.controlplane.v1.DataPlane`) that sidecars and
//! gateways call: registration, readiness, heartbeats, drain, scale-from-zero pokes and
//! the route watch. Served beside the Raft transport. Writes become registry commands
//! (forwarded to the leader by followers); heartbeats stay in the leader's memory.

mod error;
mod liveness;
mod routes;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use prost::Message;
use strata_proto::strata::controlplane::v1::data_plane_client::DataPlaneClient;
use strata_proto::strata::controlplane::v1::data_plane_server::{DataPlane, DataPlaneServer};
use strata_proto::strata::controlplane::v1::{
    DrainRequest, DrainResponse, HeartbeatRequest, HeartbeatResponse, PokeRequest, PokeResponse,
    RegisterInstanceRequest, RegisterInstanceResponse, ReleaseShardsRequest, ReleaseShardsResponse, ReportReadyRequest,
    ReportReadyResponse, ReportTimersRequest, ReportTimersResponse, RouteSnapshot, WatchRoutesRequest,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub use error::status_of;
pub use liveness::Liveness;
pub use routes::{affects_routes, route_snapshot};

use crate::auth::{bearer, Authenticator, DataPlaneCall, Principal};
use crate::node::{ControlPlane, NodeError};
use crate::registry::{format_duration_ms, Command, EntityInfo, Outcome, HANDOFF_TIMEOUT_MS};
use crate::runtime::autoscale::{PokeError, Pokes};
use crate::tasks::{Stopping, Tasks};
use strata_autoscaler::Wake;

/// Marks a call that a follower already relayed, so it is never relayed twice.
const FORWARDED: &str = "x-strata-forwarded-by";
/// How long a follower waits for the leader to answer a relayed call.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// The reason a poke writes into the scale history.
pub const SCALE_FROM_ZERO_REASON: &str = "request arrived at zero: scale from zero";
/// The reason an events poke writes into the scale history (without an autoscaler).
pub const EVENTS_WAKE_REASON: &str = "events arrived for its event-log subscriptions: scale from zero";

/// Heartbeat timing that instances are told and the leader enforces.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatSettings {
    pub interval: Duration,
    pub timeout: Duration,
}

/// Who presented the call's bearer token (401 when nobody the cluster knows).
fn principal(auth: &Authenticator, metadata: &MetadataMap) -> Result<Principal, Status> {
    let presented = bearer(metadata.get("authorization").and_then(|value| value.to_str().ok()));
    auth.identify(presented)
        .map_err(|error| Status::unauthenticated(error.to_string()))
}

fn authorize(principal: &Principal, call: DataPlaneCall<'_>) -> Result<(), Status> {
    principal
        .may(&call)
        .map_err(|denied| Status::permission_denied(denied.0))
}

/// The server half of `DataPlane`. Clones share the liveness table.
#[derive(Clone)]
pub struct DataPlaneService {
    node: Arc<ControlPlane>,
    /// The admin token and cluster secret may do anything here; the gateway token
    /// watches and pokes; an instance credential acts for its own instance only, and
    /// wakes the subscribers of its own service's event logs.
    auth: Arc<Authenticator>,
    heartbeats: HeartbeatSettings,
    liveness: Arc<Mutex<Liveness>>,
    /// A connection to the current leader, by its address, for relayed calls.
    leader: Arc<Mutex<Option<LeaderClient>>>,
    tasks: Tasks,
    /// The autoscaler that decides pokes, when this node runs one.
    autoscaler: Option<Pokes>,
}

type LeaderClient = (String, DataPlaneClient<Channel>);

/// Where a write is served: here (this node leads) or on the leader.
enum Route {
    Local,
    Leader(DataPlaneClient<Channel>),
}

impl DataPlaneService {
    /// `tasks` runs the route watchers (they end when the tasks stop).
    pub fn new(node: Arc<ControlPlane>, auth: Authenticator, heartbeats: HeartbeatSettings, tasks: Tasks) -> Self {
        DataPlaneService {
            node,
            auth: Arc::new(auth),
            heartbeats,
            liveness: Arc::new(Mutex::new(Liveness::new(heartbeats.timeout))),
            leader: Arc::default(),
            tasks,
            autoscaler: None,
        }
    }

    /// Pokes go to this autoscaler, which sizes the scale-from-zero by the held requests;
    /// without one a poke asks the registry for one instance (or min scale).
    pub fn with_autoscaler(self, pokes: Pokes) -> Self {
        DataPlaneService {
            autoscaler: Some(pokes),
            ..self
        }
    }

    pub fn server(self) -> DataPlaneServer<DataPlaneService> {
        // Descriptor sets of large functions exceed tonic's 4 MiB default.
        DataPlaneServer::new(self)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024)
    }

    fn liveness(&self) -> MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Decides whether this node serves a write or relays it to the leader.
    fn route(&self, metadata: &MetadataMap) -> Result<Route, Status> {
        if self.node.is_leader() {
            return Ok(Route::Local);
        }
        if metadata.contains_key(FORWARDED) {
            return Err(Status::unavailable("leadership is changing; retry shortly"));
        }
        let leader_id = self
            .node
            .current_leader()
            .filter(|leader| *leader != self.node.node_id())
            .ok_or_else(|| status_of(NodeError::NoLeader))?;
        let address = self
            .node
            .member(leader_id)
            .map(|info| info.address)
            .ok_or_else(|| status_of(NodeError::NoLeader))?;
        let mut cached = self.leader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((cached_address, client)) = cached.as_ref() {
            if *cached_address == address {
                return Ok(Route::Leader(client.clone()));
            }
        }
        let endpoint = self
            .node
            .peer_tls()
            .endpoint(&address)
            .map_err(|_| Status::unavailable("the leader's address is invalid; retry shortly"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(FORWARD_TIMEOUT);
        let client = DataPlaneClient::new(endpoint.connect_lazy()).max_decoding_message_size(256 * 1024 * 1024);
        *cached = Some((address, client.clone()));
        Ok(Route::Leader(client))
    }

    /// The same call for the leader: the caller's credentials and a relay mark.
    fn relayed<T>(&self, request: Request<T>) -> Request<T> {
        let authorization = request.metadata().get("authorization").cloned();
        let mut relayed = Request::new(request.into_inner());
        if let Some(value) = authorization {
            relayed.metadata_mut().insert("authorization", value);
        }
        if let Ok(value) = self.node.node_id().to_string().parse() {
            relayed.metadata_mut().insert(FORWARDED, value);
        }
        relayed.set_timeout(FORWARD_TIMEOUT);
        relayed
    }

    /// The service the registry has `instance` under (this node's copy: called where
    /// the call is served, on the leader).
    fn registered_service(&self, instance: &str) -> Option<String> {
        self.node
            .read(|registry| registry.instances.get(instance).map(|known| known.service.clone()))
    }

    /// Whether the caller may act for `instance` (report ready, heartbeat, drain).
    fn may_act_for(&self, principal: &Principal, instance: &str) -> Result<(), Status> {
        let registered_service = self.registered_service(instance);
        authorize(
            principal,
            DataPlaneCall::OwnInstance {
                instance,
                registered_service: registered_service.as_deref(),
            },
        )
    }

    /// Whether the caller may wake `service` for events written to `event_log`: by the
    /// registry, who subscribes to it and whose entities write it (on the leader).
    fn may_wake(&self, principal: &Principal, service: &str, event_log: &str) -> Result<(), Status> {
        let (subscribed, writers) = self.node.read(|registry| {
            let subscribed = registry
                .services
                .get(service)
                .is_some_and(|subscriber| subscriber.subscriptions.iter().any(|log| log == event_log));
            let writers: Vec<String> = registry
                .services
                .values()
                .filter(|writer| writer.entities.iter().any(|entity| writes_log(entity, event_log)))
                .map(|writer| writer.name.clone())
                .collect();
            (subscribed, writers)
        });
        let writers: Vec<&str> = writers.iter().map(String::as_str).collect();
        authorize(
            principal,
            DataPlaneCall::WakeSubscriber {
                service,
                event_log,
                subscribed,
                writers: &writers,
            },
        )
    }

    async fn write(&self, command: Command) -> Result<Outcome, Status> {
        self.node.write(command).await.map_err(status_of)
    }
}

/// Whether `entity` journals to `event_log`: only event-sourced entities write event
/// logs, under their persistence id, which defaults to their gRPC service name when
/// discovery reports none (as the sidecar's model does).
fn writes_log(entity: &EntityInfo, event_log: &str) -> bool {
    entity.entity_type == strata_proto::entity_types::EVENT_SOURCED
        && strata_proto::persistence_id(&entity.persistence_id, &entity.service_name) == event_log
}

/// A relayed call's failure: the leader's own answer as it is, or UNAVAILABLE when the
/// call failed on the way (the transport error stays in this node's log).
fn relay_failed(node_id: u64, status: Status) -> Status {
    if std::error::Error::source(&status).is_none() {
        return status;
    }
    tracing::warn!(node_id, error = %status, "relaying a data-plane call to the leader failed");
    if status.code() == tonic::Code::DeadlineExceeded {
        return Status::unavailable("the leader did not answer in time; the call may or may not have taken effect");
    }
    Status::unavailable("cannot reach the leader; retry shortly")
}

fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.trim().is_empty() {
        return Err(Status::invalid_argument(format!("{field} must not be empty")));
    }
    Ok(())
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

#[tonic::async_trait]
impl DataPlane for DataPlaneService {
    async fn register_instance(
        &self,
        request: Request<RegisterInstanceRequest>,
    ) -> Result<Response<RegisterInstanceResponse>, Status> {
        let principal = principal(&self.auth, request.metadata())?;
        let body = request.get_ref();
        required("instance_id", &body.instance_id)?;
        required("service", &body.service)?;
        required("address", &body.address)?;
        authorize(
            &principal,
            DataPlaneCall::Register {
                service: &body.service,
                instance: &body.instance_id,
            },
        )?;
        if let Route::Leader(mut leader) = self.route(request.metadata())? {
            let relayed = self.relayed(request);
            return leader
                .register_instance(relayed)
                .await
                .map_err(|status| relay_failed(self.node.node_id(), status));
        }
        let body = request.into_inner();
        self.write(Command::RegisterInstance {
            id: body.instance_id.clone(),
            service: body.service,
            address: body.address,
            admin_address: body.admin_address,
            revision: body.revision,
        })
        .await?;
        self.liveness().seen(&body.instance_id, Instant::now());
        Ok(Response::new(RegisterInstanceResponse {
            heartbeat_interval_ms: millis(self.heartbeats.interval),
            heartbeat_timeout_ms: millis(self.heartbeats.timeout),
        }))
    }

    async fn report_ready(
        &self,
        request: Request<ReportReadyRequest>,
    ) -> Result<Response<ReportReadyResponse>, Status> {
        let principal = principal(&self.auth, request.metadata())?;
        let body = request.get_ref();
        required("instance_id", &body.instance_id)?;
        if !body.descriptor_set.is_empty()
            && prost_types::FileDescriptorSet::decode(body.descriptor_set.as_slice()).is_err()
        {
            return Err(Status::invalid_argument(
                "descriptor_set is not a serialized google.protobuf.FileDescriptorSet",
            ));
        }
        if let Some(entity) = body
            .entities
            .iter()
            .find(|entity| entity.service_name.trim().is_empty())
        {
            return Err(Status::invalid_argument(format!(
                "every entity needs a service_name (entity type {:?} has none)",
                entity.entity_type
            )));
        }
        if body.subscriptions.iter().any(|event_log| event_log.trim().is_empty()) {
            return Err(Status::invalid_argument(
                "every subscription names an event log (a persistence id); one is empty",
            ));
        }
        if let Route::Leader(mut leader) = self.route(request.metadata())? {
            let relayed = self.relayed(request);
            return leader
                .report_ready(relayed)
                .await
                .map_err(|status| relay_failed(self.node.node_id(), status));
        }
        self.may_act_for(&principal, &request.get_ref().instance_id)?;
        let body = request.into_inner();
        let descriptor_set = (!body.descriptor_set.is_empty())
            .then(|| base64::engine::general_purpose::STANDARD.encode(&body.descriptor_set));
        let entities = body
            .entities
            .into_iter()
            .map(|entity| EntityInfo {
                entity_type: entity.entity_type,
                service_name: entity.service_name,
                persistence_id: entity.persistence_id,
            })
            .collect();
        let mut subscriptions = body.subscriptions;
        subscriptions.sort();
        subscriptions.dedup();
        self.write(Command::InstanceReady {
            id: body.instance_id.clone(),
            descriptor_set,
            entities,
            subscriptions,
        })
        .await?;
        self.liveness().seen(&body.instance_id, Instant::now());
        Ok(Response::new(ReportReadyResponse {}))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        let principal = principal(&self.auth, request.metadata())?;
        required("instance_id", &request.get_ref().instance_id)?;
        if let Route::Leader(mut leader) = self.route(request.metadata())? {
            let relayed = self.relayed(request);
            return leader
                .heartbeat(relayed)
                .await
                .map_err(|status| relay_failed(self.node.node_id(), status));
        }
        self.may_act_for(&principal, &request.get_ref().instance_id)?;
        let instance = request.into_inner().instance_id;
        let known = self.node.read(|registry| registry.instances.contains_key(&instance));
        if known {
            self.liveness().seen(&instance, Instant::now());
        }
        Ok(Response::new(HeartbeatResponse { known }))
    }

    async fn drain(&self, request: Request<DrainRequest>) -> Result<Response<DrainResponse>, Status> {
        let principal = principal(&self.auth, request.metadata())?;
        required("instance_id", &request.get_ref().instance_id)?;
        if let Route::Leader(mut leader) = self.route(request.metadata())? {
            let relayed = self.relayed(request);
            return leader
                .drain(relayed)
                .await
                .map_err(|status| relay_failed(self.node.node_id(), status));
        }
        self.may_act_for(&principal, &request.get_ref().instance_id)?;
        let body = request.into_inner();
        let reason = if body.reason.trim().is_empty() {
            "the instance is shutting down".to_owned()
        } else {
            body.reason
        };
        self.write(Command::DrainInstance {
            id: body.instance_id,
            reason,
        })
        .await?;
        Ok(Response::new(DrainResponse {}))
    }

    async fn report_timers(
        &self,
        request: Request<ReportTimersRequest>,
    ) -> Result<Response<ReportTimersResponse>, Status> {
        let principal = principal(&self.auth, request.metadata())?;
        required("instance_id", &request.get_ref().instance_id)?;
        if request.get_ref().next_due_ms < 0 {
            return Err(Status::invalid_argument(
                "next_due_ms is milliseconds since the Unix epoch (0: no timer); it cannot be negative",
            ));
        }
        if let Route::Leader(mut leader) = self.route(request.metadata())? {
            let relayed = self.relayed(request);
            return leader
                .report_timers(relayed)
                .await
                .map_err(|status| relay_failed(self.node.node_id(), status));
        }
        self.may_act_for(&principal, &request.get_ref().instance_id)?;
        let body = request.into_inner();
        let next_due_ms = u64::try_from(body.next_due_ms).ok().filter(|&at| at > 0);
        self.write(Command::ReportTimers {
            instance: body.instance_id,
            next_due_ms,
        })
        .await?;
        Ok(Response::new(ReportTimersResponse {}))
    }

    async fn release_shards(
        &self,
        request: Request<ReleaseShardsRequest>,
    ) -> Result<Response<ReleaseShardsResponse>, Status> {
        let principal = principal(&self.auth, request.metadata())?;
        required("instance_id", &request.get_ref().instance_id)?;
        if let Route::Leader(mut leader) = self.route(request.metadata())? {
            let relayed = self.relayed(request);
            return leader
                .release_shards(relayed)
                .await
                .map_err(|status| relay_failed(self.node.node_id(), status));
        }
        self.may_act_for(&principal, &request.get_ref().instance_id)?;
        let body = request.into_inner();
        self.write(Command::ReleaseShards {
            instance: body.instance_id,
            shards: body.shards,
        })
        .await?;
        Ok(Response::new(ReleaseShardsResponse {}))
    }

    type WatchRoutesStream = ReceiverStream<Result<RouteSnapshot, Status>>;

    async fn watch_routes(
        &self,
        request: Request<WatchRoutesRequest>,
    ) -> Result<Response<Self::WatchRoutesStream>, Status> {
        authorize(&principal(&self.auth, request.metadata())?, DataPlaneCall::WatchRoutes)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // One task per watcher; it ends when the watcher hangs up or the node stops.
        self.tasks.spawn(
            "route-watcher",
            routes::watch(Arc::clone(&self.node), tx, self.tasks.stopping()),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn poke(&self, request: Request<PokeRequest>) -> Result<Response<PokeResponse>, Status> {
        let principal = principal(&self.auth, request.metadata())?;
        let for_events = !request.get_ref().event_log.is_empty();
        if !for_events {
            authorize(&principal, DataPlaneCall::Poke)?;
        }
        required("service", &request.get_ref().service)?;
        if let Route::Leader(mut leader) = self.route(request.metadata())? {
            let relayed = self.relayed(request);
            return leader
                .poke(relayed)
                .await
                .map_err(|status| relay_failed(self.node.node_id(), status));
        }
        let PokeRequest {
            service,
            held,
            event_log,
        } = request.into_inner();
        // Events are one unit of work however many wait; requests are counted.
        let (held, wake, reason) = if for_events {
            self.may_wake(&principal, &service, &event_log)?;
            (1, Wake::Events, EVENTS_WAKE_REASON)
        } else {
            // Gateways from before the held count send 0: one request at least waits.
            (held.max(1), Wake::Requests, SCALE_FROM_ZERO_REASON)
        };
        if let Some(autoscaler) = &self.autoscaler {
            let desired_replicas = autoscaler
                .poke(&service, held, wake)
                .await
                .map_err(|error| match error {
                    PokeError::NotFound(_) => Status::not_found(error.to_string()),
                    PokeError::NotScaled(_) => Status::failed_precondition(error.to_string()),
                    PokeError::NotLeader | PokeError::Stopped => Status::unavailable(error.to_string()),
                })?;
            return Ok(Response::new(PokeResponse { desired_replicas }));
        }
        let outcome = self
            .write(Command::ScaleFromZero {
                service: service.clone(),
                reason: reason.to_owned(),
            })
            .await?;
        let Outcome::Service(service) = outcome else {
            return Err(Status::internal("unexpected answer from the registry"));
        };
        Ok(Response::new(PokeResponse {
            desired_replicas: service.desired_replicas,
        }))
    }
}

/// On the leader, removes instances that stopped heartbeating. Runs on every node and
/// acts only while the node leads; a node that gains leadership (a new term) starts
/// everyone's grace period afresh, since heartbeats went to the previous leader.
pub async fn reap_silent_instances(service: DataPlaneService, stopping: Stopping) {
    let node = Arc::clone(&service.node);
    let timeout = service.heartbeats.timeout;
    let reason = format!(
        "missed heartbeats for {}",
        format_duration_ms(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
    );
    let mut ticks = tokio::time::interval(service.heartbeats.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = stopping.wait();
    tokio::pin!(stop);
    let mut leading_term = None;
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticks.tick() => {}
        }
        let term = node.raft_status().term;
        if !node.is_leader() {
            leading_term = None;
            continue;
        }
        if leading_term != Some(term) {
            leading_term = Some(term);
            service.liveness().reset();
            tracing::info!(
                node_id = node.node_id(),
                term,
                "leading: every instance gets a fresh heartbeat grace period"
            );
        }
        let expired = {
            let registered: Vec<String> = node.read(|registry| registry.instances.keys().cloned().collect());
            service
                .liveness()
                .expired(registered.iter().map(String::as_str), Instant::now())
        };
        for (instance, silent) in expired {
            tracing::info!(
                node_id = node.node_id(),
                term,
                instance,
                silent_ms = silent.as_millis() as u64,
                "removing an instance that stopped heartbeating"
            );
            match node
                .write(Command::RemoveInstance {
                    id: instance.clone(),
                    reason: reason.clone(),
                })
                .await
            {
                Ok(_) => service.liveness().forget(&instance),
                Err(error) => {
                    tracing::warn!(node_id = node.node_id(), term, instance, %error, "could not remove a silent instance");
                }
            }
        }
        expire_handoffs(&node).await;
    }
}

/// Completes the shard hand-offs whose old owners did not release them in time
/// (a write only when one is overdue).
async fn expire_handoffs(node: &ControlPlane) {
    let now_ms = crate::node::now_ms();
    let overdue = node.read(|registry| {
        registry.services.values().any(|service| {
            service.shards.iter().any(|shard| {
                shard
                    .handoff
                    .as_ref()
                    .is_some_and(|handoff| now_ms.saturating_sub(handoff.since_ms) >= HANDOFF_TIMEOUT_MS)
            })
        })
    });
    if !overdue {
        return;
    }
    tracing::warn!(
        node_id = node.node_id(),
        "shard hand-offs not released in time complete without their owners"
    );
    if let Err(error) = node.write(Command::ExpireHandoffs).await {
        tracing::warn!(node_id = node.node_id(), %error, "could not expire shard hand-offs");
    }
}
