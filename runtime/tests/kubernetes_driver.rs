//! The Kubernetes driver against kube's mock service (`tower-test`): each test runs
//! one reconcile of a `StatefulService` and answers, in order, exactly the requests
//! it must make, checking each one's method, path, query and body; a test fails on
//! any other request, and on any request too many. The registry is a real one-node
//! control plane (Raft log on disk in a temporary folder).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use http::{Request, Response, StatusCode};
use kube::{client::Body, runtime::controller::Action, Client};
use serde_json::{json, Value};
use strata_control_plane::{
    auth::{Authenticator, ClusterSecret, InstanceScope, Principal},
    node::ControlPlane,
    registry::Command,
    server::{self, RunningServer, ServerConfig},
};
use strata_runtime::kubernetes::{
    self,
    crd::StatefulService,
    objects::OperatorSettings,
    reconcile::{error_policy, reconcile, Context, FINALIZER},
};
use tower_test::mock::{self, Handle, SendResponse};

const NS: &str = "strata";
const SIDECAR_SECRET: &str = "driver-test";
const SERVICES: &str = "/apis/strata.dev/v1alpha1/namespaces/strata/statefulservices";

// --- the harness

struct Cluster {
    _dir: tempfile::TempDir,
    server: RunningServer,
}

impl Cluster {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = server::start(ServerConfig {
            node_id: Some(1),
            data_dir: dir.path().join("node"),
            listen: Some("127.0.0.1:0".into()),
            api_listen: Some("127.0.0.1:0".into()),
            bootstrap: true,
            cluster_secret: "driver-test".into(),
            ..ServerConfig::default()
        })
        .await
        .unwrap();
        let mut leadership = server.node().leadership();
        let node = server.node();
        tokio::time::timeout(Duration::from_secs(30), async {
            while !node.is_leader() {
                leadership.changed().await.unwrap();
            }
        })
        .await
        .expect("the one-node control plane elects itself");
        Cluster { _dir: dir, server }
    }

    fn node(&self) -> Arc<ControlPlane> {
        self.server.node()
    }

    async fn write(&self, command: Command) {
        self.node().write(command).await.unwrap();
    }
}

fn settings() -> OperatorSettings {
    OperatorSettings {
        namespace: NS.into(),
        sidecar_image: "strata:test".into(),
        control_plane_url: "http://strata-control-plane:9200".into(),
        cluster_secret: ClusterSecret::new(SIDECAR_SECRET),
        ready_timeout: Duration::from_secs(120),
    }
}

/// The API server's side of the mock: requests come in, the test answers each.
struct ApiServer(Handle<Request<Body>, Response<Body>>);

/// One request as the test sees it.
struct Seen {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    content_type: String,
    body: Value,
    respond: SendResponse<Response<Body>>,
}

impl Seen {
    fn answer(self, status: StatusCode, body: Value) {
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        self.respond.send_response(response);
    }

    fn ok(self, body: Value) {
        self.answer(StatusCode::OK, body);
    }

    /// The object the request sent, as the API server would store it.
    fn echo(self) {
        let body = self.body.clone();
        self.ok(body);
    }
}

