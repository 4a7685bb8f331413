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
    /// `OutsideOperatorNamespace`, `InstanceFailing`, `ReplicaFailure`,
    /// `ProgressDeadlineExceeded`, `Unschedulable`).
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
}

/// The CustomResourceDefinition as YAML, as `strata crd` prints it.
pub fn crd_yaml() -> String {
    let crd = StatefulService::crd();
    let yaml = serde_yaml::to_string(&crd).unwrap_or_else(|error| panic!("the CRD always serializes: {error}"));
    format!("# Generated by `strata crd`; do not edit. A test checks that they agree.\n{yaml}")
}
