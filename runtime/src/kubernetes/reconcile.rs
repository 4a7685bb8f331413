//! The operator's reconcile, in kube-rs's controller style: for one `StatefulService`
//! it registers the service, applies its Deployment and Service (server-side apply,
//! owned by the resource), carries out the plan over the service's pods (adopt,
//! replace, back off, stop youngest first, scale through the Deployment's scale
//! subresource) and reports the status. A finalizer deregisters the service when
//! the resource is deleted. Only the Raft leader reconciles; errors are retried
//! with backoff by [`error_policy`].

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Pod, Secret, Service},
    },
    chrono::Utc,
};
use kube::{
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::{
        controller::Action,
        finalizer::{finalizer, Event},
    },
    Api, Client, ResourceExt,
};
use serde_json::json;
use strata_control_plane::{
    node::{ControlPlane, NodeError},
    registry::{Command, InstanceState, RegistryError, ServiceSpec},
};

use super::{
    crd::StatefulService,
    objects::{self, Invalid, Observation, OperatorSettings, SERVICE_LABEL},
};
use crate::plan::{
    backoff_delay, plan, Action as Step, Failure, Health, ObservedInstance, Pacing, PlanInput, PlanSettings,
};

/// Added to every `StatefulService`; removed once the service is deregistered.
pub const FINALIZER: &str = "strata.dev/deregister";
/// The field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "strata-control-plane";
/// The annotation that makes the ReplicaSet remove the pods the plan chose first.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// How often a follower looks again whether it leads now.
const FOLLOWER_RECHECK: Duration = Duration::from_secs(5);
/// How often a healthy service is reconciled with no event at all.
const RESYNC: Duration = Duration::from_secs(30);
/// Waiting replicas are reconciled sooner, to notice overdue pods in time.
const RESYNC_WHILE_SCALING: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the control plane: {0}")]
    Registry(#[from] NodeError),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// What the reconciler remembers between rounds while this node leads.
#[derive(Debug, Default)]
struct Memory {
    /// Pods this leader has seen; others found are adopted.
    tracked: BTreeSet<String>,
    pacing: BTreeMap<String, Pacing>,
    /// The latest instance failure per service, shown as `Failing` until it recovers.
    last_failure: BTreeMap<String, String>,
    /// Failed reconciles in a row per service, for the error policy's backoff.
    errors: BTreeMap<String, u32>,
    /// The first failure of a streak, to put in the service's event history.
    unreported: BTreeMap<String, String>,
}

/// What every reconcile shares.
pub struct Context {
    client: Client,
    node: Arc<ControlPlane>,
    settings: OperatorSettings,
    memory: Mutex<Memory>,
}

impl Context {
    pub fn new(client: Client, node: Arc<ControlPlane>, settings: OperatorSettings) -> Self {
        Context {
            client,
            node,
            settings,
            memory: Mutex::default(),
        }
    }

    fn memory(&self) -> MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.settings.namespace)
    }
}

/// Reconciles one `StatefulService` (the controller calls it on every change of the
/// resource, of its Deployment, of the registry, and on requeue).
pub async fn reconcile(service: Arc<StatefulService>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.node.is_leader() {
        // A new leader adopts what it finds, so forget what this node knew.
        *ctx.memory() = Memory::default();
        return Ok(Action::requeue(FOLLOWER_RECHECK));
    }
    let name = service.name_any();
    let unreported = ctx.memory().unreported.remove(&name);
    if let Some(reason) = unreported {
        // The registry, unlike the Kubernetes API, is there: users see it in the events.
        let command = Command::RecordInstanceFailure {
            service: name.clone(),
            instance: format!("deployment/{name}"),
            reason,
        };
        write_ignoring_missing(&ctx.node, command).await?;
    }
    let api: Api<StatefulService> = ctx.api();
    let action = finalizer(&api, FINALIZER, service, |event| async {
        match event {
            Event::Apply(service) => apply(&service, &ctx).await,
            Event::Cleanup(service) => deregister(&service, &ctx).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)))?;
    ctx.memory().errors.remove(&name);
    Ok(action)
}

/// A failed reconcile is retried, later each time it fails again (1 s doubling to a
/// minute), and logged; the first failure of a streak also goes in the service's
/// event history (written by the next attempt). The controller keeps running.
pub fn error_policy(service: Arc<StatefulService>, error: &Error, ctx: Arc<Context>) -> Action {
    let name = service.name_any();
    let mut memory = ctx.memory();
    let failures = memory.errors.entry(name.clone()).or_default();
    *failures += 1;
    let failures = *failures;
    let retry_in = backoff_delay(failures);
    tracing::warn!(service = %name, %error, failures, ?retry_in, "reconcile failed; retrying");
    if failures == 1 {
        let reason = format!("the Kubernetes runtime could not reconcile: {error}; retrying in {retry_in:?}");
        memory.unreported.insert(name, reason);
    }
    Action::requeue(retry_in)
}

