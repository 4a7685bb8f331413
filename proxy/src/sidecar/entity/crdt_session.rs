//! The CRDT entity protocol from the proxy's side. The proxy holds the entity's
//! replicated state (this sidecar is its one replica while it owns the shard):
//! it loads the stored state into `CrdtInit` as the delta from nothing, applies
//! each delta the function sends as this replica's change, persists the new
//! state (fenced by its sequence number) before the reply is released, and
//! tells the function when the state differs from what the function's own
//! delta gave it (a vote's tally, a register the clock kept). A delete is for
//! good: the state is gone and the entity refuses changes afterwards. Write
//! consistency (`LOCAL`, `MAJORITY`, `ALL`) is accepted and means the same with
//! one replica: the state is durable in the store before the reply.
//!
//! Streamed commands: a command sent with `streamed` whose reply says
//! `streamed` stays open. The function may then send `CrdtStreamedMessage`s for
//! it at any time (typically when another command changed the state), which go
//! to the client in order until one says `end_stream`. When the client leaves
//! (or stops reading and its bounded queue fills), the function gets
//! `StreamCancelled` and its `CrdtStreamCancelledResponse` is honoured: its state
//! action persisted, its side effects performed. Messages the function sends
//! while a unary command is in flight are set aside and handled, in order,
//! before that command's reply; so every message is released only after the
//! state it follows from is durable.

use std::{collections::HashMap, sync::Arc};

use futures::{stream::FuturesUnordered, StreamExt};
use strata_proto::cloudstate::{
    crdt::{
        crdt_state_action, crdt_stream_in, crdt_stream_out, CrdtDelta, CrdtInit, CrdtReply, CrdtStateAction,
        CrdtStreamCancelledResponse, CrdtStreamIn, CrdtStreamOut, CrdtStreamedMessage,
    },
    StreamCancelled,
};
use strata_store::{CrdtWrite, EntityKey, StoreError};

use super::{
    client_stream::{Pushed, StreamTo, STREAM_BUFFER},
    conversation::{
        entity_stream, function_unavailable, persist_timed, report_refused, store_failed, store_unavailable,
        to_persist, Asked, Conversation,
    },
    crdt::{decode, encode, Crdt, Replica, View, Voters},
    decision::{optional_client_outcome, reply_to, required_client_outcome, Answered, Decision, Persist},
    session::{After, EntityCommand, Session, SessionContext},
};
use crate::{
    call::{CallContext, Next, Outcome},
    error::ProxyError,
    model::{EntityModel, MethodModel, Targets},
    reply_targets::{outcome_of_parts, resolve_effects},
    trace,
};

const CRDT_HANDLE: &str = "/cloudstate.crdt.Crdt/handle";

/// A CRDT entity's state as the proxy holds it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Held {
    /// Never written: the function's first delta creates it.
    Absent,
    Live(Box<Crdt>),
    /// Deleted for good.
    Deleted,
}

impl Held {
    /// What the function holds of this state.
    fn view(&self, voters: &Voters) -> Option<View> {
        match self {
            Held::Live(crdt) => Some(crdt.view(voters)),
            Held::Absent | Held::Deleted => None,
        }
    }
}

pub(super) struct CrdtSession {
    key: EntityKey,
    /// The gRPC service, for metrics and messages.
    service: String,
    held: Held,
    /// The stored state's sequence number (0: nothing stored).
    seq_nr: i64,
    /// The encoded size of the stored state.
    bytes: usize,
    conversation: Conversation<CrdtStreamIn, CrdtStreamOut>,
    /// Streamed commands the function keeps open, by command id.
    streams: HashMap<i64, Open>,
    /// Streamed commands whose client left: the function owes a
    /// `CrdtStreamCancelledResponse` for each, by the time given.
    cancelling: HashMap<i64, Owed>,
    /// How long the function may take to answer a cancellation.
    answer_within: std::time::Duration,
    /// The function ended the stream while nothing was in flight.
    ended: bool,
}

/// Who a streamed command's later messages are for.
struct Caller {
    method: Arc<MethodModel>,
    context: CallContext,
}

