//! One service setting, every surface: each setting of `ServiceSettings` must be in
//! the REST API's schema (what it takes and what it shows), kept by the registry on
//! create and on update, in the `StatefulService` resource's schema and carried by
//! the operator into the registry, and a flag of `strata deploy`. This fails when a
//! setting reaches one of them and not the others. (The dashboard's forms are built
//! from the API's schema at run time; `web-ui/e2e/dashboard.e2e.mjs` checks that the
//! deploy form has a field for every setting of the live document, with its default.)
//!
//! The API and the flags are exercised for real: `strata deploy` against a
//! `strata control-plane` on loopback.

use std::{
    net::TcpListener,
    process::{Child, Command},
    time::{Duration, Instant},
};

use serde_json::{json, Map, Value};
use strata_control_plane::registry::{apply, Command as RegistryCommand, Registry};
use strata_runtime::kubernetes::{
    crd::{crd_yaml, StatefulService},
    objects::{registry_patch, registry_spec},
};
use strata_settings::{camel_case, ServiceSettings};

const TOKEN: &str = "settings-test-admin-token";

/// Every setting given, as the REST API writes them.
fn sample() -> Map<String, Value> {
    match serde_json::to_value(ServiceSettings::sample()).unwrap() {
        Value::Object(settings) => settings,
        other => panic!("settings are an object, not {other}"),
    }
}

fn names(object: &Value) -> Vec<String> {
    object
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// The properties of a schema of the API's document, through `allOf` and `$ref`.
fn properties(document: &Value, schema: &Value) -> Vec<String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return properties(document, &document["components"]["schemas"][name]);
    }
    let mut found = names(&schema["properties"]);
    for part in schema["allOf"].as_array().into_iter().flatten() {
        found.extend(properties(document, part));
    }
    found
}

