//! The sidecar role end to end: open the store, discover the function, build the
//! service model, wire entities, actions and the routing of forwards and side
//! effects, and serve until shutdown. `strata proxy` is a thin shell over [`run`].

mod action;
mod dispatch;
mod effects;
pub(crate) mod entity;
mod eventing;
mod function;
mod membership;
mod revision_header;
mod timer_scope;
mod timers;
mod wake;

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, OnceLock, Weak},
    time::Duration,
};

use strata_tasks::Tasks;
use tokio::net::TcpListener;

use self::{
    action::Actions,
    dispatch::{Dispatcher, OutcomeTimers, Owned},
    effects::{Effects, Router},
    entity::{Entities, SessionContext, DEFAULT_COMMAND_TIMEOUT},
    eventing::{Eventing, Pacing},
    function::{DiscoveryError, FunctionClient},
    membership::Membership,
    timer_scope::TimerScope,
    timers::{NextDueReport, TimerRunner},
    wake::{spawn_sweeps, Waker, WakingStore},
};
pub use self::{entity::EntityLimits, membership::MembershipConfig};
use crate::{
    admin,
    call::Commands,
    ingress::{self, Ingress},
    metrics::Metrics,
    model::{Catalog, MethodModel, ModelError, ServiceModel, Targets},
    readiness::Readiness,
    routing::{control_plane::ControlPlaneError, hold::Holds, outbound::Outbound, routes::RoutedTargets},
    trace::Role,
};

/// How long a stopping sidecar waits for its background tasks (admin listener,
/// route follower) before aborting them.
const TASKS_GRACE: Duration = Duration::from_secs(5);

/// The steps of a start that `/readyz` names while it waits for them.
const STORE_OPEN: &str = "the store";
const FUNCTION_DISCOVERED: &str = "the function's discovery";
const REGISTERED: &str = "registration with the control plane";