/// A cancelled streamed command whose response the function owes.
struct Owed {
    caller: Caller,
    by: tokio::time::Instant,
}

/// An open streamed command.
struct Open {
    caller: Caller,
    to_client: StreamTo,
}

/// What the session heard between commands.
pub(super) enum Heard {
    Function(Box<Result<Option<CrdtStreamOut>, tonic::Status>>),
    /// The client of this streamed command left.
    Left(i64),
    /// The function did not answer this command's cancellation in time.
    Overdue(i64),
}

/// What a command does to a CRDT entity: the state to store (if it changes),
/// then the correction to send the function if its own delta left it with
/// another value; and whether a streamed command stays open.
#[derive(Debug, Default, PartialEq)]
pub(super) struct CrdtChange {
    pub state: Option<Held>,
    pub correction: Option<CrdtDelta>,
    pub keep_open: bool,
}

/// Decides what the function's answer to command `command_id` (`streamed` if
/// the client asked for a stream) does, given the state held before it. Pure:
/// `replica` says who changes the state, and when.
pub(super) fn decide(
    from: &MethodModel,
    targets: &dyn Targets,
    command_id: i64,
    streamed: bool,
    held: &Held,
    replica: &Replica<'_>,
    out: CrdtStreamOut,
) -> Decision<CrdtChange> {
    let answered = out.message.map(|message| match message {
        crdt_stream_out::Message::Reply(reply) => Answered::Reply(reply),
        crdt_stream_out::Message::Failure(failure) => Answered::Failure(failure),
        crdt_stream_out::Message::StreamedMessage(_) | crdt_stream_out::Message::StreamCancelledResponse(_) => {
            Answered::Unexpected(format!(
                "a streamed message while unary command {command_id} was in flight"
            ))
        }
    });
    let CrdtReply {
        client_action,
        side_effects,
        state_action,
        streamed: keeps_open,
        ..
    } = match reply_to("CRDT", command_id, answered, |reply: &CrdtReply| reply.command_id) {
        Ok(reply) => reply,
        Err(decision) => return decision,
    };
    if keeps_open && !streamed {
        return Decision::Violation(format!("reply to unary command {command_id} says it is streamed"));
    }
    // A streamed command may answer with nothing yet (its messages come later).
    let (mut answer, restart) = if streamed {
        optional_client_outcome(from, targets, client_action, side_effects)
    } else {
        match required_client_outcome(from, targets, command_id, client_action, side_effects) {
            Ok(outcome) => outcome,
            Err(decision) => return decision,
        }
    };
    let (change, correction) = match state_change(held, state_action, replica) {
        Ok(changed) => changed,
        Err(Refused::Violation(what)) => return Decision::Violation(what),
        Err(Refused::Deleted) => {
            if answer.is_ok() {
                answer = Err(ProxyError::Gone(format!(
                    "this {} entity was deleted and cannot change again",
                    from.entity.service_name
                )));
            }
            (None, None)
        }
    };
    let restart = if answer.is_err() {
        // A function that changed a deleted entity's state starts over too.
        restart || held == &Held::Deleted
    } else {
        // After a delete the stream ends; the next command opens a new one.
        restart || change == Some(Held::Deleted)
    };
    let changes = change.is_some();
    let change = CrdtChange {
        state: change,
        correction,
        keep_open: keeps_open && !restart,
    };
    Decision::persist(change, changes, answer, restart)
}

/// What a state action does to the state held: the new state (if it changes)
/// and the correction the function needs.
fn state_change(
    held: &Held,
    action: Option<CrdtStateAction>,
    replica: &Replica<'_>,
) -> Result<(Option<Held>, Option<CrdtDelta>), Refused> {
    match action.and_then(|a| a.action) {
        None => Ok((None, None)),
        Some(crdt_state_action::Action::Delete(_)) => Ok((Some(Held::Deleted), None)),
        Some(crdt_state_action::Action::Update(delta)) => apply(held, &delta, replica),
    }
}

