//! One unary gRPC-web call (`application/grpc-web+proto` over HTTP/1.1) to a
//! gateway: how the leader makes a schedule's call. gRPC-web carries the status in
//! the body's trailer frame (or, with no reply, in the headers), which a plain HTTP
//! client can read; the gateway serves it beside gRPC. Owns the framing and the
//! reading of the status; retrying is the caller's.

use std::time::Duration;

use bytes::{Buf, Bytes};
use thiserror::Error;

const CONTENT_TYPE: &str = "application/grpc-web+proto";
/// The flag of a frame that carries trailers rather than a message.
const TRAILER_FLAG: u8 = 0x80;

/// How a call failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallError {
    /// The gateway could not be reached or answered something that is not gRPC-web.
    #[error("the gateway: {0}")]
    Transport(String),
    /// The service answered with a gRPC status other than OK.
    #[error("{code_name} ({code}): {message}")]
    Status {
        code: u32,
        code_name: &'static str,
        message: String,
    },
}

impl CallError {
    /// Whether a later attempt may succeed: the gateway or the service was not
    /// there (yet), not that the request was wrong.
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::Transport(_) => true,
            // UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNAVAILABLE
            CallError::Status { code, .. } => matches!(code, 2 | 4 | 8 | 10 | 13 | 14),
        }
    }
}

/// Calls `method` (`package.Service/Method`) at `gateway` (e.g.
/// `http://127.0.0.1:9000`) with the encoded `request` and `metadata` headers;
/// `Ok` with the encoded reply.
pub async fn call(
    http: &reqwest::Client,
    gateway: &str,
    method: &str,
    request: &[u8],
    metadata: &[(&str, String)],
    timeout: Duration,
) -> Result<Bytes, CallError> {
    let url = format!("{}/{method}", gateway.trim_end_matches('/'));
    let mut builder = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
        .header("x-grpc-web", "1")
        .timeout(timeout)
        .body(frame(request));
    for (name, value) in metadata {
        builder = builder.header(*name, value);
    }
    let response = builder
        .send()
        .await
        .map_err(|error| CallError::Transport(error.to_string()))?;
    let http_status = response.status();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|error| CallError::Transport(error.to_string()))?;
    let (reply, trailers) = read_frames(body).map_err(CallError::Transport)?;
    let status = trailers
        .as_deref()
        .and_then(|trailers| trailer(trailers, "grpc-status"))
        .or_else(|| {
            headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
    let Some(status) = status else {
        return Err(CallError::Transport(format!(
            "answered HTTP {http_status} without a gRPC status"
        )));
    };
    let code: u32 = status
        .trim()
        .parse()
        .map_err(|_| CallError::Transport(format!("grpc-status {status:?} is not a number")))?;
    if code == 0 {
        return Ok(reply.unwrap_or_default());
    }
    let message = trailers
        .as_deref()
        .and_then(|trailers| trailer(trailers, "grpc-message"))
        .or_else(|| {
            headers
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .map(|message: String| percent_decode(&message))
        .unwrap_or_default();
    Err(CallError::Status {
        code,
        code_name: code_name(code),
        message,
    })
}

/// One length-prefixed message frame.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let length = u32::try_from(message.len()).unwrap_or(u32::MAX);
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// The reply message (the first message frame) and the trailer block of a body.
pub fn read_frames(mut body: Bytes) -> Result<(Option<Bytes>, Option<String>), String> {
    let (mut reply, mut trailers) = (None, None);
    while body.has_remaining() {
        if body.remaining() < 5 {
            return Err("a gRPC-web frame was cut short".into());
        }
        let flags = body.get_u8();
        let length = body.get_u32() as usize;
        if body.remaining() < length {
            return Err("a gRPC-web frame was cut short".into());
        }
        let payload = body.split_to(length);
        if flags & TRAILER_FLAG != 0 {
            trailers = Some(String::from_utf8_lossy(&payload).into_owned());
        } else if reply.is_none() {
            reply = Some(payload);
        }
    }
    Ok((reply, trailers))
}

/// The value of trailer `name` in a `name: value\r\n` block.
fn trailer(block: &str, name: &str) -> Option<String> {
    block.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
    })
}

/// `grpc-message` is percent-encoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = bytes
            .get(at + 1..at + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok());
        match (bytes[at], hex.and_then(|hex| u8::from_str_radix(hex, 16).ok())) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                at += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn code_name(code: u32) -> &'static str {
    match code {
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_reads_as_its_reply_and_its_trailers() {
        let mut body = frame(b"reply");
        let trailers = b"grpc-status: 0\r\ngrpc-message: \r\n";
        body.push(TRAILER_FLAG);
        body.extend_from_slice(&(trailers.len() as u32).to_be_bytes());
        body.extend_from_slice(trailers);
        let (reply, block) = read_frames(Bytes::from(body)).unwrap();
        assert_eq!(reply.as_deref(), Some(&b"reply"[..]));
        assert_eq!(trailer(&block.unwrap(), "GRPC-STATUS").as_deref(), Some("0"));
    }

    #[test]
    fn a_cut_frame_is_an_error_and_messages_are_percent_decoded() {
        assert!(read_frames(Bytes::from_static(&[0, 0, 0, 0, 9, 1])).is_err());
        assert_eq!(percent_decode("no%20such%2Fmethod %"), "no such/method %");
    }

    #[test]
    fn only_errors_of_availability_are_retried() {
        let status = |code| CallError::Status {
            code,
            code_name: code_name(code),
            message: String::new(),
        };
        assert!(status(14).is_retryable());
        assert!(!status(3).is_retryable());
        assert!(CallError::Transport("refused".into()).is_retryable());
    }
}