impl ApiServer {
    /// The next request, which must be `method path`.
    async fn expect(&mut self, method: &str, path: &str) -> Seen {
        let (request, respond) = tokio::time::timeout(Duration::from_secs(30), self.0.next_request())
            .await
            .unwrap_or_else(|_| panic!("no request came; expected {method} {path}"))
            .unwrap_or_else(|| panic!("the driver finished; expected {method} {path}"));
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        let query = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (key.to_owned(), value.to_owned())
            })
            .collect();
        let seen = Seen {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query,
            content_type: parts
                .headers
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default(),
            body: if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            },
            respond,
        };
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            (method, path),
            "unexpected request (query {:?}, body {})",
            seen.query,
            seen.body
        );
        seen
    }

    /// The driver made no request beyond those answered (it has dropped its client).
    async fn expect_no_more(mut self) {
        if let Some((request, _)) = self.0.next_request().await {
            panic!("one request too many: {} {}", request.method(), request.uri());
        }
    }

    async fn server_side_apply(&mut self, path: &str) -> Seen {
        let seen = self.expect("PATCH", path).await;
        assert_eq!(seen.content_type, "application/apply-patch+yaml");
        assert_eq!(
            seen.query.get("fieldManager").map(String::as_str),
            Some("strata-control-plane")
        );
        assert_eq!(seen.query.get("force").map(String::as_str), Some("true"));
        seen
    }

    async fn store_secret_exists(&mut self) {
        self.expect("GET", "/api/v1/namespaces/strata/secrets/cart-store")
            .await
            .ok(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "cart-store", "namespace": NS},
                "data": {"url": "cG9zdGdyZXM6Ly9jYXJ0QGRiL2NhcnQ="},
            }));
    }

    /// The Service, the credential's Secret and the Deployment are applied; the
    /// Deployment answers with `replicas`.
    async fn objects_applied(&mut self, replicas: i32) -> Value {
        self.server_side_apply("/api/v1/namespaces/strata/services/cart")
            .await
            .echo();
        let secret = self
            .server_side_apply("/api/v1/namespaces/strata/secrets/cart-strata-credential")
            .await;
        check_credential_secret(&secret.body);
        secret.echo();
        let seen = self
            .server_side_apply("/apis/apps/v1/namespaces/strata/deployments/cart")
            .await;
        let mut deployment = seen.body.clone();
        deployment["spec"]["replicas"] = json!(replicas);
        let applied = seen.body.clone();
        seen.ok(deployment);
        applied
    }

    async fn pods_listed(&mut self, pods: Vec<Value>) {
        let seen = self.expect("GET", "/api/v1/namespaces/strata/pods").await;
        assert_eq!(
            seen.query.get("labelSelector").map(String::as_str),
            Some("strata.dev%2Fservice%3Dcart")
        );
        seen.ok(json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods}));
    }

    async fn scaled_to(&mut self, replicas: i32) {
        let seen = self
            .expect("PATCH", "/apis/apps/v1/namespaces/strata/deployments/cart/scale")
            .await;
        assert_eq!(seen.content_type, "application/merge-patch+json");
        assert_eq!(seen.body, json!({"spec": {"replicas": replicas}}));
        seen.ok(json!({
            "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "cart", "namespace": NS},
            "spec": {"replicas": replicas},
        }));
    }

    /// The status written; returned for the test to check.
    async fn status_written(&mut self, cart: &StatefulService) -> Value {
        let seen = self.expect("PATCH", &format!("{SERVICES}/cart/status")).await;
        assert_eq!(seen.content_type, "application/merge-patch+json");
        let status = seen.body["status"].clone();
        let mut object = serde_json::to_value(cart).unwrap();
        object["status"] = status.clone();
        seen.ok(object);
        status
    }
}

/// A client whose requests the returned [`ApiServer`] answers.
fn mock_client() -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, NS), ApiServer(handle))
}

fn cart_with(spec: Value) -> StatefulService {
    serde_json::from_value(json!({
        "apiVersion": "strata.dev/v1alpha1",
        "kind": "StatefulService",
        "metadata": {
            "name": "cart", "namespace": NS, "uid": "8f2b6c1e-0000-4000-8000-000000000001",
            "generation": 3, "finalizers": [FINALIZER],
        },
        "spec": spec,
    }))
    .unwrap()
}

fn cart() -> StatefulService {
    cart_with(json!({
        "image": "registry.example/shopping-cart:1",
        "minScale": 0,
        "maxScale": 5,
        "scaleToZeroGrace": "45s",
        "storeSecret": {"name": "cart-store"},
    }))
}

fn pod(name: &str, started: &str, waiting: Option<&str>) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "creationTimestamp": started,
                     "labels": {"strata.dev/service": "cart"}},
        "status": {"phase": "Running", "startTime": started},
    });
    if let Some(reason) = waiting {
        pod["status"]["containerStatuses"] = json!([{
            "name": "function", "image": "registry.example/shopping-cart:1", "imageID": "",
            "ready": false, "restartCount": 4,
            "state": {"waiting": {"reason": reason, "message": "back-off 40s restarting failed container"}},
        }]);
    }
    pod
}

fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {status}"))
}

