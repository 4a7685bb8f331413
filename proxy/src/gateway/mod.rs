//! The gateway role: the edge of a deployment. It follows the control plane's
//! route watch, serves every deployed service (gRPC, gRPC-web, HTTP+JSON) with the
//! same ingress as a sidecar, and forwards each command to the sidecar that owns
//! its entity's shard; requests for a service with no ready instance are held
//! while it scales from zero.

mod forward;
mod hold;
pub mod routes;

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, extract::Request, response::Response, Router};
use bytes::Bytes;
use futures::future::BoxFuture;
use prost_types::Any;
use strata_proto::cloudstate::{metadata_entry, Metadata};
use strata_proto::strata::controlplane::v1::{PokeRequest, WatchRoutesRequest};
use tokio::{net::TcpListener, sync::watch};
use tower::{Service, ServiceExt};

use self::{
    forward::Forwarder,
    hold::{Holds, Poke},
    routes::RouteTable,
};
use crate::{
    error::ProxyError,
    ingress::{self, Commands, Ingress},
    membership::{data_plane_client, MembershipError},
    metrics::Metrics,
    model::MethodModel,
    shard::shard_of,
};

/// How often a command may be re-routed (shard moved, owner gone) before the
/// client gets UNAVAILABLE.
const MAX_ATTEMPTS: usize = 6;
/// How long to wait for new routes after a routing miss.
const ROUTE_PATIENCE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// The control plane's data-plane address, e.g. `http://127.0.0.1:9101`.
    pub control_plane: String,
    pub token: Option<String>,
    pub max_body: usize,
    /// Requests that may wait per service while it scales from zero.
    pub hold_capacity: usize,
    /// How long a request may wait for a service to scale from zero.
    pub hold_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    ControlPlane(#[from] MembershipError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
}

/// Routes commands to owners; the [`Commands`] of the gateway's ingress.
pub struct Gateway {
    routes: watch::Receiver<Arc<RouteTable>>,
    metrics: Arc<Metrics>,
    forwarder: Forwarder,
    holds: Holds,
}

impl Gateway {
    fn new(routes: watch::Receiver<Arc<RouteTable>>, metrics: Arc<Metrics>, holds: Holds) -> Self {
        Self {
            routes,
            metrics,
            forwarder: Forwarder::default(),
            holds,
        }
    }
}

#[async_trait::async_trait]
impl Commands for Gateway {
    async fn run(
        &self,
        method: Arc<MethodModel>,
        entity_id: String,
        payload: Any,
        metadata: Option<Metadata>,
    ) -> Result<Any, ProxyError> {
        let grpc_service = method.entity.service_name.as_str();
        let path = format!("/{grpc_service}/{}", method.name());
        let request = Bytes::from(payload.value);
        let headers = metadata_map(metadata.as_ref());
        let mut routes = self.routes.clone();
        for _ in 0..MAX_ATTEMPTS {
            let table = routes.borrow_and_update().clone();
            let Some(service) = table.service_for(grpc_service) else {
                return Err(ProxyError::Unimplemented(format!(
                    "no deployed service serves {grpc_service}"
                )));
            };
            if service.ready.is_empty() {
                let name = service.name.clone();
                self.holds.hold(&name, &mut routes).await?;
                continue;
            }
            let shard = shard_of(&entity_id, service.shard_count());
            let Some(owner) = service.owner(shard).cloned() else {
                self.rerouted(&service.name, "no_owner");
                wait_for_new_routes(&mut routes).await;
                continue;
            };
            match self
                .forwarder
                .call(&owner.address, &path, request.clone(), headers.clone())
                .await
            {
                Ok(reply) => {
                    return Ok(Any {
                        type_url: format!("type.googleapis.com/{}", method.output().full_name()),
                        value: reply.to_vec(),
                    })
                }
                Err(status) => match ProxyError::from_status(&status) {
                    // The shard moved (or has not arrived yet): re-read the routes.
                    ProxyError::NotOwner(_) => {
                        self.rerouted(&service.name, "not_owner");
                        wait_for_new_routes(&mut routes).await
                    }
                    // The owner is not reachable at all, so it never saw the
                    // command: safe to route it again once the routes change.
                    ProxyError::Unavailable(message) if message.starts_with(forward::UNREACHABLE) => {
                        self.rerouted(&service.name, "unreachable");
                        self.forwarder.forget(&owner.address);
                        wait_for_new_routes(&mut routes).await;
                    }
                    other => return Err(other),
                },
            }
        }
        Err(ProxyError::Unavailable(format!(
            "the owner of entity {entity_id:?} could not be reached after {MAX_ATTEMPTS} attempts; retry"
        )))
    }
}

impl Gateway {
    fn rerouted(&self, service: &str, reason: &str) {
        self.metrics.reroutes.with_label_values(&[service, reason]).inc();
    }
}

