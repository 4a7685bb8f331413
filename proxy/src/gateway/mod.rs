//! The gateway role: the edge of a deployment. It follows the control plane's
//! route watch, serves every deployed service (gRPC, gRPC-web, HTTP+JSON) with the
//! same ingress as a sidecar, and passes each call on: an entity's command to the
//! sidecar that owns its shard, an action's call to the ready instance with the
//! fewest calls outstanding. Requests for a service with no ready instance are
//! held while it scales from zero. The routing itself is `routing`'s (a managed
//! sidecar routes its function's forwards and side effects the same way); this
//! module owns the edge: the live router over the deployed services, the wait
//! for routes a request is early for, and the gateway's process.

mod catchup;

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, extract::Request, response::Response, Router};
use futures::future::BoxFuture;
use strata_tasks::Tasks;
use strata_tls::{ClientTls, TlsFiles};
use tokio::{net::TcpListener, sync::watch};
use tower::{Service, ServiceExt};

use self::catchup::{Catchup, Probe, Wanted};
pub use crate::routing::outbound::DEFAULT_FORWARD_TIMEOUT;
use crate::{
    admin,
    error::ProxyError,
    ingress::{self, grpc::Flavor, http_json::json_error, Ingress},
    metadata::context_of,
    metrics::Metrics,
    readiness::Readiness,
    routing::{
        control_plane::{ControlPlaneClient, ControlPlaneError},
        hold::Holds,
        outbound::Outbound,
        route_watch,
        routes::RouteTable,
    },
    trace::Role,
};

/// How long a stopping gateway waits for its background tasks (admin
/// listener, route follower) before aborting them.
const TASKS_GRACE: Duration = Duration::from_secs(5);

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

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    ControlPlane(#[from] ControlPlaneError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("--tls-cert/--tls-key: {0}")]
    Tls(#[from] strata_tls::TlsError),
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
}

/// Asks the control plane for its current routes: the first snapshot of a
/// route watch of its own.
fn current_routes(client: ControlPlaneClient) -> Probe {
    Arc::new(move || {
        let client = client.clone();
        Box::pin(async move {
            match client.watch_routes("current routes").await {
                Ok(mut stream) => stream.message().await.ok().flatten(),
                Err(status) => {
                    tracing::debug!(error = %status.message(), "cannot ask for the current routes");
                    None
                }
            }
        })
    })
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
            let deadline = context_of(request.headers()).deadline;
            if let Err(error) = live.catchup.wait(&wanted, deadline, &mut routes).await {
                return Ok(match Flavor::of(request.headers()) {
                    Some(flavor) => ingress::grpc::error_response(flavor, &error),
                    None => json_error(&error),
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
    let outbound = Arc::new(
        Outbound::with_control_plane(
            routes.clone(),
            metrics.clone(),
            Holds::new(config.hold_capacity, config.hold_timeout, metrics.clone()),
            client.clone(),
        )
        .with_forward_timeout(config.forward_timeout),
    );
    let build = {
        let (outbound, metrics, max_body) = (outbound.clone(), metrics.clone(), config.max_body);
        move |table: &RouteTable| {
            ingress::router(Ingress {
                role: Role::Gateway,
                catalog: table.catalog.clone(),
                commands: outbound.clone(),
                metrics: metrics.clone(),
                max_body,
            })
        }
    };
    // Until the first route snapshot arrives nothing is known: answer 503 (retry
    // shortly), never a misleading 404.
    let starting = Router::new().fallback(|| async {
        json_error(&ProxyError::Unavailable(
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
    tasks.stop(TASKS_GRACE).await;
    served
}

/// Follows the route watch forever (see [`route_watch`]); rebuilds the table on
/// every snapshot and the router when the set of served services changes.
async fn follow_routes(
    client: ControlPlaneClient,
    routes: watch::Sender<Arc<RouteTable>>,
    live: LiveRouter,
    build: impl Fn(&RouteTable) -> Router,
) {
    let mut first = true;
    route_watch::follow(&client, |snapshot| {
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
    })
    .await
}
