//! The wake rule (which subscribers, how often) on exact answers, and the
//! store that notices committed writes over a real SQLite file: many writes
//! make one poke per subscriber per interval, a failed write none.

use strata_proto::strata::controlplane::v1::{EntityRoute, InstanceRoute, RouteSnapshot, ServiceRoutes};
use strata_proto::{entity_types::ACTION, entity_types::VALUE_ENTITY};
use strata_store::SqliteStore;

use super::*;

/// The fixture function whose actions subscribe to the event log "audits".
fn subscribers_descriptors() -> Vec<u8> {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
    let mut compiler = protox::Compiler::new([fixtures, strata_proto::PROTO_DIR]).unwrap();
    compiler.include_imports(true);
    compiler.open_files(["subscribers.proto"]).unwrap();
    compiler.encode_file_descriptor_set()
}

/// A deployed service running the subscribers fixture (or, without
/// descriptors, one whose first instance is still starting), with `ready`
/// ready instances.
fn service(name: &str, descriptors: bool, ready: usize) -> ServiceRoutes {
    let entity = |entity_type: &str, service_name: &str, persistence_id: &str| EntityRoute {
        entity_type: entity_type.into(),
        service_name: service_name.into(),
        persistence_id: persistence_id.into(),
    };
    ServiceRoutes {
        name: name.into(),
        descriptor_set: if descriptors {
            subscribers_descriptors()
        } else {
            Vec::new()
        },
        entities: vec![
            entity(ACTION, "test.subscribers.Projector", ""),
            entity(VALUE_ENTITY, "test.subscribers.Ledger", "ledger"),
        ],
        instances: (0..ready)
            .map(|i| InstanceRoute {
                id: format!("{name}-{i}"),
                address: format!("127.0.0.1:{}", 9000 + i),
                state: "ready".into(),
                revision: 0,
            })
            .collect(),
        desired_replicas: ready as u32,
        ..Default::default()
    }
}

fn routes(services: Vec<ServiceRoutes>) -> Arc<RouteTable> {
    Arc::new(RouteTable::build(
        &RouteSnapshot { version: 1, services },
        &RouteTable::default(),
    ))
}

#[test]
fn only_subscribers_of_the_log_with_no_ready_instance_are_woken() {
    let table = routes(vec![
        service("projector", true, 0),
        service("busy-projector", true, 1),
        service("starting", false, 0),
        service("another-projector", true, 0),
    ]);
    assert_eq!(
        subscribers_at_zero(&table, "audits"),
        vec!["another-projector", "projector"],
        "a ready one consumes already; one without descriptors has told nobody what it subscribes to"
    );
    assert!(
        subscribers_at_zero(&table, "ledger").is_empty(),
        "nobody subscribes to it"
    );
    assert!(subscribers_at_zero(&RouteTable::default(), "audits").is_empty());
}

#[test]
fn each_subscriber_is_poked_at_most_once_per_interval() {
    let mut pacer = WakePacer::new(Duration::from_secs(1));
    let t0 = Instant::now();
    let at = |millis: u64| t0 + Duration::from_millis(millis);

    assert_eq!(pacer.due(["a", "b"], at(0)), vec!["a", "b"]);
    // Every write within the interval: nothing more, however many.
    for millis in [1, 10, 500, 999] {
        assert_eq!(
            pacer.due(["a", "b"], at(millis)),
            Vec::<String>::new(),
            "at {millis} ms"
        );
    }
    // A subscriber first seen later has its own interval.
    assert_eq!(pacer.due(["a", "c"], at(300)), vec!["c"]);
    // One interval after each was poked: again.
    assert_eq!(pacer.due(["a", "b", "c"], at(1_000)), vec!["a", "b"]);
    assert_eq!(pacer.due(["a", "b", "c"], at(1_299)), Vec::<String>::new());
    assert_eq!(pacer.due(["a", "b", "c"], at(1_300)), vec!["c"]);
    // A clock read out of order (never before the last poke) pokes nothing.
    assert_eq!(pacer.due(["a"], t0), Vec::<String>::new());
}

fn write(entity: &str, first_seq_nr: i64, events: usize, persistence_id: &str) -> JournalWrite {
    JournalWrite {
        key: EntityKey::new(persistence_id, entity),
        first_seq_nr,
        events: (0..events)
            .map(|i| Any {
                type_url: "json.cloudstate.io/event".into(),
                value: i.to_string().into_bytes(),
            })
            .collect(),
        snapshot: None,
        timers: Vec::new(),
    }
}

