//! Actions: stateless handlers of a gRPC service, in the four shapes of a gRPC
//! method (unary, streamed in, streamed out, streamed both ways). The trait users
//! implement and the service that binds it to a gRPC service; the protocol
//! endpoint lives in `action_protocol`.

use std::{future::Future, sync::Arc};

use futures::{future::BoxFuture, stream::BoxStream, FutureExt, StreamExt};

use crate::{Command, Failure, Reply};

/// The replies of a server-streamed method, in order. A [`Failure`] is sent as
/// the answer to its request and the stream goes on; ending the stream ends the
/// call.
pub type ReplyStream = BoxStream<'static, Result<Reply, Failure>>;

/// The requests of a client-streamed method, as the client sends them; each has
/// the method's name and the metadata sent with it.
pub type CommandStream = BoxStream<'static, Command>;

/// A stateless service: every call is handled on its own, with no entity and no
/// stored state. Each method answers with a [`Reply`] (a message, a forward, or
/// no reply) or a [`Failure`], and may ask for side effects.
///
/// Implement the shapes the service's methods have; dispatch on
/// [`Command::name`]. A shape left unimplemented fails the call. Dropping the
/// stream or future of a call is how a cancelled call reaches the action.
pub trait Action: Send + Sync + 'static {
    /// A unary method: one request, one reply.
    fn handle_unary(&self, command: Command) -> impl Future<Output = Result<Reply, Failure>> + Send {
        async move { Err(not_implemented(&command, "unary")) }
    }

    /// A client-streamed method: `call` names it (with the call's metadata, no
    /// payload), `requests` are the messages; one reply.
    fn handle_streamed_in(
        &self,
        call: Command,
        requests: CommandStream,
    ) -> impl Future<Output = Result<Reply, Failure>> + Send {
        drop(requests);
        async move { Err(not_implemented(&call, "client-streamed")) }
    }

    /// A server-streamed method: one request, a stream of replies.
    fn handle_streamed_out(&self, command: Command) -> ReplyStream {
        futures::stream::once(async move { Err(not_implemented(&command, "server-streamed")) }).boxed()
    }

    /// A bidirectionally streamed method: replies as the requests come.
    fn handle_streamed(&self, call: Command, requests: CommandStream) -> ReplyStream {
        drop(requests);
        futures::stream::once(async move { Err(not_implemented(&call, "streamed")) }).boxed()
    }
}

fn not_implemented(command: &Command, shape: &str) -> Failure {
    Failure::new(format!(
        "this action does not implement {shape} methods, so it cannot handle {}",
        command.name()
    ))
}

/// An action bound to one gRPC service of the user function.
pub struct ActionService<A> {
    pub(crate) service_name: String,
    pub(crate) action: Arc<A>,
}

impl<A: Action> ActionService<A> {
    /// Serves the gRPC service `service_name` (fully qualified) with `action`.
    pub fn new(service_name: impl Into<String>, action: A) -> Self {
        Self {
            service_name: service_name.into(),
            action: Arc::new(action),
        }
    }
}

/// [`Action`] behind a pointer: its futures boxed, so one endpoint serves them all.
pub(crate) trait DynAction: Send + Sync {
    fn unary(&self, command: Command) -> BoxFuture<'_, Result<Reply, Failure>>;
    fn streamed_in(&self, call: Command, requests: CommandStream) -> BoxFuture<'_, Result<Reply, Failure>>;
    fn streamed_out(&self, command: Command) -> ReplyStream;
    fn streamed(&self, call: Command, requests: CommandStream) -> ReplyStream;
}

impl<A: Action> DynAction for A {
    fn unary(&self, command: Command) -> BoxFuture<'_, Result<Reply, Failure>> {
        self.handle_unary(command).boxed()
    }

    fn streamed_in(&self, call: Command, requests: CommandStream) -> BoxFuture<'_, Result<Reply, Failure>> {
        self.handle_streamed_in(call, requests).boxed()
    }

    fn streamed_out(&self, command: Command) -> ReplyStream {
        self.handle_streamed_out(command)
    }

    fn streamed(&self, call: Command, requests: CommandStream) -> ReplyStream {
        self.handle_streamed(call, requests)
    }
}
