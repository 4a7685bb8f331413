//! The laws every CRDT here must keep, as property tests over histories of
//! random deltas applied by three replicas that merge with each other now and
//! then: merge is commutative, associative and idempotent; applying a delta
//! only moves a state forward (merging the state it came from changes nothing);
//! the function's value after a delta is the CRDT's value after it; the delta
//! between two values turns one into the other; and the stored form reads back.

use proptest::prelude::*;
use prost::Message;
use prost_types::Any;
use strata_proto::cloudstate::crdt::{
    crdt_delta::Delta, CrdtDelta, FlagDelta, GCounterDelta, GSetDelta, LwwRegisterDelta, OrMapDelta, OrMapEntryDelta,
    OrSetDelta, PnCounterDelta, VoteDelta,
};

use super::*;

const REPLICAS: [&str; 3] = ["a", "b", "c"];

fn text(s: &str) -> Any {
    Any {
        type_url: "p.cloudstate.io/string".into(),
        value: s.to_string().encode_to_vec(),
    }
}

fn element() -> impl Strategy<Value = Any> {
    prop::sample::select(vec!["w", "x", "y", "z"]).prop_map(text)
}

fn elements() -> impl Strategy<Value = Vec<Any>> {
    prop::collection::vec(element(), 0..3)
}

fn wrap(delta: Delta) -> CrdtDelta {
    CrdtDelta { delta: Some(delta) }
}

/// A delta a function could send for a CRDT of `kind` (ORMap values: the kind
/// follows the key, so replicas agree on it).
fn delta(kind: Kind, depth: u32) -> BoxedStrategy<CrdtDelta> {
    match kind {
        Kind::GCounter => (0u64..5)
            .prop_map(|increment| wrap(Delta::Gcounter(GCounterDelta { increment })))
            .boxed(),
        Kind::PnCounter => (-5i64..5)
            .prop_map(|change| wrap(Delta::Pncounter(PnCounterDelta { change })))
            .boxed(),
        Kind::GSet => elements()
            .prop_map(|added| wrap(Delta::Gset(GSetDelta { added })))
            .boxed(),
        Kind::OrSet => (prop::bool::weighted(0.1), elements(), elements())
            .prop_map(|(cleared, removed, added)| {
                wrap(Delta::Orset(OrSetDelta {
                    cleared,
                    removed,
                    added,
                }))
            })
            .boxed(),
        Kind::LwwRegister => (element(), 0i32..4, -3i64..3)
            .prop_map(|(value, clock, custom_clock_value)| {
                wrap(Delta::Lwwregister(LwwRegisterDelta {
                    value: Some(value),
                    clock,
                    custom_clock_value,
                }))
            })
            .boxed(),
        Kind::Flag => any::<bool>()
            .prop_map(|value| wrap(Delta::Flag(FlagDelta { value })))
            .boxed(),
        Kind::Vote => any::<bool>()
            .prop_map(|self_vote| {
                wrap(Delta::Vote(VoteDelta {
                    self_vote,
                    votes_for: 0,
                    total_voters: 0,
                }))
            })
            .boxed(),
        Kind::OrMap => {
            let keys = ["GCounter", "ORSet", "PNCounter", "ORMap"];
            let depth_keys = if depth == 0 { 3 } else { 4 };
            let entry = prop::sample::select(keys[..depth_keys].to_vec()).prop_flat_map(move |key| {
                let kind = match key {
                    "GCounter" => Kind::GCounter,
                    "ORSet" => Kind::OrSet,
                    "PNCounter" => Kind::PnCounter,
                    _ => Kind::OrMap,
                };
                delta(kind, depth.saturating_sub(1)).prop_map(move |d| OrMapEntryDelta {
                    key: Some(text(key)),
                    delta: Some(d),
                })
            });
            (
                prop::bool::weighted(0.1),
                prop::collection::vec(prop::sample::select(keys.to_vec()).prop_map(text), 0..2),
                prop::collection::vec(entry.clone(), 0..2),
                prop::collection::vec(entry, 0..2),
            )
                .prop_map(|(cleared, removed, updated, added)| {
                    wrap(Delta::Ormap(OrMapDelta {
                        cleared,
                        removed,
                        updated,
                        added,
                    }))
                })
                .boxed()
        }
    }
}