/// A managed sidecar's store is this wrapper: without the timers of the store
/// inside, `strata dev`'s sidecars neither stored nor fired a timer.
#[tokio::test]
async fn the_timers_are_the_inner_stores() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("timers.db")).await.unwrap());
    let (_routes_tx, routes_rx) = watch::channel(routes(vec![]));
    let (waker, _due) = Waker::new(routes_rx, Duration::from_secs(3600));
    let store = WakingStore { inner: sqlite, waker };
    let timers = store.timers().expect("a SQLite store keeps timers");
    assert_eq!(timers.next_timer_due("cart").await.unwrap(), None);
}

#[tokio::test]
async fn committed_writes_wake_each_subscriber_once_per_interval_and_failed_ones_none() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("log.db")).await.unwrap());
    let (routes_tx, routes_rx) = watch::channel(routes(vec![
        service("projector", true, 0),
        service("busy-projector", true, 1),
    ]));
    // An interval longer than the test: every write after the first is within it.
    let (waker, mut due) = Waker::new(routes_rx, Duration::from_secs(3600));
    let store = WakingStore {
        inner: sqlite.clone(),
        waker,
    };

    // --- a write to a log nobody subscribes to: no poke
    store.append(write("l1", 1, 1, "ledger")).await.unwrap();
    assert!(due.try_recv().is_err());

    // --- fifty writes to the subscribed log: one poke for the subscriber at zero
    for seq_nr in 1..=50 {
        store.append(write("e1", seq_nr, 1, "audits")).await.unwrap();
    }
    assert_eq!(due.try_recv().unwrap(), ("projector".to_owned(), "audits".to_owned()));
    assert!(due.try_recv().is_err(), "one poke per interval, not one per event");
    assert_eq!(
        sqlite.events(&EntityKey::new("audits", "e1"), 1).await.unwrap().len(),
        50
    );

    // --- a write the store refuses (its sequence number is taken) pokes nobody
    routes_tx.send_replace(routes(vec![service("late-projector", true, 0)]));
    assert!(store.append(write("e1", 50, 1, "audits")).await.is_err());
    assert!(due.try_recv().is_err(), "nothing was written");
    // The same subscriber set, once a write commits: the new subscriber is woken.
    store.append(write("e1", 51, 1, "audits")).await.unwrap();
    assert_eq!(
        due.try_recv().unwrap(),
        ("late-projector".to_owned(), "audits".to_owned())
    );
}

#[test]
fn the_sweep_looks_at_subscriptions_at_zero_to_the_logs_this_service_writes() {
    let table = routes(vec![service("projector", true, 0), service("busy-projector", true, 1)]);
    assert_eq!(
        sleeping_subscriptions(&table, &["audits".to_owned(), "ledger".to_owned()]),
        vec![Sleeping {
            service: "projector".into(),
            subscriber: "test.subscribers.Projector.OnAudit".into(),
            event_log: "audits".into(),
        }]
    );
    assert!(sleeping_subscriptions(&table, &["ledger".to_owned()]).is_empty());
}

#[tokio::test]
async fn a_sweep_wakes_a_subscriber_at_zero_whose_offset_lags_and_leaves_one_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("log.db")).await.unwrap());
    let table = routes(vec![service("projector", true, 0)]);
    let logs = ["audits".to_owned()];
    let subscriber = "test.subscribers.Projector.OnAudit";

    // --- nothing written: nothing to catch up
    let (waker, mut due) = Waker::new(watch::channel(table.clone()).1, Duration::from_secs(3600));
    waker.sweep(store.as_ref(), &logs).await;
    assert!(due.try_recv().is_err());

    // --- written without a poke (one lost, or the last instance leaving as it came)
    store.append(write("e1", 1, 2, "audits")).await.unwrap();
    waker.sweep(store.as_ref(), &logs).await;
    assert_eq!(due.try_recv().unwrap(), ("projector".to_owned(), "audits".to_owned()));
    // Within the interval the pacer holds the next sweep's poke back.
    waker.sweep(store.as_ref(), &logs).await;
    assert!(due.try_recv().is_err());

    // --- caught up (its offset at the log's end): left alone
    let end = store
        .event_log("audits", LogOffset::START, 10)
        .await
        .unwrap()
        .last()
        .unwrap()
        .offset;
    store.save_offset(subscriber, "audits", end).await.unwrap();
    let (waker, mut due) = Waker::new(watch::channel(table).1, Duration::from_secs(3600));
    waker.sweep(store.as_ref(), &logs).await;
    assert!(due.try_recv().is_err(), "a subscriber that has caught up stays at zero");
}
