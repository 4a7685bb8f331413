//! Unit tests of `apply`: each asserts the exact answer and the exact effects.

use super::*;

pub(super) const T0: u64 = 1_000;

pub(super) fn spec(name: &str) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        runs: crate::registry::RevisionSpec::command("./cart"),
        settings: ServiceSettings {
            shard_count: Some(4),
            ..Default::default()
        },
    }
}

/// `spec(name)` with these settings as well.
fn spec_with(name: &str, settings: ServiceSettings) -> ServiceSpec {
    let spec = spec(name);
    ServiceSpec {
        settings: settings.over(&spec.settings),
        ..spec
    }
}

fn patch(settings: ServiceSettings) -> ServicePatch {
    ServicePatch {
        settings,
        ..Default::default()
    }
}

pub(super) fn event(id: u64, kind: EventKind, service: &str, instance: Option<&str>, reason: &str) -> Effect {
    Effect::Event(Event {
        id,
        at_ms: T0,
        kind,
        service: Some(service.into()),
        instance: instance.map(Into::into),
        reason: reason.into(),
    })
}

pub(super) fn moved(shard: u32, from: Option<&str>, to: Option<&str>, epoch: u64) -> Effect {
    Effect::ShardMoved {
        service: "cart".into(),
        shard,
        from: from.map(Into::into),
        to: to.map(Into::into),
        epoch,
    }
}

pub(super) fn ok(registry: &mut Registry, command: Command) -> Vec<Effect> {
    let applied = apply(registry, command, T0);
    assert!(applied.response.is_ok(), "{:?}", applied.response);
    applied.effects
}

pub(super) fn with_cart() -> Registry {
    let mut registry = Registry::default();
    ok(&mut registry, Command::CreateService(spec("cart")));
    registry
}

pub(super) fn register(registry: &mut Registry, id: &str) -> Vec<Effect> {
    register_at(registry, id, 0)
}

/// Registers instance `id` of the cart, running `revision`.
pub(super) fn register_at(registry: &mut Registry, id: &str, revision: u64) -> Vec<Effect> {
    ok(
        registry,
        Command::RegisterInstance {
            id: id.into(),
            service: "cart".into(),
            address: format!("{id}:1"),
            admin_address: String::new(),
            revision,
        },
    )
}

pub(super) fn ready(registry: &mut Registry, id: &str) -> Vec<Effect> {
    ok(
        registry,
        Command::InstanceReady {
            id: id.into(),
            descriptor_set: None,
            subscriptions: vec![],
            entities: vec![],
        },
    )
}

#[test]
fn create_service_fills_defaults_and_asks_for_one_instance() {
    let mut registry = Registry::default();
    let applied = apply(&mut registry, Command::CreateService(spec("cart")), T0);
    let Ok(Outcome::Service(service)) = applied.response else {
        panic!("{:?}", applied.response)
    };
    assert_eq!(
        (
            service.min_scale,
            service.max_scale,
            service.target_concurrency,
            service.scale_to_zero_grace_ms
        ),
        (0, 10, 70, 30_000)
    );
    assert_eq!(
        (
            service.keep_alive(),
            service.prewarm_percentile,
            service.keep_alive_percentile
        ),
        (KeepAlive::Histogram, 5, 99)
    );
    assert_eq!(
        (service.generation, service.desired_replicas, service.shards.len()),
        (1, 1, 4)
    );
    assert_eq!(
        applied.effects,
        vec![
            event(1, EventKind::ServiceCreated, "cart", None, "created"),
            Effect::DesiredReplicasChanged {
                service: "cart".into(),
                from: 0,
                to: 1
            },
            Effect::RoutesChanged { service: "cart".into() },
        ]
    );
    assert_eq!(registry.status(&registry.services["cart"]), ServiceStatus::Pending);
}

