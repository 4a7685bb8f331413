//! The NetworkPolicy of a service's pods: the sidecar's port (`http`) admits only
//! gateways and other Strata sidecars, its admin port (`admin`: metrics and health)
//! only the control plane, and nothing else reaches the pod (the function listens on
//! its loopback). Enforced where the cluster's network plugin enforces policies.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use serde_json::json;

use super::{
    crd::StatefulService,
    objects::{metadata, OperatorSettings, SERVICE_LABEL},
};

/// The pods of `deploy/gateway.yaml`.
pub const GATEWAY_SELECTOR: (&str, &str) = ("app.kubernetes.io/name", "strata-gateway");
/// The pods of `deploy/control-plane.yaml`.
pub const CONTROL_PLANE_SELECTOR: (&str, &str) = ("app.kubernetes.io/name", "strata-control-plane");

/// The policy over the pods of `service`, named after it.
pub fn network_policy(service: &StatefulService, settings: &OperatorSettings) -> NetworkPolicy {
    let name = service.name_any();
    let pods = |(key, value): (&str, &str)| json!({"podSelector": {"matchLabels": {key: value}}});
    let object = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(&name, service, settings),
        "spec": {
            "podSelector": {"matchLabels": {SERVICE_LABEL: name}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    // Calls routed by gateways, and forwards and side effects from
                    // other services' sidecars (every function pod carries these labels).
                    "from": [
                        pods(GATEWAY_SELECTOR),
                        {"podSelector": {"matchLabels": {
                            "app.kubernetes.io/managed-by": "strata",
                            "app.kubernetes.io/component": "function",
                        }}},
                    ],
                    "ports": [{"protocol": "TCP", "port": "http"}],
                },
                {
                    // The autoscaler's scrapes.
                    "from": [pods(CONTROL_PLANE_SELECTOR)],
                    "ports": [{"protocol": "TCP", "port": "admin"}],
                },
            ],
        },
    });
    serde_json::from_value(object).unwrap_or_else(|error| panic!("the NetworkPolicy is well formed: {error}"))
}