/// One step of a history: a replica applies a delta, or one replica merges
/// another's state.
#[derive(Debug, Clone)]
enum Step {
    Apply(usize, CrdtDelta),
    Merge(usize, usize),
}

fn history(kind: Kind) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        3 => (0usize..3, delta(kind, 1)).prop_map(|(r, d)| Step::Apply(r, d)),
        1 => (0usize..3, 0usize..3).prop_map(|(from, to)| Step::Merge(from, to)),
    ];
    prop::collection::vec(step, 0..24)
}

/// The three replicas' states after a history (a delta a CRDT refuses leaves
/// its state as it was).
fn run(kind: Kind, steps: &[Step]) -> Vec<Crdt> {
    let mut states = vec![Crdt::empty(kind); 3];
    for (time, step) in steps.iter().enumerate() {
        match step {
            Step::Apply(r, d) => {
                let replica = Replica {
                    id: REPLICAS[*r],
                    now_millis: time as i64 * 10,
                };
                let _ = states[*r].apply(d, &replica);
            }
            Step::Merge(from, to) => {
                let other = states[*from].clone();
                states[*to].merge(&other).unwrap();
            }
        }
    }
    states
}

fn merged(a: &Crdt, b: &Crdt) -> Crdt {
    let mut a = a.clone();
    a.merge(b).unwrap();
    a
}

fn voters(own: &str) -> Voters {
    Voters {
        own: own.to_string(),
        live: REPLICAS.iter().map(|r| r.to_string()).collect(),
    }
}

fn check_laws(kind: Kind, steps: &[Step], last: &CrdtDelta) -> Result<(), TestCaseError> {
    let states = run(kind, steps);
    let (a, b, c) = (&states[0], &states[1], &states[2]);
    // --- merge is commutative, associative and idempotent
    prop_assert_eq!(merged(a, b), merged(b, a));
    prop_assert_eq!(merged(&merged(a, b), c), merged(a, &merged(b, c)));
    prop_assert_eq!(merged(a, a), a.clone());
    // --- a delta moves a state forward: merging the state it came from changes nothing
    let replica = Replica {
        id: "a",
        now_millis: 1_000,
    };
    let mut after = a.clone();
    if after.apply(last, &replica).is_ok() {
        if !goes_back(last) {
            prop_assert_eq!(merged(a, &after), after.clone());
            prop_assert_eq!(merged(&after, a), after.clone());
        }
        // --- the function's value after the delta is the CRDT's value after it
        let mut view = a.view(&voters("a"));
        view.apply(last).unwrap();
        prop_assert_eq!(view, after.view(&voters("a")));
    } else {
        prop_assert_eq!(&after, a, "a refused delta changes nothing");
    }
    // --- the delta between two values turns one into the other (a merge only grows)
    let grown = merged(a, b);
    let (old, new) = (a.view(&voters("a")), grown.view(&voters("a")));
    match View::diff(&old, &new) {
        Some(change) => {
            let mut moved = old.clone();
            moved.apply(&change).unwrap();
            prop_assert_eq!(moved, new);
        }
        None => prop_assert_eq!(old, new),
    }
    // --- the stored form reads back
    prop_assert_eq!(decode(&encode(a)).unwrap(), a.clone());
    Ok(())
}

/// A register write whose clock may go back (reverse, custom): it takes effect
/// where it is made but is meant to lose to an earlier write in a merge.
fn goes_back(delta: &CrdtDelta) -> bool {
    use strata_proto::cloudstate::crdt::CrdtClock;
    matches!(&delta.delta, Some(Delta::Lwwregister(d))
        if matches!(CrdtClock::try_from(d.clock), Ok(CrdtClock::Reverse | CrdtClock::Custom)))
}

