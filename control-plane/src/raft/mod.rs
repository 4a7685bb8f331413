//! Raft plumbing around the registry: openraft's type configuration, the durable log
//! store, the state machine with its snapshots, and the authenticated gRPC transport.
//! The registry's rules live in `crate::registry`; this module only replicates them.

pub mod leader_lease;
pub mod log_store;
pub mod mem_network;
pub mod network;
pub mod state_machine;
pub mod transport;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::registry::{Outcome, RegistryError, Request};

/// What a committed command answered, replicated so that any node can tell the client.
pub type Response = Result<Outcome, RegistryError>;

/// A control-plane node as Raft membership records it: where peers reach its Raft
/// transport and where clients reach its management API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub address: String,
    pub api_address: String,
}

impl std::fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (api {})", self.address, self.api_address)
    }
}

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft's types for the control plane: registry requests in, registry answers out.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, NodeInfo>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;

/// Runs blocking file I/O (writes and fsyncs) without stalling other tasks on the same
/// worker when the runtime allows it.
pub(crate) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Writes `bytes` to `path` so that after a crash the file holds either the old or the new
/// content: write a temporary file, fsync it, rename it over, fsync the directory.
pub(crate) fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

pub(crate) fn sync_dir(path: &std::path::Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