async fn wait_for_new_routes(routes: &mut watch::Receiver<Arc<RouteTable>>) {
    let _ = tokio::time::timeout(ROUTE_PATIENCE, routes.changed()).await;
}

fn metadata_map(metadata: Option<&Metadata>) -> tonic::metadata::MetadataMap {
    let mut map = tonic::metadata::MetadataMap::new();
    for entry in metadata.map(|m| m.entries.as_slice()).unwrap_or_default() {
        let Some(metadata_entry::Value::StringValue(value)) = &entry.value else {
            continue;
        };
        if let (Ok(key), Ok(value)) = (
            entry
                .key
                .parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(),
            value.parse(),
        ) {
            map.insert(key, value);
        }
    }
    map
}

/// The gateway's HTTP service: the ingress router of the current catalog,
/// swapped whenever the deployed services change.
#[derive(Clone)]
struct LiveRouter {
    current: Arc<RwLock<Router>>,
}

impl Service<Request> for LiveRouter {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let router = self.current.read().expect("router lock poisoned").clone();
        Box::pin(router.oneshot(request))
    }
}

/// Serves the gateway until `shutdown` resolves.
pub async fn run(
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let client = data_plane_client(&config.control_plane, config.token.as_deref())?;
    let metrics = Arc::new(Metrics::new());
    let (routes_tx, routes) = watch::channel(Arc::new(RouteTable::default()));
    let poke_client = client.clone();
    let poke: Poke = Arc::new(move |service, held| {
        let mut client = poke_client.clone();
        Box::pin(async move {
            let request = PokeRequest {
                service: service.clone(),
                held,
            };
            match client.poke(request).await {
                Ok(answer) => {
                    let desired = answer.get_ref().desired_replicas;
                    tracing::info!(%service, held, desired, "poked: scale from zero")
                }
                Err(status) => tracing::warn!(%service, held, error = %status.message(), "poke failed"),
            }
        })
    });
    let gateway = Arc::new(Gateway::new(
        routes.clone(),
        metrics.clone(),
        Holds::new(config.hold_capacity, config.hold_timeout, metrics.clone(), poke),
    ));
    let build = {
        let (gateway, metrics, max_body) = (gateway.clone(), metrics.clone(), config.max_body);
        move |table: &RouteTable| {
            ingress::router(Ingress {
                catalog: table.catalog.clone(),
                commands: gateway.clone(),
                metrics: metrics.clone(),
                store: None,
                max_body,
            })
        }
    };
    // Until the first route snapshot arrives nothing is known: answer 503 (retry
    // shortly), never a misleading 404.
    let starting = Router::new().fallback(|| async {
        let error = ProxyError::Unavailable("the gateway is starting and has no routes yet; retry shortly".into());
        (
            error.http_status(),
            [
                (http::header::RETRY_AFTER, "1"),
                (http::header::CONTENT_TYPE, "application/json"),
            ],
            error.json_body().to_string(),
        )
    });
    let live = LiveRouter {
        current: Arc::new(RwLock::new(starting)),
    };
    tokio::spawn(follow_routes(client, routes_tx, live.clone(), build));

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| GatewayError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(GatewayError::Serve)?;
    tracing::info!(%addr, control_plane = %config.control_plane, "gateway ready");
    let app = Router::new().fallback_service(live);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(GatewayError::Serve)
}

/// Follows the route watch forever, reconnecting; rebuilds the table on every
/// snapshot and the router when the set of served services changes.
async fn follow_routes(
    client: crate::membership::DataPlane,
    routes: watch::Sender<Arc<RouteTable>>,
    live: LiveRouter,
    build: impl Fn(&RouteTable) -> Router,
) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        match client.clone().watch_routes(WatchRoutesRequest {}).await {
            Ok(stream) => {
                backoff = Duration::from_millis(100);
                let mut stream = stream.into_inner();
                while let Ok(Some(snapshot)) = stream.message().await {
                    let previous = routes.borrow().clone();
                    let table = RouteTable::build(&snapshot, &previous);
                    let same_services = table.catalog.models().len() == previous.catalog.models().len()
                        && table
                            .catalog
                            .models()
                            .iter()
                            .zip(previous.catalog.models())
                            .all(|(a, b)| Arc::ptr_eq(a, b));
                    if first || !same_services {
                        first = false;
                        *live.current.write().expect("router lock poisoned") = build(&table);
                        tracing::info!(
                            services = table.services.len(),
                            version = table.version,
                            "serving new routes"
                        );
                    }
                    let _ = routes.send(Arc::new(table));
                }
                tracing::warn!("route watch ended; reconnecting");
            }
            Err(status) => tracing::warn!(error = %status.message(), "cannot watch routes"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
