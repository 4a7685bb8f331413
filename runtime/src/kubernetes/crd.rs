//! The `StatefulService` custom resource: what a user applies to run a function on
//! Kubernetes (image, the service's settings, store secret), and the status the
//! operator reports back. The settings are `strata-settings`' one type in camelCase,
//! so the resource has every setting the REST API has. `strata crd` prints the
//! definition derived from these types; `deploy/crd/statefulservice.yaml` commits it.

use k8s_openapi::{
    api::core::v1::{EnvVar, LocalObjectReference, ResourceRequirements},
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use strata_settings::KubernetesSettings;

/// The API group of Strata's resources.
pub const GROUP: &str = "strata.dev";
/// The port the function listens on unless the spec says otherwise (CloudState's).
pub const DEFAULT_FUNCTION_PORT: u16 = 8080;
/// The key of the store secret that holds the store's URL unless the spec names another.
pub const DEFAULT_STORE_SECRET_KEY: &str = "url";

/// A stateful function: its container image, how it scales, and where its state lives.
/// The operator registers it with the control plane and runs it as a Deployment whose
/// pods carry the function and an injected Strata sidecar.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "strata.dev",
    version = "v1alpha1",
    kind = "StatefulService",
    plural = "statefulservices",
    shortname = "stsvc",
    namespaced,
    status = "StatefulServiceStatus",
    printcolumn = r#"{"name": "Image", "type": "string", "jsonPath": ".spec.image"}"#,
    printcolumn = r#"{"name": "Serving", "type": "integer", "jsonPath": ".status.servingRevision"}"#,
    printcolumn = r#"{"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"}"#,
    printcolumn = r#"{"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct StatefulServiceSpec {
    /// The function's container image (required).
    #[serde(default)]
    pub image: String,
    /// Overrides the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment of the function container (it always gets `HOST` and `PORT`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// CPU and memory of the function container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// CPU and memory of the injected Strata sidecar (default: requests 50m CPU and
    /// 64Mi memory, a 256Mi memory limit), so a ResourceQuota can admit its pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_resources: Option<ResourceRequirements>,
    /// Secrets (in the resource's namespace) to pull the function's image with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// The service account the function's pods run as (default: the namespace's
    /// `default`). Its token is not mounted unless the account asks for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// The port the function's gRPC server listens on (default 8080), given to it
    /// as `PORT` and to the sidecar as `USER_FUNCTION_PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Deploys a change of what runs (the image or the pod template) as a canary:
    /// its revision serves this share of the entities (1 to 99, by shard, so an
    /// entity answers from one revision on every call) beside the serving one,
    /// until `strata promote` or `strata rollback` (or the analysis) ends it.
    /// Unset: a change rolls out to every entity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<u32>,
    /// With `traffic`: the canary's highest error rate, a fraction ("0.05") or a
    /// percentage ("5%"), above which (and above the serving revision's) the
    /// control plane rolls it back on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_max_error_rate: Option<String>,
    /// The calls the canary must answer in the window before it is judged (20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_min_calls: Option<u32>,
    /// The window the canary is judged over, e.g. "60s" (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_window: Option<String>,
    /// Also judge latency: roll the canary back when its p99 over the window is
    /// above this many times the serving revision's (e.g. 1.5) and at least 5 ms
    /// slower.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_max_p99_ratio: Option<f64>,
    /// How it scales, keeps its last instance, spreads its entities and waits to
    /// wake: the REST API's settings, in camelCase (`minScale`, `holdTimeout`, ...).
    #[serde(flatten)]
    pub settings: KubernetesSettings,
    /// The Secret (in the resource's namespace) holding the store's URL, e.g.
    /// `postgres://...` (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_secret: Option<StoreSecret>,
}

/// Where the store's URL is: a key of a Secret.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreSecret {
    pub name: String,
    /// The key holding the URL (default `url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl StoreSecret {
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or(DEFAULT_STORE_SECRET_KEY)
    }
}

/// What the operator last saw and did.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatefulServiceStatus {
    /// `Ready`, `ScaledToZero` and `Failing`, each with a reason (`Failing`'s:
    /// `InvalidSpec`, `UnknownStoreSecret`, `ResourceNotOwned`,
    /// `OutsideOperatorNamespace`, `InstanceFailing`, `RevisionUnavailable`,
    /// `ReplicaFailure`, `ProgressDeadlineExceeded`, `Unschedulable`).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Instances the autoscaler wants.
    #[serde(default)]
    pub desired_replicas: u32,
    /// Instances that finished discovery and serve.
    #[serde(default)]
    pub ready_replicas: u32,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The revision that serves (0 until the service is registered). A rollback or
    /// an automatic canary rollback makes it differ from `latestRevision`.
    #[serde(default)]
    pub serving_revision: u64,
    /// The newest revision: the one this resource's spec describes.
    #[serde(default)]
    pub latest_revision: u64,
    /// Each revision that has a Deployment, oldest first, with its pods and its
    /// share of the entities: during a rollout the shards move from one to the
    /// next; a revision kept for a rollback has no pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<RevisionStatus>,
}

/// One revision as the status shows it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionStatus {
    pub revision: u64,
    /// Its Deployment, e.g. `cart-r2`.
    pub deployment: String,
    /// The function's image it runs.
    #[serde(default)]
    pub image: String,
    /// Pods its Deployment should have.
    #[serde(default)]
    pub replicas: u32,
    /// Its instances that finished discovery and serve.
    #[serde(default)]
    pub ready_replicas: u32,
    /// Shards (groups of entities) its instances own.
    #[serde(default)]
    pub shards: u32,
    /// Its share of the entities, in percent (of the shards).
    #[serde(default)]
    pub percent: u32,
}

/// The CustomResourceDefinition as YAML, as `strata crd` prints it.
pub fn crd_yaml() -> String {
    let crd = StatefulService::crd();
    let yaml = serde_yaml::to_string(&crd).unwrap_or_else(|error| panic!("the CRD always serializes: {error}"));
    format!("# Generated by `strata crd`; do not edit. A test checks that they agree.\n{yaml}")
}
