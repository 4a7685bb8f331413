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

use strata_proto::cloudstate::crdt::{
    crdt_state_action, crdt_stream_in, crdt_stream_out, CrdtDelta, CrdtInit, CrdtReply, CrdtStreamIn, CrdtStreamOut,
};
use strata_store::{CrdtWrite, EntityKey};

use super::{
    conversation::{
        client_outcome, entity_stream, fail_stream, persist_timed, report_refused, store_failed, store_unavailable,
        stream_failure, violation, Asked, Conversation,
    },
    crdt::{decode, encode, Crdt, Replica, View, Voters},
    session::{After, EntityCommand, Session, SessionContext},
};
use crate::{
    call::{Outcome, Targets},
    error::ProxyError,
    model::{EntityModel, MethodModel},
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
    held: Held,
    /// The stored state's sequence number (0: nothing stored).
    seq_nr: i64,
    /// The encoded size of the stored state.
    bytes: usize,
    conversation: Conversation<CrdtStreamIn, CrdtStreamOut>,
}

/// What a reply means for the entity.
#[derive(Debug, PartialEq)]
pub(super) enum Decision {
    /// Release `answer`, after storing `change` if there is one; then send the
    /// function `correction` if its own delta left it with another value.
    Persist {
        change: Option<Held>,
        answer: Result<Outcome, ProxyError>,
        correction: Option<CrdtDelta>,
        restart: bool,
    },
    StreamFailure(String),
    Violation(String),
}

/// Decides what the function's answer to command `command_id` does, given the
/// state held before it. Pure: `replica` says who changes the state, and when.
pub(super) fn decide(
    from: &MethodModel,
    targets: &dyn Targets,
    command_id: i64,
    held: &Held,
    replica: &Replica<'_>,
    out: CrdtStreamOut,
) -> Decision {
    let reply = match out.message {
        Some(crdt_stream_out::Message::Reply(reply)) => reply,
        Some(crdt_stream_out::Message::Failure(failure)) => {
            return match stream_failure(command_id, failure) {
                Ok(description) => Decision::StreamFailure(description),
                Err(what) => Decision::Violation(what),
            };
        }
        Some(crdt_stream_out::Message::StreamedMessage(_) | crdt_stream_out::Message::StreamCancelledResponse(_)) => {
            return Decision::Violation(format!(
                "a streamed message while unary command {command_id} was in flight"
            ))
        }
        None => return Decision::Violation("empty message on the CRDT stream".into()),
    };
    let CrdtReply {
        command_id: replied,
        client_action,
        side_effects,
        state_action,
        streamed,
    } = reply;
    if replied != command_id {
        return Decision::Violation(format!(
            "reply for command {replied} while command {command_id} was in flight"
        ));
    }
    if streamed {
        return Decision::Violation(format!("reply to unary command {command_id} says it is streamed"));
    }
    let Some((mut answer, mut restart)) = client_outcome(from, targets, client_action, side_effects) else {
        return Decision::Violation(format!("reply to command {command_id} has no client action"));
    };
    let (change, correction) = match state_action.and_then(|a| a.action) {
        None => (None, None),
        Some(crdt_state_action::Action::Delete(_)) => (Some(Held::Deleted), None),
        Some(crdt_state_action::Action::Update(delta)) => match apply(held, &delta, replica) {
            Ok(applied) => applied,
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
        },
    };
    if answer.is_err() {
        // The function changed its state for a failed command (or for a deleted
        // entity): it starts over from the stored state.
        return Decision::Persist {
            restart: restart || change.is_some() || held == &Held::Deleted,
            change: None,
            correction: None,
            answer,
        };
    }
    // After a delete the stream ends; the next command opens a new one.
    restart |= change == Some(Held::Deleted);
    Decision::Persist {
        change,
        answer,
        correction,
        restart,
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

impl Session for CrdtSession {
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
            held,
            seq_nr,
            bytes,
            conversation: Conversation::new(to_function, from_function),
        })
    }

    fn is_closed(&mut self) -> bool {
        self.conversation.is_closed()
    }

    async fn run(&mut self, ctx: &SessionContext, command: EntityCommand) -> After {
        let wrap = |command| CrdtStreamIn {
            message: Some(crdt_stream_in::Message::Command(command)),
        };
        let Asked { call, reply, id, out } = match self.conversation.ask(ctx, command, wrap).await {
            Ok(asked) => asked,
            Err(after) => return after,
        };
        let replica = replica(&ctx.instance_id);
        let decision = decide(&call.method, ctx.targets.as_ref(), id, &self.held, &replica, out);
        let (change, answer, correction, restart) = match decision {
            Decision::Violation(what) => return violation(ctx, &call, reply, &what),
            Decision::StreamFailure(description) => return fail_stream(reply, description),
            Decision::Persist {
                change,
                answer,
                correction,
                restart,
            } => (change, answer, correction, restart),
        };
        report_refused(ctx, &answer);
        if let Some(change) = change {
            let write = CrdtWrite {
                key: self.key.clone(),
                seq_nr: self.seq_nr + 1,
                state: match &change {
                    Held::Live(crdt) => Some(encode(crdt)),
                    Held::Absent | Held::Deleted => None,
                },
            };
            let service = call.method.entity.service_name.as_str();
            let bytes = stored_size(write.state.as_ref());
            if let Err(error) = persist_timed(ctx, service, ctx.store.save_crdt(write)).await {
                let _ = reply.send(Err(store_failed(error)));
                return After::Restart;
            }
            self.seq_nr += 1;
            self.bytes = bytes;
            self.held = change;
        }
        if let Some(delta) = correction {
            let _ = self.conversation.send(Box::new(CrdtStreamIn {
                message: Some(crdt_stream_in::Message::Delta(delta)),
            }));
        }
        let _ = reply.send(answer);
        if restart {
            After::Restart
        } else {
            After::Continue
        }
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    async fn close(self, _ctx: &SessionContext) {}
}

fn stored_size(state: Option<&prost_types::Any>) -> usize {
    state.map_or(0, prost::Message::encoded_len)
}

#[cfg(test)]
#[path = "crdt_session_tests.rs"]
mod tests;
