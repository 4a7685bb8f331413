//! The admin listener of a sidecar or a gateway: Prometheus metrics and health
//! checks on a port of their own, so the port that serves users carries only
//! their services (and a user's own `GET /metrics` route is theirs). It serves
//! from the process's first moment, so a kubelet can tell a process that starts
//! slowly from one that hangs. Owns the routes and the listener; the metrics
//! live in [`crate::metrics`], the readiness in [`crate::readiness`].

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use axum::{extract::State, response::IntoResponse, routing::get, Router};
use http::{header, StatusCode};
use strata_store::Store;
use tokio::net::TcpListener;

use crate::{metrics::Metrics, readiness::Readiness};

/// What the admin routes read.
#[derive(Clone)]
pub struct Admin {
    pub metrics: Arc<Metrics>,
    /// The store whose group-commit counters `/metrics` reports, once it is open.
    pub store: Arc<OnceLock<Arc<dyn Store>>>,
    pub readiness: Readiness,
}

/// `GET /metrics` (Prometheus text), `GET /healthz` (200 while the process
/// serves: liveness) and `GET /readyz` (200 while it should get traffic, else
/// 503 saying why: readiness).
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(admin)
}

async fn render_metrics(State(admin): State<Admin>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        admin.metrics.render(admin.store.get().map(|store| store.as_ref())),
    )
}

async fn ready(State(admin): State<Admin>) -> (StatusCode, String) {
    let stage = admin.readiness.stage();
    let status = if admin.readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, stage.reason())
}

/// Binds the admin listener (port 0: any free port; the caller reads which).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the admin routes on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, admin: Admin, shutdown: impl Future<Output = ()> + Send + 'static) {
    let addr = listener.local_addr().ok();
    if let Err(error) = axum::serve(listener, router(admin))
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(?addr, %error, "the admin listener failed");
    }
}

/// `host:port` for peers to reach a listener bound to `bound`, on the host
/// of `advertised` (the instance's public `host:port`).
pub fn advertised_beside(advertised: &str, bound: SocketAddr) -> String {
    let host = advertised.rsplit_once(':').map_or(advertised, |(host, _)| host);
    format!("{host}:{}", bound.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn get(app: &Router, path: &str) -> (StatusCode, String) {
        let response = app
            .clone()
            .oneshot(http::Request::get(path).body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readiness_is_503_with_the_reason_until_ready_and_again_while_draining() {
        let readiness = Readiness::waiting_for(&["the store"]);
        let app = router(Admin {
            metrics: Arc::new(Metrics::new()),
            store: Arc::default(),
            readiness: readiness.clone(),
        });
        assert_eq!(
            get(&app, "/readyz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "starting: waiting for the store".into()
            )
        );
        assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK, "alive while it starts");
        readiness.done("the store");
        readiness.ready();
        assert_eq!(get(&app, "/readyz").await, (StatusCode::OK, "ready".into()));
        readiness.draining();
        assert_eq!(get(&app, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK, "alive while it drains");
    }

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let app = router(Admin {
            metrics: Arc::new(Metrics::new()),
            store: Arc::default(),
            readiness: Readiness::waiting_for(&[]),
        });
        let metrics = app
            .clone()
            .oneshot(http::Request::get("/metrics").body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(metrics.status(), 200);
        let body = http_body_util::BodyExt::collect(metrics.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("strata_entities_active"));
        let health = app
            .oneshot(http::Request::get("/healthz").body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
    }

    #[test]
    fn the_admin_address_is_on_the_advertised_host() {
        let bound: SocketAddr = "0.0.0.0:9101".parse().unwrap();
        assert_eq!(advertised_beside("10.0.0.7:9000", bound), "10.0.0.7:9101");
        assert_eq!(advertised_beside("[::1]:9000", bound), "[::1]:9101");
    }
}
