//! `StatefulService`s outside the operator's namespace: the operator runs only its
//! own namespace's, and says so on the others (a `Failing` condition with reason
//! `OutsideOperatorNamespace`) instead of leaving them without a word. A resource
//! that already has conditions is left alone: another Strata installation may run
//! it, and two writers of one status would undo each other for ever.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::chrono::Utc;
use kube::{
    api::{Patch, PatchParams},
    runtime::{watcher, WatchStreamExt},
    Api, ResourceExt,
};
use serde_json::json;

use super::{
    crd::StatefulService,
    objects::{self, Invalid, Observation},
    reconcile::Context,
};

/// Why a resource elsewhere does not run.
pub fn outside(namespace: &str, operator_namespace: &str) -> Invalid {
    Invalid {
        reason: "OutsideOperatorNamespace",
        message: format!(
            "the Strata control plane runs the StatefulServices of namespace {operator_namespace:?} only, \
             and this one is in {namespace:?}: create it in {operator_namespace:?}"
        ),
    }
}

/// Whether `service` is another namespace's and was never reported by anyone.
pub fn to_report(service: &StatefulService, operator_namespace: &str) -> bool {
    let elsewhere = service
        .namespace()
        .is_some_and(|namespace| namespace != operator_namespace);
    let untouched = service
        .status
        .as_ref()
        .is_none_or(|status| status.conditions.is_empty());
    elsewhere && untouched
}

/// Watches every namespace's `StatefulService`s (which needs the ClusterRole of
/// `deploy/rbac.yaml`; without it, this logs and retries with backoff) and reports
/// those of other namespaces while this node leads.
pub async fn run(ctx: Arc<Context>) {
    let all: Api<StatefulService> = Api::all(ctx.client().clone());
    let operator_namespace = ctx.settings().namespace.clone();
    let mut services = watcher(all, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(seen) = services.next().await {
        let service = match seen {
            Ok(service) => service,
            Err(error) => {
                tracing::warn!(%error, "cannot watch StatefulServices in other namespaces");
                continue;
            }
        };
        if !ctx.node().is_leader() || !to_report(&service, &operator_namespace) {
            continue;
        }
        let namespace = service.namespace().unwrap_or_default();
        let invalid = outside(&namespace, &operator_namespace);
        tracing::warn!(service = %service.name_any(), %namespace, "a StatefulService outside the operator's namespace");
        let observation = Observation {
            desired: 0,
            ready: 0,
            failing: Some(invalid),
            revisions: None,
        };
        let status = objects::status(&service, &observation, Utc::now());
        let api: Api<StatefulService> = Api::namespaced(ctx.client().clone(), &namespace);
        let patch = Patch::Merge(json!({ "status": status }));
        if let Err(error) = api
            .patch_status(&service.name_any(), &PatchParams::default(), &patch)
            .await
        {
            tracing::warn!(service = %service.name_any(), %namespace, %error, "could not report a StatefulService outside the operator's namespace");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn service(namespace: &str, conditions: serde_json::Value) -> StatefulService {
        serde_json::from_value(json!({
            "apiVersion": "strata.dev/v1alpha1", "kind": "StatefulService",
            "metadata": {"name": "cart", "namespace": namespace},
            "spec": {"image": "cart:1"},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn only_untouched_resources_of_other_namespaces_are_reported() {
        assert!(to_report(&service("shop", json!([])), "strata"));
        assert!(!to_report(&service("strata", json!([])), "strata"));
        let reported = json!([{"type": "Failing", "status": "True", "reason": "OutsideOperatorNamespace",
            "message": "m", "lastTransitionTime": "2025-11-30T00:00:00Z"}]);
        assert!(!to_report(&service("shop", reported), "strata"));
    }
}
