//! The entities and actions this user function serves, checked against its
//! descriptors once at start-up: discovery describes them to the proxy, and each new
//! entity stream (or action call) looks up its service here to create the entity
//! (or find the action) and to know which commands exist.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use prost::Message;
use prost_types::FileDescriptorSet;
use strata_proto::{cloudstate as pb, entity_types};

use crate::{
    action::{Action, ActionService, DynAction},
    crdt::{self, CrdtEntity, CrdtService, DynCrdtEntity},
    event_sourced::DynEventSourced,
    value_entity::{DynValueEntity, Hosted},
    EventSourcedEntity, EventSourcedService, ServeError, ValueEntity, ValueEntityService,
};

type EventSourcedFactory = Arc<dyn Fn(&str) -> Box<dyn DynEventSourced> + Send + Sync>;
type ValueFactory = Arc<dyn Fn(&str) -> Box<dyn DynValueEntity> + Send + Sync>;
type CrdtFactory = Arc<dyn Fn(&str) -> Box<dyn DynCrdtEntity> + Send + Sync>;

/// One registered entity type, not yet checked against the descriptors.
pub(crate) struct Registration {
    service_name: String,
    persistence_id: String,
    passivation_timeout: Option<Duration>,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    EventSourced {
        snapshot_every: u64,
        factory: EventSourcedFactory,
    },
    Value {
        factory: ValueFactory,
    },
    Crdt {
        factory: CrdtFactory,
    },
    Action {
        action: Arc<dyn DynAction>,
    },
}

impl Kind {
    fn entity_type(&self) -> &'static str {
        match self {
            Kind::EventSourced { .. } => entity_types::EVENT_SOURCED,
            Kind::Value { .. } => entity_types::VALUE_ENTITY,
            Kind::Crdt { .. } => entity_types::CRDT,
            Kind::Action { .. } => entity_types::ACTION,
        }
    }
}

impl<E: EventSourcedEntity> From<EventSourcedService<E>> for Registration {
    fn from(service: EventSourcedService<E>) -> Self {
        let factory = service.factory;
        Self {
            service_name: service.service_name,
            persistence_id: service.persistence_id,
            passivation_timeout: service.passivation_timeout,
            kind: Kind::EventSourced {
                snapshot_every: service.snapshot_every,
                factory: Arc::new(move |entity_id| Box::new(factory(entity_id))),
            },
        }
    }
}

impl<E: ValueEntity> From<ValueEntityService<E>> for Registration {
    fn from(service: ValueEntityService<E>) -> Self {
        let factory = service.factory;
        Self {
            service_name: service.service_name,
            persistence_id: service.persistence_id,
            passivation_timeout: service.passivation_timeout,
            kind: Kind::Value {
                factory: Arc::new(move |entity_id| Box::new(Hosted::new(factory(entity_id)))),
            },
        }
    }
}

impl<E: CrdtEntity> From<CrdtService<E>> for Registration {
    fn from(service: CrdtService<E>) -> Self {
        let factory = service.factory;
        Self {
            persistence_id: service.service_name.clone(),
            service_name: service.service_name,
            passivation_timeout: service.passivation_timeout,
            kind: Kind::Crdt {
                factory: Arc::new(move |entity_id| Box::new(crdt::Hosted::new(factory(entity_id)))),
            },
        }
    }
}

impl<A: Action> From<ActionService<A>> for Registration {
    fn from(service: ActionService<A>) -> Self {
        Self {
            service_name: service.service_name,
            persistence_id: String::new(),
            passivation_timeout: None,
            kind: Kind::Action { action: service.action },
        }
    }
}

/// A registered entity type with the commands (gRPC methods) of its service.
struct Entry {
    registration: Registration,
    commands: Arc<BTreeSet<String>>,
}

/// A freshly created event-sourced entity and how its stream must treat it.
pub(crate) struct OpenedEventSourced {
    pub entity: Box<dyn DynEventSourced>,
    pub snapshot_every: u64,
    pub commands: Arc<BTreeSet<String>>,
}

/// A freshly created value entity and the commands its service has.
pub(crate) struct OpenedValue {
    pub entity: Box<dyn DynValueEntity>,
    pub commands: Arc<BTreeSet<String>>,
}

/// A freshly created CRDT entity and the commands its service has.
pub(crate) struct OpenedCrdt {
    pub entity: Box<dyn DynCrdtEntity>,
    pub commands: Arc<BTreeSet<String>>,
}

/// A registered action and the commands its service has.
pub(crate) struct OpenedAction {
    pub action: Arc<dyn DynAction>,
    pub commands: Arc<BTreeSet<String>>,
}

/// Every entity type of the function, in registration order.
pub(crate) struct Registry {
    entries: Vec<Entry>,
}