/// Runs one reconcile while `answer` plays the API server, then checks that no
/// request was left unanswered.
async fn reconcile_once<F, Fut>(
    cluster: &Cluster,
    object: StatefulService,
    answer: F,
) -> Result<Action, strata_runtime::kubernetes::reconcile::Error>
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: std::future::Future<Output = ApiServer>,
{
    let (client, api) = mock_client();
    let context = Arc::new(Context::new(client, cluster.node(), settings()));
    let driver = tokio::spawn(reconcile(Arc::new(object), context));
    let api = answer(api).await;
    let result = driver.await.unwrap();
    api.expect_no_more().await;
    result
}

async fn register_ready(cluster: &Cluster, pod: &str) {
    cluster
        .write(Command::RegisterInstance {
            id: pod.into(),
            service: "cart".into(),
            admin_address: "10.1.0.7:9090".into(),
            address: "10.1.0.7:9000".into(),
        })
        .await;
    cluster
        .write(Command::InstanceReady {
            id: pod.into(),
            descriptor_set: None,
            subscriptions: vec![],
            entities: vec![],
        })
        .await;
}

async fn set_desired(cluster: &Cluster, replicas: u32) {
    cluster
        .write(Command::SetDesiredReplicas {
            service: "cart".into(),
            replicas,
            reason: "test".into(),
        })
        .await;
}

/// The first reconcile of a resource registers the cart, so later ones update it.
async fn create_cart(cluster: &Cluster) {
    reconcile_once(cluster, cart(), |mut api| async move {
        api.store_secret_exists().await;
        api.objects_applied(1).await;
        api.pods_listed(vec![]).await;
        api.status_written(&cart()).await;
        api
    })
    .await
    .unwrap();
}

// --- the cases

#[tokio::test]
async fn a_new_resource_first_gets_the_finalizer() {
    let cluster = Cluster::start().await;
    let mut fresh = cart();
    fresh.metadata.finalizers = None;
    let action = reconcile_once(&cluster, fresh, |mut api| async move {
        let seen = api.expect("PATCH", &format!("{SERVICES}/cart")).await;
        assert_eq!(seen.content_type, "application/json-patch+json");
        assert_eq!(
            seen.body,
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
            ])
        );
        seen.ok(serde_json::to_value(cart()).unwrap());
        api
    })
    .await
    .unwrap();
    // The patch itself triggers the next reconcile.
    assert_eq!(action, Action::await_change());
    assert!(cluster.node().read(|r| r.services.is_empty()), "nothing registered yet");
}

#[tokio::test]
async fn create_registers_the_service_and_applies_its_deployment_with_the_sidecar() {
    let cluster = Cluster::start().await;
    let action = reconcile_once(&cluster, cart(), |mut api| async move {
        api.store_secret_exists().await;
        let deployment = api.objects_applied(1).await;
        check_deployment(&deployment);
        api.pods_listed(vec![]).await;
        // A new service wants one instance, and the new Deployment has one: no scale call.
        let status = api.status_written(&cart()).await;
        assert_eq!(
            (&status["desiredReplicas"], &status["readyReplicas"]),
            (&json!(1), &json!(0))
        );
        assert_eq!(status["observedGeneration"], 3);
        assert_eq!(condition(&status, "Ready")["reason"], "Pending");
        assert_eq!(condition(&status, "ScaledToZero")["status"], "False");
        assert_eq!(condition(&status, "Failing")["status"], "False");
        api
    })
    .await
    .unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(5)),
        "not ready yet: look again soon"
    );
    let service = cluster.node().read(|r| r.services["cart"].clone());
    assert_eq!(service.image.as_deref(), Some("registry.example/shopping-cart:1"));
    assert_eq!(
        (
            service.min_scale,
            service.max_scale,
            service.scale_to_zero_grace_ms,
            service.command
        ),
        (0, 5, 45_000, None)
    );
}

