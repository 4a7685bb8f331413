//! `apply`: the registry's only way to change. Deterministic (time comes with the
//! command), no I/O; it returns the answer for the client and the effects for the
//! leader's runtime and the watchers.

use strata_settings::ServiceSettings;

use super::canary::{Canary, CanaryAnalysis, CanarySpec};
use super::command::{Command, Effect, Outcome, RegistryError, ServicePatch, ServiceSpec};
use super::rollout::{AfterFailure, Rollout};
use super::schedule::{self, RunOutcome, ScheduleRun, ScheduleSpec, MAX_SCHEDULES, RUN_HISTORY};
use super::schedule_call;
use super::{
    handoff, validate_name, AuditRecord, EntityInfo, Event, EventKind, IdleTimes, Instance, InstanceState, Registry,
    Revision, Service, Shard, AUDIT_HISTORY_LIMIT, DEFAULT_SHARD_COUNT, EVENT_HISTORY_LIMIT,
};
use strata_settings::RevisionSpec;

/// Who a write is by when no audit record names anyone.
const BY_THE_CONTROL_PLANE: &str = "the control plane";

/// The result of one command: the client's answer and what must happen because of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub response: Result<Outcome, RegistryError>,
    pub effects: Vec<Effect>,
}

/// Applies one command at time `now_ms` (taken from the log entry, never from a clock).
/// A refused command leaves the registry untouched and has no effects.
pub fn apply(registry: &mut Registry, command: Command, now_ms: u64) -> Applied {
    apply_by(registry, command, now_ms, BY_THE_CONTROL_PLANE)
}

/// [`apply`] on behalf of `by` (the principal of an audited write), whom a new
/// revision's record names.
fn apply_by(registry: &mut Registry, command: Command, now_ms: u64, by: &str) -> Applied {
    let mut effects = Vec::new();
    let mut tx = Tx {
        registry,
        effects: &mut effects,
        now_ms,
        by,
    };
    let response = match command {
        Command::CreateService(spec) => tx.create_service(spec),
        Command::UpdateService { name, patch } => tx.update_service(&name, patch),
        Command::DeleteService { name } => tx.delete_service(&name),
        Command::SetDesiredReplicas {
            service,
            replicas,
            reason,
        } => tx.set_desired(&service, replicas, &reason),
        Command::ScaleFromZero { service, reason } => tx.scale_from_zero(&service, &reason),
        Command::RecordIdleTimes { service, idle_times } => tx.record_idle_times(&service, idle_times),
        Command::RegisterInstance {
            id,
            service,
            address,
            admin_address,
            revision,
        } => tx.register_instance(id, service, address, admin_address, revision),
        Command::InstanceReady {
            id,
            descriptor_set,
            entities,
            subscriptions,
        } => tx.instance_ready(&id, descriptor_set, entities, subscriptions),
        Command::DrainInstance { id, reason } => tx.drain_instance(&id, &reason),
        Command::RemoveInstance { id, reason } => tx.remove_instance(&id, &reason),
        Command::RecordClusterEvent { reason } => {
            tx.event(EventKind::Cluster, None, None, reason);
            Ok(Outcome::Recorded)
        }
        Command::RecordInstanceFailure {
            service,
            instance,
            reason,
            revision,
        } => tx.record_instance_failure(&service, &instance, reason, revision),
        Command::ReleaseShards { instance, shards } => tx.release_shards(&instance, &shards),
        Command::ExpireHandoffs => tx.expire_handoffs(),
        Command::Rollback { service, to } => tx.rollback(&service, to),
        Command::SetTraffic {
            service,
            revision,
            percent,
            analysis,
        } => tx.set_traffic(&service, revision, percent, analysis),
        Command::Promote { service } => tx.promote(&service),
        Command::FailCanary {
            service,
            revision,
            reason,
        } => tx.fail_canary(&service, revision, &reason),
        Command::ReportTimers { instance, next_due_ms } => tx.report_timers(&instance, next_due_ms),
        Command::CreateSchedule(spec) => tx.create_schedule(spec),
        Command::DeleteSchedule { name } => tx.delete_schedule(&name),
        Command::StartScheduleRun { name, time_ms, missed } => tx.start_schedule_run(&name, time_ms, missed),
        Command::FinishScheduleRun { name, time_ms, outcome } => tx.finish_schedule_run(&name, time_ms, outcome),
        Command::SkipScheduleTimes {
            name,
            through_ms,
            missed,
        } => tx.skip_schedule_times(&name, through_ms, missed),
        Command::RecordAudit(record) => {
            tx.audit(record);
            Ok(Outcome::Recorded)
        }
        Command::Audited { command, record } => {
            let applied = apply_by(tx.registry, *command, now_ms, &record.principal);
            tx.effects.extend(applied.effects);
            let status = match &applied.response {
                Ok(_) => record.status,
                Err(error) => error.http_status(),
            };
            tx.audit(AuditRecord { status, ..record });
            applied.response
        }
    };
    if response.is_err() {
        debug_assert!(effects.is_empty(), "a refused command must not have effects");
    }
    Applied { response, effects }
}

