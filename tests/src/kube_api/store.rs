//! The fake API server's state: objects by resource, namespace and name, each with
//! a uid, a resource version from one counter, a generation that moves with its
//! spec, and its field managers; the history of every change for watches; and the
//! controllers a cluster runs behind the API that the operator's lifecycle depends
//! on: garbage collection by owner reference, finalizers and deletion timestamps,
//! namespace and CustomResourceDefinition deletion, and Deployments that make pods.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use super::apply::{record_update, server_side_apply, Managers};

/// A kind the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// `.status` is written only through `/status` (and ignored elsewhere).
    pub status_subresource: bool,
}

impl Kind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

const fn kind(group: &'static str, version: &'static str, plural: &'static str, kind: &'static str) -> Kind {
    Kind {
        group,
        version,
        plural,
        kind,
        namespaced: true,
        status_subresource: false,
    }
}

pub const NAMESPACES: Kind = Kind {
    namespaced: false,
    ..kind("", "v1", "namespaces", "Namespace")
};
pub const PODS: Kind = Kind {
    status_subresource: true,
    ..kind("", "v1", "pods", "Pod")
};
pub const SECRETS: Kind = kind("", "v1", "secrets", "Secret");
pub const SERVICES: Kind = kind("", "v1", "services", "Service");
pub const DEPLOYMENTS: Kind = Kind {
    status_subresource: true,
    ..kind("apps", "v1", "deployments", "Deployment")
};
pub const NETWORK_POLICIES: Kind = kind("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy");
pub const EVENTS: Kind = kind("events.k8s.io", "v1", "events", "Event");
pub const STATEFUL_SERVICES: Kind = Kind {
    status_subresource: true,
    ..kind("strata.dev", "v1alpha1", "statefulservices", "StatefulService")
};
pub const CRDS: Kind = Kind {
    namespaced: false,
    ..kind(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
    )
};
pub const KINDS: &[Kind] = &[
    NAMESPACES,
    PODS,
    SECRETS,
    SERVICES,
    DEPLOYMENTS,
    NETWORK_POLICIES,
    EVENTS,
    STATEFUL_SERVICES,
    CRDS,
];

/// The CRD whose presence serves `StatefulService`s.
pub const STATEFUL_SERVICE_CRD: &str = "statefulservices.strata.dev";
const CRD_CLEANUP: &str = "customresourcecleanup.apiextensions.k8s.io";
const NAMESPACE_FINALIZER: &str = "kubernetes";

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub plural: &'static str,
    pub namespace: String,
    pub name: String,
}

/// One change, as a watch sends it.
#[derive(Debug, Clone)]
pub struct Change {
    pub resource_version: u64,
    pub key: Key,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    pub object: Value,
}

/// A refusal, as the API server's `Status` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            code,
            reason,
            message: message.into(),
        }
    }

    fn not_found(kind: &Kind, name: &str) -> Self {
        Refusal::new(404, "NotFound", format!("{} {name:?} not found", kind.plural))
    }
}

struct Stored {
    object: Value,
    managers: Managers,
}

