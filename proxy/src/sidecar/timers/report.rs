//! Telling the control plane when the service's earliest timer is due, so the
//! autoscaler can start a service at zero in time. The registry keeps the last
//! report; the sidecar sends one only when the store's answer changed (at once
//! when it moved earlier, at most once a second otherwise), and once more as
//! it drains, so the last instance to leave leaves the true value behind.

use std::time::Duration;

use strata_proto::strata::controlplane::v1::ReportTimersRequest;
use strata_store::TimerStore;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::routing::control_plane::ControlPlaneClient;

/// How often a later (or no) earliest timer is reported at most.
const LATER_EVERY: Duration = Duration::from_secs(1);

/// Whether to report `next` (the store's earliest timer, `None`: none) after
/// `last` was reported `since_last` ago (`None`: never). An earlier timer goes
/// at once (a service at zero might otherwise wake too late); a later one can
/// wait (waking early costs only an instance for a moment).
pub fn should_report(last: Option<Option<i64>>, next: Option<i64>, since_last: Duration) -> bool {
    let Some(last) = last else {
        return true;
    };
    if last == next {
        return false;
    }
    let earlier = match (next, last) {
        (Some(next), Some(last)) => next < last,
        (Some(_), None) => true,
        (None, _) => false,
    };
    earlier || since_last >= LATER_EVERY
}

/// The reports of one managed sidecar.
pub struct NextDueReport {
    client: ControlPlaneClient,
    instance_id: String,
    last: Mutex<(Option<Option<i64>>, Instant)>,
}

impl NextDueReport {
    pub fn new(client: ControlPlaneClient, instance_id: String) -> Self {
        Self {
            client,
            instance_id,
            last: Mutex::new((None, Instant::now())),
        }
    }

    /// Reads the service's earliest timer and reports it if it changed enough.
    pub async fn refresh(&self, timers: &dyn TimerStore, service: &str) {
        self.report(timers, service, false).await
    }

    /// Reports the earliest timer whatever was reported before (as the
    /// instance drains).
    pub async fn report_now(&self, timers: &dyn TimerStore, service: &str) {
        self.report(timers, service, true).await
    }

    async fn report(&self, timers: &dyn TimerStore, service: &str, always: bool) {
        let next = match timers.next_timer_due(service).await {
            Ok(next) => next,
            Err(error) => {
                tracing::debug!(%error, "could not read the earliest timer");
                return;
            }
        };
        let mut last = self.last.lock().await;
        if !always && !should_report(last.0, next, last.1.elapsed()) {
            return;
        }
        let request = ReportTimersRequest {
            instance_id: self.instance_id.clone(),
            next_due_ms: next.map_or(0, |at| at.max(1)),
        };
        let reported = self
            .client
            .call("report timers", |mut client| {
                let request = request.clone();
                async move { client.report_timers(request).await }
            })
            .await;
        match reported {
            Ok(_) => {
                tracing::debug!(next_due_ms = ?next, "reported the service's earliest timer");
                *last = (Some(next), Instant::now());
            }
            Err(status) => tracing::warn!(error = %status.message(), "could not report the earliest timer; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earlier_at_once_later_at_most_every_second_unchanged_never() {
        let now = Duration::ZERO;
        let later = LATER_EVERY;
        // Nothing reported yet: report whatever it is.
        assert!(should_report(None, None, now));
        assert!(should_report(None, Some(5), now));
        // Unchanged: never.
        assert!(!should_report(Some(Some(5)), Some(5), later));
        assert!(!should_report(Some(None), None, later));
        // Earlier, or a first timer: at once.
        assert!(should_report(Some(Some(5)), Some(4), now));
        assert!(should_report(Some(None), Some(9), now));
        // Later, or none left: once the pace allows.
        assert!(!should_report(Some(Some(5)), Some(6), now));
        assert!(should_report(Some(Some(5)), Some(6), later));
        assert!(!should_report(Some(Some(5)), None, now));
        assert!(should_report(Some(Some(5)), None, later));
    }
}