fn check_deployment(deployment: &Value) {
    assert_eq!(deployment["metadata"]["name"], "cart");
    assert_eq!(deployment["metadata"]["namespace"], NS);
    let owner = &deployment["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["name"], &owner["controller"], &owner["uid"]),
        (
            &json!("StatefulService"),
            &json!("cart"),
            &json!(true),
            &json!("8f2b6c1e-0000-4000-8000-000000000001")
        )
    );
    assert_eq!(
        deployment["spec"].get("replicas"),
        None,
        "the scale subresource owns replicas"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);
    assert_eq!(pod["automountServiceAccountToken"], false);
    let containers = pod["containers"].as_array().unwrap();
    let names: Vec<&str> = containers.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["function", "strata-sidecar"]);
    let (function, sidecar) = (&containers[0], &containers[1]);
    assert_eq!(function["image"], "registry.example/shopping-cart:1");
    assert_eq!(function["lifecycle"]["preStop"]["sleep"]["seconds"], 15);
    assert_eq!(
        function["env"],
        json!([{"name": "HOST", "value": "127.0.0.1"}, {"name": "PORT", "value": "8080"}])
    );
    assert_eq!(sidecar["image"], "strata:test");
    assert_eq!(sidecar["args"], json!(["proxy"]));
    let env: BTreeMap<&str, &Value> = sidecar["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|var| (var["name"].as_str().unwrap(), var))
        .collect();
    assert_eq!(env["USER_FUNCTION_PORT"]["value"], "8080");
    assert_eq!(env["HTTP_PORT"]["value"], "9000");
    assert_eq!(env["HTTP_HOST"]["value"], "0.0.0.0");
    assert_eq!(env["STRATA_SERVICE"]["value"], "cart");
    assert_eq!(env["STRATA_CONTROL_PLANE"]["value"], "http://strata-control-plane:9200");
    assert_eq!(
        env["STRATA_STORE"]["valueFrom"],
        json!({"secretKeyRef": {"name": "cart-store", "key": "url"}})
    );
    // The credential is in the service's own Secret, not inline in the pod template.
    assert_eq!(
        env["STRATA_TOKEN"],
        &json!({"name": "STRATA_TOKEN", "valueFrom": {"secretKeyRef": {"name": "cart-strata-credential", "key": "token"}}})
    );
    assert!(
        !deployment.to_string().contains("strata-instance"),
        "a credential inline in the Deployment"
    );
    assert!(
        !deployment.to_string().contains("admin-token"),
        "a sidecar reaches for the admin token"
    );
    assert_eq!(
        env["STRATA_INSTANCE_ID"]["valueFrom"],
        json!({"fieldRef": {"fieldPath": "metadata.name"}})
    );
    assert_eq!(env["STRATA_ADVERTISE"]["value"], "$(POD_IP):9000");
    // The admin listener on its fixed, named port: what the probes ask and (at the
    // advertised host, see `admin::advertised_beside`) what the autoscaler scrapes.
    assert_eq!(env["STRATA_ADMIN_PORT"]["value"], "9090");
    assert_eq!(
        sidecar["ports"],
        json!([{"name": "http", "containerPort": 9000}, {"name": "admin", "containerPort": 9090}])
    );
    // Startup waits for readiness (store, discovery, registration) for the ready
    // timeout (120 s here) and 20 s more, past the sidecar's own discovery timeout.
    assert_eq!(env["STRATA_DISCOVERY_TIMEOUT"]["value"], "130s");
    assert_eq!(
        sidecar["startupProbe"],
        json!({"httpGet": {"path": "/readyz", "port": "admin"}, "periodSeconds": 2, "failureThreshold": 70, "timeoutSeconds": 1})
    );
    assert_eq!(
        sidecar["readinessProbe"],
        json!({"httpGet": {"path": "/readyz", "port": "admin"}, "periodSeconds": 2, "failureThreshold": 2, "timeoutSeconds": 1})
    );
    assert_eq!(
        sidecar["livenessProbe"],
        json!({"httpGet": {"path": "/healthz", "port": "admin"}, "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 3})
    );
}

/// The sidecars' credential: in a Secret the StatefulService owns, acting for
/// instances of this service only.
fn check_credential_secret(secret: &Value) {
    assert_eq!(secret["metadata"]["namespace"], NS);
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["name"], &owner["controller"]),
        (&json!("StatefulService"), &json!("cart"), &json!(true))
    );
    let credential = secret["stringData"]["token"].as_str().unwrap();
    assert_eq!(
        Authenticator::default()
            .with_cluster_secret(ClusterSecret::new(SIDECAR_SECRET))
            .identify(Some(credential)),
        Ok(Principal::Instance(InstanceScope {
            service: "cart".into(),
            instance: None
        }))
    );
}

