//! Forwarding a decoded command to the sidecar that owns it: a unary gRPC call of
//! the user's own method, carrying the already-encoded request bytes as they are.
//! One HTTP/2 channel per sidecar address, reused.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use bytes::{Buf, BufMut, Bytes};
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

    /// Calls `path` (`/package.Service/Method`) on the sidecar at `address`.
    pub async fn call(
        &self,
        address: &str,
        path: &str,
        request: Bytes,
        headers: tonic::metadata::MetadataMap,
    ) -> Result<Bytes, Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel(address)?);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("{UNREACHABLE}: {address}: {e}")))?;
        let path: http::uri::PathAndQuery = path
            .parse()
            .map_err(|_| Status::internal(format!("invalid method path {path:?}")))?;
        let mut call = tonic::Request::new(request);
        *call.metadata_mut() = headers;
        Ok(grpc.unary(call, path, RawCodec).await?.into_inner())
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
