//! What the operator renders for a revision and asks of the registry: which
//! changes of a `StatefulService` are a new revision, the Deployment of one, and
//! the canary fields.

use std::time::Duration;

use serde_json::json;
use strata_control_plane::{auth::ClusterSecret, registry::RevisionSpec};

use super::crd::StatefulService;
use super::objects::*;

fn resource(spec: serde_json::Value) -> StatefulService {
    let mut spec = spec;
    spec["storeSecret"] = json!({"name": "cart-store"});
    serde_json::from_value(json!({
        "apiVersion": "strata.dev/v1alpha1", "kind": "StatefulService",
        "metadata": {"name": "cart"}, "spec": spec,
    }))
    .unwrap()
}

fn runs(spec: serde_json::Value) -> RevisionSpec {
    registry_spec(&resource(spec)).unwrap().runs
}

#[test]
fn a_change_of_the_pod_is_a_new_revision_and_a_change_of_the_scaling_is_not() {
    let first = runs(json!({"image": "cart:1"}));
    assert_eq!(first.image.as_deref(), Some("cart:1"));
    assert_eq!(first, runs(json!({"image": "cart:1", "maxScale": 9, "traffic": 10})));
    for changed in [
        json!({"image": "cart:2"}),
        json!({"image": "cart:1", "env": [{"name": "LABEL", "value": "two"}]}),
        json!({"image": "cart:1", "args": ["--fast"]}),
        json!({"image": "cart:1", "port": 8081}),
        json!({"image": "cart:1", "resources": {"limits": {"memory": "1Gi"}}}),
    ] {
        assert_ne!(first, runs(changed.clone()), "{changed}");
    }
}

#[test]
fn each_revision_has_a_deployment_of_its_own() {
    let settings = OperatorSettings {
        namespace: "strata".into(),
        sidecar_image: "strata:test".into(),
        control_plane_url: "http://strata-control-plane:9200".into(),
        cluster_secret: ClusterSecret::new("objects-test"),
        ready_timeout: Duration::from_secs(120),
    };
    let deployment = serde_json::to_value(deployment(&resource(json!({"image": "cart:3"})), &settings, 3)).unwrap();
    assert_eq!(deployment["metadata"]["name"], "cart-r3");
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        json!({SERVICE_LABEL: "cart", REVISION_LABEL: "3"})
    );
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"][REVISION_LABEL],
        "3"
    );
    let sidecar_env = &deployment["spec"]["template"]["spec"]["containers"][1]["env"];
    assert!(sidecar_env
        .as_array()
        .unwrap()
        .contains(&json!({"name": "STRATA_REVISION", "value": "3"})));
}

#[test]
fn a_canary_is_asked_for_with_traffic_and_checked() {
    let canary = registry_canary(&resource(
        json!({"image": "cart:2", "traffic": 25, "canaryMaxErrorRate": "5%", "canaryWindow": "30s"}),
    ))
    .unwrap()
    .unwrap();
    assert_eq!(canary.percent, 25);
    let analysis = canary.analysis.unwrap();
    assert_eq!((analysis.max_error_rate_bp, analysis.window_ms), (500, 30_000));
    assert_eq!(registry_canary(&resource(json!({"image": "cart:2"}))), Ok(None));
    let refused = [
        (
            json!({"traffic": 0}),
            "spec.traffic is the canary's share of the entities, 1 to 99, not 0",
        ),
        (
            json!({"canaryMaxErrorRate": "5%"}),
            "spec.canaryMaxErrorRate goes with spec.traffic (a change deployed as a canary), which is not set",
        ),
        (
            json!({"traffic": 10, "canaryMaxErrorRate": "150%"}),
            "spec: canary_max_error_rate must be above 0 and below 1 (100%), not 150%",
        ),
    ];
    for (fields, message) in refused {
        let mut spec = json!({"image": "cart:2"});
        spec.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        let error = registry_spec(&resource(spec)).unwrap_err();
        assert_eq!((error.reason, error.message.as_str()), ("InvalidSpec", message));
    }
}
