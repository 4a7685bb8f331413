//! The collector with scripted loads and a recording sink on paused tokio time, and the
//! Prometheus source against real HTTP servers on loopback.

use std::sync::Mutex as StdMutex;

use super::*;
use crate::test_server::{refused_url, Response, TestServer};

/// Loads set by the test, per service; `None` until set.
#[derive(Default)]
struct ScriptedSource {
    loads: StdMutex<HashMap<String, Load>>,
}

impl ScriptedSource {
    fn set(&self, service: &str, concurrency: f64) {
        let load = Load {
            concurrency,
            requests_per_second: concurrency,
        };
        self.loads.lock().unwrap().insert(service.to_owned(), load);
    }
}

#[async_trait]
impl MetricsSource for Arc<ScriptedSource> {
    async fn observe(&self, service: &str, targets: &[String], _now: Timestamp) -> Option<Load> {
        if targets.is_empty() {
            return None;
        }
        self.loads.lock().unwrap().get(service).copied()
    }
}

/// Sends every write to the test; fails the first `failures` of them.
#[derive(Default)]
struct RecordingSink {
    writes: StdMutex<Vec<(String, u32, String)>>,
    idle_times: StdMutex<Vec<(String, u64)>>,
    failures: StdMutex<u32>,
}

impl RecordingSink {
    fn failing(failures: u32) -> Self {
        RecordingSink {
            failures: StdMutex::new(failures),
            ..Default::default()
        }
    }
}

#[async_trait]
impl ScaleSink for Arc<RecordingSink> {
    async fn set_desired(&self, service: &str, replicas: u32, reason: &str) -> Result<(), SinkError> {
        let mut failures = self.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return Err(SinkError::new("not the leader"));
        }
        self.writes
            .lock()
            .unwrap()
            .push((service.to_owned(), replicas, reason.to_owned()));
        Ok(())
    }

    async fn record_idle_times(&self, service: &str, idle_times: &IdleHistogram) -> Result<(), SinkError> {
        self.idle_times
            .lock()
            .unwrap()
            .push((service.to_owned(), idle_times.samples()));
        Ok(())
    }
}

impl RecordingSink {
    fn take_writes(&self) -> Vec<(String, u32, String)> {
        std::mem::take(&mut *self.writes.lock().unwrap())
    }
}

type TestCollector = Collector<Arc<ScriptedSource>, Arc<RecordingSink>>;

fn collector(failures: u32) -> (TestCollector, Arc<ScriptedSource>, Arc<RecordingSink>) {
    let source = Arc::new(ScriptedSource::default());
    let sink = Arc::new(RecordingSink::failing(failures));
    (Collector::new(source.clone(), sink.clone()), source, sink)
}

fn write(desired: u32, reason: &str) -> (String, u32, String) {
    ("cart".to_owned(), desired, reason.to_owned())
}

fn quick_settings() -> ScalingSettings {
    ScalingSettings {
        target_concurrency: 10.0,
        stable_window: Duration::from_secs(6),
        scale_to_zero_grace: Duration::from_secs(3),
        ..Default::default()
    }
}

fn instances(count: usize) -> Vec<String> {
    vec!["http://127.0.0.1:1/metrics".to_owned(); count]
}

/// The cart as the registry holds it.
fn cart(desired: u32, ready: usize) -> ServiceState {
    ServiceState {
        name: "cart".into(),
        settings: quick_settings(),
        targets: instances(ready),
        desired,
        idle_times: IdleHistogram::new(),
        next_timer_due_in: None,
        cold_start: None,
    }
}

#[test]
fn a_count_written_elsewhere_is_adopted_and_a_pending_write_is_not() {
    // In step with the registry.
    assert_eq!(adoption(3, Some(3), 3), None);
    // The collector decided 4 and its write failed: the registry still shows what it wrote
    // last, and the write will be retried rather than overruled.
    assert_eq!(adoption(4, Some(3), 3), None);
    // Someone else wrote 5 (an operator, new bounds): take it over.
    assert_eq!(adoption(3, Some(3), 5), Some(5));
    assert_eq!(adoption(4, Some(3), 5), Some(5));
    // Nothing written yet and the registry differs: take it over.
    assert_eq!(adoption(2, None, 0), Some(0));
    assert_eq!(adoption(2, None, 2), None);
}

