//! Kubernetes Events on a `StatefulService`, so `kubectl describe statefulservice
//! cart` tells what the operator did and why: registrations, scale decisions with
//! the autoscaler's reason, replaced pods, refusals. Publishing is best effort: an
//! Event that cannot be written is logged and never fails a reconcile.

use kube::{
    runtime::events::{Event, EventType, Recorder, Reporter},
    Client, Resource,
};

use super::{crd::StatefulService, objects::Invalid};

/// The reporting controller Events name.
pub const REPORTER: &str = "strata-control-plane";

/// What the operator says about a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Registered with the control plane for the first time, or its spec changed there.
    Registered {
        revision: u64,
    },
    Updated {
        revision: u64,
    },
    /// A revision's Deployment's replica count changed, and the autoscaler's reason.
    Scaled {
        deployment: String,
        from: i32,
        to: i32,
        why: String,
    },
    /// A pod was deleted to be replaced.
    PodReplaced {
        pod: String,
        reason: String,
    },
    /// The service cannot run (or stopped failing).
    Failing(Invalid),
    Recovered,
    /// The last reconcile failed (the API server, the control plane).
    ReconcileFailed {
        error: String,
    },
}

impl Notice {
    fn event(self) -> Event {
        let (type_, reason, action, note) = match self {
            Notice::Registered { revision } => (
                EventType::Normal,
                "Registered".to_owned(),
                "Register",
                format!("registered with the control plane (revision {revision})"),
            ),
            Notice::Updated { revision } => (
                EventType::Normal,
                "Updated".to_owned(),
                "Register",
                format!("the control plane runs revision {revision}"),
            ),
            Notice::Scaled {
                deployment,
                from,
                to,
                why,
            } => (
                EventType::Normal,
                if to > from { "ScaledUp" } else { "ScaledDown" }.to_owned(),
                "Scale",
                format!("scaled the Deployment {deployment} from {from} to {to}: {why}"),
            ),
            Notice::PodReplaced { pod, reason } => (
                EventType::Warning,
                "PodReplaced".to_owned(),
                "Replace",
                format!("deleted pod {pod}: {reason}"),
            ),
            Notice::Failing(invalid) => (
                EventType::Warning,
                invalid.reason.to_owned(),
                "Reconcile",
                invalid.message,
            ),
            Notice::Recovered => (
                EventType::Normal,
                "Recovered".to_owned(),
                "Reconcile",
                "no longer failing".to_owned(),
            ),
            Notice::ReconcileFailed { error } => (EventType::Warning, "ReconcileFailed".to_owned(), "Reconcile", error),
        };
        Event {
            type_,
            reason,
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        }
    }
}

/// Publishes [`Notice`]s as Events (events.k8s.io/v1), repeats folded into a series.
pub struct Events {
    recorder: Recorder,
}

impl Events {
    /// `instance` tells the control-plane nodes apart (the pod's name).
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: REPORTER.to_owned(),
            instance,
        };
        Events {
            recorder: Recorder::new(client, reporter),
        }
    }

    pub async fn publish(&self, service: &StatefulService, notice: Notice) {
        let reference = service.object_ref(&());
        let event = notice.event();
        if let Err(error) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(service = ?reference.name, reason = %event.reason, %error, "could not publish an event");
        }
    }
}
