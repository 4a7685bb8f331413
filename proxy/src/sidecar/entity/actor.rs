//! The life of one entity actor: activate on the first command, run commands one at
//! a time in arrival order, restart at once after a command that asks for it,
//! fail what is queued when the function fails the whole stream, and passivate
//! when idle. Between commands it listens to the session (the function's
//! messages for streamed commands, clients leaving), and an entity with open
//! streams is not idle. The protocol itself is the [`Session`] it is generic over.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Instant,
};

use tokio::sync::mpsc;
use tracing::Instrument;

use super::{
    registry::{ActorKey, ActorRegistry},
    session::{After, EntityCommand, Session, SessionContext},
};
use crate::{call::CallContext, error::ProxyError, model::EntityModel, trace};

/// One entity's actor: what it needs besides its mailbox.
pub(super) struct Actor {
    pub ctx: Arc<SessionContext>,
    pub registry: Arc<ActorRegistry>,
    pub entity: Arc<EntityModel>,
    pub key: ActorKey,
    /// How many streamed commands this entity has open (read by the registry,
    /// which never evicts an entity with open streams).
    pub streams: Arc<AtomicUsize>,
}

enum Next<H> {
    Command(Box<EntityCommand>),
    Settled(bool),
    Heard(H),
    Idle,
}

impl Actor {
    fn entity_id(&self) -> &str {
        &self.key.1
    }

    fn service(&self) -> &str {
        &self.key.0
    }

    pub(super) async fn run<S: Session>(
        self,
        mut mailbox: mpsc::Receiver<Box<EntityCommand>>,
        own_mailbox: mpsc::WeakSender<Box<EntityCommand>>,
    ) {
        let span = tracing::debug_span!("entity", service = %self.service(), entity_id = %self.entity_id());
        async move {
            let mut session: Option<S> = None;
            loop {
                let next = match session.as_mut() {
                    // While a write is in flight, keep taking commands (pipelining)
                    // and watch for the write to finish.
                    Some(writing) if writing.busy() => tokio::select! {
                        biased;
                        written = writing.settle(&self.ctx) => Next::Settled(written),
                        command = mailbox.recv() => command.map_or(Next::Idle, Next::Command),
                    },
                    // Between commands, hear what the function says unasked; an
                    // entity with open streams does not passivate.
                    Some(open) => {
                        let streaming = open.streams() > 0;
                        tokio::select! {
                            biased;
                            command = mailbox.recv() => command.map_or(Next::Idle, Next::Command),
                            heard = open.listen() => Next::Heard(heard),
                            () = tokio::time::sleep(self.entity.passivation), if !streaming => Next::Idle,
                        }
                    }
                    None => tokio::time::timeout(self.entity.passivation, mailbox.recv())
                        .await
                        .ok()
                        .flatten()
                        .map_or(Next::Idle, Next::Command),
                };
                match next {
                    Next::Command(command) => {
                        session = self.step(session, command, &mut mailbox).await;
                        if let Some(current) = &session {
                            self.weigh(&own_mailbox, current.state_bytes());
                        }
                    }
                    Next::Heard(heard) => {
                        if let Some(mut open) = session.take() {
                            let after = open.on_heard(&self.ctx, heard).await;
                            session = self.after(open, after, &mut mailbox).await;
                            if let Some(current) = &session {
                                self.weigh(&own_mailbox, current.state_bytes());
                            }
                        }
                    }
                    Next::Settled(true) => {}
                    Next::Settled(false) => {
                        if let Some(failed) = session.take() {
                            self.close(failed).await;
                        }
                    }
                    Next::Idle => {
                        // Leave the registry, refuse new sends, and finish what was
                        // already queued so no caller is left without an answer.
                        self.registry.leave(&self.key, &own_mailbox, &mut mailbox);
                        self.ctx.metrics.entity_bytes.set(self.registry.bytes() as i64);
                        while let Ok(command) = mailbox.try_recv() {
                            session = self.step(session, command, &mut mailbox).await;
                        }
                        if let Some(current) = session.take() {
                            self.close(current).await;
                            self.ctx.metrics.passivations.with_label_values(&[self.service()]).inc();
                        }
                        self.streams.store(0, Ordering::Relaxed);
                        tracing::debug!("entity passivated");
                        return;
                    }
                }
                let open = session.as_ref().map_or(0, S::streams);
                self.streams.store(open, Ordering::Relaxed);
            }
        }
        .instrument(span)
        .await
    }

