//! The action protocol (`cloudstate.action.ActionProtocol`) from the proxy's
//! side: stateless calls, each its own gRPC call to the function, in all four
//! shapes. A streamed call starts with a command naming the service, method and
//! metadata, then carries one command per request message. Each response becomes
//! an [`Outcome`] (reply, forward or nothing, plus side effects); a failure
//! performs nothing. Dropping a call cancels it at the function.

use std::{sync::Arc, time::Duration};

use futures::{stream::BoxStream, FutureExt, StreamExt};
use http::uri::PathAndQuery;
use strata_proto::cloudstate::action::{
    action_protocol_client::ActionProtocolClient, action_response::Response, ActionCommand, ActionResponse,
};

use crate::{
    call::{Answer, Call, CallContext, Next, Outcome, StreamedCall},
    error::{code_name, ProxyError},
    model::{MethodModel, Targets},
    passing::{holding, pass_on, Abortable, Prost},
    reply_targets::{outcome_of_parts, resolve_effects, resolve_forward},
    sidecar::function::FunctionClient,
    trace,
};

/// Outcomes of a streamed call, as the function sends them.
pub type Outcomes = BoxStream<'static, Result<Outcome, ProxyError>>;

/// Runs action calls on the function.
pub struct Actions {
    function: FunctionClient,
    targets: Arc<dyn Targets>,
    command_timeout: Duration,
}

impl Actions {
    pub fn new(function: FunctionClient, targets: Arc<dyn Targets>, command_timeout: Duration) -> Self {
        Self {
            function,
            targets,
            command_timeout,
        }
    }

    fn client(&self) -> ActionProtocolClient<tonic::transport::Channel> {
        ActionProtocolClient::new(self.function.channel())
    }

    /// One request, one response (`handleUnary`), within the call's deadline.
    pub async fn unary(&self, call: Call) -> Result<Outcome, ProxyError> {
        let mut context = call.context;
        let span = trace::step(&mut context, || trace::function_call(&call.method));
        let command = ActionCommand {
            service_name: call.method.entity.service_name.clone(),
            name: call.method.name().to_string(),
            payload: Some(call.payload),
            metadata: trace::with_traceparent(call.metadata, context.trace.as_ref()),
        };
        let deadline = call.context.deadline_within(self.command_timeout);
        let too_late = call.context.timeout_reason(call.method.name(), self.command_timeout);
        let mut client = self.client();
        let response = match tokio::time::timeout_at(deadline, client.handle_unary(command)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(function_failed(&status)),
            Err(_) => Err(ProxyError::DeadlineExceeded(too_late)),
        };
        // A `Failure` the function answered marks its span failed too.
        let outcome = response.and_then(|response| self.outcome(&call.method, response));
        trace::outcome(&span, outcome.as_ref().err());
        outcome
    }

