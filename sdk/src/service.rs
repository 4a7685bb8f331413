//! The user function as a whole: its descriptors, its entities and actions, and the
//! gRPC server for discovery and every entity and action protocol, listening on
//! `HOST`/`PORT` and stopping on SIGTERM or Ctrl-C. What happens inside a stream
//! belongs to the session modules and `action_protocol`.

use std::{future::Future, sync::Arc, time::Duration};

use strata_proto::{
    cloudstate::{
        action::action_protocol_server::ActionProtocolServer,
        crdt::{
            crdt_server::{Crdt as CrdtProtocol, CrdtServer},
            CrdtStreamIn, CrdtStreamOut,
        },
        entity_discovery_server::EntityDiscoveryServer,
        eventsourced::{
            event_sourced_server::{EventSourced, EventSourcedServer},
            EventSourcedStreamIn, EventSourcedStreamOut,
        },
        valueentity::{
            value_entity_server::{ValueEntity as ValueEntityProtocol, ValueEntityServer},
            ValueEntityStreamIn, ValueEntityStreamOut,
        },
        EntitySpec, ServiceInfo,
    },
    PROTOCOL_MAJOR_VERSION, PROTOCOL_MINOR_VERSION,
};
use tokio::{net::TcpListener, sync::watch};
use tokio_stream::{wrappers::ReceiverStream, wrappers::TcpListenerStream, StreamExt};
use tonic::{transport::Server, Request, Response, Status, Streaming};
use tracing::{field::Empty, info, info_span, warn, Span};

use crate::{
    action::{Action, ActionService},
    action_protocol::ActionEndpoint,
    crdt::{CrdtEntity, CrdtService},
    crdt_session::CrdtKind,
    discovery::Discovery,
    entity_session::{EntitySession, Protocol},
    entity_stream,
    event_sourced_session::EventSourcedKind,
    registry::{Registration, Registry},
    value_entity_session::ValueKind,
    EventSourcedEntity, EventSourcedService, ListenConfig, ServeError, ValueEntity, ValueEntityService,
};

/// How long open entity streams may run on after a shutdown signal.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A user function: the entities it serves and the descriptors of their services.
///
/// ```no_run
/// # async fn run(descriptors: &'static [u8], cart: strata_sdk::EventSourcedService<impl strata_sdk::EventSourcedEntity>) -> Result<(), strata_sdk::ServeError> {
/// strata_sdk::Service::new(descriptors)
///     .service_name("shopping-cart")
///     .event_sourced(cart)
///     .serve()
///     .await
/// # }
/// ```
pub struct Service {
    descriptor: Vec<u8>,
    service_name: Option<String>,
    service_version: String,
    registrations: Vec<Registration>,
    shutdown_grace: Duration,
}

impl Service {
    /// A function whose services are described by `file_descriptor_set`: a serialized
    /// `google.protobuf.FileDescriptorSet` of the user's protos with all their imports,
    /// as `protox::compile` produces at build time.
    pub fn new(file_descriptor_set: impl Into<Vec<u8>>) -> Self {
        Self {
            descriptor: file_descriptor_set.into(),
            service_name: None,
            service_version: String::new(),
            registrations: Vec::new(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }

    /// The name discovery reports for this function (default: the executable's name).
    #[must_use]
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// The version discovery reports for this function (default: empty).
    #[must_use]
    pub fn service_version(mut self, version: impl Into<String>) -> Self {
        self.service_version = version.into();
        self
    }

    /// Serves an event-sourced entity type.
    #[must_use]
    pub fn event_sourced<E: EventSourcedEntity>(mut self, service: EventSourcedService<E>) -> Self {
        self.registrations.push(service.into());
        self
    }

    /// Serves a value entity type.
    #[must_use]
    pub fn value_entity<E: ValueEntity>(mut self, service: ValueEntityService<E>) -> Self {
        self.registrations.push(service.into());
        self
    }

    /// Serves a CRDT entity type.
    #[must_use]
    pub fn crdt<E: CrdtEntity>(mut self, service: CrdtService<E>) -> Self {
        self.registrations.push(service.into());
        self
    }

    /// Serves an action.
    #[must_use]
    pub fn action<A: Action>(mut self, service: ActionService<A>) -> Self {
        self.registrations.push(service.into());
        self
    }

    /// How long entity streams may stay open after a shutdown signal before the server
    /// stops anyway (default 10 s). Proxies keep streams open while entities are active.
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Listens on `HOST`:`PORT` (default `127.0.0.1:8080`) until SIGTERM or Ctrl-C.
    pub async fn serve(self) -> Result<(), ServeError> {
        let config = ListenConfig::from_env()?;
        self.serve_on(&config).await
    }

    /// Listens on `config`'s address until SIGTERM or Ctrl-C.
    pub async fn serve_on(self, config: &ListenConfig) -> Result<(), ServeError> {
        // Check the entities before binding, so a mistake is reported first.
        let prepared = self.prepare()?;
        let address = config.address();
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|reason| ServeError::Bind { address, reason })?;
        prepared.run(listener, os_shutdown_signal()).await
    }

    /// Serves on an already bound listener until SIGTERM or Ctrl-C.
    pub async fn serve_with_listener(self, listener: TcpListener) -> Result<(), ServeError> {
        self.serve_with_shutdown(listener, os_shutdown_signal()).await
    }

    /// Serves on an already bound listener until `shutdown` completes (for tests and
    /// embedding).
    pub async fn serve_with_shutdown(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        self.prepare()?.run(listener, shutdown).await
    }

    fn prepare(self) -> Result<Prepared, ServeError> {
        let registry = Registry::new(&self.descriptor, self.registrations)?;
        let service_name = self.service_name.unwrap_or_else(executable_name);
        let spec = EntitySpec {
            proto: self.descriptor,
            entities: registry.entities(),
            service_info: Some(ServiceInfo {
                service_name,
                service_version: self.service_version,
                service_runtime: format!("rust {}", env!("STRATA_SDK_RUSTC_VERSION")),
                support_library_name: env!("CARGO_PKG_NAME").to_owned(),
                support_library_version: env!("CARGO_PKG_VERSION").to_owned(),
                protocol_major_version: PROTOCOL_MAJOR_VERSION,
                protocol_minor_version: PROTOCOL_MINOR_VERSION,
            }),
        };
        Ok(Prepared {
            registry: Arc::new(registry),
            spec,
            shutdown_grace: self.shutdown_grace,
        })
    }
}

/// A function whose entities passed the checks, ready to listen.
struct Prepared {
    registry: Arc<Registry>,
    spec: EntitySpec,
    shutdown_grace: Duration,
}

impl Prepared {
    async fn run(self, listener: TcpListener, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let address = listener
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |address| address.to_string());
        let service_name = self
            .spec
            .service_info
            .as_ref()
            .map(|info| info.service_name.clone())
            .unwrap_or_default();
        info!(%address, service = %service_name, entities = self.spec.entities.len(), "user function listening");

