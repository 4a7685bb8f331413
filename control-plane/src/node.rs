//! One control-plane node: the Raft instance with its log store and state machine, and
//! the operations the APIs need (replicated writes, linearizable reads, membership).
//! HTTP and gRPC serving live in `api` and `server`; this module only talks to Raft.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, RaftNetworkFactory, ServerState};

use crate::auth::ClusterSecret;
use crate::metrics_history::MetricsHistory;
use crate::raft::leader_lease::{self, Leadership};
use crate::raft::log_store::LogStore;
use crate::raft::network::{self, PeerTls};
use crate::raft::state_machine::{AppliedEffects, StateMachine};
use crate::raft::{NodeId, NodeInfo, Raft, RaftMetrics, Response, TypeConfig};
use crate::registry::{Command, Outcome, Registry, RegistryError, Request};
use crate::telemetry::{self, Telemetry};

/// Why a node could not serve a write, a read or a membership change.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Another node leads; the caller may forward there.
    #[error("node {leader_id} is the leader")]
    NotLeader {
        leader_id: NodeId,
        leader: Option<NodeInfo>,
    },
    #[error("the cluster has no leader right now; retry shortly")]
    NoLeader,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
}

/// Timing knobs; tests shrink them, production keeps the defaults.
#[derive(Debug, Clone)]
pub struct Timing {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
}

/// A leader's `kill -9` costs about `election_timeout_max` (followers honour the
/// old leader's lease) plus one randomized election timeout plus a heartbeat:
/// about 0.75 s with these defaults. An election timeout is four to eight
/// heartbeats, so a follower on a loaded machine that misses a few heartbeats
/// does not start an election (`strata-bench registry` counts elections under
/// load; see docs/benchmarks.md).
impl Default for Timing {
    fn default() -> Self {
        Timing::with_heartbeat(Timing::DEFAULT_HEARTBEAT_MS)
    }
}

impl Timing {
    pub const DEFAULT_HEARTBEAT_MS: u64 = 50;

    /// Heartbeats every `heartbeat_ms`, elections after four to eight of them
    /// are missed. openraft gives every replication RPC one heartbeat interval
    /// to complete, so links whose round trip approaches it stall the cluster
    /// (no leader keeps its followers) even far below the election timeout.
    pub fn with_heartbeat(heartbeat_ms: u64) -> Timing {
        let heartbeat_ms = heartbeat_ms.max(1);
        Timing {
            heartbeat_interval_ms: heartbeat_ms,
            election_timeout_min_ms: 4 * heartbeat_ms,
            election_timeout_max_ms: 8 * heartbeat_ms,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub info: NodeInfo,
    pub secret: ClusterSecret,
    pub timing: Timing,
    /// How this node dials its peers (joining members, relaying to the leader).
    pub peer_tls: PeerTls,
}

/// A running control-plane node. Cheap to share behind an `Arc`.
pub struct ControlPlane {
    node_id: NodeId,
    info: NodeInfo,
    raft: Raft,
    state_machine: StateMachine,
    log: LogStore,
    secret: ClusterSecret,
    /// How this node dials its peers' Raft and data-plane port.
    peer_tls: PeerTls,
    /// This node's Prometheus metrics (`/metrics`).
    telemetry: Arc<Telemetry>,
    /// Per-service metric series, filled while this node leads (the dashboard's charts).
    history: Arc<MetricsHistory>,
    /// Raft allows one membership change at a time; concurrent joins queue here.
    membership_change: tokio::sync::Mutex<()>,
    leadership: tokio::sync::watch::Receiver<Leadership>,
}

/// Where a node's Raft stands, as `/metrics` and `GET /cluster` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftStatus {
    pub term: u64,
    /// Leader, with its lease held (see [`ControlPlane::is_leader`]).
    pub leading: bool,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
}

impl ControlPlane {
    /// Opens the node's data directory and starts Raft with the given network.
    pub async fn start<N: RaftNetworkFactory<TypeConfig>>(
        config: NodeConfig,
        network: N,
    ) -> Result<Arc<Self>, NodeError> {
        let dir = config.data_dir.join("raft");
        let telemetry = Arc::new(Telemetry::new());
        let history = Arc::new(MetricsHistory::default());
        let log = LogStore::open(&dir)
            .map_err(|error| NodeError::Unavailable(format!("cannot open the raft log in {}: {error}", dir.display())))?
            .timing_appends(telemetry.raft_append_seconds.clone());
        let state_machine = StateMachine::open(&dir).map_err(|error| {
            NodeError::Unavailable(format!("cannot open the snapshot in {}: {error}", dir.display()))
        })?;
        let raft_config = openraft::Config {
            cluster_name: "strata-control-plane".into(),
            heartbeat_interval: config.timing.heartbeat_interval_ms,
            election_timeout_min: config.timing.election_timeout_min_ms,
            election_timeout_max: config.timing.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(2_000),
            max_in_snapshot_log_to_keep: 500,
            ..Default::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|error| NodeError::Invalid(error.to_string()))?,
        );
        let raft = Raft::new(config.node_id, raft_config, network, log.clone(), state_machine.clone())
            .await
            .map_err(|error| NodeError::Unavailable(format!("raft did not start: {error}")))?;
        tracing::info!(node_id = config.node_id, address = %config.info.address, "control-plane node started");
        let (publish, leadership) = tokio::sync::watch::channel(Leadership::default());
        let lease = Duration::from_millis(config.timing.election_timeout_max_ms);
        // Ends by itself when Raft shuts down.
        tokio::spawn(leader_lease::follow(raft.clone(), config.node_id, lease, publish));
        // Also ends by itself when Raft shuts down.
        tokio::spawn(telemetry::follow(
            raft.clone(),
            state_machine.subscribe(),
            telemetry.clone(),
            history.clone(),
        ));
        Ok(Arc::new(ControlPlane {
            node_id: config.node_id,
            info: config.info,
            raft,
            state_machine,
            log,
            secret: config.secret,
            peer_tls: config.peer_tls,
            telemetry,
            history,
            membership_change: tokio::sync::Mutex::new(()),
            leadership,
        }))
    }