#[tokio::test]
async fn scale_up_adopts_the_pods_it_finds_and_raises_the_deployments_scale() {
    let cluster = Cluster::start().await;
    create_cart(&cluster).await;
    register_ready(&cluster, "cart-5d8f-a").await;
    set_desired(&cluster, 3).await;
    // A leader that has never seen this pod (say, after a failover) adopts it and
    // starts only the two that are missing.
    reconcile_once(&cluster, cart(), |mut api| async move {
        api.store_secret_exists().await;
        api.objects_applied(1).await;
        api.pods_listed(vec![pod("cart-5d8f-a", "2026-11-30T01:00:00Z", None)])
            .await;
        api.scaled_to(3).await;
        let status = api.status_written(&cart()).await;
        assert_eq!(
            (&status["desiredReplicas"], &status["readyReplicas"]),
            (&json!(3), &json!(1))
        );
        assert_eq!(condition(&status, "Ready")["reason"], "Scaling");
        api
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn scale_to_zero_marks_the_youngest_pods_for_removal_then_scales_to_zero() {
    let cluster = Cluster::start().await;
    create_cart(&cluster).await;
    set_desired(&cluster, 2).await;
    register_ready(&cluster, "cart-5d8f-old").await;
    register_ready(&cluster, "cart-5d8f-new").await;
    reconcile_once(&cluster, cart(), |mut api| async move {
        api.store_secret_exists().await;
        api.objects_applied(2).await;
        api.pods_listed(vec![
            pod("cart-5d8f-old", "2026-11-30T01:00:00Z", None),
            pod("cart-5d8f-new", "2026-11-30T01:05:00Z", None),
        ])
        .await;
        api.status_written(&cart()).await;
        api
    })
    .await
    .unwrap();

    set_desired(&cluster, 1).await;
    reconcile_once(&cluster, cart(), |mut api| async move {
        api.store_secret_exists().await;
        api.objects_applied(2).await;
        api.pods_listed(vec![
            pod("cart-5d8f-old", "2026-11-30T01:00:00Z", None),
            pod("cart-5d8f-new", "2026-11-30T01:05:00Z", None),
        ])
        .await;
        // Only the youngest goes.
        let seen = api
            .expect("PATCH", "/api/v1/namespaces/strata/pods/cart-5d8f-new")
            .await;
        assert_eq!(
            seen.body,
            json!({"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "-1000"}}})
        );
        seen.echo();
        api.scaled_to(1).await;
        api.status_written(&cart()).await;
        api
    })
    .await
    .unwrap();

    // Traffic stopped: the autoscaler writes zero; the last pod goes; once its sidecar
    // has deregistered the status says scaled to zero.
    set_desired(&cluster, 0).await;
    reconcile_once(&cluster, cart(), |mut api| async move {
        api.store_secret_exists().await;
        api.objects_applied(1).await;
        api.pods_listed(vec![pod("cart-5d8f-old", "2026-11-30T01:00:00Z", None)])
            .await;
        api.expect("PATCH", "/api/v1/namespaces/strata/pods/cart-5d8f-old")
            .await
            .echo();
        api.scaled_to(0).await;
        api.status_written(&cart()).await;
        api
    })
    .await
    .unwrap();
    // The pod removed in the round before is no longer listed: its registration is an
    // orphan, removed at once rather than after the heartbeat timeout.
    let left: Vec<String> = cluster.node().read(|r| r.instances.keys().cloned().collect());
    assert_eq!(left, ["cart-5d8f-old"]);
    // The last sidecar drains and deregisters as its pod stops.
    cluster
        .write(Command::RemoveInstance {
            id: "cart-5d8f-old".into(),
            reason: "drained".into(),
        })
        .await;
    let action = reconcile_once(&cluster, cart(), |mut api| async move {
        api.store_secret_exists().await;
        api.objects_applied(0).await;
        api.pods_listed(vec![]).await;
        let status = api.status_written(&cart()).await;
        assert_eq!(condition(&status, "ScaledToZero")["status"], "True");
        assert_eq!(condition(&status, "Ready")["reason"], "ScaledToZero");
        api
    })
    .await
    .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
}

#[tokio::test]
async fn a_deployment_deleted_by_hand_is_recreated_at_the_desired_scale() {
    let cluster = Cluster::start().await;
    create_cart(&cluster).await;
    set_desired(&cluster, 0).await;
    // Applying creates it again; a new Deployment has one replica, so the scale is set back.
    reconcile_once(&cluster, cart(), |mut api| async move {
        api.store_secret_exists().await;
        api.objects_applied(1).await;
        api.pods_listed(vec![]).await;
        api.scaled_to(0).await;
        api.status_written(&cart()).await;
        api
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_crash_looping_pod_is_replaced_after_a_backoff_and_reported_as_failing() {
    let cluster = Cluster::start().await;
    create_cart(&cluster).await;
    register_ready(&cluster, "cart-5d8f-a").await;
    reconcile_once(&cluster, cart(), |mut api| async move {
        api.store_secret_exists().await;
        api.objects_applied(1).await;
        api.pods_listed(vec![pod(
            "cart-5d8f-a",
            "2026-11-30T01:00:00Z",
            Some("CrashLoopBackOff"),
        )])
        .await;
        api.expect("DELETE", "/api/v1/namespaces/strata/pods/cart-5d8f-a")
            .await
            .ok(pod("cart-5d8f-a", "2026-11-30T01:00:00Z", None));
        // The replacement waits out the backoff: no pod for now.
        api.scaled_to(0).await;
        let status = api.status_written(&cart()).await;
        let failing = condition(&status, "Failing");
        assert_eq!(
            (&failing["status"], &failing["reason"]),
            (&json!("True"), &json!("InstanceFailing"))
        );
        assert_eq!(
            failing["message"],
            "container function of pod cart-5d8f-a: CrashLoopBackOff back-off 40s restarting failed container"
        );
        api
    })
    .await
    .unwrap();
    let (instances, last_event) = cluster.node().read(|r| {
        (
            r.instances.len(),
            r.events.back().map(|e| e.reason.clone()).unwrap_or_default(),
        )
    });
    assert_eq!(instances, 0, "the replaced instance left the registry");
    assert!(last_event.ends_with("restarting in 1s"), "{last_event}");
}

#[tokio::test]
async fn delete_deregisters_the_service_then_releases_the_finalizer() {
    let cluster = Cluster::start().await;
    create_cart(&cluster).await;
    let mut deleted = cart();
    deleted.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::chrono::Utc::now(),
    ));
    let action = reconcile_once(&cluster, deleted.clone(), |mut api| async move {
        let seen = api.expect("PATCH", &format!("{SERVICES}/cart")).await;
        assert_eq!(seen.content_type, "application/json-patch+json");
        assert_eq!(
            seen.body,
            json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/0"},
            ])
        );
        seen.ok(serde_json::to_value(&deleted).unwrap());
        api
    })
    .await
    .unwrap();
    assert_eq!(action, Action::await_change());
    assert!(!cluster.node().read(|r| r.services.contains_key("cart")));
}

#[tokio::test]
async fn api_errors_are_retried_with_growing_backoff_and_a_success_resets_it() {
    let cluster = Cluster::start().await;
    let (client, mut api) = mock_client();
    let context = Arc::new(Context::new(client, cluster.node(), settings()));
    let object = Arc::new(cart());

    // The API server refuses to apply the Deployment.
    let driver = tokio::spawn(reconcile(object.clone(), context.clone()));
    api.store_secret_exists().await;
    api.server_side_apply("/api/v1/namespaces/strata/services/cart")
        .await
        .echo();
    api.server_side_apply("/api/v1/namespaces/strata/secrets/cart-strata-credential")
        .await
        .echo();
    api.server_side_apply("/apis/apps/v1/namespaces/strata/deployments/cart")
        .await
        .answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500}),
        );
    let error = driver.await.unwrap().unwrap_err();
    assert!(error.to_string().contains("etcdserver: request timed out"), "{error}");
    assert_eq!(
        error_policy(object.clone(), &error, context.clone()),
        Action::requeue(Duration::from_secs(1))
    );

    // Then it cannot be reached at all. The first failure is in the service's history.
    let driver = tokio::spawn(reconcile(object.clone(), context.clone()));
    let (_, respond) = api.0.next_request().await.unwrap();
    respond.send_error(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "connection refused",
    ));
    let error = driver.await.unwrap().unwrap_err();
    assert_eq!(
        error_policy(object.clone(), &error, context.clone()),
        Action::requeue(Duration::from_secs(2))
    );
    let events: Vec<(Option<String>, String)> = cluster.node().read(|r| {
        r.events
            .iter()
            .map(|e| (e.instance.clone(), e.reason.clone()))
            .collect()
    });
    let reported: Vec<_> = events
        .iter()
        .filter(|(_, reason)| reason.starts_with("the Kubernetes runtime"))
        .collect();
    assert_eq!(reported.len(), 1, "only the first failure of a streak: {events:?}");
    assert_eq!(reported[0].0.as_deref(), Some("deployment/cart"));
    assert!(
        reported[0].1.contains("etcdserver: request timed out") && reported[0].1.ends_with("retrying in 1s"),
        "{}",
        reported[0].1
    );

    // It is back: the reconcile succeeds and the next failure starts from a second again.
    let driver = tokio::spawn(reconcile(object.clone(), context.clone()));
    api.store_secret_exists().await;
    api.objects_applied(1).await;
    api.pods_listed(vec![]).await;
    api.status_written(&cart()).await;
    driver.await.unwrap().unwrap();
    assert_eq!(
        error_policy(object, &error, context),
        Action::requeue(Duration::from_secs(1))
    );
}