/// How many forwards and side effects to services at zero may wait for them, and
/// for how long, in a managed sidecar.
const HOLD_CAPACITY: usize = 1000;
const HOLD_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the sidecar needs to start. Defaults follow CloudState's proxy.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    pub function_host: String,
    pub function_port: u16,
    pub listen: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (port 0: any free
    /// port), never on `listen`.
    pub admin_listen: SocketAddr,
    pub store_url: String,
    pub max_body: usize,
    /// How long to keep retrying discovery while the function starts (and the
    /// store and the control plane, while they are not up yet).
    pub discovery_patience: Duration,
    /// How long the function may take to answer one command (a client's
    /// shorter `grpc-timeout` wins).
    pub command_timeout: Duration,
    /// Bounds on entity mailboxes and on active entities.
    pub entity_limits: EntityLimits,
    /// Set when the sidecar is part of a deployment run by a control plane;
    /// `None` for a standalone proxy, which owns every entity.
    pub membership: Option<MembershipConfig>,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        Self {
            function_host: "127.0.0.1".into(),
            function_port: 8080,
            listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            store_url: "sqlite://.strata/strata.db".into(),
            max_body: ingress::DEFAULT_MAX_BODY,
            discovery_patience: Duration::from_secs(60),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            entity_limits: EntityLimits::default(),
            membership: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error(transparent)]
    Store(#[from] strata_store::StoreError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Membership(#[from] ControlPlaneError),
}

/// Discovers the function and serves it until `shutdown` resolves; then stops
/// taking requests and lets those in flight finish.
pub async fn run(
    config: SidecarConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SidecarError> {
    let function = FunctionClient::new(&config.function_host, config.function_port)?;
    let tasks = Tasks::default();
    let admin_listener = admin::bind(config.admin_listen)
        .await
        .map_err(|source| SidecarError::Listen {
            addr: config.admin_listen,
            source,
        })?;
    let admin_addr = admin_listener.local_addr().map_err(SidecarError::Serve)?;
    // The admin listener serves from now on: alive (`/healthz`) while the rest
    // starts, ready (`/readyz`) once it serves.
    let metrics = Arc::new(Metrics::new());
    let opened_store = Arc::new(OnceLock::new());
    let readiness = Readiness::waiting_for(match config.membership {
        Some(_) => &[STORE_OPEN, FUNCTION_DISCOVERED, REGISTERED],
        None => &[STORE_OPEN, FUNCTION_DISCOVERED],
    });
    tasks.spawn(
        "admin listener",
        admin::serve(
            admin_listener,
            admin::Admin {
                metrics: metrics.clone(),
                store: opened_store.clone(),
                readiness: readiness.clone(),
            },
            tasks.stopping().wait(),
        ),
    );
    tracing::info!(addr = %admin_addr, "admin listener (metrics, health, readiness) serving");
    // Opening the store, registering and discovering (and building the model from
    // what the function declares) wait on the disk and on two other processes (the
    // control plane, the function); a cold start waits for all three: side by
    // side, each as long as discovery may take (a store or a control plane that
    // is not up yet is waited for, as the function is). Once registered, the
    // sidecar follows the routes at once, so the snapshot that gives it its
    // shards finds the watch open and the routes it already holds up to date.
    let open = async {
        let store = strata_store::open_when_up(&config.store_url, Some(config.discovery_patience)).await?;
        readiness.done(STORE_OPEN);
        Ok::<_, SidecarError>(store)
    };
    // Told when the control plane no longer knows this instance: it stops.
    let forgotten = Arc::new(tokio::sync::Notify::new());
    let register = async {
        Ok::<_, SidecarError>(match config.membership.clone() {
            Some(mut membership) => {
                membership.admin_advertise = admin::advertised_beside(&membership.advertise, admin_addr);
                let membership = Arc::new(Membership::register(membership, config.discovery_patience).await?);
                let (follower, stopping) = (membership.clone(), tasks.stopping());
                tasks.spawn("route follower", async move {
                    tokio::select! {
                        () = stopping.wait() => {}
                        () = follower.follow_routes() => {}
                    }
                });
                // Heartbeats start with the registration: the leader removes an
                // instance silent for its heartbeat timeout, starting or not, and
                // the store or the function may keep this one starting longer.
                let (heart, stopping, forgotten) = (membership.clone(), tasks.stopping(), forgotten.clone());
                tasks.spawn("heartbeat", async move {
                    tokio::select! {
                        () = stopping.wait() => {}
                        () = heart.heartbeat_until_forgotten() => forgotten.notify_one(),
                    }
                });
                readiness.done(REGISTERED);
                Some(membership)
            }
            None => None,
        })
    };
    let discover = async {
        let spec = function.discover(config.discovery_patience).await?;
        let model = ServiceModel::from_spec(&spec)?;
        readiness.done(FUNCTION_DISCOVERED);
        Ok::<_, SidecarError>((spec, model))
    };
    let (store, membership, (spec, model)) = tokio::try_join!(open, register, discover)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| SidecarError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(SidecarError::Serve)?;
    // There is something to route to as soon as the listener is bound: connections
    // wait in its backlog until it is served, just below, and commands wait for
    // the shards anyway. So the ready report (a registry write) travels while the
    // rest is wired.
    let ready = membership.clone().map(|membership| {
        let (spec, descriptor_set, logs) = (spec.clone(), model.descriptor_set.clone(), model.subscribed_logs());
        tokio::spawn(async move { membership.report_ready(&spec, descriptor_set, logs).await })
    });
    for reason in &model.skipped {
        function.report_error(reason.clone());
    }
    let services: Vec<&str> = model.service_names().collect();
    tracing::info!(?services, function = function.address(), "discovered the user function");
    let model = Arc::new(model);
    // In a deployment, events this sidecar commits wake their subscribers at zero.
    let store: Arc<dyn strata_store::Store> = match &membership {
        Some(membership) => {
            let waker = Waker::start(membership.routes(), membership.client(), &tasks);
            spawn_sweeps(
                waker.clone(),
                store.clone(),
                model.event_logs(),
                membership.ownership(),
                &tasks,
            );
            Arc::new(WakingStore { inner: store, waker })
        }
        None => store,
    };
    // Forwards and side effects: within the function for a standalone proxy;
    // anywhere in the deployment (routed like the gateway does) for a managed one.
    let (targets, deployment): (Arc<dyn Targets>, Option<Arc<dyn Commands>>) = match &membership {
        Some(membership) => (
            Arc::new(LocalThenRouted {
                local: model.clone(),
                routed: RoutedTargets(membership.routes()),
            }),
            Some(Arc::new(Outbound::with_control_plane(
                membership.routes(),
                metrics.clone(),
                Holds::new(HOLD_CAPACITY, HOLD_TIMEOUT, metrics.clone()),
                membership.client(),
            ))),
        ),
        None => (model.clone(), None),
    };
    // Timers belong to the deployment and move with its shards; a standalone
    // sidecar owns them all.
    let timer_scope = Arc::new(match (&membership, &config.membership) {
        (Some(membership), Some(settings)) => {
            let ownership = membership.ownership();
            TimerScope::managed(
                settings.service.clone(),
                Box::new(move || ownership.borrow().shard_count),
            )
        }
        _ => TimerScope::standalone(),
    });
    let (detached, detached_outcomes) = tokio::sync::mpsc::unbounded_channel();
    let entities = Arc::new(Entities::with_limits(
        SessionContext {
            detached,
            function: function.clone(),
            store: store.clone(),
            metrics: metrics.clone(),
            targets: targets.clone(),
            command_timeout: config.command_timeout,
            // A standalone sidecar is the one replica of everything it serves.
            instance_id: config
                .membership
                .as_ref()
                .map_or_else(|| "standalone".to_owned(), |m| m.instance_id.clone()),
            timers: timer_scope.clone(),
        },
        config.entity_limits,
    ));
    let owned = match (&membership, &config.membership) {
        (Some(membership), Some(settings)) => Some(Owned {
            ownership: membership.ownership(),
            instance_id: settings.instance_id.clone(),
        }),
        _ => None,
    };
    let dispatcher = Arc::new_cyclic(|own: &Weak<Dispatcher>| {
        let router = match deployment {
            Some(deployment) => Router::Shared(deployment),
            None => Router::Owner(own.clone() as Weak<dyn Commands>),
        };
        Dispatcher {
            entities: entities.clone(),
            actions: Actions::new(function.clone(), targets.clone(), config.command_timeout),
            owned,
            effects: Effects::new(router, metrics.clone()),
            timers: OutcomeTimers {
                scope: timer_scope.clone(),
                store: store.clone(),
            },
        }
    });
    // Due timers are called like side effects, through the same router.
    let report = match (&membership, &config.membership) {
        (Some(membership), Some(settings)) => Some(Arc::new(NextDueReport::new(
            membership.client(),
            settings.instance_id.clone(),
        ))),
        _ => None,
    };
    let timer_runner = Arc::new(TimerRunner {
        store: store.clone(),
        scope: timer_scope.clone(),
        ownership: membership.as_ref().map(|m| m.ownership()),
        router: dispatcher.effects.router(),
        targets,
        call_timeout: config.command_timeout,
        metrics: metrics.clone(),
        report: report.clone(),
    });
    let eventing = Arc::new(Eventing {
        store: store.clone(),
        commands: dispatcher.clone(),
        metrics: metrics.clone(),
        ownership: membership.as_ref().map(|m| m.ownership()),
        pacing: Pacing::default(),
    });
    dispatch::perform_detached(dispatcher.effects.clone(), detached_outcomes);
    let app = revision_header::with_revision_header(
        ingress::router(Ingress {
            role: Role::Sidecar,
            catalog: Arc::new(Catalog::new(vec![model.clone()])),
            commands: dispatcher,
            metrics: metrics.clone(),
            max_body: config.max_body,
        }),
        config.membership.as_ref().map_or(0, |membership| membership.revision),
    );
    let _ = opened_store.set(store.clone());
    if let Some(membership) = &membership {
        membership.passivate_lost_shards(entities.clone());
    }
    if let Some(ready) = ready {
        let reported = ready
            .await
            .unwrap_or_else(|failed| std::panic::resume_unwind(failed.into_panic()));
        reported?;
    }
    // Subscriptions start once the function is served: their runner waits for
    // shard 0 in a deployment (see `eventing`). So do timers.
    eventing.spawn(&model.subscriptions, &tasks);
    let stopping = tasks.stopping();
    tasks.spawn("timers", async move {
        tokio::select! {
            () = stopping.wait() => {}
            () = timer_runner.run() => {}
        }
    });
    let drain_store = store.clone();
    let drain_service = timer_scope.service.clone();
    readiness.ready();
    tracing::info!(%addr, "proxy ready");
    let stop = async move {
        tokio::select! {
            () = shutdown => {}
            () = forgotten.notified() => {}
        }
        readiness.draining();
        if let Some(membership) = &membership {
            // Hand the shards over before the listener closes; in-flight commands finish.
            membership
                .drain("the sidecar is shutting down", Duration::from_secs(5))
                .await;
        }
        // The last instance to leave leaves the service's earliest timer behind,
        // so the service is started again in time for it.
        if let (Some(report), Some(timers)) = (&report, drain_store.timers()) {
            report.report_now(timers, &drain_service).await;
        }
    };
    let served = axum::serve(ingress::without_delay(listener), app)
        .with_graceful_shutdown(stop)
        .await
        .map_err(SidecarError::Serve);
    tasks.stop(TASKS_GRACE).await;
    served
}

/// The targets of a managed sidecar's function: its own methods first (known
/// before the routes list them), then every deployed service's.
struct LocalThenRouted {
    local: Arc<ServiceModel>,
    routed: RoutedTargets,
}

impl Targets for LocalThenRouted {
    fn method(&self, service: &str, method: &str) -> Option<Arc<MethodModel>> {
        Targets::method(self.local.as_ref(), service, method).or_else(|| self.routed.method(service, method))
    }
}
