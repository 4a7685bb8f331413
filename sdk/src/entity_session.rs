//! The one session shell of the entity kinds: `Init` first and once (it opens the
//! entity, named in the stream's span), then commands of the service's own names
//! and the kind's other messages (replayed events, the proxy's deltas and
//! cancellations); anything out of that order, or empty, is a protocol error, and
//! a panic fails the command in flight. A kind supplies only what is its own, as a
//! [`Protocol`]; the async shell around a session is `entity_stream`.

use std::{collections::BTreeSet, sync::Arc};

use strata_proto::cloudstate as pb;
use tracing::{debug, Span};

use crate::{
    entity_stream::{protocol_error, stream_failure, FailureMessage, Session, Step},
    registry::Registry,
};

/// What the shell needs of one entity kind's protocol.
pub(crate) trait Protocol: Send + 'static {
    type In: Send + 'static;
    type Out: FailureMessage + Send + 'static;
    type Init;
    /// The kind's messages other than `Init` and commands.
    type Other;
    /// An open entity of this kind, with what the kind keeps beside it.
    type Entity: Send + 'static;

    /// What the proxy sent; `None` for an empty message.
    fn inbound(message: Self::In) -> Option<Inbound<Self::Init, Self::Other>>;

    /// The service and the entity an `Init` is for.
    fn names(init: &Self::Init) -> (&str, &str);

    /// Creates the entity `init` is for and loads what it carries; `Err` is the
    /// step that ends the stream.
    fn open(registry: &Registry, init: Self::Init) -> Result<Opened<Self::Entity>, Step<Self::Out>>;

    /// Handles a command of one of the service's methods.
    fn command(entity: &mut Self::Entity, command: pb::Command) -> Step<Self::Out>;

    /// Handles another message; `entity` is `None` before `Init`.
    fn other(entity: Option<&mut Self::Entity>, other: Self::Other) -> Step<Self::Out>;
}

/// A message from the proxy, as the shell tells them apart.
pub(crate) enum Inbound<Init, Other> {
    Init(Init),
    Command(pb::Command),
    Other(Other),
}

/// A freshly opened entity and the commands its service has.
pub(crate) struct Opened<E> {
    pub entity: E,
    pub commands: Arc<BTreeSet<String>>,
}

/// One entity's protocol stream, of the kind `P`.
pub(crate) struct EntitySession<P: Protocol> {
    registry: Arc<Registry>,
    active: Option<Active<P::Entity>>,
    /// The command being handled, so a panic can name it.
    current_command: i64,
}

struct Active<E> {
    entity: E,
    service_name: String,
    commands: Arc<BTreeSet<String>>,
}

impl<P: Protocol> EntitySession<P> {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            active: None,
            current_command: 0,
        }
    }

    fn init(&mut self, init: P::Init) -> Step<P::Out> {
        let (service_name, entity_id) = P::names(&init);
        let span = Span::current();
        span.record("service", service_name);
        span.record("entity_id", entity_id);
        let service_name = service_name.to_owned();
        match P::open(&self.registry, init) {
            Ok(opened) => {
                debug!("entity initialized");
                self.active = Some(Active {
                    entity: opened.entity,
                    service_name,
                    commands: opened.commands,
                });
                Step::Nothing
            }
            Err(step) => step,
        }
    }
}

impl<P: Protocol> Session for EntitySession<P> {
    type In = P::In;
    type Out = P::Out;

    fn on_message(&mut self, message: P::In) -> Step<P::Out> {
        self.current_command = 0;
        match (P::inbound(message), self.active.as_mut()) {
            (Some(Inbound::Init(init)), None) => self.init(init),
            (Some(Inbound::Init(_)), Some(_)) => protocol_error(0, "received a second init"),
            (Some(Inbound::Command(command)), Some(active)) => {
                self.current_command = command.id;
                if !active.commands.contains(&command.name) {
                    return protocol_error(
                        command.id,
                        format!(
                            "unknown command {:?} for service {:?}",
                            command.name, active.service_name
                        ),
                    );
                }
                P::command(&mut active.entity, command)
            }
            (Some(Inbound::Command(command)), None) => protocol_error(command.id, "received a command before init"),
            (Some(Inbound::Other(other)), active) => P::other(active.map(|active| &mut active.entity), other),
            (None, _) => protocol_error(0, "received an empty message"),
        }
    }

    fn on_panic(&mut self, description: String) -> P::Out {
        stream_failure(self.current_command, format!("entity panicked: {description}"), true)
    }
}
