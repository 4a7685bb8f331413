//! The front door of a sidecar or a gateway: one axum router that serves the
//! function's services over gRPC and gRPC-web (unary and streamed), HTTP+JSON
//! (see [`crate::ingress::http_json`]) and gRPC server reflection, and `/metrics`. Decodes
//! requests, reads the call's metadata and context, and hands calls to the
//! [`Commands`] it was built with.

pub mod grpc;
pub mod http_json;
pub mod reflection;
pub mod transcode;

use std::{sync::Arc, time::Instant};

use axum::{
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
    Router,
};
use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use prost_reflect::DynamicMessage;
use prost_types::Any;

use crate::{
    call::{Answer, Call, Commands, Requests, StreamedCall},
    error::{code_name, ProxyError},
    ingress::grpc::{self, Flavor},
    ingress::http_json,
    ingress::reflection,
    metadata::{context_of, headers_of, metadata_of},
    metrics::Metrics,
    model::{Catalog, MethodModel},
};

/// Request bodies (and each message of a stream) larger than this are refused
/// unless configured otherwise.
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Clone)]
pub struct Ingress {
    pub catalog: Arc<Catalog>,
    pub commands: Arc<dyn Commands>,
    pub metrics: Arc<Metrics>,
    pub max_body: usize,
}

/// The whole public router of a sidecar (or a gateway): the users' services
/// and reflection, nothing operational (that is on the admin listener, see
/// [`crate::admin`]), so every path is the user's own.
pub fn router(ingress: Ingress) -> Router {
    reflection::routes(&ingress.catalog)
        .fallback(dispatch)
        .with_state(ingress)
}

async fn dispatch(State(ingress): State<Ingress>, request: Request) -> Response {
    match Flavor::of(request.headers()) {
        Some(flavor) => serve_grpc(&ingress, flavor, request).await,
        None if request.method() == Method::OPTIONS => preflight(request.headers()),
        None => http_json::serve(&ingress, request).await,
    }
}

async fn serve_grpc(ingress: &Ingress, flavor: Flavor, request: Request) -> Response {
    let method = ingress.catalog.method(request.uri().path()).cloned();
    let protocol = if flavor == Flavor::Grpc { "grpc" } else { "grpc-web" };
    let mut measure = Measure::start(&ingress.metrics, method.clone(), protocol);
    let Some(method) = method else {
        let error = ProxyError::Unimplemented(format!("unknown gRPC method {}", request.uri().path()));
        measure.finish(Some(&error));
        return grpc::error_response(flavor, &error);
    };
    if method.is_streamed() {
        return serve_grpc_stream(ingress, flavor, method, request, measure).await;
    }
    let answer = async {
        let metadata = metadata_of(request.headers());
        let context = context_of(request.headers());
        let body = read_body(request.into_body(), ingress.max_body).await?;
        let (payload, message) = decoded(&method, grpc::unary_message(flavor, body)?)?;
        let call = Call::from_message(method.clone(), &message, payload, metadata, context)?;
        let answer = ingress.commands.unary(call).await?;
        check_reply_type(&method, &answer.payload)?;
        Ok::<_, ProxyError>(answer)
    }
    .await;
    measure.finish(answer.as_ref().err());
    match answer {
        Ok(answer) => grpc::ok_response(flavor, &answer.payload.value, headers_of(answer.metadata.as_ref())),
        Err(error) => grpc::error_response(flavor, &error),
    }
}

/// A streamed gRPC call: request messages are passed on as they arrive, answers
/// are sent as they come. The request is measured until the last answer.
async fn serve_grpc_stream(
    ingress: &Ingress,
    flavor: Flavor,
    method: Arc<MethodModel>,
    request: Request,
    mut measure: Measure,
) -> Response {
    let metadata = metadata_of(request.headers());
    let context = context_of(request.headers());
    let input = method.clone();
    let requests: Requests = grpc::request_messages(flavor, request.into_body(), ingress.max_body)
        .map(move |message| message.and_then(|bytes| request_payload(&input, bytes)))
        .boxed();
    let call = StreamedCall {
        method: method.clone(),
        requests,
        metadata,
        context,
    };
    let answers = match ingress.commands.streamed(call).await {
        Ok(answers) => answers,
        Err(error) => {
            measure.finish(Some(&error));
            return grpc::error_response(flavor, &error);
        }
    };
    let messages = measured(one_or_many(&method, answers), measure).map(move |answer| {
        let answer = answer?;
        check_reply_type(&method, &answer.payload)?;
        Ok((Bytes::from(answer.payload.value), headers_of(answer.metadata.as_ref())))
    });
    grpc::stream_response(flavor, messages)
}

