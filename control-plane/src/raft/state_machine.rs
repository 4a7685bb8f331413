//! The Raft state machine: applies committed entries to the in-memory registry and keeps
//! its snapshots on disk. The registry is rebuilt on start from the last snapshot plus the
//! committed log after it, so `apply` itself never writes to disk.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::{
    blocking, write_atomically, Entry, LogId, Response, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::registry::{self, Effect, Outcome, Registry};

const SNAPSHOT_FILE: &str = "snapshot.json";

/// What the registry looks like after the last applied entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub registry: Registry,
}

/// Effects of one applied entry, broadcast to the event stream and route watchers on
/// every node (each node applies the same log, so each can serve them).
#[derive(Debug, Clone)]
pub struct AppliedEffects {
    pub log_id: LogId,
    pub effects: Vec<Effect>,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    /// The serialized [`Applied`] state, exactly as shipped to followers.
    data: String,
}

/// The state machine handed to openraft. Clones share the registry, so the API can read
/// it while Raft applies to it.
#[derive(Clone)]
pub struct StateMachine {
    state: Arc<RwLock<Applied>>,
    snapshot_path: PathBuf,
    effects: broadcast::Sender<AppliedEffects>,
}

impl StateMachine {
    /// Opens the state machine in `dir`, restoring the registry from its last snapshot.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let state = match read_snapshot(&snapshot_path)? {
            Some(stored) => serde_json::from_str(&stored.data)?,
            None => Applied::default(),
        };
        let (effects, _) = broadcast::channel(4096);
        Ok(StateMachine {
            state: Arc::new(RwLock::new(state)),
            snapshot_path,
            effects,
        })
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Applied> {
        self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Effects of entries applied from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AppliedEffects> {
        self.effects.subscribe()
    }

    // The error type is openraft's, fixed by the traits this feeds.
    #[allow(clippy::result_large_err)]
    fn persist_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        let signature = meta.signature();
        let data = String::from_utf8(data.to_vec())
            .map_err(|error| StorageIOError::write_snapshot(Some(signature.clone()), &error))?;
        let bytes = serde_json::to_vec(&StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .map_err(|error| StorageIOError::write_snapshot(Some(signature.clone()), &error))?;
        blocking(|| write_atomically(&self.snapshot_path, &bytes))
            .map_err(|error| StorageIOError::write_snapshot(Some(signature), &error).into())
    }
}

fn read_snapshot(path: &Path) -> std::io::Result<Option<StoredSnapshot>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (data, meta) = {
            let state = self.read();
            let data = serde_json::to_vec(&*state).map_err(|error| StorageIOError::read_state_machine(&error))?;
            let snapshot_id = match state.last_applied {
                Some(id) => format!("{}-{}-{}", id.leader_id, id.index, data.len()),
                None => format!("empty-{}", data.len()),
            };
            let meta = SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.last_membership.clone(),
                snapshot_id,
            };
            (data, meta)
        };
        self.persist_snapshot(&meta, &data)?;
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "built a registry snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.read();
        Ok((state.last_applied, state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        let mut published = Vec::new();
        {
            let mut state = self.write();
            for entry in entries {
                state.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => responses.push(Ok(Outcome::Recorded)),
                    EntryPayload::Normal(request) => {
                        let applied = registry::apply(&mut state.registry, request.command, request.at_ms);
                        if !applied.effects.is_empty() {
                            published.push(AppliedEffects {
                                log_id: entry.log_id,
                                effects: applied.effects,
                            });
                        }
                        responses.push(applied.response);
                    }
                    EntryPayload::Membership(membership) => {
                        state.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                        responses.push(Ok(Outcome::Recorded));
                    }
                }
            }
        }
        for effects in published {
            // Nobody listening is fine: the registry, not the stream, is the truth.
            let _ = self.effects.send(effects);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut installed: Applied = serde_json::from_slice(&data)
            .map_err(|error| StorageIOError::read_snapshot(Some(meta.signature()), &error))?;
        // The meta is authoritative for what the snapshot covers.
        installed.last_applied = meta.last_log_id;
        installed.last_membership = meta.last_membership.clone();
        self.persist_snapshot(meta, &data)?;
        // Watchers learn about a snapshot like about entries: every service may have changed.
        let touched: std::collections::BTreeSet<String> = {
            let mut state = self.write();
            let touched = state
                .registry
                .services
                .keys()
                .chain(installed.registry.services.keys())
                .cloned()
                .collect();
            *state = installed;
            touched
        };
        tracing::info!(last_log_id = ?meta.last_log_id, "installed a registry snapshot from the leader");
        if let Some(log_id) = meta.last_log_id {
            let effects = touched
                .into_iter()
                .map(|service| Effect::RoutesChanged { service })
                .collect();
            let _ = self.effects.send(AppliedEffects { log_id, effects });
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let stored = blocking(|| read_snapshot(&self.snapshot_path))
            .map_err(|error| StorageIOError::read_snapshot(None, &error))?;
        Ok(stored.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data.into_bytes())),
        }))
    }
}
