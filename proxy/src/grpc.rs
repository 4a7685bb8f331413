//! gRPC and gRPC-web on the wire: length-prefixed message frames, status in
//! trailers (gRPC) or in a trailer frame inside the body (gRPC-web, binary or
//! base64 text). Owns framing only; what a message means is decided elsewhere.

use axum::body::Body;
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body::Frame;
use tonic::Code;

use crate::error::ProxyError;

/// Which flavour of gRPC a request speaks, from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Grpc,
    GrpcWeb,
    GrpcWebText,
}

impl Flavor {
    pub fn of(headers: &HeaderMap) -> Option<Self> {
        let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        if content_type.starts_with("application/grpc-web-text") {
            Some(Flavor::GrpcWebText)
        } else if content_type.starts_with("application/grpc-web") {
            Some(Flavor::GrpcWeb)
        } else if content_type.starts_with("application/grpc") {
            Some(Flavor::Grpc)
        } else {
            None
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Flavor::Grpc => "application/grpc",
            Flavor::GrpcWeb => "application/grpc-web+proto",
            Flavor::GrpcWebText => "application/grpc-web-text+proto",
        }
    }
}

/// The single message of a unary request body (already base64-decoded for
/// gRPC-web text).
pub fn unary_message(flavor: Flavor, body: Bytes) -> Result<Bytes, ProxyError> {
    let body = if flavor == Flavor::GrpcWebText {
        let text: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
        Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| ProxyError::InvalidArgument("the gRPC-web text body is not valid base64".into()))?,
        )
    } else {
        body
    };
    if body.len() < 5 {
        return Err(ProxyError::InvalidArgument(
            "the request has no gRPC message frame (expected 5-byte prefix)".into(),
        ));
    }
    if body[0] & 1 == 1 {
        return Err(ProxyError::Unimplemented(
            "compressed gRPC messages are not supported; send them uncompressed".into(),
        ));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() != 5 + len {
        return Err(ProxyError::InvalidArgument(format!(
            "the gRPC frame says {len} bytes but the body holds {}; unary methods take exactly one message",
            body.len() - 5
        )));
    }
    Ok(body.slice(5..))
}

fn frame(flag: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(flag);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.freeze()
}

/// A successful unary answer carrying one encoded message.
pub fn ok_response(flavor: Flavor, message: &[u8]) -> Response<Body> {
    respond(flavor, Some(frame(0, message)), Code::Ok, "")
}

/// A failed call: a trailers-only response (gRPC) or a trailer frame (gRPC-web).
pub fn error_response(flavor: Flavor, error: &ProxyError) -> Response<Body> {
    respond(flavor, None, error.grpc_code(), &error.to_string())
}

fn respond(flavor: Flavor, message: Option<Bytes>, code: Code, text: &str) -> Response<Body> {
    let mut status = HeaderMap::new();
    status.insert("grpc-status", HeaderValue::from(code as i32));
    if !text.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&percent_encode(text)) {
            status.insert("grpc-message", value);
        }
    }
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, flavor.content_type());
    let response = match flavor {
        Flavor::Grpc => match message {
            // Trailers-only: the status goes in the headers and the body is empty.
            None => {
                let mut response = builder.body(Body::empty()).expect("valid response");
                response.headers_mut().extend(status);
                return response;
            }
            Some(message) => {
                let frames = futures::stream::iter([
                    Ok::<_, std::convert::Infallible>(Frame::data(message)),
                    Ok(Frame::trailers(status)),
                ]);
                builder.body(Body::new(http_body_util::StreamBody::new(frames)))
            }
        },
        Flavor::GrpcWeb | Flavor::GrpcWebText => {
            let mut trailer_text = String::new();
            for (name, value) in &status {
                trailer_text.push_str(&format!("{}:{}\r\n", name, value.to_str().unwrap_or_default()));
            }
            let mut body = BytesMut::new();
            if let Some(message) = message {
                body.put_slice(&message);
            }
            body.put_slice(&frame(0x80, trailer_text.as_bytes()));
            let body = if flavor == Flavor::GrpcWebText {
                Bytes::from(base64::engine::general_purpose::STANDARD.encode(&body))
            } else {
                body.freeze()
            };
            builder
                .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
                .header(header::ACCESS_CONTROL_EXPOSE_HEADERS, "grpc-status,grpc-message")
                .body(Body::from(body))
        }
    };
    response.expect("valid response")
}

/// Percent-encodes a grpc-message as the gRPC spec asks (everything outside
/// printable ASCII, and '%').
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unary_frames() {
        let body = frame(0, b"abc");
        assert_eq!(unary_message(Flavor::Grpc, body).unwrap(), Bytes::from_static(b"abc"));
        assert!(matches!(
            unary_message(Flavor::Grpc, Bytes::from_static(b"\0\0")),
            Err(ProxyError::InvalidArgument(_))
        ));
        assert!(matches!(
            unary_message(Flavor::Grpc, frame(1, b"x")),
            Err(ProxyError::Unimplemented(_))
        ));
        let mut two = BytesMut::from(&frame(0, b"a")[..]);
        two.put_slice(&frame(0, b"b"));
        assert!(unary_message(Flavor::Grpc, two.freeze()).is_err());
        let text = base64::engine::general_purpose::STANDARD.encode(frame(0, b"hi"));
        assert_eq!(
            unary_message(Flavor::GrpcWebText, Bytes::from(text)).unwrap(),
            Bytes::from_static(b"hi")
        );
    }

    #[test]
    fn grpc_message_encoding() {
        assert_eq!(percent_encode("ok 100%"), "ok 100%25");
        assert_eq!(percent_encode("é\n"), "%C3%A9%0A");
    }

    #[test]
    fn flavors() {
        let mut headers = HeaderMap::new();
        for (ct, flavor) in [
            ("application/grpc", Some(Flavor::Grpc)),
            ("application/grpc+proto", Some(Flavor::Grpc)),
            ("application/grpc-web+proto", Some(Flavor::GrpcWeb)),
            ("application/grpc-web-text", Some(Flavor::GrpcWebText)),
            ("application/json", None),
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(Flavor::of(&headers), flavor, "{ct}");
        }
    }
}
