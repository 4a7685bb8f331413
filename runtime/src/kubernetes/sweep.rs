//! Deregistration of deleted `StatefulService`s, without a finalizer: the leader
//! compares the services it registered (those run from an image) with the
//! resources the controller's cache holds, and deletes from the registry what has
//! no resource any more. Whatever order an uninstall deletes things in, and whether
//! or not a leader exists at that moment, nothing waits on the control plane: the
//! next leader catches up when it comes.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use kube::{runtime::reflector::Store, ResourceExt};
use strata_control_plane::registry::{Command, Registry};

use super::{
    crd::StatefulService,
    reconcile::{write_ignoring_missing, Context},
};

/// How often the leader compares (an in-memory comparison: no API call).
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// The registry's services that the operator runs and that have no resource.
pub fn gone(registry: &Registry, resources: &BTreeSet<String>) -> Vec<String> {
    registry
        .services
        .values()
        .filter(|service| service.runs.image.is_some() && service.runs.command.is_none())
        .filter(|service| !resources.contains(&service.name))
        .map(|service| service.name.clone())
        .collect()
}

/// Sweeps while this node leads, every [`SWEEP_EVERY`] and as soon as it gains the
/// lead, once the cache has listed every resource (an empty cache before its first
/// list would look like every resource deleted).
pub async fn run(ctx: Arc<Context>, store: Store<StatefulService>) {
    if store.wait_until_ready().await.is_err() {
        return;
    }
    let mut leadership = ctx.node().leadership();
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = leadership.changed() => if changed.is_err() { return },
        }
        if !ctx.node().is_leader() {
            continue;
        }
        let resources: BTreeSet<String> = store.state().iter().map(|service| service.name_any()).collect();
        for name in ctx.node().read(|registry| gone(registry, &resources)) {
            tracing::info!(service = %name, "deregistering a service whose StatefulService is gone");
            match write_ignoring_missing(ctx.node(), Command::DeleteService { name: name.clone() }).await {
                Ok(()) => ctx.forget(&name),
                // Tried again at the next sweep.
                Err(error) => tracing::warn!(service = %name, %error, "could not deregister a deleted service"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use strata_control_plane::registry::{apply, ServiceSpec};

    use super::*;

    fn registry() -> Registry {
        let mut registry = Registry::default();
        for (name, image, command) in [
            ("cart", Some("cart:1"), None),
            ("orders", Some("orders:1"), None),
            ("local", None, Some("run-it")),
        ] {
            let spec = ServiceSpec {
                name: name.into(),
                runs: strata_control_plane::registry::RevisionSpec {
                    image: image.map(Into::into),
                    command: command.map(Into::into),
                    ..Default::default()
                },
                ..ServiceSpec::default()
            };
            apply(&mut registry, Command::CreateService(spec), 1).response.unwrap();
        }
        registry
    }

    #[test]
    fn services_run_from_an_image_without_a_resource_are_gone() {
        let resources = BTreeSet::from(["cart".to_owned()]);
        assert_eq!(gone(&registry(), &resources), ["orders"]);
    }

    #[test]
    fn services_run_by_a_command_are_never_the_operators() {
        assert_eq!(gone(&registry(), &BTreeSet::new()), ["cart", "orders"]);
    }
}
