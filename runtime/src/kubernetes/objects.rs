//! What the operator asks Kubernetes for, as pure functions of a `StatefulService`
//! and the operator's settings: the checked spec, the Secret holding the service's
//! sidecar credential, the Deployment of one revision with the Strata sidecar
//! injected (each revision has a Deployment of its own, as a Knative revision has),
//! the headless Service over all of them, and the status with its conditions.

use std::time::Duration;

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Secret, Service},
    },
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    chrono::{DateTime, Utc},
};
use kube::{Resource, ResourceExt};
use serde_json::json;
use strata_control_plane::auth::ClusterSecret;
use strata_control_plane::registry::{
    validate_name, CanaryAnalysis, CanarySpec, RevisionSpec, ServicePatch, ServiceSpec,
};

use super::crd::{RevisionStatus, StatefulService, StatefulServiceSpec, StatefulServiceStatus, DEFAULT_FUNCTION_PORT};
use super::names::check_name;

/// The label that ties pods, Deployments and Services to their service.
pub const SERVICE_LABEL: &str = "strata.dev/service";
/// The label that ties a Deployment and its pods to the revision they run.
pub const REVISION_LABEL: &str = "strata.dev/revision";
/// The sidecar's port: the function's API over gRPC, gRPC-web and HTTP+JSON.
pub const SIDECAR_PORT: u16 = 9000;
/// The sidecar's admin port, named [`ADMIN_PORT_NAME`]: `/metrics` (what the
/// autoscaler scrapes, at the address the sidecar registers), `/healthz` and
/// `/readyz` (what the probes ask).
pub const ADMIN_PORT: u16 = 9090;
pub const ADMIN_PORT_NAME: &str = "admin";
pub const SIDECAR_CONTAINER: &str = "strata-sidecar";
pub const FUNCTION_CONTAINER: &str = "function";
/// How long the function keeps running after its pod is told to stop, so the sidecar
/// can hand its shards back and finish the commands in flight first.
pub const FUNCTION_DRAIN_SECONDS: i64 = 15;
/// Time a pod gets to stop before it is killed: the drain and a margin.
pub const TERMINATION_GRACE_SECONDS: i64 = 30;
/// The sidecar's resources unless the spec says otherwise ([`default_sidecar_resources`]).
pub const DEFAULT_SIDECAR_CPU_REQUEST: &str = "50m";
pub const DEFAULT_SIDECAR_MEMORY_REQUEST: &str = "64Mi";
pub const DEFAULT_SIDECAR_MEMORY_LIMIT: &str = "256Mi";

/// The operator's own settings, the same for every service.
#[derive(Debug, Clone)]
pub struct OperatorSettings {
    /// The namespace whose `StatefulService`s this operator runs (and where it creates things).
    pub namespace: String,
    /// The `strata` image, run as `strata proxy` beside each function.
    pub sidecar_image: String,
    /// Where sidecars reach the control plane's data-plane API, e.g.
    /// `http://strata-control-plane:9200`.
    pub control_plane_url: String,
    /// Mints the credential each service's sidecars present to the control plane:
    /// bound to the service (a pod's name is not known when its Deployment is
    /// written), never the admin token.
    pub cluster_secret: ClusterSecret,
    /// An instance not ready this long after it started is replaced.
    pub ready_timeout: Duration,
}

/// Why a spec cannot be run, in the words the `Failing` condition shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// A CamelCase reason, e.g. `InvalidSpec`, `UnknownStoreSecret`.
    pub reason: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn spec(message: impl Into<String>) -> Self {
        Invalid {
            reason: "InvalidSpec",
            message: message.into(),
        }
    }
}

/// Checks a spec the way the registry would, and says what to register.
pub fn registry_spec(service: &StatefulService) -> Result<ServiceSpec, Invalid> {
    let name = service.name_any();
    let spec = &service.spec;
    check_name(&name)?;
    validate_name(&name).map_err(|error| Invalid::spec(format!("metadata.name: {error}")))?;
    if spec.image.trim().is_empty() {
        return Err(Invalid::spec(
            "spec.image is missing: name the function's container image",
        ));
    }
    if let Some(unreadable) = spec.settings.unreadable.first() {
        let name = &unreadable.name;
        return Err(Invalid::spec(match unreadable.value.as_str() {
            Some(text) if text.trim_start().starts_with('-') => {
                format!("spec.{name} must not be negative (got {text:?})")
            }
            _ => format!("spec.{name}: {}", unreadable.reason),
        }));
    }
    let settings = spec.settings.settings.clone();
    settings
        .clone()
        .with_defaults()
        .validate()
        .map_err(|error| Invalid::spec(format!("spec: {error}")))?;
    if matches!(spec.port, Some(0 | SIDECAR_PORT | ADMIN_PORT)) {
        return Err(Invalid::spec(format!(
            "spec.port must be between 1 and 65535 and not {SIDECAR_PORT} or {ADMIN_PORT}, the sidecar's"
        )));
    }
    registry_canary(service)?;
    match &spec.store_secret {
        None => {
            return Err(Invalid::spec(
                "spec.storeSecret is missing: name the Secret that holds the store's URL",
            ))
        }
        Some(secret) if secret.name.trim().is_empty() => {
            return Err(Invalid::spec("spec.storeSecret.name is empty"));
        }
        Some(_) => {}
    }
    Ok(ServiceSpec {
        name,
        runs: RevisionSpec {
            template: Some(template_digest(spec)),
            ..RevisionSpec::image(spec.image.clone())
        },
        settings,
    })
}

