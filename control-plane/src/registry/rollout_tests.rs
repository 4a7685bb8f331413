//! Unit tests of rollouts, rollbacks and shard hand-offs through `apply`: which
//! instances may own shards while revisions change, and what a failing revision does.

use super::apply_tests::{handoffs, ok, owners, ready, ready_and_settled, register_at, settle, with_cart, T0};
use super::*;

fn deploy(registry: &mut Registry, command: &str) {
    ok(
        registry,
        Command::UpdateService {
            name: "cart".into(),
            patch: ServicePatch {
                runs: RevisionSpec::command(command),
                ..Default::default()
            },
        },
    );
}

fn reasons(registry: &Registry, kind: EventKind) -> Vec<&str> {
    registry
        .events
        .iter()
        .filter(|event| event.kind == kind)
        .map(|event| event.reason.as_str())
        .collect()
}

#[test]
fn the_old_revision_keeps_every_shard_until_the_new_one_is_ready_then_hands_them_over() {
    let mut registry = with_cart();
    register_at(&mut registry, "a", 1);
    ready(&mut registry, "a");
    deploy(&mut registry, "./cart --v2");
    let cart = &registry.services["cart"];
    assert_eq!(
        (cart.serving(), cart.rollout.as_ref().map(|r| (r.from, r.to))),
        (2, Some((1, 2)))
    );
    // --- a new instance starting changes nothing: a still owns everything
    register_at(&mut registry, "b", 2);
    assert_eq!(owners(&registry), vec![Some("a"); 4]);
    assert!(handoffs(&registry).is_empty());
    assert_eq!(registry.eligible_owners("cart").stable, ["a".to_owned()].into());
    // --- b ready: the rollout has arrived, and only b may own shards now
    ready(&mut registry, "b");
    assert_eq!(registry.services["cart"].rollout, None);
    assert_eq!(
        reasons(&registry, EventKind::Rollout),
        vec!["revision 2 is ready: shards move to it from revision 1"]
    );
    assert_eq!(registry.eligible_owners("cart").stable, ["b".to_owned()].into());
    assert_eq!(handoffs(&registry), vec![(0, "a", "b")]);
    settle(&mut registry);
    assert_eq!(owners(&registry), vec![Some("b"); 4]);
}

#[test]
fn a_revision_that_fails_before_it_is_ready_stops_its_rollout_and_the_old_one_serves() {
    let mut registry = with_cart();
    register_at(&mut registry, "a", 1);
    ready(&mut registry, "a");
    deploy(&mut registry, "./broken");
    let fail = |registry: &mut Registry, n: u32| {
        ok(
            registry,
            Command::RecordInstanceFailure {
                service: "cart".into(),
                instance: format!("b{n}"),
                reason: "the function exited (exit status: 3)".into(),
                revision: 2,
            },
        )
    };
    fail(&mut registry, 1);
    fail(&mut registry, 2);
    assert_eq!(registry.services["cart"].serving(), 2, "two failures: it goes on");
    fail(&mut registry, 3);
    let cart = &registry.services["cart"];
    assert_eq!((cart.serving(), cart.rollout.clone()), (1, None));
    assert_eq!(cart.runs, RevisionSpec::command("./cart"));
    assert_eq!(
        cart.revision(2).and_then(|r| r.failure.as_deref()),
        Some("the function exited (exit status: 3)")
    );
    assert_eq!(
        reasons(&registry, EventKind::Rollout),
        vec![
            "rollout to revision 2 stopped: its instances failed 3 times before one was ready (the last: the \
             function exited (exit status: 3)); revision 1 serves"
        ]
    );
    assert_eq!(owners(&registry), vec![Some("a"); 4], "a never stopped owning");
    // --- failures of the old revision's instances are not the rollout's
    let applied = apply(
        &mut registry,
        Command::RecordInstanceFailure {
            service: "cart".into(),
            instance: "a".into(),
            reason: "crashed".into(),
            revision: 1,
        },
        T0,
    );
    assert!(applied.response.is_ok());
    assert_eq!(registry.services["cart"].serving(), 1);
}

