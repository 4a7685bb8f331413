//! The pod the operator renders for `deploy/examples/shopping-cart.yaml`, run
//! by the test kubelet (`strata_e2e::kubelet`) as a cluster would run it: each
//! pod in a network namespace of its own, the sidecar as `strata` and the
//! function as the `shopping-cart` binary (the images' entrypoints and users,
//! read from `deploy/Dockerfile*`), their environment from the rendered
//! Secrets, the rendered probes with their periods and thresholds. Beside the
//! pods, on the node: a real `strata control-plane`, a `strata gateway`, and
//! the test PostgreSQL server (over TLS, `sslmode=require`), reached from the
//! pods under their cluster DNS names. The one setting shortened is the one a
//! user sets, `--ready-timeout` (20 s: a startup budget of 40 s).
//!
//! Needs root and `ip netns` (skipped without, failed with
//! `STRATA_REQUIRE_NETNS=1`), PostgreSQL (`STRATA_TEST_POSTGRES_URL`), and the
//! workspace's binaries (`cargo build --workspace --bins`).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use k8s_openapi::api::core::v1::{PodTemplateSpec, Secret};
use serde_json::{json, Value};
use strata_control_plane::auth::ClusterSecret;
use strata_e2e::{
    binary, free_port, fresh_postgres_database,
    kubelet::{
        node::{skip_without_namespaces, Node},
        probe::Schedule,
        Image, Kubelet,
    },
    relay::Relay,
    Process,
};
use strata_runtime::kubernetes::{
    crd::StatefulService,
    objects::{self, OperatorSettings, SIDECAR_CONTAINER},
};

const NAMESPACE: &str = "strata";
const SECRET: &str = "kubelet-test-cluster-secret";
const ADMIN_TOKEN: &str = "kubelet-test-admin";
const GATEWAY_TOKEN: &str = "kubelet-test-gateway";
const CONTROL_PLANE_NAME: &str = "strata-control-plane.strata.svc";
const POSTGRES_NAME: &str = "postgres.strata.svc";

fn repository() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// An image as its Dockerfile builds it: the binary its `ENTRYPOINT` names,
/// run as its `USER`.
fn image_of(dockerfile: &str) -> Image {
    let text = std::fs::read_to_string(repository().join(dockerfile)).unwrap();
    let last = |instruction: &str| {
        text.lines()
            .rev()
            .find_map(|line| line.trim().strip_prefix(instruction))
            .unwrap_or_else(|| panic!("{dockerfile} has no {instruction}"))
            .trim()
            .to_owned()
    };
    let entrypoint: Vec<String> = serde_json::from_str(&last("ENTRYPOINT")).unwrap();
    let user = last("USER");
    let uid = user.split(':').next().unwrap().parse().unwrap();
    Image {
        binary: binary(&entrypoint[0]),
        user: Some(uid),
    }
}

/// The example's `StatefulService` and its store Secret, with the Secret's URL
/// pointed at the test's database.
fn example(store_url: &str) -> (StatefulService, Secret) {
    let text = std::fs::read_to_string(repository().join("deploy/examples/shopping-cart.yaml")).unwrap();
    let mut service = None;
    let mut store = None;
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(document).unwrap();
        match value["kind"].as_str() {
            Some("StatefulService") => service = Some(serde_json::from_value(value).unwrap()),
            Some("Secret") => {
                let mut secret: Secret = serde_json::from_value(value).unwrap();
                secret.string_data = Some(BTreeMap::from([("url".to_owned(), store_url.to_owned())]));
                store = Some(secret);
            }
            other => panic!("unexpected {other:?} in the example"),
        }
    }
    (service.unwrap(), store.unwrap())
}

