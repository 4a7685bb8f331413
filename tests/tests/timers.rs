//! Durable timers end to end, over real processes and a real SQLite file: the
//! value cart (tests/src/bin/value_cart.rs) expires itself through
//! `strata.timers.Timers`, scheduled as a side effect of AddItem. A failed
//! command stores no timer, KeepCart's Cancel removes one, a stored timer
//! survives `kill -9` of the sidecar and fires afterwards, and a timer whose call
//! keeps failing is retried and then kept as failed with its error. The same cart
//! deployed with `strata dev` (a managed sidecar, whose store wraps the store
//! that keeps the timers) expires itself too, its pending and failed timers
//! listed by `GET /api/v1/services/{name}/timers`, and at zero the autoscaler wakes
//! it for its expiry and lets it return to zero. A timer pending when `strata
//! dev` is killed with `kill -9` fires once it is started again on its data.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_e2e::{
    binary,
    dev::{start_dev, start_dev_on},
    free_port, start_function, start_proxy, Http, Process,
};
use strata_store::{Store, StoredTimer, TimerState};

/// A standalone sidecar keeps its timers under this deployment name.
const SERVICE: &str = "standalone";
const OWNER: &str = "strata.test.valuecart.ValueCart";
/// How long after its last add a cart expires.
const EXPIRE_MS: &str = "1500";

struct Stack {
    _dir: tempfile::TempDir,
    store_url: String,
    function_port: u16,
    http_port: u16,
    admin_port: u16,
    function: Process,
    proxy: Process,
    http: Http,
    /// The sidecar's admin listener, for `/metrics`.
    admin: Http,
}

fn start_sidecar(function_port: u16, http_port: u16, admin_port: u16, store_url: &str) -> Process {
    start_proxy(
        function_port,
        http_port,
        store_url,
        &["--admin-port", &admin_port.to_string()],
    )
}