#[test]
fn a_rollback_serves_the_earlier_revision_and_moves_the_shards_back_once_it_is_ready() {
    let mut registry = with_cart();
    register_at(&mut registry, "a", 1);
    ready(&mut registry, "a");
    deploy(&mut registry, "./cart --v2");
    register_at(&mut registry, "b", 2);
    ready(&mut registry, "b");
    settle(&mut registry);
    ok(
        &mut registry,
        Command::DrainInstance {
            id: "a".into(),
            reason: "superseded".into(),
        },
    );
    ok(
        &mut registry,
        Command::RemoveInstance {
            id: "a".into(),
            reason: "stopped".into(),
        },
    );

    let rolled = ok(
        &mut registry,
        Command::Rollback {
            service: "cart".into(),
            to: None,
        },
    );
    assert!(rolled.contains(&Effect::RoutesChanged { service: "cart".into() }));
    let cart = &registry.services["cart"];
    assert_eq!(
        (cart.serving(), cart.runs.clone()),
        (1, RevisionSpec::command("./cart"))
    );
    assert_eq!(cart.rollout.as_ref().map(|r| (r.from, r.to)), Some((2, 1)));
    assert!(
        reasons(&registry, EventKind::Rollout).contains(&"rollback from revision 2 to revision 1 by the control plane")
    );
    // --- b keeps its shards until an instance of revision 1 is ready
    assert_eq!(owners(&registry), vec![Some("b"); 4]);
    register_at(&mut registry, "c", 1);
    ready(&mut registry, "c");
    settle(&mut registry);
    assert_eq!(owners(&registry), vec![Some("c"); 4]);
}

#[test]
fn a_rollback_to_nothing_or_to_what_serves_is_refused_with_what_exists() {
    let mut registry = with_cart();
    let refused = |registry: &mut Registry, to: Option<u64>| {
        apply(
            registry,
            Command::Rollback {
                service: "cart".into(),
                to,
            },
            T0,
        )
        .response
        .expect_err("refused")
    };
    assert_eq!(
        refused(&mut registry, None).to_string(),
        "service \"cart\" has no earlier revision to roll back to (it keeps 1)"
    );
    deploy(&mut registry, "./cart --v2");
    deploy(&mut registry, "./cart --v3");
    let missing = refused(&mut registry, Some(9));
    assert_eq!(missing.http_status(), 404);
    assert_eq!(
        missing.to_string(),
        "service \"cart\" has no revision 9 (it keeps 1, 2 and 3)"
    );
    let serving = refused(&mut registry, Some(3));
    assert_eq!(
        (serving.http_status(), serving.to_string()),
        (409, "revision 3 of \"cart\" serves already".to_owned())
    );
    let unknown = apply(
        &mut registry,
        Command::Rollback {
            service: "nope".into(),
            to: None,
        },
        T0,
    );
    assert!(matches!(unknown.response, Err(RegistryError::NotFound { .. })));
}

#[test]
fn a_handoff_its_owner_never_releases_completes_after_the_timeout() {
    let mut registry = with_cart();
    ready_and_settled(&mut registry, &["a"]);
    register_at(&mut registry, "b", 0);
    ready(&mut registry, "b");
    assert_eq!(handoffs(&registry), vec![(2, "a", "b")]);
    let early = apply(&mut registry, Command::ExpireHandoffs, T0 + HANDOFF_TIMEOUT_MS - 1);
    assert_eq!(early.effects, vec![], "not yet");
    let expired = apply(&mut registry, Command::ExpireHandoffs, T0 + HANDOFF_TIMEOUT_MS);
    assert_eq!(
        expired.effects,
        vec![
            Effect::ShardMoved {
                service: "cart".into(),
                shard: 2,
                from: Some("a".into()),
                to: Some("b".into()),
                epoch: 2,
            },
            Effect::RoutesChanged { service: "cart".into() },
        ]
    );
    // --- and the next hand-off has begun
    assert_eq!(handoffs(&registry), vec![(3, "a", "b")]);
}

#[test]
fn a_rollback_to_a_revision_whose_instances_still_run_has_no_rollout_to_wait_for() {
    let mut registry = with_cart();
    register_at(&mut registry, "a", 1);
    ready(&mut registry, "a");
    deploy(&mut registry, "./cart --v2");
    assert!(registry.services["cart"].rollout.is_some());
    // --- rolled back before any instance of revision 2 was ready: a still runs 1
    ok(
        &mut registry,
        Command::Rollback {
            service: "cart".into(),
            to: None,
        },
    );
    let cart = &registry.services["cart"];
    assert_eq!((cart.serving(), cart.rollout.clone()), (1, None));
    assert_eq!(owners(&registry), vec![Some("a"); 4]);
}