/// Revision numbers as a reader wants them: `1, 2 and 5`.
fn numbers(kept: &[u64]) -> String {
    let words: Vec<String> = kept.iter().map(u64::to_string).collect();
    match words.split_last() {
        None => "none".into(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// Appends a run to a schedule's history, dropping the oldest past its bound.
fn push_run(runs: &mut std::collections::VecDeque<ScheduleRun>, run: ScheduleRun) {
    runs.push_back(run);
    while runs.len() > RUN_HISTORY {
        runs.pop_front();
    }
}

struct Tx<'a> {
    registry: &'a mut Registry,
    effects: &'a mut Vec<Effect>,
    now_ms: u64,
    /// On whose behalf the command runs.
    by: &'a str,
}

impl Tx<'_> {
    fn create_service(&mut self, spec: ServiceSpec) -> Result<Outcome, RegistryError> {
        validate_name(&spec.name)?;
        let settings = spec.settings.with_defaults();
        settings.validate()?;
        spec.runs.validate()?;
        let runs = spec.runs.normalized();
        validate_runtime(&runs)?;
        if self.registry.services.contains_key(&spec.name) {
            return Err(RegistryError::AlreadyExists {
                what: "service".into(),
                name: spec.name,
            });
        }
        let shard_count = settings.shard_count.unwrap_or(DEFAULT_SHARD_COUNT);
        let mut service = Service {
            name: spec.name.clone(),
            runs: runs.clone(),
            min_scale: 0,
            max_scale: 0,
            target_concurrency: 0,
            scale_to_zero_grace_ms: 0,
            stable_window_ms: None,
            keep_alive: None,
            prewarm_percentile: 0,
            keep_alive_percentile: 0,
            hold_timeout_ms: None,
            revision_history: None,
            idle_times: IdleTimes::default(),
            descriptor_set: None,
            entities: Vec::new(),
            subscriptions: Vec::new(),
            next_timer_due_ms: None,
            generation: 1,
            revisions: vec![Revision {
                number: 1,
                spec: runs,
                created_at_ms: self.now_ms,
                created_by: self.by.to_owned(),
                failure: None,
            }],
            latest_revision: 1,
            serving_revision: 1,
            rollout: None,
            canary: None,
            desired_replicas: 0,
            created_at_ms: self.now_ms,
            updated_at_ms: self.now_ms,
            shards: (0..shard_count).map(|_| Shard::unowned()).collect(),
        };
        service.set_settings(&settings);
        // A new service starts with one instance (or min_scale): the first request
        // should not have to wait for a cold start.
        service.desired_replicas = service.min_scale.max(1).min(service.max_scale);
        let desired_replicas = service.desired_replicas;
        self.registry.services.insert(spec.name.clone(), service.clone());
        self.event(EventKind::ServiceCreated, Some(&spec.name), None, "created".into());
        self.effects.push(Effect::DesiredReplicasChanged {
            service: spec.name.clone(),
            from: 0,
            to: desired_replicas,
        });
        self.effects.push(Effect::RoutesChanged { service: spec.name });
        Ok(Outcome::Service(Box::new(service)))
    }

    fn update_service(&mut self, name: &str, patch: ServicePatch) -> Result<Outcome, RegistryError> {
        let current = self.service(name)?.clone();
        let ServicePatch {
            runs,
            settings,
            replace_settings,
            canary,
        } = patch;
        let shard_count = current.shards.len();
        if settings.shard_count.is_some_and(|count| count as usize != shard_count) {
            return Err(RegistryError::invalid(
                "shard_count",
                format!(
                    "shard_count is fixed once a service exists (it has {shard_count}); delete the service and create it again to change it"
                ),
            ));
        }
        let base = if replace_settings {
            ServiceSettings::default()
        } else {
            current.settings()
        };
        let settings = settings.over(&base).with_defaults();
        settings.validate()?;
        runs.validate()?;
        // What the update does not name keeps running as it did (an empty list
        // clears one); the operator names the image, the CLI the command.
        let runs = runs.over(&current.runs).normalized();
        validate_runtime(&runs)?;
        let changes_what_runs = runs != current.runs;
        if let Some(spec) = &canary {
            if !changes_what_runs {
                return Err(RegistryError::invalid(
                    "traffic",
                    "a canary needs a new revision, and this deploy changes nothing that runs \
                     (to send traffic to a kept revision, set the service's traffic instead)",
                ));
            }
            spec.validate(shard_count)?;
        }
        if changes_what_runs {
            current.refuse_while_moving(canary.is_some())?;
        }
        let mut updated = current.clone();
        updated.set_settings(&settings);
        let new_revision = match (changes_what_runs, canary) {
            (false, _) => None,
            (true, Some(spec)) => {
                let number = updated.record_revision_beside(runs, self.now_ms, self.by);
                updated.canary = Some(Canary {
                    revision: number,
                    percent: spec.percent,
                    started_at_ms: self.now_ms,
                    analysis: spec.analysis,
                });
                Some(number)
            }
            (true, None) => {
                let number = updated.record_revision(runs, self.now_ms, self.by);
                updated.rollout = Some(Rollout {
                    from: current.serving(),
                    to: number,
                    started_at_ms: self.now_ms,
                    failures: 0,
                });
                Some(number)
            }
        };
        if updated == current {
            // Nothing changed: no new revision, no event, so retried PATCHes are harmless.
            return Ok(Outcome::Service(Box::new(current)));
        }
        // A revision history shortened by the settings drops the oldest now.
        updated.prune_revisions();
        updated.generation += 1;
        updated.updated_at_ms = self.now_ms;
        updated.desired_replicas = current.desired_replicas.clamp(updated.min_scale, updated.max_scale);
        self.registry.services.insert(name.to_owned(), updated.clone());
        self.event(
            EventKind::ServiceUpdated,
            Some(name),
            None,
            format!("generation {}", updated.generation),
        );
        if let Some(number) = new_revision {
            self.revision_event(name, number);
            if let Some(canary) = &updated.canary {
                self.canary_event(name, canary, "deployed as a canary");
            }
            // Until an instance of the new revision is ready the old one keeps its shards.
            self.rebalance(name);
        }
        if updated.desired_replicas != current.desired_replicas {
            self.scale_event(
                name,
                current.desired_replicas,
                updated.desired_replicas,
                "scale bounds changed",
            );
        }
        self.effects.push(Effect::RoutesChanged {
            service: name.to_owned(),
        });
        Ok(Outcome::Service(Box::new(updated)))
    }

    fn delete_service(&mut self, name: &str) -> Result<Outcome, RegistryError> {
        let service = self.service(name)?.clone();
        self.registry.services.remove(name);
        let doomed: Vec<String> = self
            .registry
            .instances_of(name)
            .map(|instance| instance.id.clone())
            .collect();
        for id in doomed {
            self.registry.instances.remove(&id);
            self.effects.push(Effect::StopInstance {
                service: name.to_owned(),
                instance: id,
            });
        }
        self.event(EventKind::ServiceDeleted, Some(name), None, "deleted".into());
        if service.desired_replicas != 0 {
            self.effects.push(Effect::DesiredReplicasChanged {
                service: name.to_owned(),
                from: service.desired_replicas,
                to: 0,
            });
        }
        self.effects.push(Effect::RoutesChanged {
            service: name.to_owned(),
        });
        Ok(Outcome::Deleted)
    }

    fn set_desired(&mut self, name: &str, replicas: u32, reason: &str) -> Result<Outcome, RegistryError> {
        let service = self.service(name)?;
        let from = service.desired_replicas;
        let to = replicas.clamp(service.min_scale, service.max_scale);
        if from != to {
            if let Some(service) = self.registry.services.get_mut(name) {
                service.desired_replicas = to;
            }
            self.scale_event(name, from, to, reason);
        }
        Ok(Outcome::Service(Box::new(self.service(name)?.clone())))
    }

    fn scale_from_zero(&mut self, name: &str, reason: &str) -> Result<Outcome, RegistryError> {
        let service = self.service(name)?;
        if service.desired_replicas != 0 {
            return Ok(Outcome::Service(Box::new(service.clone())));
        }
        let replicas = service.min_scale.max(1);
        self.set_desired(name, replicas, reason)
    }

    fn report_timers(&mut self, instance: &str, next_due_ms: Option<u64>) -> Result<Outcome, RegistryError> {
        let service = self
            .registry
            .instances
            .get(instance)
            .map(|known| known.service.clone())
            .ok_or_else(|| RegistryError::not_found("instance", instance))?;
        if let Some(service) = self.registry.services.get_mut(&service) {
            service.next_timer_due_ms = next_due_ms;
        }
        Ok(Outcome::Recorded)
    }

    fn create_schedule(&mut self, spec: ScheduleSpec) -> Result<Outcome, RegistryError> {
        let schedule = schedule::validate(spec, self.now_ms)?;
        let service = self.service(&schedule.service)?;
        schedule_call::encode_call(service, &schedule.method, &schedule.body)?;
        if self.registry.schedules.contains_key(&schedule.name) {
            return Err(RegistryError::AlreadyExists {
                what: "schedule".into(),
                name: schedule.name,
            });
        }
        if self.registry.schedules.len() >= MAX_SCHEDULES {
            return Err(RegistryError::Conflict {
                message: format!("there are {MAX_SCHEDULES} schedules already, the most the registry keeps"),
            });
        }
        self.registry.schedules.insert(schedule.name.clone(), schedule.clone());
        Ok(Outcome::Schedule(Box::new(schedule)))
    }

    fn delete_schedule(&mut self, name: &str) -> Result<Outcome, RegistryError> {
        self.registry
            .schedules
            .remove(name)
            .ok_or_else(|| RegistryError::not_found("schedule", name))?;
        Ok(Outcome::Deleted)
    }

    fn schedule_mut(&mut self, name: &str) -> Result<&mut schedule::Schedule, RegistryError> {
        self.registry
            .schedules
            .get_mut(name)
            .ok_or_else(|| RegistryError::not_found("schedule", name))
    }

    fn start_schedule_run(&mut self, name: &str, time_ms: u64, missed: u32) -> Result<Outcome, RegistryError> {
        let now_ms = self.now_ms;
        let schedule = self.schedule_mut(name)?;
        if schedule.last_time_ms.is_some_and(|last| time_ms <= last) {
            return Err(RegistryError::Conflict {
                message: format!(
                    "schedule {name:?} has run its time {} already",
                    schedule::display_ms(time_ms)
                ),
            });
        }
        for run in schedule
            .runs
            .iter_mut()
            .filter(|run| run.outcome == RunOutcome::Running)
        {
            run.outcome = RunOutcome::Interrupted;
            run.finished_at_ms = Some(now_ms);
        }
        schedule.last_time_ms = Some(time_ms);
        push_run(
            &mut schedule.runs,
            ScheduleRun {
                time_ms,
                started_at_ms: now_ms,
                finished_at_ms: None,
                outcome: RunOutcome::Running,
                missed,
            },
        );
        Ok(Outcome::Recorded)
    }

    fn finish_schedule_run(&mut self, name: &str, time_ms: u64, outcome: RunOutcome) -> Result<Outcome, RegistryError> {
        let now_ms = self.now_ms;
        let schedule = self.schedule_mut(name)?;
        let run = schedule
            .runs
            .iter_mut()
            .find(|run| run.time_ms == time_ms && run.outcome == RunOutcome::Running)
            .ok_or_else(|| RegistryError::Conflict {
                message: format!(
                    "schedule {name:?} has no run in flight for {}",
                    schedule::display_ms(time_ms)
                ),
            })?;
        run.outcome = outcome;
        run.finished_at_ms = Some(now_ms);
        Ok(Outcome::Recorded)
    }

    fn skip_schedule_times(&mut self, name: &str, through_ms: u64, missed: u32) -> Result<Outcome, RegistryError> {
        let now_ms = self.now_ms;
        let schedule = self.schedule_mut(name)?;
        if schedule.last_time_ms.is_some_and(|last| through_ms <= last) {
            return Err(RegistryError::Conflict {
                message: format!("schedule {name:?} is past {} already", schedule::display_ms(through_ms)),
            });
        }
        schedule.last_time_ms = Some(through_ms);
        push_run(
            &mut schedule.runs,
            ScheduleRun {
                time_ms: through_ms,
                started_at_ms: now_ms,
                finished_at_ms: Some(now_ms),
                outcome: RunOutcome::Skipped,
                missed,
            },
        );
        Ok(Outcome::Recorded)
    }

    fn record_idle_times(&mut self, name: &str, idle_times: IdleTimes) -> Result<Outcome, RegistryError> {
        self.service(name)?;
        if let Some(service) = self.registry.services.get_mut(name) {
            service.idle_times = idle_times;
        }
        Ok(Outcome::Recorded)
    }

    fn register_instance(
        &mut self,
        id: String,
        service: String,
        address: String,
        admin_address: String,
        revision: u64,
    ) -> Result<Outcome, RegistryError> {
        if id.is_empty() {
            return Err(RegistryError::invalid("id", "an instance id must not be empty"));
        }
        self.service(&service)?;
        if let Some(existing) = self.registry.instances.get(&id) {
            // A sidecar that retries its registration gets the same answer.
            if existing.service == service && existing.address == address {
                return Ok(Outcome::Instance(existing.clone()));
            }
            return Err(RegistryError::AlreadyExists {
                what: "instance".into(),
                name: id,
            });
        }
        let instance = Instance {
            id: id.clone(),
            service: service.clone(),
            address: address.clone(),
            admin_address,
            state: InstanceState::Starting,
            revision,
            registered_at_ms: self.now_ms,
            state_changed_at_ms: self.now_ms,
        };
        self.registry.instances.insert(id.clone(), instance.clone());
        self.event(
            EventKind::InstanceRegistered,
            Some(&service),
            Some(&id),
            format!("registered at {address}"),
        );
        Ok(Outcome::Instance(instance))
    }

    fn instance_ready(
        &mut self,
        id: &str,
        descriptor_set: Option<String>,
        entities: Vec<EntityInfo>,
        subscriptions: Vec<String>,
    ) -> Result<Outcome, RegistryError> {
        let instance = self.instance(id)?.clone();
        match instance.state {
            InstanceState::Ready => return Ok(Outcome::Instance(instance)),
            InstanceState::Draining => {
                return Err(RegistryError::Conflict {
                    message: format!("instance {id:?} is draining"),
                })
            }
            InstanceState::Starting => {}
        }
        let service_name = instance.service.clone();
        if let Some(service) = self.registry.services.get_mut(&service_name) {
            // Descriptors change only with a new function revision; a new revision of the
            // descriptors is a new revision of the service.
            if descriptor_set.is_some()
                && (service.descriptor_set != descriptor_set
                    || service.entities != entities
                    || service.subscriptions != subscriptions)
            {
                service.descriptor_set = descriptor_set;
                service.entities = entities;
                service.subscriptions = subscriptions;
                service.generation += 1;
                service.updated_at_ms = self.now_ms;
            }
        }
        let ready = self.set_state(id, InstanceState::Ready);
        self.event(EventKind::InstanceReady, Some(&service_name), Some(id), "ready".into());
        self.new_revision_ready(&service_name, instance.revision);
        self.rebalance(&service_name);
        self.effects.push(Effect::RoutesChanged { service: service_name });
        Ok(Outcome::Instance(ready))
    }

    fn drain_instance(&mut self, id: &str, reason: &str) -> Result<Outcome, RegistryError> {
        let instance = self.instance(id)?.clone();
        if instance.state == InstanceState::Draining {
            return Ok(Outcome::Instance(instance));
        }
        let draining = self.set_state(id, InstanceState::Draining);
        self.event(
            EventKind::InstanceDraining,
            Some(&instance.service),
            Some(id),
            reason.to_owned(),
        );
        if instance.state == InstanceState::Ready {
            self.rebalance(&instance.service);
            self.effects.push(Effect::RoutesChanged {
                service: instance.service,
            });
        }
        Ok(Outcome::Instance(draining))
    }

    fn remove_instance(&mut self, id: &str, reason: &str) -> Result<Outcome, RegistryError> {
        let instance = self.instance(id)?.clone();
        self.registry.instances.remove(id);
        self.event(
            EventKind::InstanceRemoved,
            Some(&instance.service),
            Some(id),
            reason.to_owned(),
        );
        if instance.state != InstanceState::Starting {
            self.rebalance(&instance.service);
            self.effects.push(Effect::RoutesChanged {
                service: instance.service,
            });
        }
        Ok(Outcome::Deleted)
    }

    fn record_instance_failure(
        &mut self,
        service: &str,
        instance: &str,
        reason: String,
        revision: u64,
    ) -> Result<Outcome, RegistryError> {
        self.service(service)?;
        self.event(EventKind::InstanceFailed, Some(service), Some(instance), reason.clone());
        let after = self
            .registry
            .services
            .get_mut(service)
            .map_or(AfterFailure::Nothing, |entry| entry.rollout_failure(revision));
        if let AfterFailure::Stopped { from, to, failures } = after {
            self.serve_revision(service, from);
            if let Some(entry) = self.registry.services.get_mut(service) {
                entry.mark_failed(to, &reason);
            }
            self.event(
                EventKind::Rollout,
                Some(service),
                None,
                format!(
                    "rollout to revision {to} stopped: its instances failed {failures} times before one was ready \
                     (the last: {reason}); revision {from} serves"
                ),
            );
        }
        Ok(Outcome::Recorded)
    }

    /// An instance of `revision` became ready: a rollout to it has arrived (an
    /// instance that does not say its revision, as a pod's does not yet, runs the
    /// serving one).
    fn new_revision_ready(&mut self, service: &str, revision: u64) {
        let Some(entry) = self.registry.services.get_mut(service) else {
            return;
        };
        let Some(rollout) = entry.rollout.take_if(|rollout| revision == 0 || rollout.to == revision) else {
            return;
        };
        self.event(
            EventKind::Rollout,
            Some(service),
            None,
            format!(
                "revision {} is ready: shards move to it from revision {}",
                rollout.to, rollout.from
            ),
        );
    }

    /// Makes `number` (a kept revision) the serving one: new instances run it.
    fn serve_revision(&mut self, service: &str, number: u64) {
        let now_ms = self.now_ms;
        if let Some(entry) = self.registry.services.get_mut(service) {
            if let Some(spec) = entry.revision(number).map(|revision| revision.spec.clone()) {
                entry.runs = spec;
            }
            entry.serving_revision = number;
            entry.generation += 1;
            entry.updated_at_ms = now_ms;
        }
        self.rebalance(service);
        self.effects.push(Effect::RoutesChanged {
            service: service.to_owned(),
        });
    }

    fn rollback(&mut self, service: &str, to: Option<u64>) -> Result<Outcome, RegistryError> {
        let current = self.service(service)?;
        let serving = current.serving();
        if let Some(canary) = &current.canary {
            // With a canary, a rollback ends it: its slice goes back to what serves.
            if to.is_some_and(|to| to != serving) {
                return Err(RegistryError::Conflict {
                    message: format!(
                        "revision {} of {service:?} is a canary: roll it back (no --to) or promote it first",
                        canary.revision
                    ),
                });
            }
            let revision = canary.revision;
            let reason = format!(
                "canary revision {revision} rolled back by {}: revision {serving} serves everything",
                self.by
            );
            self.end_canary(service, &reason);
            return Ok(Outcome::Service(Box::new(self.service(service)?.clone())));
        }
        let kept = || -> Vec<u64> { current.revision_records().iter().map(|r| r.number).collect() };
        let target = match to {
            Some(number) => number,
            None => current.rollback_target().ok_or_else(|| RegistryError::Conflict {
                message: format!(
                    "service {service:?} has no earlier revision to roll back to (it keeps {})",
                    numbers(&kept())
                ),
            })?,
        };
        if current.revision(target).is_none() {
            return Err(RegistryError::Missing {
                message: format!(
                    "service {service:?} has no revision {target} (it keeps {})",
                    numbers(&kept())
                ),
            });
        }
        if target == serving {
            return Err(RegistryError::Conflict {
                message: format!("revision {target} of {service:?} serves already"),
            });
        }
        // Instances of the target may run already (a rollback before the new
        // revision was ever ready): then there is nothing to wait for.
        let running = self
            .registry
            .instances_of(service)
            .any(|instance| instance.state == InstanceState::Ready && instance.revision == target);
        if let Some(entry) = self.registry.services.get_mut(service) {
            entry.rollout = (!running).then_some(Rollout {
                from: serving,
                to: target,
                started_at_ms: self.now_ms,
                failures: 0,
            });
        }
        self.serve_revision(service, target);
        self.event(
            EventKind::Rollout,
            Some(service),
            None,
            format!("rollback from revision {serving} to revision {target} by {}", self.by),
        );
        Ok(Outcome::Service(Box::new(self.service(service)?.clone())))
    }

    fn set_traffic(
        &mut self,
        service: &str,
        revision: u64,
        percent: u32,
        analysis: Option<CanaryAnalysis>,
    ) -> Result<Outcome, RegistryError> {
        let current = self.service(service)?;
        let serving = current.serving();
        let canary = current.canary.as_ref().map(|canary| canary.revision);
        match percent {
            0 if canary == Some(revision) => {
                let reason = format!(
                    "canary revision {revision} ended by {}: revision {serving} serves everything",
                    self.by
                );
                self.end_canary(service, &reason);
                return Ok(Outcome::Service(Box::new(self.service(service)?.clone())));
            }
            100 if canary == Some(revision) => return self.promote(service),
            0 | 100 if revision == serving => {
                return Err(RegistryError::Conflict {
                    message: format!("revision {revision} of {service:?} serves already"),
                })
            }
            0 | 100 => {
                return Err(RegistryError::Conflict {
                    message: format!(
                        "revision {revision} of {service:?} is not its canary ({}): 0 and 100 end or promote a canary",
                        canary.map_or("it has none".to_owned(), |canary| format!("revision {canary} is"))
                    ),
                })
            }
            _ => {}
        }
        let spec = CanarySpec { percent, analysis };
        spec.validate(current.shards.len())?;
        if current.revision(revision).is_none() {
            let kept: Vec<u64> = current.revision_records().iter().map(|r| r.number).collect();
            return Err(RegistryError::Missing {
                message: format!(
                    "service {service:?} has no revision {revision} (it keeps {})",
                    numbers(&kept)
                ),
            });
        }
        if revision == serving {
            return Err(RegistryError::Conflict {
                message: format!("revision {revision} of {service:?} serves already: a canary is another revision"),
            });
        }
        if canary.is_none() {
            current.refuse_while_moving(true)?;
        } else if canary != Some(revision) {
            return Err(RegistryError::Conflict {
                message: format!(
                    "revision {} of {service:?} is its canary: promote it or roll it back before another",
                    canary.unwrap_or_default()
                ),
            });
        }
        let now_ms = self.now_ms;
        let Some(entry) = self.registry.services.get_mut(service) else {
            return Err(RegistryError::not_found("service", service));
        };
        let started_at_ms = entry.canary.as_ref().map_or(now_ms, |canary| canary.started_at_ms);
        let canary = Canary {
            revision,
            percent,
            started_at_ms,
            analysis,
        };
        entry.canary = Some(canary.clone());
        entry.generation += 1;
        entry.updated_at_ms = now_ms;
        let what = format!("given {percent}% of the shards by {}", self.by);
        self.canary_event(service, &canary, &what);
        self.rebalance(service);
        self.effects.push(Effect::RoutesChanged {
            service: service.to_owned(),
        });
        Ok(Outcome::Service(Box::new(self.service(service)?.clone())))
    }

    /// The canary serves everything: its instances run already, so the rest of
    /// the shards move to them at once (by hand-off), and the old revision's
    /// instances stop once they own nothing.
    fn promote(&mut self, service: &str) -> Result<Outcome, RegistryError> {
        let current = self.service(service)?;
        let serving = current.serving();
        let Some(canary) = current.canary.clone() else {
            return Err(RegistryError::Conflict {
                message: format!("service {service:?} has no canary to promote (revision {serving} serves everything)"),
            });
        };
        if let Some(entry) = self.registry.services.get_mut(service) {
            entry.canary = None;
        }
        self.serve_revision(service, canary.revision);
        self.event(
            EventKind::Rollout,
            Some(service),
            None,
            format!(
                "canary revision {} promoted by {}: the shards of revision {serving} move to it",
                canary.revision, self.by
            ),
        );
        Ok(Outcome::Service(Box::new(self.service(service)?.clone())))
    }

    /// The analysis found the canary failing: it ends, marked failed with why.
    fn fail_canary(&mut self, service: &str, revision: u64, reason: &str) -> Result<Outcome, RegistryError> {
        let current = self.service(service)?;
        if current.canary.as_ref().is_none_or(|canary| canary.revision != revision) {
            return Err(RegistryError::Conflict {
                message: format!("revision {revision} of {service:?} is no longer its canary"),
            });
        }
        let serving = current.serving();
        if let Some(entry) = self.registry.services.get_mut(service) {
            entry.mark_failed(revision, reason);
        }
        self.end_canary(
            service,
            &format!("canary revision {revision} rolled back: {reason}; revision {serving} serves everything"),
        );
        Ok(Outcome::Service(Box::new(self.service(service)?.clone())))
    }

    /// Ends the canary: its slice is handed back to the serving revision, and its
    /// instances stop once they own nothing.
    fn end_canary(&mut self, service: &str, reason: &str) {
        let now_ms = self.now_ms;
        if let Some(entry) = self.registry.services.get_mut(service) {
            entry.canary = None;
            entry.generation += 1;
            entry.updated_at_ms = now_ms;
        }
        self.event(EventKind::Rollout, Some(service), None, reason.to_owned());
        self.rebalance(service);
        self.effects.push(Effect::RoutesChanged {
            service: service.to_owned(),
        });
    }

    fn canary_event(&mut self, service: &str, canary: &Canary, what: &str) {
        let shards = self
            .registry
            .services
            .get(service)
            .and_then(Service::canary_slice)
            .map_or(0, |(_, count)| count);
        let analysis = canary.analysis.map_or(String::new(), |analysis| {
            let slower = analysis.max_p99_ratio_pct.map_or(String::new(), |pct| {
                format!(
                    " or a p99 above {} times the serving revision's",
                    f64::from(pct) / 100.0
                )
            });
            format!(
                "; rolled back on its own above {}% errors{slower} over {} s (at least {} calls)",
                f64::from(analysis.max_error_rate_bp) / 100.0,
                analysis.window_ms / 1000,
                analysis.min_calls
            )
        });
        self.event(
            EventKind::Rollout,
            Some(service),
            None,
            format!(
                "revision {} {what}: {}% of the traffic ({shards} shard(s)){analysis}",
                canary.revision, canary.percent
            ),
        );
    }

    fn release_shards(&mut self, instance: &str, shards: &[u32]) -> Result<Outcome, RegistryError> {
        let service = self.instance(instance)?.service.clone();
        let eligible = self.registry.eligible_owners(&service);
        let Some(entry) = self.registry.services.get_mut(&service) else {
            return Err(RegistryError::not_found("service", &service));
        };
        let released = handoff::release(&mut entry.shards, instance, shards, &eligible);
        let released = self.placed(&service, released);
        // The next few hand-offs begin.
        if self.rebalance(&service) || released {
            self.effects.push(Effect::RoutesChanged { service });
        }
        Ok(Outcome::Recorded)
    }

    fn expire_handoffs(&mut self) -> Result<Outcome, RegistryError> {
        let names: Vec<String> = self
            .registry
            .services
            .iter()
            .filter(|(_, service)| service.shards.iter().any(|shard| shard.handoff.is_some()))
            .map(|(name, _)| name.clone())
            .collect();
        for name in names {
            let eligible = self.registry.eligible_owners(&name);
            let now_ms = self.now_ms;
            let Some(entry) = self.registry.services.get_mut(&name) else {
                continue;
            };
            let expired = handoff::expire(&mut entry.shards, &eligible, now_ms);
            if self.placed(&name, expired) {
                self.rebalance(&name);
                self.effects.push(Effect::RoutesChanged { service: name });
            }
        }
        Ok(Outcome::Recorded)
    }

    fn service(&self, name: &str) -> Result<&Service, RegistryError> {
        self.registry
            .services
            .get(name)
            .ok_or_else(|| RegistryError::not_found("service", name))
    }

    fn instance(&self, id: &str) -> Result<&Instance, RegistryError> {
        self.registry
            .instances
            .get(id)
            .ok_or_else(|| RegistryError::not_found("instance", id))
    }

    fn set_state(&mut self, id: &str, state: InstanceState) -> Instance {
        let now_ms = self.now_ms;
        let instance = self
            .registry
            .instances
            .get_mut(id)
            .expect("caller checked the instance exists");
        instance.state = state;
        instance.state_changed_at_ms = now_ms;
        instance.clone()
    }

    /// Brings the service's shards toward its eligible owners: moves where the owner
    /// is gone, hand-offs where it is alive (see `handoff.rs`). Whether anything
    /// changed (the caller says the routes did).
    fn rebalance(&mut self, service: &str) -> bool {
        let eligible = self.registry.eligible_owners(service);
        let live = self.registry.live_owners(service);
        let now_ms = self.now_ms;
        let Some(entry) = self.registry.services.get_mut(service) else {
            return false;
        };
        let placement = handoff::place_all(&mut entry.shards, &eligible, &live, now_ms);
        self.placed(service, placement)
    }

    /// Publishes each move of a placement; whether it changed anything.
    fn placed(&mut self, service: &str, placement: handoff::Placement) -> bool {
        let changed = placement.changed();
        for moved in placement.moves {
            self.effects.push(Effect::ShardMoved {
                service: service.to_owned(),
                shard: moved.shard,
                from: moved.from,
                to: moved.to,
                epoch: moved.epoch,
            });
        }
        changed
    }

    fn scale_event(&mut self, service: &str, from: u32, to: u32, reason: &str) {
        self.event(
            EventKind::Scale,
            Some(service),
            None,
            format!("desired replicas {from} -> {to}: {reason}"),
        );
        self.effects.push(Effect::DesiredReplicasChanged {
            service: service.to_owned(),
            from,
            to,
        });
    }

    /// No effect: the audit log is read, never acted upon.
    fn audit(&mut self, record: AuditRecord) {
        let registry = &mut *self.registry;
        registry.next_audit_id += 1;
        if registry.audit.len() >= AUDIT_HISTORY_LIMIT {
            registry.audit.pop_front();
        }
        registry.audit.push_back(AuditRecord {
            id: registry.next_audit_id,
            at_ms: self.now_ms,
            ..record
        });
    }

    fn revision_event(&mut self, service: &str, number: u64) {
        let reason = format!("revision {number} deployed by {}", self.by);
        self.event(EventKind::RevisionCreated, Some(service), None, reason);
    }

    fn event(&mut self, kind: EventKind, service: Option<&str>, instance: Option<&str>, reason: String) {
        let registry = &mut *self.registry;
        registry.next_event_id += 1;
        let event = Event {
            id: registry.next_event_id,
            at_ms: self.now_ms,
            kind,
            service: service.map(str::to_owned),
            instance: instance.map(str::to_owned),
            reason,
        };
        if registry.events.len() == EVENT_HISTORY_LIMIT {
            registry.events.pop_front();
        }
        registry.events.push_back(event.clone());
        self.effects.push(Effect::Event(event));
    }
}

fn validate_runtime(runs: &RevisionSpec) -> Result<(), RegistryError> {
    if runs.runs_something() {
        return Ok(());
    }
    Err(RegistryError::invalid(
        "command",
        "a service needs a command (local runtime) or an image (Kubernetes)",
    ))
}