/// An invalid spec makes exactly one request: the status that says why.
async fn refused(spec: Value, reason: &str, message: &str) {
    let cluster = Cluster::start().await;
    let object = cart_with(spec);
    let sent = object.clone();
    let (status_tx, status_rx) = tokio::sync::oneshot::channel();
    reconcile_once(&cluster, object, |mut api| async move {
        let _ = status_tx.send(api.status_written(&sent).await);
        api
    })
    .await
    .unwrap();
    let status = status_rx.await.unwrap();
    let failing = condition(&status, "Failing");
    assert_eq!(
        (&failing["status"], &failing["reason"], &failing["message"]),
        (&json!("True"), &json!(reason), &json!(message)),
        "{status}"
    );
    assert!(cluster.node().read(|r| r.services.is_empty()), "nothing registered");
}

#[tokio::test]
async fn min_scale_above_max_scale_is_failing_with_no_deployment() {
    refused(
        json!({"image": "cart:1", "minScale": 5, "maxScale": 2, "storeSecret": {"name": "cart-store"}}),
        "InvalidSpec",
        "spec: min_scale (5) must not exceed max_scale (2)",
    )
    .await;
}

#[tokio::test]
async fn a_missing_image_is_failing_with_no_deployment() {
    refused(
        json!({"storeSecret": {"name": "cart-store"}}),
        "InvalidSpec",
        "spec.image is missing: name the function's container image",
    )
    .await;
}