        // Replies are small and latency-bound: don't let Nagle hold them back.
        let incoming = TcpListenerStream::new(listener).map(|connection| {
            connection.and_then(|stream| {
                stream.set_nodelay(true)?;
                Ok(stream)
            })
        });
        let (stopping, mut stopping_seen) = watch::channel(false);
        let signal = async move {
            shutdown.await;
            info!("shutting down: no new connections");
            let _ = stopping.send(true);
        };
        let entities = EntityEndpoint {
            registry: self.registry.clone(),
        };
        let server = Server::builder()
            .add_service(EntityDiscoveryServer::new(Discovery::new(self.spec)))
            .add_service(EventSourcedServer::new(entities.clone()))
            .add_service(ValueEntityServer::new(entities.clone()))
            .add_service(CrdtServer::new(entities))
            .add_service(ActionProtocolServer::new(ActionEndpoint {
                registry: self.registry,
            }))
            .serve_with_incoming_shutdown(incoming, signal);
        let grace = self.shutdown_grace;
        let grace_expired = async move {
            if stopping_seen.wait_for(|stopping| *stopping).await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            result = server => result?,
            () = grace_expired => warn!(?grace, "entity streams still open after the shutdown grace period, stopping anyway"),
        }
        info!("user function stopped");
        Ok(())
    }
}

/// Serves the three entity protocols (`cloudstate.eventsourced.EventSourced`,
/// `cloudstate.valueentity.ValueEntity`, `cloudstate.crdt.Crdt`): one session of
/// the kind per stream, in a span that the session names the entity in.
#[derive(Clone)]
struct EntityEndpoint {
    registry: Arc<Registry>,
}

impl EntityEndpoint {
    fn open<P: Protocol>(&self, request: Request<Streaming<P::In>>, span: Span) -> SessionStream<P::Out> {
        entity_stream::spawn(
            EntitySession::<P>::new(self.registry.clone()),
            request.into_inner(),
            span,
        )
    }
}

type SessionStream<Out> = ReceiverStream<Result<Out, Status>>;

#[tonic::async_trait]
impl EventSourced for EntityEndpoint {
    type handleStream = SessionStream<EventSourcedStreamOut>;

    async fn handle(
        &self,
        request: Request<Streaming<EventSourcedStreamIn>>,
    ) -> Result<Response<Self::handleStream>, Status> {
        let span = info_span!("event_sourced", service = Empty, entity_id = Empty);
        Ok(Response::new(self.open::<EventSourcedKind>(request, span)))
    }
}

#[tonic::async_trait]
impl ValueEntityProtocol for EntityEndpoint {
    type handleStream = SessionStream<ValueEntityStreamOut>;

    async fn handle(
        &self,
        request: Request<Streaming<ValueEntityStreamIn>>,
    ) -> Result<Response<Self::handleStream>, Status> {
        let span = info_span!("value_entity", service = Empty, entity_id = Empty);
        Ok(Response::new(self.open::<ValueKind>(request, span)))
    }
}

#[tonic::async_trait]
impl CrdtProtocol for EntityEndpoint {
    type handleStream = SessionStream<CrdtStreamOut>;

    async fn handle(&self, request: Request<Streaming<CrdtStreamIn>>) -> Result<Response<Self::handleStream>, Status> {
        let span = info_span!("crdt", service = Empty, entity_id = Empty);
        Ok(Response::new(self.open::<CrdtKind>(request, span)))
    }
}

/// Completes on the first SIGTERM or Ctrl-C.
async fn os_shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("received Ctrl-C"),
        () = terminate => info!("received SIGTERM"),
    }
}

fn executable_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|path| path.file_stem().map(|stem| stem.to_string_lossy().into_owned()))
        .unwrap_or_default()
}
