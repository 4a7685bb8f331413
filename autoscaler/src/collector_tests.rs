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
struct RecordingSink {
    writes: mpsc::UnboundedSender<(String, u32, String)>,
    failures: StdMutex<u32>,
}

#[async_trait]
impl ScaleSink for RecordingSink {
    async fn set_desired(&self, service: &str, replicas: u32, reason: &str) -> Result<(), SinkError> {
        let mut failures = self.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return Err(SinkError::new("not the leader"));
        }
        self.writes
            .send((service.to_owned(), replicas, reason.to_owned()))
            .unwrap();
        Ok(())
    }
}

type Writes = mpsc::UnboundedReceiver<(String, u32, String)>;

fn collector(
    failures: u32,
) -> (
    Collector<Arc<ScriptedSource>, RecordingSink>,
    Arc<ScriptedSource>,
    Writes,
) {
    let source = Arc::new(ScriptedSource::default());
    let (writes, received) = mpsc::unbounded_channel();
    let sink = RecordingSink {
        writes,
        failures: StdMutex::new(failures),
    };
    (Collector::new(source.clone(), sink), source, received)
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

fn instance() -> Vec<String> {
    vec!["http://127.0.0.1:1/metrics".to_owned()]
}

#[tokio::test(start_paused = true)]
async fn scales_to_zero_and_wakes_at_once_on_a_poke() {
    let (collector, source, mut writes) = collector(0);
    source.set("cart", 0.0);
    let (commands, received) = mpsc::channel(8);
    let running = tokio::spawn(collector.run(received));
    let track = |targets| CollectorCommand::Track {
        service: "cart".into(),
        settings: quick_settings(),
        targets,
        desired: None,
    };

    // --- deploy: the initial scale is written
    commands.send(track(instance())).await.unwrap();
    assert_eq!(writes.recv().await.unwrap(), write(1, "initial scale 1 on deploy"));

    // --- no traffic: zero after the grace period, not before
    let deployed = Instant::now();
    assert_eq!(
        writes.recv().await.unwrap(),
        write(0, "scale to zero after 3s without traffic")
    );
    let idle = deployed.elapsed();
    assert!(
        idle >= Duration::from_secs(3) && idle < Duration::from_secs(5),
        "{idle:?}"
    );
    commands.send(track(Vec::new())).await.unwrap();

    // --- a request arrives at zero: one instance is asked for before the next tick
    let poked = Instant::now();
    commands
        .send(CollectorCommand::Poke { service: "cart".into() })
        .await
        .unwrap();
    assert_eq!(
        writes.recv().await.unwrap(),
        write(1, "request arrived at zero: scale from zero")
    );
    assert!(poked.elapsed() < TICK, "{:?}", poked.elapsed());

    // --- shutdown: closing the channel stops the loop
    drop(commands);
    running.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn ticks_feed_the_decision() {
    let (mut collector, source, mut writes) = collector(0);
    collector
        .track("cart", quick_settings(), instance(), None)
        .await
        .unwrap();
    assert_eq!(writes.recv().await.unwrap(), write(1, "initial scale 1 on deploy"));
    source.set("cart", 40.0);
    collector.tick().await;
    assert_eq!(
        writes.recv().await.unwrap(),
        write(
            4,
            "panic: 40.0 in flight over 1s vs capacity 10 (1 ready x 10 per instance)"
        )
    );
    assert_eq!(collector.desired("cart"), Some(4));
    collector.forget("cart");
    collector.tick().await;
    assert_eq!(collector.desired("cart"), None);
    assert!(writes.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn failed_writes_are_retried_next_tick() {
    let (mut collector, source, mut writes) = collector(2);
    source.set("cart", 5.0);
    collector
        .track("cart", quick_settings(), instance(), None)
        .await
        .unwrap();
    collector.tick().await;
    assert!(writes.try_recv().is_err(), "both attempts so far failed");
    collector.tick().await;
    assert_eq!(writes.recv().await.unwrap(), write(1, "initial scale 1 on deploy"));
    collector.tick().await;
    assert!(writes.try_recv().is_err(), "nothing changed, nothing written");
}

#[tokio::test(start_paused = true)]
async fn resumed_services_are_not_rewritten_and_bad_settings_are_refused() {
    let (mut collector, source, mut writes) = collector(0);
    source.set("cart", 30.0);
    let targets = vec![instance()[0].clone(); 3];
    collector
        .track("cart", quick_settings(), targets, Some(3))
        .await
        .unwrap();
    collector.tick().await;
    assert!(writes.try_recv().is_err());

    let invalid = ScalingSettings {
        max_scale: 0,
        ..quick_settings()
    };
    let error = collector.track("cart", invalid, Vec::new(), None).await.unwrap_err();
    assert_eq!(error.setting, "max_scale");
    assert!(!collector.poke("unknown").await);
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
