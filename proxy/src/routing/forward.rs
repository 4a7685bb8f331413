//! Passing a decoded call on to the sidecar that serves it: a gRPC call of the
//! user's own method (unary or streamed), carrying the already-encoded request
//! bytes as they are, with the reply's metadata back. Says whether a failed call
//! reached the sidecar at all ([`ForwardError`]): the gateway may send only an
//! unseen call elsewhere.
//!
//! A unary call (nearly every call) goes over one HTTP/2 connection per sidecar
//! driven with `h2` itself: the calling task opens the stream, writes the
//! request and reads the answer, and only the connection's own task touches the
//! socket. A tonic channel would add its buffer's task, and hyper's client a
//! task per call, between the caller and the socket: each a wake-up on the
//! hop's path. Streamed calls (rare) go over a tonic channel per sidecar.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{
    header::{CONTENT_TYPE, TE},
    uri::{Authority, PathAndQuery, Scheme},
    HeaderMap, HeaderValue, Method, StatusCode, Uri,
};

use crate::{error::ProxyError, passing::Abortable};
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::{Channel, Endpoint},
    Code, Status,
};

/// How long making a connection to a sidecar may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest answer taken from a sidecar (tonic's default limit, which the
/// gateway had before it spoke HTTP/2 itself).
const MAX_ANSWER: usize = 4 * 1024 * 1024;
/// The flow-control windows of a connection to a sidecar (hyper's defaults):
/// large enough that an answer never waits for a window update.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// How a call to a sidecar failed.
#[derive(Debug)]
pub enum ForwardError {
    /// No connection to the sidecar could be made: it never saw the call, so
    /// the call may go to another instance.
    Unreachable(String),
    /// The connection broke (or timed out) after the call was sent: the sidecar
    /// may or may not have run it, so it must not be sent again.
    Lost(String),
    /// The sidecar answered with this status (its own, or its function's).
    Answered(Status),
}

impl ForwardError {
    /// Tells a status the sidecar sent (read from its trailers, no source) from
    /// one this side made up for a broken transport (it carries its cause).
    fn classify(address: &str, status: Status) -> ForwardError {
        if !crate::error::transport_failed(&status) {
            return ForwardError::Answered(status);
        }
        let mut cause = std::error::Error::source(&status);
        while let Some(error) = cause {
            if error.downcast_ref::<tonic::ConnectError>().is_some() {
                return ForwardError::Unreachable(format!("sidecar {address} unreachable: {error}"));
            }
            if error.downcast_ref::<tonic::TimeoutExpired>().is_some() {
                return ForwardError::Answered(deadline_passed());
            }
            cause = error.source();
        }
        ForwardError::Lost(format!(
            "the connection to sidecar {address} broke: {}",
            status.message()
        ))
    }

    /// A call whose answer never came: the sidecar refused it unseen (it
    /// reset the stream with REFUSED_STREAM, or said GOAWAY naming an earlier
    /// last stream: draining, it runs nothing new), so it may go elsewhere;
    /// otherwise it was lost.
    fn unanswered(address: &str, error: h2::Error) -> ForwardError {
        let refused = error.is_remote()
            && (error.is_go_away() || (error.is_reset() && error.reason() == Some(h2::Reason::REFUSED_STREAM)));
        if refused {
            return ForwardError::Unreachable(format!("sidecar {address} refused the call unseen: {error}"));
        }
        ForwardError::lost(address, error)
    }

    fn lost(address: &str, error: h2::Error) -> ForwardError {
        ForwardError::Lost(format!("the connection to sidecar {address} broke: {error}"))
    }
}

fn deadline_passed() -> Status {
    Status::deadline_exceeded("the request's deadline passed while its instance was handling it")
}

