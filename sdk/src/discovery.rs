//! `cloudstate.EntityDiscovery`: tells the proxy which entities this function serves
//! (with the descriptors of their services) and logs the errors the proxy reports.
//! Refuses a proxy that cannot run these entities rather than failing later.

use strata_proto::cloudstate::{entity_discovery_server::EntityDiscovery, EntitySpec, ProxyInfo, UserFunctionError};
use strata_proto::{PROTOCOL_MAJOR_VERSION, PROTOCOL_MINOR_VERSION};
use tonic::{Request, Response, Status};
use tracing::{error, info, warn};

/// Answers discovery with a spec built once at start-up.
pub(crate) struct Discovery {
    spec: EntitySpec,
}

impl Discovery {
    pub(crate) fn new(spec: EntitySpec) -> Self {
        Self { spec }
    }
}

#[tonic::async_trait]
impl EntityDiscovery for Discovery {
    async fn discover(&self, request: Request<ProxyInfo>) -> Result<Response<EntitySpec>, Status> {
        let proxy = request.into_inner();
        info!(
            proxy_name = %proxy.proxy_name,
            proxy_version = %proxy.proxy_version,
            protocol = %format!("{}.{}", proxy.protocol_major_version, proxy.protocol_minor_version),
            supported_entity_types = ?proxy.supported_entity_types,
            "discovery request from proxy"
        );
        if let Err(description) = check_proxy(&proxy, &self.spec) {
            error!(%description, "refusing discovery");
            return Err(Status::failed_precondition(description));
        }
        if proxy.protocol_minor_version < PROTOCOL_MINOR_VERSION {
            warn!("proxy speaks an older minor protocol version; newer features may be ignored");
        }
        Ok(Response::new(self.spec.clone()))
    }

    async fn report_error(&self, request: Request<UserFunctionError>) -> Result<Response<()>, Status> {
        error!(message = %request.get_ref().message, "proxy reported an error in this user function");
        Ok(Response::new(()))
    }
}

/// Why `proxy` cannot run the entities of `spec`, if it cannot.
fn check_proxy(proxy: &ProxyInfo, spec: &EntitySpec) -> Result<(), String> {
    if proxy.protocol_major_version != PROTOCOL_MAJOR_VERSION {
        return Err(format!(
            "the proxy speaks protocol {}.{} but this user function speaks {PROTOCOL_MAJOR_VERSION}.{PROTOCOL_MINOR_VERSION}",
            proxy.protocol_major_version, proxy.protocol_minor_version
        ));
    }
    // An empty list means the proxy did not say; let it try.
    if proxy.supported_entity_types.is_empty() {
        return Ok(());
    }
    let unsupported: Vec<String> = spec
        .entities
        .iter()
        .filter(|entity| !proxy.supported_entity_types.contains(&entity.entity_type))
        .map(|entity| format!("{} ({})", entity.service_name, entity.entity_type))
        .collect();
    if unsupported.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the proxy does not support the entity types of: {}",
            unsupported.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use strata_proto::{cloudstate::Entity, entity_types};

    use super::*;

    fn spec() -> EntitySpec {
        EntitySpec {
            entities: vec![Entity {
                entity_type: entity_types::EVENT_SOURCED.to_owned(),
                service_name: "a.B".to_owned(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn proxy(major: i32, types: &[&str]) -> ProxyInfo {
        ProxyInfo {
            protocol_major_version: major,
            protocol_minor_version: 2,
            supported_entity_types: types.iter().map(|t| (*t).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_a_proxy_supporting_the_entity_types() {
        assert_eq!(check_proxy(&proxy(0, &[entity_types::EVENT_SOURCED]), &spec()), Ok(()));
        assert_eq!(check_proxy(&proxy(0, &[]), &spec()), Ok(()));
    }

    #[test]
    fn refuses_another_major_version() {
        assert_eq!(
            check_proxy(&proxy(1, &[]), &spec()),
            Err("the proxy speaks protocol 1.2 but this user function speaks 0.2".to_owned())
        );
    }

    #[test]
    fn refuses_a_proxy_missing_an_entity_type() {
        assert_eq!(
            check_proxy(&proxy(0, &[entity_types::CRDT]), &spec()),
            Err("the proxy does not support the entity types of: a.B \
                 (cloudstate.eventsourced.EventSourced)"
                .to_owned())
        );
    }
}
