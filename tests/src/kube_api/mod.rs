//! A stateful fake Kubernetes API server on loopback, speaking the REST paths that
//! `kube::Client` uses, so the operator runs against it unmodified: lists and
//! watches (from a resource version, by label), get, create, server-side apply
//! with field managers and conflicts, merge and JSON patches, the `status` and
//! `scale` subresources, deletion with finalizers, and behind the API the parts of
//! a cluster the lifecycle depends on (`store`): garbage collection, namespace and
//! CRD deletion, Deployments that make and remove pods, Events kept as objects.
//! Not modelled: admission, RBAC, strategic-merge list keys, pods that run (the
//! test plays the kubelet, or the test kubelet does).

mod apply;
mod patch;
mod store;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::State as Shared,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::watch;

pub use store::{
    Key, Kind, Refusal, State, CRDS, DEPLOYMENTS, EVENTS, NAMESPACES, NETWORK_POLICIES, PODS, SECRETS, SERVICES,
    STATEFUL_SERVICES, STATEFUL_SERVICE_CRD,
};

/// One request the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: String,
}

impl Seen {
    /// A server-side apply.
    pub fn is_apply(&self) -> bool {
        self.method == "PATCH" && self.content_type.starts_with("application/apply-patch")
    }

    pub fn is_watch(&self) -> bool {
        self.query.get("watch").is_some_and(|w| w == "true" || w == "1")
    }
}

struct Inner {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    requests: Mutex<Vec<Seen>>,
    faults: Mutex<Vec<Fault>>,
}

/// Requests to refuse, as an API server in trouble would.
struct Fault {
    method: Method,
    path: String,
    remaining: usize,
    refusal: Refusal,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `change` on the state and wakes the watches.
    fn mutate<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state();
        let result = change(&mut state);
        let version = state.resource_version();
        drop(state);
        self.changed.send_replace(version);
        result
    }
}

/// The running fake; stops when dropped.
pub struct FakeApi {
    inner: Arc<Inner>,
    url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The namespace the tests install Strata in.
pub const NAMESPACE: &str = "strata";

impl FakeApi {
    /// Serves on a loopback port, with the namespaces `strata` and `default` and the
    /// committed `StatefulService` CRD already there, as after `kubectl apply -k deploy/`.
    pub async fn start() -> FakeApi {
        let (changed, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            changed,
            requests: Mutex::default(),
            faults: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("a bound address"));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let fake = FakeApi { inner, url, server };
        for namespace in [NAMESPACE, "default"] {
            fake.create(&NAMESPACES, "", json!({"metadata": {"name": namespace}}))
                .expect("a namespace");
        }
        let crd_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crd/statefulservice.yaml");
        let crd: Value = yaml_to_json(&std::fs::read_to_string(crd_path).expect("deploy/crd/statefulservice.yaml"));
        fake.create(&CRDS, "", crd).expect("the CRD");
        fake
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client of the fake whose default namespace is `strata`.
    pub fn client(&self) -> kube::Client {
        let mut config = kube::Config::new(self.url.parse().expect("the fake's URL"));
        config.default_namespace = NAMESPACE.into();
        kube::Client::try_from(config).expect("a client of the fake")
    }

    /// The state, to read (changes through it wake no watch: use the methods below).
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state()
    }

    pub fn get(&self, kind: &Kind, namespace: &str, name: &str) -> Option<Value> {
        self.state().get(&key(kind, namespace, name)).cloned()
    }

    pub fn list(&self, kind: &Kind, namespace: &str) -> Vec<Value> {
        self.state().list(kind, Some(namespace))
    }

    /// Creates an object as a user would (`kubectl create`).
    pub fn create(&self, kind: &Kind, namespace: &str, object: Value) -> Result<Value, Refusal> {
        self.inner
            .mutate(|state| state.create(kind, namespace, object, "kubectl-create"))
    }

