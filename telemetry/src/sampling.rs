//! The head decision: whether a call is traced, made once at its ingress (the
//! gateway, or a sidecar for a call that did not come through one) before any
//! span exists. The decision travels in `traceparent`'s sampled flag, so every
//! later hop makes spans for a sampled call and none at all for the rest.
//! [`decide`] is pure; the process's [`HeadRule`] is set once when telemetry is
//! installed, and without it (nothing exported) calls pass through unchanged.

use std::sync::OnceLock;

use crate::TraceParent;

/// Which calls are traced, as the ingress applies it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadRule {
    /// Whether a caller's sampled flag decides (a parent-based sampler).
    pub parent_based: bool,
    /// The share of the other calls that are traced, from 0 to 1, chosen by
    /// trace id.
    pub ratio: f64,
}

/// The trace context a call proceeds with, given the one it arrived with.
/// Past the ingress the caller's decision stands. At the ingress a
/// parent-based rule keeps the caller's flag, and otherwise the ratio decides
/// by trace id (`fresh` gives one when the caller sent none). A sampled call
/// that starts a trace here gets `None`, so its first span starts the trace;
/// an unsampled one gets a context with the flag clear, which is what the
/// later hops, and the function, see.
pub fn decide(
    rule: HeadRule,
    incoming: Option<TraceParent>,
    ingress: bool,
    fresh: impl FnOnce() -> TraceParent,
) -> Option<TraceParent> {
    match incoming {
        Some(parent) if !ingress || rule.parent_based => Some(parent),
        Some(parent) => Some(flagged(parent, chosen(rule.ratio, &parent.trace_id))),
        None => {
            let fresh = fresh();
            (!chosen(rule.ratio, &fresh.trace_id)).then(|| flagged(fresh, false))
        }
    }
}

/// Whether a trace is in the `ratio` share, by the last 8 bytes of its id
/// (which W3C asks to be random), so every process agrees.
pub fn chosen(ratio: f64, trace_id: &[u8; 16]) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let tail = u64::from_be_bytes(trace_id[8..].try_into().expect("8 bytes")) >> 1;
    (tail as f64) < ratio * (1u64 << 63) as f64
}

fn flagged(parent: TraceParent, sampled: bool) -> TraceParent {
    TraceParent {
        flags: if sampled { parent.flags | 1 } else { parent.flags & !1 },
        ..parent
    }
}

static RULE: OnceLock<HeadRule> = OnceLock::new();

/// Sets the process's rule; the first call wins.
pub(crate) fn set_rule(rule: HeadRule) {
    let _ = RULE.set(rule);
}

/// [`decide`] with the process's rule; the context unchanged when nothing is
/// exported.
pub fn head_decision(incoming: Option<TraceParent>, ingress: bool) -> Option<TraceParent> {
    match RULE.get() {
        Some(rule) => decide(*rule, incoming, ingress, fresh_context),
        None => incoming,
    }
}

/// Whether a call with this context makes spans: all do when nothing is
/// exported (spans then only carry log lines' ids, and cost nothing unless
/// something wants them); otherwise only sampled ones.
pub fn makes_spans(trace: Option<&TraceParent>) -> bool {
    RULE.get().is_none() || trace.is_none_or(TraceParent::sampled)
}

/// A new random trace context, unsampled: its parent id names the span a
/// record of the call gets, should it be kept (see `record.rs`).
fn fresh_context() -> TraceParent {
    use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
    TraceParent {
        trace_id: RandomIdGenerator::default().new_trace_id().to_bytes(),
        parent_id: fresh_span_id(),
        flags: 0,
    }
}

/// A new random span id.
pub fn fresh_span_id() -> [u8; 8] {
    use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
    RandomIdGenerator::default().new_span_id().to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: TraceParent = TraceParent {
        trace_id: [7; 16],
        parent_id: [9; 8],
        flags: 1,
    };

    fn id(tail: u64) -> [u8; 16] {
        let mut id = [0xab; 16];
        id[8..].copy_from_slice(&tail.to_be_bytes());
        id
    }

    fn fresh(tail: u64) -> impl FnOnce() -> TraceParent {
        move || TraceParent {
            trace_id: id(tail),
            parent_id: [3; 8],
            flags: 0,
        }
    }

    const STORE: HeadRule = HeadRule {
        parent_based: true,
        ratio: 0.01,
    };

    #[test]
    fn a_clients_sampled_traceparent_is_always_kept() {
        assert_eq!(decide(STORE, Some(CLIENT), true, fresh(0)), Some(CLIENT));
        let never = HeadRule {
            parent_based: true,
            ratio: 0.0,
        };
        assert_eq!(decide(never, Some(CLIENT), true, fresh(0)), Some(CLIENT));
    }

    #[test]
    fn a_clients_unsampled_traceparent_stays_unsampled_under_a_parent_based_rule() {
        let unsampled = TraceParent { flags: 0, ..CLIENT };
        assert_eq!(decide(STORE, Some(unsampled), true, fresh(0)), Some(unsampled));
    }

    #[test]
    fn a_call_without_context_is_sampled_by_the_ratio() {
        // Chosen: the trace starts at the first span, so no context goes on.
        assert_eq!(decide(STORE, None, true, fresh(0)), None);
        // Not chosen: a fresh context with the flag clear.
        let unsampled = decide(STORE, None, true, fresh(u64::MAX)).unwrap();
        assert_eq!(unsampled.trace_id, id(u64::MAX));
        assert!(!unsampled.sampled());
    }

    #[test]
    fn past_the_ingress_the_callers_decision_stands() {
        let always = HeadRule {
            parent_based: false,
            ratio: 1.0,
        };
        let unsampled = TraceParent { flags: 0, ..CLIENT };
        assert_eq!(decide(always, Some(unsampled), false, fresh(0)), Some(unsampled));
        // At the ingress a rule that is not parent-based overrides the caller.
        assert_eq!(decide(always, Some(unsampled), true, fresh(0)), Some(CLIENT));
        let never = HeadRule {
            parent_based: false,
            ratio: 0.0,
        };
        assert_eq!(decide(never, Some(CLIENT), true, fresh(0)), Some(unsampled));
    }

    #[test]
    fn the_ratio_is_honoured_over_many_ids() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let sampled = (0..100_000)
            .filter(|_| {
                // xorshift: spread ids, as random ones are.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chosen(0.01, &id(state))
            })
            .count();
        assert!((700..1300).contains(&sampled), "{sampled} of 100000 at 1%");
        assert!(chosen(1.0, &id(u64::MAX)));
        assert!(!chosen(0.0, &id(0)));
    }
}
