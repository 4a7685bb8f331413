//! Every object the operator applies for one `StatefulService`, rendered in one
//! place: the reconcile applies these, `strata render` prints them as a `List`, and
//! the test kubelet runs the Deployment's pod template. The Deployment carries a
//! digest of the whole set, so an unchanged spec is recognised without applying.

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Secret, Service},
    networking::v1::NetworkPolicy,
};
use kube::ResourceExt;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{
    crd::StatefulService,
    network_policy::network_policy,
    objects::{self, Invalid, OperatorSettings},
};

/// What a new resource is registered as, and so what `strata render` names.
pub const FIRST_REVISION: u64 = 1;

/// The annotation on the Deployment holding the digest of everything rendered.
pub const RENDERED_DIGEST: &str = "strata.dev/rendered-digest";

/// The objects of one service, in the order they are applied (the Deployment last:
/// its pods refer to the Secret).
#[derive(Debug, Clone)]
pub struct Rendered {
    pub service: Service,
    pub credential_secret: Secret,
    pub network_policy: NetworkPolicy,
    pub deployment: Deployment,
}

/// Renders the objects of `service` (whose spec the caller has checked), its
/// Deployment as that of `revision`, the revision its spec is registered as.
pub fn render(service: &StatefulService, settings: &OperatorSettings, revision: u64) -> Rendered {
    let mut rendered = Rendered {
        service: objects::service(service, settings),
        credential_secret: objects::credential_secret(service, settings),
        network_policy: network_policy(service, settings),
        deployment: objects::deployment(service, settings, revision),
    };
    let digest = rendered.digest();
    rendered
        .deployment
        .annotations_mut()
        .insert(RENDERED_DIGEST.to_owned(), digest);
    rendered
}

impl Rendered {
    /// The objects as JSON, in apply order.
    pub fn objects(&self) -> Vec<Value> {
        vec![
            to_json(&self.service),
            to_json(&self.credential_secret),
            to_json(&self.network_policy),
            to_json(&self.deployment),
        ]
    }

    /// A digest of every object, which changes whenever any of them would: the
    /// credential's value is left out (it follows from the service's name and the
    /// cluster secret, and an annotation must not hint at it; a new cluster secret
    /// means a restarted control plane, which applies everything once anyway).
    pub fn digest(&self) -> String {
        let mut secret = self.credential_secret.clone();
        secret.string_data = None;
        secret.data = None;
        let mut deployment = self.deployment.clone();
        deployment.annotations_mut().remove(RENDERED_DIGEST);
        short_digest(&json!([self.service, secret, self.network_policy, deployment]))
    }

    /// The digest stamped on the Deployment.
    pub fn deployment_digest(deployment: &Deployment) -> Option<&str> {
        deployment
            .metadata
            .annotations
            .as_ref()?
            .get(RENDERED_DIGEST)
            .map(String::as_str)
    }
}

/// The first 8 bytes of the SHA-256 of `value`'s JSON text, in hex: what the
/// operator's annotations and revision templates compare.
pub(crate) fn short_digest(value: &Value) -> String {
    let digest = Sha256::digest(value.to_string().as_bytes());
    digest[..8].iter().map(|byte| format!("{byte:02x}")).collect()
}

fn to_json(object: &impl serde::Serialize) -> Value {
    serde_json::to_value(object).unwrap_or_else(|error| panic!("a Kubernetes object serializes: {error}"))
}

/// Why `strata render` could not render a file.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("document {index} is not YAML the renderer understands: {source}")]
    Yaml {
        index: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("document {index} ({name}) is not a valid StatefulService: {source}")]
    Object {
        index: usize,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("StatefulService {name:?} would not run: {} ({})", invalid.message, invalid.reason)]
    Invalid { name: String, invalid: Invalid },
    #[error("no StatefulService (apiVersion strata.dev/v1alpha1) in the input")]
    Empty,
}