#[test]
fn refused_commands_change_nothing() {
    let mut registry = with_cart();
    let before = registry.clone();
    let cases = [
        (Command::CreateService(spec("cart")), "already exists"),
        (Command::CreateService(spec("Bad_Name")), "invalid service name"),
        (
            Command::CreateService(spec_with(
                "other",
                ServiceSettings {
                    min_scale: Some(5),
                    max_scale: Some(2),
                    ..Default::default()
                },
            )),
            "must not exceed",
        ),
        (
            Command::CreateService(ServiceSpec {
                runs: RevisionSpec::default(),
                ..spec("other")
            }),
            "needs a command",
        ),
        (
            Command::CreateService(spec_with(
                "other",
                ServiceSettings {
                    shard_count: Some(0),
                    ..Default::default()
                },
            )),
            "shard_count",
        ),
        (
            Command::CreateService(spec_with(
                "other",
                ServiceSettings {
                    prewarm_percentile: Some(60),
                    ..Default::default()
                },
            )),
            "prewarm_percentile must be between 0 and 50",
        ),
        (
            Command::UpdateService {
                name: "cart".into(),
                patch: patch(ServiceSettings {
                    keep_alive: Some(KeepAlive::Histogram),
                    keep_alive_percentile: Some(20),
                    ..Default::default()
                }),
            },
            "keep_alive_percentile must be between 50 and 100",
        ),
        (
            Command::RecordIdleTimes {
                service: "nope".into(),
                idle_times: IdleTimes::default(),
            },
            "not found",
        ),
        (Command::DeleteService { name: "nope".into() }, "not found"),
        (
            Command::UpdateService {
                name: "cart".into(),
                patch: patch(ServiceSettings {
                    min_scale: Some(11),
                    ..Default::default()
                }),
            },
            "must not exceed",
        ),
        (
            Command::SetDesiredReplicas {
                service: "nope".into(),
                replicas: 1,
                reason: "x".into(),
            },
            "not found",
        ),
        (
            Command::RegisterInstance {
                id: "i1".into(),
                service: "nope".into(),
                address: "a".into(),
                admin_address: String::new(),
                revision: 0,
            },
            "not found",
        ),
        (
            Command::InstanceReady {
                id: "nope".into(),
                descriptor_set: None,
                subscriptions: vec![],
                entities: vec![],
            },
            "not found",
        ),
        (
            Command::RemoveInstance {
                id: "nope".into(),
                reason: "x".into(),
            },
            "not found",
        ),
    ];
    for (command, message) in cases {
        let applied = apply(&mut registry, command.clone(), T0 + 1);
        let error = applied.response.expect_err("must be refused");
        assert!(error.to_string().contains(message), "{command:?}: {error}");
        assert!(applied.effects.is_empty(), "{command:?}");
        assert_eq!(registry, before, "{command:?} changed the registry");
    }
}

#[test]
fn update_bumps_revision_and_clamps_desired_only_when_something_changed() {
    let mut registry = with_cart();
    let patch = patch(ServiceSettings {
        min_scale: Some(3),
        max_scale: Some(5),
        ..Default::default()
    });
    let effects = ok(
        &mut registry,
        Command::UpdateService {
            name: "cart".into(),
            patch: patch.clone(),
        },
    );
    assert_eq!(
        effects,
        vec![
            event(2, EventKind::ServiceUpdated, "cart", None, "generation 2"),
            event(
                3,
                EventKind::Scale,
                "cart",
                None,
                "desired replicas 1 -> 3: scale bounds changed"
            ),
            Effect::DesiredReplicasChanged {
                service: "cart".into(),
                from: 1,
                to: 3
            },
            Effect::RoutesChanged { service: "cart".into() },
        ]
    );
    let service = &registry.services["cart"];
    assert_eq!((service.generation, service.desired_replicas), (2, 3));

    let effects = ok(
        &mut registry,
        Command::UpdateService {
            name: "cart".into(),
            patch,
        },
    );
    assert!(effects.is_empty(), "an update that changes nothing is a no-op");
    assert_eq!(registry.services["cart"].generation, 2);
}

