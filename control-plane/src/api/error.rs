//! The API's one error type: every failure becomes `{"error": {"code", "message"}}` with
//! its HTTP status here, and nothing internal (paths, Raft internals) reaches the message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::logs::LogError;
use crate::node::NodeError;
use crate::registry::{Registry, RegistryError, Service};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The request field that was wrong, so a form can show the error beside it.
    pub field: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_argument`.
    pub code: String,
    pub message: String,
    /// The request field that was wrong, when one was (e.g. `max_scale`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }
    /// A 400 about one field of the request.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            field: Some(field.to_owned()),
            ..ApiError::invalid(message)
        }
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "permission_denied", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn too_large() -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the request body is over the API's limit of {} bytes",
                super::MAX_BODY_BYTES
            ),
        )
    }
    /// 503 for requests that were certainly not proposed to Raft.
    pub fn leader_unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "leader_unavailable", message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        let message = error.to_string();
        match error {
            RegistryError::Invalid { field, .. } => ApiError::invalid_field(&field, message),
            RegistryError::AlreadyExists { .. } => ApiError::new(StatusCode::CONFLICT, "already_exists", message),
            RegistryError::NotFound { .. } | RegistryError::Missing { .. } => ApiError::not_found(message),
            RegistryError::Conflict { .. } => ApiError::new(StatusCode::CONFLICT, "conflict", message),
        }
    }
}

/// The service `name`, or the 404 of [`unknown_service`].
pub fn known_service<'a>(registry: &'a Registry, name: &str) -> Result<&'a Service, ApiError> {
    registry
        .services
        .get(name)
        .ok_or_else(|| unknown_service(registry, name))
}

/// 404 for a service that does not exist, naming those that do.
pub fn unknown_service(registry: &Registry, name: &str) -> ApiError {
    let known: Vec<&str> = registry.services.keys().map(String::as_str).collect();
    let known = if known.is_empty() {
        "there are none".to_owned()
    } else {
        format!("services: {}", known.join(", "))
    };
    ApiError::not_found(format!("no service named {name}; {known}"))
}

impl From<LogError> for ApiError {
    fn from(error: LogError) -> Self {
        match error {
            LogError::UnknownInstance { .. } => ApiError::not_found(error.to_string()),
            LogError::Unavailable(message) => {
                tracing::warn!(%message, "instance logs unavailable");
                ApiError::unavailable("the instances' logs cannot be read right now; retry shortly")
            }
        }
    }
}

impl From<NodeError> for ApiError {
    fn from(error: NodeError) -> Self {
        match error {
            NodeError::Registry(error) => error.into(),
            // `leader_unavailable` promises that nothing was proposed: a client may retry a
            // write without wondering whether the first attempt happened.
            NodeError::NotLeader { leader_id, .. } => ApiError::leader_unavailable(format!(
                "leadership moved to node {leader_id} during the request; retry"
            )),
            NodeError::NoLeader => ApiError::leader_unavailable(NodeError::NoLeader.to_string()),
            NodeError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            NodeError::Invalid(message) => ApiError::invalid(message),
            NodeError::NotFound(message) => ApiError::not_found(message),
            NodeError::Unavailable(message) => {
                tracing::warn!(%message, "control plane unavailable");
                ApiError::unavailable("the control plane cannot serve this request right now; retry shortly")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The audit log records a refusal applied in the registry with the status the
    /// API answers it with: the two mappings must agree.
    #[test]
    fn registry_refusals_are_audited_with_the_status_they_are_answered_with() {
        for error in [
            RegistryError::invalid("min_scale", "too big"),
            RegistryError::not_found("service", "cart"),
            RegistryError::AlreadyExists {
                what: "service".into(),
                name: "cart".into(),
            },
            RegistryError::Conflict { message: "busy".into() },
        ] {
            let status = error.http_status();
            assert_eq!(ApiError::from(error).status.as_u16(), status);
        }
    }
}
