//! The install order of `deploy/README.md`, where nothing waits for anything:
//! a gateway started before its control plane is alive but not ready until it
//! has the routes; a `strata control-plane --store postgres://...` and a
//! sidecar started while their PostgreSQL is not up yet wait for it with
//! backoff instead of exiting.
//! Meanwhile the control plane serves everything that needs no store (it is
//! ready, it takes a new service) and answers entity reads 503; the sidecar is
//! alive but not ready, saying it waits for the store, and heartbeating so the
//! control plane keeps its registration. Once a real PostgreSQL
//! server comes up on that address, the sidecar serves the cart and the control
//! plane's entity inspector reads what it wrote.

use std::{process::Command, time::Duration};

use serde_json::{json, Value};
use strata_e2e::{binary, cluster::Postgres, free_port, start_shopping_cart, Process};

const SECRET: &str = "store-later-secret";
const TOKEN: &str = "store-later-admin";

/// GETs `url` until `done` holds for its (status, body), checking every 50 ms
/// for up to a minute (PostgreSQL's first start, initdb included, takes
/// seconds); a failure shows `logs()`.
async fn until(
    http: &reqwest::Client,
    url: &str,
    done: impl Fn(u16, &str) -> bool,
    logs: &dyn Fn() -> String,
) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answer = match http.get(url).bearer_auth(TOKEN).send().await {
            Ok(response) => (response.status().as_u16(), response.text().await.unwrap_or_default()),
            Err(error) => (0, error.to_string()),
        };
        if done(answer.0, &answer.1) {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GET {url}: still {answer:?}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_control_plane_and_sidecar_started_before_what_they_need_wait_for_it() {
    if std::env::var_os("STRATA_TEST_POSTGRES_URL").is_none() && std::env::var_os("STRATA_REQUIRE_POSTGRES").is_none() {
        eprintln!(
            "skipping: runs a PostgreSQL server of its own (STRATA_TEST_POSTGRES_URL or STRATA_REQUIRE_POSTGRES)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();

    println!("--- a PostgreSQL server whose address is known but which is not up");
    let mut postgres = Postgres::later_in(dir.path());
    let store = postgres.url("postgres");

    println!("--- a gateway starts first: alive, not ready until it has the control plane's routes");
    let (raft, api) = (free_port(), free_port());
    let (gateway_port, gateway_admin) = (free_port(), free_port());
    let mut command = Command::new(binary("strata"));
    command
        .args(["gateway", "--listen", &format!("127.0.0.1:{gateway_port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{gateway_admin}")])
        .args(["--control-plane", &format!("http://127.0.0.1:{raft}")])
        .env("STRATA_TOKEN", TOKEN);
    let mut gateway = Process::spawn("strata gateway", command);
    gateway.wait_serving(gateway_admin, Duration::from_secs(30));
    let gateway = gateway;
    let gateway_logs = || format!("--- gateway:\n{}", gateway.log_tail());
    let gateway_ready = format!("http://127.0.0.1:{gateway_admin}/readyz");
    let (status, body) = until(&http, &gateway_ready, |_, _| true, &gateway_logs).await;
    assert_eq!(
        (status, body.as_str()),
        (503, "starting: waiting for the first routes from the control plane")
    );
    let (status, _) = until(
        &http,
        &format!("http://127.0.0.1:{gateway_admin}/healthz"),
        |_, _| true,
        &gateway_logs,
    )
    .await;
    assert_eq!(status, 200);

    println!("--- the control plane starts anyway, ready, serving all but entities");
    let mut command = Command::new(binary("strata"));
    command
        .args(["control-plane", "--node-id", "1", "--bootstrap"])
        .arg("--data-dir")
        .arg(dir.path().join("control-plane"))
        .args(["--listen", &format!("127.0.0.1:{raft}")])
        .args(["--api-listen", &format!("127.0.0.1:{api}")])
        .args(["--store", &store])
        // An instance silent for a second is removed: a sidecar that waits for
        // its store longer than that must heartbeat while it waits.
        .args(["--heartbeat-interval", "200ms", "--heartbeat-timeout", "1s"])
        .env("STRATA_CLUSTER_SECRET", SECRET)
        .env("STRATA_ADMIN_TOKEN", TOKEN);
    let mut control_plane = Process::spawn("strata control-plane", command);
    control_plane.wait_serving(api, Duration::from_secs(60));
    let control_plane = control_plane;
    let logs = || format!("{}\n--- control plane:\n{}", gateway_logs(), control_plane.log_tail());
    let api = format!("http://127.0.0.1:{api}");
    until(&http, &format!("{api}/readyz"), |status, _| status == 200, &logs).await;
    until(&http, &gateway_ready, |status, _| status == 200, &logs).await;
    let created = http
        .post(format!("{api}/api/v1/services"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "cart", "command": "./shopping-cart"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let entity = format!("{api}/api/v1/services/cart/entities/alice");
    let (status, body) = until(&http, &entity, |_, _| true, &logs).await;
    assert_eq!(status, 503, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        error["error"]["message"],
        "the entity store is not up yet; the control plane keeps trying to open it"
    );

    println!("--- a sidecar starts too: alive, not ready, waiting for the store");
    let (function_port, http_port, admin_port) = (free_port(), free_port(), free_port());
    let _function = start_shopping_cart(function_port);
    let mut command = Command::new(binary("strata"));
    command
        .arg("proxy")
        .args(["--admin-port", &admin_port.to_string()])
        .args(["--control-plane", &format!("http://127.0.0.1:{raft}")])
        .args(["--instance-id", "cart-1", "--service", "cart"])
        .env("USER_FUNCTION_PORT", function_port.to_string())
        .env("HTTP_PORT", http_port.to_string())
        .env("STRATA_STORE", &store)
        .env("STRATA_TOKEN", TOKEN);
    let mut sidecar = Process::spawn("strata proxy", command);
    sidecar.wait_serving(admin_port, Duration::from_secs(30));
    let sidecar = sidecar;
    let logs = || format!("{}\n--- sidecar:\n{}", logs(), sidecar.log_tail());
    let admin = format!("http://127.0.0.1:{admin_port}");
    until(
        &http,
        &format!("{admin}/readyz"),
        |status, body| status == 503 && body == "starting: waiting for the store",
        &logs,
    )
    .await;
    let (status, _) = until(&http, &format!("{admin}/healthz"), |_, _| true, &logs).await;
    assert_eq!(status, 200, "alive while it waits");

    println!("--- PostgreSQL comes up");
    postgres.start();

    println!("--- the sidecar becomes ready and serves the cart");
    until(&http, &format!("{admin}/readyz"), |status, _| status == 200, &logs).await;
    let cart = format!("http://127.0.0.1:{http_port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // Its shards arrive with the routes just after it is ready.
        let added = http
            .post(format!("{cart}/cart/alice/items/add"))
            .json(&json!({"productId": "fig", "name": "Fig", "quantity": 4}))
            .send()
            .await
            .unwrap();
        if added.status() == 200 {
            break;
        }
        let refused = added.text().await.unwrap();
        assert!(tokio::time::Instant::now() < deadline, "{refused}\n{}", logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    println!("--- the control plane's entity inspector reads it from the store");
    let (_, body) = until(&http, &entity, |status, _| status == 200, &logs).await;
    let state: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["last_seq_nr"], 1, "{state}");
    let (status, events) = until(&http, &format!("{entity}/events"), |_, _| true, &logs).await;
    assert_eq!(status, 200, "{events}");
    assert!(events.contains("\"fig\""), "{events}");
}
