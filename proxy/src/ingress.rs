//! The sidecar's front door: one axum router that serves the function's services
//! over gRPC, gRPC-web and HTTP+JSON, plus gRPC server reflection. Decodes the
//! request, finds the entity key, and hands the command to [`Entities`].

use std::{sync::Arc, time::Instant};

use axum::{
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
    Router,
};
use bytes::Bytes;
use http::{header, HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use prost::Message;
use prost_reflect::DynamicMessage;
use prost_types::Any;
use strata_proto::cloudstate::{metadata_entry, Metadata, MetadataEntry};

use strata_store::Store;

use crate::{
    entity::Entities,
    error::{code_name, ProxyError},
    grpc::{self, Flavor},
    metrics::Metrics,
    model::{Catalog, MethodModel},
    transcode,
};

/// Request bodies larger than this are refused unless configured otherwise.
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

/// Where decoded commands go: the entity actors of a sidecar, or (in a gateway)
/// the sidecar that owns the entity.
#[async_trait::async_trait]
pub trait Commands: Send + Sync + 'static {
    /// Runs one command and returns the reply payload once any state it produced
    /// is durable.
    async fn run(
        &self,
        method: Arc<MethodModel>,
        entity_id: String,
        payload: Any,
        metadata: Option<Metadata>,
    ) -> Result<Any, ProxyError>;
}

#[async_trait::async_trait]
impl Commands for Entities {
    async fn run(
        &self,
        method: Arc<MethodModel>,
        entity_id: String,
        payload: Any,
        metadata: Option<Metadata>,
    ) -> Result<Any, ProxyError> {
        self.handle(method, entity_id, payload, metadata).await
    }
}

#[derive(Clone)]
pub struct Ingress {
    pub catalog: Arc<Catalog>,
    pub commands: Arc<dyn Commands>,
    pub metrics: Arc<Metrics>,
    /// The store whose group-commit counters `/metrics` reports, if any.
    pub store: Option<Arc<dyn Store>>,
    pub max_body: usize,
}

/// The whole public router of a sidecar.
pub fn router(ingress: Ingress) -> Router {
    let reflection = || {
        let mut builder = tonic_reflection::server::Builder::configure();
        for model in ingress.catalog.models() {
            builder = builder.register_encoded_file_descriptor_set(&model.descriptor_set);
            for service in model.service_names() {
                builder = builder.with_service_name(service);
            }
        }
        builder
    };
    let mut router = Router::new();
    match (reflection().build_v1(), reflection().build_v1alpha()) {
        (Ok(v1), Ok(v1alpha)) => {
            router = router
                .route_service("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", v1)
                .route_service(
                    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                    v1alpha,
                );
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "gRPC reflection is off: the descriptors are incomplete")
        }
    }
    router
        .route("/metrics", axum::routing::get(render_metrics))
        .fallback(dispatch)
        .with_state(ingress)
}

async fn render_metrics(State(ingress): State<Ingress>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ingress.metrics.render(ingress.store.as_deref()),
    )
        .into_response()
}

async fn dispatch(State(ingress): State<Ingress>, request: Request) -> Response {
    match Flavor::of(request.headers()) {
        Some(flavor) => serve_grpc(&ingress, flavor, request).await,
        None if request.method() == Method::OPTIONS => preflight(request.headers()),
        None => serve_http(&ingress, request).await,
    }
}

async fn serve_grpc(ingress: &Ingress, flavor: Flavor, request: Request) -> Response {
    let method = ingress.catalog.method(request.uri().path()).cloned();
    let _measure = method.as_ref().map(|m| Measure::start(ingress, m));
    let protocol = if flavor == Flavor::Grpc { "grpc" } else { "grpc-web" };
    let answer = async {
        let method = method
            .clone()
            .ok_or_else(|| ProxyError::Unimplemented(format!("unknown gRPC method {}", request.uri().path())))?;
        let metadata = metadata_of(request.headers());
        let body = read_body(request.into_body(), ingress.max_body).await?;
        let bytes = grpc::unary_message(flavor, body)?;
        let message = DynamicMessage::decode(method.input(), bytes.clone()).map_err(|e| {
            ProxyError::InvalidArgument(format!(
                "the request is not a valid {}: {e}",
                method.input().full_name()
            ))
        })?;
        let reply = run_command(ingress, &method, &message, bytes, metadata).await?;
        check_reply_type(&method, &reply)?;
        Ok::<_, ProxyError>(reply.value)
    }
    .await;
    count(ingress, method.as_deref(), protocol, answer.as_ref().err());
    match answer {
        Ok(bytes) => grpc::ok_response(flavor, &bytes),
        Err(error) => grpc::error_response(flavor, &error),
    }
}

async fn serve_http(ingress: &Ingress, request: Request) -> Response {
    let route = ingress.catalog.route(request.method(), request.uri().path()).ok();
    let method = route.as_ref().map(|(r, _)| r.target.clone());
    let _measure = method.as_ref().map(|m| Measure::start(ingress, m));
    let answer = answer_http(ingress, request).await;
    count(ingress, method.as_deref(), "http", answer.as_ref().err());
    answer.unwrap_or_else(|e| json_error(&e))
}

