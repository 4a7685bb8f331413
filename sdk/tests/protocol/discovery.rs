//! Discovery: the spec the proxy receives, the errors it reports, and refusing a proxy
//! that speaks another protocol major version.

use strata_proto::{
    cloudstate::{
        entity_discovery_client::EntityDiscoveryClient, entity_passivation_strategy::Strategy, Entity,
        EntityPassivationStrategy, ProxyInfo, TimeoutPassivationStrategy, UserFunctionError,
    },
    entity_types,
};

use crate::support::{descriptors, service, Running, COUNTER, REGISTER};

fn proxy_info(major: i32) -> ProxyInfo {
    ProxyInfo {
        protocol_major_version: major,
        protocol_minor_version: 2,
        proxy_name: "strata-proxy".to_owned(),
        proxy_version: "0.1.0".to_owned(),
        supported_entity_types: vec![
            entity_types::EVENT_SOURCED.to_owned(),
            entity_types::VALUE_ENTITY.to_owned(),
        ],
    }
}

#[tokio::test]
async fn discover_describes_the_entities_and_the_function() {
    let running = Running::start(service()).await;
    let mut client = EntityDiscoveryClient::new(running.channel.clone());
    let spec = client.discover(proxy_info(0)).await.unwrap().into_inner();

    assert_eq!(spec.proto, descriptors());
    assert_eq!(
        spec.entities,
        vec![
            Entity {
                entity_type: entity_types::EVENT_SOURCED.to_owned(),
                service_name: COUNTER.to_owned(),
                persistence_id: "counters".to_owned(),
                passivation_strategy: Some(EntityPassivationStrategy {
                    strategy: Some(Strategy::Timeout(TimeoutPassivationStrategy { timeout: 30_000 })),
                }),
            },
            Entity {
                entity_type: entity_types::VALUE_ENTITY.to_owned(),
                service_name: REGISTER.to_owned(),
                persistence_id: "registers".to_owned(),
                passivation_strategy: None,
            },
        ]
    );
    let info = spec.service_info.unwrap();
    assert_eq!(info.service_name, "test-function");
    assert_eq!(info.service_version, "1.2.3");
    assert!(info.service_runtime.starts_with("rust 1."), "{}", info.service_runtime);
    assert_eq!(info.support_library_name, "strata-sdk");
    assert_eq!(info.support_library_version, env!("CARGO_PKG_VERSION"));
    assert_eq!((info.protocol_major_version, info.protocol_minor_version), (0, 2));
}

#[tokio::test]
async fn a_proxy_of_another_major_version_is_refused() {
    let running = Running::start(service()).await;
    let mut client = EntityDiscoveryClient::new(running.channel.clone());
    let status = client.discover(proxy_info(1)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "the proxy speaks protocol 1.2 but this user function speaks 0.2"
    );
}

#[tokio::test]
async fn report_error_is_acknowledged() {
    let running = Running::start(service()).await;
    let mut client = EntityDiscoveryClient::new(running.channel.clone());
    let response = client
        .report_error(UserFunctionError {
            message: "bad descriptor".to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(response.into_inner(), ());
}
