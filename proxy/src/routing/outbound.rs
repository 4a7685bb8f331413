//! The outbound half of routing: where a call of a deployed service goes (the
//! owner of its entity's shard, or the ready instance of an action with the
//! fewest calls outstanding), holding it while the service wakes from zero, and
//! passing it on, again after a routing miss while the routes change. The
//! [`Commands`] of the gateway's ingress, and of a managed sidecar's forwards
//! and side effects.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt;
use prost_types::Any;
use strata_proto::cloudstate::Metadata;
use strata_proto::strata::controlplane::v1::PokeRequest;
use tokio::sync::watch;

use super::{
    control_plane::ControlPlaneClient,
    forward::{ForwardError, Forwarder},
    hold::{Holds, Poke},
    routes::{RouteTable, Target},
    spread::{Spread, Ticket},
};
use crate::{
    call::{Answer, Answers, Call, CallContext, Commands, StreamedCall},
    error::ProxyError,
    metadata::{context_headers, headers_of, metadata_of},
    metrics::Metrics,
    model::MethodModel,
    passing::{holding, pass_on},
    shard::shard_of,
    trace,
};
use tracing::Instrument;

/// How often a command may be re-routed (shard moved, owner gone) before the
/// client gets UNAVAILABLE.
const MAX_ATTEMPTS: usize = 6;
/// How long to wait for new routes after a routing miss.
const ROUTE_PATIENCE: Duration = Duration::from_secs(2);

/// How long a unary call passed on may take when the client set no shorter
/// deadline (the gateway's `--forward-timeout` by default): a little over the
/// sidecar's own command deadline, so a slow function is reported by the
/// sidecar that saw it, and only a sidecar that stopped answering by this.
pub const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(65);

/// Routes calls to the instances that serve them; the [`Commands`] of the
/// gateway's ingress, and of a managed sidecar's forwards and side effects.
pub struct Outbound {
    routes: watch::Receiver<Arc<RouteTable>>,
    metrics: Arc<Metrics>,
    forwarder: Forwarder,
    spread: Arc<Spread>,
    holds: Holds,
    forward_timeout: Duration,
    /// The route version whose sidecars the forwarder was last trimmed to.
    trimmed: AtomicU64,
    /// Held while trimming, so trims of two versions never interleave.
    trimming: Mutex<()>,
}

/// Where one call goes, the route version that said so, and (for an action)
/// its count on that instance.
struct Destination {
    service: String,
    target: Target,
    version: u64,
    _ticket: Option<Ticket>,
}

impl Outbound {
    pub(crate) fn new(routes: watch::Receiver<Arc<RouteTable>>, metrics: Arc<Metrics>, holds: Holds) -> Self {
        Self {
            routes,
            metrics,
            forwarder: Forwarder::default(),
            forward_timeout: DEFAULT_FORWARD_TIMEOUT,
            spread: Arc::default(),
            holds,
            trimmed: AtomicU64::new(0),
            trimming: Mutex::new(()),
        }
    }

    /// The same gateway with another limit on unary calls passed on.
    pub(crate) fn with_forward_timeout(mut self, timeout: Duration) -> Self {
        self.forward_timeout = timeout;
        self
    }

    /// A gateway that pokes the control plane through `client` for a service
    /// at zero.
    pub(crate) fn with_control_plane(
        routes: watch::Receiver<Arc<RouteTable>>,
        metrics: Arc<Metrics>,
        holds: Holds,
        client: ControlPlaneClient,
    ) -> Self {
        Self::new(routes, metrics, holds.poking(poke_through(client)))
    }

    /// The instance for a call of `method`: the owner of the entity's shard, or
    /// (for an action) the ready instance with the fewest calls outstanding.
    /// Waits while the service has no ready instance. `Ok(None)`: the routes
    /// changed, look again.
    async fn destination(
        &self,
        method: &MethodModel,
        entity_id: Option<&str>,
        context: &mut CallContext,
        routes: &mut watch::Receiver<Arc<RouteTable>>,
    ) -> Result<Option<Destination>, ProxyError> {
        let grpc_service = method.entity.service_name.as_str();
        let table = routes.borrow_and_update().clone();
        self.trim_connections(&table);
        let Some(service) = table.service_for(grpc_service) else {
            return Err(ProxyError::Unimplemented(format!(
                "no deployed service serves {grpc_service}"
            )));
        };
        if service.ready.is_empty() {
            let name = service.name.clone();
            // The cold start's span lasts as long as the hold. A held call is
            // traced from here on even if it was not sampled: cold starts are
            // rare, and the call the user most wants to see.
            trace::sample_from_here(context);
            let span = trace::leaf(context, || trace::cold_start(&name));
            let held = self.holds.hold(&name, routes).instrument(span.clone()).await;
            trace::outcome(&span, held.as_ref().err());
            held?;
            return Ok(None);
        }
        let Some(entity_id) = entity_id else {
            let targets = service.action_targets(self.spread.draw());
            let (target, ticket) = self.spread.pick(targets).expect("ready instances");
            return Ok(Some(Destination {
                service: service.name.clone(),
                target,
                version: table.version,
                _ticket: Some(ticket),
            }));
        };
        let shard = shard_of(entity_id, service.shard_count());
        match service.owner(shard).cloned() {
            Some(target) => Ok(Some(Destination {
                service: service.name.clone(),
                target,
                version: table.version,
                _ticket: None,
            })),
            None => {
                self.rerouted(&service.name, "no_owner");
                wait_for_new_routes(routes).await;
                Ok(None)
            }
        }
    }