async fn answer_http(ingress: &Ingress, request: Request) -> Result<Response, ProxyError> {
    let (route, bindings) = ingress
        .catalog
        .route(request.method(), request.uri().path())
        .map_err(|_| ProxyError::NotFound(format!("no route for {} {}", request.method(), request.uri().path())))?;
    let query = request.uri().query().map(str::to_string);
    let metadata = metadata_of(request.headers());
    let body = read_body(request.into_body(), ingress.max_body).await?;
    let message = transcode::request_message(route, bindings, query.as_deref(), &body)?;
    let method = route.target.clone();
    let reply = run_command(
        ingress,
        &method,
        &message,
        Bytes::from(message.encode_to_vec()),
        metadata,
    )
    .await?;
    check_reply_type(&method, &reply)?;
    let reply = DynamicMessage::decode(method.output(), reply.value.as_slice()).map_err(|e| {
        ProxyError::Internal(format!(
            "the function's reply is not a valid {}: {e}",
            method.output().full_name()
        ))
    })?;
    let json = transcode::response_json(route, &reply)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// Keeps a request in the in-flight gauge and times it, until dropped.
struct Measure<'a> {
    ingress: &'a Ingress,
    method: Arc<MethodModel>,
    started: Instant,
}

impl<'a> Measure<'a> {
    fn start(ingress: &'a Ingress, method: &Arc<MethodModel>) -> Self {
        ingress
            .metrics
            .in_flight
            .with_label_values(&[method.entity.service_name.as_str()])
            .inc();
        Measure {
            ingress,
            method: method.clone(),
            started: Instant::now(),
        }
    }
}

impl Drop for Measure<'_> {
    fn drop(&mut self) {
        let service = self.method.entity.service_name.as_str();
        let metrics = &self.ingress.metrics;
        metrics.in_flight.with_label_values(&[service]).dec();
        metrics
            .request_seconds
            .with_label_values(&[service, self.method.name()])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

fn count(ingress: &Ingress, method: Option<&MethodModel>, protocol: &str, error: Option<&ProxyError>) {
    let (service, name) = method.map_or(("", ""), |m| (m.entity.service_name.as_str(), m.name()));
    let code = error.map_or("OK", |e| code_name(e.grpc_code()));
    ingress
        .metrics
        .requests
        .with_label_values(&[service, name, protocol, code])
        .inc();
}

async fn run_command(
    ingress: &Ingress,
    method: &Arc<MethodModel>,
    message: &DynamicMessage,
    encoded: Bytes,
    metadata: Option<Metadata>,
) -> Result<Any, ProxyError> {
    let entity_id = method.entity_id(message).map_err(ProxyError::InvalidArgument)?;
    let payload = Any {
        type_url: format!("type.googleapis.com/{}", method.input().full_name()),
        value: encoded.to_vec(),
    };
    ingress.commands.run(method.clone(), entity_id, payload, metadata).await
}

/// A reply of another type than the method's output would be decoded as garbage.
fn check_reply_type(method: &MethodModel, reply: &Any) -> Result<(), ProxyError> {
    if reply.type_url.is_empty() {
        return Ok(());
    }
    let name = reply.type_url.rsplit('/').next().unwrap_or_default();
    if name != method.output().full_name() {
        return Err(ProxyError::Internal(format!(
            "the function replied to {} with a {name}, not a {}",
            method.name(),
            method.output().full_name()
        )));
    }
    Ok(())
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ProxyError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ProxyError::ResourceExhausted(format!(
            "the request body is larger than the limit of {limit} bytes"
        ))),
        Err(_) => Err(ProxyError::InvalidArgument("the request body could not be read".into())),
    }
}

/// Request headers become command metadata, as CloudState's proxy does; the
/// transport's own headers are left out.
fn metadata_of(headers: &HeaderMap) -> Option<Metadata> {
    let entries: Vec<MetadataEntry> = headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            !(name.starts_with("grpc-")
                || matches!(
                    name,
                    "content-type" | "content-length" | "te" | "host" | "user-agent" | "accept" | "connection"
                ))
        })
        .filter_map(|(name, value)| {
            Some(MetadataEntry {
                key: name.as_str().to_string(),
                value: Some(metadata_entry::Value::StringValue(value.to_str().ok()?.to_string())),
            })
        })
        .collect();
    (!entries.is_empty()).then_some(Metadata { entries })
}

fn preflight(headers: &HeaderMap) -> Response {
    let wants_grpc_web = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("x-grpc-web") || v.contains("content-type"));
    if !wants_grpc_web {
        return StatusCode::NO_CONTENT.into_response();
    }
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .header(header::ACCESS_CONTROL_ALLOW_METHODS, "POST, GET, OPTIONS")
        .header(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "content-type, x-grpc-web, x-user-agent, grpc-timeout, authorization",
        )
        .header(header::ACCESS_CONTROL_MAX_AGE, "86400")
        .body(Body::empty())
        .expect("valid response")
}

fn json_error(error: &ProxyError) -> Response {
    let mut response = (
        error.http_status(),
        [(header::CONTENT_TYPE, "application/json")],
        error.json_body().to_string(),
    )
        .into_response();
    if matches!(error, ProxyError::Unavailable(_)) {
        // Every 503 here is worth retrying shortly: the function or the instance
        // is coming (back), or a queue is full.
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    }
    response
}