/// A digest of what the spec says about the function's pod besides its image and
/// the service's settings: a change of it is a new revision. The store Secret is
/// left out: it says where the state lives, not what runs, and every revision of a
/// service shares one store.
pub fn template_digest(spec: &StatefulServiceSpec) -> String {
    let pod = json!({
        "command": spec.command,
        "args": spec.args,
        "env": spec.env,
        "resources": spec.resources,
        "sidecarResources": spec.sidecar_resources,
        "imagePullSecrets": spec.image_pull_secrets,
        "serviceAccountName": spec.service_account_name,
        "port": spec.port,
    });
    super::render::short_digest(&pod)
}

/// The name of the Deployment that runs `revision` of `service`, e.g. `cart-r2`.
/// Unique among a namespace's services: a service's name never ends in `-r` and a
/// number of another's (the number has no `-`).
pub fn deployment_name(service: &str, revision: u64) -> String {
    format!("{service}-r{revision}")
}

/// The update that brings a registered service to `spec`: every setting, those the
/// resource leaves out back to their defaults, since the resource is the whole truth
/// (the registry ignores a patch that changes nothing), and what runs, as a canary
/// when the resource asks for one (`traffic`).
pub fn registry_patch(spec: &ServiceSpec, canary: Option<CanarySpec>) -> ServicePatch {
    ServicePatch {
        runs: spec.runs.clone(),
        settings: spec.settings.clone(),
        replace_settings: true,
        canary,
    }
}

/// The canary the resource asks a change of what runs to be deployed as, if any.
pub fn registry_canary(service: &StatefulService) -> Result<Option<CanarySpec>, Invalid> {
    let spec = &service.spec;
    let analysis = CanaryAnalysis::from_fields(
        spec.canary_max_error_rate.as_deref(),
        spec.canary_min_calls,
        spec.canary_window.as_deref(),
        spec.canary_max_p99_ratio,
    )
    .map_err(|error| Invalid::spec(format!("spec: {error}")))?;
    match spec.traffic {
        Some(percent) if (1..=99).contains(&percent) => Ok(Some(CanarySpec { percent, analysis })),
        Some(percent) => Err(Invalid::spec(format!(
            "spec.traffic is the canary's share of the entities, 1 to 99, not {percent}"
        ))),
        None if analysis.is_some() => Err(Invalid::spec(
            "spec.canaryMaxErrorRate goes with spec.traffic (a change deployed as a canary), which is not set",
        )),
        None => Ok(None),
    }
}

pub(crate) fn labels(name: &str) -> serde_json::Value {
    json!({
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": "function",
        "app.kubernetes.io/managed-by": "strata",
        SERVICE_LABEL: name,
    })
}

/// The metadata of an object made for `service`: in the operator's namespace,
/// labelled as the service's, and controlled by the resource (so it goes with it).
pub(crate) fn metadata(name: &str, service: &StatefulService, settings: &OperatorSettings) -> serde_json::Value {
    let mut metadata = json!({
        "name": name,
        "namespace": settings.namespace,
        "labels": labels(&service.name_any()),
    });
    // A resource read from a file (`strata render`) has no uid to be owned by.
    if let Some(owner) = service.controller_owner_ref(&()) {
        metadata["ownerReferences"] = json!([owner]);
    }
    metadata
}