/// What a message the function sent between replies does.
#[derive(Debug, PartialEq)]
pub(super) enum Unasked {
    /// A message for an open stream: send `outcome` (if it has something for
    /// the client), and end the stream after it if `end`.
    Stream {
        command_id: i64,
        outcome: Result<Outcome, ProxyError>,
        end: bool,
    },
    /// The function's last word on a cancelled stream: store `change`, perform
    /// `effects`.
    Cancelled {
        command_id: i64,
        change: Option<Held>,
        correction: Option<CrdtDelta>,
        outcome: Result<Outcome, ProxyError>,
    },
    /// A message for a stream whose client already left: nothing to do.
    Late,
    StreamFailure(String),
    Violation(String),
}

/// Decides what a message the function sent while no reply was due does.
/// `method_of` gives the method of an open (or cancelling) streamed command.
pub(super) fn decide_unasked(
    targets: &dyn Targets,
    held: &Held,
    replica: &Replica<'_>,
    open: &dyn Fn(i64) -> Option<Arc<MethodModel>>,
    cancelling: &dyn Fn(i64) -> Option<Arc<MethodModel>>,
    out: CrdtStreamOut,
) -> Unasked {
    match out.message {
        Some(crdt_stream_out::Message::StreamedMessage(CrdtStreamedMessage {
            command_id,
            client_action,
            side_effects,
            end_stream,
        })) => {
            let Some(method) = open(command_id) else {
                if cancelling(command_id).is_some() {
                    return Unasked::Late;
                }
                return Unasked::Violation(format!(
                    "a streamed message for command {command_id}, which is not streaming"
                ));
            };
            let (outcome, _) = optional_client_outcome(&method, targets, client_action, side_effects);
            Unasked::Stream {
                command_id,
                end: end_stream || outcome.is_err(),
                outcome,
            }
        }
        Some(crdt_stream_out::Message::StreamCancelledResponse(CrdtStreamCancelledResponse {
            command_id,
            side_effects,
            state_action,
        })) => {
            let Some(method) = cancelling(command_id) else {
                return Unasked::Violation(format!(
                    "a stream-cancelled response for command {command_id}, which was not cancelled"
                ));
            };
            let outcome = resolve_effects(&method, targets, side_effects)
                .map(|resolved| outcome_of_parts(None, Next::Nothing, resolved));
            match state_change(held, state_action, replica) {
                Ok((change, correction)) => Unasked::Cancelled {
                    command_id,
                    change,
                    correction,
                    outcome,
                },
                Err(Refused::Violation(what)) => Unasked::Violation(what),
                Err(Refused::Deleted) => Unasked::Violation(format!(
                    "the response to cancelled command {command_id} changes a deleted entity"
                )),
            }
        }
        Some(crdt_stream_out::Message::Failure(failure)) if failure.command_id == 0 => {
            Unasked::StreamFailure(failure.description)
        }
        Some(crdt_stream_out::Message::Failure(failure)) => Unasked::Violation(format!(
            "a failure for command {} while no command was in flight",
            failure.command_id
        )),
        Some(crdt_stream_out::Message::Reply(reply)) => Unasked::Violation(format!(
            "a reply for command {} while no command was in flight",
            reply.command_id
        )),
        None => Unasked::Violation("empty message on the CRDT stream".into()),
    }
}

enum Refused {
    Violation(String),
    Deleted,
}

/// The state after the function's delta, and the delta that brings the
/// function's value to it when its own application of the delta differs.
fn apply(held: &Held, delta: &CrdtDelta, replica: &Replica<'_>) -> Result<(Option<Held>, Option<CrdtDelta>), Refused> {
    let voters = Voters::alone(replica.id);
    let (new, before) = match held {
        Held::Deleted => return Err(Refused::Deleted),
        Held::Absent => (Crdt::from_delta(delta, replica), None),
        Held::Live(crdt) => {
            let mut new = Crdt::clone(crdt);
            (new.apply(delta, replica).map(|()| new), Some(crdt.view(&voters)))
        }
    };
    let new = new.map_err(|e| Refused::Violation(format!("its delta cannot be applied: {e}")))?;
    let proxy_view = new.view(&voters);
    let mut function_view = before.unwrap_or_else(|| View::empty(new.kind()));
    let correction = match function_view.apply(delta) {
        Ok(()) => View::diff(&function_view, &proxy_view),
        // The function's value cannot take its own delta: give it the whole value.
        Err(_) => Some(proxy_view.as_delta()),
    };
    Ok((Some(Held::Live(Box::new(new))), correction))
}

