//! The admin listener of a sidecar or a gateway: Prometheus metrics and health
//! checks on a port of their own, so the port that serves users carries only
//! their services (and a user's own `GET /metrics` route is theirs). Owns the
//! routes and the listener; the metrics themselves live in [`crate::metrics`].

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{extract::State, response::IntoResponse, routing::get, Router};
use http::header;
use strata_store::Store;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// What the admin routes read.
#[derive(Clone)]
pub struct Admin {
    pub metrics: Arc<Metrics>,
    /// The store whose group-commit counters `/metrics` reports, if any.
    pub store: Option<Arc<dyn Store>>,
}

/// `GET /metrics` (Prometheus text) and `GET /healthz` (200 while the process
/// serves).
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(admin)
}

async fn render_metrics(State(admin): State<Admin>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        admin.metrics.render(admin.store.as_deref()),
    )
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

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let app = router(Admin {
            metrics: Arc::new(Metrics::new()),
            store: None,
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
