//! The leader's loop that runs schedules. Every quarter second, while this node
//! leads, it asks [`steps`] what is due and performs it: a run is recorded through
//! Raft (`StartScheduleRun`) *before* its call, then called through the gateway,
//! retried with backoff, and its outcome recorded (`FinishScheduleRun`).
//!
//! Why the record comes first: only the real leader can commit it, and the
//! registry refuses a second record of the same time, so a deposed leader that
//! has not noticed yet, or two nodes that both believe they lead, never both call
//! a time. Recording after the call would let both call. A leader that dies
//! between its record and its finish leaves the run `running`; the next leader
//! resumes it and makes the call, so a time is never lost, and is called twice
//! only when the old leader's call had landed before it died.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::grpc_web::{self, CallError};
use super::schedule_steps::{steps, Step};
use crate::node::{now_ms, ControlPlane, NodeError};
use crate::registry::schedule::display_ms;
use crate::registry::schedule_call::encode_call;
use crate::registry::{Command, RunOutcome};
use crate::tasks::Stopping;

/// How often the leader looks for due times (a six-field cron may ask every second).
const TICK: Duration = Duration::from_millis(250);
/// Calls per run before it is recorded failed.
pub const ATTEMPTS: u32 = 3;
/// The wait before the second attempt; it doubles for each one after.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// How long one attempt may take (a service at zero wakes within it).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The metadata that tells the called method which schedule and time it runs for,
/// so a method that must not run twice for one time can tell.
pub const SCHEDULE_HEADER: &str = "strata-schedule";
pub const SCHEDULE_TIME_HEADER: &str = "strata-schedule-time";

/// Where the leader makes schedules' calls.
#[derive(Debug, Clone, Default)]
pub struct ScheduleConfig {
    /// A gateway's base URL, e.g. `http://127.0.0.1:9000`.
    pub gateway: String,
    /// Certificates (PEM) trusted for an `https://` gateway beside the system's
    /// roots: `strata dev` trusts its own gateway's chain, so a self-signed
    /// certificate works.
    pub gateway_roots: Option<Vec<u8>>,
}

/// The client that makes schedules' calls, trusting `config`'s roots.
fn client(config: &ScheduleConfig) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(2));
    let roots = config
        .gateway_roots
        .as_deref()
        .map(reqwest::Certificate::from_pem_bundle)
        .transpose();
    match roots {
        Ok(roots) => {
            for root in roots.into_iter().flatten() {
                builder = builder.add_root_certificate(root);
            }
        }
        Err(error) => {
            tracing::warn!(%error, "the gateway's certificates do not parse; schedules' calls trust the system's roots only")
        }
    }
    builder.build().expect("an HTTP client with timeouts")
}

/// One run's call as it ended.
struct Finished {
    name: String,
    time_ms: u64,
    outcome: RunOutcome,
}

/// Runs until `stopping`.
pub async fn run(node: Arc<ControlPlane>, config: ScheduleConfig, stopping: Stopping) {
    let http = client(&config);
    let mut calls: JoinSet<Finished> = JoinSet::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    // Ends whose record failed while this node still led: recorded again before
    // anything else, and their schedules kept in flight meanwhile, so the run is
    // not taken for one a dead leader left and called again.
    let mut unrecorded: Vec<Finished> = Vec::new();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let stop = stopping.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            Some(joined) = calls.join_next() => {
                let Ok(finished) = joined else { continue };
                let name = finished.name.clone();
                match record_finish(&node, finished).await {
                    Some(retry) if node.is_leader() => unrecorded.push(retry),
                    _ => {
                        in_flight.remove(&name);
                    }
                }
            }
            _ = ticks.tick() => {
                if !node.is_leader() {
                    // The next leader resumes what this one could not record.
                    for finished in unrecorded.drain(..) {
                        in_flight.remove(&finished.name);
                    }
                    continue;
                }
                for finished in std::mem::take(&mut unrecorded) {
                    let name = finished.name.clone();
                    match record_finish(&node, finished).await {
                        Some(retry) => unrecorded.push(retry),
                        None => {
                            in_flight.remove(&name);
                        }
                    }
                }
                let todo = node.read(|registry| steps(&registry.schedules, &in_flight, now_ms()));
                for step in todo {
                    if let Some((name, time_ms)) = perform(&node, step).await {
                        in_flight.insert(name.clone());
                        calls.spawn(call_with_retries(node.clone(), http.clone(), config.gateway.clone(), name, time_ms));
                    }
                }
            }
        }
    }
}