fn replica(id: &str) -> Replica<'_> {
    let now_millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Replica { id, now_millis }
}

impl CrdtSession {
    /// Stores `change` as the next state (fenced by the sequence number), as a
    /// `store write` step of the call in `context`, if any.
    async fn persist(
        &mut self,
        ctx: &SessionContext,
        change: Held,
        context: Option<&CallContext>,
    ) -> Result<(), StoreError> {
        let write = CrdtWrite {
            key: self.key.clone(),
            seq_nr: self.seq_nr + 1,
            state: match &change {
                Held::Live(crdt) => Some(encode(crdt)),
                Held::Absent | Held::Deleted => None,
            },
        };
        let bytes = stored_size(write.state.as_ref());
        let span = match context {
            Some(context) => trace::leaf(context, || trace::store_write(&self.key.entity_id, bytes)),
            None => tracing::Span::none(),
        };
        persist_timed(ctx, &self.service, span, ctx.store.save_crdt(write)).await?;
        self.seq_nr += 1;
        self.bytes = bytes;
        self.held = change;
        Ok(())
    }

    fn send(&self, message: crdt_stream_in::Message) {
        let _ = self
            .conversation
            .send(Box::new(CrdtStreamIn { message: Some(message) }));
    }

    /// Tells the function that the client of `command_id` left; its response
    /// is awaited like any other message.
    fn cancel(&mut self, command_id: i64) {
        if let Some(open) = self.streams.remove(&command_id) {
            tracing::debug!(command_id, "streamed command cancelled");
            self.send(crdt_stream_in::Message::StreamCancelled(StreamCancelled {
                entity_id: self.key.entity_id.clone(),
                id: command_id,
            }));
            self.cancelling.insert(
                command_id,
                Owed {
                    caller: open.caller,
                    by: tokio::time::Instant::now() + self.answer_within,
                },
            );
        }
    }

    /// Ends every open stream with `error` (the entity restarts or goes away).
    fn end_streams(&mut self, error: &ProxyError) {
        for (_, open) in self.streams.drain() {
            open.to_client.end_with(error.clone());
        }
        self.cancelling.clear();
    }

    /// Handles one message the function sent while no reply was due.
    async fn unasked(&mut self, ctx: &SessionContext, out: CrdtStreamOut) -> After {
        let replica = replica(&ctx.instance_id);
        let decision = {
            let open = |id| self.streams.get(&id).map(|o: &Open| o.caller.method.clone());
            let cancelling = |id| self.cancelling.get(&id).map(|c: &Owed| c.caller.method.clone());
            decide_unasked(ctx.targets.as_ref(), &self.held, &replica, &open, &cancelling, out)
        };
        match decision {
            Unasked::Late => After::Continue,
            Unasked::Stream {
                command_id,
                outcome,
                end,
            } => {
                let Some(open) = self.streams.get(&command_id) else {
                    return After::Continue;
                };
                report_refused(ctx, &outcome);
                let skip = matches!(&outcome, Ok(Outcome { next: Next::Nothing, effects, timers }) if effects.is_empty() && timers.is_empty());
                let pushed = if skip {
                    Pushed::Queued
                } else {
                    open.to_client.push(outcome)
                };
                match pushed {
                    Pushed::Queued if end => drop(self.streams.remove(&command_id)),
                    Pushed::Queued => {}
                    Pushed::Gone => self.cancel(command_id),
                    Pushed::Overflowed => {
                        tracing::warn!(command_id, "a client did not read its stream; closing it");
                        if let Some(open) = self.streams.get_mut(&command_id) {
                            open.to_client.set_last_word(ProxyError::ResourceExhausted(format!(
                                "the client did not read its stream: {STREAM_BUFFER} messages were waiting, \
                                 so the stream was closed"
                            )));
                        }
                        self.cancel(command_id);
                    }
                }
                After::Continue
            }
            Unasked::Cancelled {
                command_id,
                change,
                correction,
                outcome,
            } => {
                let Some(Owed { caller, .. }) = self.cancelling.remove(&command_id) else {
                    return After::Continue;
                };
                if let Some(change) = change {
                    let restart = change == Held::Deleted;
                    if let Err(error) = self.persist(ctx, change, None).await {
                        tracing::warn!(%error, command_id, "the state of a cancelled stream's response was not stored; restarting");
                        self.end_streams(&store_failed(error));
                        return After::Restart;
                    }
                    if restart {
                        return After::Restart;
                    }
                }
                if let Some(delta) = correction {
                    self.send(crdt_stream_in::Message::Delta(delta));
                }
                match outcome {
                    Ok(outcome) if !outcome.effects.is_empty() => {
                        let _ = ctx.detached.send((outcome, caller.context));
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, command_id, "a cancelled stream's side effects were refused");
                        ctx.function.report_error(error.to_string());
                    }
                }
                After::Continue
            }
            Unasked::StreamFailure(description) => {
                tracing::warn!(%description, "the user function failed the entity's stream");
                self.end_streams(&ProxyError::Failure(description.clone()));
                After::StreamFailed(description)
            }
            Unasked::Violation(what) => {
                ctx.function.report_error(format!(
                    "protocol violation by entity {} of {}: {what}",
                    self.key.entity_id, self.service
                ));
                self.end_streams(&ProxyError::Internal(format!(
                    "the user function broke the protocol ({what}); the entity was restarted"
                )));
                After::Restart
            }
        }
    }
}

