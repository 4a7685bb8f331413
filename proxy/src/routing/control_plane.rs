//! The data plane's client of the control plane when it runs as several nodes:
//! one lazily connecting channel per address (`--control-plane` takes them
//! comma-separated) and failover between them. Every call goes to the node that
//! answered last; a transport failure or an unavailable node (dead, cut off,
//! between leaders) moves it on to the next address at once, so a sidecar or a
//! gateway outlives any one control-plane node, as it would behind a Kubernetes
//! Service. Any node serves any call (followers relay writes to the leader), and
//! every data-plane call is idempotent (register, ready, heartbeat, drain and
//! poke name their instance or service), so sending one again elsewhere is safe.
//! Owns the choice of node and the bearer token on every call; what to call and
//! how often to retry is the caller's.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use strata_proto::strata::controlplane::v1::{
    data_plane_client::DataPlaneClient, PokeRequest, PokeResponse, RouteSnapshot, WatchRoutesRequest,
};
use strata_tls::ClientTls;
use tonic::{service::interceptor::InterceptedService, transport::Channel, Streaming};

/// The default of how long one call to the control plane may take (a route
/// watch: until it starts), for sidecars and gateways.
pub const DEFAULT_CONTROL_PLANE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("cannot reach the control plane at {address}: {message}")]
    Unreachable { address: String, message: String },
    #[error("the control plane refused {what}: {message}")]
    Refused { what: &'static str, message: String },
}

