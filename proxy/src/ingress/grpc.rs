//! gRPC and gRPC-web on the wire: length-prefixed message frames read as they
//! arrive and written as they are produced, status (and reply metadata) in
//! trailers (gRPC) or in a trailer frame inside the body (gRPC-web, binary or
//! base64 text). Owns framing only; what a message means is decided elsewhere.

use std::convert::Infallible;

use axum::body::Body;
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use futures::{stream::BoxStream, Stream, StreamExt};
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

/// The request messages of a streamed call, read frame by frame as they arrive.
/// A message over `limit` bytes, a compressed one or a truncated frame ends the
/// stream with an error.
pub fn request_messages(flavor: Flavor, body: Body, limit: usize) -> BoxStream<'static, Result<Bytes, ProxyError>> {
    struct Reader {
        body: axum::body::BodyDataStream,
        buffer: BytesMut,
        /// gRPC-web text: base64 characters not yet decoded (fewer than 4).
        text: Vec<u8>,
        flavor: Flavor,
        limit: usize,
        failed: bool,
    }
    let reader = Reader {
        body: body.into_data_stream(),
        buffer: BytesMut::new(),
        text: Vec::new(),
        flavor,
        limit,
        failed: false,
    };
    futures::stream::unfold(reader, |mut reader| async move {
        if reader.failed {
            return None;
        }
        loop {
            match next_frame(&mut reader.buffer, reader.limit) {
                Ok(Some(message)) => return Some((Ok(message), reader)),
                Ok(None) => {}
                Err(error) => {
                    reader.failed = true;
                    return Some((Err(error), reader));
                }
            }
            let chunk = match reader.body.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(_)) => {
                    reader.failed = true;
                    return Some((
                        Err(ProxyError::Cancelled("the client stopped sending mid-stream".into())),
                        reader,
                    ));
                }
                None if reader.buffer.is_empty() && reader.text.is_empty() => return None,
                None => {
                    reader.failed = true;
                    return Some((
                        Err(ProxyError::InvalidArgument(
                            "the request stream ended inside a gRPC message frame".into(),
                        )),
                        reader,
                    ));
                }
            };
            if reader.flavor == Flavor::GrpcWebText {
                reader
                    .text
                    .extend(chunk.iter().copied().filter(|b| !b.is_ascii_whitespace()));
                if decode_text(&mut reader.text, &mut reader.buffer).is_err() {
                    reader.failed = true;
                    return Some((
                        Err(ProxyError::InvalidArgument(
                            "the gRPC-web text body is not valid base64".into(),
                        )),
                        reader,
                    ));
                }
            } else {
                reader.buffer.extend_from_slice(&chunk);
            }
        }
    })
    .boxed()
}

/// Decodes the whole base64 groups of `text` into `buffer`, leaving the rest.
/// Clients may encode each message on its own, so a padded group can end a piece
/// in the middle of the body.
fn decode_text(text: &mut Vec<u8>, buffer: &mut BytesMut) -> Result<(), base64::DecodeError> {
    loop {
        let whole = text.len() / 4 * 4;
        let end = match text[..whole].iter().position(|b| *b == b'=') {
            Some(padding) => (padding / 4 + 1) * 4,
            None => whole,
        };
        if end == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&base64::engine::general_purpose::STANDARD.decode(&text[..end])?);
        text.drain(..end);
    }
}

/// The next whole message frame at the start of `buffer`, if it is all there.
fn next_frame(buffer: &mut BytesMut, limit: usize) -> Result<Option<Bytes>, ProxyError> {
    if buffer.len() < 5 {
        return Ok(None);
    }
    if buffer[0] & 1 == 1 {
        return Err(ProxyError::Unimplemented(
            "compressed gRPC messages are not supported; send them uncompressed".into(),
        ));
    }
    let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
    if len > limit {
        return Err(ProxyError::ResourceExhausted(format!(
            "a request message of {len} bytes is larger than the limit of {limit} bytes"
        )));
    }
    if buffer.len() < 5 + len {
        return Ok(None);
    }
    let mut message = buffer.split_to(5 + len);
    Ok(Some(message.split_off(5).freeze()))
}

/// A successful unary answer carrying one encoded message; `metadata` (the
/// reply's) goes into the trailers.
pub fn ok_response(flavor: Flavor, message: &[u8], metadata: HeaderMap) -> Response<Body> {
    let answer = futures::stream::iter([Ok((Bytes::copy_from_slice(message), metadata))]);
    stream_response(flavor, answer)
}

/// A failed call: a trailers-only response (gRPC) or a trailer frame (gRPC-web).
pub fn error_response(flavor: Flavor, error: &ProxyError) -> Response<Body> {
    let status = trailers(error.grpc_code(), &error.to_string(), HeaderMap::new());
    match flavor {
        Flavor::Grpc => {
            let mut response = builder(flavor).body(Body::empty()).expect("valid response");
            response.headers_mut().extend(status);
            response
        }
        Flavor::GrpcWeb | Flavor::GrpcWebText => builder(flavor)
            .body(Body::from(web_chunk(flavor, &web_trailers(&status))))
            .expect("valid response"),
    }
}

