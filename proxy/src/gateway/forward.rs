//! Passing a decoded call on to the sidecar that serves it: a gRPC call of the
//! user's own method (unary or streamed), carrying the already-encoded request
//! bytes as they are, with the reply's metadata back. One HTTP/2 channel per
//! sidecar address, reused.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;

use crate::passing::Abortable;
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::{Channel, Endpoint},
    Status,
};

/// The start of the message of a call that never reached its sidecar.
pub const UNREACHABLE: &str = "sidecar unreachable";

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

    async fn ready(&self, address: &str, path: &str) -> Result<(tonic::client::Grpc<Channel>, PathAndQuery), Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel(address)?);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("{UNREACHABLE}: {address}: {e}")))?;
        let path: PathAndQuery = path
            .parse()
            .map_err(|_| Status::internal(format!("invalid method path {path:?}")))?;
        Ok((grpc, path))
    }

    /// Calls the unary method `path` (`/package.Service/Method`) on the sidecar at
    /// `address`; the answer and the metadata (headers and trailers) it came with.
    pub async fn call(
        &self,
        address: &str,
        path: &str,
        request: Bytes,
        headers: tonic::metadata::MetadataMap,
        timeout: Option<Duration>,
    ) -> Result<(Bytes, tonic::metadata::MetadataMap), Status> {
        let (mut grpc, path) = self.ready(address, path).await?;
        let mut call = tonic::Request::new(request);
        *call.metadata_mut() = headers;
        if let Some(timeout) = timeout {
            call.set_timeout(timeout);
        }
        let response = grpc.unary(call, path, RawCodec).await?;
        let (metadata, message, _) = response.into_parts();
        Ok((message, metadata))
    }

    /// Calls the streamed method `path` on the sidecar at `address`: requests go
    /// as they come, answers come back as a stream.
    pub async fn stream(
        &self,
        address: &str,
        path: &str,
        requests: impl futures::Stream<Item = Option<Bytes>> + Send + 'static,
        headers: tonic::metadata::MetadataMap,
        timeout: Option<Duration>,
    ) -> Result<tonic::Response<tonic::Streaming<Bytes>>, Status> {
        let (mut grpc, path) = self.ready(address, path).await?;
        let mut call = tonic::Request::new(requests);
        *call.metadata_mut() = headers;
        if let Some(timeout) = timeout {
            call.set_timeout(timeout);
        }
        grpc.streaming(call, path, Abortable(RawCodec)).await
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
