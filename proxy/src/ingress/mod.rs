//! The front door of a sidecar or a gateway: one axum router that serves the
//! function's services over gRPC and gRPC-web (unary and streamed, framed by
//! [`grpc`]), HTTP+JSON (see [`http_json`], [`transcode`]) and gRPC server
//! reflection ([`reflection`]). Decodes requests, reads the call's metadata and
//! context, and hands calls to the [`crate::call::Commands`] it was built with;
//! what every protocol shares for one call is [`exchange`]'s.

mod arrival;
mod exchange;
pub(crate) mod grpc;
pub(crate) mod http_json;
mod reflection;
pub(crate) mod transcode;

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Request, State},
    response::{IntoResponse, Response},
    Router,
};
use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderMap, Method, StatusCode};

pub(crate) use self::exchange::{Ingress, Measure};
use self::{
    arrival::Arrival,
    exchange::{check_reply_type, decoded, measured, one_or_many, read_body, request_payload},
    grpc::Flavor,
};
use tracing::Instrument;

use crate::{
    call::{Call, Requests, StreamedCall},
    error::ProxyError,
    metadata::{context_of, headers_of, metadata_of},
    model::MethodModel,
};

/// Request bodies (and each message of a stream) larger than this are refused
/// unless configured otherwise.
pub const DEFAULT_MAX_BODY: usize = 4 * 1024 * 1024;

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
    let metadata = metadata_of(request.headers());
    let mut context = context_of(request.headers());
    let mut arrival = Arrival::of(ingress.role, &method, &mut context);
    let span = arrival.span.clone();
    let answer = async {
        let body = read_body(request.into_body(), ingress.max_body).await?;
        let (payload, message) = decoded(&method, grpc::unary_message(flavor, body)?)?;
        let call = Call::from_message(method.clone(), &message, payload, metadata, context)?;
        if let Some(entity_id) = &call.entity_id {
            arrival.entity(entity_id);
        }
        let answer = ingress.commands.unary(call).instrument(span).await?;
        check_reply_type(&method, &answer.payload)?;
        Ok::<_, ProxyError>(answer)
    }
    .await;
    arrival.finish(answer.as_ref().err());
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
    let mut context = context_of(request.headers());
    let arrival = Arrival::of(ingress.role, &method, &mut context);
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
    let answers = match ingress.commands.streamed(call).instrument(arrival.span.clone()).await {
        Ok(answers) => answers,
        Err(error) => {
            arrival.finish(Some(&error));
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