#[tokio::test]
async fn a_negative_grace_is_failing_with_no_deployment() {
    refused(
        json!({"image": "cart:1", "scaleToZeroGrace": "-5s", "storeSecret": {"name": "cart-store"}}),
        "InvalidSpec",
        "spec.scaleToZeroGrace must not be negative (got \"-5s\")",
    )
    .await;
}

#[tokio::test]
async fn a_missing_store_secret_is_failing_with_no_deployment() {
    refused(
        json!({"image": "cart:1"}),
        "InvalidSpec",
        "spec.storeSecret is missing: name the Secret that holds the store's URL",
    )
    .await;
}

#[tokio::test]
async fn an_unknown_store_secret_is_failing_with_no_deployment() {
    let cluster = Cluster::start().await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    reconcile_once(&cluster, cart(), |mut api| async move {
        api.expect("GET", "/api/v1/namespaces/strata/secrets/cart-store")
            .await
            .answer(
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": "secrets \"cart-store\" not found", "reason": "NotFound", "code": 404}),
            );
        let _ = tx.send(api.status_written(&cart()).await);
        api
    })
    .await
    .unwrap();
    let status = rx.await.unwrap();
    let failing = condition(&status, "Failing");
    assert_eq!(
        (&failing["status"], &failing["reason"], &failing["message"]),
        (
            &json!("True"),
            &json!("UnknownStoreSecret"),
            &json!("spec.storeSecret: no Secret \"cart-store\" in namespace \"strata\"")
        )
    );
    assert!(cluster.node().read(|r| r.services.is_empty()));
}