async fn apply(service: &StatefulService, ctx: &Context) -> Result<Action, Error> {
    let name = service.name_any();
    let spec = match registry_spec(service, ctx).await? {
        Ok(spec) => spec,
        Err(invalid) => {
            tracing::info!(service = %name, reason = invalid.reason, message = %invalid.message, "cannot run the service");
            report(service, ctx, Some(invalid)).await?;
            // Nothing to retry until the spec (or the secret) changes.
            return Ok(Action::requeue(RESYNC));
        }
    };
    if let Some(invalid) = register(&ctx.node, spec).await? {
        report(service, ctx, Some(invalid)).await?;
        return Ok(Action::requeue(RESYNC));
    }

    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let settings = &ctx.settings;
    ctx.api::<Service>()
        .patch(&name, &apply, &Patch::Apply(objects::service(service, settings)))
        .await?;
    // Before the Deployment, whose pods refer to it.
    ctx.api::<Secret>()
        .patch(
            &objects::credential_secret_name(&name),
            &apply,
            &Patch::Apply(objects::credential_secret(service, settings)),
        )
        .await?;
    let deployment = ctx
        .api::<Deployment>()
        .patch(&name, &apply, &Patch::Apply(objects::deployment(service, settings)))
        .await?;

    // The registry first, then the pods: a pod whose sidecar registered is always listed.
    let (desired, registered) = ctx.node.read(|registry| {
        let desired = registry.services.get(&name).map_or(0, |s| s.desired_replicas);
        let registered: BTreeMap<String, (String, InstanceState)> = registry
            .instances_of(&name)
            .map(|i| (i.id.clone(), (i.service.clone(), i.state)))
            .collect();
        (desired, registered)
    });
    let pods = ctx
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("{SERVICE_LABEL}={name}")))
        .await?;
    let now_ms = u64::try_from(Utc::now().timestamp_millis()).unwrap_or_default();
    let (observed, steps) = {
        let memory = ctx.memory();
        let observed: Vec<ObservedInstance> = pods
            .items
            .iter()
            .map(|pod| observe(pod, &name, &memory.tracked))
            .collect();
        let steps = plan(PlanInput {
            desired: &BTreeMap::from([(name.clone(), desired)]),
            observed: &observed,
            registered: &registered,
            pacing: &memory.pacing,
            now_ms,
            settings: PlanSettings {
                ready_timeout: settings.ready_timeout,
                ..PlanSettings::default()
            },
        });
        (observed, steps)
    };
    {
        // Pods that are gone need no memory.
        let listed: BTreeSet<&str> = observed.iter().map(|o| o.id.as_str()).collect();
        ctx.memory().tracked.retain(|pod| listed.contains(pod.as_str()));
    }
    let mut replicas = observed.iter().filter(|o| o.health == Health::Running).count() as i32;
    for step in steps {
        replicas += carry_out(step, &name, ctx).await?;
    }
    if deployment.spec.as_ref().and_then(|spec| spec.replicas) != Some(replicas) {
        tracing::info!(service = %name, replicas, "scaling the deployment");
        ctx.api::<Deployment>()
            .patch_scale(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await?;
    }
    let failing = ctx.memory().last_failure.get(&name).map(|message| Invalid {
        reason: "InstanceFailing",
        message: message.clone(),
    });
    let ready = report(service, ctx, failing).await?;
    Ok(Action::requeue(if ready { RESYNC } else { RESYNC_WHILE_SCALING }))
}

/// The spec as the registry should hold it, or why it cannot run.
async fn registry_spec(service: &StatefulService, ctx: &Context) -> Result<Result<ServiceSpec, Invalid>, Error> {
    let spec = match objects::registry_spec(service) {
        Ok(spec) => spec,
        Err(invalid) => return Ok(Err(invalid)),
    };
    let Some(store) = &service.spec.store_secret else {
        return Ok(Err(Invalid::spec("spec.storeSecret is missing")));
    };
    let unknown = |message: String| {
        Ok(Err(Invalid {
            reason: "UnknownStoreSecret",
            message,
        }))
    };
    let Some(secret) = ctx.api::<Secret>().get_opt(&store.name).await? else {
        return unknown(format!(
            "spec.storeSecret: no Secret {:?} in namespace {:?}",
            store.name, ctx.settings.namespace
        ));
    };
    let has_key = secret.data.as_ref().is_some_and(|data| data.contains_key(store.key()))
        || secret
            .string_data
            .as_ref()
            .is_some_and(|data| data.contains_key(store.key()));
    if !has_key {
        return unknown(format!(
            "spec.storeSecret: the Secret {:?} has no key {:?}",
            store.name,
            store.key()
        ));
    }
    Ok(Ok(spec))
}

/// Creates or updates the registry's service; an answer of "invalid" is the user's to fix.
async fn register(node: &ControlPlane, spec: ServiceSpec) -> Result<Option<Invalid>, Error> {
    let exists = node.read(|registry| registry.services.contains_key(&spec.name));
    let command = if exists {
        Command::UpdateService {
            name: spec.name.clone(),
            patch: objects::registry_patch(&spec),
        }
    } else {
        Command::CreateService(spec)
    };
    match node.write(command).await {
        Ok(_) => Ok(None),
        Err(NodeError::Registry(RegistryError::Invalid { message, .. })) => Ok(Some(Invalid::spec(message))),
        Err(error) => Err(error.into()),
    }
}

