//! What every protocol of the ingress shares for one call: the [`Ingress`] it
//! serves with, reading a request body within the limit, decoding a request
//! message, checking a reply's type, a stream's single or many answers, and
//! measuring a request from its start to its outcome. Knows no protocol's
//! framing; `grpc`, `http_json` and `reflection` use it.

use std::{sync::Arc, time::Instant};

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Limited};
use prost_reflect::DynamicMessage;
use prost_types::Any;

use crate::{
    call::{type_name, Answer, Answers, Commands},
    error::{code_name, ProxyError},
    metrics::Metrics,
    model::{Catalog, MethodModel},
    trace::Role,
};

/// What an ingress serves with: whose it is (for its spans), the services it
/// knows, where their calls go, its metrics, and the largest request body (or
/// stream message) it takes.
#[derive(Clone)]
pub struct Ingress {
    pub role: Role,
    pub catalog: Arc<Catalog>,
    pub commands: Arc<dyn Commands>,
    pub metrics: Arc<Metrics>,
    pub max_body: usize,
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
    answers: Answers,
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
pub(crate) fn decoded(method: &MethodModel, bytes: Bytes) -> Result<(Any, DynamicMessage), ProxyError> {
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
    let name = type_name(&reply.type_url);
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