/// `answers`, counted by how the stream ends: OK when it ends normally, the
/// first error's code, or CANCELLED when the client leaves first.
pub(crate) fn measured(
    answers: futures::stream::BoxStream<'static, Result<Answer, ProxyError>>,
    mut measure: Measure,
) -> futures::stream::BoxStream<'static, Result<Answer, ProxyError>> {
    answers
        .map(Some)
        .chain(futures::stream::once(async { None }))
        .filter_map(move |answer| {
            match &answer {
                Some(Err(error)) => measure.observe(Some(error)),
                Some(Ok(_)) => {}
                None => measure.observe(None),
            }
            std::future::ready(answer)
        })
        .boxed()
}

/// A client-streamed method answers with exactly one message (the empty one if
/// the function sent no reply); a server-streamed one with any number.
pub(crate) fn one_or_many(
    method: &Arc<MethodModel>,
    answers: crate::call::Answers,
) -> futures::stream::BoxStream<'static, Result<Answer, ProxyError>> {
    if method.descriptor.is_server_streaming() {
        return answers;
    }
    let method = method.clone();
    futures::stream::once(async move {
        let mut answers = answers;
        answers.next().await.unwrap_or_else(|| Ok(Answer::empty(&method)))
    })
    .boxed()
}

/// A request message of `method`, checked against its input type.
pub(crate) fn request_payload(method: &MethodModel, bytes: Bytes) -> Result<Any, ProxyError> {
    Ok(decoded(method, bytes)?.0)
}

/// A request message of `method`: packed, and decoded.
fn decoded(method: &MethodModel, bytes: Bytes) -> Result<(Any, DynamicMessage), ProxyError> {
    let message = DynamicMessage::decode(method.input(), bytes.clone()).map_err(|e| {
        ProxyError::InvalidArgument(format!(
            "the request is not a valid {}: {e}",
            method.input().full_name()
        ))
    })?;
    let payload = Any {
        type_url: method.input_type_url().to_string(),
        value: bytes.to_vec(),
    };
    Ok((payload, message))
}

/// Counts a request in the in-flight gauge and times it until dropped; then
/// counts it by its outcome (CANCELLED if it never finished).
pub(crate) struct Measure {
    metrics: Arc<Metrics>,
    method: Option<Arc<MethodModel>>,
    protocol: &'static str,
    started: Instant,
    code: Option<&'static str>,
}

impl Measure {
    pub(crate) fn start(metrics: &Arc<Metrics>, method: Option<Arc<MethodModel>>, protocol: &'static str) -> Self {
        if let Some(method) = &method {
            metrics
                .in_flight
                .with_label_values(&[method.entity.service_name.as_str()])
                .inc();
        }
        Measure {
            metrics: metrics.clone(),
            method,
            protocol,
            started: Instant::now(),
            code: None,
        }
    }

    /// The request's outcome: OK, or its error's code.
    pub(crate) fn finish(&mut self, error: Option<&ProxyError>) {
        self.code = Some(error.map_or("OK", |e| code_name(e.grpc_code())));
    }

    /// How a stream went: its first error, or (at its end) OK.
    pub(crate) fn observe(&mut self, error: Option<&ProxyError>) {
        if self.code.is_none() {
            self.finish(error);
        }
    }
}

impl Drop for Measure {
    fn drop(&mut self) {
        let (service, name) = self
            .method
            .as_deref()
            .map_or(("", ""), |m| (m.entity.service_name.as_str(), m.name()));
        let code = self.code.unwrap_or("CANCELLED");
        self.metrics
            .requests
            .with_label_values(&[service, name, self.protocol, code])
            .inc();
        if self.method.is_some() {
            self.metrics.in_flight.with_label_values(&[service]).dec();
            self.metrics
                .request_seconds
                .with_label_values(&[service, name])
                .observe(self.started.elapsed().as_secs_f64());
        }
    }
}

/// A reply of another type than the method's output would be decoded as garbage.
pub(crate) fn check_reply_type(method: &MethodModel, reply: &Any) -> Result<(), ProxyError> {
    if reply.type_url.is_empty() {
        return Ok(());
    }
    let name = crate::call::type_name(&reply.type_url);
    if name != method.output().full_name() {
        return Err(ProxyError::Internal(format!(
            "the function replied to {} with a {name}, not a {}",
            method.name(),
            method.output().full_name()
        )));
    }
    Ok(())
}

pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ProxyError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ProxyError::ResourceExhausted(format!(
            "the request body is larger than the limit of {limit} bytes"
        ))),
        Err(_) => Err(ProxyError::InvalidArgument("the request body could not be read".into())),
    }
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

/// An ingress listener whose connections send at once: answers are small and
/// latency-bound, and with Nagle's algorithm meeting the peer's delayed ACKs
/// some would wait 40 ms (the first call on a new connection, after a cold
/// start, always did).
pub fn without_delay(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    fn no_delay(stream: &mut tokio::net::TcpStream) {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
        }
    }
    axum::serve::ListenerExt::tap_io(listener, no_delay as fn(&mut tokio::net::TcpStream))
}