/// An answer of any number of messages, sent as they come, then the status: OK
/// after the last message, or the first error's. The metadata of every message
/// goes into the trailers.
pub fn stream_response(
    flavor: Flavor,
    messages: impl Stream<Item = Result<(Bytes, HeaderMap), ProxyError>> + Send + 'static,
) -> Response<Body> {
    struct Sending<S> {
        messages: S,
        metadata: HeaderMap,
        done: bool,
    }
    let sending = Sending {
        messages: Box::pin(messages),
        metadata: HeaderMap::new(),
        done: false,
    };
    let frames = futures::stream::unfold(sending, move |mut sending| async move {
        if sending.done {
            return None;
        }
        let status = match sending.messages.next().await {
            Some(Ok((message, metadata))) => {
                sending.metadata.extend(metadata);
                let data = match flavor {
                    Flavor::Grpc => frame(0, &message),
                    Flavor::GrpcWeb | Flavor::GrpcWebText => web_chunk(flavor, &frame(0, &message)),
                };
                return Some((Ok::<_, Infallible>(Frame::data(data)), sending));
            }
            Some(Err(error)) => trailers(
                error.grpc_code(),
                &error.to_string(),
                std::mem::take(&mut sending.metadata),
            ),
            None => trailers(Code::Ok, "", std::mem::take(&mut sending.metadata)),
        };
        sending.done = true;
        let last = match flavor {
            Flavor::Grpc => Frame::trailers(status),
            Flavor::GrpcWeb | Flavor::GrpcWebText => Frame::data(web_chunk(flavor, &web_trailers(&status))),
        };
        Some((Ok(last), sending))
    });
    builder(flavor)
        .body(Body::new(http_body_util::StreamBody::new(frames)))
        .expect("valid response")
}

fn builder(flavor: Flavor) -> http::response::Builder {
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, flavor.content_type());
    match flavor {
        Flavor::Grpc => builder,
        Flavor::GrpcWeb | Flavor::GrpcWebText => builder
            .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
            .header(header::ACCESS_CONTROL_EXPOSE_HEADERS, "grpc-status,grpc-message"),
    }
}

/// `grpc-status`, `grpc-message` and the reply's metadata.
fn trailers(code: Code, text: &str, metadata: HeaderMap) -> HeaderMap {
    let mut status = metadata;
    status.insert("grpc-status", HeaderValue::from(code as i32));
    if !text.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&percent_encode(text)) {
            status.insert("grpc-message", value);
        }
    }
    status
}

/// gRPC-web's trailer frame: the trailers as HTTP/1 header lines.
fn web_trailers(status: &HeaderMap) -> Bytes {
    let mut text = String::new();
    for (name, value) in status {
        text.push_str(&format!("{}:{}\r\n", name, value.to_str().unwrap_or_default()));
    }
    frame(0x80, text.as_bytes())
}

/// One piece of a gRPC-web body: as it is, or base64 on its own (text mode).
fn web_chunk(flavor: Flavor, bytes: &[u8]) -> Bytes {
    if flavor == Flavor::GrpcWebText {
        Bytes::from(base64::engine::general_purpose::STANDARD.encode(bytes))
    } else {
        Bytes::copy_from_slice(bytes)
    }
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

    /// The messages a body sent in `chunks` yields, with the error that ended it.
    fn read(flavor: Flavor, chunks: Vec<Vec<u8>>, limit: usize) -> (Vec<Bytes>, Option<ProxyError>) {
        let body = Body::from_stream(futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::convert::Infallible>(Bytes::from(c))),
        ));
        let results: Vec<_> = futures::executor::block_on(request_messages(flavor, body, limit).collect());
        let mut messages = Vec::new();
        for result in results {
            match result {
                Ok(message) => messages.push(message),
                Err(error) => return (messages, Some(error)),
            }
        }
        (messages, None)
    }

    #[test]
    fn streamed_requests_are_read_frame_by_frame_across_chunks() {
        let mut body = frame(0, b"one").to_vec();
        body.extend_from_slice(&frame(0, b""));
        body.extend_from_slice(&frame(0, b"three"));
        // Split everywhere: frames arrive in pieces.
        let chunks: Vec<Vec<u8>> = body.chunks(2).map(<[u8]>::to_vec).collect();
        let (messages, error) = read(Flavor::Grpc, chunks, 100);
        assert_eq!(messages, [Bytes::from("one"), Bytes::new(), Bytes::from("three")]);
        assert!(error.is_none());

        // gRPC-web text: base64 split off its 4-character groups.
        let text = base64::engine::general_purpose::STANDARD.encode(&body);
        let chunks: Vec<Vec<u8>> = text.as_bytes().chunks(3).map(<[u8]>::to_vec).collect();
        let (messages, error) = read(Flavor::GrpcWebText, chunks, 100);
        assert_eq!(messages.len(), 3);
        assert!(error.is_none());

        // ... and each message encoded on its own, padding and all.
        let pieces: String = [frame(0, b"one"), frame(0, b"three")]
            .iter()
            .map(|f| base64::engine::general_purpose::STANDARD.encode(f))
            .collect();
        assert!(
            pieces.trim_end_matches('=').contains('='),
            "a padded piece in the middle"
        );
        let (messages, error) = read(Flavor::GrpcWebText, vec![pieces.into_bytes()], 100);
        assert_eq!(messages, [Bytes::from("one"), Bytes::from("three")]);
        assert!(error.is_none());
    }

    #[test]
    fn truncated_oversized_and_compressed_frames_end_the_stream() {
        let mut body = frame(0, b"fine").to_vec();
        body.extend_from_slice(&frame(0, b"cut short")[..7]);
        let (messages, error) = read(Flavor::Grpc, vec![body], 100);
        assert_eq!(messages, [Bytes::from("fine")]);
        assert!(matches!(error, Some(ProxyError::InvalidArgument(_))), "{error:?}");

        let (_, error) = read(Flavor::Grpc, vec![frame(0, &[7; 11]).to_vec()], 10);
        assert!(matches!(error, Some(ProxyError::ResourceExhausted(_))), "{error:?}");

        let (_, error) = read(Flavor::Grpc, vec![frame(1, b"z").to_vec()], 10);
        assert!(matches!(error, Some(ProxyError::Unimplemented(_))), "{error:?}");
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