impl Stack {
    fn start() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let store_url = format!("sqlite://{}", dir.path().join("timers.db").display());
        let (function_port, http_port, admin_port) = (free_port(), free_port(), free_port());
        let function = start_function("value-cart", function_port, &[("EXPIRE_MS", EXPIRE_MS)]);
        let proxy = start_sidecar(function_port, http_port, admin_port, &store_url);
        Stack {
            _dir: dir,
            store_url,
            function_port,
            http_port,
            admin_port,
            function,
            proxy,
            http: Http::new(http_port),
            admin: Http::new(admin_port),
        }
    }

    /// `kill -9` of the sidecar and the function, then both again on the same ports and file.
    fn kill_and_restart(&mut self) {
        self.proxy.kill();
        self.function.kill();
        self.function = start_function("value-cart", self.function_port, &[("EXPIRE_MS", EXPIRE_MS)]);
        self.proxy = start_sidecar(self.function_port, self.http_port, self.admin_port, &self.store_url);
    }

    async fn add(&self, cart: &str, product: &str, quantity: i32) -> (u16, Value) {
        self.http
            .post(
                &format!("/vcart/{cart}/items/add"),
                json!({"productId": product, "quantity": quantity}),
            )
            .await
    }

    async fn cart(&self, cart: &str) -> Value {
        let (status, body) = self.http.get(&format!("/vcarts/{cart}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until cart `cart` is empty: its expiry fired.
    async fn until_expired(&self, cart: &str) {
        self.http
            .get_until(&format!("/vcarts/{cart}"), |body| body == &json!({"items": []}))
            .await;
    }
}

/// The cart's timer in `state`, as the store holds it.
async fn timer_of(store: &dyn Store, state: TimerState, cart: &str) -> Option<StoredTimer> {
    let timers = store.timers().expect("SQLite keeps timers");
    timers
        .list_timers(SERVICE, state, 1000)
        .await
        .unwrap()
        .into_iter()
        .find(|timer| timer.key.entity_id == cart && timer.key.owner == OWNER)
}

/// Waits until the cart's timer is in `state` (and `check` holds of it), 20 s at most.
async fn until_timer(
    store: &dyn Store,
    state: TimerState,
    cart: &str,
    check: impl Fn(&StoredTimer) -> bool,
) -> StoredTimer {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(timer) = timer_of(store, state, cart).await.filter(|t| check(t)) {
            return timer;
        }
        assert!(Instant::now() < deadline, "cart {cart}'s timer never became {state:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the cart has no timer in `state`, 20 s at most: a fired timer is
/// removed just after its call answered, so a caller that saw the call's effect
/// may look before the removal.
async fn until_no_timer(store: &dyn Store, state: TimerState, cart: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while timer_of(store, state, cart).await.is_some() {
        assert!(Instant::now() < deadline, "cart {cart}'s timer stayed {state:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cart_expires_itself_a_failed_command_stores_no_timer_and_cancel_removes_one() {
    let stack = Stack::start();
    let store = strata_store::open(&stack.store_url).await.unwrap();

    // --- an add schedules the expiry, stored before the reply; adding again replaces it
    let (status, body) = stack.add("a", "apple", 1).await;
    assert_eq!(status, 200, "{body}");
    let first = timer_of(store.as_ref(), TimerState::Pending, "a")
        .await
        .expect("the expiry is stored before the reply");
    assert_eq!(first.key.name, "expire");
    assert_eq!(first.call.service_name, OWNER);
    assert_eq!(first.call.method, "ExpireCart");
    assert_eq!((first.attempts, first.max_attempts), (0, 3));
    let (status, body) = stack.add("a", "apple", 2).await;
    assert_eq!(status, 200, "{body}");
    let second = timer_of(store.as_ref(), TimerState::Pending, "a").await.unwrap();
    assert!(
        second.generation > first.generation,
        "scheduling the name again replaces the timer"
    );
    assert!(second.due_ms >= first.due_ms);

    // --- a failed command (a non-positive quantity) stores no timer
    let (status, body) = stack.add("b", "apple", 0).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["message"], "quantity must be positive");
    assert!(timer_of(store.as_ref(), TimerState::Pending, "b").await.is_none());

    // --- KeepCart cancels c's expiry; d's, scheduled after it, still fires
    let (status, body) = stack.add("c", "pear", 1).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = stack.http.post("/vcart/c/keep", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(timer_of(store.as_ref(), TimerState::Pending, "c").await.is_none());
    let (status, body) = stack.add("d", "plum", 1).await;
    assert_eq!(status, 200, "{body}");

    // --- the carts expire: emptied by their timers' calls, which are then removed
    stack.until_expired("a").await;
    stack.until_expired("d").await;
    until_no_timer(store.as_ref(), TimerState::Pending, "a").await;
    assert!(timer_of(store.as_ref(), TimerState::Failed, "a").await.is_none());
    assert_eq!(
        stack.cart("c").await,
        json!({"items": [{"productId": "pear", "quantity": 1}]}),
        "a cancelled timer does not fire (d's, due after it, did)"
    );
    let metrics = stack.admin.text("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("strata_timer_calls_total{") && line.contains("outcome=\"ok\"")),
        "the calls are counted: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timer_survives_kill_9_of_the_sidecar_and_a_failing_call_is_retried_then_kept_as_failed() {
    let mut stack = Stack::start();
    let store = strata_store::open(&stack.store_url).await.unwrap();

    // --- stored, then the sidecar dies before it is due
    let (status, body) = stack.add("k", "apple", 1).await;
    assert_eq!(status, 200, "{body}");
    stack.proxy.kill();
    let kept = timer_of(store.as_ref(), TimerState::Pending, "k")
        .await
        .expect("the timer outlives the sidecar");
    assert_eq!(kept.attempts, 0, "not called before the kill");

    // --- a new sidecar (and function) fires it
    stack.kill_and_restart();
    stack.until_expired("k").await;
    until_no_timer(store.as_ref(), TimerState::Pending, "k").await;

    // --- ExpireCart fails while the cart holds a sticky item: 3 calls, then failed
    let (status, body) = stack.add("s", "sticky", 1).await;
    assert_eq!(status, 200, "{body}");
    let failed = until_timer(store.as_ref(), TimerState::Failed, "s", |_| true).await;
    assert_eq!(failed.attempts, 3, "retried up to its limit");
    let error = failed.last_error.expect("a failed timer keeps its error");
    assert!(
        error.contains("the cart holds a sticky item and cannot expire"),
        "the function's reason: {error}"
    );
    assert_eq!(
        stack.cart("s").await,
        json!({"items": [{"productId": "sticky", "quantity": 1}]}),
        "the failed calls changed nothing"
    );
    let metrics = stack.admin.text("/metrics").await;
    for outcome in ["retry", "failed"] {
        assert!(
            metrics.lines().any(|line| line.starts_with("strata_timer_calls_total{")
                && line.contains(&format!("outcome=\"{outcome}\""))),
            "{outcome} is counted: {metrics}"
        );
    }

    // --- adding again replaces the failed timer with a pending one
    let (status, body) = stack.add("s", "apple", 1).await;
    assert_eq!(status, 200, "{body}");
    assert!(timer_of(store.as_ref(), TimerState::Failed, "s").await.is_none());
    assert!(timer_of(store.as_ref(), TimerState::Pending, "s").await.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cart_deployed_with_strata_dev_expires_itself_and_the_api_lists_its_timers() {
    let dev = start_dev(tempfile::tempdir().unwrap(), &[]);
    let cart = binary("value-cart").display().to_string();
    dev.deploy_command(
        "vcart",
        &cart,
        &["--env", &format!("EXPIRE_MS={EXPIRE_MS}"), "--min-scale", "1"],
    );
    dev.until_service("vcart", "the instance is ready", Duration::from_secs(60), |s| {
        s["ready_replicas"] == 1
    })
    .await;
    let http = reqwest::Client::new();
    let add = |user: &'static str, product: &'static str| {
        let http = http.clone();
        let url = dev.url(&format!("/vcart/{user}/items/add"));
        async move {
            let added = http
                .post(url)
                .json(&json!({"productId": product, "quantity": 1}))
                .send()
                .await
                .unwrap();
            assert_eq!(added.status(), 200, "{}", added.text().await.unwrap());
        }
    };

    // --- an add schedules the expiry; the API lists it as pending
    add("dora", "p1").await;
    let timers = dev.api("/services/vcart/timers").await;
    let pending = timers["pending"]
        .as_array()
        .unwrap()
        .iter()
        .find(|timer| timer["entity_id"] == "dora")
        .unwrap_or_else(|| panic!("dora's timer is not listed: {timers}"));
    assert_eq!(pending["name"], "expire", "{pending}");
    assert_eq!(pending["owner"], OWNER);
    assert_eq!(pending["call"], format!("{OWNER}/ExpireCart"));
    assert_eq!(
        (pending["attempts"].as_u64(), pending["max_attempts"].as_u64()),
        (Some(0), Some(3))
    );
    assert!(pending["due_ms"].as_i64().unwrap() > 0);

    // --- it expires the cart
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cart: Value = http
            .get(dev.url("/vcarts/dora"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if cart["items"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(Instant::now() < deadline, "the cart never expired: {cart}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // --- a call that keeps failing is retried, then listed as failed with its error
    add("sid", "sticky").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let failed = loop {
        let timers = dev.api("/services/vcart/timers").await;
        let failed = timers["failed"]
            .as_array()
            .unwrap()
            .iter()
            .find(|timer| timer["entity_id"] == "sid")
            .cloned();
        if let Some(failed) = failed {
            assert_eq!(timers["failed_count"], 1, "{timers}");
            break failed;
        }
        assert!(Instant::now() < deadline, "the timer never failed: {timers}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(failed["attempts"], 3, "retried up to its limit: {failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the cart holds a sticky item and cannot expire"),
        "{failed}"
    );

    // --- bad input: an unknown service, a limit out of range
    let answer = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/api/v1/services/nope/timers", dev.api))
        .bearer_auth(strata_e2e::dev::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    let answer = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/api/v1/services/vcart/timers?limit=0",
            dev.api
        ))
        .bearer_auth(strata_e2e::dev::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
}

/// The service's scale events (oldest first) as `(at_ms, reason)`.
async fn scale_history(dev: &strata_e2e::dev::Dev, service: &str) -> Vec<(u64, String)> {
    let history = dev.api(&format!("/services/{service}/history?limit=200")).await;
    let mut scales: Vec<(u64, String)> = history["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|event| event["kind"] == "scale")
        .map(|event| {
            let at_ms = event["at_ms"].as_u64().expect("at_ms");
            (at_ms, event["reason"].as_str().expect("reason").to_owned())
        })
        .collect();
    scales.reverse();
    scales
}

fn wall_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    u64::try_from(since_epoch.expect("clock after 1970").as_millis()).expect("ms fit")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cart_at_zero_is_woken_for_its_expiry_and_returns_to_zero() {
    // The cart expires 20 s after its last add; it idles to zero long before.
    let dev = start_dev(tempfile::tempdir().unwrap(), &[]);
    let cart = binary("value-cart").display().to_string();
    dev.deploy_command(
        "vcart",
        &cart,
        &[
            "--env",
            "EXPIRE_MS=20000",
            "--min-scale",
            "0",
            "--stable-window",
            "2s",
            "--scale-to-zero-grace",
            "1s",
        ],
    );
    dev.until_service("vcart", "the instance is ready", Duration::from_secs(60), |s| {
        s["ready_replicas"] == 1
    })
    .await;

    // --- an add schedules the expiry
    let http = reqwest::Client::new();
    let before_add_ms = wall_ms();
    let added = http
        .post(dev.url("/vcart/wanda/items/add"))
        .json(&json!({"productId": "p1", "quantity": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 200, "{}", added.text().await.unwrap());
    let due_after_ms = before_add_ms + 20_000;

    // --- with no request, the service goes to zero well before the timer is due
    dev.until_service("vcart", "scaled to zero", Duration::from_secs(60), |s| {
        s["desired_replicas"] == 0 && s["ready_replicas"] == 0
    })
    .await;
    let at_zero = scale_history(&dev, "vcart").await.len();
    assert!(
        wall_ms() < due_after_ms,
        "the service reached zero only after the timer was due; the test proves nothing"
    );

    // --- the autoscaler wakes it ahead of the due time, for the timer
    let deadline = Instant::now() + Duration::from_secs(60);
    let (woke_ms, reason) = loop {
        let scales = scale_history(&dev, "vcart").await;
        if let Some(wake) = scales[at_zero..].iter().find(|(_, reason)| reason.contains("0 -> 1")) {
            break wake.clone();
        }
        assert!(Instant::now() < deadline, "never woken for the timer: {scales:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        reason.starts_with("desired replicas 0 -> 1: a timer is due in"),
        "woken for another reason: {reason}"
    );
    assert!(
        woke_ms < due_after_ms,
        "woken at {woke_ms}, after the timer was due at {due_after_ms}"
    );

    // --- the timer fires, then the service returns to zero by itself
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let scales = scale_history(&dev, "vcart").await;
        let after_wake = scales.iter().skip_while(|(at, _)| *at < woke_ms).skip(1);
        if let Some((_, back)) = after_wake.clone().find(|(_, reason)| reason.contains("1 -> 0")) {
            assert!(back.contains("scale to zero"), "{back}");
            break;
        }
        assert!(Instant::now() < deadline, "never returned to zero: {scales:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // --- no request reached the cart meanwhile: its own timer emptied it
    let emptied: Value = http
        .get(dev.url("/vcarts/wanda"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(emptied, json!({"items": []}));
}

/// The cart of `user` as `strata dev`'s gateway answers it (`None`: not served now).
async fn vcart_of(http: &reqwest::Client, dev: &strata_e2e::dev::Dev, user: &str) -> Option<Value> {
    let reply = http.get(dev.url(&format!("/vcarts/{user}"))).send().await.ok()?;
    if reply.status() != 200 {
        return None;
    }
    reply.json().await.ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timer_pending_at_kill_9_of_strata_dev_fires_after_it_restarts() {
    let dev = start_dev(tempfile::tempdir().unwrap(), &[]);
    let cart = binary("value-cart").display().to_string();
    dev.deploy_command("vcart", &cart, &["--env", "EXPIRE_MS=15000", "--min-scale", "1"]);
    dev.until_service("vcart", "the instance is ready", Duration::from_secs(60), |s| {
        s["ready_replicas"] == 1
    })
    .await;

    // --- an add schedules the expiry, 15 s ahead
    let http = reqwest::Client::new();
    let added = http
        .post(dev.url("/vcart/kim/items/add"))
        .json(&json!({"productId": "p1", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 200, "{}", added.text().await.unwrap());
    let due_after_ms = wall_ms() + 15_000;

    // --- kill -9 of strata dev (its instances die with it), then again on its data
    let (gateway, api) = (dev.gateway, dev.api);
    let mut dev = dev;
    dev.process.kill();
    let dir = std::mem::replace(&mut dev.dir, tempfile::tempdir().unwrap());
    drop(dev);
    let dev = start_dev_on(dir, gateway, api, &[]);
    dev.until_service("vcart", "the instance is back", Duration::from_secs(60), |s| {
        s["ready_replicas"] == 1
    })
    .await;

    // --- the cart outlived the kill, and its timer empties it afterwards
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_full = false;
    loop {
        let now_ms = wall_ms();
        if let Some(cart) = vcart_of(&http, &dev, "kim").await {
            if cart == json!({"items": []}) {
                break;
            }
            assert_eq!(cart["items"][0]["quantity"], 1, "{cart}");
            seen_full |= now_ms < due_after_ms;
        }
        assert!(Instant::now() < deadline, "the cart never expired after the restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        seen_full,
        "the cart was not read back before its timer was due; the test proves nothing"
    );
}