/// The test's side of the cluster: the control plane, the gateway, and the
/// relay that stands for PostgreSQL's Service.
struct Cluster {
    api: String,
    gateway: String,
    control_plane: Process,
    gateway_process: Process,
    _relay: Relay,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(node: &Node, postgres: &str) -> (Cluster, u16, String) {
        let dir = tempfile::tempdir().unwrap();
        // PostgreSQL listens on the host's loopback; pods reach it at the node's address.
        let server: SocketAddr = postgres
            .split_once('@')
            .and_then(|(_, rest)| rest.split_once('/'))
            .map(|(address, _)| address.parse().unwrap())
            .unwrap();
        let relay = Relay::start(&node.host_ip(), server, 1).await;
        let database = postgres.rsplit_once('/').unwrap().1;
        let store_url = format!(
            "postgres://postgres@{POSTGRES_NAME}:{}/{database}?sslmode=require",
            relay.address.port()
        );
        let (raft, api, gateway) = (free_port(), free_port(), free_port());
        let mut control_plane = Command::new(binary("strata"));
        control_plane
            .args(["control-plane", "--node-id", "1", "--bootstrap"])
            .arg("--data-dir")
            .arg(dir.path().join("control-plane"))
            .args(["--listen", &format!("0.0.0.0:{raft}")])
            .args(["--api-listen", &format!("127.0.0.1:{api}")])
            .args(["--advertise", &format!("{}:{raft}", node.host_ip())])
            .env("STRATA_CLUSTER_SECRET", SECRET)
            .env("STRATA_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("STRATA_GATEWAY_TOKEN", GATEWAY_TOKEN);
        let mut control_plane = Process::spawn("strata control-plane", control_plane);
        control_plane.wait_serving(api, Duration::from_secs(60));
        let mut gateway_command = Command::new(binary("strata"));
        gateway_command
            .args(["gateway", "--listen", &format!("127.0.0.1:{gateway}")])
            .args(["--control-plane", &format!("http://127.0.0.1:{raft}")])
            .env("STRATA_TOKEN", GATEWAY_TOKEN);
        let mut gateway_process = Process::spawn("strata gateway", gateway_command);
        gateway_process.wait_serving(gateway, Duration::from_secs(60));
        let cluster = Cluster {
            api: format!("http://127.0.0.1:{api}"),
            gateway: format!("http://127.0.0.1:{gateway}"),
            control_plane,
            gateway_process,
            _relay: relay,
            _dir: dir,
        };
        (cluster, raft, store_url)
    }

    fn logs(&self) -> String {
        format!(
            "--- control plane:\n{}\n--- gateway:\n{}",
            self.control_plane.log_tail(),
            self.gateway_process.log_tail()
        )
    }
}

async fn add_item(http: &reqwest::Client, base: &str, cart: &str) -> Result<(), String> {
    let response = http
        .post(format!("{base}/cart/{cart}/items/add"))
        .json(&json!({"productId": "apple", "name": "Apple", "quantity": 1}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|error| format!("{cart}: {error}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    Err(format!(
        "{cart}: HTTP {status}: {}",
        response.text().await.unwrap_or_default()
    ))
}

async fn apples(http: &reqwest::Client, base: &str, cart: &str) -> i64 {
    let cart: Value = http
        .get(format!("{base}/carts/{cart}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    cart["items"]
        .as_array()
        .and_then(|items| items.iter().find(|item| item["productId"] == "apple"))
        .map_or(0, |item| item["quantity"].as_i64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_cart_pod_passes_its_probes_serves_and_drains_on_deletion() {
    let node = match Node::create(&[CONTROL_PLANE_NAME, POSTGRES_NAME]) {
        Ok(node) => node,
        Err(reason) if skip_without_namespaces(&reason) => return,
        Err(_) => unreachable!(),
    };
    let Some(postgres) = fresh_postgres_database("kubelet").await else {
        return;
    };
    let http = reqwest::Client::new();

    println!("--- the node: the control plane, the gateway, PostgreSQL under its cluster name");
    let (cluster, raft_port, store_url) = Cluster::start(&node, &postgres).await;
    let (service, store_secret) = example(&store_url);
    let settings = OperatorSettings {
        namespace: NAMESPACE.into(),
        sidecar_image: "strata:test".into(),
        control_plane_url: format!("http://{CONTROL_PLANE_NAME}:{raft_port}"),
        cluster_secret: ClusterSecret::new(SECRET),
        ready_timeout: Duration::from_secs(20),
    };
    // What the operator registers and applies for the resource.
    let name = service.metadata.name.clone().unwrap();
    let spec = objects::registry_spec(&service).expect("the example is a valid StatefulService");
    let created = http
        .post(format!("{}/api/v1/services", cluster.api))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": spec.name, "image": spec.runs.image}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let secrets = vec![store_secret, objects::credential_secret(&service, &settings)];
    let deployment = objects::deployment(&service, &settings, 1);
    let template: PodTemplateSpec = deployment.spec.unwrap().template;
    let sidecar = template
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .find(|container| container.name == SIDECAR_CONTAINER)
        .unwrap()
        .clone();
    let startup_budget = Schedule::of(sidecar.startup_probe.as_ref().expect("a startup probe")).budget();
    let liveness_period = Schedule::of(sidecar.liveness_probe.as_ref().expect("a liveness probe")).period;

    let logs = tempfile::tempdir().unwrap();
    println!("pods' logs in {}", logs.path().display());
    let kubelet = Kubelet::new(
        node,
        BTreeMap::from([
            ("strata".to_owned(), image_of("deploy/Dockerfile")),
            (
                "strata-shopping-cart".to_owned(),
                image_of("deploy/Dockerfile.shopping-cart"),
            ),
        ]),
        logs.path(),
    );

    println!("--- the first pod becomes Ready through its own probes, within its startup budget ({startup_budget:?})");
    let mut first = kubelet
        .run(&format!("{name}-7c9d-a"), NAMESPACE, &template, &secrets)
        .unwrap();
    let took = first
        .wait_ready(startup_budget)
        .await
        .unwrap_or_else(|failure| panic!("{failure}\n{}", cluster.logs()));
    println!("Ready after {took:?}");

    println!("--- it serves the cart on its port");
    let pod_port = format!("http://{}:{}", first.ip, objects::SIDECAR_PORT);
    add_item(&http, &pod_port, "alice").await.unwrap();
    assert_eq!(apples(&http, &pod_port, "alice").await, 1);

    println!("--- it registered its named admin port, where the autoscaler scrapes it");
    let instances: Value = http
        .get(format!("{}/api/v1/services/{name}/instances", cluster.api))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let instance = instances["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|instance| instance["id"] == first.name.as_str())
        .unwrap_or_else(|| panic!("{} is not registered: {instances}", first.name))
        .clone();
    assert_eq!(instance["state"], "ready");
    assert_eq!(
        instance["admin_address"],
        format!("{}:{}", first.ip, objects::ADMIN_PORT)
    );
    let metrics = http
        .get(format!(
            "http://{}/metrics",
            instance["admin_address"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("strata_proxy_requests_total"), "{metrics}");

    println!("--- a second pod of the same template");
    let mut second = kubelet
        .run(&format!("{name}-7c9d-b"), NAMESPACE, &template, &secrets)
        .unwrap();
    second
        .wait_ready(startup_budget)
        .await
        .unwrap_or_else(|failure| panic!("{failure}\n{}", cluster.logs()));

    println!(
        "--- both stay Ready for three liveness periods ({:?})",
        liveness_period * 3
    );
    let (changed_first, changed_second) = tokio::join!(
        first.changes_within(liveness_period * 3),
        second.changes_within(liveness_period * 3)
    );
    for (pod, changed) in [(&first, changed_first), (&second, changed_second)] {
        if let Some(status) = changed {
            panic!(
                "pod {} did not stay Ready: {:?}\n  {}\n{}",
                pod.name,
                status.containers,
                status.events.join("\n  "),
                pod.log_tails()
            );
        }
        assert!(
            pod.status().containers.values().all(|c| c.ready && c.restarts == 0),
            "{:?}",
            pod.status()
        );
    }

    println!("--- requests through the gateway while the first pod is deleted");
    let stop = Arc::new(AtomicBool::new(false));
    let carts: Vec<String> = (0..6).map(|i| format!("drain-{i}")).collect();
    for cart in &carts {
        // Each cart answers through the gateway (which holds a request while its
        // routes catch up) before the load starts.
        add_item(&http, &cluster.gateway, cart)
            .await
            .unwrap_or_else(|failure| panic!("{failure}\n{}", cluster.logs()));
    }
    let load: Vec<_> = carts
        .iter()
        .map(|cart| {
            let (http, gateway, cart, stop) = (http.clone(), cluster.gateway.clone(), cart.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut acknowledged, mut failures) = (1i64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match add_item(&http, &gateway, &cart).await {
                        Ok(()) => acknowledged += 1,
                        Err(failure) => failures.push(failure),
                    }
                }
                (cart, acknowledged, failures)
            })
        })
        .collect();
    let deleted = first.delete().await;
    // Once the pod is gone, the survivor serves every cart.
    for cart in &carts {
        add_item(&http, &cluster.gateway, cart).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let mut served = 0;
    for task in load {
        let (cart, mut acknowledged, failures) = task.await.unwrap();
        assert!(
            failures.is_empty(),
            "requests failed during the drain: {failures:?}\n{}",
            cluster.logs()
        );
        acknowledged += 1; // the one after the deletion
        assert_eq!(
            apples(&http, &cluster.gateway, &cart).await,
            acknowledged,
            "{cart}: every acknowledged add is kept"
        );
        served += acknowledged;
    }
    println!("{served} adds acknowledged, none failed");

    println!("--- each container of the deleted pod stopped within its grace, after its preStop hook");
    println!("{deleted:#?}");
    for termination in &deleted {
        assert!(!termination.killed, "{termination:?} needed SIGKILL");
    }
    let sidecar_end = deleted.iter().find(|t| t.container == SIDECAR_CONTAINER).unwrap();
    assert_eq!(
        sidecar_end.exit, "exit code 0",
        "the sidecar drains and exits cleanly on SIGTERM"
    );
    assert!(second.status().ready, "the other pod is still Ready");
}