    /// Once per route version: drops the connections to sidecars the routes no
    /// longer name (instances that stopped, or moved), so a gateway that sees
    /// instances come and go for months holds connections only to live ones.
    /// Only forward: a call still holding an older table never undoes a newer
    /// one's trim.
    fn trim_connections(&self, table: &RouteTable) {
        if table.version <= self.trimmed.load(Ordering::Acquire) {
            return;
        }
        let _trimming = self.trimming.lock().expect("trim lock poisoned");
        if table.version <= self.trimmed.load(Ordering::Acquire) {
            return;
        }
        let named = table.addresses();
        self.forwarder.keep_only(|address| named.contains(address));
        self.trimmed.store(table.version, Ordering::Release);
    }

    fn rerouted(&self, service: &str, reason: &str) {
        self.metrics.reroutes.with_label_values(&[service, reason]).inc();
    }
}

#[async_trait::async_trait]
impl Commands for Outbound {
    async fn unary(&self, mut call: Call) -> Result<Answer, ProxyError> {
        let path = call.method.request_path();
        let request = Bytes::from(call.payload.value);
        let mut routes = self.routes.clone();
        for _ in 0..MAX_ATTEMPTS {
            let Some(destination) = self
                .destination(&call.method, call.entity_id.as_deref(), &mut call.context, &mut routes)
                .await?
            else {
                continue;
            };
            let address = &destination.target.address;
            // Never unbounded: a sidecar that stopped answering (frozen, cut
            // off) costs the caller a 504 after the forward timeout at most.
            let timeout =
                Some(remaining(&call.context)?.map_or(self.forward_timeout, |left| left.min(self.forward_timeout)));
            // The sidecar waits for this version of the routes before it says "not owner".
            let context = CallContext {
                routed_by: destination.version,
                ..call.context
            };
            let headers = outgoing(call.metadata.as_ref(), &context);
            match self
                .forwarder
                .call(address, path.clone(), request.clone(), headers, timeout)
                .await
            {
                Ok((reply, metadata)) => {
                    return Ok(Answer {
                        payload: Any {
                            type_url: call.method.output_type_url().to_string(),
                            value: reply.to_vec(),
                        },
                        metadata: metadata_of(&metadata),
                    })
                }
                // The instance is not reachable at all, so it never saw the call:
                // safe to route it again once the routes change.
                Err(ForwardError::Unreachable(message)) => {
                    tracing::debug!(service = %destination.service, %message, "re-routing");
                    self.rerouted(&destination.service, "unreachable");
                    self.forwarder.forget(address);
                    wait_for_new_routes(&mut routes).await;
                }
                Err(ForwardError::Lost(message)) => {
                    self.forwarder.forget(address);
                    return Err(ForwardError::Lost(message).into());
                }
                Err(ForwardError::Answered(status)) => match ProxyError::from_status(&status) {
                    // The shard moved (or has not arrived yet): re-read the routes.
                    ProxyError::NotOwner(_) => {
                        self.rerouted(&destination.service, "not_owner");
                        wait_for_new_routes(&mut routes).await
                    }
                    other => return Err(other),
                },
            }
        }
        Err(ProxyError::Unavailable(match &call.entity_id {
            Some(entity_id) => {
                format!("the owner of entity {entity_id:?} could not be reached after {MAX_ATTEMPTS} attempts; retry")
            }
            None => format!(
                "no instance of {} could be reached after {MAX_ATTEMPTS} attempts; retry",
                call.method.entity.service_name
            ),
        }))
    }

