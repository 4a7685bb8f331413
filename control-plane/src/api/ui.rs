//! The dashboard at `/ui/`: the files of `web-ui/dist/`, embedded in the binary at build
//! time. Hashed assets are cached for good, everything else is revalidated; a path that
//! names no file and has no extension is a client-side route and gets `index.html`.
//! Only embedded files are ever served, so no path can reach the disk. Built without
//! the UI (no Node), it serves a page that says how to build it.

use std::borrow::Cow;

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

#[derive(rust_embed::Embed)]
#[folder = "../web-ui/dist/"]
#[exclude = ".gitignore"]
struct Dist;

/// Vite puts content-hashed files here; their names change whenever their content does.
const HASHED_ASSETS: &str = "assets/";
const INDEX: &str = "index.html";

const NOT_BUILT: &str = "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Strata dashboard not built</title></head>
<body style=\"font-family: sans-serif; max-width: 40em; margin: 3em auto\">
<h1>The dashboard was not built into this binary</h1>
<p>This <code>strata</code> was compiled without <code>web-ui/dist/</code>. With Node.js 20 or newer:</p>
<pre>cd web-ui &amp;&amp; npm ci &amp;&amp; npm run build &amp;&amp; cd .. &amp;&amp; cargo build --release --bin strata</pre>
<p>(<code>scripts/dev</code> does this for you.) The REST API is at <a href=\"/api/v1/openapi.json\">/api/v1</a>.</p>
</body></html>
";

pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/ui/") }))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { serve("") }))
        .route(
            "/ui/{*path}",
            get(|Path(path): Path<String>| async move { serve(&path) }),
        )
}

/// Whether the UI's files are in this binary.
pub fn is_built() -> bool {
    Dist::get(INDEX).is_some()
}

fn serve(path: &str) -> Response {
    if path.split('/').any(|segment| segment == ".." || segment == ".") || path.contains('\\') {
        return not_found();
    }
    let path = if path.is_empty() { INDEX } else { path };
    if let Some(file) = Dist::get(path) {
        let cache = if path.starts_with(HASHED_ASSETS) {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        return file_response(file.metadata.mimetype(), cache, file.data);
    }
    let last = path.rsplit('/').next().unwrap_or(path);
    if last.contains('.') {
        // A file that does not exist, not a route of the app.
        return not_found();
    }
    match Dist::get(INDEX) {
        Some(index) => file_response("text/html; charset=utf-8", "no-cache", index.data),
        None => (StatusCode::SERVICE_UNAVAILABLE, Html(NOT_BUILT)).into_response(),
    }
}

fn file_response(content_type: &str, cache: &'static str, body: Cow<'static, [u8]>) -> Response {
    let content_type = match content_type {
        "text/html" => "text/html; charset=utf-8",
        "text/javascript" | "application/javascript" => "text/javascript; charset=utf-8",
        "text/css" => "text/css; charset=utf-8",
        other => other,
    };
    let mut response = body.into_owned().into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such file in the dashboard\n").into_response()
}