/// A data-plane client that sends the bearer token.
pub type DataPlane = DataPlaneClient<InterceptedService<Channel, Bearer>>;

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Self {
        Self(token.and_then(|t| format!("Bearer {t}").parse().ok()))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A data-plane client for `address` (lazily connecting) whose calls fail after
/// `timeout` (a route watch: if it has not started by then); an `https://`
/// address is dialled with `tls` (without it, trusting the public roots).
fn data_plane_client(
    address: &str,
    token: Option<&str>,
    timeout: Duration,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<DataPlane, ControlPlaneError> {
    let channel = strata_tls::endpoint(address, tls)
        .map_err(|e| ControlPlaneError::Unreachable {
            address: address.to_string(),
            message: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
        .connect_lazy();
    Ok(DataPlaneClient::with_interceptor(channel, Bearer::new(token)))
}

/// A cheaply cloned client of every node of the control plane.
#[derive(Clone)]
pub struct ControlPlaneClient {
    nodes: Arc<[Node]>,
    /// The node to try first: the one that answered last.
    current: Arc<AtomicUsize>,
}

struct Node {
    address: String,
    client: DataPlane,
}

impl ControlPlaneClient {
    /// [`ControlPlaneClient::with_tls`] with the default trust: tests' plain
    /// `http://` nodes.
    #[cfg(test)]
    pub fn new(addresses: &str, token: Option<&str>, timeout: Duration) -> Result<Self, ControlPlaneError> {
        Self::with_tls(addresses, token, timeout, &ClientTls::default())
    }

    /// Clients of the comma-separated `addresses` (e.g.
    /// `http://10.0.0.1:9101,http://10.0.0.2:9101`), each call bounded by
    /// `timeout` (a route watch: until it starts), dialling `https://` addresses
    /// with `tls` (a private CA, a client certificate).
    pub fn with_tls(
        addresses: &str,
        token: Option<&str>,
        timeout: Duration,
        tls: &ClientTls,
    ) -> Result<Self, ControlPlaneError> {
        let config = match (&tls.ca, &tls.identity) {
            (None, None) => None,
            _ => Some(tls.grpc().map_err(|error| ControlPlaneError::Unreachable {
                address: addresses.to_string(),
                message: error.to_string(),
            })?),
        };
        let nodes = addresses
            .split(',')
            .map(str::trim)
            .filter(|address| !address.is_empty())
            .map(|address| {
                Ok(Node {
                    address: address.to_string(),
                    client: data_plane_client(address, token, timeout, config.as_ref())?,
                })
            })
            .collect::<Result<Vec<_>, ControlPlaneError>>()?;
        if nodes.is_empty() {
            return Err(ControlPlaneError::Unreachable {
                address: addresses.to_string(),
                message: "no control-plane address given".into(),
            });
        }
        Ok(Self {
            nodes: nodes.into(),
            current: Arc::default(),
        })
    }

    /// Makes one call, trying each node at most once, from the one that
    /// answered last: the first answer that is not a node's unavailability is
    /// returned; if every node is unavailable, the last node's error.
    pub async fn call<T, F, Fut>(&self, what: &'static str, mut call: F) -> Result<T, tonic::Status>
    where
        F: FnMut(DataPlane) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let first = self.current.load(Ordering::Relaxed) % self.nodes.len();
        let mut failure = None;
        for step in 0..self.nodes.len() {
            let index = (first + step) % self.nodes.len();
            let node = &self.nodes[index];
            match call(node.client.clone()).await {
                Err(status) if fails_over(&status) => {
                    tracing::debug!(call = what, node = %node.address, error = %status.message(), "control-plane node unavailable");
                    failure = Some(status);
                }
                answer => {
                    if step > 0 {
                        tracing::info!(call = what, node = %node.address, "failed over to another control-plane node");
                        self.current.store(index, Ordering::Relaxed);
                    }
                    return answer.map(tonic::Response::into_inner);
                }
            }
        }
        // Start the next call elsewhere: the node that failed last may be back
        // before the one tried first.
        self.current.store((first + 1) % self.nodes.len(), Ordering::Relaxed);
        Err(failure.expect("at least one node"))
    }

    /// Opens a watch of every service's routes: the current snapshot first, then
    /// one whenever they change.
    pub async fn watch_routes(&self, what: &'static str) -> Result<Streaming<RouteSnapshot>, tonic::Status> {
        self.call(what, |mut client| async move {
            client.watch_routes(WatchRoutesRequest {}).await
        })
        .await
    }

    /// Asks for `request.service` to be scaled from zero (for the requests the
    /// gateway holds, or for events written for its subscriptions).
    pub async fn poke(&self, request: PokeRequest) -> Result<PokeResponse, tonic::Status> {
        self.call("poke", |mut client| {
            let request = request.clone();
            async move { client.poke(request).await }
        })
        .await
    }
}

/// Whether another node may answer where this one did not: the node is down,
/// unreachable, between leaders or too slow. A refusal (bad token, bad
/// request) would be the same on every node.
pub(crate) fn fails_over(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
    )
}

#[cfg(test)]
mod tests {
    //! A real gRPC data-plane server on loopback behind addresses that refuse
    //! connections: calls find it, and stay with it.

    use std::sync::atomic::AtomicU32;

    use strata_proto::strata::controlplane::v1::{
        data_plane_server::{DataPlane as DataPlaneService, DataPlaneServer},
        DrainRequest, DrainResponse, HeartbeatRequest, HeartbeatResponse, PokeRequest, PokeResponse,
        RegisterInstanceRequest, RegisterInstanceResponse, ReportReadyRequest, ReportReadyResponse, RouteSnapshot,
        WatchRoutesRequest,
    };
    use tonic::{Request, Response, Status};

    use super::*;

    /// Knows every instance and counts the heartbeats it answered.
    #[derive(Default)]
    struct Node {
        heartbeats: Arc<AtomicU32>,
    }

    #[tonic::async_trait]
    impl DataPlaneService for Node {
        type WatchRoutesStream = futures::stream::Empty<Result<RouteSnapshot, Status>>;

        async fn register_instance(
            &self,
            _: Request<RegisterInstanceRequest>,
        ) -> Result<Response<RegisterInstanceResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn report_ready(&self, _: Request<ReportReadyRequest>) -> Result<Response<ReportReadyResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn heartbeat(&self, _: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
            self.heartbeats.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(HeartbeatResponse { known: true }))
        }
        async fn drain(&self, _: Request<DrainRequest>) -> Result<Response<DrainResponse>, Status> {
            Err(Status::invalid_argument("no such instance"))
        }
        async fn watch_routes(
            &self,
            _: Request<WatchRoutesRequest>,
        ) -> Result<Response<Self::WatchRoutesStream>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn poke(&self, _: Request<PokeRequest>) -> Result<Response<PokeResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn release_shards(
            &self,
            _: Request<strata_proto::strata::controlplane::v1::ReleaseShardsRequest>,
        ) -> Result<Response<strata_proto::strata::controlplane::v1::ReleaseShardsResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn report_timers(
            &self,
            _: Request<strata_proto::strata::controlplane::v1::ReportTimersRequest>,
        ) -> Result<Response<strata_proto::strata::controlplane::v1::ReportTimersResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
    }

    /// An address nothing listens on (bound, then let go).
    async fn refused() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    async fn serve(node: Node) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(DataPlaneServer::new(node))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        address
    }

    fn heartbeat(client: DataPlane) -> impl Future<Output = Result<Response<HeartbeatResponse>, Status>> {
        let mut client = client;
        async move {
            client
                .heartbeat(HeartbeatRequest {
                    instance_id: "i-1".into(),
                })
                .await
        }
    }

    #[tokio::test]
    async fn a_dead_node_fails_over_to_a_live_one_and_the_live_one_stays_first() {
        let heartbeats = Arc::new(AtomicU32::new(0));
        let live = serve(Node {
            heartbeats: heartbeats.clone(),
        })
        .await;
        let addresses = format!("{}, {},{}", refused().await, refused().await, live);
        let client = ControlPlaneClient::new(&addresses, None, Duration::from_secs(5)).unwrap();

        let answer = client
            .call("heartbeat", heartbeat)
            .await
            .expect("the live node answers");
        assert!(answer.known);
        assert_eq!(
            client.current.load(Ordering::Relaxed),
            2,
            "the live node is tried first now"
        );
        client.call("heartbeat", heartbeat).await.expect("still answered");
        assert_eq!(heartbeats.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refusal_is_final_and_no_live_node_is_the_last_error() {
        let live = serve(Node::default()).await;
        let client =
            ControlPlaneClient::new(&format!("{live},{}", refused().await), None, Duration::from_secs(5)).unwrap();
        let refusal = client
            .call("drain", |mut client: DataPlane| async move {
                client
                    .drain(DrainRequest {
                        instance_id: "i-1".into(),
                        reason: "test".into(),
                    })
                    .await
            })
            .await
            .unwrap_err();
        assert_eq!(refusal.code(), tonic::Code::InvalidArgument, "{refusal}");

        let client = ControlPlaneClient::new(
            &format!("{},{}", refused().await, refused().await),
            None,
            Duration::from_secs(5),
        )
        .unwrap();
        let down = client.call("heartbeat", heartbeat).await.unwrap_err();
        assert_eq!(down.code(), tonic::Code::Unavailable, "{down}");
        assert!(ControlPlaneClient::new(" , ", None, Duration::from_secs(1)).is_err());
    }
}