    /// Applies an object as `manager` would (`kubectl apply --server-side`).
    pub fn apply(&self, kind: &Kind, namespace: &str, manager: &str, object: Value) -> Result<Value, Refusal> {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        self.inner
            .mutate(|state| state.apply(kind, &key(kind, namespace, &name), manager, &object, false))
    }

    /// Changes an object (or its `status`) with a merge patch, as `manager`.
    pub fn merge(
        &self,
        kind: &Kind,
        namespace: &str,
        name: &str,
        subresource: &str,
        manager: &str,
        change: Value,
    ) -> Result<Value, Refusal> {
        self.inner.mutate(|state| {
            state.update(kind, &key(kind, namespace, name), subresource, manager, |before, _| {
                let mut after = before.clone();
                patch::merge(&mut after, &change);
                Ok(after)
            })
        })
    }

    pub fn delete(&self, kind: &Kind, namespace: &str, name: &str) -> Result<Value, Refusal> {
        self.inner
            .mutate(|state| state.delete(kind, &key(kind, namespace, name)))
    }

    /// From now on Deployments cannot create pods, and say `message` (as a
    /// ResourceQuota refusing them would); `None` lifts it.
    pub fn refuse_pods(&self, message: Option<&str>) {
        self.inner.mutate(|state| state.refuse_pods(message.map(str::to_owned)));
    }

    /// The next `times` requests `method path` are refused with `refusal`.
    pub fn fail(&self, method: &str, path: &str, times: usize, refusal: Refusal) {
        self.inner
            .faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Fault {
                method: method.parse().expect("an HTTP method"),
                path: path.to_owned(),
                remaining: times,
                refusal,
            });
    }

    /// Ticks on every change of the state.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.inner
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Waits (up to a minute) until `check` finds what it looks for in the state
    /// (looked at again on every change and every request).
    pub async fn wait_for<T>(&self, what: &str, mut check: impl FnMut(&State) -> Option<T>) -> T {
        let mut changed = self.inner.changed.subscribe();
        let found = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if let Some(found) = check(&self.state()) {
                    return found;
                }
                changed.changed().await.expect("the fake lives");
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }
}

fn key(kind: &Kind, namespace: &str, name: &str) -> Key {
    Key {
        plural: kind.plural,
        namespace: if kind.namespaced {
            namespace.to_owned()
        } else {
            String::new()
        },
        name: name.to_owned(),
    }
}

/// Reads YAML through serde_json's types (the CRD file has one document).
fn yaml_to_json(text: &str) -> Value {
    let yaml: serde_yaml::Value = serde_yaml::from_str(text).expect("valid YAML");
    serde_json::to_value(yaml).expect("YAML that is JSON")
}

/// What a request names.
struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: String,
}

fn target(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => (Some(namespace.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, ""),
        [plural, name] => (*plural, Some(name.to_string()), ""),
        [plural, name, subresource] => (*plural, Some(name.to_string()), *subresource),
        _ => return None,
    };
    let kind = store::KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)?;
    Some(Target {
        kind: *kind,
        namespace,
        name,
        subresource: subresource.to_owned(),
    })
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, byte) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `k=v,k2=v2` (equality only, which is all the operator asks).
fn matches_labels(object: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| {
        let (label, value) = term.split_once('=').unwrap_or((term, ""));
        let value = value.trim_start_matches('=');
        object["metadata"]["labels"][label] == value
    })
}

fn status_response(refusal: Refusal) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": refusal.message, "reason": refusal.reason, "code": refusal.code,
    });
    let code = StatusCode::from_u16(refusal.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(body)).into_response()
}

fn ok(object: Value) -> Response {
    (StatusCode::OK, axum::Json(object)).into_response()
}

