//! `cloudstate.action.ActionProtocol` from the function's side: each call looks up
//! its action and runs the handler of its shape. A streamed call's first command
//! names the method; the ones after it carry the messages. Replies and failures
//! become `ActionResponse`s with their side effects; a panic fails the call's
//! answer instead of killing the function; a call the proxy cancels drops the
//! handler's future or stream.

use std::{panic::AssertUnwindSafe, sync::Arc};

use futures::{stream::BoxStream, FutureExt, StreamExt};
use prost_types::Any;
use strata_proto::cloudstate::{
    action::{action_protocol_server::ActionProtocol, action_response, ActionCommand, ActionResponse},
    client_action,
};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, error, warn, Instrument};

use crate::{
    action::{CommandStream, DynAction},
    entity_stream::panic_description,
    registry::Registry,
    Command, Failure, Metadata, Reply,
};

type Responses = BoxStream<'static, Result<ActionResponse, Status>>;

/// Serves `cloudstate.action.ActionProtocol` for every registered action.
pub(crate) struct ActionEndpoint {
    pub(crate) registry: Arc<Registry>,
}

impl ActionEndpoint {
    /// The action serving `service` and the command `name`, or the failure to answer.
    fn action(&self, service: &str, name: &str) -> Result<Arc<dyn DynAction>, Failure> {
        find_action(&self.registry, service, name)
    }
}

fn find_action(registry: &Registry, service: &str, name: &str) -> Result<Arc<dyn DynAction>, Failure> {
    let opened = registry.open_action(service).map_err(Failure::new)?;
    if !opened.commands.contains(name) {
        return Err(Failure::new(format!(
            "unknown command {name:?} for service {service:?}"
        )));
    }
    Ok(opened.action)
}

fn command(name: &str, payload: Option<Any>, metadata: Option<strata_proto::cloudstate::Metadata>) -> Command {
    Command::new(String::new(), 0, name.to_owned(), payload.unwrap_or_default())
        .with_metadata(Metadata::from_proto(metadata))
}

/// The messages after a streamed call's first command, as commands of `name`. A
/// broken stream (the proxy cancelled) simply ends them.
fn commands(stream: Streaming<ActionCommand>, name: String) -> CommandStream {
    stream
        .take_while(|message| {
            if let Err(status) = message {
                debug!(%status, "the proxy ended the request stream");
            }
            std::future::ready(message.is_ok())
        })
        .filter_map(move |message| {
            let name = name.clone();
            async move {
                let message = message.ok()?;
                Some(command(&name, message.payload, message.metadata))
            }
        })
        .boxed()
}

/// The protocol's response for one answer.
fn response(answer: Result<Reply, Failure>) -> ActionResponse {
    match answer {
        Ok(reply) => {
            let (action, side_effects) = reply.into_proto();
            let response = action.map(|action| match action {
                client_action::Action::Reply(reply) => action_response::Response::Reply(reply),
                client_action::Action::Forward(forward) => action_response::Response::Forward(forward),
                client_action::Action::Failure(failure) => action_response::Response::Failure(failure),
            });
            ActionResponse { response, side_effects }
        }
        Err(failure) => {
            debug!(%failure, "action call failed");
            let (failure, side_effects) = failure.into_proto(0);
            ActionResponse {
                response: Some(action_response::Response::Failure(failure)),
                side_effects,
            }
        }
    }
}

fn panicked(panic: Box<dyn std::any::Any + Send>) -> Result<Reply, Failure> {
    let description = panic_description(panic.as_ref());
    error!(panic = %description, "action panicked, failing the call");
    Err(Failure::new(format!("action panicked: {description}")))
}

/// Replies as responses, with a panic in the stream failing its last answer.
fn responses(replies: BoxStream<'static, Result<Reply, Failure>>) -> Responses {
    AssertUnwindSafe(replies)
        .catch_unwind()
        .scan(false, |ended, item| {
            if *ended {
                return std::future::ready(None);
            }
            let answer = item.unwrap_or_else(|panic| {
                *ended = true;
                panicked(panic)
            });
            std::future::ready(Some(Ok(response(answer))))
        })
        .boxed()
}

#[tonic::async_trait]
impl ActionProtocol for ActionEndpoint {
    type handleStreamedOutStream = Responses;
    type handleStreamedStream = Responses;

    async fn handle_unary(&self, request: Request<ActionCommand>) -> Result<Response<ActionResponse>, Status> {
        let message = request.into_inner();
        let answer = match self.action(&message.service_name, &message.name) {
            Ok(action) => {
                let command = command(&message.name, message.payload, message.metadata);
                let span = crate::trace::command_span(&command);
                AssertUnwindSafe(action.unary(command).instrument(span))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(panicked)
            }
            Err(failure) => Err(failure),
        };
        Ok(Response::new(response(answer)))
    }

    async fn handle_streamed_in(
        &self,
        request: Request<Streaming<ActionCommand>>,
    ) -> Result<Response<ActionResponse>, Status> {
        let mut stream = request.into_inner();
        let Some(header) = stream.message().await? else {
            warn!("a streamed-in call without its first command");
            return Err(Status::invalid_argument("the call ended before its first command"));
        };
        let answer = match self.action(&header.service_name, &header.name) {
            Ok(action) => {
                let requests = commands(stream, header.name.clone());
                let call = command(&header.name, None, header.metadata);
                AssertUnwindSafe(action.streamed_in(call, requests))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(panicked)
            }
            Err(failure) => Err(failure),
        };
        Ok(Response::new(response(answer)))
    }

    async fn handle_streamed_out(
        &self,
        request: Request<ActionCommand>,
    ) -> Result<Response<Self::handleStreamedOutStream>, Status> {
        let message = request.into_inner();
        let replies = match self.action(&message.service_name, &message.name) {
            Ok(action) => {
                let command = command(&message.name, message.payload, message.metadata);
                match std::panic::catch_unwind(AssertUnwindSafe(|| action.streamed_out(command))) {
                    Ok(replies) => replies,
                    Err(panic) => futures::stream::iter([panicked(panic)]).boxed(),
                }
            }
            Err(failure) => futures::stream::iter([Err(failure)]).boxed(),
        };
        Ok(Response::new(responses(replies)))
    }

    async fn handle_streamed(
        &self,
        request: Request<Streaming<ActionCommand>>,
    ) -> Result<Response<Self::handleStreamedStream>, Status> {
        // Answer at once: the proxy may wait for the response to begin before it
        // sends the first command.
        let registry = self.registry.clone();
        let mut stream = request.into_inner();
        let replies = futures::stream::once(async move {
            let header = match stream.message().await {
                Ok(Some(header)) => header,
                Ok(None) | Err(_) => {
                    warn!("a streamed call without its first command");
                    return futures::stream::empty().boxed();
                }
            };
            match find_action(&registry, &header.service_name, &header.name) {
                Ok(action) => {
                    let requests = commands(stream, header.name.clone());
                    let call = command(&header.name, None, header.metadata);
                    match std::panic::catch_unwind(AssertUnwindSafe(|| action.streamed(call, requests))) {
                        Ok(replies) => replies,
                        Err(panic) => futures::stream::iter([panicked(panic)]).boxed(),
                    }
                }
                Err(failure) => futures::stream::iter([Err(failure)]).boxed(),
            }
        })
        .flatten()
        .boxed();
        Ok(Response::new(responses(replies)))
    }
}
