//! `/cluster`: the Raft view (members, leader, term, log indexes) and membership changes.
//! A new member is added as a learner, caught up, then promoted to voter.

use axum::extract::{Path, State};
use axum::routing::{delete, get};
use axum::{Json, Router};
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::json::ApiJson;
use super::AppState;
use crate::raft::NodeInfo;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/cluster", get(get_cluster))
        .route("/cluster/members", axum::routing::post(add_member))
        .route("/cluster/members/{node_id}", delete(remove_member))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    pub node_id: u64,
    pub address: String,
    pub api_address: String,
    /// `voter` or `learner`.
    pub role: String,
    /// Whether this member is the leader as the answering node knows it.
    pub is_leader: bool,
    /// The last log index the leader knows this member holds; only the leader tracks
    /// it, so it is null when a follower answers.
    pub matched_index: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterView {
    /// The node that answered.
    pub node_id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`. A leader that has not
    /// heard from a quorum within the election timeout reports `follower` (and no leader).
    pub state: String,
    pub leader: Option<u64>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub node_id: u64,
    /// Raft transport address (`--listen`) of the new node.
    pub address: String,
    /// Management API address (`--api-listen`) of the new node.
    pub api_address: String,
}

pub(crate) fn cluster_view(state: &AppState) -> ClusterView {
    let metrics = state.node.raft_metrics();
    let status = state.node.raft_status();
    let membership = metrics.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let leader = state.node.current_leader();
    let replication = metrics.replication.as_ref().filter(|_| state.node.is_leader());
    let members = membership
        .nodes()
        .map(|(node_id, info)| MemberView {
            node_id: *node_id,
            address: info.address.clone(),
            api_address: info.api_address.clone(),
            role: if voters.contains(node_id) { "voter" } else { "learner" }.to_owned(),
            is_leader: leader == Some(*node_id),
            matched_index: replication
                .and_then(|replication| replication.get(node_id).copied().flatten())
                .map(|log_id| log_id.index),
        })
        .collect();
    let server_state = match metrics.state {
        // Cut off from its quorum: it cannot lead, and says so (see `raft::leader_lease`).
        ServerState::Leader if !state.node.is_leader() => "follower",
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    ClusterView {
        node_id: state.node.node_id(),
        state: server_state.to_owned(),
        leader,
        term: status.term,
        last_log_index: status.last_log_index,
        committed_index: status.committed_index,
        applied_index: status.applied_index,
        members,
    }
}

#[utoipa::path(get, path = "/api/v1/cluster", tag = "cluster", responses((status = 200, body = ClusterView)))]
pub(super) async fn get_cluster(State(state): State<AppState>) -> Json<ClusterView> {
    // The node's own view, on purpose not linearizable: it must answer during elections.
    Json(cluster_view(&state))
}

#[utoipa::path(post, path = "/api/v1/cluster/members", tag = "cluster", request_body = AddMember,
    responses((status = 200, body = ClusterView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn add_member(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<AddMember>,
) -> Result<Json<ClusterView>, ApiError> {
    if body.address.trim().is_empty() || body.api_address.trim().is_empty() {
        return Err(ApiError::invalid("address and api_address are required"));
    }
    let info = NodeInfo {
        address: body.address,
        api_address: body.api_address,
    };
    state.node.add_member(body.node_id, info).await?;
    Ok(Json(cluster_view(&state)))
}

#[utoipa::path(delete, path = "/api/v1/cluster/members/{node_id}", tag = "cluster", params(("node_id" = u64, Path)),
    responses((status = 200, body = ClusterView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(super) async fn remove_member(
    State(state): State<AppState>,
    Path(node_id): Path<String>,
) -> Result<Json<ClusterView>, ApiError> {
    let node_id: u64 = node_id
        .parse()
        .map_err(|_| ApiError::invalid_field("node_id", format!("{node_id:?} is not a node id (a whole number)")))?;
    state.node.remove_member(node_id).await?;
    Ok(Json(cluster_view(&state)))
}