/// Renders every `StatefulService` among the YAML documents of `input` (other kinds,
/// such as a store Secret beside it, are skipped) as one `List`, each Deployment
/// as that of revision 1 (what a new resource is registered as). A resource's own
/// namespace wins over `settings.namespace`. A spec the operator would refuse is an
/// error naming why, as the operator's `Failing` condition would.
pub fn render_list(input: &str, settings: &OperatorSettings) -> Result<Value, RenderError> {
    let mut items = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let index = index + 1;
        let value = Value::deserialize(document).map_err(|source| RenderError::Yaml { index, source })?;
        let is_service = value["apiVersion"] == "strata.dev/v1alpha1" && value["kind"] == "StatefulService";
        if !is_service {
            continue;
        }
        let name = value["metadata"]["name"].as_str().unwrap_or("?").to_owned();
        let service: StatefulService =
            serde_json::from_value(value).map_err(|source| RenderError::Object { index, name, source })?;
        objects::registry_spec(&service).map_err(|invalid| RenderError::Invalid {
            name: service.name_any(),
            invalid,
        })?;
        let mut settings = settings.clone();
        if let Some(namespace) = service.namespace() {
            settings.namespace = namespace;
        }
        items.extend(render(&service, &settings, FIRST_REVISION).objects());
    }
    if items.is_empty() {
        return Err(RenderError::Empty);
    }
    Ok(json!({"apiVersion": "v1", "kind": "List", "items": items}))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use strata_control_plane::auth::ClusterSecret;

    use super::*;

    fn settings() -> OperatorSettings {
        OperatorSettings {
            namespace: "strata".into(),
            sidecar_image: "strata:test".into(),
            control_plane_url: "http://strata-control-plane:9200".into(),
            cluster_secret: ClusterSecret::new("render-test"),
            ready_timeout: Duration::from_secs(120),
        }
    }

    const CART: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: cart-store}\nstringData: {url: x}\n---\n\
        apiVersion: strata.dev/v1alpha1\nkind: StatefulService\nmetadata: {name: cart}\n\
        spec: {image: 'cart:1', storeSecret: {name: cart-store}}\n";

    #[test]
    fn a_file_renders_as_a_list_of_the_four_objects_in_apply_order() {
        let list = render_list(CART, &settings()).unwrap();
        assert_eq!(list["kind"], "List");
        let kinds: Vec<(&str, &str)> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                (
                    item["kind"].as_str().unwrap(),
                    item["metadata"]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("Service", "cart"),
                ("Secret", "cart-strata-credential"),
                ("NetworkPolicy", "cart"),
                ("Deployment", "cart-r1"),
            ]
        );
        let deployment = &list["items"][3];
        assert_eq!(deployment["metadata"]["namespace"], "strata");
        assert!(deployment["metadata"]["annotations"][RENDERED_DIGEST].is_string());
    }

    #[test]
    fn the_digest_follows_the_spec_and_nothing_else() {
        let service = |image: &str| -> StatefulService {
            serde_json::from_value(json!({
                "apiVersion": "strata.dev/v1alpha1", "kind": "StatefulService",
                "metadata": {"name": "cart", "uid": "u-1"},
                "spec": {"image": image, "storeSecret": {"name": "s"}},
            }))
            .unwrap()
        };
        let first = render(&service("cart:1"), &settings(), 1);
        let again = render(&service("cart:1"), &settings(), 1);
        let changed = render(&service("cart:2"), &settings(), 1);
        let digest = |rendered: &Rendered| Rendered::deployment_digest(&rendered.deployment).unwrap().to_owned();
        assert_eq!(digest(&first), digest(&again));
        assert_ne!(digest(&first), digest(&changed));
        let mut rotated = settings();
        rotated.cluster_secret = ClusterSecret::new("another");
        assert_eq!(
            digest(&first),
            digest(&render(&service("cart:1"), &rotated, 1)),
            "the credential stays out of the digest"
        );
    }

    #[test]
    fn a_spec_the_operator_would_refuse_is_an_error() {
        let refused = CART.replace("name: cart}", "name: 1cart}");
        let error = render_list(&refused, &settings()).unwrap_err().to_string();
        assert!(
            error.starts_with("StatefulService \"1cart\" would not run: metadata.name"),
            "{error}"
        );
        let nothing = render_list("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n", &settings());
        assert!(matches!(nothing, Err(RenderError::Empty)));
    }
}
