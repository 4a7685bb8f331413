//! Unit tests of canaries through `apply`: which instances may own the canary's
//! slice and the rest, promotion, ending by hand and by the analysis, and the
//! refusals.

use super::apply_tests::{handoffs, ok, owners, ready, register_at, settle, with_cart, T0};
use super::*;

fn patch(command: &str, canary: Option<CanarySpec>) -> Command {
    Command::UpdateService {
        name: "cart".into(),
        patch: ServicePatch {
            runs: RevisionSpec::command(command),
            canary,
            ..Default::default()
        },
    }
}

fn canary(percent: u32) -> Option<CanarySpec> {
    Some(CanarySpec {
        percent,
        analysis: None,
    })
}

fn traffic(revision: u64, percent: u32) -> Command {
    Command::SetTraffic {
        service: "cart".into(),
        revision,
        percent,
        analysis: None,
    }
}

fn refusal(registry: &mut Registry, command: Command) -> (u16, String) {
    let before = registry.clone();
    let applied = apply(registry, command, T0);
    assert!(applied.effects.is_empty());
    assert_eq!(*registry, before, "a refusal changes nothing");
    let error = applied.response.expect_err("refused");
    (error.http_status(), error.to_string())
}

fn last_rollout_event(registry: &Registry) -> &str {
    registry
        .events
        .iter()
        .rev()
        .find(|event| event.kind == EventKind::Rollout)
        .map(|event| event.reason.as_str())
        .unwrap_or_default()
}

/// a (revision 1) owns the four shards; revision 2 is deployed as a 25% canary.
fn with_canary() -> Registry {
    let mut registry = with_cart();
    register_at(&mut registry, "a", 1);
    ready(&mut registry, "a");
    ok(&mut registry, patch("./cart --v2", canary(25)));
    registry
}

#[test]
fn a_canary_takes_its_slice_once_its_instance_is_ready_and_the_serving_revision_keeps_the_rest() {
    let mut registry = with_canary();
    let cart = &registry.services["cart"];
    assert_eq!((cart.serving(), cart.latest_revision), (1, 2));
    assert_eq!(cart.runs, RevisionSpec::command("./cart"), "what serves is unchanged");
    assert_eq!(cart.canary_slice(), Some((2, 1)));
    assert_eq!(cart.canary_replicas(), Some((2, 1)));
    assert_eq!(
        last_rollout_event(&registry),
        "revision 2 deployed as a canary: 25% of the traffic (1 shard(s))"
    );
    // --- until a canary instance is ready, a keeps its slice
    register_at(&mut registry, "b", 2);
    assert!(handoffs(&registry).is_empty());
    ready(&mut registry, "b");
    assert_eq!(handoffs(&registry), vec![(0, "a", "b")]);
    settle(&mut registry);
    assert_eq!(owners(&registry), vec![Some("b"), Some("a"), Some("a"), Some("a")]);
    // --- another serving instance shares the rest, never the canary's slice
    register_at(&mut registry, "c", 1);
    ready(&mut registry, "c");
    settle(&mut registry);
    let owned = owners(&registry);
    assert_eq!(owned[0], Some("b"));
    assert!(
        owned[1..].contains(&Some("a")) && owned[1..].contains(&Some("c")),
        "{owned:?}"
    );
}

#[test]
fn promoting_serves_the_canary_everywhere_and_ending_it_hands_its_slice_back() {
    let mut registry = with_canary();
    register_at(&mut registry, "b", 2);
    ready(&mut registry, "b");
    settle(&mut registry);
    ok(&mut registry, Command::Promote { service: "cart".into() });
    let cart = &registry.services["cart"];
    assert_eq!((cart.serving(), cart.canary.clone()), (2, None));
    assert_eq!(cart.runs, RevisionSpec::command("./cart --v2"));
    assert_eq!(cart.rollout, None, "its instances run already");
    assert_eq!(
        last_rollout_event(&registry),
        "canary revision 2 promoted by the control plane: the shards of revision 1 move to it"
    );
    settle(&mut registry);
    assert_eq!(owners(&registry), vec![Some("b"); 4]);

    // --- a canary of revision 3, rolled back by hand: its slice returns
    ok(&mut registry, patch("./cart --v3", canary(50)));
    register_at(&mut registry, "d", 3);
    ready(&mut registry, "d");
    settle(&mut registry);
    assert_eq!(owners(&registry), vec![Some("d"), Some("d"), Some("b"), Some("b")]);
    let rolled_back = apply(
        &mut registry,
        Command::Rollback {
            service: "cart".into(),
            to: None,
        },
        T0,
    );
    assert!(rolled_back.response.is_ok());
    let cart = &registry.services["cart"];
    assert_eq!((cart.serving(), cart.canary.clone()), (2, None));
    assert_eq!(cart.revision(3).and_then(|r| r.failure.clone()), None);
    settle(&mut registry);
    assert_eq!(owners(&registry), vec![Some("b"); 4]);
}

