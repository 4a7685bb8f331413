//! The connection to the user function: one HTTP/2 channel shared by every entity
//! stream, plus discovery and error reports. Owns the protocol version check.

use std::time::Duration;

use strata_proto::cloudstate::{
    entity_discovery_client::EntityDiscoveryClient, EntitySpec, ProxyInfo, UserFunctionError,
};
use strata_proto::{entity_types, PROTOCOL_MAJOR_VERSION, PROTOCOL_MINOR_VERSION};
use tonic::transport::{Channel, Endpoint};

use crate::backoff::Backoff;

/// Every entity type this proxy serves, as discovery tells the function.
pub const SUPPORTED_ENTITY_TYPES: [&str; 4] = [
    entity_types::EVENT_SOURCED,
    entity_types::VALUE_ENTITY,
    entity_types::CRDT,
    entity_types::ACTION,
];

/// Where and how to reach the user function.
#[derive(Clone)]
pub struct FunctionClient {
    channel: Channel,
    address: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("the user function at {address} did not answer discovery within {waited:?}: {last_error}")]
    Unreachable {
        address: String,
        waited: Duration,
        last_error: String,
    },
    #[error("the user function speaks protocol {major}.{minor}; this proxy speaks {PROTOCOL_MAJOR_VERSION}.{PROTOCOL_MINOR_VERSION}")]
    Version { major: i32, minor: i32 },
    #[error("invalid user function address {0:?}")]
    Address(String),
}

impl FunctionClient {
    /// A lazily connecting client for `host:port`.
    pub fn new(host: &str, port: u16) -> Result<Self, DiscoveryError> {
        let address = format!("{host}:{port}");
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|_| DiscoveryError::Address(address.clone()))?
            .connect_timeout(Duration::from_secs(2))
            // No HTTP/2 keep-alive pings: gRPC servers allow one ping per five
            // minutes without data and close connections that ping more often,
            // which would kill every entity stream on them.
            .tcp_nodelay(true);
        Ok(Self {
            channel: endpoint.connect_lazy(),
            address,
        })
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Opens one entity stream (`handle` of an entity protocol) without waiting
    /// for the function's response headers: many gRPC servers (grpcio, grpc-go)
    /// send them only with their first message, which answers a command the proxy
    /// has not sent yet. The codec keeps small buffers: a proxy holds one stream
    /// per active entity, and tonic's default 8 KiB per direction would dominate
    /// its memory.
    pub fn open_entity_stream<In, Out>(
        &self,
        path: &'static str,
        input: impl futures::Stream<Item = In> + Send + 'static,
    ) -> EntityStream<Out>
    where
        In: prost::Message + Send + Sync + 'static,
        Out: prost::Message + Default + Send + Sync + 'static,
    {
        let channel = self.channel.clone();
        let opening = tokio::spawn(async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("the user function is unreachable: {e}")))?;
            let codec = crate::passing::Prost::<In, Out>::with_buffers(stream_buffers());
            let response = grpc
                .streaming(
                    tonic::Request::new(input),
                    http::uri::PathAndQuery::from_static(path),
                    codec,
                )
                .await?;
            Ok(response.into_inner())
        });
        EntityStream {
            state: StreamState::Opening(opening),
        }
    }

    /// Calls `discover`, retrying while the function is not up, for at most
    /// `patience`: every millisecond for the first tenth of a second, then
    /// doubling to 2 s. A function usually listens within milliseconds of its
    /// sidecar's start (both are spawned together on a cold start, the sidecar
    /// first), and a refused connection on loopback costs next to nothing, so
    /// discovery follows the function's start closely.
    pub async fn discover(&self, patience: Duration) -> Result<EntitySpec, DiscoveryError> {
        let started = tokio::time::Instant::now();
        let mut backoff = discovery_backoff();
        loop {
            let info = ProxyInfo {
                protocol_major_version: PROTOCOL_MAJOR_VERSION,
                protocol_minor_version: PROTOCOL_MINOR_VERSION,
                proxy_name: "strata".into(),
                proxy_version: env!("CARGO_PKG_VERSION").into(),
                supported_entity_types: SUPPORTED_ENTITY_TYPES.iter().map(|t| t.to_string()).collect(),
            };
            let error = match EntityDiscoveryClient::new(self.channel.clone()).discover(info).await {
                Ok(spec) => {
                    let spec = spec.into_inner();
                    check_version(&spec)?;
                    return Ok(spec);
                }
                Err(status) => status,
            };
            if started.elapsed() + backoff.peek() > patience {
                return Err(DiscoveryError::Unreachable {
                    address: self.address.clone(),
                    waited: started.elapsed(),
                    last_error: error.message().to_string(),
                });
            }
            tracing::debug!(address = %self.address, error = %error.message(), "user function not ready, retrying discovery");
            backoff.wait().await;
        }
    }

    /// Tells the function it broke the protocol. Best effort: logged, never fails.
    pub fn report_error(&self, message: String) {
        tracing::warn!(address = %self.address, %message, "user function error");
        let channel = self.channel.clone();
        tokio::spawn(async move {
            if let Err(status) = EntityDiscoveryClient::new(channel)
                .report_error(UserFunctionError { message })
                .await
            {
                tracing::debug!(error = %status.message(), "could not report the error to the user function");
            }
        });
    }
}