async fn handle(
    Shared(inner): Shared<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = query(&uri);
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    inner
        .requests
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(Seen {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: query.clone(),
            content_type: content_type.clone(),
        });
    // Waiters look at the requests too.
    inner.changed.send_modify(|_| {});
    let fault = {
        let mut faults = inner.faults.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        faults.retain(|fault| fault.remaining > 0);
        faults
            .iter_mut()
            .find(|fault| fault.method == method && fault.path == uri.path())
            .map(|fault| {
                fault.remaining -= 1;
                fault.refusal.clone()
            })
    };
    if let Some(refusal) = fault {
        return status_response(refusal);
    }
    let Some(target) = target(uri.path()) else {
        return status_response(Refusal::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    };
    if !inner.state().serves(&target.kind) {
        return status_response(Refusal::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(error) => return status_response(Refusal::new(400, "BadRequest", format!("the body: {error}"))),
        }
    };
    let kind = target.kind;
    let namespace = target.namespace.clone().unwrap_or_default();
    if method == Method::GET && kind.plural == PODS.plural && target.subresource == "log" {
        if let Some(name) = target.name.as_deref() {
            return pod_log(&inner.state(), &namespace, name, &query);
        }
    }
    let manager = query.get("fieldManager").cloned().unwrap_or_else(|| "unknown".into());
    let result = match (method, target.name.as_deref()) {
        (Method::GET, None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            return watch_response(inner, target, &query);
        }
        (Method::GET, None) => {
            let state = inner.state();
            let items: Vec<Value> = state
                .list(&kind, target.namespace.as_deref())
                .into_iter()
                .filter(|object| matches_labels(object, query.get("labelSelector")))
                .collect();
            Ok(json!({
                "apiVersion": kind.api_version(),
                "kind": format!("{}List", kind.kind),
                "metadata": {"resourceVersion": state.resource_version().to_string()},
                "items": items,
            }))
        }
        (Method::GET, Some(name)) => {
            let state = inner.state();
            match state.get(&key(&kind, &namespace, name)) {
                None => Err(Refusal::new(
                    404,
                    "NotFound",
                    format!("{} {name:?} not found", kind.plural),
                )),
                Some(object) if target.subresource == "scale" => Ok(scale_of(object)),
                Some(object) => Ok(object.clone()),
            }
        }
        (Method::POST, None) => inner.mutate(|state| state.create(&kind, &namespace, body, &manager)),
        (Method::DELETE, Some(name)) => inner.mutate(|state| state.delete(&kind, &key(&kind, &namespace, name))),
        (Method::PATCH, Some(name)) => {
            let key = key(&kind, &namespace, name);
            if content_type.starts_with("application/apply-patch") {
                let force = query.get("force").is_some_and(|f| f == "true");
                inner.mutate(|state| state.apply(&kind, &key, &manager, &body, force))
            } else {
                let json_patch = content_type.starts_with("application/json-patch");
                let subresource = target.subresource.clone();
                inner.mutate(|state| {
                    let updated = state.update(&kind, &key, &subresource, &manager, |before, _| {
                        let mut view = if subresource == "scale" {
                            scale_of(before)
                        } else {
                            before.clone()
                        };
                        if json_patch {
                            patch::json_patch(&mut view, &body).map_err(|error| match error {
                                patch::JsonPatchError::TestFailed(message) => Refusal::new(422, "Invalid", message),
                                patch::JsonPatchError::Invalid(message) => Refusal::new(422, "Invalid", message),
                            })?;
                        } else {
                            patch::merge(&mut view, &body);
                        }
                        if subresource != "scale" {
                            return Ok(view);
                        }
                        let mut after = before.clone();
                        after["spec"]["replicas"] = view["spec"]["replicas"].clone();
                        Ok(after)
                    })?;
                    Ok(if subresource == "scale" {
                        scale_of(&updated)
                    } else {
                        updated
                    })
                })
            }
        }
        (Method::PUT, Some(name)) => {
            let key = key(&kind, &namespace, name);
            let expected = body["metadata"]["resourceVersion"].as_str().map(str::to_owned);
            let subresource = target.subresource.clone();
            inner.mutate(|state| {
                state.update(&kind, &key, &subresource, &manager, |before, _| {
                    let current = before["metadata"]["resourceVersion"].as_str();
                    if expected.is_some() && expected.as_deref() != current {
                        return Err(Refusal::new(
                            409,
                            "Conflict",
                            "the object has been modified; please apply your changes to the latest version and try again",
                        ));
                    }
                    Ok(body.clone())
                })
            })
        }
        (method, _) => Err(Refusal::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not served here"),
        )),
    };
    match result {
        Ok(object) => ok(object),
        Err(refusal) => status_response(refusal),
    }
}

