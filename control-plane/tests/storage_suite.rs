//! Runs openraft's storage conformance suite against the durable log store and the
//! registry state machine, each test on a fresh data directory.

use openraft::testing::{StoreBuilder, Suite};
use strata_control_plane::raft::log_store::LogStore;
use strata_control_plane::raft::state_machine::StateMachine;
use strata_control_plane::raft::{StorageError, TypeConfig};
use tempfile::TempDir;

struct OnDisk;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for OnDisk {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(&dir.path().join("raft")).expect("open log");
        let state_machine = StateMachine::open(&dir.path().join("raft")).expect("open state machine");
        Ok((dir, log, state_machine))
    }
}

#[test]
fn log_store_and_state_machine_pass_openraft_suite() {
    if let Err(error) = Suite::test_all(OnDisk) {
        panic!("openraft storage suite failed: {error}");
    }
}
