//! The Kubernetes operator's whole lifecycle against the stateful fake API server
//! (`strata_e2e::kube_api`), the operator running unmodified (`kubernetes::run`, as
//! `strata control-plane --runtime kubernetes` runs it) over HTTP on loopback, with
//! a real one-node control plane (Raft log on disk) as its registry. The test plays
//! the kubelet and the sidecars: it marks the pods the fake's Deployments make as
//! running and registers them, as a sidecar that finished discovery would.

use std::{sync::Arc, time::Duration};

use serde_json::{json, Value};
use strata_control_plane::{
    api::Tokens,
    auth::ClusterSecret,
    node::ControlPlane,
    registry::{Command, Registry},
    server::{self, RunningServer, ServerConfig},
};
use strata_e2e::kube_api::{
    FakeApi, Key, Refusal, Seen, State, CRDS, DEPLOYMENTS, EVENTS, NAMESPACE, NAMESPACES, NETWORK_POLICIES, PODS,
    SECRETS, SERVICES, STATEFUL_SERVICES, STATEFUL_SERVICE_CRD,
};
use strata_e2e::{binary, free_port, Http, Process};
use strata_runtime::kubernetes::{self, objects::OperatorSettings, reconcile::LEGACY_FINALIZER};

// --- the harness

/// What the test's gateway and sidecars present to the control plane.
const ADMIN_TOKEN: &str = "operator-test-admin";

/// The fake API server, a control-plane node and the operator it runs.
struct Cluster {
    fake: FakeApi,
    dir: tempfile::TempDir,
    running: Option<(
        RunningServer,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

fn settings() -> OperatorSettings {
    OperatorSettings {
        namespace: NAMESPACE.into(),
        sidecar_image: "strata:test".into(),
        control_plane_url: "http://strata-control-plane.strata.svc:9200".into(),
        cluster_secret: ClusterSecret::new("operator-test"),
        ready_timeout: Duration::from_secs(120),
    }
}

impl Cluster {
    async fn start() -> Cluster {
        let mut cluster = Cluster {
            fake: FakeApi::start().await,
            dir: tempfile::tempdir().unwrap(),
            running: None,
        };
        cluster.start_control_plane().await;
        cluster
    }

    /// Starts the control plane (from its data directory, if it ran before) and the operator.
    async fn start_control_plane(&mut self) {
        let first = !self.dir.path().join("node").exists();
        let server = server::start(ServerConfig {
            node_id: first.then_some(1),
            data_dir: self.dir.path().join("node"),
            listen: Some("127.0.0.1:0".into()),
            api_listen: Some("127.0.0.1:0".into()),
            bootstrap: first,
            cluster_secret: "operator-test".into(),
            tokens: Tokens {
                admin: Some(ADMIN_TOKEN.into()),
                read_only: None,
            },
            ..ServerConfig::default()
        })
        .await
        .unwrap();
        let node = server.node();
        let mut leadership = node.leadership();
        tokio::time::timeout(Duration::from_secs(30), async {
            while !node.is_leader() {
                leadership.changed().await.unwrap();
            }
        })
        .await
        .expect("the one-node control plane elects itself");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let operator = tokio::spawn(kubernetes::run(node, self.fake.client(), settings(), async move {
            let _ = stopped.await;
        }));
        self.running = Some((server, stop, operator));
    }

    /// The control plane goes away (no leader anywhere), as in an uninstall or an outage.
    async fn stop_control_plane(&mut self) {
        let (server, stop, operator) = self.running.take().expect("running");
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), operator)
            .await
            .expect("the operator stops when told to")
            .unwrap();
        server.shutdown().await;
    }

    fn node(&self) -> Arc<ControlPlane> {
        self.running.as_ref().expect("running").0.node()
    }

    /// The control plane's Raft and data-plane address, as sidecars and gateways dial it.
    fn data_plane(&self) -> String {
        format!("http://{}", self.running.as_ref().expect("running").0.raft_address())
    }

    async fn write(&self, command: Command) {
        self.node().write(command).await.unwrap();
    }

    /// The autoscaler's decision, as it writes it.
    async fn scale(&self, service: &str, replicas: u32, reason: &str) {
        self.write(Command::SetDesiredReplicas {
            service: service.into(),
            replicas,
            reason: reason.into(),
        })
        .await;
    }

