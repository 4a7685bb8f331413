//! `strata-revision` on every response of a sidecar that knows the revision it
//! runs: an HTTP header, and so gRPC (and gRPC-web) initial metadata. A gateway
//! passes it on with the answer, so a client always sees which revision served it.

use axum::{
    http::{HeaderName, HeaderValue},
    response::Response,
    Router,
};

/// The response header naming the revision that served a call.
pub const REVISION_HEADER: HeaderName = HeaderName::from_static("strata-revision");

/// `router` with `strata-revision: revision` on every response (unchanged for
/// revision 0, which a sidecar not started by a runtime has).
pub fn with_revision_header(router: Router, revision: u64) -> Router {
    if revision == 0 {
        return router;
    }
    let value = HeaderValue::from(revision);
    router.layer(axum::middleware::map_response(move |mut response: Response| {
        let value = value.clone();
        async move {
            response.headers_mut().insert(REVISION_HEADER, value);
            response
        }
    }))
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request, routing::get};
    use tower::ServiceExt;

    use super::*;

    async fn served_by(revision: u64) -> Option<String> {
        let router = with_revision_header(Router::new().route("/", get(|| async { "ok" })), revision);
        let response = router
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        response
            .headers()
            .get(REVISION_HEADER)
            .map(|value| value.to_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn every_response_names_the_revision_that_served_it() {
        assert_eq!(served_by(7).await.as_deref(), Some("7"));
        assert_eq!(served_by(0).await, None, "a sidecar that knows no revision says none");
    }
}
