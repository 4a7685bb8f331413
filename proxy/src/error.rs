//! The one error type of the data path, and its single mapping to gRPC codes and
//! HTTP statuses. Every answer a client gets for a failed request comes from here.

use http::StatusCode;
use tonic::Code;

/// Why a request failed. The message is for the client: it says what was wrong and,
/// where it helps, what to do; it never carries internals of the proxy.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    /// The request itself is wrong: malformed body, wrong field types, missing key.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such service, method or route.
    #[error("{0}")]
    Unimplemented(String),
    /// No route for an HTTP path at all.
    #[error("{0}")]
    NotFound(String),
    /// A body over the configured limit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Too much waiting already (a full entity mailbox): retry later.
    #[error("{0}")]
    Overloaded(String),
    /// The user function (or the store) cannot be reached; retrying may work.
    #[error("{0}")]
    Unavailable(String),
    /// The command raced another writer of the same entity; retrying may work.
    #[error("{0}")]
    Aborted(String),
    /// The user function failed the command (a CloudState `Failure`).
    #[error("{0}")]
    Failure(String),
    /// The user function broke the protocol; the entity was stopped.
    #[error("{0}")]
    Internal(String),
    /// This sidecar does not own the entity's shard (it moved, or has not arrived
    /// yet): the gateway re-reads its routes and retries on the owner.
    #[error("{0}")]
    NotOwner(String),
    /// The function did not answer within the command's deadline (the client's,
    /// or the proxy's per-command limit).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The client went away before the answer.
    #[error("{0}")]
    Cancelled(String),
    /// The entity was deleted for good (a CRDT entity cannot change again).
    #[error("{0}")]
    Gone(String),
}

impl ProxyError {
    pub fn grpc_code(&self) -> Code {
        match self {
            ProxyError::InvalidArgument(_) => Code::InvalidArgument,
            ProxyError::Unimplemented(_) | ProxyError::NotFound(_) => Code::Unimplemented,
            ProxyError::ResourceExhausted(_) | ProxyError::Overloaded(_) => Code::ResourceExhausted,
            ProxyError::Unavailable(_) => Code::Unavailable,
            ProxyError::Aborted(_) => Code::Aborted,
            ProxyError::Failure(_) => Code::Unknown,
            ProxyError::Internal(_) => Code::Internal,
            ProxyError::NotOwner(_) => Code::FailedPrecondition,
            ProxyError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ProxyError::Cancelled(_) => Code::Cancelled,
            ProxyError::Gone(_) => Code::NotFound,
        }
    }

    pub fn http_status(&self) -> StatusCode {
        match self {
            ProxyError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            ProxyError::Unimplemented(_) | ProxyError::NotFound(_) => StatusCode::NOT_FOUND,
            ProxyError::ResourceExhausted(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Aborted(_) => StatusCode::CONFLICT,
            ProxyError::Failure(_) | ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::NotOwner(_) => StatusCode::CONFLICT,
            ProxyError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            // nginx's "client closed request": nobody is left to read it.
            ProxyError::Cancelled(_) => StatusCode::from_u16(499).expect("valid status"),
            ProxyError::Gone(_) => StatusCode::GONE,
        }
    }

    /// The same error with `prefix` before its message (e.g. which side effect
    /// it came from); the code stays.
    pub fn prefixed(self, prefix: &str) -> Self {
        let wrap = |message: String| format!("{prefix}{message}");
        match self {
            ProxyError::InvalidArgument(m) => ProxyError::InvalidArgument(wrap(m)),
            ProxyError::Unimplemented(m) => ProxyError::Unimplemented(wrap(m)),
            ProxyError::NotFound(m) => ProxyError::NotFound(wrap(m)),
            ProxyError::ResourceExhausted(m) => ProxyError::ResourceExhausted(wrap(m)),
            ProxyError::Overloaded(m) => ProxyError::Overloaded(wrap(m)),
            ProxyError::Unavailable(m) => ProxyError::Unavailable(wrap(m)),
            ProxyError::Aborted(m) => ProxyError::Aborted(wrap(m)),
            ProxyError::Failure(m) => ProxyError::Failure(wrap(m)),
            ProxyError::Internal(m) => ProxyError::Internal(wrap(m)),
            ProxyError::NotOwner(m) => ProxyError::NotOwner(wrap(m)),
            ProxyError::DeadlineExceeded(m) => ProxyError::DeadlineExceeded(wrap(m)),
            ProxyError::Cancelled(m) => ProxyError::Cancelled(wrap(m)),
            ProxyError::Gone(m) => ProxyError::Gone(wrap(m)),
        }
    }

    /// The error a gateway reports for a sidecar's gRPC answer.
    pub fn from_status(status: &tonic::Status) -> Self {
        let message = status.message().to_string();
        match status.code() {
            Code::InvalidArgument => ProxyError::InvalidArgument(message),
            Code::Unimplemented => ProxyError::Unimplemented(message),
            // The gateway checked the body's size itself: a sidecar's
            // RESOURCE_EXHAUSTED is a full queue there.
            Code::ResourceExhausted => ProxyError::Overloaded(message),
            Code::Aborted => ProxyError::Aborted(message),
            Code::Unknown => ProxyError::Failure(message),
            Code::FailedPrecondition => ProxyError::NotOwner(message),
            Code::DeadlineExceeded => ProxyError::DeadlineExceeded(message),
            Code::Unavailable | Code::Cancelled => ProxyError::Unavailable(message),
            Code::NotFound => ProxyError::Gone(message),
            _ => ProxyError::Internal(message),
        }
    }

    /// Whether a client should come back shortly (the answer carries
    /// `Retry-After`): an outage or a full queue.
    pub fn retry_later(&self) -> bool {
        matches!(self, ProxyError::Unavailable(_) | ProxyError::Overloaded(_))
    }

    /// The JSON error body of HTTP answers: `{"error": {"code", "status", "message"}}`.
    pub fn json_body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "code": code_name(self.grpc_code()),
                "status": self.http_status().as_u16(),
                "message": self.to_string(),
            }
        })
    }
}

impl PartialEq for ProxyError {
    fn eq(&self, other: &Self) -> bool {
        self.grpc_code() == other.grpc_code() && self.to_string() == other.to_string()
    }
}

/// Whether `status` was made on this side for a transport that broke (it
/// carries its cause: a refused or reset connection, a timeout), rather than
/// sent by the peer in its trailers. Only a peer's own status may become
/// `UNKNOWN`/`INTERNAL`; a broken transport is an outage, retryable.
pub fn transport_failed(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// The canonical upper-case name of a gRPC code, as in the gRPC spec.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