    /// Makes this node the single voter of a new cluster; a no-op if it already has state.
    pub async fn bootstrap(&self) -> Result<(), NodeError> {
        if self.raft.is_initialized().await.map_err(unavailable)? {
            tracing::info!(node_id = self.node_id, "already initialized, not bootstrapping again");
            return Ok(());
        }
        let members = BTreeMap::from([(self.node_id, self.info.clone())]);
        self.raft
            .initialize(members)
            .await
            .map_err(|error| NodeError::Unavailable(error.to_string()))?;
        tracing::info!(node_id = self.node_id, "bootstrapped a new cluster");
        Ok(())
    }

    pub async fn is_initialized(&self) -> bool {
        self.raft.is_initialized().await.unwrap_or(false)
    }

    /// Proposes a command and waits until it is committed and applied here.
    pub async fn write(&self, command: Command) -> Result<Outcome, NodeError> {
        let kind = command.kind();
        let result = self.propose(command).await;
        let outcome = match &result {
            Ok(_) => "applied",
            Err(NodeError::Registry(_)) => "refused",
            Err(NodeError::NotLeader { .. } | NodeError::NoLeader) => "not_leader",
            Err(_) => "failed",
        };
        self.telemetry.registry_write(kind, outcome);
        result
    }

    async fn propose(&self, command: Command) -> Result<Outcome, NodeError> {
        self.refuse_without_lease()?;
        let request = Request {
            at_ms: now_ms(),
            command,
        };
        match self.raft.client_write(request).await {
            Ok(response) => Ok(into_result(response.data)?),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => Err(not_leader(forward)),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error))) => {
                Err(NodeError::Conflict(error.to_string()))
            }
            Err(RaftError::Fatal(error)) => Err(NodeError::Unavailable(error.to_string())),
        }
    }

    /// On the leader: confirms leadership with a quorum and returns the index that a
    /// linearizable read must see applied.
    pub async fn read_index(&self) -> Result<u64, NodeError> {
        self.refuse_without_lease()?;
        match self.raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map_or(0, |id| id.index)),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(forward))) => {
                Err(not_leader(forward))
            }
            Err(RaftError::APIError(error)) => Err(NodeError::Unavailable(error.to_string())),
            Err(RaftError::Fatal(error)) => Err(NodeError::Unavailable(error.to_string())),
        }
    }

    /// Waits until this node has applied `index` (a read index obtained from the leader).
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), NodeError> {
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map(|_| ())
            .map_err(|_| NodeError::Unavailable("this node is not catching up with the leader; retry".into()))
    }

    /// Reads the registry as this node has applied it (not linearizable: a follower may
    /// lag; call [`ControlPlane::read_index`] first on the leader for a consistent read).
    /// The one way to read it: writes wait while `read` runs, so keep it short.
    pub fn read<T>(&self, read: impl FnOnce(&Registry) -> T) -> T {
        self.read_at(|registry, _| read(registry))
    }

    /// [`ControlPlane::read`], with the index of the last entry applied to what it
    /// reads (0 before the first): the version of that registry.
    pub fn read_at<T>(&self, read: impl FnOnce(&Registry, u64) -> T) -> T {
        let applied = self.state_machine.read();
        read(&applied.registry, applied.last_applied.map_or(0, |id| id.index))
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// How this node dials its peers' Raft and data-plane port.
    pub fn peer_tls(&self) -> &PeerTls {
        &self.peer_tls
    }

    /// This node's Prometheus metrics (`/metrics`); render them with
    /// [`ControlPlane::raft_status`] and the registry.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Per-service metric series, filled while this node leads (the dashboard's charts).
    pub fn history(&self) -> &Arc<MetricsHistory> {
        &self.history
    }

    /// The Raft instance, for a transport to hand it its peers' RPCs (the gRPC
    /// transport, the in-memory router of tests). Read state through
    /// [`ControlPlane::read`], [`ControlPlane::raft_status`] and
    /// [`ControlPlane::raft_metrics`], never through it.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Raft's own view of this node now: membership, replication, state. Its
    /// `state` says Leader while the lease may have run out: ask
    /// [`ControlPlane::is_leader`] for that.
    pub fn raft_metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow().clone()
    }

    /// Raft's view as it changes (leaders, terms), for streams of it.
    pub fn watch_raft_metrics(&self) -> tokio::sync::watch::Receiver<RaftMetrics> {
        self.raft.metrics()
    }

    /// Where this node's Raft stands now: its term, whether it leads, its indexes.
    pub fn raft_status(&self) -> RaftStatus {
        let metrics = self.raft.metrics().borrow().clone();
        RaftStatus {
            term: metrics.current_term,
            leading: self.is_leader(),
            last_log_index: metrics.last_log_index,
            committed_index: self.log.committed().map(|id| id.index),
            applied_index: metrics.last_applied.map(|id| id.index),
        }
    }

    /// Effects of the entries this node applies from now on (every node applies the
    /// same log). A slow receiver gets `Lagged` and should re-read the registry.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<AppliedEffects> {
        self.state_machine.subscribe()
    }

    /// The leader as this node knows it; never itself while it has lost its quorum.
    pub fn current_leader(&self) -> Option<NodeId> {
        let leader = self.raft.metrics().borrow().current_leader;
        if leader == Some(self.node_id) && !self.is_leader() {
            return None;
        }
        leader
    }

    /// Whether this node may act as leader now: Raft made it leader and a quorum has
    /// acknowledged it within the lease (see `raft::leader_lease`). Gate leader-only
    /// work on this, not on Raft's own state.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader && self.leadership.borrow().holds(Instant::now())
    }

    /// Leadership changes as they happen (`leading` flips, or the term moves). The
    /// published value may outlive its lease: check [`Leadership::holds`] or
    /// [`ControlPlane::is_leader`] before acting.
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// Raft still calls this node leader but its lease ran out (cut off from its
    /// quorum): refuse before proposing anything, so the caller may safely retry.
    fn refuse_without_lease(&self) -> Result<(), NodeError> {
        let raft_leader = self.raft.metrics().borrow().state == ServerState::Leader;
        if raft_leader && !self.is_leader() {
            return Err(NodeError::NoLeader);
        }
        Ok(())
    }

    /// The node info of a member, from the membership config this node knows.
    pub fn member(&self, node_id: NodeId) -> Option<NodeInfo> {
        let metrics = self.raft.metrics().borrow().clone();
        let found = metrics
            .membership_config
            .nodes()
            .find(|(id, _)| **id == node_id)
            .map(|(_, node)| node.clone());
        found
    }

    /// Adds a node as a learner, waits until it has caught up, then makes it a voter.
    /// Leader only. Refuses a node that does not share the cluster secret.
    pub async fn add_member(&self, node_id: NodeId, info: NodeInfo) -> Result<(), NodeError> {
        if !self.is_leader() {
            return Err(self.leader_error());
        }
        network::ping(&info.address, self.node_id, &self.secret, node_id, &self.peer_tls)
            .await
            .map_err(NodeError::Invalid)?;
        let _serialized = self.membership_change.lock().await;
        let voters = self.voters();
        if voters.contains(&node_id) {
            if self.member(node_id).as_ref() == Some(&info) {
                return Ok(());
            }
            return Err(NodeError::Conflict(format!(
                "node {node_id} is already a member with other addresses"
            )));
        }
        tracing::info!(node_id = self.node_id, new_member = node_id, address = %info.address, "adding a learner");
        self.raft
            .add_learner(node_id, info.clone(), true)
            .await
            .map_err(membership_error)?;
        tracing::info!(
            node_id = self.node_id,
            new_member = node_id,
            "promoting the learner to voter"
        );
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), false)
            .await
            .map_err(membership_error)?;
        let _ = self
            .write(Command::RecordClusterEvent {
                reason: format!("node {node_id} joined at {}", info.address),
            })
            .await;
        Ok(())
    }

    /// Removes a member (voter or learner). Leader only; the last voter cannot go.
    pub async fn remove_member(&self, node_id: NodeId) -> Result<(), NodeError> {
        if !self.is_leader() {
            return Err(self.leader_error());
        }
        let _serialized = self.membership_change.lock().await;
        let voters = self.voters();
        let metrics = self.raft.metrics().borrow().clone();
        let known = metrics.membership_config.nodes().any(|(id, _)| *id == node_id);
        if !known {
            return Err(NodeError::NotFound(format!("node {node_id} is not a member")));
        }
        if voters.contains(&node_id) {
            if voters.len() == 1 {
                return Err(NodeError::Conflict(format!(
                    "node {node_id} is the last voter; a cluster needs at least one"
                )));
            }
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([node_id])), false)
                .await
                .map_err(membership_error)?;
        } else {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node_id])), false)
                .await
                .map_err(membership_error)?;
        }
        let _ = self
            .write(Command::RecordClusterEvent {
                reason: format!("node {node_id} removed"),
            })
            .await;
        Ok(())
    }

    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    fn leader_error(&self) -> NodeError {
        match self.current_leader() {
            Some(leader_id) if leader_id != self.node_id => NodeError::NotLeader {
                leader_id,
                leader: self.member(leader_id),
            },
            _ => NodeError::NoLeader,
        }
    }

    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(node_id = self.node_id, %error, "raft did not shut down cleanly");
        }
    }
}

fn into_result(response: Response) -> Result<Outcome, RegistryError> {
    response
}

fn not_leader(forward: openraft::error::ForwardToLeader<NodeId, NodeInfo>) -> NodeError {
    match forward.leader_id {
        Some(leader_id) => NodeError::NotLeader {
            leader_id,
            leader: forward.leader_node,
        },
        None => NodeError::NoLeader,
    }
}

fn membership_error(error: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> NodeError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => not_leader(forward),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(_))) => {
            NodeError::Unavailable("another membership change is in progress".into())
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(error)) => NodeError::Conflict(error.to_string()),
        RaftError::Fatal(error) => NodeError::Unavailable(error.to_string()),
    }
}

fn unavailable(error: impl std::fmt::Display) -> NodeError {
    NodeError::Unavailable(error.to_string())
}

/// Wall-clock milliseconds, stamped into commands by the proposing node.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}