    /// A streamed call in whichever shape its method has. The request messages
    /// are passed on as they come; an invalid one ends the call.
    pub async fn streamed(&self, call: StreamedCall) -> Result<Outcomes, ProxyError> {
        let StreamedCall {
            method,
            mut requests,
            metadata,
            mut context,
        } = call;
        let _span = trace::step(&mut context, || trace::function_call(&method));
        let header = ActionCommand {
            service_name: method.entity.service_name.clone(),
            name: method.name().to_string(),
            payload: None,
            metadata: trace::with_traceparent(metadata, context.trace.as_ref()),
        };
        let mut client = self.client();
        let streams_in = method.descriptor.is_client_streaming();
        let streams_out = method.descriptor.is_server_streaming();
        let responses: BoxStream<'static, Result<ActionResponse, ProxyError>> = if !streams_in {
            // One request message: it travels in the one command.
            let payload = match requests.next().await {
                Some(Ok(payload)) => payload,
                Some(Err(error)) => return Err(error),
                None => {
                    return Err(ProxyError::InvalidArgument(format!(
                        "{} takes exactly one request message, and none was sent",
                        method.name()
                    )))
                }
            };
            let command = ActionCommand {
                payload: Some(payload),
                ..header
            };
            let stream = client
                .handle_streamed_out(command)
                .await
                .map_err(|s| function_failed(&s))?;
            stream.into_inner().map(|r| r.map_err(|s| function_failed(&s))).boxed()
        } else {
            // The answers' end (or their reader's leaving) cancels the call.
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let (payloads, refused) = pass_on(requests, stopped);
            let commands = futures::stream::once(async move { Some(header) }).chain(payloads.map(|payload| {
                payload.map(|payload| ActionCommand {
                    payload: Some(payload),
                    ..Default::default()
                })
            }));
            let mut grpc = tonic::client::Grpc::new(self.function.channel());
            grpc.ready()
                .await
                .map_err(|e| ProxyError::Unavailable(format!("the user function is unreachable ({e}); retry")))?;
            let codec = Abortable(Prost::<ActionCommand, ActionResponse>::default());
            let request = tonic::Request::new(commands);
            let responses = if streams_out {
                let path = PathAndQuery::from_static("/cloudstate.action.ActionProtocol/handleStreamed");
                let stream = grpc
                    .streaming(request, path, codec)
                    .await
                    .map_err(|s| function_failed(&s))?;
                stream.into_inner().map(|r| r.map_err(|s| function_failed(&s))).boxed()
            } else {
                let path = PathAndQuery::from_static("/cloudstate.action.ActionProtocol/handleStreamedIn");
                async move { grpc.client_streaming(request, path, codec).await }
                    .map(|r| r.map(tonic::Response::into_inner).map_err(|s| function_failed(&s)))
                    .into_stream()
                    .boxed()
            };
            // A request the proxy refused ends the call with its error.
            holding(futures::stream::select(responses, refused.map(Err)).boxed(), stop)
        };
        let actions = ActionOutcomes {
            targets: self.targets.clone(),
            function: self.function.clone(),
            method: method.clone(),
        };
        let outcomes = responses.map(move |response| response.and_then(|r| actions.outcome(r)));
        Ok(within(outcomes.boxed(), context, method))
    }

    fn outcome(&self, method: &Arc<MethodModel>, response: ActionResponse) -> Result<Outcome, ProxyError> {
        ActionOutcomes {
            targets: self.targets.clone(),
            function: self.function.clone(),
            method: method.clone(),
        }
        .outcome(response)
    }
}

/// Turns the function's responses for one method into outcomes.
struct ActionOutcomes {
    targets: Arc<dyn Targets>,
    function: FunctionClient,
    method: Arc<MethodModel>,
}

impl ActionOutcomes {
    fn outcome(&self, response: ActionResponse) -> Result<Outcome, ProxyError> {
        let outcome = outcome_of(&self.method, self.targets.as_ref(), response);
        if let Err(ProxyError::Internal(message)) = &outcome {
            self.function.report_error(message.clone());
        }
        outcome
    }
}

/// What one response of the function means: the pure part of the protocol.
pub fn outcome_of(from: &MethodModel, targets: &dyn Targets, response: ActionResponse) -> Result<Outcome, ProxyError> {
    let (next, forwarded) = match response.response {
        None => (Next::Nothing, None),
        Some(Response::Failure(failure)) => return Err(ProxyError::Failure(failure.description)),
        Some(Response::Reply(reply)) => (
            Next::Reply(Answer {
                payload: reply.payload.unwrap_or_default(),
                metadata: reply.metadata,
            }),
            None,
        ),
        Some(Response::Forward(forward)) => resolve_forward(targets, from, forward)?,
    };
    Ok(outcome_of_parts(
        forwarded,
        next,
        resolve_effects(from, targets, response.side_effects)?,
    ))
}