/// The Deployment that runs `revision` of a service (the one its spec describes):
/// the function and the Strata sidecar in each pod, labelled with the revision,
/// whose sidecar says it to the control plane (`STRATA_REVISION`). Its replica
/// count is left out: the scale subresource owns it, so applying a changed spec
/// never undoes the autoscaler.
pub fn deployment(service: &StatefulService, settings: &OperatorSettings, revision: u64) -> Deployment {
    let name = service.name_any();
    let spec = &service.spec;
    let port = spec.port.unwrap_or(DEFAULT_FUNCTION_PORT);
    let store = spec.store_secret.clone().unwrap_or_default();
    let mut function_env = vec![
        json!({"name": "HOST", "value": "127.0.0.1"}),
        json!({"name": "PORT", "value": port.to_string()}),
    ];
    function_env.extend(spec.env.iter().map(|var| json!(var)));
    let mut function = json!({
        "name": FUNCTION_CONTAINER,
        "image": spec.image,
        "env": function_env,
        // The sidecar drains first (it gets SIGTERM at once); the function stops after.
        "lifecycle": {"preStop": {"sleep": {"seconds": FUNCTION_DRAIN_SECONDS}}},
    });
    if !spec.command.is_empty() {
        function["command"] = json!(spec.command);
    }
    if !spec.args.is_empty() {
        function["args"] = json!(spec.args);
    }
    if let Some(resources) = &spec.resources {
        function["resources"] = json!(resources);
    }
    // The admin listener serves from the sidecar's first moment: `/healthz` while
    // the process serves, `/readyz` once the store is open, the function
    // discovered and the instance registered, and no longer while it drains.
    let probe = |path: &str, period: u32, failures: u32, timeout: u32| {
        json!({
            "httpGet": {"path": path, "port": ADMIN_PORT_NAME},
            "periodSeconds": period,
            "failureThreshold": failures,
            "timeoutSeconds": timeout,
        })
    };
    // The startup probe waits for readiness, so it covers discovery: for the ready
    // timeout and 20 s more, longer than the sidecar's own discovery timeout (it
    // exits saying why first), and the plan replaces a pod not ready within the
    // ready timeout before the kubelet would restart its sidecar.
    let discovery_timeout = settings.ready_timeout.as_secs() + 10;
    let startup_checks = (discovery_timeout / 2 + 5).max(1) as u32;
    let sidecar = json!({
        "name": SIDECAR_CONTAINER,
        "image": settings.sidecar_image,
        "args": ["proxy"],
        "ports": [
            {"name": "http", "containerPort": SIDECAR_PORT},
            {"name": ADMIN_PORT_NAME, "containerPort": ADMIN_PORT},
        ],
        "env": [
            {"name": "USER_FUNCTION_HOST", "value": "127.0.0.1"},
            {"name": "USER_FUNCTION_PORT", "value": port.to_string()},
            {"name": "HTTP_HOST", "value": "0.0.0.0"},
            {"name": "HTTP_PORT", "value": SIDECAR_PORT.to_string()},
            {"name": "STRATA_ADMIN_PORT", "value": ADMIN_PORT.to_string()},
            {"name": "STRATA_STORE", "valueFrom": {"secretKeyRef": {"name": store.name, "key": store.key()}}},
            {"name": "STRATA_CONTROL_PLANE", "value": settings.control_plane_url},
            {"name": "STRATA_TOKEN", "valueFrom": {"secretKeyRef": {"name": credential_secret_name(&name), "key": CREDENTIAL_KEY}}},
            {"name": "STRATA_SERVICE", "value": name},
            {"name": "STRATA_REVISION", "value": revision.to_string()},
            {"name": "STRATA_INSTANCE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "STRATA_ADVERTISE", "value": format!("$(POD_IP):{SIDECAR_PORT}")},
            {"name": "STRATA_DISCOVERY_TIMEOUT", "value": format!("{discovery_timeout}s")},
        ],
        "startupProbe": probe("/readyz", 2, startup_checks, 1),
        "readinessProbe": probe("/readyz", 2, 2, 1),
        "livenessProbe": probe("/healthz", 10, 3, 3),
        "securityContext": {
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": spec.sidecar_resources.as_ref().map_or_else(default_sidecar_resources, |r| json!(r)),
    });
    let mut pod = json!({
        "enableServiceLinks": false,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "containers": [function, sidecar],
    });
    match &spec.service_account_name {
        // The account's own automount setting decides whether its token is mounted.
        Some(account) => pod["serviceAccountName"] = json!(account),
        // Functions get no Kubernetes credentials unless given an account.
        None => pod["automountServiceAccountToken"] = json!(false),
    }
    if !spec.image_pull_secrets.is_empty() {
        pod["imagePullSecrets"] = json!(spec.image_pull_secrets);
    }
    let mut metadata = metadata(&deployment_name(&name, revision), service, settings);
    let mut labels = labels(&name);
    labels[REVISION_LABEL] = json!(revision.to_string());
    metadata["labels"] = labels.clone();
    let object = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": {SERVICE_LABEL: name, REVISION_LABEL: revision.to_string()}},
            "template": {
                "metadata": {"labels": labels},
                "spec": pod,
            },
        },
    });
    serde_json::from_value(object).unwrap_or_else(|error| panic!("the Deployment is well formed: {error}"))
}