/// One step of the plan; returns how it changes the Deployment's replica count.
async fn carry_out(step: Step, service: &str, ctx: &Context) -> Result<i32, Error> {
    match step {
        Step::Adopt { instance } => {
            tracing::info!(service, pod = %instance, "adopting a pod");
            ctx.memory().tracked.insert(instance);
            Ok(0)
        }
        Step::Replace {
            instance,
            failure,
            retry_in,
            ..
        } => {
            let (reason, counted) = match failure {
                Failure::Exited { reason } => (reason, 0),
                Failure::NotReady { waited } => (format!("the pod {instance} was not ready within {waited:?}"), -1),
            };
            tracing::warn!(service, pod = %instance, %reason, ?retry_in, "replacing a pod");
            ctx.memory().last_failure.insert(service.to_owned(), reason.clone());
            if let Err(error) = ctx.api::<Pod>().delete(&instance, &DeleteParams::default()).await {
                if !is_not_found(&error) {
                    return Err(error.into());
                }
            }
            let reason = format!("{reason}; restarting in {retry_in:?}");
            write_ignoring_missing(
                &ctx.node,
                Command::RecordInstanceFailure {
                    service: service.to_owned(),
                    instance: instance.clone(),
                    reason: reason.clone(),
                },
            )
            .await?;
            write_ignoring_missing(&ctx.node, Command::RemoveInstance { id: instance, reason }).await?;
            Ok(counted)
        }
        Step::BackOff {
            service,
            failures,
            until_ms,
        } => {
            ctx.memory().pacing.insert(
                service,
                Pacing {
                    failures,
                    not_before_ms: until_ms,
                },
            );
            Ok(0)
        }
        Step::Recovered { service } => {
            let mut memory = ctx.memory();
            memory.pacing.remove(&service);
            memory.last_failure.remove(&service);
            Ok(0)
        }
        Step::Orphan { instance } => {
            let command = Command::RemoveInstance {
                id: instance,
                reason: "its pod is gone".into(),
            };
            write_ignoring_missing(&ctx.node, command).await?;
            Ok(0)
        }
        Step::Start { count, .. } => Ok(i32::try_from(count).unwrap_or(i32::MAX)),
        Step::Stop { instance, reason } => {
            // The ReplicaSet removes the cheapest pods first when the scale goes down.
            tracing::info!(service, pod = %instance, reason = reason.as_str(), "stopping a pod");
            let patch = json!({"metadata": {"annotations": {DELETION_COST: "-1000"}}});
            match ctx
                .api::<Pod>()
                .patch(&instance, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                Err(error) if !is_not_found(&error) => Err(error.into()),
                _ => Ok(-1),
            }
        }
    }
}

/// Writes the status: conditions, desired and ready counts. Returns whether the
/// service is ready (or scaled to zero) with no failure.
async fn report(service: &StatefulService, ctx: &Context, failing: Option<Invalid>) -> Result<bool, Error> {
    let name = service.name_any();
    let (desired, ready) = ctx.node.read(|registry| {
        let desired = registry.services.get(&name).map_or(0, |s| s.desired_replicas);
        (desired, registry.ready_replicas(&name))
    });
    let settled = failing.is_none() && ready >= desired;
    let status = objects::status(
        service,
        &Observation {
            desired,
            ready,
            failing,
        },
        Utc::now(),
    );
    ctx.api::<StatefulService>()
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    Ok(settled)
}

/// Deregisters the service; its Deployment and Service go with the resource (they
/// are owned by it).
async fn deregister(service: &StatefulService, ctx: &Context) -> Result<Action, Error> {
    let name = service.name_any();
    tracing::info!(service = %name, "deregistering a deleted service");
    write_ignoring_missing(&ctx.node, Command::DeleteService { name: name.clone() }).await?;
    let mut memory = ctx.memory();
    memory.pacing.remove(&name);
    memory.last_failure.remove(&name);
    Ok(Action::await_change())
}

async fn write_ignoring_missing(node: &ControlPlane, command: Command) -> Result<(), Error> {
    match node.write(command).await {
        Ok(_) | Err(NodeError::Registry(RegistryError::NotFound { .. })) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(response) if response.code == 404)
}

/// Container states that will not get better by waiting.
const STUCK: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// How the plan sees a pod.
fn observe(pod: &Pod, service: &str, tracked: &BTreeSet<String>) -> ObservedInstance {
    let id = pod.name_any();
    let status = pod.status.clone().unwrap_or_default();
    let started = status
        .start_time
        .as_ref()
        .or(pod.metadata.creation_timestamp.as_ref())
        .map_or(0, |time| u64::try_from(time.0.timestamp_millis()).unwrap_or_default());
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
    }
}
