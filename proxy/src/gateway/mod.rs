//! The gateway role: the edge of a deployment. It follows the control plane's
//! route watch, serves every deployed service (gRPC, gRPC-web, HTTP+JSON) with the
//! same ingress as a sidecar, and passes each call on: an entity's command to the
//! sidecar that owns its shard, an action's call to the ready instance with the
//! fewest calls outstanding. Requests for a service with no ready instance are
//! held while it scales from zero. A managed sidecar routes the forwards and side
//! effects of its function the same way.

mod catchup;
mod forward;
#[cfg(test)]
mod gateway_tests;
mod hold;
pub(crate) use hold::Holds;
pub mod routes;
mod spread;

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, extract::Request, response::Response, Router};
use bytes::Bytes;
use futures::{future::BoxFuture, StreamExt};
use prost_types::Any;
use strata_proto::cloudstate::Metadata;
use strata_proto::strata::controlplane::v1::{PokeRequest, WatchRoutesRequest};
use strata_tasks::Tasks;
use strata_tls::{ClientTls, TlsFiles};
use tokio::{net::TcpListener, sync::watch};
use tower::{Service, ServiceExt};

use self::{
    catchup::{Catchup, Probe, Wanted},
    forward::{ForwardError, Forwarder},
    hold::Poke,
    routes::{RouteTable, Target},
    spread::{Spread, Ticket},
};
use crate::{
    admin,
    backoff::Backoff,
    call::{Answer, Answers, Call, CallContext, Commands, StreamedCall, Targets},
    control_plane::ControlPlaneClient,
    error::ProxyError,
    grpc::Flavor,
    ingress::{self, Ingress},
    membership::MembershipError,
    metadata::{context_headers, headers_of, metadata_of},
    metrics::Metrics,
    model::MethodModel,
    passing::{holding, pass_on},
    readiness::Readiness,
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
    /// Where `/metrics`, `/healthz` and `/readyz` are served (port 0: any free
    /// port), never on `listen`.
    pub admin_listen: SocketAddr,
    /// The control plane's data-plane addresses, comma-separated, e.g.
    /// `http://10.0.0.1:9101,http://10.0.0.2:9101` (calls fail over between them).
    pub control_plane: String,
    pub token: Option<String>,
    pub max_body: usize,
    /// Requests that may wait per service while it scales from zero.
    pub hold_capacity: usize,
    /// How long a request may wait for a service to scale from zero.
    pub hold_timeout: Duration,
    /// How long a unary call passed on to a sidecar may take when the client set
    /// no shorter deadline (then 504 / DEADLINE_EXCEEDED).
    pub forward_timeout: Duration,
    /// How long one call to the control plane may take.
    pub control_plane_timeout: Duration,
    /// Serve `listen` over TLS (HTTP/2 and HTTP/1.1 by ALPN) with this
    /// certificate and key; `None`: plain TCP.
    pub tls: Option<TlsFiles>,
    /// The CA to trust and the certificate to present at `https://` control-plane
    /// addresses.
    pub control_plane_tls: ClientTls,
}