#[test]
fn desired_replicas_are_clamped_and_recorded_with_their_reason() {
    let mut registry = with_cart();
    let effects = ok(
        &mut registry,
        Command::SetDesiredReplicas {
            service: "cart".into(),
            replicas: 50,
            reason: "panic window".into(),
        },
    );
    assert_eq!(
        effects,
        vec![
            event(
                2,
                EventKind::Scale,
                "cart",
                None,
                "desired replicas 1 -> 10: panic window"
            ),
            Effect::DesiredReplicasChanged {
                service: "cart".into(),
                from: 1,
                to: 10
            },
        ]
    );
    let effects = ok(
        &mut registry,
        Command::SetDesiredReplicas {
            service: "cart".into(),
            replicas: 10,
            reason: "stable window".into(),
        },
    );
    assert!(effects.is_empty(), "unchanged desired count records nothing");
    let effects = ok(
        &mut registry,
        Command::SetDesiredReplicas {
            service: "cart".into(),
            replicas: 0,
            reason: "idle".into(),
        },
    );
    assert_eq!(effects.len(), 2);
    assert_eq!(registry.status(&registry.services["cart"]), ServiceStatus::ScaledToZero);
}

#[test]
fn scale_from_zero_acts_only_at_zero() {
    let mut registry = with_cart();
    let poke = || Command::ScaleFromZero {
        service: "cart".into(),
        reason: "request arrived at zero: scale from zero".into(),
    };
    assert!(ok(&mut registry, poke()).is_empty(), "desired is already 1");
    ok(
        &mut registry,
        Command::SetDesiredReplicas {
            service: "cart".into(),
            replicas: 0,
            reason: "idle".into(),
        },
    );
    assert_eq!(
        ok(&mut registry, poke()),
        vec![
            event(
                3,
                EventKind::Scale,
                "cart",
                None,
                "desired replicas 0 -> 1: request arrived at zero: scale from zero"
            ),
            Effect::DesiredReplicasChanged {
                service: "cart".into(),
                from: 0,
                to: 1
            },
        ]
    );
    assert!(ok(&mut registry, poke()).is_empty(), "a second poke changes nothing");
    let missing = apply(
        &mut registry,
        Command::ScaleFromZero {
            service: "nope".into(),
            reason: "poke".into(),
        },
        T0,
    );
    assert!(matches!(missing.response, Err(RegistryError::NotFound { .. })));
}

#[test]
fn instances_own_shards_only_once_ready() {
    let mut registry = with_cart();
    assert_eq!(
        register(&mut registry, "a"),
        vec![event(
            2,
            EventKind::InstanceRegistered,
            "cart",
            Some("a"),
            "registered at a:1"
        )]
    );
    assert!(registry.services["cart"]
        .shards
        .iter()
        .all(|shard| shard.owner.is_none()));

    assert_eq!(
        ready(&mut registry, "a"),
        vec![
            event(3, EventKind::InstanceReady, "cart", Some("a"), "ready"),
            moved(0, None, Some("a"), 1),
            moved(1, None, Some("a"), 1),
            moved(2, None, Some("a"), 1),
            moved(3, None, Some("a"), 1),
            Effect::RoutesChanged { service: "cart".into() },
        ]
    );
    assert_eq!(registry.status(&registry.services["cart"]), ServiceStatus::Ready);

    register(&mut registry, "b");
    // --- a is alive: its shards are handed off to b, not taken
    assert_eq!(
        ready(&mut registry, "b"),
        vec![
            event(5, EventKind::InstanceReady, "cart", Some("b"), "ready"),
            Effect::RoutesChanged { service: "cart".into() },
        ]
    );
    assert!(
        ready(&mut registry, "b").is_empty(),
        "a repeated ready report is a no-op"
    );
    // --- a few at a time (an eighth of the shards, at least one: here one)
    assert_eq!(handoffs(&registry), vec![(2, "a", "b")]);
    // --- once a has released it, b holds it at the next epoch, and the next begins
    assert_eq!(
        release(&mut registry, "a", &[2]),
        vec![
            moved(2, Some("a"), Some("b"), 2),
            Effect::RoutesChanged { service: "cart".into() },
        ]
    );
    assert_eq!(handoffs(&registry), vec![(3, "a", "b")]);
    assert!(
        release(&mut registry, "a", &[2]).is_empty(),
        "a repeated release is a no-op"
    );
    assert_eq!(
        release(&mut registry, "a", &[3]),
        vec![
            moved(3, Some("a"), Some("b"), 2),
            Effect::RoutesChanged { service: "cart".into() },
        ]
    );
    assert!(handoffs(&registry).is_empty());
}

