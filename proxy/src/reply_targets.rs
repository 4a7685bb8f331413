//! What a function's reply asks for beyond its answer, checked before anything
//! is stored: its forward and side effects become calls (their targets exist,
//! are unary and take the payload's type), and those to the built-in
//! `strata.timers.Timers` become timer changes. Pure: no I/O.

use prost_types::Any;
use strata_proto::cloudstate::SideEffect;

use crate::{
    call::{resolve_target, Answer, Effect, Next, Outcome, TargetKind, TimerRequest},
    error::ProxyError,
    model::{MethodModel, Targets},
    timer_request::{is_timers, resolve_timer},
};

/// Checks a forward the function asked for: what the client gets next, and the
/// timer change when the forward goes to the built-in timers service (whose
/// answer, `google.protobuf.Empty`, is then the client's).
pub fn resolve_forward(
    targets: &dyn Targets,
    from: &MethodModel,
    forward: strata_proto::cloudstate::Forward,
) -> Result<(Next, Option<TimerRequest>), ProxyError> {
    if is_timers(&forward.service_name) {
        let request = resolve_timer(targets, from, &forward.command_name, forward.payload, true)?;
        let empty = Answer::new(Any {
            type_url: "type.googleapis.com/google.protobuf.Empty".into(),
            value: Vec::new(),
        });
        return Ok((Next::Reply(empty), Some(request)));
    }
    let call = resolve_target(
        targets,
        from,
        TargetKind::Forward,
        &forward.service_name,
        &forward.command_name,
        forward.payload,
        forward.metadata,
    )?;
    Ok((Next::Forward(Box::new(call)), None))
}

/// Checks a reply's side effects and turns them into calls, and those to the
/// built-in timers service into timer changes.
pub fn resolve_effects(
    from: &MethodModel,
    targets: &dyn Targets,
    side_effects: Vec<SideEffect>,
) -> Result<(Vec<Effect>, Vec<TimerRequest>), ProxyError> {
    let mut effects = Vec::new();
    let mut timers = Vec::new();
    for effect in side_effects {
        if is_timers(&effect.service_name) {
            timers.push(resolve_timer(
                targets,
                from,
                &effect.command_name,
                effect.payload,
                false,
            )?);
            continue;
        }
        effects.push(Effect {
            call: resolve_target(
                targets,
                from,
                TargetKind::SideEffect,
                &effect.service_name,
                &effect.command_name,
                effect.payload,
                effect.metadata,
            )?,
            synchronous: effect.synchronous,
        });
    }
    Ok((effects, timers))
}

/// The outcome of a reply whose next step and side effects were resolved.
pub fn outcome_of_parts(
    forwarded: Option<TimerRequest>,
    next: Next,
    (effects, mut timers): (Vec<Effect>, Vec<TimerRequest>),
) -> Outcome {
    // A forward to the timers service is the reply's last word: after the side effects.
    timers.extend(forwarded);
    Outcome { next, effects, timers }
}

#[cfg(test)]
#[path = "reply_targets_tests.rs"]
mod tests;
