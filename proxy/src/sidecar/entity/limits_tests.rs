//! The bounds on a sidecar's entities, driven through [`Entities::handle`]: a
//! full mailbox refuses the next command at once instead of leaving its caller
//! blocked.

use std::sync::Arc;

use async_trait::async_trait;
use prost_types::Any;
use strata_store::{EntityKey, JournalEvent, JournalWrite, Recovery, Snapshot, Store, StoreError};

use super::*;
use crate::{
    call::{Call, CallContext},
    fixtures,
    metrics::Metrics,
    model::Catalog,
    sidecar::function::FunctionClient,
};

/// A store that never answers: an entity's activation hangs, so its commands
/// stay queued.
struct StuckStore;

#[async_trait]
impl Store for StuckStore {
    async fn recover(&self, _: &EntityKey) -> Result<Recovery, StoreError> {
        std::future::pending().await
    }
    async fn events(&self, _: &EntityKey, _: i64) -> Result<Vec<JournalEvent>, StoreError> {
        std::future::pending().await
    }
    async fn latest_snapshot(&self, _: &EntityKey) -> Result<Option<Snapshot>, StoreError> {
        std::future::pending().await
    }
    async fn append(&self, _: JournalWrite) -> Result<(), StoreError> {
        std::future::pending().await
    }
    async fn load_value(&self, _: &EntityKey) -> Result<Option<Any>, StoreError> {
        std::future::pending().await
    }
    async fn save_value(&self, _: &EntityKey, _: Option<Any>) -> Result<(), StoreError> {
        std::future::pending().await
    }
}

fn record(shelf: &str) -> Call {
    let (_, method) = fixtures::method("/test.things.Auditor/Record");
    Call::new(method, fixtures::thing_ref(shelf, 1), None, CallContext::default()).unwrap()
}

#[tokio::test]
async fn a_full_mailbox_is_refused_at_once_never_awaited() {
    let entities = Entities::new(SessionContext {
        detached: tokio::sync::mpsc::unbounded_channel().0,
        function: FunctionClient::new("127.0.0.1", 9).unwrap(),
        store: Arc::new(StuckStore),
        metrics: Arc::new(Metrics::new()),
        targets: Arc::new(Catalog::default()),
        command_timeout: DEFAULT_COMMAND_TIMEOUT,
        instance_id: "test".into(),
        timers: Arc::new(crate::sidecar::timer_scope::TimerScope::standalone()),
    });
    // --- the entity is stuck (its actor has not even taken its first command
    // on this one-thread runtime): a mailbox's worth of commands queued
    let mut waiting = Vec::new();
    for _ in 0..EntityLimits::DEFAULT_MAILBOX {
        let mut call = Box::pin(entities.handle(record("busy")));
        assert!(futures::poll!(&mut call).is_pending());
        waiting.push(call);
    }
    // --- one more: RESOURCE_EXHAUSTED / 429 with Retry-After, without waiting
    let refused = tokio::time::timeout(std::time::Duration::from_secs(10), entities.handle(record("busy")))
        .await
        .expect("a full mailbox must answer at once, not block the caller");
    let error = refused.unwrap_err();
    assert!(matches!(error, ProxyError::Overloaded(_)), "{error:?}");
    assert_eq!(error.grpc_code(), tonic::Code::ResourceExhausted);
    let response = crate::ingress::http_json::json_error(&error);
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key(http::header::RETRY_AFTER));
    // --- another entity is not affected
    let mut other = Box::pin(entities.handle(record("quiet")));
    assert!(futures::poll!(&mut other).is_pending());
}