macro_rules! laws {
    ($($name:ident => $kind:expr),* $(,)?) => {
        $(
            proptest! {
                #![proptest_config(ProptestConfig::with_cases(200))]
                #[test]
                fn $name((steps, last) in (history($kind), delta($kind, 1))) {
                    check_laws($kind, &steps, &last)?;
                }
            }
        )*
    };
}

laws! {
    gcounter_laws => Kind::GCounter,
    pncounter_laws => Kind::PnCounter,
    gset_laws => Kind::GSet,
    orset_laws => Kind::OrSet,
    lwwregister_laws => Kind::LwwRegister,
    flag_laws => Kind::Flag,
    ormap_laws => Kind::OrMap,
    vote_laws => Kind::Vote,
}

// ---------------------------------------------------------------------------
// behaviour worth naming

fn at(id: &str, now_millis: i64) -> Replica<'_> {
    Replica { id, now_millis }
}

fn orset(cleared: bool, removed: &[&str], added: &[&str]) -> CrdtDelta {
    wrap(Delta::Orset(OrSetDelta {
        cleared,
        removed: removed.iter().map(|s| text(s)).collect(),
        added: added.iter().map(|s| text(s)).collect(),
    }))
}

fn names(view: &View) -> Vec<String> {
    let View::OrSet(elements) = view else {
        panic!("not a set: {view:?}")
    };
    elements
        .iter()
        .map(|e| String::decode(e.value.as_slice()).unwrap())
        .collect()
}

#[test]
fn an_addition_wins_over_a_concurrent_removal() {
    let alone = Voters::alone("a");
    let mut a = Crdt::from_delta(&orset(false, &[], &["x"]), &at("a", 1)).unwrap();
    let mut b = a.clone();
    a.apply(&orset(false, &["x"], &[]), &at("a", 2)).unwrap();
    b.apply(&orset(false, &[], &["x"]), &at("b", 2)).unwrap();
    a.merge(&b).unwrap();
    assert_eq!(names(&a.view(&alone)), ["x"]);
    // A removal that saw the addition takes it away everywhere.
    b.merge(&a).unwrap();
    b.apply(&orset(false, &["x"], &[]), &at("b", 3)).unwrap();
    a.merge(&b).unwrap();
    assert!(names(&a.view(&alone)).is_empty());
}

#[test]
fn counters_from_two_replicas_add_up() {
    let delta = |change| wrap(Delta::Pncounter(PnCounterDelta { change }));
    let mut a = Crdt::from_delta(&delta(5), &at("a", 0)).unwrap();
    let mut b = Crdt::from_delta(&delta(-2), &at("b", 0)).unwrap();
    a.merge(&b).unwrap();
    b.merge(&a).unwrap();
    assert_eq!(a.view(&Voters::alone("a")), View::PnCounter(3));
    assert_eq!(a, b);
}

#[test]
fn register_clocks() {
    let set = |value: &str, clock: i32, custom: i64| {
        wrap(Delta::Lwwregister(LwwRegisterDelta {
            value: Some(text(value)),
            clock,
            custom_clock_value: custom,
        }))
    };
    let value = |crdt: &Crdt| {
        let View::LwwRegister(e) = crdt.view(&Voters::alone("a")) else {
            panic!()
        };
        String::decode(e.value.as_slice()).unwrap()
    };
    // Default: the later write wins, even with a clock that stands still.
    let mut a = Crdt::from_delta(&set("one", 0, 0), &at("a", 100)).unwrap();
    let mut b = a.clone();
    a.apply(&set("two", 0, 0), &at("a", 100)).unwrap();
    b.merge(&a).unwrap();
    assert_eq!(value(&b), "two");
    // Reverse: the first write wins.
    let mut first = Crdt::from_delta(&set("first", 1, 0), &at("a", 100)).unwrap();
    let later = Crdt::from_delta(&set("later", 1, 0), &at("b", 200)).unwrap();
    first.merge(&later).unwrap();
    assert_eq!(value(&first), "first");
    // Custom: the larger custom value wins; auto-increment moves past the current one.
    let mut custom = Crdt::from_delta(&set("x", 2, 7), &at("a", 0)).unwrap();
    let mut other = custom.clone();
    other.apply(&set("y", 3, 7), &at("b", 0)).unwrap();
    custom.merge(&other).unwrap();
    assert_eq!(value(&custom), "y");
}