#[tokio::test]
async fn a_node_that_does_not_lead_makes_no_request() {
    let dir = tempfile::tempdir().unwrap();
    // Never bootstrapped nor joined: it cannot lead.
    let server = server::start(ServerConfig {
        node_id: Some(2),
        data_dir: dir.path().join("node"),
        listen: Some("127.0.0.1:0".into()),
        api_listen: Some("127.0.0.1:0".into()),
        cluster_secret: "driver-test".into(),
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let (client, api) = mock_client();
    let context = Arc::new(Context::new(client, server.node(), settings()));
    let action = reconcile(Arc::new(cart()), context.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(5)));
    drop(context);
    api.expect_no_more().await;
    assert!(server.node().read(|r| r.services.is_empty()));
    server.shutdown().await;
}

/// The controller as `strata control-plane --runtime kubernetes` runs it: it lists and
/// watches StatefulServices and Deployments (answered here; watches stay open), and
/// every other request goes to the test in order. A reconcile happens for the listed
/// resource, again when the autoscaler changes the desired count in the registry (the
/// Deployment is scaled to it), and the controller stops when told to.
#[tokio::test]
async fn the_controller_reconciles_listed_resources_and_follows_the_registry() {
    let cluster = Cluster::start().await;
    let (outer, mut watches) = mock::pair::<Request<Body>, Response<Body>>();
    let (inner, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let mut api = ApiServer(handle);
    // Lists answer with the cart (and no Deployment); watches are held open; the rest
    // is passed to `api`.
    let dispatcher = tokio::spawn(async move {
        let mut open_watches = Vec::new();
        while let Some((request, respond)) = watches.next_request().await {
            let path = request.uri().path().to_owned();
            let watching = request.uri().query().unwrap_or_default().contains("watch=true");
            let list = match path.as_str() {
                SERVICES => Some(
                    json!({"apiVersion": "strata.dev/v1alpha1", "kind": "StatefulServiceList",
                                        "metadata": {"resourceVersion": "7"}, "items": [cart()]}),
                ),
                "/apis/apps/v1/namespaces/strata/deployments" => Some(json!({"apiVersion": "apps/v1",
                    "kind": "DeploymentList", "metadata": {"resourceVersion": "7"}, "items": []})),
                _ => None,
            };
            match (list, watching) {
                (Some(_), true) => open_watches.push(respond),
                (Some(list), false) => respond.send_response(
                    Response::builder()
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&list).unwrap()))
                        .unwrap(),
                ),
                (None, _) => {
                    let inner = inner.clone();
                    tokio::spawn(async move {
                        match tower::ServiceExt::oneshot(inner, request).await {
                            Ok(response) => respond.send_response(response),
                            Err(error) => respond.send_error(error),
                        }
                    });
                }
            }
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(kubernetes::run(
        cluster.node(),
        Client::new(outer, NS),
        settings(),
        async move {
            let _ = stopped.await;
        },
    ));

    // --- the listed cart is reconciled
    api.store_secret_exists().await;
    api.objects_applied(1).await;
    api.pods_listed(vec![]).await;
    api.status_written(&cart()).await;
    assert!(cluster.node().read(|r| r.services.contains_key("cart")));

    // --- the autoscaler wants three: a reconcile scales the Deployment to three
    set_desired(&cluster, 3).await;
    let mut scaled = false;
    for _ in 0..3 {
        api.store_secret_exists().await;
        api.objects_applied(1).await;
        api.pods_listed(vec![]).await;
        let next = api.0.next_request().await.unwrap();
        let seen_path = next.0.uri().path().to_owned();
        if seen_path == "/apis/apps/v1/namespaces/strata/deployments/cart/scale" {
            let (request, respond) = next;
            let body = request.into_body().collect_bytes().await.unwrap();
            assert_eq!(
                serde_json::from_slice::<Value>(&body).unwrap(),
                json!({"spec": {"replicas": 3}})
            );
            respond.send_response(
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Body::from(
                        serde_json::to_vec(&json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                            "metadata": {"name": "cart", "namespace": NS}, "spec": {"replicas": 3}}))
                        .unwrap(),
                    ))
                    .unwrap(),
            );
            api.status_written(&cart()).await;
            scaled = true;
            break;
        }
        // A periodic reconcile that came before the registry change: its status.
        assert_eq!(seen_path, format!("{SERVICES}/cart/status"));
        let (_, respond) = next;
        respond.send_response(
            Response::builder()
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&cart()).unwrap()))
                .unwrap(),
        );
    }
    assert!(scaled, "the registry change never reached the Deployment");

    // --- told to stop, it stops
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), controller)
        .await
        .expect("the controller stops when told to")
        .unwrap();
    dispatcher.abort();
}