/// The sidecar's CPU and memory unless the spec sets `sidecarResources`: enough for
/// a sidecar at rest, so a namespace with a ResourceQuota admits the pod.
pub fn default_sidecar_resources() -> serde_json::Value {
    json!({
        "requests": {"cpu": DEFAULT_SIDECAR_CPU_REQUEST, "memory": DEFAULT_SIDECAR_MEMORY_REQUEST},
        "limits": {"memory": DEFAULT_SIDECAR_MEMORY_LIMIT},
    })
}

/// The name of the Secret that holds a service's sidecar credential.
pub fn credential_secret_name(service: &str) -> String {
    format!("{service}-strata-credential")
}

/// The key of the credential in that Secret.
pub const CREDENTIAL_KEY: &str = "token";

/// The Secret holding the credential a service's sidecars present to the control
/// plane (bound to the service, see `OperatorSettings::cluster_secret`). The pod
/// template refers to it, so the credential is readable by those who may read
/// Secrets, not by everyone who may read Deployments; it goes with the resource.
pub fn credential_secret(service: &StatefulService, settings: &OperatorSettings) -> Secret {
    let name = service.name_any();
    let object = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(&credential_secret_name(&name), service, settings),
        "type": "Opaque",
        "stringData": {CREDENTIAL_KEY: settings.cluster_secret.instance_credential(&name, None)},
    });
    serde_json::from_value(object).unwrap_or_else(|error| panic!("the Secret is well formed: {error}"))
}

/// A headless Service over the service's ready sidecars: stable DNS for its pods.
/// Gateways route to instances by the addresses they register, not through it.
pub fn service(service: &StatefulService, settings: &OperatorSettings) -> Service {
    let name = service.name_any();
    let object = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(&name, service, settings),
        "spec": {
            "clusterIP": "None",
            "selector": {SERVICE_LABEL: name},
            "ports": [{"name": "http", "port": SIDECAR_PORT, "targetPort": "http"}],
        },
    });
    serde_json::from_value(object).unwrap_or_else(|error| panic!("the Service is well formed: {error}"))
}

/// What the status reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub desired: u32,
    pub ready: u32,
    /// Why the service cannot run (or keeps failing), if it cannot.
    pub failing: Option<Invalid>,
    /// The revisions as seen this round; `None` (a spec refused before anything
    /// ran) keeps what the status said.
    pub revisions: Option<Revisions>,
}

/// The serving and newest revision, and each revision's Deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revisions {
    pub serving: u64,
    pub latest: u64,
    pub each: Vec<RevisionStatus>,
}

/// The status for `observation`; a condition keeps its transition time while its
/// status stays the same.
pub fn status(service: &StatefulService, observation: &Observation, now: DateTime<Utc>) -> StatefulServiceStatus {
    let generation = service.meta().generation;
    let previous = service
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let Observation { desired, ready, .. } = *observation;
    let (ready_status, ready_reason, ready_message) = match (desired, ready) {
        (0, 0) => ("False", "ScaledToZero", "no instance is wanted".to_string()),
        (_, 0) => ("False", "Pending", format!("0 of {desired} instances ready")),
        (desired, ready) if ready < desired => ("False", "Scaling", format!("{ready} of {desired} instances ready")),
        _ => ("True", "Ready", format!("{ready} of {desired} instances ready")),
    };
    let zero = desired == 0 && ready == 0;
    let (failing_status, failing_reason, failing_message) = match &observation.failing {
        Some(invalid) => ("True", invalid.reason, invalid.message.clone()),
        None => ("False", "Running", "no failure".to_string()),
    };
    let conditions = [
        ("Ready", ready_status, ready_reason, ready_message),
        (
            "ScaledToZero",
            if zero { "True" } else { "False" },
            if zero { "NoTraffic" } else { "Running" },
            if zero {
                "scaled to zero; the first request starts an instance".to_string()
            } else {
                format!("{desired} instances wanted")
            },
        ),
        ("Failing", failing_status, failing_reason, failing_message),
    ]
    .into_iter()
    .map(|(kind, status, reason, message)| {
        let unchanged = previous.iter().find(|c| c.type_ == kind && c.status == status);
        Condition {
            type_: kind.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: unchanged.map_or(Time(now), |c| c.last_transition_time.clone()),
        }
    })
    .collect();
    let revisions = observation.revisions.clone().unwrap_or_else(|| {
        let before = service.status.clone().unwrap_or_default();
        Revisions {
            serving: before.serving_revision,
            latest: before.latest_revision,
            each: before.revisions,
        }
    });
    StatefulServiceStatus {
        conditions,
        desired_replicas: desired,
        ready_replicas: ready,
        observed_generation: generation,
        serving_revision: revisions.serving,
        latest_revision: revisions.latest,
        revisions: revisions.each,
    }
}
