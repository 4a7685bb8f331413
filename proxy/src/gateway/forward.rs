//! Passing a decoded call on to the sidecar that serves it: a gRPC call of the
//! user's own method (unary or streamed), carrying the already-encoded request
//! bytes as they are, with the reply's metadata back. One HTTP/2 channel per
//! sidecar address, reused. Says whether a failed call reached the sidecar at
//! all ([`ForwardError`]): the gateway may send only an unseen call elsewhere.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;

use crate::{error::ProxyError, passing::Abortable};
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::{Channel, Endpoint},
    Status,
};

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
                return ForwardError::Answered(Status::deadline_exceeded(
                    "the request's deadline passed while its instance was handling it",
                ));
            }
            cause = error.source();
        }
        ForwardError::Lost(format!(
            "the connection to sidecar {address} broke: {}",
            status.message()
        ))
    }
}

/// Channels to sidecars, by address.
#[derive(Default)]
pub struct Forwarder {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Forwarder {
    fn channel(&self, address: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().expect("channel cache poisoned");
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|_| Status::internal(format!("invalid sidecar address {address:?}")))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    async fn ready(&self, address: &str) -> Result<tonic::client::Grpc<Channel>, ForwardError> {
        let mut grpc = tonic::client::Grpc::new(self.channel(address).map_err(ForwardError::Answered)?);
        grpc.ready()
            .await
            .map_err(|e| ForwardError::Unreachable(format!("sidecar {address} unreachable: {e}")))?;
        Ok(grpc)
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
        let mut grpc = self.ready(address).await?;
        let mut call = tonic::Request::new(request);
        *call.metadata_mut() = headers;
        if let Some(timeout) = timeout {
            call.set_timeout(timeout);
        }
        let response = grpc
            .unary(call, path, RawCodec)
            .await
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

    /// Forgets the channel of a sidecar that went away.
    pub fn forget(&self, address: &str) {
        self.channels.lock().expect("channel cache poisoned").remove(address);
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
