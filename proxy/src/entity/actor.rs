//! The life of one entity actor: activate on the first command, run commands one at
//! a time in arrival order, restart after a failure that asks for it, and passivate
//! when idle. The per-type protocol is a [`Session`].

use std::sync::Arc;

use strata_store::StoreError;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::{event_sourced::EventSourcedSession, value::ValueSession, ActorKey, EntityCommand, Shared};
use crate::{error::ProxyError, model::EntityKind};

/// What a command leaves behind for the session.
pub(super) enum After {
    /// Keep the stream open for the next command.
    Continue,
    /// Close the stream; the next command reloads state from the store.
    Restart,
}

/// An open protocol stream to the function for one entity.
pub(super) enum Session {
    EventSourced(EventSourcedSession),
    Value(ValueSession),
}

impl Session {
    async fn activate(shared: &Shared, command: &EntityCommand, entity_id: &str) -> Result<Self, ProxyError> {
        let entity = &command.method.entity;
        Ok(match entity.kind {
            EntityKind::EventSourced => {
                Session::EventSourced(EventSourcedSession::activate(shared, entity, entity_id).await?)
            }
            EntityKind::Value => Session::Value(ValueSession::activate(shared, entity, entity_id).await?),
        })
    }

    /// Whether the function already ended this stream (it restarted, or crashed)
    /// while no command was in flight. Such a session is replaced before the next
    /// command is sent, so that command does not fail for nothing.
    fn is_closed(&mut self) -> bool {
        match self {
            Session::EventSourced(s) => s.is_closed(),
            Session::Value(s) => s.is_closed(),
        }
    }

    async fn run(&mut self, shared: &Shared, command: EntityCommand, entity_id: &str) -> After {
        match self {
            Session::EventSourced(s) => s.run(shared, command, entity_id).await,
            Session::Value(s) => s.run(shared, command, entity_id).await,
        }
    }

    /// Whether a journal write is in flight (value entities write inline).
    fn writing(&self) -> bool {
        match self {
            Session::EventSourced(s) => s.journal.writing(),
            Session::Value(_) => false,
        }
    }

    async fn written(&mut self) -> Result<(), StoreError> {
        match self {
            Session::EventSourced(s) => s.journal.written().await,
            Session::Value(_) => Ok(()),
        }
    }

    /// `false` when a write failed and the session must be replaced.
    fn complete(&mut self, shared: &Shared, result: Result<(), StoreError>) -> bool {
        match self {
            Session::EventSourced(s) => s.journal.complete(shared, result),
            Session::Value(_) => true,
        }
    }

    /// Lets every accepted write finish before the session goes away, so each
    /// held reply is released or failed, and a new session recovers all of it.
    async fn close(mut self, shared: &Shared) {
        if let Session::EventSourced(s) = &mut self {
            s.journal.drain(shared).await;
        }
        shared.metrics.entities_active.dec();
    }
}

enum Next {
    Command(Box<EntityCommand>),
    Written(Result<(), StoreError>),
    Idle,
}

pub(super) async fn run(
    shared: Arc<Shared>,
    entity_id: String,
    key: ActorKey,
    mut mailbox: mpsc::Receiver<Box<EntityCommand>>,
    own_mailbox: mpsc::WeakSender<Box<EntityCommand>>,
) {
    let span = tracing::debug_span!("entity", service = %key.0, entity_id = %entity_id);
    async move {
        let mut session: Option<Session> = None;
        let mut passivation = None;
        loop {
            let next = match session.as_mut().filter(|s| s.writing()) {
                // While a write is in flight, keep taking commands (pipelining) and
                // watch for the write to finish.
                Some(writing) => tokio::select! {
                    biased;
                    result = writing.written() => Next::Written(result),
                    command = mailbox.recv() => command.map_or(Next::Idle, Next::Command),
                },
                None => {
                    let command = match passivation {
                        Some(idle) => tokio::time::timeout(idle, mailbox.recv()).await.unwrap_or_default(),
                        None => mailbox.recv().await,
                    };
                    command.map_or(Next::Idle, Next::Command)
                }
            };
            match next {
                Next::Command(command) => {
                    passivation = Some(command.method.entity.passivation);
                    session = step(&shared, session, command, &entity_id).await;
                }
                Next::Written(result) => {
                    if let Some(mut current) = session.take() {
                        if current.complete(&shared, result) {
                            session = Some(current);
                        } else {
                            current.close(&shared).await;
                        }
                    }
                }
                Next::Idle => {
                    // Leave the registry, refuse new sends, and finish what was
                    // already queued so no caller is left without an answer.
                    {
                        let mut actors = shared.actors.lock().expect("entity registry poisoned");
                        // Only our own entry: after a release, a new actor may
                        // already serve this entity.
                        let ours = own_mailbox.upgrade();
                        if actors
                            .get(&key)
                            .is_some_and(|m| ours.is_some_and(|o| m.same_channel(&o)))
                        {
                            actors.remove(&key);
                        }
                        mailbox.close();
                    }
                    while let Ok(command) = mailbox.try_recv() {
                        session = step(&shared, session, command, &entity_id).await;
                    }
                    if let Some(current) = session.take() {
                        current.close(&shared).await;
                        shared.metrics.passivations.with_label_values(&[key.0.as_str()]).inc();
                    }
                    tracing::debug!("entity passivated");
                    return;
                }
            }
        }
    }
    .instrument(span)
    .await
}

async fn step(
    shared: &Shared,
    session: Option<Session>,
    command: Box<EntityCommand>,
    entity_id: &str,
) -> Option<Session> {
    let command = *command;
    let service = command.method.entity.service_name.clone();
    let metrics = &shared.metrics;
    let reusable = match session {
        Some(mut current) => {
            if current.is_closed() {
                current.close(shared).await;
                None
            } else {
                Some(current)
            }
        }
        None => None,
    };
    let mut session = match reusable {
        Some(session) => session,
        None => {
            let started = std::time::Instant::now();
            match Session::activate(shared, &command, entity_id).await {
                Ok(session) => {
                    metrics.entities_active.inc();
                    metrics.activations.with_label_values(&[service.as_str()]).inc();
                    metrics
                        .activation_seconds
                        .with_label_values(&[service.as_str()])
                        .observe(started.elapsed().as_secs_f64());
                    session
                }
                Err(error) => {
                    let _ = command.reply.send(Err(error));
                    return None;
                }
            }
        }
    };
    match session.run(shared, command, entity_id).await {
        After::Continue => Some(session),
        After::Restart => {
            session.close(shared).await;
            None
        }
    }
}