    async fn streamed(&self, call: StreamedCall) -> Result<Answers, ProxyError> {
        let mut routes = self.routes.clone();
        if !call.method.entity.kind.is_entity() {
            return self.stream_to(call, None, &mut routes).await;
        }
        // An entity's streamed command goes to the entity's owner, found from
        // its one request. Like a unary call, it is asked again when the
        // instance does not own the entity (the routes are changing).
        let call = call.into_entity_call().await?;
        for _ in 0..MAX_ATTEMPTS {
            let payload = call.payload.clone();
            let attempt = StreamedCall {
                method: call.method.clone(),
                requests: futures::stream::once(async move { Ok(payload) }).boxed(),
                metadata: call.metadata.clone(),
                context: call.context,
            };
            match self.stream_to(attempt, call.entity_id.as_deref(), &mut routes).await {
                Err(ProxyError::NotOwner(message)) => {
                    tracing::debug!(%message, "re-routing a streamed entity command");
                    wait_for_new_routes(&mut routes).await;
                }
                other => return other,
            }
        }
        Err(ProxyError::Unavailable(format!(
            "the owner of entity {:?} could not be reached after {MAX_ATTEMPTS} attempts; retry",
            call.entity_id.unwrap_or_default()
        )))
    }
}

impl Outbound {
    /// One attempt at a streamed call, to the instance that serves `entity_id`
    /// (any instance for an action).
    async fn stream_to(
        &self,
        call: StreamedCall,
        entity_id: Option<&str>,
        routes: &mut watch::Receiver<Arc<RouteTable>>,
    ) -> Result<Answers, ProxyError> {
        let StreamedCall {
            method,
            requests,
            metadata,
            mut context,
        } = call;
        let mut destination = None;
        for _ in 0..MAX_ATTEMPTS {
            destination = self.destination(&method, entity_id, &mut context, routes).await?;
            if destination.is_some() {
                break;
            }
        }
        let Some(destination) = destination else {
            return Err(ProxyError::Unavailable(format!(
                "no instance of {} could be reached; retry",
                method.entity.service_name
            )));
        };
        // A stream cannot be sent twice, so it gets one attempt. The answers'
        // end (or their reader's leaving) cancels the call.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (requests, refused) = pass_on(requests, stopped);
        let response = self
            .forwarder
            .stream(
                &destination.target.address,
                method.request_path(),
                requests.map(|payload| payload.map(|payload| Bytes::from(payload.value))),
                tonic::metadata::MetadataMap::from_headers(outgoing(metadata.as_ref(), &context)),
                remaining(&context)?,
            )
            .await
            .map_err(ProxyError::from)?;
        let address = destination.target.address.clone();
        let output = method.output_type_url().to_string();
        let answers = response.into_inner().map(move |message| {
            // The instance stays counted while the stream is open.
            let _open = &destination;
            message
                .map(|bytes| {
                    Answer::new(Any {
                        type_url: output.clone(),
                        value: bytes.to_vec(),
                    })
                })
                .map_err(|status| Forwarder::stream_error(&address, status))
        });
        Ok(holding(
            futures::stream::select(answers, refused.map(Err)).boxed(),
            stop,
        ))
    }
}

/// The metadata and context of a call as the headers of a call to an instance.
fn outgoing(metadata: Option<&Metadata>, context: &CallContext) -> http::HeaderMap {
    let mut headers = headers_of(metadata);
    context_headers(context, &mut headers);
    headers
}

/// What is left of the client's deadline; an expired one is an error now.
fn remaining(context: &CallContext) -> Result<Option<Duration>, ProxyError> {
    match context.deadline {
        None => Ok(None),
        Some(deadline) => match deadline.checked_duration_since(tokio::time::Instant::now()) {
            Some(left) if !left.is_zero() => Ok(Some(left)),
            _ => Err(ProxyError::DeadlineExceeded(
                "the request's deadline passed before it reached an instance".into(),
            )),
        },
    }
}

async fn wait_for_new_routes(routes: &mut watch::Receiver<Arc<RouteTable>>) {
    let _ = tokio::time::timeout(ROUTE_PATIENCE, routes.changed()).await;
}

/// Tells the control plane how many requests wait for a service at zero, so it
/// scales the service from zero now, sized by them.
fn poke_through(client: ControlPlaneClient) -> Poke {
    Arc::new(move |service, held| {
        let client = client.clone();
        Box::pin(async move {
            let request = PokeRequest {
                service: service.clone(),
                held,
                ..Default::default()
            };
            match client.poke(request).await {
                Ok(answer) => {
                    let desired = answer.desired_replicas;
                    tracing::info!(%service, held, desired, "poked: scale from zero")
                }
                Err(status) => tracing::warn!(%service, held, error = %status.message(), "poke failed"),
            }
        })
    })
}

#[cfg(test)]
#[path = "outbound_tests.rs"]
mod tests;