/// The pace of discovery's retries (see [`FunctionClient::discover`]).
fn discovery_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(1), Duration::from_secs(2)).steady_for(100)
}

/// A function that states no version is taken to speak 0.x (CloudState's SDKs
/// before 0.5 did not send one); a different major version is refused.
fn check_version(spec: &EntitySpec) -> Result<(), DiscoveryError> {
    let Some(info) = &spec.service_info else { return Ok(()) };
    if info.protocol_major_version != PROTOCOL_MAJOR_VERSION {
        return Err(DiscoveryError::Version {
            major: info.protocol_major_version,
            minor: info.protocol_minor_version,
        });
    }
    if info.protocol_minor_version > PROTOCOL_MINOR_VERSION {
        tracing::warn!(
            minor = info.protocol_minor_version,
            "the user function speaks a newer minor protocol version; newer features will be refused"
        );
    }
    Ok(())
}

/// The function's side of one entity stream, opened in the background.
pub struct EntityStream<Out> {
    state: StreamState<Out>,
}

enum StreamState<Out> {
    Opening(tokio::task::JoinHandle<Result<tonic::Streaming<Out>, tonic::Status>>),
    Open(Box<tonic::Streaming<Out>>),
    Closed,
}

impl<Out> EntityStream<Out> {
    /// The function's next message, `None` when it ended the stream.
    pub async fn message(&mut self) -> Result<Option<Out>, tonic::Status> {
        if let StreamState::Opening(opening) = &mut self.state {
            self.state = match opening.await {
                Ok(Ok(stream)) => StreamState::Open(Box::new(stream)),
                Ok(Err(status)) => {
                    self.state = StreamState::Closed;
                    return Err(status);
                }
                Err(_) => {
                    self.state = StreamState::Closed;
                    return Err(tonic::Status::unavailable("the entity stream could not be opened"));
                }
            };
        }
        match &mut self.state {
            StreamState::Open(stream) => stream.message().await,
            _ => Ok(None),
        }
    }

    /// Whether the stream is already over (the function failed or ended it)
    /// while nothing was in flight; polls without waiting. Anything the function
    /// sent unasked also counts: the stream is replaced either way.
    pub fn is_closed(&mut self) -> bool {
        use futures::FutureExt;
        if let StreamState::Opening(opening) = &mut self.state {
            if !opening.is_finished() {
                return false;
            }
            self.state = match opening.now_or_never() {
                Some(Ok(Ok(stream))) => StreamState::Open(Box::new(stream)),
                _ => StreamState::Closed,
            };
        }
        match &mut self.state {
            StreamState::Open(stream) => stream.message().now_or_never().is_some(),
            _ => true,
        }
    }
}

impl<Out> Drop for EntityStream<Out> {
    fn drop(&mut self) {
        if let StreamState::Opening(opening) = &self.state {
            opening.abort();
        }
    }
}

/// Buffers sized for small protocol messages; they still grow for a large one.
fn stream_buffers() -> tonic::codec::BufferSettings {
    tonic::codec::BufferSettings::new(512, 32 * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::cloudstate::ServiceInfo;

    fn spec(major: i32, minor: i32) -> EntitySpec {
        EntitySpec {
            service_info: Some(ServiceInfo {
                protocol_major_version: major,
                protocol_minor_version: minor,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn discovery_retries_every_millisecond_for_a_tenth_of_a_second_then_backs_off() {
        let mut backoff = discovery_backoff();
        let steady: Vec<Duration> = (0..100).map(|_| backoff.next_delay()).collect();
        assert!(steady.iter().all(|delay| *delay == Duration::from_millis(1)));
        let later: Vec<u64> = (0..14).map(|_| backoff.next_delay().as_millis() as u64).collect();
        assert_eq!(later, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2000, 2000, 2000]);
    }

    #[test]
    fn version_check() {
        assert!(check_version(&spec(0, 2)).is_ok());
        assert!(check_version(&spec(0, 1)).is_ok());
        assert!(check_version(&EntitySpec::default()).is_ok());
        assert!(matches!(
            check_version(&spec(1, 0)),
            Err(DiscoveryError::Version { major: 1, .. })
        ));
    }
}
