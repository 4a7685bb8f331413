//! Performing what a successful command asks for after its state is durable:
//! synchronous side effects first, in order (a failure fails the client's
//! request), then the reply or the forward (whose answer is the client's), then
//! asynchronous side effects once the answer is settled. Every forward and side
//! effect is counted and every failure logged; a chain deeper than
//! [`MAX_HOPS`] is refused so a loop cannot run forever.

use std::sync::{Arc, Weak};

use tracing::Instrument;

use crate::{
    call::{Answer, Call, CallContext, Commands, Next, Outcome, MAX_HOPS},
    error::ProxyError,
    metrics::Metrics,
    trace::{self, Hop},
};

/// Where forwards and side effects are sent.
#[derive(Clone)]
pub enum Router {
    /// A router of its own (a managed sidecar's view of the deployment).
    Shared(Arc<dyn Commands>),
    /// The sidecar's own dispatcher, which owns this (so held weakly).
    Owner(Weak<dyn Commands>),
}

impl Router {
    pub(crate) fn get(&self) -> Result<Arc<dyn Commands>, ProxyError> {
        match self {
            Router::Shared(router) => Ok(router.clone()),
            Router::Owner(owner) => owner
                .upgrade()
                .ok_or_else(|| ProxyError::Unavailable("the proxy is shutting down; retry".into())),
        }
    }
}

/// Performs forwards and side effects through a [`Router`].
#[derive(Clone)]
pub struct Effects {
    router: Router,
    metrics: Arc<Metrics>,
}

impl Effects {
    pub fn new(router: Router, metrics: Arc<Metrics>) -> Self {
        Self { router, metrics }
    }

    /// Where this performs its calls (a timer's calls go the same way).
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Performs `outcome` for a call made in `context` and returns the client's
    /// answer (`None`: the function sent no reply).
    pub async fn settle(&self, outcome: Outcome, context: &CallContext) -> Result<Option<Answer>, ProxyError> {
        let Outcome { next, effects, .. } = outcome;
        let (synchronous, later): (Vec<_>, Vec<_>) = effects.into_iter().partition(|effect| effect.synchronous);
        for effect in synchronous {
            let target = effect.call.target_name();
            let result = self.call(effect.call, context.next_hop(true), Hop::SideEffect).await;
            self.count_effect(&target, "synchronous", &result);
            if let Err(error) = result {
                tracing::warn!(%target, %error, "synchronous side effect failed; failing the request");
                // Named once, where the client's request began, not at every hop
                // of a chain.
                return Err(if context.hops == 0 {
                    error.prefixed(&format!("the synchronous side effect {target} failed: "))
                } else {
                    error
                });
            }
        }
        let answer = match next {
            Next::Reply(answer) => Ok(Some(answer)),
            Next::Nothing => Ok(None),
            Next::Forward(call) => {
                let target = call.target_name();
                let result = self.call(*call, context.next_hop(true), Hop::Forward).await;
                let outcome = if result.is_ok() { "ok" } else { "failed" };
                self.metrics.forwards.with_label_values(&[&target, outcome]).inc();
                if let Err(error) = &result {
                    tracing::debug!(%target, %error, "forward failed");
                }
                result.map(Some)
            }
        };
        if !later.is_empty() {
            let effects = self.clone();
            let context = context.next_hop(false);
            let span = tracing::debug_span!("side_effects", count = later.len());
            tokio::spawn(
                async move {
                    for effect in later {
                        let target = effect.call.target_name();
                        let result = effects.call(effect.call, context, Hop::SideEffect).await;
                        effects.count_effect(&target, "asynchronous", &result);
                        if let Err(error) = result {
                            tracing::warn!(%target, %error, "asynchronous side effect failed");
                        }
                    }
                }
                .instrument(span),
            );
        }
        answer
    }

    /// Calls one target, unless the chain that led here is too deep.
    async fn call(&self, mut call: Call, mut context: CallContext, hop: Hop) -> Result<Answer, ProxyError> {
        if context.hops > MAX_HOPS {
            return Err(ProxyError::Internal(format!(
                "{} was not called: it is {} forwards and side effects away from the client's request, \
                 more than the limit of {MAX_HOPS}; do they call each other in a loop?",
                call.target_name(),
                context.hops
            )));
        }
        let span = trace::step(&mut context, || trace::hop(hop, &call.target_name()));
        call.context = context;
        let answer = self.router.get()?.unary(call).instrument(span.clone()).await;
        trace::outcome(&span, answer.as_ref().err());
        answer
    }

    fn count_effect(&self, target: &str, mode: &str, result: &Result<Answer, ProxyError>) {
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        self.metrics
            .side_effects
            .with_label_values(&[target, mode, outcome])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::StreamExt;
    use prost_types::Any;
    use tokio::sync::Notify;

    use super::*;
    use crate::{
        call::{Answers, Effect, StreamedCall},
        fixtures,
    };

    /// Records every call it gets; calls to `Auditor.Record` fail when the entity
    /// id is "fail", and wait for `release` when it is "slow".
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<(String, u32)>>,
        release: Notify,
    }