impl Registry {
    /// Checks each registration against the services in `descriptor` (a serialized
    /// `FileDescriptorSet`) so a typo in a service name fails at start-up, not at the
    /// first request.
    pub(crate) fn new(descriptor: &[u8], registrations: Vec<Registration>) -> Result<Self, ServeError> {
        if registrations.is_empty() {
            return Err(ServeError::NoEntities);
        }
        let services = services_in(descriptor)?;
        let mut entries: Vec<Entry> = Vec::with_capacity(registrations.len());
        for registration in registrations {
            let name = &registration.service_name;
            if entries.iter().any(|entry| &entry.registration.service_name == name) {
                return Err(ServeError::DuplicateService(name.clone()));
            }
            let Some(commands) = services.get(name) else {
                return Err(ServeError::UnknownService {
                    service: name.clone(),
                    known: services.keys().cloned().collect::<Vec<_>>().join(", "),
                });
            };
            entries.push(Entry {
                commands: Arc::new(commands.clone()),
                registration,
            });
        }
        Ok(Self { entries })
    }

    /// The entities as discovery describes them.
    pub(crate) fn entities(&self) -> Vec<pb::Entity> {
        self.entries
            .iter()
            .map(|entry| {
                let registration = &entry.registration;
                pb::Entity {
                    entity_type: registration.kind.entity_type().to_owned(),
                    service_name: registration.service_name.clone(),
                    persistence_id: registration.persistence_id.clone(),
                    passivation_strategy: registration.passivation_timeout.map(|timeout| {
                        pb::EntityPassivationStrategy {
                            strategy: Some(pb::entity_passivation_strategy::Strategy::Timeout(
                                pb::TimeoutPassivationStrategy {
                                    timeout: i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX),
                                },
                            )),
                        }
                    }),
                }
            })
            .collect()
    }

    /// Creates the event-sourced entity `entity_id` of `service_name`, or says why not.
    pub(crate) fn open_event_sourced(&self, service_name: &str, entity_id: &str) -> Result<OpenedEventSourced, String> {
        let entry = self.entry(service_name, entity_types::EVENT_SOURCED)?;
        let Kind::EventSourced {
            snapshot_every,
            factory,
        } = &entry.registration.kind
        else {
            unreachable!("entry() checked the entity type");
        };
        Ok(OpenedEventSourced {
            entity: factory(entity_id),
            snapshot_every: *snapshot_every,
            commands: entry.commands.clone(),
        })
    }

    /// Creates the value entity `entity_id` of `service_name`, or says why not.
    pub(crate) fn open_value(&self, service_name: &str, entity_id: &str) -> Result<OpenedValue, String> {
        let entry = self.entry(service_name, entity_types::VALUE_ENTITY)?;
        let Kind::Value { factory } = &entry.registration.kind else {
            unreachable!("entry() checked the entity type");
        };
        Ok(OpenedValue {
            entity: factory(entity_id),
            commands: entry.commands.clone(),
        })
    }

    /// Creates the CRDT entity `entity_id` of `service_name`, or says why not.
    pub(crate) fn open_crdt(&self, service_name: &str, entity_id: &str) -> Result<OpenedCrdt, String> {
        let entry = self.entry(service_name, entity_types::CRDT)?;
        let Kind::Crdt { factory } = &entry.registration.kind else {
            unreachable!("entry() checked the entity type");
        };
        Ok(OpenedCrdt {
            entity: factory(entity_id),
            commands: entry.commands.clone(),
        })
    }

    /// The action serving `service_name`, or says why there is none.
    pub(crate) fn open_action(&self, service_name: &str) -> Result<OpenedAction, String> {
        let entry = self.entry(service_name, entity_types::ACTION)?;
        let Kind::Action { action } = &entry.registration.kind else {
            unreachable!("entry() checked the entity type");
        };
        Ok(OpenedAction {
            action: action.clone(),
            commands: entry.commands.clone(),
        })
    }

    fn entry(&self, service_name: &str, entity_type: &str) -> Result<&Entry, String> {
        if let Some(entry) = self
            .entries
            .iter()
            .find(|entry| entry.registration.service_name == service_name)
        {
            let actual = entry.registration.kind.entity_type();
            if actual != entity_type {
                return Err(format!(
                    "service {service_name:?} is served as {actual}, not as {entity_type}"
                ));
            }
            return Ok(entry);
        }
        let served: Vec<&str> = self
            .entries
            .iter()
            .filter(|entry| entry.registration.kind.entity_type() == entity_type)
            .map(|entry| entry.registration.service_name.as_str())
            .collect();
        Err(format!(
            "unknown service {service_name:?}: this user function serves {entity_type} for [{}]",
            served.join(", ")
        ))
    }
}

/// Every service in a serialized `FileDescriptorSet`, by full name, with its methods.
fn services_in(descriptor: &[u8]) -> Result<BTreeMap<String, BTreeSet<String>>, ServeError> {
    let set = FileDescriptorSet::decode(descriptor).map_err(ServeError::Descriptor)?;
    let mut services = BTreeMap::new();
    for file in &set.file {
        for service in &file.service {
            let full_name = match file.package() {
                "" => service.name().to_owned(),
                package => format!("{package}.{}", service.name()),
            };
            let methods = service.method.iter().map(|method| method.name().to_owned()).collect();
            services.insert(full_name, methods);
        }
    }
    Ok(services)
}
