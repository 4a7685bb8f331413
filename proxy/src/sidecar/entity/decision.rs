//! The one shape of what the proxy does with the function's answer to a command,
//! shared by the entity kinds ([`Decision`]), and the checks every kind makes
//! before its own: which message came, whether it answers the command in
//! flight, what its client action and side effects lead to, and what a failed
//! command may keep (nothing). Pure: each kind's `decide` is tested on exact
//! decisions, with no function or store.

use strata_proto::cloudstate::{client_action::Action, ClientAction, Failure, SideEffect};

use crate::{
    call::{Answer, Next, Outcome},
    error::ProxyError,
    model::{MethodModel, Targets},
    reply_targets::{outcome_of_parts, resolve_effects, resolve_forward},
};

/// What the proxy must do with one message from the function.
#[derive(Debug, PartialEq)]
pub(super) enum Decision<C> {
    Persist(Persist<C>),
    /// The function failed the whole stream.
    StreamFailure(String),
    /// The function broke the protocol: report it, fail the command, restart.
    Violation(String),
}

/// Persist `change` (the kind's own: events and a snapshot, a value, a CRDT
/// state), then release `answer`, then restart the entity if `restart`.
#[derive(Debug, PartialEq)]
pub(super) struct Persist<C> {
    pub change: C,
    pub answer: Result<Outcome, ProxyError>,
    pub restart: bool,
}

impl<C: Default> Decision<C> {
    /// Persist `change` (which `changes` the stored state, or not) and release
    /// `answer`. A failed command stores nothing (the default change), and a
    /// function that changed its state for it holds state the store lacks, so it
    /// starts over from the store.
    pub(super) fn persist(change: C, changes: bool, answer: Result<Outcome, ProxyError>, restart: bool) -> Self {
        if answer.is_err() {
            return Decision::Persist(Persist {
                restart: restart || changes,
                change: C::default(),
                answer,
            });
        }
        Decision::Persist(Persist {
            change,
            answer,
            restart,
        })
    }
}

/// A message of the function while a command is in flight, as every kind has it.
pub(super) enum Answered<R> {
    Reply(R),
    Failure(Failure),
    /// A message of the kind that never answers a command (a violation here).
    Unexpected(String),
}

/// The reply to command `command_id` in `answered` (`None`: an empty message on
/// the `kind` stream; `replied` reads the id a reply names), or the decision
/// that ends the command here.
pub(super) fn reply_to<R, C>(
    kind: &str,
    command_id: i64,
    answered: Option<Answered<R>>,
    replied: impl Fn(&R) -> i64,
) -> Result<R, Decision<C>> {
    let reply = match answered {
        Some(Answered::Reply(reply)) => reply,
        Some(Answered::Failure(failure)) => {
            return Err(match stream_failure(command_id, failure) {
                Ok(description) => Decision::StreamFailure(description),
                Err(what) => Decision::Violation(what),
            })
        }
        Some(Answered::Unexpected(what)) => return Err(Decision::Violation(what)),
        None => return Err(Decision::Violation(format!("empty message on the {kind} stream"))),
    };
    if replied(&reply) != command_id {
        return Err(Decision::Violation(format!(
            "reply for command {} while command {command_id} was in flight",
            replied(&reply)
        )));
    }
    Ok(reply)
}

/// [`client_outcome`] of a reply that must have a client action; without one
/// the function broke the protocol.
pub(super) fn required_client_outcome<C>(
    from: &MethodModel,
    targets: &dyn Targets,
    command_id: i64,
    action: Option<ClientAction>,
    side_effects: Vec<SideEffect>,
) -> Result<(Result<Outcome, ProxyError>, bool), Decision<C>> {
    client_outcome(from, targets, action, side_effects)
        .ok_or_else(|| Decision::Violation(format!("reply to command {command_id} has no client action")))
}

/// What a reply means for the client: its outcome, and whether the entity must
/// restart (the function failed with `restart`). `None` when the reply has no
/// client action (a protocol violation). A failure performs no side effects; a
/// forward or side effect the proxy refuses fails the command.
pub(super) fn client_outcome(
    from: &MethodModel,
    targets: &dyn Targets,
    action: Option<ClientAction>,
    side_effects: Vec<SideEffect>,
) -> Option<(Result<Outcome, ProxyError>, bool)> {
    action.as_ref().and_then(|a| a.action.as_ref())?;
    Some(optional_client_outcome(from, targets, action, side_effects))
}

/// [`client_outcome`] where the client action may be missing (a message of a
/// streamed command that sends the client nothing, only side effects).
pub(super) fn optional_client_outcome(
    from: &MethodModel,
    targets: &dyn Targets,
    action: Option<ClientAction>,
    side_effects: Vec<SideEffect>,
) -> (Result<Outcome, ProxyError>, bool) {
    let next = match action.and_then(|a| a.action) {
        None => Ok((Next::Nothing, None)),
        Some(Action::Failure(f)) => return (Err(ProxyError::Failure(f.description)), f.restart),
        Some(Action::Reply(r)) => Ok((
            Next::Reply(Answer {
                payload: r.payload.unwrap_or_default(),
                metadata: r.metadata,
            }),
            None,
        )),
        Some(Action::Forward(f)) => resolve_forward(targets, from, f),
    };
    let outcome = next.and_then(|(next, forwarded)| {
        Ok(outcome_of_parts(
            forwarded,
            next,
            resolve_effects(from, targets, side_effects)?,
        ))
    });
    (outcome, false)
}

/// A stream-level `Failure`: fails the command in flight (or the whole stream,
/// id 0); for any other command it is a violation.
pub(super) fn stream_failure(command_id: i64, failure: Failure) -> Result<String, String> {
    if failure.command_id == command_id || failure.command_id == 0 {
        Ok(failure.description)
    } else {
        Err(format!(
            "failure for command {} while command {command_id} was in flight",
            failure.command_id
        ))
    }
}