/// A bootstrapped one-node control plane, killed when dropped.
struct ControlPlane {
    child: Child,
    api: String,
    _dir: tempfile::TempDir,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start_control_plane(http: &reqwest::Client) -> ControlPlane {
    let dir = tempfile::tempdir().unwrap();
    let api_port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["control-plane", "--node-id", "1", "--bootstrap"])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--api-listen", &format!("127.0.0.1:{api_port}")])
        .arg("--data-dir")
        .arg(dir.path())
        .env("STRATA_CLUSTER_SECRET", "a-cluster-secret-for-the-settings-test")
        .env("STRATA_ADMIN_TOKEN", TOKEN)
        .spawn()
        .expect("start strata control-plane");
    let plane = ControlPlane {
        child,
        api: format!("http://127.0.0.1:{api_port}"),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cluster = http
            .get(format!("{}/api/v1/cluster", plane.api))
            .bearer_auth(TOKEN)
            .send()
            .await;
        if let Ok(answer) = cluster {
            if answer.json::<Value>().await.is_ok_and(|c| !c["leader"].is_null()) {
                return plane;
            }
        }
        assert!(Instant::now() < deadline, "the control plane never elected itself");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `strata deploy NAME --command true` with a flag for each of `settings`.
fn deploy(plane: &ControlPlane, name: &str, settings: &Map<String, Value>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command
        .args(["deploy", name, "--command", "true", "--api", &plane.api])
        .env("STRATA_TOKEN", TOKEN);
    for (setting, value) in settings {
        let value = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
        command.arg(format!("--{}", setting.replace('_', "-"))).arg(value);
    }
    let output = command.output().expect("run strata deploy");
    assert!(
        output.status.success(),
        "strata deploy {name} {settings:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn service(http: &reqwest::Client, plane: &ControlPlane, name: &str) -> Value {
    http.get(format!("{}/api/v1/services/{name}", plane.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET the service")
        .json()
        .await
        .expect("a service")
}

fn assert_every_setting(view: &Value, what: &str) {
    for (setting, value) in sample() {
        assert_eq!(view[&setting], value, "{what}: {setting} in {view}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_setting_is_in_the_api_and_the_flags_and_kept_by_the_registry() {
    let http = reqwest::Client::new();
    let plane = start_control_plane(&http).await;

    // --- the API's document: the settings schema, in what it takes and what it shows
    let document: Value = http
        .get(format!("{}/api/v1/openapi.json", plane.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let settings_schema = &document["components"]["schemas"]["ServiceSettings"];
    assert_eq!(names(&settings_schema["properties"]), ServiceSettings::FIELDS);
    for body in ["CreateService", "UpdateService", "ServiceView"] {
        let found = properties(&document, &document["components"]["schemas"][body]);
        for setting in ServiceSettings::FIELDS {
            assert!(found.iter().any(|f| f == setting), "{body} has no {setting}: {found:?}");
        }
    }

    // --- created with every flag: POST, and the view shows each as given
    deploy(&plane, "created", &sample());
    assert_every_setting(&service(&http, &plane, "created").await, "created");

    // --- created with only the shard count, then deployed again with every flag: PATCH
    let shard_count = Map::from_iter([("shard_count".to_owned(), sample()["shard_count"].clone())]);
    deploy(&plane, "updated", &shard_count);
    deploy(&plane, "updated", &sample());
    assert_every_setting(&service(&http, &plane, "updated").await, "updated");
}

#[test]
fn every_setting_is_in_the_resource_and_carried_by_the_operator() {
    // --- the CustomResourceDefinition's schema has each, in camelCase
    let crd: Value = serde_yaml::from_str(&crd_yaml()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for setting in ServiceSettings::FIELDS {
        let property = &spec[camel_case(setting)];
        assert!(
            property.is_object(),
            "the resource has no {}: {spec}",
            camel_case(setting)
        );
        assert!(property["description"].is_string(), "{setting} is not described");
        // Kubernetes takes only structural schemas: a type on every property.
        assert!(
            property["type"].is_string(),
            "{setting} has no type of its own: {property}"
        );
    }

    // --- a resource with each is registered with each, and an update carries each
    let given: Map<String, Value> = sample()
        .into_iter()
        .map(|(name, value)| (camel_case(&name), value))
        .collect();
    let mut spec = json!({"image": "cart:1", "storeSecret": {"name": "cart-store"}});
    spec.as_object_mut().unwrap().extend(given);
    let resource: StatefulService = serde_json::from_value(json!({
        "apiVersion": "strata.dev/v1alpha1",
        "kind": "StatefulService",
        "metadata": {"name": "cart", "namespace": "default"},
        "spec": spec,
    }))
    .unwrap();
    let registered = registry_spec(&resource).expect("a valid resource");
    assert_eq!(registered.settings, ServiceSettings::sample());
    let mut registry = Registry::default();
    let created = apply(&mut registry, RegistryCommand::CreateService(registered.clone()), 1);
    assert!(created.response.is_ok(), "{:?}", created.response);
    assert_eq!(registry.services["cart"].settings(), ServiceSettings::sample());

    // --- an update from a resource that left every setting out: all back to defaults
    let bare: StatefulService = serde_json::from_value(json!({
        "apiVersion": "strata.dev/v1alpha1",
        "kind": "StatefulService",
        "metadata": {"name": "cart", "namespace": "default"},
        "spec": {"image": "cart:1", "storeSecret": {"name": "cart-store"}, "shardCount": 16},
    }))
    .unwrap();
    let patch = registry_patch(&registry_spec(&bare).unwrap(), None);
    let updated = apply(
        &mut registry,
        RegistryCommand::UpdateService {
            name: "cart".into(),
            patch,
        },
        2,
    );
    assert!(updated.response.is_ok(), "{:?}", updated.response);
    let defaults = ServiceSettings {
        shard_count: Some(16),
        ..ServiceSettings::default()
    }
    .with_defaults();
    assert_eq!(registry.services["cart"].settings(), defaults);
}
