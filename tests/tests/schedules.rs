//! Cron schedules end to end, over real processes. Through `strata dev` and the
//! CLI: bad input is refused naming what is wrong, a schedule adds to the
//! shopping cart at each of its times, `strata schedule list` shows its runs, and
//! `strata schedule delete` ends it; through a gateway serving a self-signed
//! certificate too. In a three-node control plane (with a
//! gateway, a sidecar and PostgreSQL, `strata_e2e::cluster`): the leader is
//! killed with `kill -9` while a schedule runs every two seconds, and every time
//! from the first to the last is called exactly once: the cart counts one item
//! per run the registry recorded, and the recorded times leave none out.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_e2e::binary;
use strata_e2e::cluster::{Cluster, SERVICE, TOKEN};
use strata_e2e::dev::{start_dev, total, Dev, TOKEN as DEV_TOKEN};

const ADD_ITEM: &str = "cart/com.example.shoppingcart.ShoppingCart/AddItem";

fn add_body(user: &str) -> String {
    json!({"userId": user, "productId": "tick", "name": "Tick", "quantity": 1}).to_string()
}

/// `strata schedule ARGS` against `dev`: whether it succeeded, and what it printed.
fn schedule_cli(dev: &Dev, args: &[&str]) -> (bool, String) {
    let output = Command::new(binary("strata"))
        .arg("schedule")
        .args(args)
        .args(["--api", &format!("http://127.0.0.1:{}", dev.api)])
        .env("STRATA_TOKEN", DEV_TOKEN)
        .output()
        .expect("strata schedule");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// The schedule's recorded runs, oldest first, as `(time_ms, outcome, missed)`.
fn runs_of(schedule: &Value) -> Vec<(u64, String, u64)> {
    let mut runs: Vec<(u64, String, u64)> = schedule["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|run| {
            (
                run["time_ms"].as_u64().expect("time_ms"),
                run["outcome"].as_str().expect("outcome").to_owned(),
                run["missed"].as_u64().expect("missed"),
            )
        })
        .collect();
    runs.reverse();
    runs
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_made_with_the_cli_adds_to_the_cart_at_each_time_and_bad_input_is_refused() {
    let dev = start_dev(tempfile::tempdir().unwrap(), &[]);
    dev.deploy(&["--min-scale", "1"]);
    dev.until("the cart is ready", Duration::from_secs(60), |s| {
        s["ready_replicas"] == 1
    })
    .await;
    let body = add_body("ticker");

    // --- bad input: each refusal names what is wrong
    let refused = |args: &[&str], expected: &str| {
        let (ok, printed) = schedule_cli(&dev, args);
        assert!(!ok, "accepted: {args:?}");
        assert!(printed.contains(expected), "{args:?}: {printed}");
    };
    refused(
        &[
            "create",
            "bad",
            "--cron",
            "every minute",
            "--call",
            ADD_ITEM,
            "--body",
            &body,
        ],
        "the cron expression \"every minute\" does not parse",
    );
    refused(
        &[
            "create",
            "bad",
            "--cron",
            "* * * * *",
            "--time-zone",
            "Mars/Olympus",
            "--call",
            ADD_ITEM,
            "--body",
            &body,
        ],
        "\"Mars/Olympus\" is not a time zone",
    );
    refused(
        &[
            "create",
            "bad",
            "--cron",
            "* * * * *",
            "--call",
            "basket/com.example.shoppingcart.ShoppingCart/AddItem",
        ],
        "service \"basket\" not found",
    );
    refused(
        &[
            "create",
            "bad",
            "--cron",
            "* * * * *",
            "--call",
            "cart/com.example.shoppingcart.ShoppingCart/Checkout",
        ],
        "\"com.example.shoppingcart.ShoppingCart/Checkout\" not found",
    );
    refused(
        &[
            "create",
            "bad",
            "--cron",
            "* * * * *",
            "--call",
            ADD_ITEM,
            "--body",
            r#"{"quantity": "lots"}"#,
        ],
        "the body is not a com.example.shoppingcart.AddLineItem",
    );
    let (ok, printed) = schedule_cli(&dev, &["list"]);
    assert!(ok, "{printed}");
    assert!(!printed.contains("bad"), "a refused schedule was kept: {printed}");

    // --- every second, one item added per run
    let (ok, printed) = schedule_cli(
        &dev,
        &[
            "create",
            "ticker",
            "--cron",
            "* * * * * *",
            "--catch-up",
            "skip",
            "--call",
            ADD_ITEM,
            "--body",
            &body,
        ],
    );
    assert!(ok && printed.contains("schedule ticker created; next run"), "{printed}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let ran = loop {
        let schedule = dev.api("/schedules/ticker").await;
        let ok_runs = runs_of(&schedule)
            .iter()
            .filter(|(_, outcome, _)| outcome == "ok")
            .count();
        if ok_runs >= 3 {
            break ok_runs;
        }
        assert!(
            Instant::now() < deadline,
            "the schedule did not run three times: {schedule}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (ok, printed) = schedule_cli(&dev, &["list"]);
    assert!(ok, "{printed}");
    let row = printed.lines().find(|line| line.starts_with("ticker")).expect(&printed);
    assert!(row.contains(" ok") && row.contains(ADD_ITEM), "{row}");

    // --- deleted: no more runs, and the cart holds one item per run
    let (ok, printed) = schedule_cli(&dev, &["delete", "ticker"]);
    assert!(ok && printed.contains("schedule ticker deleted"), "{printed}");
    let (ok, printed) = schedule_cli(&dev, &["delete", "ticker"]);
    assert!(!ok && printed.contains("schedule \"ticker\" not found"), "{printed}");
    let http = reqwest::Client::new();
    assert!(total(&http, &dev, "ticker").await >= i64::try_from(ran).unwrap());
    let missing = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/api/v1/schedules/ticker", dev.api))
        .bearer_auth(DEV_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// `strata dev` serving its gateway over TLS with a self-signed certificate
/// makes a schedule's calls through that gateway: they trust its own
/// certificate, which no system root vouches for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_calls_through_a_gateway_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.path().join("gateway.pem"), dir.path().join("gateway.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let dev = start_dev(
        dir,
        &[
            "--tls-cert",
            &cert_path.display().to_string(),
            "--tls-key",
            &key_path.display().to_string(),
        ],
    );
    dev.deploy(&["--min-scale", "1"]);
    dev.until("the cart is ready", Duration::from_secs(60), |s| {
        s["ready_replicas"] == 1
    })
    .await;

    // --- every second through the TLS gateway; the runs succeed
    let body = add_body("secure");
    let (ok, printed) = schedule_cli(
        &dev,
        &[
            "create",
            "secure",
            "--cron",
            "* * * * * *",
            "--call",
            ADD_ITEM,
            "--body",
            &body,
        ],
    );
    assert!(ok, "{printed}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let schedule = dev.api("/schedules/secure").await;
        let runs = runs_of(&schedule);
        if runs.iter().filter(|(_, outcome, _)| outcome == "ok").count() >= 2 {
            break;
        }
        let failed: Vec<_> = runs.iter().filter(|(_, outcome, _)| outcome == "failed").collect();
        assert!(failed.is_empty(), "a run through the TLS gateway failed: {failed:?}");
        assert!(Instant::now() < deadline, "the schedule did not run twice: {schedule}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The leader's node id, asked of every node.
async fn leader(http: &reqwest::Client, apis: &[String]) -> Option<u64> {
    for api in apis {
        let Ok(reply) = http
            .get(format!("http://{api}/api/v1/cluster"))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        else {
            continue;
        };
        let Ok(cluster) = reply.json::<Value>().await else {
            continue;
        };
        if cluster["state"] == "leader" {
            return cluster["node_id"].as_u64();
        }
    }
    None
}

/// `request` sent to each node until one answers with `expected`; its body.
async fn through_any(apis: &[String], expected: u16, request: impl Fn(&str) -> reqwest::RequestBuilder) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        for api in apis {
            let Ok(reply) = request(api)
                .bearer_auth(TOKEN)
                .timeout(Duration::from_secs(5))
                .send()
                .await
            else {
                continue;
            };
            if reply.status().as_u16() == expected {
                return reply.json().await.unwrap_or(Value::Null);
            }
        }
        assert!(Instant::now() < deadline, "no node answered {expected}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn cart_total(http: &reqwest::Client, cluster: &Cluster, user: &str) -> Option<i64> {
    let reply = http
        .get(format!("{}/carts/{user}", cluster.gateway_url()))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    if !reply.status().is_success() {
        return None;
    }
    let cart: Value = reply.json().await.ok()?;
    Some(
        cart["items"]
            .as_array()?
            .iter()
            .map(|item| item["quantity"].as_i64().unwrap_or(0))
            .sum(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cron_schedule_runs_each_time_once_across_a_leader_kill() {
    if std::env::var_os("STRATA_TEST_POSTGRES_URL").is_none() && std::env::var_os("STRATA_REQUIRE_POSTGRES").is_none() {
        // The same switch as the other PostgreSQL tests: the gate sets it.
        eprintln!("skipping: the cluster runs with PostgreSQL (STRATA_TEST_POSTGRES_URL or STRATA_REQUIRE_POSTGRES)");
        return;
    }
    let http = reqwest::Client::new();
    println!("--- PostgreSQL, three control-plane nodes, a gateway and one instance of the cart");
    let mut cluster = Cluster::start_control_plane();
    println!("logs and data in {}", cluster.dir.path().display());
    cluster.create_database().await;
    let apis = cluster.apis();
    let service = json!({"name": SERVICE, "command": "./run", "min_scale": 0});
    through_any(&apis, 201, |api| {
        http.post(format!("http://{api}/api/v1/services")).json(&service)
    })
    .await;
    cluster.start_data_plane(1);
    let deadline = Instant::now() + Duration::from_secs(90);
    while cart_total(&http, &cluster, "warmup").await.is_none() {
        assert!(Instant::now() < deadline, "the gateway never served the cart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    println!("--- a schedule every two seconds, adding one item to cart 'cron'");
    let schedule = json!({
        "name": "every-two",
        "cron": "*/2 * * * * *",
        "service": SERVICE,
        "method": "com.example.shoppingcart.ShoppingCart/AddItem",
        "body": {"userId": "cron", "productId": "tick", "name": "Tick", "quantity": 1},
    });
    through_any(&apis, 201, |api| {
        http.post(format!("http://{api}/api/v1/schedules")).json(&schedule)
    })
    .await;
    let get_schedule = |api: &str| http.get(format!("http://{api}/api/v1/schedules/every-two"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = runs_of(&through_any(&apis, 200, get_schedule).await);
        // Killed just after a run finished: the kill lands before the next
        // time's record or between its record and its call, never in the
        // moment between a call and its record (the one duplicate the design allows).
        if runs.iter().filter(|(_, outcome, _)| outcome == "ok").count() >= 2
            && runs.last().is_some_and(|(_, o, _)| o == "ok")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no runs before the kill: {runs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let killed = leader(&http, &apis).await.expect("a leader");
    println!("--- kill -9 the leader, node {killed}");
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    cluster.nodes.iter_mut().find(|node| node.id == killed).unwrap().kill9();
    let survivors: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|node| node.id != killed)
        .map(|node| node.api.clone())
        .collect();

    println!("--- the new leader runs the times that follow, the ones due during the election too");
    let deadline = Instant::now() + Duration::from_secs(90);
    let (runs, cart) = loop {
        let before = runs_of(&through_any(&survivors, 200, get_schedule).await);
        let total = cart_total(&http, &cluster, "cron").await;
        let after = runs_of(&through_any(&survivors, 200, get_schedule).await);
        let settled = before == after && before.iter().all(|(_, outcome, _)| outcome != "running");
        let after_kill = before
            .iter()
            .filter(|(time, outcome, _)| *time > killed_at && outcome == "ok")
            .count();
        if let (true, true, Some(total)) = (settled, after_kill >= 3, total) {
            break (before, total);
        }
        assert!(
            Instant::now() < deadline,
            "the schedule did not go on after the kill: {after:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("runs: {runs:?}");
    assert!(runs.len() < 20, "the run history (20) no longer holds the first run");

    println!("--- every time from the first to the last ran, once, and added one item");
    let times: Vec<u64> = runs.iter().map(|(time, _, _)| *time).collect();
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], 2_000, "a time was left out or run twice: {runs:?}");
    }
    for (time, outcome, missed) in &runs {
        assert_eq!((outcome.as_str(), *missed), ("ok", 0), "the run of {time}: {runs:?}");
    }
    assert_eq!(
        cart,
        i64::try_from(runs.len()).unwrap(),
        "the cart counts one item per run: {runs:?}"
    );
}
