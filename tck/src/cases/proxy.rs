//! The proxy itself: what it tells the function at discovery, and gRPC server
//! reflection (the list of services, and an empty answer for an unknown symbol on
//! a stream that stays open).

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic_reflection::pb::v1alpha::{
    server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse, FileDescriptorResponse, ListServiceResponse, ServerReflectionRequest,
    ServiceResponse,
};

use super::expect_eq;
use crate::{
    kit::{Case, Kit},
    probe::{Check, PATIENCE},
};

/// The entity types Strata serves, as CloudState's proxy lists them.
const SUPPORTED: [&str; 4] = [
    "cloudstate.action.ActionProtocol",
    "cloudstate.crdt.Crdt",
    "cloudstate.valueentity.ValueEntity",
    "cloudstate.eventsourced.EventSourced",
];

pub fn discovery_cases() -> Vec<Case> {
    vec![Case {
        section: "discovery protocol",
        name: "verify proxy info and entity discovery",
        requires: &[],
        run: |kit| Box::pin(discovery(kit)),
    }]
}

pub fn reflection_cases() -> Vec<Case> {
    vec![Case {
        section: "proxy: gRPC server reflection",
        name: "verify that the proxy supports server reflection",
        requires: &[],
        run: |kit| Box::pin(reflection(kit)),
    }]
}

async fn discovery(kit: &Kit) -> Check {
    let info = &kit.proxy_info;
    expect_eq(
        "protocol version",
        (0, 2),
        (info.protocol_major_version, info.protocol_minor_version),
    )?;
    let mut supported: Vec<&str> = info.supported_entity_types.iter().map(String::as_str).collect();
    supported.sort();
    let mut expected = SUPPORTED.to_vec();
    expected.sort();
    expect_eq("supported entity types", expected, supported)?;
    let discovered = kit.discovered_services();
    let missing: Vec<String> = kit
        .service_names()
        .into_iter()
        .filter(|service| !discovered.contains(service))
        .collect();
    expect_eq(
        "services named by entities but not in the descriptors",
        Vec::<String>::new(),
        missing,
    )
}

async fn reflection(kit: &Kit) -> Check {
    let (requests, outgoing) = mpsc::unbounded_channel();
    let mut answers = ServerReflectionClient::new(kit.grpc.clone())
        .server_reflection_info(UnboundedReceiverStream::new(outgoing))
        .await
        .map_err(|status| format!("reflection failed: {status:?}"))?
        .into_inner();
    let mut services = kit.service_names();
    services.sort();
    let listed = MessageResponse::ListServicesResponse(ListServiceResponse {
        service: std::iter::once("grpc.reflection.v1alpha.ServerReflection".to_string())
            .chain(services)
            .map(|name| ServiceResponse { name })
            .collect(),
    });
    let exchanges = [
        (MessageRequest::ListServices(String::new()), listed.clone()),
        (MessageRequest::ListServices("nonsense.blabla.".into()), listed),
        (
            MessageRequest::FileContainingSymbol("nonsense.blabla.Void".into()),
            MessageResponse::FileDescriptorResponse(FileDescriptorResponse::default()),
        ),
    ];
    for (request, expected) in exchanges {
        let sent = format!("{request:?}");
        requests
            .send(ServerReflectionRequest {
                host: String::new(),
                message_request: Some(request),
            })
            .map_err(|_| "the reflection stream ended".to_string())?;
        let answer = tokio::time::timeout(PATIENCE, answers.next())
            .await
            .map_err(|_| format!("no answer to {sent} within {PATIENCE:?}"))?;
        match answer {
            Some(Ok(answer)) => expect_eq(
                &format!("the answer to {sent}"),
                Some(expected),
                answer.message_response,
            )?,
            other => return Err(format!("the stream ended after {sent}: {other:?}")),
        }
    }
    Ok(())
}