/// Ends `outcomes` with DEADLINE_EXCEEDED when the client's deadline passes.
pub(crate) fn within(outcomes: Outcomes, context: CallContext, method: Arc<MethodModel>) -> Outcomes {
    let Some(deadline) = context.deadline else {
        return outcomes;
    };
    let timer = Box::pin(tokio::time::sleep_until(deadline));
    futures::stream::unfold(Some((outcomes, timer)), move |state| {
        let method = method.clone();
        async move {
            let (mut outcomes, mut timer) = state?;
            tokio::select! {
                item = outcomes.next() => item.map(|item| (item, Some((outcomes, timer)))),
                () = &mut timer => Some((
                    Err(ProxyError::DeadlineExceeded(format!(
                        "the client's deadline passed before the user function finished {}",
                        method.name()
                    ))),
                    None,
                )),
            }
        }
    })
    .boxed()
}

/// A failed gRPC call to the function, as the client should see it: a broken
/// connection (the function crashed or restarts) is an outage, never its failure.
fn function_failed(status: &tonic::Status) -> ProxyError {
    let broken = crate::error::transport_failed(status);
    match status.code() {
        tonic::Code::DeadlineExceeded => ProxyError::DeadlineExceeded(status.message().to_string()),
        tonic::Code::Cancelled => ProxyError::Cancelled("the call was cancelled".into()),
        code if broken || code == tonic::Code::Unavailable => ProxyError::Unavailable(format!(
            "the user function is unavailable ({}); retry",
            status.message()
        )),
        code => ProxyError::Internal(format!(
            "the user function failed the call ({}): {}",
            code_name(code),
            status.message()
        )),
    }
}

#[cfg(test)]
mod tests {
    use prost_types::Any;
    use strata_proto::cloudstate::{Failure, Forward, Reply, SideEffect};

    use super::*;
    use crate::fixtures;

    fn reply(payload: Any) -> Option<Response> {
        Some(Response::Reply(Reply {
            payload: Some(payload),
            metadata: None,
        }))
    }

    #[test]
    fn replies_forwards_failures_and_nothing() {
        let (model, method) = fixtures::method("/test.things.Clerk/Echo");
        let body = Any {
            type_url: "type.googleapis.com/google.api.HttpBody".into(),
            value: vec![],
        };
        let effect = SideEffect {
            service_name: "test.things.Auditor".into(),
            command_name: "Record".into(),
            payload: Some(fixtures::thing_ref("s", 1)),
            synchronous: false,
            metadata: None,
        };
        let outcome = outcome_of(
            &method,
            &model,
            ActionResponse {
                response: reply(body.clone()),
                side_effects: vec![effect.clone()],
            },
        )
        .unwrap();
        assert_eq!(outcome.next, Next::Reply(Answer::new(body)));
        assert_eq!(outcome.effects.len(), 1);
        assert!(!outcome.effects[0].synchronous);

        let nothing = outcome_of(&method, &model, ActionResponse::default()).unwrap();
        assert_eq!(nothing.next, Next::Nothing);

        // A failure performs nothing: its side effects are dropped.
        let failed = outcome_of(
            &method,
            &model,
            ActionResponse {
                response: Some(Response::Failure(Failure {
                    command_id: 0,
                    description: "boom".into(),
                    restart: false,
                })),
                side_effects: vec![effect],
            },
        );
        assert_eq!(failed, Err(ProxyError::Failure("boom".into())));

        // A forward must answer with the type the client expects.
        let forward = ActionResponse {
            response: Some(Response::Forward(Forward {
                service_name: "test.things.Auditor".into(),
                command_name: "Copy".into(),
                payload: Some(fixtures::thing("s", 1)),
                metadata: None,
            })),
            side_effects: vec![],
        };
        let refused = outcome_of(&method, &model, forward).unwrap_err();
        assert_eq!(
            refused,
            ProxyError::Internal(
                "test.things.Clerk.Echo forwarded to test.things.Auditor.Copy, which answers with a \
                 test.things.Thing, but the client expects a google.api.HttpBody"
                    .into()
            )
        );
    }
}
