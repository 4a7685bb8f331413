//! Active entities: one single-writer actor per entity, found or started by
//! [`Entities::handle`]. Owns the mailbox and lifecycle of actors; the protocol of
//! each entity type lives in its own module.

mod actor;
mod event_sourced;
mod pipeline;
mod protocol;
mod value;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use prost_types::Any;
use strata_proto::cloudstate::Metadata;
use strata_store::Store;
use tokio::sync::{mpsc, oneshot};

use crate::{error::ProxyError, function::FunctionClient, metrics::Metrics, model::MethodModel};

/// How many commands may wait for one entity before callers wait to enqueue.
const MAILBOX: usize = 1024;

/// Where a command's answer goes.
pub(crate) type ReplyTo = oneshot::Sender<Result<Any, ProxyError>>;

/// One command for one entity, with the channel its answer goes back on.
pub struct EntityCommand {
    pub method: Arc<MethodModel>,
    pub payload: Any,
    pub metadata: Option<Metadata>,
    pub reply: ReplyTo,
}

type ActorKey = (String, String);

/// Commands travel boxed, so each entity's channel allocates small slots.
type Mailbox = mpsc::Sender<Box<EntityCommand>>;

/// The registry of active entities of one sidecar.
pub struct Entities {
    shared: Arc<Shared>,
}

struct Shared {
    function: FunctionClient,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    actors: Mutex<HashMap<ActorKey, Mailbox>>,
}

impl Entities {
    pub fn new(function: FunctionClient, store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Self {
            shared: Arc::new(Shared {
                function,
                store,
                metrics,
                actors: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Runs one command on its entity and returns the reply payload once any state
    /// it produced is durable.
    pub async fn handle(
        &self,
        method: Arc<MethodModel>,
        entity_id: String,
        payload: Any,
        metadata: Option<Metadata>,
    ) -> Result<Any, ProxyError> {
        let (reply, answer) = oneshot::channel();
        let key = (method.entity.service_name.clone(), entity_id);
        let mut command = Box::new(EntityCommand {
            method,
            payload,
            metadata,
            reply,
        });
        // A send fails only when the actor passivated after we looked it up: start
        // a fresh one and try again.
        loop {
            let mailbox = self.shared.mailbox(&key);
            match mailbox.send(command).await {
                Ok(()) => break,
                Err(mpsc::error::SendError(returned)) => {
                    self.shared.forget(&key, &mailbox);
                    command = returned;
                }
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(ProxyError::Unavailable(
                "the entity stopped before answering; retry".into(),
            ))
        })
    }

    /// Lets go of the entities `which` selects (e.g. of shards this instance lost):
    /// each finishes the commands it already has, then passivates. Returns how many.
    pub fn release(&self, which: impl Fn(&str, &str) -> bool) -> usize {
        let mut actors = self.shared.actors.lock().expect("entity registry poisoned");
        let before = actors.len();
        actors.retain(|(service, entity_id), _| !which(service, entity_id));
        before - actors.len()
    }

    /// How many entities are active now.
    pub fn active(&self) -> usize {
        self.shared.actors.lock().expect("entity registry poisoned").len()
    }
}

impl Shared {
    fn mailbox(self: &Arc<Self>, key: &ActorKey) -> Mailbox {
        let mut actors = self.actors.lock().expect("entity registry poisoned");
        if let Some(mailbox) = actors.get(key) {
            if !mailbox.is_closed() {
                return mailbox.clone();
            }
        }
        let (tx, rx) = mpsc::channel(MAILBOX);
        actors.insert(key.clone(), tx.clone());
        tokio::spawn(actor::run(self.clone(), key.1.clone(), key.clone(), rx, tx.downgrade()));
        tx
    }

    fn forget(&self, key: &ActorKey, mailbox: &Mailbox) {
        let mut actors = self.actors.lock().expect("entity registry poisoned");
        if actors.get(key).is_some_and(|m| m.same_channel(mailbox)) {
            actors.remove(key);
        }
    }
}
