//! An in-memory Raft network for in-process cluster tests: RPCs call the target node's
//! `Raft` directly, and any node can be cut off (and healed) to simulate a partition.
//! A test tool only; real clusters use the gRPC transport.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

use super::{NodeId, NodeInfo, Raft, TypeConfig};

#[derive(Clone, Default)]
pub struct MemRouter {
    inner: Arc<Mutex<Routes>>,
}

#[derive(Default)]
struct Routes {
    nodes: BTreeMap<NodeId, Raft>,
    isolated: BTreeSet<NodeId>,
}

impl MemRouter {
    fn lock(&self) -> MutexGuard<'_, Routes> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes `raft` reachable as `node_id` (again, after a restart).
    pub fn register(&self, node_id: NodeId, raft: Raft) {
        self.lock().nodes.insert(node_id, raft);
    }

    /// Cuts `node_id` off: nothing reaches it and nothing it sends arrives.
    pub fn isolate(&self, node_id: NodeId) {
        self.lock().isolated.insert(node_id);
    }

    pub fn heal(&self, node_id: NodeId) {
        self.lock().isolated.remove(&node_id);
    }

    pub fn network(&self, from: NodeId) -> MemNetwork {
        MemNetwork {
            from,
            router: self.clone(),
        }
    }

    fn route(&self, from: NodeId, to: NodeId) -> Result<Raft, Unreachable> {
        let routes = self.lock();
        if routes.isolated.contains(&from) || routes.isolated.contains(&to) {
            return Err(Unreachable::new(&std::io::Error::other(format!(
                "{from} and {to} are partitioned"
            ))));
        }
        routes
            .nodes
            .get(&to)
            .cloned()
            .ok_or_else(|| Unreachable::new(&std::io::Error::other(format!("node {to} is down"))))
    }
}

pub struct MemNetwork {
    from: NodeId,
    router: MemRouter,
}

pub struct MemConnection {
    from: NodeId,
    to: NodeId,
    router: MemRouter,
}

impl RaftNetworkFactory<TypeConfig> for MemNetwork {
    type Network = MemConnection;

    async fn new_client(&mut self, target: NodeId, _node: &NodeInfo) -> MemConnection {
        MemConnection {
            from: self.from,
            to: target,
            router: self.router.clone(),
        }
    }
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>;

impl MemConnection {
    fn target(&self) -> Result<Raft, Unreachable> {
        self.router.route(self.from, self.to)
    }

    /// A reply is lost too if the partition began while the request was in flight.
    // The error type is openraft's, fixed by the traits this feeds.
    #[allow(clippy::result_large_err)]
    fn deliver<T, E: std::error::Error>(&self, result: Result<T, RaftError<NodeId, E>>) -> RpcResult<T, E> {
        self.target()?;
        result.map_err(|error| RPCError::RemoteError(RemoteError::new(self.to, error)))
    }
}

impl RaftNetwork<TypeConfig> for MemConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let result = self.target()?.append_entries(rpc).await;
        self.deliver(result)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let result = self.target()?.install_snapshot(rpc).await;
        self.deliver(result)
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, _option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        let result = self.target()?.vote(rpc).await;
        self.deliver(result)
    }
}