#[tokio::test(start_paused = true)]
async fn sync_tracks_adopts_and_forgets() {
    let (mut collector, source, sink) = collector(0);
    source.set("cart", 40.0);
    collector.sync(vec![cart(1, 1)]);
    assert_eq!(collector.desired("cart"), Some(1));
    collector.tick().await;
    assert_eq!(
        sink.take_writes(),
        vec![write(
            4,
            "panic: 40.0 in flight over 1s vs capacity 10 (1 ready x 10 per instance)"
        )]
    );

    // --- the registry holds what was written: nothing to adopt
    collector.sync(vec![cart(4, 4)]);
    assert_eq!(collector.desired("cart"), Some(4));

    // --- an operator set 7: adopted, and not written back
    collector.sync(vec![cart(7, 4)]);
    assert_eq!(collector.desired("cart"), Some(7));
    collector.tick().await;
    assert_eq!(sink.take_writes(), vec![]);

    // --- the service is gone: forgotten, nothing decided for it
    collector.sync(Vec::new());
    assert_eq!(collector.desired("cart"), None);
    assert!(collector.tick().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_poke_decides_at_once_with_the_held_requests() {
    let (mut collector, _source, sink) = collector(0);
    collector.sync(vec![cart(0, 0)]);
    assert_eq!(collector.poke("cart", 50, Wake::Requests).await, Some(5));
    assert_eq!(
        sink.take_writes(),
        vec![write(
            5,
            "scale from zero: 50 requests held at the gateway at target 10 per instance"
        )]
    );
    assert_eq!(collector.poke("unknown", 1, Wake::Requests).await, None);
}

#[tokio::test(start_paused = true)]
async fn held_counts_stand_while_fresh_and_nothing_is_ready() {
    let (mut collector, _source, _sink) = collector(0);
    collector.sync(vec![cart(0, 0)]);
    collector.poke("cart", 3, Wake::Requests).await;
    let held = |observations: Vec<(String, Observation)>| observations[0].1.held;
    assert_eq!(held(collector.round().await), 3);
    tokio::time::advance(HELD_FRESH).await;
    assert_eq!(held(collector.round().await), 0, "stale after {HELD_FRESH:?}");

    // An instance is ready: the gateway has released what it held.
    collector.poke("cart", 3, Wake::Requests).await;
    collector.sync(vec![cart(1, 1)]);
    assert_eq!(held(collector.round().await), 0);
}

#[tokio::test(start_paused = true)]
async fn an_events_poke_does_not_replace_the_requests_the_gateway_holds() {
    let (mut collector, _source, _sink) = collector(0);
    collector.sync(vec![cart(0, 0)]);
    collector.poke("cart", 50, Wake::Requests).await;
    collector.poke("cart", 1, Wake::Events).await;
    let observations = collector.round().await;
    assert_eq!((observations[0].1.held, observations[0].1.wake), (50, Wake::Requests));
    // Once the gateway's count is stale, the events stand alone.
    tokio::time::advance(HELD_FRESH).await;
    collector.poke("cart", 1, Wake::Events).await;
    let observations = collector.round().await;
    assert_eq!((observations[0].1.held, observations[0].1.wake), (1, Wake::Events));
}

#[tokio::test(start_paused = true)]
async fn failed_writes_are_retried_next_tick() {
    let (mut collector, source, sink) = collector(2);
    source.set("cart", 25.0);
    collector.sync(vec![cart(1, 1)]);
    collector.tick().await;
    collector.tick().await;
    assert_eq!(sink.take_writes(), vec![], "both attempts so far failed");
    // The registry still shows 1: a write pending, not a count to adopt.
    collector.sync(vec![cart(1, 1)]);
    collector.tick().await;
    assert_eq!(
        sink.take_writes(),
        vec![write(
            3,
            "panic: 25.0 in flight over 1s vs capacity 10 (1 ready x 10 per instance)"
        )]
    );
    collector.sync(vec![cart(3, 3)]);
    collector.tick().await;
    assert_eq!(sink.take_writes(), vec![], "nothing changed, nothing written");
}

#[tokio::test(start_paused = true)]
async fn invalid_settings_are_not_scaled() {
    let (mut collector, _source, _sink) = collector(0);
    let invalid = ServiceState {
        settings: ScalingSettings {
            max_scale: 0,
            ..quick_settings()
        },
        ..cart(1, 1)
    };
    collector.sync(vec![invalid]);
    assert_eq!(collector.desired("cart"), None);
}

#[tokio::test(start_paused = true)]
async fn idle_times_start_from_the_registry_and_are_stored_when_they_change() {
    let (mut collector, source, sink) = collector(0);
    let mut stored = IdleHistogram::new();
    stored.record(Duration::from_secs(45));
    collector.sync(vec![ServiceState {
        idle_times: stored,
        ..cart(1, 1)
    }]);
    assert_eq!(collector.idle_times("cart").map(IdleHistogram::samples), Some(1));

    // A request, a quiet second, a request: one idle time, stored at once.
    let tick_with = |load: f64| source.set("cart", load);
    tick_with(1.0);
    collector.tick().await;
    tokio::time::advance(TICK).await;
    tick_with(0.0);
    collector.tick().await;
    tokio::time::advance(TICK).await;
    tick_with(1.0);
    collector.tick().await;
    assert_eq!(*sink.idle_times.lock().unwrap(), vec![("cart".to_owned(), 2)]);

    // Another one two seconds later is stored only once the write interval has passed.
    for load in [0.0, 1.0] {
        tokio::time::advance(TICK).await;
        tick_with(load);
        collector.tick().await;
    }
    assert_eq!(sink.idle_times.lock().unwrap().len(), 1);
    tokio::time::advance(IDLE_TIMES_WRITE_INTERVAL).await;
    tick_with(1.0);
    collector.tick().await;
    assert_eq!(sink.idle_times.lock().unwrap()[1], ("cart".to_owned(), 3));
}

#[tokio::test]
async fn prometheus_source_sums_instances_and_extrapolates_failures() {
    let exposition = |in_flight: u32, total: u32| {
        format!(
            "strata_proxy_in_flight_requests{{service=\"a.A\"}} {in_flight}\n\
             strata_proxy_requests_total{{service=\"a.A\",code=\"0\"}} {total}\n\
             strata_proxy_requests_total{{service=\"a.B\",code=\"0\"}} 1\n"
        )
    };
    let first = TestServer::start(Response::ok(exposition(3, 100))).await;
    let second = TestServer::start(Response::ok(exposition(5, 10))).await;
    let targets = vec![first.url.clone(), second.url.clone(), refused_url().await];
    let source = PrometheusSource::new(Duration::from_secs(5)).unwrap();

    // Two of three answered: their 8 in flight stand for three instances' 12. The first
    // reading of a counter gives no rate yet.
    let load = source.observe("cart", &targets, Timestamp::from_secs(1)).await;
    assert_eq!(
        load,
        Some(Load {
            concurrency: 12.0,
            requests_per_second: 0.0
        })
    );

    // A second later: +20 on the first instance, and the second restarted (counter reset).
    first.set(Response::ok(exposition(0, 120))).await;
    second.set(Response::ok(exposition(0, 4))).await;
    let load = source.observe("cart", &targets, Timestamp::from_secs(2)).await;
    assert_eq!(
        load,
        Some(Load {
            concurrency: 0.0,
            requests_per_second: (20.0 + 5.0) * 1.5
        })
    );

    let nothing = vec![refused_url().await];
    assert_eq!(source.observe("cart", &nothing, Timestamp::from_secs(3)).await, None);
    assert_eq!(source.observe("cart", &[], Timestamp::from_secs(3)).await, None);
    assert!(
        source.rates.lock().unwrap().is_empty(),
        "counters of gone instances are forgotten"
    );
}