/// The shards being handed off: (shard, from, to).
pub(super) fn handoffs(registry: &Registry) -> Vec<(usize, &str, &str)> {
    registry.services["cart"]
        .shards
        .iter()
        .enumerate()
        .filter_map(|(number, shard)| {
            let handoff = shard.handoff.as_ref()?;
            Some((number, shard.owner.as_deref()?, handoff.to.as_str()))
        })
        .collect()
}

pub(super) fn release(registry: &mut Registry, instance: &str, shards: &[u32]) -> Vec<Effect> {
    ok(
        registry,
        Command::ReleaseShards {
            instance: instance.into(),
            shards: shards.to_vec(),
        },
    )
}

/// Every hand-off under way released by its owner, and those the releases began.
pub(super) fn settle(registry: &mut Registry) {
    while let Some((shard, from, _)) = handoffs(registry).first().copied() {
        let from = from.to_owned();
        release(registry, &from, &[shard as u32]);
    }
}

/// The cart's shard owners, in shard order.
pub(super) fn owners(registry: &Registry) -> Vec<Option<&str>> {
    registry.services["cart"]
        .shards
        .iter()
        .map(|shard| shard.owner.as_deref())
        .collect()
}

/// Instances `ids` ready, and every hand-off between them released.
pub(super) fn ready_and_settled(registry: &mut Registry, ids: &[&str]) {
    for id in ids {
        register(registry, id);
        ready(registry, id);
        settle(registry);
    }
}

#[test]
fn draining_and_removal_move_shards_to_the_remaining_instances() {
    let mut registry = with_cart();
    ready_and_settled(&mut registry, &["a", "b"]);
    let effects = ok(
        &mut registry,
        Command::DrainInstance {
            id: "b".into(),
            reason: "scale down".into(),
        },
    );
    // --- a draining instance hands its shards off
    assert_eq!(
        effects,
        vec![
            event(6, EventKind::InstanceDraining, "cart", Some("b"), "scale down"),
            Effect::RoutesChanged { service: "cart".into() },
        ]
    );
    assert_eq!(handoffs(&registry), vec![(2, "b", "a")]);
    let error = apply(
        &mut registry,
        Command::InstanceReady {
            id: "b".into(),
            descriptor_set: None,
            subscriptions: vec![],
            entities: vec![],
        },
        T0,
    )
    .response
    .expect_err("a draining instance cannot become ready");
    assert!(matches!(error, RegistryError::Conflict { .. }));

    let effects = ok(
        &mut registry,
        Command::RemoveInstance {
            id: "b".into(),
            reason: "stopped".into(),
        },
    );
    // --- b stopped without releasing: a takes its shards at once, fenced by the epoch
    assert_eq!(
        effects,
        vec![
            event(7, EventKind::InstanceRemoved, "cart", Some("b"), "stopped"),
            moved(2, Some("b"), Some("a"), 3),
            moved(3, Some("b"), Some("a"), 3),
            Effect::RoutesChanged { service: "cart".into() },
        ]
    );

    let effects = ok(
        &mut registry,
        Command::RemoveInstance {
            id: "a".into(),
            reason: "missed heartbeats".into(),
        },
    );
    assert_eq!(
        effects,
        vec![
            event(8, EventKind::InstanceRemoved, "cart", Some("a"), "missed heartbeats"),
            moved(0, Some("a"), None, 2),
            moved(1, Some("a"), None, 2),
            moved(2, Some("a"), None, 4),
            moved(3, Some("a"), None, 4),
            Effect::RoutesChanged { service: "cart".into() },
        ]
    );
}