/// Connections to sidecars, by address.
#[derive(Default)]
pub struct Forwarder {
    sidecars: Mutex<HashMap<String, Arc<Sidecar>>>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Forwarder {
    fn sidecar(&self, address: &str) -> Arc<Sidecar> {
        let mut sidecars = self.sidecars.lock().expect("sidecar connections poisoned");
        if let Some(sidecar) = sidecars.get(address) {
            return sidecar.clone();
        }
        sidecars.entry(address.to_string()).or_default().clone()
    }

    fn channel(&self, address: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().expect("channel cache poisoned");
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|_| Status::internal(format!("invalid sidecar address {address:?}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// Calls the unary method `path` (`/package.Service/Method`) on the sidecar at
    /// `address`; the answer and the metadata (headers and trailers) it came with.
    /// With a `timeout`, the sidecar hears it as `grpc-timeout` and the call is
    /// given up (DEADLINE_EXCEEDED) when it passes.
    pub async fn call(
        &self,
        address: &str,
        path: PathAndQuery,
        request: Bytes,
        mut headers: HeaderMap,
        timeout: Option<Duration>,
    ) -> Result<(Bytes, HeaderMap), ForwardError> {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        if let Some(timeout) = timeout {
            headers.insert("grpc-timeout", crate::metadata::grpc_timeout(timeout));
        }
        let body = framed(&request);
        let exchange = self.exchange(address, path, headers, body);
        match timeout {
            None => exchange.await,
            Some(timeout) => tokio::time::timeout(timeout, exchange)
                .await
                .unwrap_or_else(|_| Err(ForwardError::Answered(deadline_passed()))),
        }
    }

    /// Sends one unary call and reads its answer. A connection found closed
    /// before the call went out is made again once.
    async fn exchange(
        &self,
        address: &str,
        path: PathAndQuery,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(Bytes, HeaderMap), ForwardError> {
        let sidecar = self.sidecar(address);
        let mut retried = false;
        let response = loop {
            let link = sidecar.link(address).await?;
            match link.send(path.clone(), headers.clone(), body.clone()).await {
                Ok(response) => break response,
                Err(error) => {
                    link.closed.store(true, Ordering::Release);
                    if retried {
                        return Err(ForwardError::Unreachable(format!(
                            "sidecar {address} unreachable: {error}"
                        )));
                    }
                    retried = true;
                }
            }
        };
        let response = response.await.map_err(|e| ForwardError::unanswered(address, e))?;
        let (head, mut body) = response.into_parts();
        if head.status != StatusCode::OK {
            return Err(ForwardError::Answered(
                status_of(&head.headers).unwrap_or_else(|| status_of_http(head.status)),
            ));
        }
        // A call that failed at once is answered with headers alone.
        if let Some(status) = status_of(&head.headers) {
            return Err(ForwardError::Answered(status));
        }
        let mut answer = Answer::default();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| ForwardError::lost(address, e))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            answer.take(chunk)?;
        }
        let trailers = body
            .trailers()
            .await
            .map_err(|e| ForwardError::lost(address, e))?
            .unwrap_or_default();
        if let Some(status) = status_of(&trailers) {
            return Err(ForwardError::Answered(status));
        }
        if !is_ok(&trailers) {
            return Err(ForwardError::Answered(Status::internal(format!(
                "sidecar {address} ended its answer without a gRPC status"
            ))));
        }
        let mut metadata = head.headers;
        metadata.extend(trailers);
        Ok((answer.message()?, metadata))
    }

    async fn ready(&self, address: &str) -> Result<tonic::client::Grpc<Channel>, ForwardError> {
        let mut grpc = tonic::client::Grpc::new(self.channel(address).map_err(ForwardError::Answered)?);
        grpc.ready()
            .await
            .map_err(|e| ForwardError::Unreachable(format!("sidecar {address} unreachable: {e}")))?;
        Ok(grpc)
    }

    /// Calls the streamed method `path` on the sidecar at `address`: requests go
    /// as they come, answers come back as a stream.
    pub async fn stream(
        &self,
        address: &str,
        path: PathAndQuery,
        requests: impl futures::Stream<Item = Option<Bytes>> + Send + 'static,
        headers: tonic::metadata::MetadataMap,
        timeout: Option<Duration>,
    ) -> Result<tonic::Response<tonic::Streaming<Bytes>>, ForwardError> {
        let mut grpc = self.ready(address).await?;
        let mut call = tonic::Request::new(requests);
        *call.metadata_mut() = headers;
        if let Some(timeout) = timeout {
            call.set_timeout(timeout);
        }
        grpc.streaming(call, path, Abortable(RawCodec))
            .await
            .map_err(|status| ForwardError::classify(address, status))
    }

    /// The error of a streamed call's answer stream that ended in `status`.
    pub fn stream_error(address: &str, status: Status) -> ProxyError {
        ForwardError::classify(address, status).into()
    }

    /// Forgets the connections to every sidecar for which `wanted` says no.
    /// Calls under way on them finish; their connections close after them.
    pub fn keep_only(&self, wanted: impl Fn(&str) -> bool) {
        self.sidecars
            .lock()
            .expect("sidecar connections poisoned")
            .retain(|address, _| wanted(address));
        self.channels
            .lock()
            .expect("channel cache poisoned")
            .retain(|address, _| wanted(address));
    }

    /// How many sidecars this forwarder holds connections (or their state) for.
    #[cfg(test)]
    pub fn known(&self) -> usize {
        let sidecars = self.sidecars.lock().expect("sidecar connections poisoned");
        let channels = self.channels.lock().expect("channel cache poisoned");
        sidecars
            .keys()
            .chain(channels.keys())
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// Whether this forwarder holds a connection (or its state) for `address`.
    #[cfg(test)]
    pub fn holds(&self, address: &str) -> bool {
        self.sidecars
            .lock()
            .expect("sidecar connections poisoned")
            .contains_key(address)
    }

    /// Forgets the connections to a sidecar that went away.
    pub fn forget(&self, address: &str) {
        self.keep_only(|other| other != address);
    }
}

/// The connection to one sidecar for unary calls: made at the first call, and
/// again at the first call after it closed.
#[derive(Default)]
struct Sidecar {
    link: Mutex<Option<Link>>,
    /// Held while a connection is being made, so concurrent calls make one.
    connecting: tokio::sync::Mutex<()>,
    /// When the last attempt to connect failed, and why: calls that waited
    /// for that attempt take its answer instead of each trying again in turn
    /// (behind a sidecar that drops packets, the k-th would wait k attempts).
    failed: Mutex<Option<(Instant, String)>>,
}

impl Sidecar {
    fn open_link(&self) -> Option<Link> {
        let link = self.link.lock().expect("sidecar connection poisoned");
        link.as_ref()
            .filter(|link| !link.closed.load(Ordering::Acquire))
            .cloned()
    }

    async fn link(&self, address: &str) -> Result<Link, ForwardError> {
        if let Some(link) = self.open_link() {
            return Ok(link);
        }
        let waiting_since = Instant::now();
        let _connecting = self.connecting.lock().await;
        if let Some(link) = self.open_link() {
            return Ok(link);
        }
        let unreachable = |error: &str| ForwardError::Unreachable(format!("sidecar {address} unreachable: {error}"));
        if let Some((at, error)) = &*self.failed.lock().expect("sidecar connection poisoned") {
            if *at >= waiting_since {
                return Err(unreachable(error));
            }
        }
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, Link::connect(address))
            .await
            .unwrap_or_else(|_| Err(format!("no connection within {CONNECT_TIMEOUT:?}")));
        match connected {
            Ok(link) => {
                *self.link.lock().expect("sidecar connection poisoned") = Some(link.clone());
                Ok(link)
            }
            Err(error) => {
                let answer = unreachable(&error);
                *self.failed.lock().expect("sidecar connection poisoned") = Some((Instant::now(), error));
                Err(answer)
            }
        }
    }
}

/// One HTTP/2 connection; every call clones it and opens its own stream.
#[derive(Clone)]
struct Link {
    send: h2::client::SendRequest<Bytes>,
    authority: Authority,
    /// Set when the connection's task ends (the connection closed or broke).
    closed: Arc<AtomicBool>,
}

impl Link {
    async fn connect(address: &str) -> Result<Link, String> {
        let authority: Authority = address
            .parse()
            .map_err(|_| format!("invalid sidecar address {address:?}"))?;
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(|e| e.to_string())?;
        let closed = Arc::new(AtomicBool::new(false));
        let (ended, address) = (closed.clone(), address.to_string());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(sidecar = %address, %error, "the connection to a sidecar broke");
            }
            ended.store(true, Ordering::Release);
        });
        Ok(Link {
            send,
            authority,
            closed,
        })
    }

