//! How the operator reads what Kubernetes reports, as pure functions: a pod as the
//! plan sees it (its age counted from its containers' start, so image pulls and
//! node provisioning do not count against the ready timeout), and the failures the
//! Deployment and the scheduler report (a ResourceQuota that refuses pods, a
//! progress deadline, no node to run on), in the words the status shows.

use std::collections::BTreeSet;

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use kube::ResourceExt;

use super::objects::{Invalid, REVISION_LABEL};
use crate::plan::{Health, ObservedInstance};

/// Container states that will not get better by waiting.
const STUCK: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// How the plan sees a pod at `now_ms`. A pod none of whose containers has started
/// yet (scheduling, pulling its images) is as young as now: the ready timeout counts
/// from the latest container start, not from the pod's.
pub fn observe(pod: &Pod, service: &str, tracked: &BTreeSet<String>, now_ms: u64) -> ObservedInstance {
    let id = pod.name_any();
    let status = pod.status.clone().unwrap_or_default();
    let started = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|container| container.state.as_ref()?.running.as_ref()?.started_at.as_ref())
        .map(|time| u64::try_from(time.0.timestamp_millis()).unwrap_or_default())
        .max()
        .unwrap_or(now_ms);
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let stuck = status.container_statuses.iter().flatten().find_map(|container| {
        let waiting = container.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        STUCK.contains(&reason).then(|| {
            let message = waiting.message.as_deref().unwrap_or_default();
            format!("container {} of pod {id}: {reason} {message}", container.name)
                .trim_end()
                .to_owned()
        })
    });
    let health = if pod.metadata.deletion_timestamp.is_some() {
        Health::Stopping
    } else if phase == "Failed" || phase == "Succeeded" {
        let why = status.message.or(status.reason).unwrap_or_default();
        Health::Exited {
            reason: format!("the pod {id} stopped ({phase}) {why}").trim_end().to_owned(),
        }
    } else if let Some(reason) = stuck {
        Health::Exited { reason }
    } else {
        Health::Running
    };
    ObservedInstance {
        tracked: tracked.contains(&id),
        id,
        service: service.to_owned(),
        started_at_ms: started,
        health,
        // Each revision's Deployment labels its pods with it (0: not known).
        revision: pod
            .labels()
            .get(REVISION_LABEL)
            .and_then(|revision| revision.parse().ok())
            .unwrap_or_default(),
    }
}

/// What the Deployment's conditions say is wrong: pods refused (a ResourceQuota, a
/// LimitRange, pod security), or no progress within its deadline.
pub fn deployment_failure(deployment: &Deployment) -> Option<Invalid> {
    let conditions = deployment.status.as_ref()?.conditions.as_ref()?;
    let condition = |kind: &str, status: &str| conditions.iter().find(|c| c.type_ == kind && c.status == status);
    if let Some(failure) = condition("ReplicaFailure", "True") {
        return Some(Invalid {
            reason: "ReplicaFailure",
            message: failure
                .message
                .clone()
                .unwrap_or_else(|| "the Deployment cannot create pods".into()),
        });
    }
    let stalled =
        condition("Progressing", "False").filter(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))?;
    Some(Invalid {
        reason: "ProgressDeadlineExceeded",
        message: stalled
            .message
            .clone()
            .unwrap_or_else(|| "the Deployment made no progress within its deadline".into()),
    })
}

/// A pod the scheduler found no node for, in the scheduler's words.
pub fn unschedulable(pods: &[Pod]) -> Option<Invalid> {
    pods.iter().find_map(|pod| {
        let conditions = pod.status.as_ref()?.conditions.as_ref()?;
        let scheduled = conditions.iter().find(|c| c.type_ == "PodScheduled")?;
        (scheduled.status == "False" && scheduled.reason.as_deref() == Some("Unschedulable")).then(|| Invalid {
            reason: "Unschedulable",
            message: format!(
                "pod {}: {}",
                pod.name_any(),
                scheduled.message.as_deref().unwrap_or("no node can run it")
            ),
        })
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_764_464_400_000; // 2025-11-30T01:00:00Z

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "cart-a", "creationTimestamp": "2025-11-30T00:00:00Z"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_pulling_its_image_is_as_young_as_now() {
        let pulling = pod(json!({
            "phase": "Pending", "startTime": "2025-11-30T00:00:00Z",
            "containerStatuses": [{"name": "function", "image": "", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}],
        }));
        let seen = observe(&pulling, "cart", &BTreeSet::new(), NOW);
        assert_eq!((seen.started_at_ms, seen.health), (NOW, Health::Running));
    }

    #[test]
    fn a_pod_is_as_old_as_its_latest_container_start() {
        let running = pod(json!({
            "phase": "Running", "startTime": "2025-11-30T00:00:00Z",
            "containerStatuses": [
                {"name": "function", "image": "", "imageID": "", "ready": true, "restartCount": 0,
                 "state": {"running": {"startedAt": "2025-11-30T00:58:00Z"}}},
                {"name": "strata-sidecar", "image": "", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"running": {"startedAt": "2025-11-30T00:59:00Z"}}},
            ],
        }));
        let seen = observe(&running, "cart", &BTreeSet::from(["cart-a".to_owned()]), NOW);
        assert_eq!(seen.started_at_ms, NOW - 60_000);
        assert!(seen.tracked);
    }

    #[test]
    fn a_quota_refusal_is_a_replica_failure_in_its_own_words() {
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "cart"},
            "status": {"conditions": [
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                 "message": "pods \"cart-5d8f-x\" is forbidden: exceeded quota: compute, requested: cpu=50m, used: cpu=1, limited: cpu=1"},
            ]},
        }))
        .unwrap();
        let failure = deployment_failure(&deployment).unwrap();
        assert_eq!(failure.reason, "ReplicaFailure");
        assert!(
            failure.message.contains("exceeded quota: compute"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn a_missed_progress_deadline_is_reported_and_a_healthy_deployment_is_not() {
        let stalled: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "cart"},
            "status": {"conditions": [{"type": "Progressing", "status": "False",
                "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"cart-5d8f\" has timed out progressing."}]},
        }))
        .unwrap();
        assert_eq!(deployment_failure(&stalled).unwrap().reason, "ProgressDeadlineExceeded");
        let healthy: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "cart"},
            "status": {"conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]},
        }))
        .unwrap();
        assert_eq!(deployment_failure(&healthy), None);
    }

    #[test]
    fn an_unschedulable_pod_says_why() {
        let waiting = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient memory."}]}),
        );
        let failure = unschedulable(&[waiting]).unwrap();
        assert_eq!(
            (failure.reason, failure.message.as_str()),
            (
                "Unschedulable",
                "pod cart-a: 0/3 nodes are available: 3 Insufficient memory."
            )
        );
    }
}