impl Session for CrdtSession {
    type Heard = Heard;

    async fn activate(ctx: &SessionContext, entity: &EntityModel, entity_id: &str) -> Result<Self, ProxyError> {
        let key = EntityKey::new(&entity.persistence_id, entity_id);
        let record = ctx.store.load_crdt(&key).await.map_err(store_unavailable)?;
        let bytes = stored_size(record.as_ref().and_then(|r| r.state.as_ref()));
        let (held, seq_nr) = match record {
            None => (Held::Absent, 0),
            Some(record) => match record.state {
                None => (Held::Deleted, record.seq_nr),
                Some(state) => {
                    let crdt = decode(&state).map_err(|error| {
                        tracing::error!(%error, entity_id, service = %entity.service_name, "unreadable CRDT state");
                        ProxyError::Internal(format!(
                            "the stored state of entity {entity_id:?} cannot be read; it was left as it is"
                        ))
                    })?;
                    (Held::Live(Box::new(crdt)), record.seq_nr)
                }
            },
        };
        let (to_function, inbound) = entity_stream();
        let delta = held.view(&Voters::alone(&ctx.instance_id)).map(|view| view.as_delta());
        let _ = to_function.send(Box::new(CrdtStreamIn {
            message: Some(crdt_stream_in::Message::Init(CrdtInit {
                service_name: entity.service_name.clone(),
                entity_id: entity_id.to_string(),
                delta,
            })),
        }));
        let from_function = ctx.function.open_entity_stream(CRDT_HANDLE, inbound);
        Ok(Self {
            key,
            service: entity.service_name.clone(),
            held,
            seq_nr,
            bytes,
            conversation: Conversation::new(to_function, from_function, |command| CrdtStreamIn {
                message: Some(crdt_stream_in::Message::Command(command)),
            }),
            streams: HashMap::new(),
            cancelling: HashMap::new(),
            answer_within: ctx.command_timeout,
            ended: false,
        })
    }

    fn is_closed(&mut self) -> bool {
        // Between commands the actor listens, so it hears the end itself.
        self.ended
    }

