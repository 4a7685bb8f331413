//! HTTP+JSON calls. The route picks the method and builds its request; a unary
//! answer is one JSON document (or the raw body of a `google.api.HttpBody`) with
//! the reply's metadata as response headers. A server-streamed method answers
//! with Server-Sent Events when the client accepts `text/event-stream`, else with
//! newline-delimited JSON; a client-streamed method reads newline-delimited JSON
//! requests. Errors are `{"error": {"code", "status", "message"}}`.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::Request,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::{stream::BoxStream, StreamExt};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use prost::Message;
use prost_reflect::DynamicMessage;
use prost_types::Any;

use tracing::Instrument;

use crate::{
    call::{Answer, Call, StreamedCall},
    error::ProxyError,
    ingress::arrival::Arrival,
    ingress::exchange::{check_reply_type, measured, one_or_many, read_body, Ingress, Measure},
    ingress::transcode,
    metadata::{context_of, headers_of, metadata_of},
    model::{HttpRoute, MethodModel},
};

pub(crate) async fn serve(ingress: &Ingress, request: Request) -> Response {
    let found = ingress.catalog.route(request.method(), request.uri().path()).ok();
    let mut measure = Measure::start(&ingress.metrics, found.as_ref().map(|(r, _)| r.target.clone()), "http");
    let Some((route, bindings)) = found else {
        let error = ProxyError::NotFound(format!("no route for {} {}", request.method(), request.uri().path()));
        measure.finish(Some(&error));
        return json_error(&error);
    };
    let method = route.target.clone();
    let (parts, body) = request.into_parts();
    let metadata = metadata_of(&parts.headers);
    let mut context = context_of(&parts.headers);
    let mut arrival = Arrival::of(ingress.role, &method, &mut context);
    let span = arrival.span.clone();
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let query = parts.uri.query();
    let requests = async {
        let body = read_body(body, ingress.max_body).await?;
        if method.descriptor.is_client_streaming() {
            // One request message per line.
            body.split(|b| *b == b'\n')
                .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
                .map(|line| encode(route, bindings.clone(), query, line, content_type))
                .collect::<Result<Vec<_>, _>>()
        } else {
            Ok(vec![encode(route, bindings, query, &body, content_type)?])
        }
    }
    .await;
    let requests = match requests {
        Ok(requests) => requests,
        Err(error) => {
            measure.finish(Some(&error));
            return json_error(&error);
        }
    };
    if !method.is_streamed() {
        let answer = async {
            let (message, payload) = requests.into_iter().next().expect("one request for a unary method");
            let call = Call::from_message(method.clone(), &message, payload, metadata, context)?;
            if let Some(entity_id) = &call.entity_id {
                arrival.entity(entity_id);
            }
            let answer = ingress.commands.unary(call).instrument(span.clone()).await?;
            document(route, &method, answer)
        }
        .await;
        arrival.finish(answer.as_ref().err());
        measure.finish(answer.as_ref().err());
        return answer.unwrap_or_else(|error| json_error(&error));
    }
    let call = StreamedCall {
        method: method.clone(),
        requests: futures::stream::iter(requests.into_iter().map(|(_, payload)| Ok(payload))).boxed(),
        metadata,
        context,
    };
    let answers = match ingress.commands.streamed(call).instrument(span.clone()).await {
        Ok(answers) => one_or_many(&method, answers),
        Err(error) => {
            arrival.finish(Some(&error));
            measure.finish(Some(&error));
            return json_error(&error);
        }
    };
    if !method.descriptor.is_server_streaming() {
        let mut answers = answers;
        let answer = match answers.next().await {
            Some(answer) => answer.and_then(|answer| document(route, &method, answer)),
            None => Err(ProxyError::Internal("the call ended without an answer".into())),
        };
        measure.finish(answer.as_ref().err());
        return answer.unwrap_or_else(|error| json_error(&error));
    }
    let events = accepts_event_stream(&parts.headers);
    stream(route, method, answers, events, measure).await
}

/// The request message for one body (or one line of a streamed body), and its
/// encoding.
fn encode(
    route: &HttpRoute,
    bindings: Vec<crate::path_template::Binding>,
    query: Option<&str>,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<(DynamicMessage, Any), ProxyError> {
    let message = transcode::request_message(route, bindings, query, body, content_type)?;
    let payload = Any {
        type_url: route.target.input_type_url().to_string(),
        value: message.encode_to_vec(),
    };
    Ok((message, payload))
}

/// A reply as one HTTP answer, with its metadata as headers.
fn document(route: &HttpRoute, method: &MethodModel, answer: Answer) -> Result<Response, ProxyError> {
    let (content_type, body) = render(route, method, &answer.payload)?;
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let metadata = headers_of(answer.metadata.as_ref());
    for (name, value) in &metadata {
        response.headers_mut().append(name, value.clone());
    }
    Ok(response)
}

/// A reply's content type and bytes.
fn render(route: &HttpRoute, method: &MethodModel, payload: &Any) -> Result<(String, Vec<u8>), ProxyError> {
    check_reply_type(method, payload)?;
    let reply = DynamicMessage::decode(method.output(), payload.value.as_slice()).map_err(|e| {
        ProxyError::Internal(format!(
            "the function's reply is not a valid {}: {e}",
            method.output().full_name()
        ))
    })?;
    transcode::response_document(route, &reply)
}

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// A server stream: Server-Sent Events (`data: <json>` per message, `event:
/// error` for a failure) or newline-delimited JSON (a failure is a last
/// `{"error": ...}` line). An error before the first message is an ordinary
/// error answer with its status.
async fn stream(
    route: &HttpRoute,
    method: Arc<MethodModel>,
    mut answers: BoxStream<'static, Result<Answer, ProxyError>>,
    events: bool,
    mut measure: Measure,
) -> Response {
    let route = route.clone();
    let first = match answers.next().await {
        Some(Err(error)) => {
            measure.finish(Some(&error));
            return json_error(&error);
        }
        first => first,
    };
    let answers = measured(futures::stream::iter(first).chain(answers).boxed(), measure);
    // Each answer is one event or line; nothing follows an error.
    let lines = answers.scan(false, move |stopped, answer| {
        if *stopped {
            return std::future::ready(None);
        }
        let line = answer.and_then(|answer| Ok(render(&route, &method, &answer.payload)?.1));
        *stopped = line.is_err();
        let bytes = match (line, events) {
            (Ok(json), true) => [b"data: ".as_slice(), &json, b"\n\n"].concat(),
            (Ok(json), false) => [json.as_slice(), b"\n"].concat(),
            (Err(error), true) => format!("event: error\ndata: {}\n\n", error.json_body()).into_bytes(),
            (Err(error), false) => format!("{}\n", error.json_body()).into_bytes(),
        };
        std::future::ready(Some(Ok::<_, std::convert::Infallible>(Bytes::from(bytes))))
    });
    let content_type = if events {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(lines))
        .expect("valid response")
}

/// An error as a JSON answer with its HTTP status.
pub(crate) fn json_error(error: &ProxyError) -> Response {
    let mut response = (
        error.http_status(),
        [(header::CONTENT_TYPE, "application/json")],
        error.json_body().to_string(),
    )
        .into_response();
    if error.retry_later() {
        // Every 503 and 429 here is worth retrying shortly: the function or the
        // instance is coming (back), or a queue is full.
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