    /// Records the entity's state size; past the byte budget the least
    /// recently used other entities are let go (they passivate).
    fn weigh(&self, own: &mpsc::WeakSender<Box<EntityCommand>>, bytes: usize) {
        for (service, entity_id) in self.registry.weigh(&self.key, own, bytes) {
            tracing::debug!(%service, %entity_id, "active entities over their byte budget: passivating the least recently used");
        }
        self.ctx.metrics.entity_bytes.set(self.registry.bytes() as i64);
    }

    /// Runs one command, on the current session or a fresh one.
    async fn step<S: Session>(
        &self,
        session: Option<S>,
        command: Box<EntityCommand>,
        mailbox: &mut mpsc::Receiver<Box<EntityCommand>>,
    ) -> Option<S> {
        let command = *command;
        if command.call.context.expired() {
            let _ = command.reply.send(Err(ProxyError::DeadlineExceeded(
                "the request's deadline passed while it waited for its entity".into(),
            )));
            return session;
        }
        let reusable = match session {
            Some(mut current) => {
                if current.is_closed() {
                    self.close(current).await;
                    None
                } else {
                    Some(current)
                }
            }
            None => None,
        };
        let mut session = match reusable {
            Some(session) => session,
            None => match self.activate::<S>(Some(&command.call.context)).await {
                Ok(session) => session,
                Err(error) => {
                    let _ = command.reply.send(Err(error));
                    return None;
                }
            },
        };
        let after = session.run(&self.ctx, command).await;
        self.after(session, after, mailbox).await
    }

    /// Does what the session asked for after a command or something it heard.
    async fn after<S: Session>(
        &self,
        session: S,
        after: After,
        mailbox: &mut mpsc::Receiver<Box<EntityCommand>>,
    ) -> Option<S> {
        match after {
            After::Continue => Some(session),
            After::Restart => {
                self.close(session).await;
                self.restart().await
            }
            After::StreamFailed(reason) => {
                self.close(session).await;
                let mut failed = 0;
                while let Ok(queued) = mailbox.try_recv() {
                    failed += 1;
                    let _ = queued.reply.send(Err(ProxyError::Unavailable(format!(
                        "entity {} of {} failed ({reason}) before this command ran; retry",
                        self.entity_id(),
                        self.service()
                    ))));
                }
                if failed > 0 {
                    tracing::warn!(failed, "failed the commands queued behind a stream failure");
                }
                self.restart().await
            }
        }
    }

    /// Starts the entity over at once, so the function holds the stored state
    /// again before the next command arrives.
    async fn restart<S: Session>(&self) -> Option<S> {
        match self.activate::<S>(None).await {
            Ok(session) => Some(session),
            Err(error) => {
                tracing::warn!(%error, "cannot restart the entity now; the next command will try again");
                None
            }
        }
    }

    /// Loads the entity's state into a new session; its span is a step of the
    /// command that needed it (`context`), if any.
    async fn activate<S: Session>(&self, context: Option<&CallContext>) -> Result<S, ProxyError> {
        let started = Instant::now();
        let span = match context {
            Some(context) => trace::leaf(context, || trace::activation(self.service(), self.entity_id())),
            None => trace::activation(self.service(), self.entity_id()),
        };
        let session = S::activate(&self.ctx, &self.entity, self.entity_id())
            .instrument(span.clone())
            .await;
        trace::outcome(&span, session.as_ref().err());
        let session = session?;
        let metrics = &self.ctx.metrics;
        metrics.entities_active.inc();
        metrics.activations.with_label_values(&[self.service()]).inc();
        metrics
            .activation_seconds
            .with_label_values(&[self.service()])
            .observe(started.elapsed().as_secs_f64());
        Ok(session)
    }

    /// Lets every accepted write finish before the session goes away, so each
    /// held result is released or failed, and a new session recovers all of it.
    async fn close<S: Session>(&self, session: S) {
        session.close(&self.ctx).await;
        self.ctx.metrics.entities_active.dec();
    }
}

#[cfg(test)]
#[path = "actor_tests.rs"]
mod tests;
