//! One call's arrival at an ingress, as traced: the head decision (is this call
//! traced?), its server span when it is, and when it is not, what its record
//! needs should it fail or be among the slowest (`strata_telemetry`'s
//! `record.rs`). A call is at its ingress at the gateway, or at a sidecar when
//! no gateway routed it and no other Strata process forwarded it.

use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};

use strata_telemetry::{fresh_span_id, head_decision, makes_spans, TraceParent, UnsampledCall};

use crate::{
    call::CallContext,
    error::ProxyError,
    model::MethodModel,
    trace::{self, Role},
};

/// A call's arrival: its span (none when it is not sampled) and, for an
/// unsampled call at its ingress with a trace store to tell, what its record
/// needs.
pub(crate) struct Arrival {
    pub span: tracing::Span,
    unsampled: Option<Unsampled>,
}

struct Unsampled {
    trace: TraceParent,
    parent: Option<[u8; 8]>,
    start: SystemTime,
    started: Instant,
    role: Role,
    method: Arc<MethodModel>,
    entity_id: Option<String>,
}

impl Arrival {
    /// Decides whether the call in `context` is traced (at its ingress), and
    /// makes its span if it is.
    pub fn of(role: Role, method: &Arc<MethodModel>, context: &mut CallContext) -> Arrival {
        let ingress = role == Role::Gateway || (context.hops == 0 && context.routed_by == 0);
        let client = context.trace;
        context.trace = head_decision(context.trace, ingress);
        let unsampled = match &mut context.trace {
            Some(trace) if ingress && !makes_spans(Some(trace)) && strata_telemetry::records_unsampled() => {
                // The record's own span id goes on as the parent, under the
                // client's span (a fresh context has one already).
                let parent = client.map(|client| client.parent_id);
                if parent.is_some() {
                    trace.parent_id = fresh_span_id();
                }
                Some(Unsampled {
                    trace: *trace,
                    parent,
                    start: SystemTime::now(),
                    started: Instant::now(),
                    role,
                    method: method.clone(),
                    entity_id: None,
                })
            }
            _ => None,
        };
        let span = trace::step(context, || trace::arrival(role, method));
        Arrival { span, unsampled }
    }

    /// The entity the call is for.
    pub fn entity(&mut self, entity_id: &str) {
        self.span.record("strata.entity_id", entity_id);
        if let Some(unsampled) = &mut self.unsampled {
            unsampled.entity_id = Some(entity_id.to_string());
        }
    }

    /// The call's outcome: on its span, or, for an unsampled call that failed
    /// or was slow, in its record.
    pub fn finish(self, error: Option<&ProxyError>) {
        trace::outcome(&self.span, error);
        let Some(call) = self.unsampled else {
            return;
        };
        let duration = call.started.elapsed();
        if !strata_telemetry::worth_recording(duration, error.is_some()) {
            return;
        }
        let mut attributes = vec![
            ("rpc.service", call.method.entity.service_name.clone()),
            ("rpc.method", call.method.name().to_string()),
        ];
        if let Some(entity_id) = call.entity_id {
            attributes.push(("strata.entity_id", entity_id));
        }
        strata_telemetry::record_unsampled(UnsampledCall {
            trace: call.trace,
            parent: call.parent,
            name: trace::arrival_name(call.role, &call.method),
            start: call.start,
            duration,
            error: error.map(ToString::to_string),
            attributes,
        });
    }
}