/// The default of [`GatewayConfig::forward_timeout`]: a little over the
/// sidecar's own command deadline, so a slow function is reported by the
/// sidecar that saw it, and only a sidecar that stopped answering by this.
pub const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(65);

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    ControlPlane(#[from] MembershipError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("--tls-cert/--tls-key: {0}")]
    Tls(#[from] strata_tls::TlsError),
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
}

/// Routes calls to the instances that serve them; the [`Commands`] of the
/// gateway's ingress, and of a managed sidecar's forwards and side effects.
pub struct Gateway {
    routes: watch::Receiver<Arc<RouteTable>>,
    metrics: Arc<Metrics>,
    forwarder: Forwarder,
    spread: Arc<Spread>,
    holds: Holds,
    forward_timeout: Duration,
    /// The route version whose sidecars the forwarder was last trimmed to.
    trimmed: AtomicU64,
    /// Held while trimming, so trims of two versions never interleave.
    trimming: Mutex<()>,
}

/// Where one call goes, the route version that said so, and (for an action)
/// its count on that instance.
struct Destination {
    service: String,
    target: Target,
    version: u64,
    _ticket: Option<Ticket>,
}

impl Gateway {
    pub(crate) fn new(routes: watch::Receiver<Arc<RouteTable>>, metrics: Arc<Metrics>, holds: Holds) -> Self {
        Self {
            routes,
            metrics,
            forwarder: Forwarder::default(),
            forward_timeout: DEFAULT_FORWARD_TIMEOUT,
            spread: Arc::default(),
            holds,
            trimmed: AtomicU64::new(0),
            trimming: Mutex::new(()),
        }
    }

    /// The same gateway with another limit on unary calls passed on.
    pub(crate) fn with_forward_timeout(mut self, timeout: Duration) -> Self {
        self.forward_timeout = timeout;
        self
    }

    /// A gateway that pokes the control plane through `client` for a service
    /// at zero.
    pub(crate) fn with_control_plane(
        routes: watch::Receiver<Arc<RouteTable>>,
        metrics: Arc<Metrics>,
        holds: Holds,
        client: ControlPlaneClient,
    ) -> Self {
        Self::new(routes, metrics, holds.poking(poke_through(client)))
    }

    /// The instance for a call of `method`: the owner of the entity's shard, or
    /// (for an action) the ready instance with the fewest calls outstanding.
    /// Waits while the service has no ready instance. `Ok(None)`: the routes
    /// changed, look again.
    async fn destination(
        &self,
        method: &MethodModel,
        entity_id: Option<&str>,
        routes: &mut watch::Receiver<Arc<RouteTable>>,
    ) -> Result<Option<Destination>, ProxyError> {
        let grpc_service = method.entity.service_name.as_str();
        let table = routes.borrow_and_update().clone();
        self.trim_connections(&table);
        let Some(service) = table.service_for(grpc_service) else {
            return Err(ProxyError::Unimplemented(format!(
                "no deployed service serves {grpc_service}"
            )));
        };
        if service.ready.is_empty() {
            let name = service.name.clone();
            self.holds.hold(&name, routes).await?;
            return Ok(None);
        }
        let Some(entity_id) = entity_id else {
            let (target, ticket) = self.spread.pick(&service.ready).expect("ready instances");
            return Ok(Some(Destination {
                service: service.name.clone(),
                target,
                version: table.version,
                _ticket: Some(ticket),
            }));
        };
        let shard = shard_of(entity_id, service.shard_count());
        match service.owner(shard).cloned() {
            Some(target) => Ok(Some(Destination {
                service: service.name.clone(),
                target,
                version: table.version,
                _ticket: None,
            })),
            None => {
                self.rerouted(&service.name, "no_owner");
                wait_for_new_routes(routes).await;
                Ok(None)
            }
        }
    }

    /// Once per route version: drops the connections to sidecars the routes no
    /// longer name (instances that stopped, or moved), so a gateway that sees
    /// instances come and go for months holds connections only to live ones.
    /// Only forward: a call still holding an older table never undoes a newer
    /// one's trim.
    fn trim_connections(&self, table: &RouteTable) {
        if table.version <= self.trimmed.load(Ordering::Acquire) {
            return;
        }
        let _trimming = self.trimming.lock().expect("trim lock poisoned");
        if table.version <= self.trimmed.load(Ordering::Acquire) {
            return;
        }
        let named = table.addresses();
        self.forwarder.keep_only(|address| named.contains(address));
        self.trimmed.store(table.version, Ordering::Release);
    }

    fn rerouted(&self, service: &str, reason: &str) {
        self.metrics.reroutes.with_label_values(&[service, reason]).inc();
    }
}

#[async_trait::async_trait]
impl Commands for Gateway {
    async fn unary(&self, call: Call) -> Result<Answer, ProxyError> {
        let path = call.method.request_path();
        let request = Bytes::from(call.payload.value);
        let mut routes = self.routes.clone();
        for _ in 0..MAX_ATTEMPTS {
            let Some(destination) = self
                .destination(&call.method, call.entity_id.as_deref(), &mut routes)
                .await?
            else {
                continue;
            };
            let address = &destination.target.address;
            // Never unbounded: a sidecar that stopped answering (frozen, cut
            // off) costs the caller a 504 after the forward timeout at most.
            let timeout =
                Some(remaining(&call.context)?.map_or(self.forward_timeout, |left| left.min(self.forward_timeout)));
            // The sidecar waits for this version of the routes before it says "not owner".
            let context = CallContext {
                routed_by: destination.version,
                ..call.context
            };
            let headers = outgoing(call.metadata.as_ref(), &context);
            match self
                .forwarder
                .call(address, path.clone(), request.clone(), headers, timeout)
                .await
            {
                Ok((reply, metadata)) => {
                    return Ok(Answer {
                        payload: Any {
                            type_url: call.method.output_type_url().to_string(),
                            value: reply.to_vec(),
                        },
                        metadata: metadata_of(&metadata),
                    })
                }
                // The instance is not reachable at all, so it never saw the call:
                // safe to route it again once the routes change.
                Err(ForwardError::Unreachable(message)) => {
                    tracing::debug!(service = %destination.service, %message, "re-routing");
                    self.rerouted(&destination.service, "unreachable");
                    self.forwarder.forget(address);
                    wait_for_new_routes(&mut routes).await;
                }
                Err(ForwardError::Lost(message)) => {
                    self.forwarder.forget(address);
                    return Err(ForwardError::Lost(message).into());
                }
                Err(ForwardError::Answered(status)) => match ProxyError::from_status(&status) {
                    // The shard moved (or has not arrived yet): re-read the routes.
                    ProxyError::NotOwner(_) => {
                        self.rerouted(&destination.service, "not_owner");
                        wait_for_new_routes(&mut routes).await
                    }
                    other => return Err(other),
                },
            }
        }
        Err(ProxyError::Unavailable(match &call.entity_id {
            Some(entity_id) => {
                format!("the owner of entity {entity_id:?} could not be reached after {MAX_ATTEMPTS} attempts; retry")
            }
            None => format!(
                "no instance of {} could be reached after {MAX_ATTEMPTS} attempts; retry",
                call.method.entity.service_name
            ),
        }))
    }

    async fn streamed(&self, call: StreamedCall) -> Result<Answers, ProxyError> {
        let mut routes = self.routes.clone();
        if !call.method.entity.kind.is_entity() {
            return self.stream_to(call, None, &mut routes).await;
        }
        // An entity's streamed command goes to the entity's owner, found from
        // its one request. Like a unary call, it is asked again when the
        // instance does not own the entity (the routes are changing).
        let call = crate::dispatch::entity_call(call).await?;
        for _ in 0..MAX_ATTEMPTS {
            let payload = call.payload.clone();
            let attempt = StreamedCall {
                method: call.method.clone(),
                requests: futures::stream::once(async move { Ok(payload) }).boxed(),
                metadata: call.metadata.clone(),
                context: call.context,
            };
            match self.stream_to(attempt, call.entity_id.as_deref(), &mut routes).await {
                Err(ProxyError::NotOwner(message)) => {
                    tracing::debug!(%message, "re-routing a streamed entity command");
                    wait_for_new_routes(&mut routes).await;
                }
                other => return other,
            }
        }
        Err(ProxyError::Unavailable(format!(
            "the owner of entity {:?} could not be reached after {MAX_ATTEMPTS} attempts; retry",
            call.entity_id.unwrap_or_default()
        )))
    }
}

impl Gateway {
    /// One attempt at a streamed call, to the instance that serves `entity_id`
    /// (any instance for an action).
    async fn stream_to(
        &self,
        call: StreamedCall,
        entity_id: Option<&str>,
        routes: &mut watch::Receiver<Arc<RouteTable>>,
    ) -> Result<Answers, ProxyError> {
        let StreamedCall {
            method,
            requests,
            metadata,
            context,
        } = call;
        let mut destination = None;
        for _ in 0..MAX_ATTEMPTS {
            destination = self.destination(&method, entity_id, routes).await?;
            if destination.is_some() {
                break;
            }
        }
        let Some(destination) = destination else {
            return Err(ProxyError::Unavailable(format!(
                "no instance of {} could be reached; retry",
                method.entity.service_name
            )));
        };
        // A stream cannot be sent twice, so it gets one attempt. The answers'
        // end (or their reader's leaving) cancels the call.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (requests, refused) = pass_on(requests, stopped);
        let response = self
            .forwarder
            .stream(
                &destination.target.address,
                method.request_path(),
                requests.map(|payload| payload.map(|payload| Bytes::from(payload.value))),
                tonic::metadata::MetadataMap::from_headers(outgoing(metadata.as_ref(), &context)),
                remaining(&context)?,
            )
            .await
            .map_err(ProxyError::from)?;
        let address = destination.target.address.clone();
        let output = method.output_type_url().to_string();
        let answers = response.into_inner().map(move |message| {
            // The instance stays counted while the stream is open.
            let _open = &destination;
            message
                .map(|bytes| {
                    Answer::new(Any {
                        type_url: output.clone(),
                        value: bytes.to_vec(),
                    })
                })
                .map_err(|status| Forwarder::stream_error(&address, status))
        });
        Ok(holding(
            futures::stream::select(answers, refused.map(Err)).boxed(),
            stop,
        ))
    }
}

/// The metadata and context of a call as the headers of a call to an instance.
fn outgoing(metadata: Option<&Metadata>, context: &CallContext) -> http::HeaderMap {
    let mut headers = headers_of(metadata);
    context_headers(context, &mut headers);
    headers
}

/// What is left of the client's deadline; an expired one is an error now.
fn remaining(context: &CallContext) -> Result<Option<Duration>, ProxyError> {
    match context.deadline {
        None => Ok(None),
        Some(deadline) => match deadline.checked_duration_since(tokio::time::Instant::now()) {
            Some(left) if !left.is_zero() => Ok(Some(left)),
            _ => Err(ProxyError::DeadlineExceeded(
                "the request's deadline passed before it reached an instance".into(),
            )),
        },
    }
}

async fn wait_for_new_routes(routes: &mut watch::Receiver<Arc<RouteTable>>) {
    let _ = tokio::time::timeout(ROUTE_PATIENCE, routes.changed()).await;
}

/// Tells the control plane how many requests wait for a service at zero, so it
/// scales the service from zero now, sized by them.
fn poke_through(client: ControlPlaneClient) -> Poke {
    Arc::new(move |service, held| {
        let client = client.clone();
        Box::pin(async move {
            let request = PokeRequest {
                service: service.clone(),
                held,
                ..Default::default()
            };
            match client.poke(request).await {
                Ok(answer) => {
                    let desired = answer.desired_replicas;
                    tracing::info!(%service, held, desired, "poked: scale from zero")
                }
                Err(status) => tracing::warn!(%service, held, error = %status.message(), "poke failed"),
            }
        })
    })
}

/// Asks the control plane for its current routes: the first snapshot of a
/// route watch of its own.
fn current_routes(client: ControlPlaneClient) -> Probe {
    Arc::new(move || {
        let client = client.clone();
        Box::pin(async move {
            let asked = client
                .call("current routes", |mut client| async move {
                    client.watch_routes(WatchRoutesRequest {}).await
                })
                .await;
            match asked {
                Ok(mut stream) => stream.message().await.ok().flatten(),
                Err(status) => {
                    tracing::debug!(error = %status.message(), "cannot ask for the current routes");
                    None
                }
            }
        })
    })
}

/// The methods of every deployed service, for a managed sidecar's forwards and
/// side effects.
pub struct RoutedTargets(pub watch::Receiver<Arc<RouteTable>>);

impl Targets for RoutedTargets {
    fn method(&self, service: &str, method: &str) -> Option<Arc<MethodModel>> {
        Targets::method(self.0.borrow().catalog.as_ref(), service, method)
    }
}

/// The gateway's HTTP service: the ingress router of the current catalog,
/// swapped whenever the deployed services change. A request for a path the
/// routes do not know yet waits for them to catch up first (see [`catchup`]).
#[derive(Clone)]
struct LiveRouter {
    current: Arc<RwLock<Router>>,
    routes: watch::Receiver<Arc<RouteTable>>,
    catchup: Arc<Catchup>,
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
        let wanted = Wanted {
            method: request.method(),
            path: request.uri().path(),
            headers: request.headers(),
        };
        let table = self.routes.borrow();
        // Before the first snapshot the router answers "starting" to everything.
        if table.version == 0 || wanted.known(&table.catalog) {
            drop(table);
            return Box::pin(router.oneshot(request));
        }
        drop(table);
        let (live, mut routes) = (self.clone(), self.routes.clone());
        Box::pin(async move {
            let wanted = Wanted {
                method: request.method(),
                path: request.uri().path(),
                headers: request.headers(),
            };
            let deadline = crate::metadata::context_of(request.headers()).deadline;
            if let Err(error) = live.catchup.wait(&wanted, deadline, &mut routes).await {
                return Ok(match Flavor::of(request.headers()) {
                    Some(flavor) => crate::grpc::error_response(flavor, &error),
                    None => crate::http_json::json_error(&error),
                });
            }
            let router = live.current.read().expect("router lock poisoned").clone();
            router.oneshot(request).await
        })
    }
}