#[test]
fn first_ready_report_records_descriptors_as_a_new_revision() {
    let mut registry = with_cart();
    register(&mut registry, "a");
    let entity = EntityInfo {
        entity_type: "cloudstate.eventsourced.EventSourced".into(),
        service_name: "com.example.shoppingcart.ShoppingCart".into(),
        persistence_id: "shopping-cart".into(),
    };
    ok(
        &mut registry,
        Command::InstanceReady {
            id: "a".into(),
            descriptor_set: Some("AAAA".into()),
            subscriptions: vec![],
            entities: vec![entity.clone()],
        },
    );
    let service = &registry.services["cart"];
    assert_eq!(
        (service.generation, service.descriptor_set.as_deref()),
        (2, Some("AAAA"))
    );
    assert_eq!(service.entities, vec![entity]);
}

#[test]
fn deleting_a_service_stops_its_instances() {
    let mut registry = with_cart();
    register(&mut registry, "a");
    let effects = ok(&mut registry, Command::DeleteService { name: "cart".into() });
    assert_eq!(
        effects,
        vec![
            Effect::StopInstance {
                service: "cart".into(),
                instance: "a".into()
            },
            event(3, EventKind::ServiceDeleted, "cart", None, "deleted"),
            Effect::DesiredReplicasChanged {
                service: "cart".into(),
                from: 1,
                to: 0
            },
            Effect::RoutesChanged { service: "cart".into() },
        ]
    );
    assert!(registry.services.is_empty() && registry.instances.is_empty());
}

#[test]
fn registration_is_idempotent_but_ids_are_unique() {
    let mut registry = with_cart();
    register(&mut registry, "a");
    assert!(register(&mut registry, "a").is_empty());
    let applied = apply(
        &mut registry,
        Command::RegisterInstance {
            id: "a".into(),
            service: "cart".into(),
            address: "elsewhere:1".into(),
            admin_address: String::new(),
            revision: 0,
        },
        T0,
    );
    assert!(matches!(applied.response, Err(RegistryError::AlreadyExists { .. })));
}

#[test]
fn event_history_is_bounded() {
    let mut registry = Registry::default();
    for i in 0..(EVENT_HISTORY_LIMIT + 5) {
        ok(
            &mut registry,
            Command::RecordClusterEvent {
                reason: format!("event {i}"),
            },
        );
    }
    assert_eq!(registry.events.len(), EVENT_HISTORY_LIMIT);
    assert_eq!(registry.events.front().map(|event| event.id), Some(6));
    assert_eq!(
        registry.events.back().map(|event| event.id),
        Some(EVENT_HISTORY_LIMIT as u64 + 5)
    );
}

#[test]
fn audit_records_are_numbered_stamped_bounded_and_silent() {
    let mut registry = Registry::default();
    let record = |path: &str| AuditRecord {
        id: 999,
        at_ms: 1,
        principal: "admin token".into(),
        method: "POST".into(),
        path: path.into(),
        target: Some("cart".into()),
        status: 201,
    };
    let applied = apply(&mut registry, Command::RecordAudit(record("/api/v1/services")), T0);
    assert_eq!(applied.response, Ok(Outcome::Recorded));
    assert_eq!(applied.effects, vec![], "the audit log is not acted upon");
    assert_eq!(
        registry.audit.back(),
        Some(&AuditRecord {
            id: 1,
            at_ms: T0,
            ..record("/api/v1/services")
        })
    );
    for i in 0..AUDIT_HISTORY_LIMIT {
        ok(
            &mut registry,
            Command::RecordAudit(record(&format!("/api/v1/services/{i}"))),
        );
    }
    assert_eq!(registry.audit.len(), AUDIT_HISTORY_LIMIT);
    assert_eq!(registry.audit.front().map(|record| record.id), Some(2));
    assert_eq!(
        registry.audit.back().map(|record| record.id),
        Some(AUDIT_HISTORY_LIMIT as u64 + 1)
    );
    assert!(registry.events.is_empty());
}

