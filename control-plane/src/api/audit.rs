//! The audit log: every management write (who, what, the outcome, when) recorded in the
//! replicated registry by the node that serves it, and `GET /api/v1/audit` to page
//! through it. A write that reaches the registry carries its record in the same Raft
//! entry ([`write`]), so an acknowledged write has its record whatever crashes after;
//! a write answered without reaching it (refused before, a membership change) is
//! recorded on its own once answered. Which principal may write is `crate::auth`'s
//! decision; this module only records and reads.

use std::cell::RefCell;
use std::future::Future;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::{linearizable, AppState};
use crate::auth::Principal;
use crate::node::NodeError;
use crate::registry::{AuditRecord, Command, Outcome};

tokio::task_local! {
    /// The record of the write the current request makes, until a registry write
    /// takes it into its entry.
    static PENDING: RefCell<Option<AuditRecord>>;
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/audit", get(list_audit))
}

/// One management write.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditRecordView {
    /// Increases by one per record; pass the last one seen as `after`.
    pub id: u64,
    /// When the write was answered (milliseconds since the Unix epoch, the leader's clock).
    pub at_ms: u64,
    /// Who wrote: `admin token`, `read-only token`, ... (never the token itself).
    pub principal: String,
    pub method: String,
    pub path: String,
    /// The service or cluster member the write names, when the path or body says.
    pub target: Option<String>,
    /// The HTTP status the write was answered with (403 for a refused one).
    pub status: u16,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// Oldest first.
    pub records: Vec<AuditRecordView>,
    /// Pass as `after` for the next page; null when there is no more yet.
    pub next_after: Option<u64>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    /// Only records with a larger id (the previous page's `next_after`); from the oldest kept if absent.
    pub after: Option<u64>,
    /// Records per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn list_audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = match query.limit {
        None => DEFAULT_PAGE,
        Some(limit @ 1..) if limit as usize <= MAX_PAGE => limit as usize,
        Some(_) => return Err(ApiError::invalid_field("limit", "limit must be between 1 and 1000")),
    };
    linearizable(&state, &headers).await?;
    let after = query.after.unwrap_or(0);
    let (records, more) = state.node.read(|registry| {
        let mut matching = registry.audit.iter().filter(|record| record.id > after);
        let records: Vec<AuditRecordView> = matching.by_ref().take(limit).map(view).collect();
        (records, matching.next().is_some())
    });
    let next_after = if more {
        records.last().map(|record| record.id)
    } else {
        None
    };
    Ok(Json(AuditPage { records, next_after }))
}

fn view(record: &AuditRecord) -> AuditRecordView {
    AuditRecordView {
        id: record.id,
        at_ms: record.at_ms,
        principal: record.principal.clone(),
        method: record.method.clone(),
        path: record.path.clone(),
        target: record.target.clone(),
        status: record.status,
    }
}

/// The record of a write not yet answered (its status comes later).
pub(super) fn pending(principal: &Principal, method: &Method, path: &str, target: Option<String>) -> AuditRecord {
    AuditRecord {
        principal: principal.name(),
        method: method.to_string(),
        path: path.to_owned(),
        target,
        ..AuditRecord::default()
    }
}

/// Runs a request's handler with `record` pending; returns its answer and the
/// record if no registry write took it.
pub(super) async fn with_pending<T>(record: AuditRecord, handler: impl Future<Output = T>) -> (T, Option<AuditRecord>) {
    PENDING
        .scope(RefCell::new(Some(record)), async {
            let answer = handler.await;
            (answer, PENDING.with(|pending| pending.borrow_mut().take()))
        })
        .await
}

/// Writes `command` through Raft with the request's pending record in the same
/// entry, answered `success` if the registry applies it (a refusal records its
/// own status). A write that did not reach the registry leaves the record
/// pending, for the answer to be recorded on its own.
pub(super) async fn write(state: &AppState, command: Command, success: StatusCode) -> Result<Outcome, NodeError> {
    let Some(record) = PENDING.try_with(|pending| pending.borrow_mut().take()).ok().flatten() else {
        return state.node.write(command).await;
    };
    let audited = Command::Audited {
        command: Box::new(command),
        record: AuditRecord {
            status: success.as_u16(),
            ..record.clone()
        },
    };
    let written = state.node.write(audited).await;
    if !matches!(written, Ok(_) | Err(NodeError::Registry(_))) {
        let _ = PENDING.try_with(|pending| *pending.borrow_mut() = Some(record));
    }
    written
}

/// Writes the record of a write that did not reach the registry through Raft. A
/// record that cannot be written is logged: the write it describes has already
/// been answered, so failing it now would mislead.
pub(super) async fn record(state: &AppState, record: AuditRecord, status: u16) {
    let (method, path) = (record.method.clone(), record.path.clone());
    if let Err(error) = state
        .node
        .write(Command::RecordAudit(AuditRecord { status, ..record }))
        .await
    {
        tracing::warn!(node_id = state.node.node_id(), %method, path, status, %error, "could not record a write in the audit log");
    }
}

/// What a write names: the segment after `/services/` or `/members/` in its path, or
/// else the body's `name` (a new service) or `node_id` (a new member).
pub(super) fn target(path: &str, body: &[u8]) -> Option<String> {
    let mut segments = path.split('/').filter(|segment| !segment.is_empty());
    while let Some(segment) = segments.next() {
        if matches!(segment, "services" | "members") {
            if let Some(name) = segments.next() {
                return Some(name.to_owned());
            }
        }
    }
    let body: serde_json::Value = serde_json::from_slice(body).ok()?;
    match (body.get("name"), body.get("node_id")) {
        (Some(serde_json::Value::String(name)), _) => Some(name.clone()),
        (_, Some(serde_json::Value::Number(id))) => Some(id.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_comes_from_the_path_or_else_the_body() {
        assert_eq!(target("/api/v1/services/cart", b""), Some("cart".into()));
        assert_eq!(target("/api/v1/services/cart/scale", b""), Some("cart".into()));
        assert_eq!(target("/api/v1/cluster/members/3", b""), Some("3".into()));
        assert_eq!(
            target("/api/v1/services", br#"{"name": "cart", "command": "./cart"}"#),
            Some("cart".into())
        );
        assert_eq!(
            target("/api/v1/cluster/members", br#"{"node_id": 2, "address": "x"}"#),
            Some("2".into())
        );
        assert_eq!(target("/api/v1/services", b"not json"), None);
        assert_eq!(target("/api/v1/services", br#"{"name": 7}"#), None);
    }
}
