//! The operator's reconcile, in kube-rs's controller style: for one `StatefulService`
//! it registers the service, applies its objects (server-side apply, owned by the
//! resource, after checking that none of them belongs to someone else), carries out
//! the plan over the service's pods (adopt, replace, back off, stop youngest first,
//! scale through the Deployment's scale subresource) and reports the status and
//! Events. What did not change is not written: no Raft write, no apply, no Secret
//! read and no status patch for a resource reconciled again as it was. Only the Raft
//! leader reconciles; errors are retried with backoff by [`error_policy`]. There is
//! no finalizer: a deleted resource's objects go with it (owner references) and
//! `sweep` deregisters it, so no uninstall order can leave anything stuck.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Pod, Secret, Service},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    chrono::Utc,
};
use kube::{
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::controller::Action,
    Api, Client, Resource, ResourceExt,
};
use serde_json::json;
use strata_control_plane::{
    node::{ControlPlane, NodeError},
    registry::{
        apply as registry_apply, CanarySpec, Command, EventKind, InstanceState, Outcome, Registry, RegistryError,
        RevisionSpec, ServiceSpec,
    },
};

use super::{
    crd::RevisionStatus,
    crd::{StatefulService, StatefulServiceStatus},
    events::{Events, Notice},
    objects::{
        self, deployment_name, Invalid, Observation, OperatorSettings, Revisions, REVISION_LABEL, SERVICE_LABEL,
    },
    observe::{deployment_failure, observe, unschedulable},
    render::{render, Rendered},
};
use crate::plan::{
    backoff_delay, plan, Action as Step, Failure, Health, ObservedInstance, Pacing, PlanInput, PlanSettings,
};

/// The finalizer earlier versions added. It is removed wherever it is found: a
/// finalizer only the control plane removes kept resources (and their namespace)
/// from ever going once the control plane was uninstalled first.
pub const LEGACY_FINALIZER: &str = "strata.dev/deregister";
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
/// Objects whose digest is unchanged are applied again this often anyway, to put
/// back a Service, Secret or NetworkPolicy deleted or edited by hand.
const REAPPLY_EVERY_MS: u64 = 10 * 60 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the control plane: {0}")]
    Registry(#[from] NodeError),
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
    /// Per service: the resource (uid, generation) whose store secret was found.
    secret_checked: BTreeMap<String, (String, i64)>,
    /// Per service: the digest this leader last applied, and when.
    applied: BTreeMap<String, (String, u64)>,
    /// Per service: the resource's uid and the status this leader last wrote. The
    /// controller's cache may not hold it yet when the next reconcile comes; this
    /// leader is the status's only writer.
    reported: BTreeMap<String, (String, StatefulServiceStatus)>,
}

/// What every reconcile shares.
pub struct Context {
    client: Client,
    node: Arc<ControlPlane>,
    settings: OperatorSettings,
    events: Events,
    memory: Mutex<Memory>,
}

impl Context {
    pub fn new(client: Client, node: Arc<ControlPlane>, settings: OperatorSettings) -> Self {
        let events = Events::new(client.clone(), std::env::var("POD_NAME").ok());
        Context {
            client,
            node,
            settings,
            events,
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

    pub(crate) fn node(&self) -> &ControlPlane {
        &self.node
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn settings(&self) -> &OperatorSettings {
        &self.settings
    }

    /// Forgets a service that is gone.
    pub(crate) fn forget(&self, service: &str) {
        let mut memory = self.memory();
        memory.pacing.remove(service);
        memory.last_failure.remove(service);
        memory.secret_checked.remove(service);
        memory.applied.remove(service);
        memory.reported.remove(service);
        memory.errors.remove(service);
    }
}

/// Reconciles one `StatefulService` (the controller calls it on every change of the
/// resource, of its Deployment, of the registry's record of it, and on requeue).
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
            reason: reason.clone(),
            revision: 0,
        };
        write_ignoring_missing(&ctx.node, command).await?;
        ctx.events
            .publish(&service, Notice::ReconcileFailed { error: reason })
            .await;
    }
    if service.finalizers().iter().any(|f| f == LEGACY_FINALIZER) {
        release_legacy_finalizer(&service, &ctx).await?;
    }
    if service.meta().deletion_timestamp.is_some() {
        // Being deleted (another controller's finalizer holds it): nothing to run.
        return Ok(Action::await_change());
    }
    let action = apply(&service, &ctx).await?;
    ctx.memory().errors.remove(&name);
    Ok(action)
}