#[test]
fn an_audited_write_and_its_record_apply_as_one() {
    let mut registry = Registry::default();
    let audited = |command: Command| Command::Audited {
        command: Box::new(command),
        record: AuditRecord {
            principal: "admin token".into(),
            method: "POST".into(),
            path: "/api/v1/services".into(),
            target: Some("cart".into()),
            status: 201,
            ..AuditRecord::default()
        },
    };
    let mut plain = apply(&mut Registry::default(), Command::CreateService(spec("cart")), T0);
    let applied = apply(&mut registry, audited(Command::CreateService(spec("cart"))), T0);
    // The one difference: the first revision names who deployed it.
    if let Ok(Outcome::Service(service)) = &mut plain.response {
        service.revisions[0].created_by = "admin token".into();
    }
    assert_eq!(
        applied, plain,
        "the write applies as it would alone, on its principal's behalf"
    );
    let created = registry.audit.back().expect("a record").clone();
    assert_eq!((created.id, created.at_ms, created.status), (1, T0, 201));

    // Refused by the registry: the record says how it was answered.
    let refused = apply(&mut registry, audited(Command::CreateService(spec("cart"))), T0 + 1);
    assert!(matches!(refused.response, Err(RegistryError::AlreadyExists { .. })));
    assert_eq!(refused.effects, vec![]);
    let record = registry.audit.back().expect("a record");
    assert_eq!((record.id, record.at_ms, record.status), (2, T0 + 1, 409));
}

#[test]
fn the_earliest_timer_an_instance_reports_is_kept_on_its_service_silently() {
    let mut registry = with_cart();
    register(&mut registry, "i1");
    let report = |next_due_ms| Command::ReportTimers {
        instance: "i1".into(),
        next_due_ms,
    };
    // No event, no route change, no new revision: only the autoscaler reads it.
    assert_eq!(ok(&mut registry, report(Some(5_000))), vec![]);
    assert_eq!(
        (
            registry.services["cart"].next_timer_due_ms,
            registry.services["cart"].generation
        ),
        (Some(5_000), 1)
    );
    ok(&mut registry, report(None));
    assert_eq!(registry.services["cart"].next_timer_due_ms, None);
    // An instance the registry does not know reports nothing.
    let unknown = apply(
        &mut registry,
        Command::ReportTimers {
            instance: "ghost".into(),
            next_due_ms: Some(1),
        },
        T0,
    );
    assert_eq!(
        unknown.response.unwrap_err().to_string(),
        "instance \"ghost\" not found"
    );
    assert_eq!(registry.services["cart"].next_timer_due_ms, None);
}

#[test]
fn idle_times_are_stored_silently() {
    let mut registry = with_cart();
    let idle_times = IdleTimes {
        bins: vec![(40, 12), (41, 1)],
        out_of_bounds: 2,
    };
    let effects = ok(
        &mut registry,
        Command::RecordIdleTimes {
            service: "cart".into(),
            idle_times: idle_times.clone(),
        },
    );
    // No event, no route change, no new revision: the histogram is the autoscaler's memory.
    assert_eq!(effects, vec![]);
    let cart = &registry.services["cart"];
    assert_eq!((&cart.idle_times, cart.generation), (&idle_times, 1));
}

#[test]
fn the_keep_alive_policy_is_a_service_setting() {
    let mut registry = with_cart();
    let patch = patch(ServiceSettings {
        keep_alive: Some(KeepAlive::Fixed),
        prewarm_percentile: Some(10),
        ..Default::default()
    });
    ok(
        &mut registry,
        Command::UpdateService {
            name: "cart".into(),
            patch,
        },
    );
    let cart = &registry.services["cart"];
    assert_eq!(
        (
            cart.keep_alive(),
            cart.prewarm_percentile,
            cart.keep_alive_percentile,
            cart.generation
        ),
        (KeepAlive::Fixed, 10, 99, 2)
    );
}