/// Serves the gateway until `shutdown` resolves.
pub async fn run(
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    // Checked before anything is bound, so bad files fail the start.
    let acceptor = config.tls.as_ref().map(strata_tls::acceptor).transpose()?;
    let client = ControlPlaneClient::with_tls(
        &config.control_plane,
        config.token.as_deref(),
        config.control_plane_timeout,
        &config.control_plane_tls,
    )?;
    let metrics = Arc::new(Metrics::new());
    let (routes_tx, routes) = watch::channel(Arc::new(RouteTable::default()));
    let gateway = Arc::new(
        Gateway::with_control_plane(
            routes.clone(),
            metrics.clone(),
            Holds::new(config.hold_capacity, config.hold_timeout, metrics.clone()),
            client.clone(),
        )
        .with_forward_timeout(config.forward_timeout),
    );
    let build = {
        let (gateway, metrics, max_body) = (gateway.clone(), metrics.clone(), config.max_body);
        move |table: &RouteTable| {
            ingress::router(Ingress {
                catalog: table.catalog.clone(),
                commands: gateway.clone(),
                metrics: metrics.clone(),
                max_body,
            })
        }
    };
    // Until the first route snapshot arrives nothing is known: answer 503 (retry
    // shortly), never a misleading 404.
    let starting = Router::new().fallback(|| async {
        crate::http_json::json_error(&ProxyError::Unavailable(
            "the gateway is starting and has no routes yet; retry shortly".into(),
        ))
    });
    let live = LiveRouter {
        current: Arc::new(RwLock::new(starting)),
        routes: routes.clone(),
        catchup: Arc::new(Catchup::new(
            config.hold_capacity,
            config.hold_timeout,
            current_routes(client.clone()),
        )),
    };
    let tasks = Tasks::default();
    let (follower, stopping) = (follow_routes(client, routes_tx, live.clone(), build), tasks.stopping());
    tasks.spawn("route follower", async move {
        tokio::select! {
            () = stopping.wait() => {}
            () = follower => {}
        }
    });

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| GatewayError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(GatewayError::Serve)?;
    let admin_listener = admin::bind(config.admin_listen)
        .await
        .map_err(|source| GatewayError::Listen {
            addr: config.admin_listen,
            source,
        })?;
    let admin_addr = admin_listener.local_addr().map_err(GatewayError::Serve)?;
    // Ready once the first route snapshot is served (before it every request is
    // answered 503), not ready again from the moment it stops.
    let readiness = Readiness::waiting_for(&["the first routes from the control plane"]);
    let (mut first_routes, ready) = (routes.clone(), readiness.clone());
    tasks.spawn("readiness", async move {
        if first_routes.changed().await.is_ok() {
            ready.ready();
        }
    });
    tasks.spawn(
        "admin listener",
        admin::serve(
            admin_listener,
            admin::Admin {
                metrics,
                store: Arc::default(),
                readiness: readiness.clone(),
            },
            tasks.stopping().wait(),
        ),
    );
    let shutdown = async move {
        shutdown.await;
        readiness.draining();
    };
    tracing::info!(%addr, admin = %admin_addr, control_plane = %config.control_plane, tls = acceptor.is_some(), "gateway ready");
    let app = Router::new().fallback_service(live);
    let served = match acceptor {
        None => axum::serve(ingress::without_delay(listener), app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(GatewayError::Serve),
        Some(acceptor) => {
            // Handshakes go on until the tasks stop, just after the server.
            let (listener, accept_loop) =
                strata_tls::listen(listener, acceptor, tasks.stopping().wait()).map_err(GatewayError::Serve)?;
            tasks.spawn("tls accept loop", accept_loop);
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(GatewayError::Serve)
        }
    };
    tasks.stop(crate::sidecar::TASKS_GRACE).await;
    served
}

/// Follows the route watch forever, reconnecting; rebuilds the table on every
/// snapshot and the router when the set of served services changes.
async fn follow_routes(
    client: ControlPlaneClient,
    routes: watch::Sender<Arc<RouteTable>>,
    live: LiveRouter,
    build: impl Fn(&RouteTable) -> Router,
) {
    let mut backoff = Backoff::default();
    let mut first = true;
    loop {
        let watch = client
            .call("watch routes", |mut client| async move {
                client.watch_routes(WatchRoutesRequest {}).await
            })
            .await;
        match watch {
            Ok(mut stream) => {
                backoff.reset();
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
        backoff.wait().await;
    }
}