    /// Opens a stream for one call and sends it whole. An error means the call
    /// did not go out (the connection is closed or closing).
    async fn send(
        &self,
        path: PathAndQuery,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<h2::client::ResponseFuture, h2::Error> {
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = Some(path);
        let mut request = http::Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = Uri::from_parts(uri).expect("a URI of a valid authority and path");
        *request.headers_mut() = headers;
        let mut send = self.send.clone().ready().await?;
        let (response, mut stream) = send.send_request(request, false)?;
        stream.send_data(body, true)?;
        Ok(response)
    }
}

/// A message in a gRPC frame: not compressed, its length, the bytes.
fn framed(message: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(message);
    frame.freeze()
}

/// The body of a unary answer as it arrives: usually one chunk, kept as it is.
#[derive(Default)]
struct Answer {
    first: Bytes,
    more: Option<BytesMut>,
}

impl Answer {
    fn take(&mut self, chunk: Bytes) -> Result<(), ForwardError> {
        match &mut self.more {
            None if self.first.is_empty() => self.first = chunk,
            None => {
                let mut more = BytesMut::from(&self.first[..]);
                more.extend_from_slice(&chunk);
                self.more = Some(more);
            }
            Some(more) => more.extend_from_slice(&chunk),
        }
        if self.len() > MAX_ANSWER + 5 {
            return Err(too_large(self.len()));
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.more.as_ref().map_or(self.first.len(), BytesMut::len)
    }

    /// The one message the body holds.
    fn message(self) -> Result<Bytes, ForwardError> {
        let mut body = match self.more {
            Some(more) => more.freeze(),
            None => self.first,
        };
        let malformed = |what: &str| ForwardError::Answered(Status::internal(format!("the sidecar's answer {what}")));
        if body.len() < 5 {
            return Err(malformed("holds no message"));
        }
        let compressed = body.get_u8();
        let length = body.get_u32() as usize;
        if compressed != 0 {
            return Err(malformed("is compressed, which the gateway never asks for"));
        }
        if length > MAX_ANSWER {
            return Err(too_large(length));
        }
        if body.len() != length {
            return Err(malformed("is not one whole message"));
        }
        Ok(body)
    }
}

fn too_large(length: usize) -> ForwardError {
    ForwardError::Answered(Status::out_of_range(format!(
        "the sidecar's answer is larger than the limit of {MAX_ANSWER} bytes ({length})"
    )))
}

/// The status of a failed call, when these headers carry one.
fn status_of(headers: &HeaderMap) -> Option<Status> {
    if is_ok(headers) {
        return None;
    }
    Status::from_header_map(headers)
}

fn is_ok(headers: &HeaderMap) -> bool {
    headers.get("grpc-status").is_some_and(|code| code == "0")
}

/// A non-gRPC answer's status, mapped as gRPC's HTTP-to-status table says.
fn status_of_http(status: StatusCode) -> Status {
    let code = match status {
        StatusCode::BAD_REQUEST => Code::Internal,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::Unimplemented,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("the sidecar answered HTTP {status}"))
}

/// Passes message bytes through untouched.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl From<ForwardError> for ProxyError {
    /// What the client hears. A call whose fate is unknown is UNAVAILABLE (a
    /// retryable outage, with Retry-After), never UNKNOWN, which is reserved for
    /// the function's own `Failure`.
    fn from(error: ForwardError) -> ProxyError {
        match error {
            ForwardError::Unreachable(message) => ProxyError::Unavailable(message),
            ForwardError::Lost(message) => ProxyError::Unavailable(format!(
                "{message}; the request may or may not have been applied; retry if it is safe to"
            )),
            ForwardError::Answered(status) => ProxyError::from_status(&status),
        }
    }
}