    #[async_trait::async_trait]
    impl Commands for Recorder {
        async fn unary(&self, call: Call) -> Result<Answer, ProxyError> {
            self.calls.lock().unwrap().push((
                format!("{} {}", call.target_name(), call.entity_id.clone().unwrap_or_default()),
                call.context.hops,
            ));
            match call.entity_id.as_deref() {
                Some("fail-0") => Err(ProxyError::Failure("no such thing".into())),
                Some("slow-0") => {
                    self.release.notified().await;
                    Ok(Answer::empty(&call.method))
                }
                _ => Ok(Answer::new(Any {
                    type_url: "type.googleapis.com/test.things.Thing".into(),
                    value: b"forwarded".to_vec(),
                })),
            }
        }
        async fn streamed(&self, _: StreamedCall) -> Result<Answers, ProxyError> {
            Ok(futures::stream::empty().boxed())
        }
    }

    fn effect(model: &crate::model::ServiceModel, shelf: &str, synchronous: bool) -> Effect {
        let method = crate::model::Targets::method(model, "test.things.Auditor", "Record").unwrap();
        Effect {
            call: Call::new(method, fixtures::thing_ref(shelf, 0), None, CallContext::default()).unwrap(),
            synchronous,
        }
    }

    fn setup() -> (Arc<Recorder>, Effects, crate::model::ServiceModel) {
        let recorder = Arc::new(Recorder::default());
        let effects = Effects::new(Router::Shared(recorder.clone()), Arc::new(Metrics::new()));
        let (model, _) = fixtures::method("/test.things.Warehouse/Create");
        (recorder, effects, model)
    }

    #[tokio::test]
    async fn synchronous_effects_then_forward_then_asynchronous_effects() {
        let (recorder, effects, model) = setup();
        let copy = crate::model::Targets::method(&model, "test.things.Auditor", "Copy").unwrap();
        let forward = Call::new(copy, fixtures::thing("top", 1), None, CallContext::default()).unwrap();
        let outcome = Outcome {
            next: Next::Forward(Box::new(forward)),
            effects: vec![
                effect(&model, "slow", false),
                effect(&model, "a", true),
                effect(&model, "b", true),
            ],
            timers: Vec::new(),
        };
        let context = CallContext {
            deadline: None,
            hops: 2,
            routed_by: 0,
            trace: None,
        };
        let answer = effects.settle(outcome, &context).await.unwrap().unwrap();
        assert_eq!(answer.payload.value, b"forwarded");
        // The asynchronous effect started after the answer and waits; the others ran in order.
        tokio::task::yield_now().await;
        recorder.release.notify_one();
        let calls = recorder.calls.lock().unwrap().clone();
        assert_eq!(
            calls[..3],
            [
                ("test.things.Auditor.Record a-0".to_string(), 3),
                ("test.things.Auditor.Record b-0".to_string(), 3),
                ("test.things.Auditor.Copy top-1".to_string(), 3),
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_synchronous_effect_fails_the_request_and_stops() {
        let (recorder, effects, model) = setup();
        let outcome = Outcome {
            next: Next::Nothing,
            effects: vec![effect(&model, "fail", true), effect(&model, "after", true)],
            timers: Vec::new(),
        };
        let error = effects.settle(outcome, &CallContext::default()).await.unwrap_err();
        assert_eq!(
            error,
            ProxyError::Failure("the synchronous side effect test.things.Auditor.Record failed: no such thing".into())
        );
        assert_eq!(recorder.calls.lock().unwrap().len(), 1);
        assert_eq!(
            effects
                .metrics
                .side_effects
                .with_label_values(&["test.things.Auditor.Record", "synchronous", "failed"])
                .get(),
            1
        );
    }

    #[tokio::test]
    async fn a_chain_deeper_than_the_limit_is_refused() {
        let (recorder, effects, model) = setup();
        let outcome = Outcome {
            next: Next::Nothing,
            effects: vec![effect(&model, "deep", true)],
            timers: Vec::new(),
        };
        let context = CallContext {
            deadline: None,
            hops: MAX_HOPS,
            routed_by: 0,
            trace: None,
        };
        let error = effects.settle(outcome, &context).await.unwrap_err();
        assert!(
            matches!(&error, ProxyError::Internal(m) if m.contains("more than the limit of 16")),
            "{error}"
        );
        assert!(recorder.calls.lock().unwrap().is_empty());
        // One hop less is fine.
        let outcome = Outcome {
            next: Next::Nothing,
            effects: vec![effect(&model, "deep", true)],
            timers: Vec::new(),
        };
        let context = CallContext {
            deadline: None,
            hops: MAX_HOPS - 1,
            routed_by: 0,
            trace: None,
        };
        assert_eq!(effects.settle(outcome, &context).await, Ok(None));
    }
}