/// Everything the fake holds.
#[derive(Default)]
pub struct State {
    resource_version: u64,
    uids: u64,
    objects: BTreeMap<Key, Stored>,
    pub history: Vec<Change>,
    /// While set, Deployments cannot create pods and say so (a ResourceQuota refusing).
    refuse_pods: Option<String>,
    settling: bool,
    /// What each pod's containers wrote, as the kubelet keeps it: (time, text)
    /// by namespace, pod and container.
    pod_logs: BTreeMap<(String, String, String), Vec<(String, String)>>,
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl State {
    /// From now on Deployments cannot create pods, and say `message`; `None` lifts
    /// it, and they make what they lack at once (as the ReplicaSet's retry would).
    pub fn refuse_pods(&mut self, message: Option<String>) {
        self.refuse_pods = message;
        self.settle();
    }

    /// Records a line a pod's container wrote at `at` (RFC 3339 with
    /// nanoseconds, as the kubelet stamps it).
    pub fn write_pod_log(&mut self, namespace: &str, pod: &str, container: &str, at: &str, text: &str) {
        self.pod_logs
            .entry((namespace.to_owned(), pod.to_owned(), container.to_owned()))
            .or_default()
            .push((at.to_owned(), text.to_owned()));
    }

    /// The lines of one container of a pod, oldest first.
    pub fn pod_log(&self, namespace: &str, pod: &str, container: &str) -> &[(String, String)] {
        self.pod_logs
            .get(&(namespace.to_owned(), pod.to_owned(), container.to_owned()))
            .map_or(&[], Vec::as_slice)
    }

    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key).map(|stored| &stored.object)
    }

    /// The objects of `kind`, in one namespace or all.
    pub fn list(&self, kind: &Kind, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(key, _)| key.plural == kind.plural && namespace.is_none_or(|ns| key.namespace == ns))
            .map(|(_, stored)| stored.object.clone())
            .collect()
    }

    /// Whether requests for `kind` are served (custom kinds need their CRD).
    pub fn serves(&self, kind: &Kind) -> bool {
        kind.plural != STATEFUL_SERVICES.plural
            || self
                .get(&Key {
                    plural: CRDS.plural,
                    namespace: String::new(),
                    name: STATEFUL_SERVICE_CRD.into(),
                })
                .is_some()
    }

    fn record(&mut self, key: &Key, kind: &'static str, object: &Value) {
        self.history.push(Change {
            resource_version: self.resource_version,
            key: key.clone(),
            kind,
            object: object.clone(),
        });
    }

    fn next_version(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    /// Creates an object (server fields filled in), or refuses.
    pub fn create(&mut self, kind: &Kind, namespace: &str, mut object: Value, manager: &str) -> Result<Value, Refusal> {
        if kind.namespaced {
            self.check_namespace_open(namespace)?;
        }
        if object["metadata"]["name"].as_str().is_none_or(str::is_empty) {
            let prefix = object["metadata"]["generateName"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if prefix.is_empty() {
                return Err(Refusal::new(422, "Invalid", "metadata.name: Required value"));
            }
            object["metadata"]["name"] = json!(format!("{prefix}{:05x}", self.uids + 1));
        }
        let key = Key {
            plural: kind.plural,
            namespace: namespace.to_owned(),
            name: object["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
        };
        if self.objects.contains_key(&key) {
            return Err(Refusal::new(
                409,
                "AlreadyExists",
                format!("{} {:?} already exists", kind.plural, key.name),
            ));
        }
        self.uids += 1;
        let version = self.next_version();
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind);
        let metadata = &mut object["metadata"];
        if kind.namespaced {
            metadata["namespace"] = json!(namespace);
        }
        metadata["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.uids));
        metadata["resourceVersion"] = json!(version.to_string());
        metadata["creationTimestamp"] = json!(now());
        metadata["generation"] = json!(1);
        if kind.plural == NAMESPACES.plural {
            object["spec"] = json!({"finalizers": [NAMESPACE_FINALIZER]});
            object["status"] = json!({"phase": "Active"});
        }
        if kind.plural == CRDS.plural {
            object["metadata"]["finalizers"] = json!([CRD_CLEANUP]);
        }
        // Defaulting, as the API server does.
        if kind.plural == DEPLOYMENTS.plural && object["spec"]["replicas"].is_null() {
            object["spec"]["replicas"] = json!(1);
        }
        let mut managers = Managers::new();
        record_update(&mut managers, manager, &Value::Null, &object);
        self.record(&key, "ADDED", &object);
        self.objects.insert(
            key,
            Stored {
                object: object.clone(),
                managers,
            },
        );
        self.settle();
        Ok(self.get_by(kind, namespace, &object).unwrap_or(object))
    }

    fn get_by(&self, kind: &Kind, namespace: &str, object: &Value) -> Option<Value> {
        let key = Key {
            plural: kind.plural,
            namespace: namespace.to_owned(),
            name: object["metadata"]["name"].as_str()?.to_owned(),
        };
        self.get(&key).cloned()
    }

    fn check_namespace_open(&self, namespace: &str) -> Result<(), Refusal> {
        let key = Key {
            plural: NAMESPACES.plural,
            namespace: String::new(),
            name: namespace.to_owned(),
        };
        match self.get(&key) {
            None => Err(Refusal::new(
                404,
                "NotFound",
                format!("namespaces {namespace:?} not found"),
            )),
            Some(ns) if !ns["metadata"]["deletionTimestamp"].is_null() => Err(Refusal::new(
                403,
                "Forbidden",
                format!("unable to create new content in namespace {namespace} because it is being terminated"),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Changes an object with `change` (given the current object, returns the new
    /// one), keeping server fields, bumping the resource version (and the generation
    /// when more than metadata and status changed), or creates it when `create_with`
    /// allows (server-side apply). `subresource` is `""`, `status` or `scale`.
    pub fn update(
        &mut self,
        kind: &Kind,
        key: &Key,
        subresource: &str,
        manager: &str,
        change: impl FnOnce(&Value, &mut Managers) -> Result<Value, Refusal>,
    ) -> Result<Value, Refusal> {
        let Some(stored) = self.objects.get(key) else {
            return Err(Refusal::not_found(kind, &key.name));
        };
        let before = stored.object.clone();
        let mut managers = stored.managers.clone();
        let mut after = change(&before, &mut managers)?;
        // Server fields are the server's.
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
            "namespace",
            "name",
        ] {
            after["metadata"][field] = before["metadata"][field].clone();
        }
        after["apiVersion"] = before["apiVersion"].clone();
        after["kind"] = before["kind"].clone();
        if kind.status_subresource {
            match subresource {
                "status" => {
                    let status = after["status"].clone();
                    after = before.clone();
                    after["status"] = status;
                }
                _ => after["status"] = before["status"].clone(),
            }
        }
        let mut after = strip_nulls(after);
        if after == before {
            return Ok(before);
        }
        let spec_changed = {
            let strip = |object: &Value| {
                let mut object = object.clone();
                if let Some(fields) = object.as_object_mut() {
                    fields.remove("metadata");
                    fields.remove("status");
                }
                object
            };
            strip(&before) != strip(&after)
        };
        if spec_changed {
            let generation = before["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            after["metadata"]["generation"] = json!(generation);
        }
        let version = self.next_version();
        after["metadata"]["resourceVersion"] = json!(version.to_string());
        if subresource != "apply" {
            record_update(&mut managers, manager, &before, &after);
        }
        let stored = self.objects.get_mut(key).expect("looked up above");
        stored.object = after.clone();
        stored.managers = managers;
        self.record(key, "MODIFIED", &after);
        self.settle();
        Ok(self.get(key).cloned().unwrap_or(after))
    }

    /// Server-side apply: creates or updates `key` with the fields `manager` sends.
    pub fn apply(
        &mut self,
        kind: &Kind,
        key: &Key,
        manager: &str,
        applied: &Value,
        force: bool,
    ) -> Result<Value, Refusal> {
        let conflict = |conflicts: Vec<super::apply::Conflict>| {
            let fields: Vec<String> = conflicts
                .iter()
                .map(|c| format!("conflict with {:?}: {}", c.manager, c.path))
                .collect();
            Refusal::new(
                409,
                "Conflict",
                format!("Apply failed with {} conflicts: {}", fields.len(), fields.join(", ")),
            )
        };
        if !self.objects.contains_key(key) {
            let mut object = Value::Null;
            let mut managers = Managers::new();
            server_side_apply(&mut object, &mut managers, manager, applied, force).map_err(conflict)?;
            object["metadata"]["name"] = json!(key.name);
            let created = self.create(kind, &key.namespace, object, manager)?;
            self.objects.get_mut(key).expect("just created").managers = managers;
            return Ok(created);
        }
        self.update(kind, key, "apply", manager, |before, managers| {
            let mut after = before.clone();
            server_side_apply(&mut after, managers, manager, applied, force).map_err(conflict)?;
            Ok(after)
        })
    }

    /// The field managers of an object.
    pub fn managers(&self, key: &Key) -> Option<&Managers> {
        self.objects.get(key).map(|stored| &stored.managers)
    }

    /// Deletes an object: at once when it has no finalizer, else marks it.
    pub fn delete(&mut self, kind: &Kind, key: &Key) -> Result<Value, Refusal> {
        let Some(stored) = self.objects.get(key) else {
            return Err(Refusal::not_found(kind, &key.name));
        };
        let object = stored.object.clone();
        let finalizers = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
            || object["spec"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if !finalizers {
            self.remove(key);
            self.settle();
            return Ok(object);
        }
        if !object["metadata"]["deletionTimestamp"].is_null() {
            return Ok(object);
        }
        let version = self.next_version();
        let stored = self.objects.get_mut(key).expect("looked up above");
        stored.object["metadata"]["deletionTimestamp"] = json!(now());
        stored.object["metadata"]["resourceVersion"] = json!(version.to_string());
        if kind.plural == NAMESPACES.plural {
            stored.object["status"]["phase"] = json!("Terminating");
        }
        let object = stored.object.clone();
        self.record(key, "MODIFIED", &object);
        self.settle();
        Ok(self.get(key).cloned().unwrap_or(object))
    }

    fn remove(&mut self, key: &Key) {
        if let Some(stored) = self.objects.remove(key) {
            self.next_version();
            let mut object = stored.object;
            object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
            self.record(key, "DELETED", &object);
        }
    }

    /// Runs the cluster's controllers until nothing changes.
    fn settle(&mut self) {
        // Changes the controllers make settle in the outermost call's loop.
        if self.settling {
            return;
        }
        self.settling = true;
        loop {
            let version = self.resource_version;
            self.finish_deletions();
            self.collect_garbage();
            self.run_deployments();
            if self.resource_version == version {
                self.settling = false;
                return;
            }
        }
    }

    /// Objects marked for deletion whose finalizers are all gone go; namespaces and
    /// the CRD being deleted delete their content and release their own finalizer
    /// once it is gone.
    fn finish_deletions(&mut self) {
        let marked: Vec<(Key, Value)> = self
            .objects
            .iter()
            .filter(|(_, stored)| !stored.object["metadata"]["deletionTimestamp"].is_null())
            .map(|(key, stored)| (key.clone(), stored.object.clone()))
            .collect();
        for (key, object) in marked {
            if key.plural == NAMESPACES.plural {
                let content: Vec<(Kind, Key)> = self
                    .objects
                    .keys()
                    .filter(|k| k.namespace == key.name && k.plural != NAMESPACES.plural)
                    .map(|k| (kind_of(k.plural), k.clone()))
                    .collect();
                if content.is_empty() {
                    self.remove(&key);
                } else {
                    for (kind, content) in content {
                        let _ = self.delete(&kind, &content);
                    }
                }
                continue;
            }
            if key.plural == CRDS.plural && object["metadata"]["name"] == STATEFUL_SERVICE_CRD {
                let resources: Vec<Key> = self
                    .objects
                    .keys()
                    .filter(|k| k.plural == STATEFUL_SERVICES.plural)
                    .cloned()
                    .collect();
                if resources.is_empty() {
                    self.remove(&key);
                } else {
                    for resource in resources {
                        let _ = self.delete(&STATEFUL_SERVICES, &resource);
                    }
                }
                continue;
            }
            let finalizers = object["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty());
            if !finalizers {
                self.remove(&key);
            }
        }
    }

    /// Background cascading deletion: an object all of whose owners are gone goes.
    fn collect_garbage(&mut self) {
        let uids: BTreeSet<String> = self
            .objects
            .values()
            .filter_map(|stored| stored.object["metadata"]["uid"].as_str().map(str::to_owned))
            .collect();
        let orphans: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, stored)| {
                let owners = stored.object["metadata"]["ownerReferences"].as_array();
                owners.is_some_and(|owners| {
                    !owners.is_empty()
                        && owners
                            .iter()
                            .all(|owner| !uids.contains(owner["uid"].as_str().unwrap_or_default()))
                })
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in orphans {
            let _ = self.delete(&kind_of(key.plural), &key);
        }
    }

    /// What the Deployment and ReplicaSet controllers do, in short: each Deployment
    /// has `spec.replicas` pods of its current template (pods of an older template
    /// are replaced at once), the cheapest to delete (`pod-deletion-cost`) going first
    /// on scale-down, then the youngest; its status counts them.
    fn run_deployments(&mut self) {
        let deployments: Vec<(Key, Value)> = self
            .objects
            .iter()
            .filter(|(key, stored)| {
                key.plural == DEPLOYMENTS.plural && stored.object["metadata"]["deletionTimestamp"].is_null()
            })
            .map(|(key, stored)| (key.clone(), stored.object.clone()))
            .collect();
        for (key, deployment) in deployments {
            let uid = deployment["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
            let template = &deployment["spec"]["template"];
            let template_hash = format!("{:x}", fxhash(&template.to_string()));
            let wanted = deployment["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
            let owned: Vec<(Key, Value)> = self
                .objects
                .iter()
                .filter(|(k, stored)| {
                    k.plural == PODS.plural
                        && k.namespace == key.namespace
                        && stored.object["metadata"]["deletionTimestamp"].is_null()
                        && stored.object["metadata"]["ownerReferences"][0]["uid"] == uid.as_str()
                })
                .map(|(k, stored)| (k.clone(), stored.object.clone()))
                .collect();
            let (current, outdated): (Vec<_>, Vec<_>) = owned
                .into_iter()
                .partition(|(_, pod)| pod["metadata"]["labels"]["pod-template-hash"] == template_hash.as_str());
            for (pod, _) in outdated {
                let _ = self.delete(&PODS, &pod);
            }
            let mut current = current;
            let mut failure = None;
            if current.len() > wanted {
                current.sort_by_key(|(_, pod)| {
                    let cost: i64 = pod["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"]
                        .as_str()
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                    // The uid counts creations: a larger one is a younger pod.
                    let created = pod["metadata"]["uid"]
                        .as_str()
                        .and_then(|uid| i64::from_str_radix(uid.rsplit('-').next()?, 16).ok())
                        .unwrap_or(0);
                    (cost, -created)
                });
                for (pod, _) in current.drain(..current.len() - wanted) {
                    let _ = self.delete(&PODS, &pod);
                }
            }
            while current.len() < wanted {
                if let Some(message) = &self.refuse_pods {
                    failure = Some(message.clone());
                    break;
                }
                let mut pod = json!({
                    "metadata": {
                        "generateName": format!("{}-{template_hash}-", key.name),
                        "labels": template["metadata"]["labels"].clone(),
                        "ownerReferences": [{
                            "apiVersion": "apps/v1", "kind": "Deployment", "name": key.name,
                            "uid": uid, "controller": true, "blockOwnerDeletion": true,
                        }],
                    },
                    "spec": template["spec"].clone(),
                    "status": {"phase": "Pending"},
                });
                pod["metadata"]["labels"]["pod-template-hash"] = json!(template_hash);
                match self.create(&PODS, &key.namespace, pod, "kube-controller-manager") {
                    Ok(created) => current.push((key.clone(), created)),
                    Err(_) => break,
                }
            }
            let ready = current
                .iter()
                .filter(|(_, pod)| {
                    pod["status"]["conditions"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
                })
                .count();
            let mut conditions =
                vec![json!({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"})];
            if let Some(message) = failure {
                conditions.push(
                    json!({"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": message}),
                );
            }
            let status = json!({
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": current.len(),
                "readyReplicas": ready,
                "conditions": conditions,
            });
            if deployment["status"] != status {
                let _ = self.update(&DEPLOYMENTS, &key, "status", "kube-controller-manager", |before, _| {
                    let mut after = before.clone();
                    after["status"] = status;
                    Ok(after)
                });
            }
        }
    }
}

/// A small stable hash (FNV-1a) for pod template hashes.
fn fxhash(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        other => other,
    }
}

pub fn kind_of(plural: &str) -> Kind {
    *KINDS
        .iter()
        .find(|kind| kind.plural == plural)
        .unwrap_or_else(|| panic!("the fake serves no {plural}"))
}