/// A Deployment's `scale` subresource.
/// `GET pods/{name}/log`: one container's lines as text (the container must be
/// named, as for every pod Strata runs, which has two), each prefixed with its
/// time when `timestamps=true`, from `sinceTime` on. A `follow` gets what there
/// is and the end of the stream.
fn pod_log(state: &State, namespace: &str, name: &str, query: &BTreeMap<String, String>) -> Response {
    let Some(pod) = state.get(&key(&PODS, namespace, name)) else {
        return status_response(Refusal::new(404, "NotFound", format!("pods {name:?} not found")));
    };
    let Some(container) = query.get("container") else {
        let names: Vec<&str> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .collect();
        return status_response(Refusal::new(
            400,
            "BadRequest",
            format!("a container name must be specified for pod {name}, choose one of: {names:?}"),
        ));
    };
    let since = query
        .get("sinceTime")
        .and_then(|time| k8s_openapi::chrono::DateTime::parse_from_rfc3339(time).ok());
    let timestamps = query.get("timestamps").is_some_and(|t| t == "true");
    let mut text = String::new();
    for (at, line) in state.pod_log(namespace, name, container) {
        let written = k8s_openapi::chrono::DateTime::parse_from_rfc3339(at).ok();
        if since.is_some_and(|since| written.is_some_and(|written| written < since)) {
            continue;
        }
        if timestamps {
            text.push_str(at);
            text.push(' ');
        }
        text.push_str(line);
        text.push('\n');
    }
    (StatusCode::OK, [("content-type", "text/plain")], text).into_response()
}

fn scale_of(deployment: &Value) -> Value {
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": deployment["metadata"]["name"],
            "namespace": deployment["metadata"]["namespace"],
            "uid": deployment["metadata"]["uid"],
            "resourceVersion": deployment["metadata"]["resourceVersion"],
        },
        "spec": {"replicas": deployment["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": deployment["status"]["replicas"].as_i64().unwrap_or(0)},
    })
}

/// A watch: every change after `resourceVersion` that matches, one JSON object a
/// line, until `timeoutSeconds` (at most 290) pass.
fn watch_response(inner: Arc<Inner>, target: Target, query: &BTreeMap<String, String>) -> Response {
    // Subscribed before the history is read: nothing falls between.
    let changed = inner.changed.subscribe();
    let since: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| inner.state().resource_version());
    let seconds: u64 = query
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(290)
        .min(290);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let selector = query.get("labelSelector").cloned();
    let lines = futures::stream::unfold((since, changed), move |(mut last, mut changed)| {
        let inner = inner.clone();
        let selector = selector.clone();
        let plural = target.kind.plural;
        let namespace = target.namespace.clone();
        async move {
            loop {
                let batch: Vec<String> = {
                    let state = inner.state();
                    let batch = state
                        .history
                        .iter()
                        .filter(|change| change.resource_version > last)
                        .filter(|change| change.key.plural == plural)
                        .filter(|change| namespace.as_ref().is_none_or(|ns| &change.key.namespace == ns))
                        .filter(|change| matches_labels(&change.object, selector.as_ref()))
                        .map(|change| format!("{}\n", json!({"type": change.kind, "object": change.object})))
                        .collect();
                    last = last.max(state.resource_version());
                    batch
                };
                if !batch.is_empty() {
                    let bytes = Bytes::from(batch.concat());
                    return Some((Ok::<_, std::convert::Infallible>(bytes), (last, changed)));
                }
                match tokio::time::timeout_at(deadline, changed.changed()).await {
                    Ok(Ok(())) => continue,
                    _ => return None,
                }
            }
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(lines.boxed()))
        .unwrap_or_else(|error| panic!("a watch response: {error}"))
}