#[test]
fn a_vote_counts_the_live_voters_only() {
    let mut vote = Crdt::empty(Kind::Vote);
    let delta = |self_vote| {
        wrap(Delta::Vote(VoteDelta {
            self_vote,
            votes_for: 0,
            total_voters: 0,
        }))
    };
    vote.apply(&delta(true), &at("gone", 0)).unwrap();
    vote.apply(&delta(true), &at("me", 0)).unwrap();
    let voters = Voters {
        own: "me".into(),
        live: vec!["me".into(), "peer".into()],
    };
    assert_eq!(
        vote.view(&voters),
        View::Vote {
            self_vote: true,
            votes_for: 1,
            total_voters: 2
        }
    );
}

#[test]
fn bad_deltas_are_refused_and_change_nothing() {
    let replica = at("a", 0);
    let mut counter = Crdt::from_delta(&wrap(Delta::Gcounter(GCounterDelta { increment: 1 })), &replica).unwrap();
    let before = counter.clone();
    assert_eq!(
        counter.apply(&orset(false, &[], &["x"]), &replica),
        Err(DeltaError::WrongType {
            expected: Kind::GCounter,
            got: Kind::OrSet
        })
    );
    assert_eq!(
        counter.apply(&CrdtDelta { delta: None }, &replica),
        Err(DeltaError::Empty)
    );
    assert_eq!(counter, before);

    let mut flag = Crdt::from_delta(&wrap(Delta::Flag(FlagDelta { value: true })), &replica).unwrap();
    assert!(flag
        .apply(&wrap(Delta::Flag(FlagDelta { value: false })), &replica)
        .is_err());

    // A map key must name its type and not be a floating-point number.
    let mut map = Crdt::empty(Kind::OrMap);
    let add = |key: Any| {
        wrap(Delta::Ormap(OrMapDelta {
            added: vec![OrMapEntryDelta {
                key: Some(key),
                delta: Some(wrap(Delta::Flag(FlagDelta { value: true }))),
            }],
            ..Default::default()
        }))
    };
    let float = Any {
        type_url: "p.cloudstate.io/float".into(),
        value: vec![0x0d, 0, 0, 0x80, 0x3f],
    };
    assert!(
        matches!(map.apply(&add(float), &replica), Err(DeltaError::UnsupportedKey(m)) if m.contains("floating-point"))
    );
    let untyped = Any {
        type_url: String::new(),
        value: vec![1],
    };
    assert!(matches!(
        map.apply(&add(untyped), &replica),
        Err(DeltaError::UnsupportedKey(_))
    ));
    // Updating a key the map lacks, or an entry with a delta of another type, is refused.
    map.apply(&add(text("on")), &replica).unwrap();
    let update = |key: &str, delta: CrdtDelta| {
        wrap(Delta::Ormap(OrMapDelta {
            updated: vec![OrMapEntryDelta {
                key: Some(text(key)),
                delta: Some(delta),
            }],
            ..Default::default()
        }))
    };
    let increment = wrap(Delta::Gcounter(GCounterDelta { increment: 1 }));
    assert_eq!(
        map.apply(&update("missing", increment.clone()), &replica),
        Err(DeltaError::Invalid(
            "the delta updates ORMap key \"missing\", which the map does not hold".into()
        ))
    );
    assert_eq!(
        map.apply(&update("on", increment), &replica),
        Err(DeltaError::Invalid(
            "ORMap key \"on\": a GCounter delta cannot change a Flag".into()
        ))
    );
}
