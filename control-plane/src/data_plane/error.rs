//! The one mapping from node and registry errors to gRPC status codes for the
//! data-plane API. Messages say what was wrong; Raft and storage internals stay in logs.

use tonic::Status;

use crate::node::NodeError;
use crate::registry::RegistryError;

pub fn status_of(error: NodeError) -> Status {
    match error {
        NodeError::Registry(error) => {
            let message = error.to_string();
            match error {
                RegistryError::Invalid { .. } => Status::invalid_argument(message),
                RegistryError::AlreadyExists { .. } => Status::already_exists(message),
                RegistryError::NotFound { .. } | RegistryError::Missing { .. } => Status::not_found(message),
                RegistryError::Conflict { .. } => Status::failed_precondition(message),
            }
        }
        NodeError::NotLeader { leader_id, .. } => {
            Status::unavailable(format!("leadership moved to node {leader_id} during the call; retry"))
        }
        NodeError::NoLeader => Status::unavailable(NodeError::NoLeader.to_string()),
        NodeError::Conflict(message) => Status::failed_precondition(message),
        NodeError::Invalid(message) => Status::invalid_argument(message),
        NodeError::NotFound(message) => Status::not_found(message),
        NodeError::Unavailable(message) => {
            tracing::warn!(%message, "control plane unavailable");
            Status::unavailable("the control plane cannot serve this call right now; retry shortly")
        }
    }
}
