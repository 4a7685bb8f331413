//! Passing a decoded call on to the sidecar that serves it: a gRPC call of the
//! user's own method (unary or streamed), carrying the already-encoded request
//! bytes as they are, with the reply's metadata back. One HTTP client for every
//! sidecar, keeping one HTTP/2 connection per sidecar that all calls to it share
//! (no buffer task between a call and its connection). Says whether a failed
//! call reached the sidecar at all ([`ForwardError`]): the gateway may send only
//! an unseen call elsewhere.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use bytes::{Buf, BufMut, Bytes};
use http::{uri::PathAndQuery, Uri};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

use crate::{error::ProxyError, passing::Abortable};
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    Status,
};

/// How long making a connection to a sidecar may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The client every call goes through.
type Http2 = Client<HttpConnector, tonic::body::Body>;

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
            if let Some(failed) = error.downcast_ref::<hyper_util::client::legacy::Error>() {
                if failed.is_connect() {
                    return ForwardError::Unreachable(format!("sidecar {address} unreachable: {error}"));
                }
            }
            cause = error.source();
        }
        ForwardError::Lost(format!(
            "the connection to sidecar {address} broke: {}",
            status.message()
        ))
    }

    /// The client's deadline passed while the sidecar had the call.
    fn deadline() -> ForwardError {
        ForwardError::Answered(Status::deadline_exceeded(
            "the request's deadline passed while its instance was handling it",
        ))
    }
}

/// The HTTP/2 client of every sidecar, and each sidecar's address as a URI.
pub struct Forwarder {
    client: Http2,
    origins: Mutex<HashMap<String, Uri>>,
}

impl Default for Forwarder {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.enforce_http(true);
        Self {
            client: Client::builder(TokioExecutor::new()).http2_only(true).build(connector),
            origins: Mutex::default(),
        }
    }
}

impl Forwarder {
    /// A gRPC client of the sidecar at `address`, sharing the one connection to it.
    fn grpc(&self, address: &str) -> Result<tonic::client::Grpc<Http2>, ForwardError> {
        let mut origins = self.origins.lock().expect("origin cache poisoned");
        let origin = match origins.get(address) {
            Some(origin) => origin.clone(),
            None => {
                let origin: Uri = format!("http://{address}").parse().map_err(|_| {
                    ForwardError::Answered(Status::internal(format!("invalid sidecar address {address:?}")))
                })?;
                origins.insert(address.to_string(), origin.clone());
                origin
            }
        };
        Ok(tonic::client::Grpc::with_origin(self.client.clone(), origin))
    }

    /// Calls the unary method `path` (`/package.Service/Method`) on the sidecar at
    /// `address`; the answer and the metadata (headers and trailers) it came with.
    pub async fn call(
        &self,
        address: &str,
        path: PathAndQuery,
        request: Bytes,
        headers: tonic::metadata::MetadataMap,
        timeout: Option<Duration>,
    ) -> Result<(Bytes, tonic::metadata::MetadataMap), ForwardError> {
        let mut grpc = self.grpc(address)?;
        let mut call = tonic::Request::new(request);
        *call.metadata_mut() = headers;
        if let Some(timeout) = timeout {
            call.set_timeout(timeout);
        }
        let response = within(timeout, grpc.unary(call, path, RawCodec))
            .await?
            .map_err(|status| ForwardError::classify(address, status))?;
        let (metadata, message, _) = response.into_parts();
        Ok((message, metadata))
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
        let mut grpc = self.grpc(address)?;
        let mut call = tonic::Request::new(requests);
        *call.metadata_mut() = headers;
        if let Some(timeout) = timeout {
            call.set_timeout(timeout);
        }
        within(timeout, grpc.streaming(call, path, Abortable(RawCodec)))
            .await?
            .map_err(|status| ForwardError::classify(address, status))
    }

    /// The error of a streamed call's answer stream that ended in `status`.
    pub fn stream_error(address: &str, status: Status) -> ProxyError {
        ForwardError::classify(address, status).into()
    }

    /// Forgets a sidecar that went away. Its connection, once broken, leaves
    /// the client's pool by itself.
    pub fn forget(&self, address: &str) {
        self.origins.lock().expect("origin cache poisoned").remove(address);
    }
}

/// `call`'s answer (its headers, for a stream), unless `timeout` passes first.
async fn within<T>(timeout: Option<Duration>, call: impl std::future::Future<Output = T>) -> Result<T, ForwardError> {
    match timeout {
        None => Ok(call.await),
        Some(timeout) => tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| ForwardError::deadline()),
    }
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