    /// Waits until the registry satisfies `check`.
    async fn registry_until(&self, what: &str, check: impl Fn(&Registry) -> bool) {
        let node = self.node();
        let mut changes = node.subscribe();
        tokio::time::timeout(Duration::from_secs(60), async {
            while !node.read(&check) {
                let _ = changes.recv().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for the registry: {what}"));
    }

    fn get(&self, kind: &strata_e2e::kube_api::Kind, name: &str) -> Option<Value> {
        self.fake.get(kind, NAMESPACE, name)
    }

    /// Creates a store Secret and a `StatefulService`.
    fn deploy(&self, name: &str, spec: Value) {
        let store = format!("{name}-store");
        self.fake
            .create(
                &SECRETS,
                NAMESPACE,
                json!({"metadata": {"name": store}, "stringData": {"url": "postgres://cart@db/cart"}}),
            )
            .unwrap();
        let mut spec = spec;
        spec["storeSecret"] = json!({"name": store});
        self.fake
            .create(
                &STATEFUL_SERVICES,
                NAMESPACE,
                json!({"apiVersion": "strata.dev/v1alpha1", "kind": "StatefulService",
                       "metadata": {"name": name}, "spec": spec}),
            )
            .unwrap();
    }

    /// Changes the resource as `kubectl` would (a merge patch).
    fn edit(&self, name: &str, patch: Value) {
        self.fake
            .merge(&STATEFUL_SERVICES, NAMESPACE, name, "", "kubectl", patch)
            .unwrap();
    }

    /// The status once `check` holds for it.
    async fn status_until(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let key = key(&STATEFUL_SERVICES, name);
        self.fake
            .wait_for(what, |state| {
                let status = state.get(&key)?["status"].clone();
                check(&status).then_some(status)
            })
            .await
    }

    /// Plays the kubelet and the sidecars: every pod of `service` runs, is ready and
    /// registered with the control plane.
    async fn pods_run(&self, service: &str) -> Vec<String> {
        let pods = self.pods(service);
        for pod in &pods {
            let now = k8s_openapi::chrono::Utc::now().to_rfc3339();
            self.fake
                .merge(
                    &PODS,
                    NAMESPACE,
                    pod,
                    "status",
                    "kubelet",
                    json!({"status": {
                        "phase": "Running", "startTime": now,
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "containerStatuses": [{"name": "strata-sidecar", "image": "strata:test", "imageID": "",
                            "ready": true, "restartCount": 0, "state": {"running": {"startedAt": now}}}],
                    }}),
                )
                .unwrap();
            if self.node().read(|r| r.instances.contains_key(pod)) {
                continue;
            }
            // The sidecar says the revision its Deployment gave it (STRATA_REVISION).
            let revision = self.get(&PODS, pod).unwrap()["metadata"]["labels"]["strata.dev/revision"]
                .as_str()
                .and_then(|revision| revision.parse().ok())
                .unwrap_or_default();
            self.write(Command::RegisterInstance {
                id: pod.clone(),
                service: service.into(),
                address: "127.0.0.1:9".into(),
                admin_address: "127.0.0.1:9".into(),
                revision,
            })
            .await;
            self.write(Command::InstanceReady {
                id: pod.clone(),
                descriptor_set: None,
                entities: vec![],
                subscriptions: vec![],
            })
            .await;
        }
        pods
    }

    fn pods(&self, service: &str) -> Vec<String> {
        self.fake
            .list(&PODS, NAMESPACE)
            .into_iter()
            .filter(|pod| pod["metadata"]["labels"]["strata.dev/service"] == service)
            .map(|pod| pod["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Waits until the Deployment (of one revision, e.g. `cart-r1`) should have `replicas` pods.
    async fn replicas_become(&self, deployment: &str, replicas: i64) {
        let key = key(&DEPLOYMENTS, deployment);
        self.fake
            .wait_for(&format!("{deployment} at {replicas} replicas"), |state| {
                (state.get(&key)?["spec"]["replicas"] == replicas).then_some(())
            })
            .await;
    }

    /// Plays a rollout's pods: the pods of `revision` run and register (the old
    /// ones already did), and the old pods' sidecars release every shard handed
    /// off, until the instances of `revision` own every shard and none of `old` is left.
    async fn move_to_revision(&self, service: &str, revision: u64, old: &[String]) {
        self.settle(service, &format!("the move to revision {revision}"), |r, pods| {
            owned_by(r, service, revision) == r.services[service].shards.len()
                && !old.iter().any(|pod| pods.contains(pod))
        })
        .await;
    }

    /// Plays the pods until `done` holds for the registry and the pods: every pod
    /// runs and registers, and the sidecars release every shard handed off from
    /// them, as a sidecar does once its commands for it are done.
    async fn settle(&self, service: &str, what: &str, done: impl Fn(&Registry, &[String]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            self.pods_run(service).await;
            let releases = self.node().read(|r| {
                let mut releases: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
                for (index, shard) in r.services[service].shards.iter().enumerate() {
                    if let (Some(owner), Some(_)) = (&shard.owner, &shard.handoff) {
                        releases.entry(owner.clone()).or_default().push(index as u32);
                    }
                }
                releases
            });
            for (instance, shards) in releases {
                self.write(Command::ReleaseShards { instance, shards }).await;
            }
            let pods = self.pods(service);
            if self.node().read(|r| done(r, &pods)) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service}: no {what}: pods {pods:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn event_until(&self, service: &str, reason: &str) -> String {
        let what = format!("a {reason} event");
        let found = self.fake.wait_for(&what, |state| {
            events_in(state, service)
                .into_iter()
                .find(|(r, _)| r == reason)
                .map(|(_, note)| note)
        });
        tokio::time::timeout(Duration::from_secs(50), found)
            .await
            .unwrap_or_else(|_| {
                let events = events_in(&self.fake.state(), service);
                let status = self.get(&STATEFUL_SERVICES, service).map(|s| s["status"].clone());
                panic!("no {reason} event about {service}; there are {events:#?}; its status: {status:#?}")
            })
    }
}

/// How many of `service`'s shards instances of `revision` own (none in hand-off).
fn owned_by(registry: &Registry, service: &str, revision: u64) -> usize {
    registry.services[service]
        .shards
        .iter()
        .filter(|shard| shard.handoff.is_none())
        .filter_map(|shard| registry.instances.get(shard.owner.as_ref()?))
        .filter(|instance| instance.revision == revision)
        .count()
}

fn events_in(state: &State, service: &str) -> Vec<(String, String)> {
    state
        .list(&EVENTS, Some(NAMESPACE))
        .into_iter()
        .filter(|event| event["regarding"]["name"] == service)
        .map(|event| {
            (
                event["reason"].as_str().unwrap_or_default().to_owned(),
                event["note"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn key(kind: &strata_e2e::kube_api::Kind, name: &str) -> Key {
    Key {
        plural: kind.plural,
        namespace: if kind.namespaced {
            NAMESPACE.into()
        } else {
            String::new()
        },
        name: name.into(),
    }
}

fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|conditions| conditions.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

fn failing_because(status: &Value, reason: &str) -> bool {
    let failing = condition(status, "Failing");
    failing["status"] == "True" && failing["reason"] == reason
}

fn cart_spec() -> Value {
    json!({"image": "registry.example/cart:1", "minScale": 0, "maxScale": 5, "scaleToZeroGrace": "45s"})
}

// --- the scenarios

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_scale_up_scale_to_zero_update_the_image_and_delete() {
    let cluster = Cluster::start().await;

    // --- apply
    cluster.deploy("cart", cart_spec());
    cluster.replicas_become("cart-r1", 1).await;
    let uid = cluster.get(&STATEFUL_SERVICES, "cart").unwrap()["metadata"]["uid"].clone();
    for (kind, name) in [
        (&SERVICES, "cart"),
        (&SECRETS, "cart-strata-credential"),
        (&NETWORK_POLICIES, "cart"),
        (&DEPLOYMENTS, "cart-r1"),
    ] {
        let object = cluster
            .get(kind, name)
            .unwrap_or_else(|| panic!("no {} {name}", kind.kind));
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!((&owner["uid"], &owner["controller"]), (&uid, &json!(true)), "{name}");
    }
    let service = cluster.node().read(|r| r.services["cart"].clone());
    assert_eq!(
        (
            service.runs.image.as_deref(),
            service.max_scale,
            service.scale_to_zero_grace_ms
        ),
        (Some("registry.example/cart:1"), 5, 45_000)
    );
    // The sidecars' credential is in the Secret the pods refer to, never in the Deployment.
    let credential = ClusterSecret::new("operator-test").instance_credential("cart", None);
    let secret = cluster.get(&SECRETS, "cart-strata-credential").unwrap();
    assert_eq!(secret["stringData"]["token"], credential.as_str());
    let deployment = cluster.get(&DEPLOYMENTS, "cart-r1").unwrap();
    assert!(!deployment.to_string().contains(&credential));
    let token = deployment["spec"]["template"]["spec"]["containers"][1]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|var| var["name"] == "STRATA_TOKEN")
        .unwrap()
        .clone();
    assert_eq!(
        token["valueFrom"]["secretKeyRef"],
        json!({"name": "cart-strata-credential", "key": "token"})
    );
    let registered = cluster.event_until("cart", "Registered").await;
    assert_eq!(registered, "registered with the control plane (revision 1)");

    // --- the pod starts and its sidecar registers: ready
    cluster
        .fake
        .wait_for("a pod", |state| {
            (!state.list(&PODS, Some(NAMESPACE)).is_empty()).then_some(())
        })
        .await;
    cluster.pods_run("cart").await;
    let status = cluster
        .status_until("cart", "ready", |s| condition(s, "Ready")["status"] == "True")
        .await;
    assert_eq!(
        (&status["desiredReplicas"], &status["readyReplicas"]),
        (&json!(1), &json!(1))
    );

    // --- scale up: the autoscaler wants three
    cluster
        .scale("cart", 3, "stable window: 180 in flight for a target of 70")
        .await;
    cluster.replicas_become("cart-r1", 3).await;
    let scaled = cluster.event_until("cart", "ScaledUp").await;
    assert_eq!(
        scaled,
        "scaled the Deployment cart-r1 from 1 to 3: desired replicas 1 -> 3: stable window: 180 in flight for a target of 70"
    );
    cluster
        .fake
        .wait_for("three pods", |state| {
            (state.list(&PODS, Some(NAMESPACE)).len() == 3).then_some(())
        })
        .await;
    cluster.pods_run("cart").await;
    cluster
        .status_until("cart", "three ready", |s| s["readyReplicas"] == 3)
        .await;

    // --- scale to zero
    cluster.scale("cart", 0, "no traffic for the grace").await;
    cluster.replicas_become("cart-r1", 0).await;
    assert!(cluster.pods("cart").is_empty(), "the fake's ReplicaSet removed them");
    let status = cluster
        .status_until("cart", "scaled to zero", |s| {
            condition(s, "ScaledToZero")["status"] == "True"
        })
        .await;
    assert_eq!(status["readyReplicas"], 0);
    assert!(cluster
        .event_until("cart", "ScaledDown")
        .await
        .starts_with("scaled the Deployment cart-r1 from 3 to 0"));
    cluster
        .registry_until("the stopped instances removed", |r| r.instances.is_empty())
        .await;

    // --- update the image, while one instance runs
    cluster
        .write(Command::ScaleFromZero {
            service: "cart".into(),
            reason: "a request is waiting".into(),
        })
        .await;
    cluster.replicas_become("cart-r1", 1).await;
    cluster
        .fake
        .wait_for("a pod", |state| {
            (state.list(&PODS, Some(NAMESPACE)).len() == 1).then_some(())
        })
        .await;
    let old_pod = cluster.pods_run("cart").await;
    cluster.edit("cart", json!({"spec": {"image": "registry.example/cart:2"}}));
    // A revision of its own: a second Deployment, labelled with it, whose sidecars say it.
    let r2 = key(&DEPLOYMENTS, "cart-r2");
    let deployment = cluster
        .fake
        .wait_for("revision 2's Deployment", |state| state.get(&r2).cloned())
        .await;
    let template = &deployment["spec"]["template"];
    assert_eq!(template["spec"]["containers"][0]["image"], "registry.example/cart:2");
    assert_eq!(template["metadata"]["labels"]["strata.dev/revision"], "2");
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        json!({"strata.dev/service": "cart", "strata.dev/revision": "2"})
    );
    assert!(template["spec"]["containers"][1]["env"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "STRATA_REVISION", "value": "2"})));
    let r1 = cluster.get(&DEPLOYMENTS, "cart-r1").unwrap();
    assert_eq!(
        r1["spec"]["template"]["spec"]["containers"][0]["image"], "registry.example/cart:1",
        "revision 1's Deployment is never changed"
    );
    cluster
        .registry_until("revision 2 registered and serving", |r| {
            let cart = &r.services["cart"];
            cart.runs.image.as_deref() == Some("registry.example/cart:2") && cart.serving() == 2
        })
        .await;
    cluster.event_until("cart", "Updated").await;

    // --- the rollout: revision 2's pod starts, the shards move, revision 1 is scaled away
    cluster.move_to_revision("cart", 2, &old_pod).await;
    cluster.replicas_become("cart-r1", 0).await;
    cluster.replicas_become("cart-r2", 1).await;
    let status = cluster
        .status_until("cart", "revision 2 owns every shard and revision 1 is gone", |s| {
            s["revisions"][1]["percent"] == 100
                && s["revisions"][0]["replicas"] == 0
                && s["revisions"][0]["readyReplicas"] == 0
        })
        .await;
    assert_eq!(
        (&status["servingRevision"], &status["latestRevision"]),
        (&json!(2), &json!(2))
    );
    assert_eq!(
        status["revisions"],
        json!([
            {"revision": 1, "deployment": "cart-r1", "image": "registry.example/cart:1", "replicas": 0,
             "readyReplicas": 0, "shards": 0, "percent": 0},
            {"revision": 2, "deployment": "cart-r2", "image": "registry.example/cart:2", "replicas": 1,
             "readyReplicas": 1, "shards": 64, "percent": 100},
        ])
    );
    let new_pods = cluster.pods("cart");

    // --- a rollback through the control plane: revision 1's Deployment again
    cluster
        .write(Command::Rollback {
            service: "cart".into(),
            to: None,
        })
        .await;
    cluster.replicas_become("cart-r1", 1).await;
    cluster.move_to_revision("cart", 1, &new_pods).await;
    cluster.replicas_become("cart-r2", 0).await;
    // The resource, applied again as it is, does not undo the rollback.
    touch(&cluster, "cart", "after-rollback");
    let status = cluster
        .status_until("cart", "revision 1 serves again", |s| {
            s["servingRevision"] == 1 && s["revisions"][0]["percent"] == 100
        })
        .await;
    assert_eq!(status["latestRevision"], 2);
    cluster
        .registry_until("the touch was reconciled", |r| r.services["cart"].serving() == 1)
        .await;
    assert_eq!(cluster.node().read(|r| r.services["cart"].latest_revision), 2);

    // --- delete
    cluster.fake.delete(&STATEFUL_SERVICES, NAMESPACE, "cart").unwrap();
    assert!(
        cluster.get(&STATEFUL_SERVICES, "cart").is_none(),
        "no finalizer holds it"
    );
    for (kind, name) in [
        (&SERVICES, "cart"),
        (&SECRETS, "cart-strata-credential"),
        (&NETWORK_POLICIES, "cart"),
        (&DEPLOYMENTS, "cart-r1"),
        (&DEPLOYMENTS, "cart-r2"),
    ] {
        assert!(cluster.get(kind, name).is_none(), "{} {name} was collected", kind.kind);
    }
    assert!(cluster.pods("cart").is_empty());
    cluster
        .registry_until("cart deregistered", |r| !r.services.contains_key("cart"))
        .await;
}

/// Requests the operator made after `mark`.
fn since(fake: &FakeApi, mark: usize) -> Vec<Seen> {
    fake.requests().split_off(mark)
}

/// Waits until the operator reconciled `service` once more after `mark` (it reads
/// revision 1's Deployment, then lists the pods), and returns the requests since `mark`.
async fn reconciled_after(cluster: &Cluster, service: &str, mark: usize) -> Vec<Seen> {
    let deployment = format!("/apis/apps/v1/namespaces/strata/deployments/{service}-r1");
    let selector = format!("strata.dev/service={service}");
    let fake = &cluster.fake;
    let reconciled = tokio::time::timeout(
        Duration::from_secs(50),
        fake.wait_for("a reconcile", |_| {
            let seen = since(fake, mark);
            let read = seen.iter().position(|r| r.method == "GET" && r.path == deployment)?;
            seen[read..]
                .iter()
                .any(|r| r.path.ends_with("/pods") && !r.is_watch() && r.query.get("labelSelector") == Some(&selector))
                .then_some(())
        }),
    );
    reconciled
        .await
        .unwrap_or_else(|_| panic!("no reconcile of {service}; requests since: {:#?}", since(fake, mark)));
    since(fake, mark)
}

/// Changes a label of the resource (no new generation), which makes the controller
/// reconcile it.
fn touch(cluster: &Cluster, service: &str, value: &str) {
    cluster.edit(service, json!({"metadata": {"labels": {"touched": value}}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_spec_causes_no_raft_write_no_apply_and_no_secret_read() {
    let cluster = Cluster::start().await;
    cluster.deploy("cart", cart_spec());
    cluster.deploy("orders", cart_spec());
    for service in ["cart", "orders"] {
        cluster.replicas_become(&format!("{service}-r1"), 1).await;
        cluster
            .fake
            .wait_for("pods", |state| {
                state
                    .list(&PODS, Some(NAMESPACE))
                    .iter()
                    .any(|p| p["metadata"]["labels"]["strata.dev/service"] == service)
                    .then_some(())
            })
            .await;
        cluster.pods_run(service).await;
        // Ready, and its one revision owns every shard: the status says all it will.
        cluster
            .status_until(service, "ready", |s| {
                condition(s, "Ready")["status"] == "True" && s["revisions"][0]["percent"] == 100
            })
            .await;
    }

    // --- reconciled again as it was: reads only
    let mark = cluster.fake.requests().len();
    let index = cluster.node().read_index().await.unwrap();
    touch(&cluster, "cart", "1");
    reconciled_after(&cluster, "cart", mark).await;
    let again = cluster.fake.requests().len();
    touch(&cluster, "cart", "2");
    reconciled_after(&cluster, "cart", again).await;
    let seen = since(&cluster.fake, mark);
    let writes: Vec<&Seen> = seen.iter().filter(|r| r.method != "GET").collect();
    assert!(writes.is_empty(), "no apply, no status, no scale: {writes:?}");
    assert!(
        !seen.iter().any(|r| r.path.contains("/secrets/")),
        "the store Secret is not read again: {seen:?}"
    );
    assert_eq!(cluster.node().read_index().await.unwrap(), index, "no Raft write");

    // --- a registry change of one service reconciles that service only
    let before = cluster.fake.requests().len();
    touch(&cluster, "orders", "1");
    reconciled_after(&cluster, "orders", before).await;
    let mark = cluster.fake.requests().len();
    cluster.scale("cart", 2, "load").await;
    cluster.replicas_become("cart-r1", 2).await;
    let seen = since(&cluster.fake, mark);
    assert!(
        !seen.iter().any(|r| r.path.contains("/orders") || r.query.get("labelSelector").is_some_and(|s| s.ends_with("=orders"))),
        "orders was not reconciled: {seen:?}"
    );

    // --- a new generation: the store Secret is checked again; the registry changes,
    // the objects do not (the scale bounds are not in them): no apply
    let mark = cluster.fake.requests().len();
    cluster.edit("cart", json!({"spec": {"maxScale": 7}}));
    cluster
        .registry_until("the new max scale", |r| r.services["cart"].max_scale == 7)
        .await;
    let seen = reconciled_after(&cluster, "cart", mark).await;
    assert!(seen
        .iter()
        .any(|r| r.method == "GET" && r.path.ends_with("/secrets/cart-store")));
    assert!(!seen.iter().any(Seen::is_apply), "{seen:?}");

    // --- a spec that changes the pods is a new revision, applied as a Deployment of its own
    let mark = cluster.fake.requests().len();
    let mut env = cart_spec();
    env["env"] = json!([{"name": "RUST_LOG", "value": "debug"}]);
    cluster.edit("cart", json!({"spec": {"env": env["env"]}}));
    let applied = cluster
        .fake
        .wait_for("the apply of the new spec", |_| {
            let seen = since(&cluster.fake, mark);
            (seen.iter().filter(|r| r.is_apply()).count() == 4).then_some(seen)
        })
        .await;
    let kinds: Vec<String> = applied
        .iter()
        .filter(|r| r.is_apply())
        .map(|r| r.path.rsplit('/').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        kinds,
        [
            "cart services",
            "cart-strata-credential secrets",
            "cart networkpolicies",
            "cart-r2 deployments"
        ]
    );
    assert_eq!(cluster.node().read(|r| r.services["cart"].serving()), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_collision_is_refused_with_a_condition_and_the_other_object_is_untouched() {
    let cluster = Cluster::start().await;
    // Someone else's Service named `orders`.
    let theirs = cluster
        .fake
        .apply(
            &SERVICES,
            NAMESPACE,
            "kubectl",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "orders"},
                   "spec": {"selector": {"app": "legacy-orders"}, "ports": [{"port": 80}]}}),
        )
        .unwrap();

    cluster.deploy("orders", cart_spec());
    let status = cluster
        .status_until("orders", "refused", |s| failing_because(s, "ResourceNotOwned"))
        .await;
    assert_eq!(
        condition(&status, "Failing")["message"],
        "there is already a Service \"orders\" in namespace \"strata\" that this StatefulService does not own; \
         rename the StatefulService, or delete the Service if it is left over"
    );
    cluster.event_until("orders", "ResourceNotOwned").await;
    assert_eq!(
        cluster.get(&SERVICES, "orders").unwrap(),
        theirs,
        "their Service is untouched"
    );
    assert!(cluster.get(&DEPLOYMENTS, "orders-r1").is_none(), "nothing applied");
    assert!(cluster.get(&SECRETS, "orders-strata-credential").is_none());

    // --- deleting the resource leaves their Service alone
    cluster.fake.delete(&STATEFUL_SERVICES, NAMESPACE, "orders").unwrap();
    cluster
        .registry_until("orders deregistered", |r| !r.services.contains_key("orders"))
        .await;
    assert_eq!(cluster.get(&SERVICES, "orders").unwrap(), theirs);

    // --- Strata's own names and names a Service cannot take are refused at validation
    for (name, message) in [
        (
            "postgres",
            "metadata.name \"postgres\" is the name of one of Strata's own objects",
        ),
        (
            "strata-gateway",
            "metadata.name \"strata-gateway\" is the name of one of Strata's own objects",
        ),
        ("1cart", "metadata.name \"1cart\" is not a DNS-1035 label"),
    ] {
        cluster.deploy(name, cart_spec());
        let status = cluster
            .status_until(name, "refused", |s| failing_because(s, "InvalidSpec"))
            .await;
        let said = condition(&status, "Failing")["message"].as_str().unwrap().to_owned();
        assert!(said.starts_with(message), "{said}");
        assert!(cluster.get(&DEPLOYMENTS, &format!("{name}-r1")).is_none());
        assert!(!cluster.node().read(|r| r.services.contains_key(name)));
    }
    assert!(
        cluster.get(&SERVICES, "postgres").is_none(),
        "nothing was made under Strata's names"
    );
}

/// Every object the fake holds in the namespace, by kind and name.
fn everything_in(fake: &FakeApi, namespace: &str) -> Vec<String> {
    let state = fake.state();
    [
        &PODS,
        &SECRETS,
        &SERVICES,
        &DEPLOYMENTS,
        &NETWORK_POLICIES,
        &STATEFUL_SERVICES,
    ]
    .into_iter()
    .flat_map(|kind| {
        state
            .list(kind, Some(namespace))
            .into_iter()
            .map(move |o| format!("{}/{}", kind.kind, o["metadata"]["name"].as_str().unwrap_or_default()))
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_with_the_control_plane_gone_first_leaves_nothing_stuck() {
    let mut cluster = Cluster::start().await;
    cluster.deploy("cart", cart_spec());
    cluster.replicas_become("cart-r1", 1).await;
    cluster
        .fake
        .wait_for("a pod", |state| {
            (!state.list(&PODS, Some(NAMESPACE)).is_empty()).then_some(())
        })
        .await;
    cluster.pods_run("cart").await;
    cluster
        .status_until("cart", "ready", |s| condition(s, "Ready")["status"] == "True")
        .await;

    // --- `kubectl delete -k deploy/`: the control plane goes first, then the CRD and the namespace
    cluster.stop_control_plane().await;
    cluster
        .fake
        .delete(&CRDS, "", STATEFUL_SERVICE_CRD)
        .expect("the CRD is there to delete");
    cluster.fake.delete(&NAMESPACES, "", NAMESPACE).unwrap();
    let left = everything_in(&cluster.fake, NAMESPACE);
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(
        cluster.fake.get(&CRDS, "", STATEFUL_SERVICE_CRD).is_none(),
        "the CRD is gone"
    );
    assert!(
        cluster.fake.get(&NAMESPACES, "", NAMESPACE).is_none(),
        "the namespace is gone, not Terminating"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalizer_of_an_earlier_version_is_removed_so_it_cannot_hold_an_uninstall() {
    let cluster = Cluster::start().await;
    cluster
        .fake
        .create(
            &SECRETS,
            NAMESPACE,
            json!({"metadata": {"name": "cart-store"}, "stringData": {"url": "postgres://cart@db/cart"}}),
        )
        .unwrap();
    let mut spec = cart_spec();
    spec["storeSecret"] = json!({"name": "cart-store"});
    cluster
        .fake
        .create(
            &STATEFUL_SERVICES,
            NAMESPACE,
            json!({"apiVersion": "strata.dev/v1alpha1", "kind": "StatefulService",
                   "metadata": {"name": "cart", "finalizers": [LEGACY_FINALIZER]}, "spec": spec}),
        )
        .unwrap();
    let key = key(&STATEFUL_SERVICES, "cart");
    cluster
        .fake
        .wait_for("the finalizer removed", |state| {
            let finalizers = &state.get(&key)?["metadata"]["finalizers"];
            finalizers.as_array().is_none_or(|f| f.is_empty()).then_some(())
        })
        .await;
    cluster.fake.delete(&STATEFUL_SERVICES, NAMESPACE, "cart").unwrap();
    assert!(cluster.get(&STATEFUL_SERVICES, "cart").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_while_no_raft_leader_exists_completes_and_the_next_leader_deregisters() {
    let mut cluster = Cluster::start().await;
    cluster.deploy("cart", cart_spec());
    cluster.replicas_become("cart-r1", 1).await;
    cluster
        .registry_until("cart registered", |r| r.services.contains_key("cart"))
        .await;

    // --- no leader: the control plane is down
    cluster.stop_control_plane().await;
    cluster.fake.delete(&STATEFUL_SERVICES, NAMESPACE, "cart").unwrap();
    assert!(cluster.get(&STATEFUL_SERVICES, "cart").is_none(), "deleted at once");
    assert!(
        cluster.get(&DEPLOYMENTS, "cart-r1").is_none(),
        "its Deployment collected"
    );

    // --- a leader again: it deregisters what has no resource
    cluster.start_control_plane().await;
    cluster
        .registry_until("cart deregistered", |r| !r.services.contains_key("cart"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_refusing_pods_reaches_status_and_events_until_it_is_lifted() {
    let cluster = Cluster::start().await;
    let quota =
        "pods \"cart-7c9f-x\" is forbidden: exceeded quota: compute, requested: cpu=50m, used: cpu=2, limited: cpu=2";
    cluster.fake.refuse_pods(Some(quota));
    cluster.deploy("cart", cart_spec());
    let status = cluster
        .status_until("cart", "the quota failure", |s| failing_because(s, "ReplicaFailure"))
        .await;
    assert_eq!(condition(&status, "Failing")["message"], quota);
    assert_eq!(cluster.event_until("cart", "ReplicaFailure").await, quota);

    // The rendered pod asks for the sidecar's resources, so a quota can count it.
    let deployment = cluster.get(&DEPLOYMENTS, "cart-r1").unwrap();
    let sidecar = &deployment["spec"]["template"]["spec"]["containers"][1];
    assert_eq!(
        sidecar["resources"],
        json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}})
    );

    // --- the quota is raised
    cluster.fake.refuse_pods(None);
    cluster
        .fake
        .wait_for("a pod", |state| {
            (!state.list(&PODS, Some(NAMESPACE)).is_empty()).then_some(())
        })
        .await;
    cluster.pods_run("cart").await;
    cluster
        .status_until("cart", "no longer failing", |s| {
            condition(s, "Failing")["status"] == "False"
        })
        .await;
    cluster.event_until("cart", "Recovered").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_outside_the_operators_namespace_is_reported() {
    let cluster = Cluster::start().await;
    cluster
        .fake
        .create(&NAMESPACES, "", json!({"metadata": {"name": "shop"}}))
        .unwrap();
    cluster
        .fake
        .create(
            &STATEFUL_SERVICES,
            "shop",
            json!({"apiVersion": "strata.dev/v1alpha1", "kind": "StatefulService",
                   "metadata": {"name": "cart"}, "spec": {"image": "cart:1", "storeSecret": {"name": "s"}}}),
        )
        .unwrap();
    let key = Key {
        plural: STATEFUL_SERVICES.plural,
        namespace: "shop".into(),
        name: "cart".into(),
    };
    let status = cluster
        .fake
        .wait_for("the report", |state| {
            let status = state.get(&key)?["status"].clone();
            failing_because(&status, "OutsideOperatorNamespace").then_some(status)
        })
        .await;
    assert_eq!(
        condition(&status, "Failing")["message"],
        "the Strata control plane runs the StatefulServices of namespace \"strata\" only, and this one is in \"shop\": \
         create it in \"strata\""
    );
    assert!(cluster.fake.list(&DEPLOYMENTS, "shop").is_empty());
    assert!(!cluster.node().read(|r| r.services.contains_key("cart")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_sets_image_pull_secrets_the_service_account_and_sidecar_resources() {
    let cluster = Cluster::start().await;
    let mut spec = cart_spec();
    spec["imagePullSecrets"] = json!([{"name": "registry-credentials"}]);
    spec["serviceAccountName"] = json!("cart-runner");
    spec["sidecarResources"] =
        json!({"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}});
    cluster.deploy("cart", spec);
    cluster.replicas_become("cart-r1", 1).await;
    let deployment = cluster.get(&DEPLOYMENTS, "cart-r1").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "registry-credentials"}]));
    assert_eq!(pod["serviceAccountName"], "cart-runner");
    assert!(pod["automountServiceAccountToken"].is_null(), "the account decides");
    assert_eq!(
        pod["containers"][1]["resources"],
        json!({"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}})
    );
    let policy = cluster.get(&NETWORK_POLICIES, "cart").unwrap();
    assert_eq!(
        policy["spec"]["podSelector"],
        json!({"matchLabels": {"strata.dev/service": "cart"}})
    );
    assert_eq!(
        policy["spec"]["ingress"][1],
        json!({"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "strata-control-plane"}}}],
               "ports": [{"protocol": "TCP", "port": "admin"}]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_render_prints_the_deployment_the_operator_applied() {
    let cluster = Cluster::start().await;
    cluster.deploy("cart", cart_spec());
    cluster.replicas_become("cart-r1", 1).await;
    let resource = cluster.get(&STATEFUL_SERVICES, "cart").unwrap();
    let applied = cluster.get(&DEPLOYMENTS, "cart-r1").unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cart.yaml");
    std::fs::write(&file, serde_yaml::to_string(&resource).unwrap()).unwrap();
    let output = std::process::Command::new(strata_e2e::binary("strata"))
        .arg("render")
        .arg(&file)
        .args(["--sidecar-image", "strata:test", "--ready-timeout", "120s"])
        .args(["--sidecar-control-plane", "http://strata-control-plane.strata.svc:9200"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let list: Value = serde_yaml::from_slice(&output.stdout).unwrap();
    let rendered = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["kind"] == "Deployment")
        .unwrap()
        .clone();
    assert_eq!(without_server_fields(applied), without_server_fields(rendered));
}

/// What the API server and the scale subresource set, which a rendering cannot know.
fn without_server_fields(mut object: Value) -> Value {
    for field in [
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "managedFields",
    ] {
        object["metadata"].as_object_mut().unwrap().remove(field);
    }
    object.as_object_mut().unwrap().remove("status");
    object["spec"].as_object_mut().unwrap().remove("replicas");
    object
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_pod_is_replaced_and_a_deployment_deleted_by_hand_comes_back() {
    let cluster = Cluster::start().await;
    cluster.deploy("cart", cart_spec());
    cluster.replicas_become("cart-r1", 1).await;
    let pod = cluster
        .fake
        .wait_for("a pod", |state| {
            let pods = state.list(&PODS, Some(NAMESPACE));
            pods.first().map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        })
        .await;

    // --- the function crash-loops
    cluster
        .fake
        .merge(
            &PODS,
            NAMESPACE,
            &pod,
            "status",
            "kubelet",
            json!({"status": {"phase": "Running", "containerStatuses": [{
                "name": "function", "image": "registry.example/cart:1", "imageID": "", "ready": false,
                "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
            }]}}),
        )
        .unwrap();
    let status = cluster
        .status_until("cart", "failing", |s| failing_because(s, "InstanceFailing"))
        .await;
    assert_eq!(
        condition(&status, "Failing")["message"],
        format!("container function of pod {pod}: CrashLoopBackOff back-off 40s restarting failed container")
    );
    let replaced = cluster.event_until("cart", "PodReplaced").await;
    assert!(
        replaced.starts_with(&format!("deleted pod {pod}: container function")),
        "{replaced}"
    );
    assert!(cluster.get(&PODS, &pod).is_none(), "the operator deleted it");

    // --- someone deletes the Deployment: the operator applies it again
    let uid = cluster.get(&DEPLOYMENTS, "cart-r1").unwrap()["metadata"]["uid"].clone();
    cluster.fake.delete(&DEPLOYMENTS, NAMESPACE, "cart-r1").unwrap();
    let key = key(&DEPLOYMENTS, "cart-r1");
    cluster
        .fake
        .wait_for("the Deployment back", |state| {
            state.get(&key).filter(|d| d["metadata"]["uid"] != uid).map(|_| ())
        })
        .await;
}

/// Plays the kubelet for real: for every pod of the fake it runs the shopping cart
/// and a `strata proxy` registered under the pod's name with the revision its
/// Deployment labelled it with (the test kubelet of `tests/` runs the rendered pod
/// itself; here only the processes matter), all on one SQLite store. A pod that
/// goes is stopped as a kubelet stops it: SIGTERM (the sidecar drains), then
/// SIGKILL after the grace.
async fn cart_kubelet(cluster: &Cluster, store: &str) {
    let data_plane = cluster.data_plane();
    let fake = &cluster.fake;
    let mut changes = fake.subscribe();
    let mut running: std::collections::BTreeMap<String, Vec<Process>> = Default::default();
    loop {
        let pods: Vec<(String, String)> = fake
            .list(&PODS, NAMESPACE)
            .iter()
            .map(|pod| {
                let labels = &pod["metadata"]["labels"];
                let revision = labels["strata.dev/revision"].as_str().unwrap_or("0").to_owned();
                (pod["metadata"]["name"].as_str().unwrap().to_owned(), revision)
            })
            .collect();
        let gone: Vec<String> = running
            .keys()
            .filter(|name| !pods.iter().any(|(pod, _)| pod == *name))
            .cloned()
            .collect();
        for pod in gone {
            let processes = running.remove(&pod).unwrap_or_default();
            tokio::spawn(terminate(processes));
        }
        for (pod, revision) in pods {
            running.entry(pod.clone()).or_insert_with(|| {
                // Started without waiting (this runs on the test's runtime): the sidecar
                // retries discovery until the function answers, as in a pod.
                let function_port = free_port();
                let mut function = std::process::Command::new(binary("shopping-cart"));
                function.env("HOST", "127.0.0.1").env("PORT", function_port.to_string());
                let function = Process::spawn(&format!("shopping-cart of {pod}"), function);
                let mut sidecar = std::process::Command::new(binary("strata"));
                sidecar
                    .arg("proxy")
                    .args(["--user-function-port", &function_port.to_string()])
                    .args(["--http-port", &free_port().to_string()])
                    .args(["--admin-port", &free_port().to_string()])
                    .args(["--store", store])
                    .args(["--control-plane", &data_plane, "--token", ADMIN_TOKEN])
                    .args(["--instance-id", &pod, "--service", "cart", "--revision", &revision]);
                vec![Process::spawn(&format!("strata proxy of {pod}"), sidecar), function]
            });
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Stops a pod's processes as the rendered pod has a kubelet stop them: the
/// sidecar first (SIGTERM: it drains), the function once the sidecar is done (its
/// `preStop` hook waits), and SIGKILL to whatever outlives the grace.
async fn terminate(processes: Vec<Process>) {
    for mut process in processes {
        let pid = nix::unistd::Pid::from_raw(process.pid() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while tokio::time::Instant::now() < deadline && !process.exited() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A `strata gateway` over the cluster's control plane, on a port of its own.
fn gateway(cluster: &Cluster) -> (Process, u16) {
    let port = free_port();
    let mut gateway = std::process::Command::new(binary("strata"));
    gateway
        .arg("gateway")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--control-plane", &cluster.data_plane(), "--token", ADMIN_TOKEN]);
    (Process::spawn("strata gateway", gateway), port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_held_at_zero_wakes_the_service_through_the_operator() {
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("cart.db").display());
    let (_gateway, gateway_port) = gateway(&cluster);
    let kubelet = cart_kubelet(&cluster, &store);
    tokio::pin!(kubelet);

    let scenario = async {
        // --- the cart runs once, so the gateway learns its API
        cluster.deploy("cart", cart_spec());
        cluster
            .registry_until("an instance ready", |r| r.ready_replicas("cart") == 1)
            .await;
        let http = Http::new(gateway_port);
        let (added, _) = http
            .post(
                "/cart/ann/items/add",
                json!({"productId": "tea", "name": "Tea", "quantity": 2}),
            )
            .await;
        assert_eq!(added, 200);

        // --- scaled to zero: no pod, no instance
        cluster.scale("cart", 0, "idle").await;
        cluster.replicas_become("cart-r1", 0).await;
        cluster.registry_until("no instance", |r| r.instances.is_empty()).await;

        // --- a request arrives: the gateway holds it, pokes, the operator scales up
        let (status, cart) = http.get("/carts/ann").await;
        assert_eq!(
            (status, cart),
            (
                200,
                json!({"items": [{"productId": "tea", "name": "Tea", "quantity": 2}]})
            )
        );
        let woke = cluster.event_until("cart", "ScaledUp").await;
        assert!(woke.starts_with("scaled the Deployment cart-r1 from 0 to 1"), "{woke}");
    };
    tokio::select! {
        _ = scenario => {}
        _ = &mut kubelet => panic!("the kubelet stopped"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_retried_with_backoff_and_the_first_of_a_streak_is_reported() {
    let cluster = Cluster::start().await;
    let refusal = Refusal::new(500, "InternalError", "etcdserver: request timed out");
    cluster.fake.fail(
        "PATCH",
        "/apis/apps/v1/namespaces/strata/deployments/cart-r1",
        2,
        refusal,
    );
    cluster.deploy("cart", cart_spec());

    // Refused twice (retried after 1 s, then 2 s), then applied.
    cluster.replicas_become("cart-r1", 1).await;
    let reported = cluster.event_until("cart", "ReconcileFailed").await;
    assert!(
        reported.starts_with("the Kubernetes runtime could not reconcile: the Kubernetes API: ")
            && reported.contains("etcdserver: request timed out")
            && reported.ends_with("retrying in 1s"),
        "{reported}"
    );
    let history: Vec<String> = cluster.node().read(|r| {
        r.events
            .iter()
            .filter(|e| e.reason.starts_with("the Kubernetes runtime could not reconcile"))
            .map(|e| e.reason.clone())
            .collect()
    });
    assert_eq!(
        history,
        [reported],
        "only the first failure of the streak, in the service's history too"
    );
    let refused = cluster
        .fake
        .requests()
        .iter()
        .filter(|r| r.is_apply() && r.path.ends_with("/deployments/cart-r1"))
        .count();
    assert_eq!(refused, 3, "two refused, one applied");
}

/// Whether every instance of the cart runs `revision`, `count` are ready, and no
/// shard is being handed off.
fn only_revision(registry: &Registry, revision: u64, count: usize) -> bool {
    let instances: Vec<_> = registry.instances_of("cart").collect();
    instances.len() == count
        && instances
            .iter()
            .all(|i| i.revision == revision && i.state == strata_control_plane::registry::InstanceState::Ready)
        && registry.services["cart"]
            .shards
            .iter()
            .all(|shard| shard.handoff.is_none() && shard.owner.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_and_a_rollback_under_load_move_between_two_deployments_with_no_failed_call() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use strata_e2e::{
        load::lost_writes,
        revision_load::{client, Record},
    };
    const CLIENTS: usize = 16;
    const CARTS: u64 = 32;

    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("cart.db").display());
    let (_gateway, gateway_port) = gateway(&cluster);
    let base = format!("http://127.0.0.1:{gateway_port}");
    let kubelet = cart_kubelet(&cluster, &store);
    tokio::pin!(kubelet);
    let record = Arc::new(Record::default());
    let stop = Arc::new(AtomicBool::new(false));

    let scenario = async {
        let mut spec = cart_spec();
        spec["minScale"] = json!(2);
        spec["maxScale"] = json!(2);
        cluster.deploy("cart", spec);
        cluster
            .registry_until("revision 1 ready", |r| only_revision(r, 1, 2))
            .await;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| tokio::spawn(client(id, base.clone(), CARTS, record.clone(), stop.clone())))
            .collect();
        record.until_acked(200).await;

        // --- the rollout: a new image, revision 2's Deployment takes over
        cluster.edit("cart", json!({"spec": {"image": "registry.example/cart:2"}}));
        cluster
            .registry_until("revision 2 took over", |r| only_revision(r, 2, 2))
            .await;
        cluster.replicas_become("cart-r1", 0).await;
        cluster.replicas_become("cart-r2", 2).await;
        record.until_acked(200).await;
        let rollback_at = std::time::Instant::now();

        // --- the rollback: revision 1's Deployment again
        cluster
            .write(Command::Rollback {
                service: "cart".into(),
                to: None,
            })
            .await;
        cluster
            .registry_until("revision 1 took over again", |r| only_revision(r, 1, 2))
            .await;
        cluster.replicas_become("cart-r2", 0).await;
        record.until_acked(200).await;
        let status = cluster
            .status_until("cart", "revision 1 serves every entity", |s| {
                s["servingRevision"] == 1 && s["revisions"][0]["percent"] == 100
            })
            .await;
        assert_eq!(status["revisions"][1]["replicas"], 0, "{status}");

        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.await.unwrap();
        }
        rollback_at
    };
    let rollback_at = tokio::select! {
        at = scenario => at,
        _ = &mut kubelet => panic!("the kubelet stopped"),
    };
    record.assert_each_cart_switched_once(rollback_at);
    // The pods still run (the kubelet future is dropped last): read every cart back.
    let lost = lost_writes(&record.ledger, &base).await;
    assert!(lost.is_empty(), "{} acknowledged writes lost: {lost:?}", lost.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_is_a_deployment_of_its_own_with_its_slice_until_promoted() {
    let cluster = Cluster::start().await;
    let mut spec = cart_spec();
    spec["minScale"] = json!(2);
    spec["maxScale"] = json!(2);
    cluster.deploy("cart", spec);
    cluster.replicas_become("cart-r1", 2).await;
    cluster
        .settle("cart", "two ready instances of revision 1", |r, pods| {
            pods.len() == 2 && owned_by(r, "cart", 1) == 64
        })
        .await;

    // --- a share the registry cannot give is refused before anything changes
    cluster.edit(
        "cart",
        json!({"spec": {"image": "registry.example/cart:2", "traffic": 100}}),
    );
    let status = cluster
        .status_until("cart", "refused", |s| failing_because(s, "InvalidSpec"))
        .await;
    assert_eq!(
        condition(&status, "Failing")["message"],
        "spec.traffic is the canary's share of the entities, 1 to 99, not 100"
    );
    assert!(cluster.get(&DEPLOYMENTS, "cart-r2").is_none());
    assert_eq!(cluster.node().read(|r| r.services["cart"].latest_revision), 1);

    // --- a 25% canary: revision 2 gets a Deployment of one pod and a quarter of the shards
    cluster.edit("cart", json!({"spec": {"traffic": 25, "canaryMaxErrorRate": "5%"}}));
    cluster.replicas_become("cart-r2", 1).await;
    cluster
        .settle("cart", "the canary's slice", |r, _| owned_by(r, "cart", 2) == 16)
        .await;
    let canary = cluster.node().read(|r| r.services["cart"].canary.clone()).unwrap();
    assert_eq!((canary.revision, canary.percent), (2, 25));
    assert_eq!(canary.analysis.unwrap().max_error_rate_bp, 500);
    let status = cluster
        .status_until("cart", "the split", |s| {
            s["revisions"][1]["percent"] == 25 && s["revisions"][0]["percent"] == 75
        })
        .await;
    assert_eq!(
        (&status["servingRevision"], &status["latestRevision"]),
        (&json!(1), &json!(2))
    );
    assert_eq!(cluster.get(&DEPLOYMENTS, "cart-r1").unwrap()["spec"]["replicas"], 2);

    // --- promoted through the control plane: revision 2 serves everything, revision 1 goes
    let old = cluster.pods("cart");
    cluster.write(Command::Promote { service: "cart".into() }).await;
    cluster.replicas_become("cart-r2", 2).await;
    cluster
        .settle("cart", "the promotion", |r, pods| {
            owned_by(r, "cart", 2) == 64 && pods.len() == 2 && r.instances_of("cart").all(|i| i.revision == 2)
        })
        .await;
    cluster.replicas_become("cart-r1", 0).await;
    assert!(
        old.iter().any(|pod| cluster.pods("cart").contains(pod)),
        "the canary's own pod stays"
    );
    // The resource, with its traffic field still set, asks nothing more.
    touch(&cluster, "cart", "after-promote");
    cluster
        .status_until("cart", "revision 2 serves every entity", |s| {
            s["servingRevision"] == 2 && s["revisions"][1]["percent"] == 100
        })
        .await;
    let cart = cluster.node().read(|r| r.services["cart"].clone());
    assert_eq!((cart.serving(), cart.latest_revision, cart.canary), (2, 2, None));
}
