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
    serve_from(path, |name| {
        Dist::get(name).map(|file| (file.metadata.mimetype().to_owned(), file.data))
    })
}

/// A file of the dashboard: its content type and its bytes.
type File = (String, Cow<'static, [u8]>);

/// Answers `path` from the files `lookup` finds (the embedded ones, in production).
fn serve_from(path: &str, lookup: impl Fn(&str) -> Option<File>) -> Response {
    if path.split('/').any(|segment| segment == ".." || segment == ".") || path.contains('\\') {
        return not_found();
    }
    let path = if path.is_empty() { INDEX } else { path };
    if let Some((content_type, data)) = lookup(path) {
        let cache = if path.starts_with(HASHED_ASSETS) {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        return file_response(&content_type, cache, data);
    }
    let last = path.rsplit('/').next().unwrap_or(path);
    if last.contains('.') && path != INDEX {
        // A file that does not exist, not a route of the app.
        return not_found();
    }
    match lookup(INDEX) {
        Some((_, index)) => file_response("text/html; charset=utf-8", "no-cache", index),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Built without Node: the front page and every client-side route say how to
    /// build the dashboard (it answered 404 "no such file" at `/ui/`); a missing
    /// file is still 404.
    #[test]
    fn without_the_ui_its_pages_say_how_to_build_it() {
        for path in ["", "index.html", "services/cart"] {
            let reply = serve_from(path, |_| None);
            assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE, "{path:?}");
        }
        for path in ["app.js", "assets/index-1234.css", "../Cargo.toml"] {
            assert_eq!(serve_from(path, |_| None).status(), StatusCode::NOT_FOUND, "{path:?}");
        }
    }

    #[test]
    fn with_the_ui_routes_get_the_index_and_files_their_type() {
        let lookup = |name: &str| match name {
            "index.html" => Some(("text/html".to_owned(), Cow::Borrowed(&b"<html>"[..]))),
            "assets/app-1.js" => Some(("text/javascript".to_owned(), Cow::Borrowed(&b"x"[..]))),
            _ => None,
        };
        let route = serve_from("services/cart", lookup);
        assert_eq!(route.status(), StatusCode::OK);
        assert_eq!(route.headers()[header::CACHE_CONTROL], "no-cache");
        let asset = serve_from("assets/app-1.js", lookup);
        assert_eq!(asset.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(
            asset.headers()[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(serve_from("missing.js", lookup).status(), StatusCode::NOT_FOUND);
    }
}