/// A failed reconcile is retried, later each time it fails again (1 s doubling to a
/// minute), and logged; the first failure of a streak also goes in the service's
/// event history and its Events (written by the next attempt). The controller keeps
/// running.
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

/// Removes the finalizer of earlier versions (deregistering first if the resource
/// is being deleted); from here on `sweep` deregisters deleted resources.
async fn release_legacy_finalizer(service: &StatefulService, ctx: &Context) -> Result<(), Error> {
    let name = service.name_any();
    if service.meta().deletion_timestamp.is_some() {
        write_ignoring_missing(&ctx.node, Command::DeleteService { name: name.clone() }).await?;
        ctx.forget(&name);
    }
    let finalizers: Vec<&String> = service.finalizers().iter().filter(|f| *f != LEGACY_FINALIZER).collect();
    // The resource version makes it a compare-and-swap: a concurrent change fails it
    // with a conflict, and the retry reads the resource again.
    let patch = json!({"metadata": {"resourceVersion": service.resource_version(), "finalizers": finalizers}});
    tracing::info!(service = %name, "removing the finalizer of an earlier version");
    match ctx
        .api::<StatefulService>()
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Err(error) if !is_not_found(&error) => Err(error.into()),
        _ => Ok(()),
    }
}

async fn apply(service: &StatefulService, ctx: &Context) -> Result<Action, Error> {
    let name = service.name_any();
    let spec = match checked_spec(service, ctx).await? {
        Ok(spec) => spec,
        Err(invalid) => return refuse(service, ctx, invalid).await,
    };
    let runs = spec.runs.clone().normalized();
    // Checked with the spec: a resource whose canary fields are wrong is refused above.
    let canary = objects::registry_canary(service).ok().flatten();
    match register(ctx, spec, canary).await? {
        Registration::Refused(invalid) => return refuse(service, ctx, invalid).await,
        Registration::Unchanged => {}
        Registration::Created(revision) => ctx.events.publish(service, Notice::Registered { revision }).await,
        Registration::Updated(revision) => ctx.events.publish(service, Notice::Updated { revision }).await,
    }

    // The registry first, then the pods: a pod whose sidecar registered is always listed.
    let Some(seen) = ctx.node.read(|registry| Registered::of(registry, &name, &runs)) else {
        // Deleted between the write and this read: the sweep deregisters it.
        return Ok(Action::requeue(RESYNC_WHILE_SCALING));
    };
    let rendered = render(service, &ctx.settings, seen.described);
    let deployment = match apply_objects(service, ctx, &rendered).await? {
        Ok(deployment) => deployment,
        Err(invalid) => return refuse(service, ctx, invalid).await,
    };
    let selector = ListParams::default().labels(&format!("{SERVICE_LABEL}={name}"));
    let mut deployments: BTreeMap<u64, Deployment> = BTreeMap::new();
    for other in ctx.api::<Deployment>().list(&selector).await?.items {
        if let Some(revision) = revision_of(&other.metadata).filter(|_| controlled_by(&other.metadata, service)) {
            deployments.insert(revision, other);
        }
    }
    deployments.insert(seen.described, deployment.clone());
    let pods = ctx.api::<Pod>().list(&selector).await?;
    let now_ms = now_ms();
    let (observed, steps) = {
        let memory = ctx.memory();
        let observed: Vec<ObservedInstance> = pods
            .items
            .iter()
            .map(|pod| observe(pod, &name, &memory.tracked, now_ms))
            .collect();
        let steps = plan(PlanInput {
            desired: &BTreeMap::from([(name.clone(), seen.desired)]),
            observed: &observed,
            registered: &seen.instances,
            pacing: &memory.pacing,
            serving: &BTreeMap::from([(name.clone(), seen.serving)]),
            owners: &seen.owners,
            canaries: &seen.canary.map(|canary| (name.clone(), canary)).into_iter().collect(),
            now_ms,
            settings: PlanSettings {
                ready_timeout: ctx.settings.ready_timeout,
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
    // Each revision's Deployment gets as many pods as run of it, after the plan.
    let mut replicas: BTreeMap<u64, i32> = BTreeMap::new();
    for running in observed.iter().filter(|o| o.health == Health::Running) {
        *replicas.entry(running.revision).or_default() += 1;
    }
    let revision_of_pod: BTreeMap<&str, u64> = observed.iter().map(|o| (o.id.as_str(), o.revision)).collect();
    for step in steps {
        let revision = match &step {
            Step::Start { canary, .. } => canary.unwrap_or(seen.serving),
            Step::Stop { instance, .. } | Step::Replace { instance, .. } => {
                revision_of_pod.get(instance.as_str()).copied().unwrap_or_default()
            }
            _ => seen.serving,
        };
        *replicas.entry(revision).or_default() += carry_out(step, revision, service, ctx).await?;
    }
    let mut missing = None;
    for (&revision, &wanted) in &replicas {
        if wanted > 0 && revision != 0 && !deployments.contains_key(&revision) {
            missing = Some(Invalid {
                reason: "RevisionUnavailable",
                message: format!(
                    "revision {revision} should run, but its Deployment {:?} is gone and this resource's spec \
                     describes revision {}: apply the resource with revision {revision}'s spec, or roll back to another",
                    deployment_name(&name, revision),
                    seen.described
                ),
            });
        }
    }
    for (&revision, live) in &deployments {
        let wanted = replicas.get(&revision).copied().unwrap_or(0).max(0);
        scale_revision(service, ctx, revision, live, wanted).await?;
        // A revision the registry no longer keeps cannot be rolled back to: its
        // Deployment goes once it runs nothing.
        if wanted == 0 && revision != seen.described && !seen.kept.contains_key(&revision) {
            tracing::info!(service = %name, revision, "deleting the Deployment of a revision the registry no longer keeps");
            let deleted = ctx
                .api::<Deployment>()
                .delete(&deployment_name(&name, revision), &DeleteParams::default())
                .await;
            if let Err(error) = deleted {
                if !is_not_found(&error) {
                    return Err(error.into());
                }
            }
        }
    }
    let revisions = Revisions {
        serving: seen.serving,
        latest: seen.latest,
        each: deployments
            .keys()
            .filter(|revision| seen.kept.contains_key(revision) || **revision == seen.described)
            .map(|&revision| seen.status_of(&name, revision, replicas.get(&revision).copied().unwrap_or(0)))
            .collect(),
    };
    let failing = ctx
        .memory()
        .last_failure
        .get(&name)
        .map(|message| Invalid {
            reason: "InstanceFailing",
            message: message.clone(),
        })
        .or(missing)
        .or_else(|| deployment_failure(&deployment))
        .or_else(|| unschedulable(&pods.items));
    let ready = report(service, ctx, failing, Some(revisions)).await?;
    Ok(Action::requeue(if ready { RESYNC } else { RESYNC_WHILE_SCALING }))
}

/// What the reconcile reads of the registry about one service, in one read.
struct Registered {
    desired: u32,
    serving: u64,
    latest: u64,
    /// The revision the resource's spec is registered as (its Deployment is applied).
    described: u64,
    /// The revisions the registry keeps (any of them may be rolled back to).
    kept: BTreeMap<u64, String>,
    canary: Option<(u64, u32)>,
    /// The instances that own a shard.
    owners: BTreeSet<String>,
    instances: BTreeMap<String, (String, InstanceState)>,
    /// Per revision: ready instances and owned shards.
    ready: BTreeMap<u64, u32>,
    shards: BTreeMap<u64, u32>,
    shard_count: u32,
}

impl Registered {
    fn of(registry: &Registry, name: &str, runs: &RevisionSpec) -> Option<Registered> {
        let service = registry.services.get(name)?;
        let revisions = service.revision_records();
        let described = revisions
            .iter()
            .rev()
            .find(|revision| revision.spec == *runs)
            .map_or(service.serving(), |revision| revision.number);
        // One pass over the instances: their revisions (for the shards they own),
        // the ready ones per revision, and what the plan reads of them.
        let mut revision_of: BTreeMap<&str, u64> = BTreeMap::new();
        let mut ready = BTreeMap::new();
        let mut instances = BTreeMap::new();
        for instance in registry.instances_of(name) {
            revision_of.insert(instance.id.as_str(), instance.revision);
            if instance.state == InstanceState::Ready {
                *ready.entry(instance.revision).or_default() += 1;
            }
            instances.insert(instance.id.clone(), (instance.service.clone(), instance.state));
        }
        let mut shards = BTreeMap::new();
        for owner in service.shards.iter().filter_map(|shard| shard.owner.as_deref()) {
            *shards
                .entry(revision_of.get(owner).copied().unwrap_or_default())
                .or_default() += 1;
        }
        Some(Registered {
            desired: service.desired_replicas,
            serving: service.serving(),
            latest: service.latest_revision.max(service.serving()),
            described,
            kept: revisions
                .iter()
                .map(|revision| (revision.number, revision.spec.image.clone().unwrap_or_default()))
                .collect(),
            canary: service.canary_replicas(),
            owners: service.shards.iter().filter_map(|shard| shard.owner.clone()).collect(),
            instances,
            ready,
            shards,
            shard_count: service.shards.len() as u32,
        })
    }

    fn status_of(&self, name: &str, revision: u64, replicas: i32) -> RevisionStatus {
        let shards = self.shards.get(&revision).copied().unwrap_or_default();
        RevisionStatus {
            revision,
            deployment: deployment_name(name, revision),
            image: self.kept.get(&revision).cloned().unwrap_or_default(),
            replicas: u32::try_from(replicas).unwrap_or_default(),
            ready_replicas: self.ready.get(&revision).copied().unwrap_or_default(),
            shards,
            percent: (shards * 100).checked_div(self.shard_count).unwrap_or_default(),
        }
    }
}

/// The revision a Deployment's (or a pod's) label names.
fn revision_of(meta: &ObjectMeta) -> Option<u64> {
    meta.labels.as_ref()?.get(REVISION_LABEL)?.parse().ok()
}

/// Scales one revision's Deployment to `wanted` pods, with an Event saying why.
async fn scale_revision(
    service: &StatefulService,
    ctx: &Context,
    revision: u64,
    live: &Deployment,
    wanted: i32,
) -> Result<(), Error> {
    let name = service.name_any();
    let current = live.spec.as_ref().and_then(|spec| spec.replicas).unwrap_or(1);
    if current == wanted {
        return Ok(());
    }
    let deployment = deployment_name(&name, revision);
    tracing::info!(service = %name, %deployment, from = current, to = wanted, "scaling a revision's deployment");
    let scaled = ctx
        .api::<Deployment>()
        .patch_scale(
            &deployment,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": wanted}})),
        )
        .await;
    match scaled {
        Err(error) if is_not_found(&error) => return Ok(()),
        scaled => scaled?,
    };
    let why = ctx.node.read(|registry| last_scale_reason(registry, &name));
    let notice = Notice::Scaled {
        deployment,
        from: current,
        to: wanted,
        why,
    };
    ctx.events.publish(service, notice).await;
    Ok(())
}

/// Reports why the service cannot run and applies nothing; nothing to retry until
/// the spec (or what it refers to) changes.
async fn refuse(service: &StatefulService, ctx: &Context, invalid: Invalid) -> Result<Action, Error> {
    tracing::info!(service = %service.name_any(), reason = invalid.reason, message = %invalid.message, "cannot run the service");
    report(service, ctx, Some(invalid), None).await?;
    Ok(Action::requeue(RESYNC))
}

/// The spec as the registry should hold it, or why it cannot run. The store Secret
/// is read once per generation of the resource (and again after it was missing).
async fn checked_spec(service: &StatefulService, ctx: &Context) -> Result<Result<ServiceSpec, Invalid>, Error> {
    let spec = match objects::registry_spec(service) {
        Ok(spec) => spec,
        Err(invalid) => return Ok(Err(invalid)),
    };
    let Some(store) = &service.spec.store_secret else {
        return Ok(Err(Invalid::spec("spec.storeSecret is missing")));
    };
    let name = service.name_any();
    let this = (
        service.uid().unwrap_or_default(),
        service.meta().generation.unwrap_or_default(),
    );
    if ctx.memory().secret_checked.get(&name) == Some(&this) {
        return Ok(Ok(spec));
    }
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
    ctx.memory().secret_checked.insert(name, this);
    Ok(Ok(spec))
}

/// What registering a spec came to.
enum Registration {
    Unchanged,
    Created(u64),
    Updated(u64),
    /// The registry's answer of "invalid", the user's to fix.
    Refused(Invalid),
}

/// Creates or updates the registry's service, writing to Raft only when the
/// registry's own `apply`, tried on a copy of the service, says something changes.
/// A spec that is already the newest revision changes only the settings: what
/// serves may have moved since (a rollback, a canary rolled back on its own), and
/// applying the resource again must not undo that.
async fn register(ctx: &Context, spec: ServiceSpec, canary: Option<CanarySpec>) -> Result<Registration, Error> {
    let name = spec.name.clone();
    let current = ctx.node.read(|registry| registry.services.get(&name).cloned());
    let command = match current {
        None => Command::CreateService(spec),
        Some(current) => {
            let runs = spec.runs.clone().normalized();
            let deployed = current
                .revision(current.latest_revision)
                .is_some_and(|latest| latest.spec == runs);
            let mut patch = objects::registry_patch(&spec, canary);
            if deployed {
                patch.runs = RevisionSpec::default();
                patch.canary = None;
            }
            let update = Command::UpdateService {
                name: name.clone(),
                patch,
            };
            let mut copy = Registry::default();
            copy.services.insert(name.clone(), current);
            let tried = registry_apply(&mut copy, update.clone(), now_ms());
            if tried.response.is_ok() && tried.effects.is_empty() {
                return Ok(Registration::Unchanged);
            }
            update
        }
    };
    let creating = matches!(command, Command::CreateService(_));
    match ctx.node.write(command).await {
        Ok(Outcome::Service(service)) if creating => Ok(Registration::Created(service.serving())),
        Ok(Outcome::Service(service)) => Ok(Registration::Updated(service.serving())),
        Ok(_) => Ok(Registration::Updated(0)),
        Err(NodeError::Registry(RegistryError::Invalid { message, .. })) => {
            Ok(Registration::Refused(Invalid::spec(message)))
        }
        Err(error) => Err(error.into()),
    }
}

/// Applies the rendered objects unless the Deployment already carries their digest
/// (and this leader applied them lately), after checking that every one of them is
/// absent or controlled by this resource. Returns the Deployment as it is.
async fn apply_objects(
    service: &StatefulService,
    ctx: &Context,
    rendered: &Rendered,
) -> Result<Result<Deployment, Invalid>, Error> {
    let name = service.name_any();
    let digest = rendered.digest();
    let deployment_name = rendered.deployment.name_any();
    let live = ctx.api::<Deployment>().get_opt(&deployment_name).await?;
    let applied_lately = ctx
        .memory()
        .applied
        .get(&name)
        .is_some_and(|(applied, at)| *applied == digest && now_ms().saturating_sub(*at) < REAPPLY_EVERY_MS);
    if let Some(live) = &live {
        let unchanged = controlled_by(&live.metadata, service) && Rendered::deployment_digest(live) == Some(&digest);
        if unchanged && applied_lately {
            return Ok(Ok(live.clone()));
        }
    }

    // Never take over what is someone else's (Knative's `NotOwned`).
    let secret_name = rendered.credential_secret.name_any();
    let existing = [
        (
            "Service",
            ctx.api::<Service>().get_opt(&name).await?.map(|o| o.metadata),
        ),
        (
            "Secret",
            ctx.api::<Secret>().get_opt(&secret_name).await?.map(|o| o.metadata),
        ),
        (
            "NetworkPolicy",
            ctx.api::<NetworkPolicy>().get_opt(&name).await?.map(|o| o.metadata),
        ),
        ("Deployment", live.map(|d| d.metadata)),
    ];
    for (kind, meta) in existing {
        let Some(meta) = meta else { continue };
        if !controlled_by(&meta, service) {
            return Ok(Err(Invalid {
                reason: "ResourceNotOwned",
                message: format!(
                    "there is already a {kind} {:?} in namespace {:?} that this StatefulService does not own; \
                     rename the StatefulService, or delete the {kind} if it is left over",
                    meta.name.unwrap_or_default(),
                    ctx.settings.namespace
                ),
            }));
        }
    }

    tracing::info!(service = %name, %digest, "applying the service's objects");
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    ctx.api::<Service>()
        .patch(&name, &apply, &Patch::Apply(&rendered.service))
        .await?;
    // Before the Deployment, whose pods refer to it.
    ctx.api::<Secret>()
        .patch(&secret_name, &apply, &Patch::Apply(&rendered.credential_secret))
        .await?;
    ctx.api::<NetworkPolicy>()
        .patch(&name, &apply, &Patch::Apply(&rendered.network_policy))
        .await?;
    let deployment = ctx
        .api::<Deployment>()
        .patch(&deployment_name, &apply, &Patch::Apply(&rendered.deployment))
        .await?;
    ctx.memory().applied.insert(name, (digest, now_ms()));
    Ok(Ok(deployment))
}

/// Whether `meta`'s controller is `service` (the same uid: a resource deleted and
/// made again under the same name owns nothing of its predecessor's).
fn controlled_by(meta: &ObjectMeta, service: &StatefulService) -> bool {
    let uid = service.uid();
    meta.owner_references
        .iter()
        .flatten()
        .any(|owner| owner.controller == Some(true) && Some(&owner.uid) == uid.as_ref())
}

/// The autoscaler's (or the registry's) words for the latest change of the service's
/// desired count.
fn last_scale_reason(registry: &Registry, service: &str) -> String {
    registry
        .events
        .iter()
        .rev()
        .find(|event| event.kind == EventKind::Scale && event.service.as_deref() == Some(service))
        .map_or_else(
            || "the plan converged on the desired count".to_owned(),
            |event| event.reason.clone(),
        )
}

/// One step of the plan, about `revision`; returns how it changes the replica count
/// of that revision's Deployment.
async fn carry_out(step: Step, revision: u64, service: &StatefulService, ctx: &Context) -> Result<i32, Error> {
    let name = service.name_any();
    let name = name.as_str();
    match step {
        Step::Adopt { instance } => {
            tracing::info!(service = name, pod = %instance, "adopting a pod");
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
                Failure::NotReady { waited } => (
                    format!("the pod {instance} was not ready within {waited:?} of its containers' start"),
                    -1,
                ),
            };
            tracing::warn!(service = name, pod = %instance, %reason, ?retry_in, "replacing a pod");
            ctx.memory().last_failure.insert(name.to_owned(), reason.clone());
            if let Err(error) = ctx.api::<Pod>().delete(&instance, &DeleteParams::default()).await {
                if !is_not_found(&error) {
                    return Err(error.into());
                }
            }
            let reason = format!("{reason}; restarting in {retry_in:?}");
            let notice = Notice::PodReplaced {
                pod: instance.clone(),
                reason: reason.clone(),
            };
            ctx.events.publish(service, notice).await;
            write_ignoring_missing(
                &ctx.node,
                Command::RecordInstanceFailure {
                    service: name.to_owned(),
                    instance: instance.clone(),
                    reason: reason.clone(),
                    revision,
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
            tracing::info!(service = name, pod = %instance, reason = reason.as_str(), "stopping a pod");
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

/// Writes the status (conditions, desired and ready counts) if it changed, with an
/// Event when `Failing` turns true or false. Returns whether the service is ready
/// (or scaled to zero) with no failure.
async fn report(
    service: &StatefulService,
    ctx: &Context,
    failing: Option<Invalid>,
    revisions: Option<Revisions>,
) -> Result<bool, Error> {
    let name = service.name_any();
    let (desired, ready) = ctx.node.read(|registry| {
        let desired = registry.services.get(&name).map_or(0, |s| s.desired_replicas);
        (desired, registry.ready_replicas(&name))
    });
    let settled = failing.is_none() && ready >= desired;
    let uid = service.uid().unwrap_or_default();
    let written = ctx
        .memory()
        .reported
        .get(&name)
        .filter(|(of, _)| *of == uid)
        .map(|(_, status)| status.clone());
    let mut current = service.clone();
    if written.is_some() {
        current.status = written;
    }
    let status = objects::status(
        &current,
        &Observation {
            desired,
            ready,
            failing: failing.clone(),
            revisions,
        },
        Utc::now(),
    );
    if current.status.as_ref() == Some(&status) {
        return Ok(settled);
    }
    let failing_before = current
        .status
        .iter()
        .flat_map(|status| &status.conditions)
        .find(|c| c.type_ == "Failing")
        .map(|c| (c.status == "True", c.reason.clone(), c.message.clone()));
    ctx.api::<StatefulService>()
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    ctx.memory().reported.insert(name, (uid, status));
    match (failing, failing_before) {
        (Some(invalid), Some((true, reason, message))) if reason == invalid.reason && message == invalid.message => {}
        (Some(invalid), _) => ctx.events.publish(service, Notice::Failing(invalid)).await,
        (None, Some((true, _, _))) => ctx.events.publish(service, Notice::Recovered).await,
        (None, _) => {}
    }
    Ok(settled)
}

pub(crate) async fn write_ignoring_missing(node: &ControlPlane, command: Command) -> Result<(), Error> {
    match node.write(command).await {
        Ok(_) | Err(NodeError::Registry(RegistryError::NotFound { .. })) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(response) if response.code == 404)
}

fn now_ms() -> u64 {
    u64::try_from(Utc::now().timestamp_millis()).unwrap_or_default()
}