    async fn run(&mut self, ctx: &SessionContext, command: EntityCommand) -> After {
        let streamed = command.stream.is_some();
        // Messages for streamed commands that come before this command's reply
        // are handled (in order) before it.
        let mut set_aside = Vec::new();
        let aside = |out: CrdtStreamOut| match &out.message {
            Some(crdt_stream_out::Message::StreamedMessage(_))
            | Some(crdt_stream_out::Message::StreamCancelledResponse(_)) => {
                set_aside.push(out);
                None
            }
            _ => Some(out),
        };
        let asked = self.conversation.ask_with(ctx, command, aside).await;
        for out in set_aside {
            match self.unasked(ctx, out).await {
                After::Continue => {}
                after => {
                    if let Ok(Asked { reply, .. }) = asked {
                        let _ = reply.send(Err(ProxyError::Unavailable(
                            "the entity restarted before answering; retry".into(),
                        )));
                    }
                    return after;
                }
            }
        }
        let Asked {
            call,
            reply,
            stream,
            id,
            out,
        } = match asked {
            Ok(asked) => asked,
            Err(after) => return after,
        };
        let replica = replica(&ctx.instance_id);
        let decision = decide(
            &call.method,
            ctx.targets.as_ref(),
            id,
            streamed,
            &self.held,
            &replica,
            out,
        );
        let (
            Persist {
                change,
                answer,
                restart,
            },
            reply,
        ) = match to_persist(decision, ctx, &call, reply) {
            Ok(persist) => persist,
            Err(after) => return after,
        };
        let CrdtChange {
            state: change,
            correction,
            keep_open,
        } = change;
        if let Some(change) = change {
            if let Err(error) = self.persist(ctx, change, Some(&call.context)).await {
                let _ = reply.send(Err(store_failed(error)));
                return After::Restart;
            }
        }
        if let Some(delta) = correction {
            self.send(crdt_stream_in::Message::Delta(delta));
        }
        let _ = reply.send(answer);
        if let (true, Some(to_client)) = (keep_open, stream) {
            self.streams.insert(
                id,
                Open {
                    caller: Caller {
                        method: call.method.clone(),
                        context: call.context,
                    },
                    to_client,
                },
            );
        }
        After::restarting_if(restart)
    }

    async fn listen(&mut self) -> Heard {
        if self.ended {
            return std::future::pending().await;
        }
        let mut gone: FuturesUnordered<_> = self
            .streams
            .iter()
            .map(|(id, open)| async move {
                open.to_client.gone().await;
                *id
            })
            .collect();
        let overdue = self.cancelling.iter().map(|(id, owed)| (owed.by, *id)).min();
        let overdue = async {
            match overdue {
                Some((by, id)) => {
                    tokio::time::sleep_until(by).await;
                    id
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            message = self.conversation.heard() => Heard::Function(Box::new(message)),
            Some(id) = gone.next() => Heard::Left(id),
            id = overdue => Heard::Overdue(id),
        }
    }

    async fn on_heard(&mut self, ctx: &SessionContext, heard: Heard) -> After {
        match heard {
            Heard::Left(command_id) => {
                self.cancel(command_id);
                After::Continue
            }
            Heard::Overdue(command_id) => {
                // Not waited for any longer: the entity may passivate again.
                self.cancelling.remove(&command_id);
                tracing::warn!(
                    command_id,
                    "no answer to a stream's cancellation; its change (if any) is lost"
                );
                ctx.function.report_error(format!(
                    "entity {} of {} did not answer the cancellation of streamed command {command_id} within {:?}",
                    self.key.entity_id, self.service, self.answer_within
                ));
                After::Continue
            }
            Heard::Function(heard) => match *heard {
                Ok(Some(out)) => self.unasked(ctx, out).await,
                ended => {
                    // The function ended its stream: the next command opens another.
                    self.ended = true;
                    let error = match ended {
                        Err(status) => function_unavailable(ctx, &status),
                        Ok(_) => ProxyError::Unavailable("the user function ended the entity's stream; retry".into()),
                    };
                    self.end_streams(&error);
                    After::Continue
                }
            },
        }
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    fn streams(&self) -> usize {
        self.streams.len() + self.cancelling.len()
    }

    async fn close(mut self, _ctx: &SessionContext) {
        self.end_streams(&ProxyError::Unavailable(
            "the entity's stream on this instance ended (it was restarted, moved or shut down); open it again".into(),
        ));
    }
}

fn stored_size(state: Option<&prost_types::Any>) -> usize {
    state.map_or(0, prost::Message::encoded_len)
}

#[cfg(test)]
#[path = "crdt_session_tests.rs"]
mod tests;