#[test]
fn services_and_commands_written_before_the_keep_alive_fields_still_read() {
    // A service as an older build stored it in a snapshot, and a create command from its log.
    let old_service = serde_json::json!({
        "name": "cart", "command": "./cart", "image": null, "min_scale": 0, "max_scale": 10,
        "target_concurrency": 100, "scale_to_zero_grace_ms": 30000, "descriptor_set": null,
        "entities": [], "revision": 3, "desired_replicas": 1, "created_at_ms": 1,
        "updated_at_ms": 2, "shards": []
    });
    let service: Service = serde_json::from_value(old_service).unwrap();
    assert_eq!(
        (
            service.keep_alive,
            service.prewarm_percentile,
            service.keep_alive_percentile,
            service.idle_times
        ),
        (None, 5, 99, IdleTimes::default())
    );
    let old_command = serde_json::json!({
        "type": "create_service", "name": "cart", "command": "./cart", "image": null,
        "min_scale": null, "max_scale": null, "target_concurrency": null,
        "scale_to_zero_grace_ms": null, "stable_window_ms": null, "shard_count": null
    });
    let command: Command = serde_json::from_value(old_command).unwrap();
    assert!(matches!(
        command,
        Command::CreateService(ServiceSpec {
            settings: ServiceSettings { keep_alive: None, .. },
            ..
        })
    ));
}

#[test]
fn every_setting_is_kept_on_create_and_on_update() {
    let mut registry = Registry::default();
    let sample = ServiceSettings::sample();
    ok(&mut registry, Command::CreateService(spec_with("cart", sample.clone())));
    assert_eq!(registry.services["cart"].settings(), sample);
    // --- a patch of one setting keeps the others
    let hold = ServiceSettings {
        hold_timeout: Some(strata_settings::HumanDuration::from_secs(600)),
        ..Default::default()
    };
    ok(
        &mut registry,
        Command::UpdateService {
            name: "cart".into(),
            patch: patch(hold.clone()),
        },
    );
    assert_eq!(registry.services["cart"].settings(), hold.over(&sample));
}

#[test]
fn a_replacing_patch_sends_what_it_leaves_out_back_to_its_default() {
    let mut registry = Registry::default();
    ok(
        &mut registry,
        Command::CreateService(spec_with("cart", ServiceSettings::sample())),
    );
    let only = ServiceSettings {
        max_scale: Some(3),
        ..Default::default()
    };
    ok(
        &mut registry,
        Command::UpdateService {
            name: "cart".into(),
            patch: ServicePatch {
                settings: only.clone(),
                replace_settings: true,
                ..Default::default()
            },
        },
    );
    let expected = ServiceSettings {
        shard_count: Some(16),
        ..only.with_defaults()
    };
    assert_eq!(registry.services["cart"].settings(), expected, "the shard count stays");
}

#[test]
fn the_shard_count_is_fixed_once_the_service_exists() {
    let mut registry = with_cart();
    let before = registry.clone();
    let applied = apply(
        &mut registry,
        Command::UpdateService {
            name: "cart".into(),
            patch: patch(ServiceSettings {
                shard_count: Some(8),
                ..Default::default()
            }),
        },
        T0,
    );
    assert_eq!(
        applied.response,
        Err(RegistryError::Invalid {
            field: "shard_count".into(),
            message: "shard_count is fixed once a service exists (it has 4); delete the service and create it again \
                      to change it"
                .into()
        })
    );
    assert_eq!(registry, before);
    // --- the same count is no change at all
    let same = patch(ServiceSettings {
        shard_count: Some(4),
        ..Default::default()
    });
    let effects = ok(
        &mut registry,
        Command::UpdateService {
            name: "cart".into(),
            patch: same,
        },
    );
    assert_eq!((effects, registry.services["cart"].generation), (vec![], 1));
}

/// A deploy that changes what runs, on behalf of `principal` (as the API writes it).
fn deploy_by(registry: &mut Registry, principal: &str, runs: RevisionSpec) -> Applied {
    let command = Command::UpdateService {
        name: "cart".into(),
        patch: ServicePatch {
            runs,
            ..Default::default()
        },
    };
    apply(
        registry,
        Command::Audited {
            command: Box::new(command),
            record: AuditRecord {
                id: 0,
                at_ms: 0,
                principal: principal.into(),
                method: "PATCH".into(),
                path: "/api/v1/services/cart".into(),
                target: Some("cart".into()),
                status: 200,
            },
        },
        T0 + 5,
    )
}