#[test]
fn the_analysis_ends_a_failing_canary_and_marks_it_failed_with_why() {
    let mut registry = with_canary();
    register_at(&mut registry, "b", 2);
    ready(&mut registry, "b");
    settle(&mut registry);
    ok(
        &mut registry,
        Command::FailCanary {
            service: "cart".into(),
            revision: 2,
            reason: "its error rate was 20%".into(),
        },
    );
    let cart = &registry.services["cart"];
    assert_eq!(cart.canary, None);
    assert_eq!(
        cart.revision(2).and_then(|r| r.failure.as_deref()),
        Some("its error rate was 20%")
    );
    assert_eq!(
        last_rollout_event(&registry),
        "canary revision 2 rolled back: its error rate was 20%; revision 1 serves everything"
    );
    settle(&mut registry);
    assert_eq!(owners(&registry), vec![Some("a"); 4]);
    // --- a second verdict on the same canary finds it gone
    let (status, _) = refusal(
        &mut registry,
        Command::FailCanary {
            service: "cart".into(),
            revision: 2,
            reason: "again".into(),
        },
    );
    assert_eq!(status, 409);
}

#[test]
fn traffic_moves_a_canarys_share_promotes_at_a_hundred_and_ends_at_zero() {
    let mut registry = with_canary();
    ok(&mut registry, traffic(2, 50));
    assert_eq!(registry.services["cart"].canary_slice(), Some((2, 2)));
    ok(&mut registry, traffic(2, 0));
    assert_eq!(registry.services["cart"].canary, None);
    // --- a kept revision may become the canary again, and 100 promotes it
    ok(&mut registry, traffic(2, 10));
    ok(&mut registry, traffic(2, 100));
    let cart = &registry.services["cart"];
    assert_eq!((cart.serving(), cart.canary.clone()), (2, None));
}

#[test]
fn bad_traffic_is_refused_with_why_and_changes_nothing() {
    let mut registry = with_canary();
    let cases = [
        (traffic(7, 10), 404, "has no revision 7 (it keeps 1 and 2)"),
        (traffic(1, 10), 409, "serves already"),
        (traffic(2, 150), 400, "1 to 99 percent"),
        (traffic(1, 100), 409, "serves already"),
        (
            patch("./cart --v3", canary(10)),
            409,
            "revision 2 of \"cart\" is a canary at 25%",
        ),
        (
            patch("./cart --v3", None),
            409,
            "promote it or roll it back before deploying",
        ),
        (
            Command::Rollback {
                service: "cart".into(),
                to: Some(2),
            },
            409,
            "is a canary: roll it back (no --to) or promote it first",
        ),
    ];
    for (command, status, words) in cases {
        let (got, message) = refusal(&mut registry, command);
        assert_eq!(got, status, "{message}");
        assert!(message.contains(words), "{message}");
    }
    // --- while a rollout waits for its revision a canary is refused, unless
    // the service is at zero (both start at the wake)
    let mut registry = with_cart();
    register_at(&mut registry, "a", 1);
    ready(&mut registry, "a");
    ok(&mut registry, patch("./cart --v2", None));
    let traffic_to_1 = traffic(1, 10);
    let (status, message) = refusal(&mut registry, traffic_to_1.clone());
    assert_eq!(status, 409);
    assert!(message.contains("is rolling out from revision 1 to 2"), "{message}");
    ok(
        &mut registry,
        Command::SetDesiredReplicas {
            service: "cart".into(),
            replicas: 0,
            reason: "idle".into(),
        },
    );
    ok(&mut registry, traffic_to_1);
    assert_eq!(registry.services["cart"].canary_slice(), Some((1, 1)));

    // --- a deploy that makes no revision cannot be a canary; promote needs one
    let mut registry = with_cart();
    let (status, message) = refusal(&mut registry, patch("./cart", canary(10)));
    assert_eq!(status, 400);
    assert!(message.contains("a canary needs a new revision"), "{message}");
    let (status, message) = refusal(&mut registry, Command::Promote { service: "cart".into() });
    assert_eq!(status, 409);
    assert!(message.contains("has no canary to promote"), "{message}");
    // --- a service of one shard has no slice to give
    let mut registry = Registry::default();
    let mut one_shard = super::apply_tests::spec("cart");
    one_shard.settings.shard_count = Some(1);
    ok(&mut registry, Command::CreateService(one_shard));
    let (status, message) = refusal(&mut registry, patch("./cart --v2", canary(10)));
    assert_eq!(status, 400);
    assert!(message.contains("at least two shards"), "{message}");
}
