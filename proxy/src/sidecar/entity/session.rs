//! The one shape every entity protocol takes from the proxy's side: a [`Session`]
//! is one open protocol stream for one entity, run by the actor. Sessions get a
//! narrow [`SessionContext`] (the function, the store, the metrics, the targets of
//! forwards) and say after each command what the actor must do next ([`After`]).

use std::{future::Future, sync::Arc, time::Duration};

use strata_store::Store;
use tokio::sync::{mpsc, oneshot};

use crate::{
    call::{Call, CallContext, Outcome},
    error::ProxyError,
    metrics::Metrics,
    model::{EntityModel, Targets},
    sidecar::{function::FunctionClient, timer_scope::TimerScope},
};

/// How long the function may take to answer one command unless configured.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What an entity session may use: nothing more than it needs.
pub struct SessionContext {
    pub function: FunctionClient,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    /// The methods forwards and side effects may target.
    pub targets: Arc<dyn Targets>,
    /// How long the function may take to answer one command.
    pub command_timeout: Duration,
    /// This sidecar's identity as a CRDT replica (and a vote's voter).
    pub instance_id: String,
    /// Where outcomes no client waits for go to have their side effects
    /// performed (those of a cancelled stream's last word).
    pub detached: Detached,
    /// Whose timers a command's timer requests become (stored with its state).
    pub timers: Arc<TimerScope>,
}

/// Outcomes whose side effects the dispatcher performs with no one to answer.
pub type Detached = mpsc::UnboundedSender<(Outcome, CallContext)>;

/// Where a command's result goes.
pub(crate) type ReplyTo = oneshot::Sender<Result<Outcome, ProxyError>>;

/// One command for one entity, with the channel its result goes back on. A
/// streamed command also carries its client stream: the first result goes to
/// `reply`, later ones (if the function keeps the stream open) to `stream`.
pub struct EntityCommand {
    pub call: Call,
    pub reply: ReplyTo,
    pub stream: Option<super::client_stream::StreamTo>,
}

/// What a command leaves behind for the actor.
#[derive(Debug, PartialEq)]
pub(super) enum After {
    /// Keep the stream open for the next command.
    Continue,
    /// Close the stream and start a new one at once (`Init`, then the state
    /// from the store), so the function's state is the stored one again.
    Restart,
    /// The function failed the whole stream: fail the commands queued behind
    /// this one with the reason, then restart.
    StreamFailed(String),
}

impl After {
    /// Restart if `restart`, else go on.
    pub(super) fn restarting_if(restart: bool) -> After {
        if restart {
            After::Restart
        } else {
            After::Continue
        }
    }
}

/// One entity's open protocol stream. The actor calls these one at a time.
pub(super) trait Session: Sized + Send + 'static {
    /// What the function (or a client stream) said while no command was in
    /// flight; only sessions with streamed commands hear anything.
    type Heard: Send;

    /// Loads the entity's state and opens its stream (`Init` and any replay).
    fn activate(
        ctx: &SessionContext,
        entity: &EntityModel,
        entity_id: &str,
    ) -> impl Future<Output = Result<Self, ProxyError>> + Send;

    /// Whether the function already ended the stream while no command was in
    /// flight; such a session is replaced before the next command.
    fn is_closed(&mut self) -> bool;

    /// Runs one command: sends it, reads the answer, hands the result on (now,
    /// or once its state is durable).
    fn run(&mut self, ctx: &SessionContext, command: EntityCommand) -> impl Future<Output = After> + Send;

    /// An estimate of the entity's state in bytes: what the sidecar loaded and
    /// has sent or stored since (snapshot and events, value, CRDT state). The
    /// registry's byte budget is made of these.
    fn state_bytes(&self) -> usize;

    /// Whether a write is in flight whose completion the actor must await.
    fn busy(&self) -> bool {
        false
    }

    /// Waits for the write in flight and releases what it held. Cancel-safe.
    /// `false` means a write failed and the session must be replaced.
    fn settle(&mut self, _ctx: &SessionContext) -> impl Future<Output = bool> + Send {
        async { true }
    }

    /// Waits, cancel-safe, for the function to send something unasked or for a
    /// streamed command's client to leave. Never resolves for sessions without
    /// streamed commands.
    fn listen(&mut self) -> impl Future<Output = Self::Heard> + Send {
        std::future::pending()
    }

    /// Acts on what [`Session::listen`] heard (persisting before releasing, as
    /// for a command).
    fn on_heard(&mut self, _ctx: &SessionContext, _heard: Self::Heard) -> impl Future<Output = After> + Send {
        async { After::Continue }
    }

    /// How many streamed commands are open: an entity with any is not idle.
    fn streams(&self) -> usize {
        0
    }

    /// Ends the stream once everything accepted is durable or failed.
    fn close(self, ctx: &SessionContext) -> impl Future<Output = ()> + Send;
}