/// Records what `step` asks; the run to call, if any.
async fn perform(node: &ControlPlane, step: Step) -> Option<(String, u64)> {
    match step {
        Step::Start { name, time_ms, missed } => {
            let command = Command::StartScheduleRun {
                name: name.clone(),
                time_ms,
                missed,
            };
            match node.write(command).await {
                Ok(_) => Some((name, time_ms)),
                Err(error) => {
                    tracing::debug!(schedule = name, time = display_ms(time_ms), %error, "did not start the run");
                    None
                }
            }
        }
        Step::Resume { name, time_ms } => {
            tracing::info!(
                schedule = name,
                time = display_ms(time_ms),
                "resuming a run an earlier leader left in flight"
            );
            Some((name, time_ms))
        }
        Step::Skip {
            name,
            through_ms,
            missed,
        } => {
            let command = Command::SkipScheduleTimes {
                name: name.clone(),
                through_ms,
                missed,
            };
            match node.write(command).await {
                Ok(_) => tracing::info!(
                    schedule = name,
                    missed,
                    through = display_ms(through_ms),
                    "skipped missed times"
                ),
                Err(error) => tracing::debug!(schedule = name, %error, "could not record skipped times"),
            }
            None
        }
    }
}

/// Makes the run's call, with up to [`ATTEMPTS`] attempts.
async fn call_with_retries(
    node: Arc<ControlPlane>,
    http: reqwest::Client,
    gateway: String,
    name: String,
    time_ms: u64,
) -> Finished {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let result = call_once(&node, &http, &gateway, &name, time_ms).await;
        let error = match result {
            Ok(()) => {
                return Finished {
                    name,
                    time_ms,
                    outcome: RunOutcome::Ok,
                }
            }
            Err(error) => error,
        };
        let retryable = matches!(&error, Attempt::Call(call) if call.is_retryable());
        tracing::warn!(schedule = name, time = display_ms(time_ms), attempt, error = %error.message(), retryable, "a schedule's call failed");
        if !retryable || attempt >= ATTEMPTS {
            return Finished {
                name,
                time_ms,
                outcome: RunOutcome::Failed {
                    error: format!("after {attempt} attempt(s): {}", error.message()),
                },
            };
        }
        tokio::time::sleep(backoff).await;
        backoff *= 2;
        attempt += 1;
    }
}

/// Why one attempt failed.
enum Attempt {
    /// The schedule (or its service's method) is gone, or the body no longer fits.
    Gone(String),
    Call(CallError),
}

impl Attempt {
    fn message(&self) -> String {
        match self {
            Attempt::Gone(message) => message.clone(),
            Attempt::Call(error) => error.to_string(),
        }
    }
}

async fn call_once(
    node: &ControlPlane,
    http: &reqwest::Client,
    gateway: &str,
    name: &str,
    time_ms: u64,
) -> Result<(), Attempt> {
    // Encoded at every attempt from the registry as it is now: the service may have
    // been redeployed with other descriptors since the schedule was created.
    let (method, request) = node.read(|registry| {
        let schedule = registry
            .schedules
            .get(name)
            .ok_or_else(|| Attempt::Gone(format!("schedule {name:?} was deleted")))?;
        let service = registry
            .services
            .get(&schedule.service)
            .ok_or_else(|| Attempt::Gone(format!("service {:?} was deleted", schedule.service)))?;
        let request =
            encode_call(service, &schedule.method, &schedule.body).map_err(|error| Attempt::Gone(error.to_string()))?;
        Ok((schedule.method.clone(), request))
    })?;
    let metadata = [
        (SCHEDULE_HEADER, name.to_owned()),
        (SCHEDULE_TIME_HEADER, display_ms(time_ms)),
    ];
    grpc_web::call(http, gateway, &method, &request, &metadata, CALL_TIMEOUT)
        .await
        .map(|_| ())
        .map_err(Attempt::Call)
}

/// Records how the run ended; the end again if the record failed for want of a
/// leader or a quorum (a deposed leader's record fails for good, and the new
/// leader resumes the run). A refusal (the schedule was deleted) is final.
async fn record_finish(node: &ControlPlane, finished: Finished) -> Option<Finished> {
    let command = Command::FinishScheduleRun {
        name: finished.name.clone(),
        time_ms: finished.time_ms,
        outcome: finished.outcome.clone(),
    };
    let (name, time) = (&finished.name, display_ms(finished.time_ms));
    match node.write(command).await {
        Ok(_) => {
            let ok = finished.outcome == RunOutcome::Ok;
            tracing::info!(schedule = name, time, ok, "schedule run finished");
            None
        }
        Err(NodeError::Registry(error)) => {
            tracing::warn!(schedule = name, time, %error, "the run's end was refused");
            None
        }
        Err(error) => {
            tracing::warn!(schedule = name, time, %error, "could not record the run's end; retrying");
            Some(finished)
        }
    }
}