#[test]
fn a_change_of_what_runs_is_a_new_revision_saying_who_and_when() {
    let mut registry = with_cart();
    let first = registry.services["cart"].revision_records();
    assert_eq!(
        (
            first.len(),
            first[0].number,
            first[0].created_by.as_str(),
            first[0].created_at_ms
        ),
        (1, 1, "the control plane", T0)
    );
    let labelled = RevisionSpec {
        env: Some(vec![EnvVar::new("LABEL", "two")]),
        ..RevisionSpec::default()
    };
    let applied = deploy_by(&mut registry, "admin token", labelled);
    assert!(applied.response.is_ok(), "{:?}", applied.response);
    let revision_events: Vec<&Event> = applied
        .effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Event(event) if event.kind == EventKind::RevisionCreated => Some(event),
            _ => None,
        })
        .collect();
    assert_eq!(revision_events.len(), 1);
    assert_eq!(revision_events[0].reason, "revision 2 deployed by admin token");
    let cart = &registry.services["cart"];
    assert_eq!((cart.serving(), cart.latest_revision, cart.generation), (2, 2, 2));
    let second = cart.revision(2).expect("revision 2 is kept");
    assert_eq!(
        (second.created_by.as_str(), second.created_at_ms),
        ("admin token", T0 + 5)
    );
    // --- the patch named only the environment: the command is kept
    assert_eq!(second.spec.command.as_deref(), Some("./cart"));
    assert_eq!(second.spec.env_value("LABEL"), Some("two"));
    assert_eq!(
        cart.revision(1).map(|r| r.spec.env.clone()),
        Some(None),
        "revision 1 is immutable"
    );

    // --- the same again, and a change of settings alone: no new revision
    let again = deploy_by(
        &mut registry,
        "admin token",
        RevisionSpec {
            env: Some(vec![EnvVar::new("LABEL", "two")]),
            ..RevisionSpec::default()
        },
    );
    assert_eq!(again.effects, vec![], "the same deploy again changes nothing");
    ok(
        &mut registry,
        Command::UpdateService {
            name: "cart".into(),
            patch: patch(ServiceSettings {
                max_scale: Some(3),
                ..Default::default()
            }),
        },
    );
    let cart = &registry.services["cart"];
    assert_eq!((cart.serving(), cart.latest_revision, cart.generation), (2, 2, 3));
}

#[test]
fn a_bad_environment_is_refused_and_changes_nothing() {
    let mut registry = with_cart();
    let before = registry.clone();
    let applied = deploy_by(
        &mut registry,
        "admin token",
        RevisionSpec {
            env: Some(vec![EnvVar::new("STRATA_TOKEN", "x")]),
            ..RevisionSpec::default()
        },
    );
    let Err(RegistryError::Invalid { field, message }) = applied.response else {
        panic!("{:?}", applied.response)
    };
    assert_eq!(
        (field.as_str(), message.as_str()),
        (
            "env",
            "env: STRATA_TOKEN is reserved: variables starting with STRATA_ are Strata's own"
        )
    );
    // The refused write is audited; nothing else changed.
    registry.audit.clear();
    registry.next_audit_id = before.next_audit_id;
    assert_eq!(registry, before);
}

#[test]
fn the_history_keeps_the_last_n_revisions_and_a_shorter_history_prunes_at_once() {
    let mut registry = with_cart();
    for version in 2..=25 {
        deploy_by(
            &mut registry,
            "admin token",
            RevisionSpec::command(format!("./cart --v{version}")),
        );
    }
    let numbers =
        |registry: &Registry| -> Vec<u64> { registry.services["cart"].revisions.iter().map(|r| r.number).collect() };
    assert_eq!(numbers(&registry), (6..=25).collect::<Vec<_>>(), "the default keeps 20");
    ok(
        &mut registry,
        Command::UpdateService {
            name: "cart".into(),
            patch: patch(ServiceSettings {
                revision_history: Some(3),
                ..Default::default()
            }),
        },
    );
    assert_eq!(numbers(&registry), vec![23, 24, 25]);
    assert_eq!(registry.services["cart"].serving(), 25);
}
