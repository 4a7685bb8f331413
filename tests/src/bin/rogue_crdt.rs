//! A CRDT user function that sends bad deltas on purpose, for the proxy's
//! bad-input tests. It serves the shopping cart's API as a CRDT entity; the
//! command decides the delta: `AddItem` adds the item's quantity to a PNCounter,
//! except for product `gset` (a GSet delta: the wrong type once a counter
//! exists) and product `float-key` (an ORMap delta keyed by a double);
//! `RemoveItem` deletes the entity; `GetCart` changes nothing. Every `CrdtInit`
//! (with the state the proxy loaded) and every reported error is appended to
//! ROGUE_LOG.

use std::{io::Write, pin::Pin};

use futures::Stream;
use prost::Message;
use prost_types::Any;
use strata_e2e::{shoppingcart::AddLineItem, SHOPPING_CART_DESCRIPTORS};
use strata_proto::cloudstate::{
    client_action::Action,
    crdt::{
        crdt_delta::Delta,
        crdt_server::{Crdt, CrdtServer},
        crdt_state_action, crdt_stream_in, crdt_stream_out, CrdtDelete, CrdtDelta, CrdtReply, CrdtStateAction,
        CrdtStreamIn, CrdtStreamOut, CrdtStreamedMessage, GSetDelta, OrMapDelta, OrMapEntryDelta, PnCounterDelta,
    },
    entity_discovery_server::{EntityDiscovery, EntityDiscoveryServer},
    ClientAction, Entity, EntitySpec, ProxyInfo, Reply, ServiceInfo, UserFunctionError,
};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

fn log(line: &str) {
    if let Some(path) = std::env::var_os("ROGUE_LOG") {
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(file, "{line}");
        }
    }
}

struct Rogue;

#[tonic::async_trait]
impl EntityDiscovery for Rogue {
    async fn discover(&self, _: Request<ProxyInfo>) -> Result<Response<EntitySpec>, Status> {
        Ok(Response::new(EntitySpec {
            proto: SHOPPING_CART_DESCRIPTORS.to_vec(),
            entities: vec![Entity {
                entity_type: "cloudstate.crdt.Crdt".into(),
                service_name: "com.example.shoppingcart.ShoppingCart".into(),
                persistence_id: "rogue-crdt".into(),
                passivation_strategy: None,
            }],
            service_info: Some(ServiceInfo {
                service_name: "rogue-crdt".into(),
                protocol_major_version: 0,
                protocol_minor_version: 2,
                ..Default::default()
            }),
        }))
    }

    async fn report_error(&self, request: Request<UserFunctionError>) -> Result<Response<()>, Status> {
        log(&format!("reported: {}", request.into_inner().message));
        Ok(Response::new(()))
    }
}

fn update(delta: Delta) -> crdt_state_action::Action {
    crdt_state_action::Action::Update(CrdtDelta { delta: Some(delta) })
}

/// The delta (or delete) a command sends.
fn state_action(name: &str, payload: Option<&Any>) -> Option<crdt_state_action::Action> {
    match name {
        "AddItem" => {
            let item = AddLineItem::decode(payload?.value.as_slice()).ok()?;
            Some(match item.product_id.as_str() {
                "gset" => update(Delta::Gset(GSetDelta {
                    added: vec![Any {
                        type_url: "p.cloudstate.io/string".into(),
                        value: "x".to_string().encode_to_vec(),
                    }],
                })),
                "float-key" => update(Delta::Ormap(OrMapDelta {
                    added: vec![OrMapEntryDelta {
                        key: Some(Any {
                            type_url: "p.cloudstate.io/double".into(),
                            value: 1.5f64.encode_to_vec(),
                        }),
                        delta: Some(CrdtDelta {
                            delta: Some(Delta::Pncounter(PnCounterDelta { change: 1 })),
                        }),
                    }],
                    ..Default::default()
                })),
                _ => update(Delta::Pncounter(PnCounterDelta {
                    change: i64::from(item.quantity),
                })),
            })
        }
        "RemoveItem" => Some(crdt_state_action::Action::Delete(CrdtDelete {})),
        _ => None,
    }
}

type OutStream = Pin<Box<dyn Stream<Item = Result<CrdtStreamOut, Status>> + Send>>;

#[tonic::async_trait]
impl Crdt for Rogue {
    type handleStream = OutStream;

    async fn handle(&self, request: Request<Streaming<CrdtStreamIn>>) -> Result<Response<OutStream>, Status> {
        let mut input = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(Ok(message)) = input.next().await {
                match message.message {
                    Some(crdt_stream_in::Message::Init(init)) => {
                        log(&format!(
                            "init {} {:?}",
                            init.entity_id,
                            init.delta.and_then(|d| d.delta)
                        ));
                    }
                    Some(crdt_stream_in::Message::Command(command)) => {
                        let reply = CrdtReply {
                            command_id: command.id,
                            client_action: Some(ClientAction {
                                action: Some(Action::Reply(Reply {
                                    payload: Some(Any {
                                        type_url: "type.googleapis.com/google.protobuf.Empty".into(),
                                        value: Vec::new(),
                                    }),
                                    metadata: None,
                                })),
                            }),
                            side_effects: vec![],
                            state_action: state_action(&command.name, command.payload.as_ref()).map(|action| {
                                CrdtStateAction {
                                    action: Some(action),
                                    write_consistency: 0,
                                }
                            }),
                            streamed: false,
                        };
                        let out = CrdtStreamOut {
                            message: Some(crdt_stream_out::Message::Reply(reply)),
                        };
                        if tx.send(Ok(out)).await.is_err() {
                            break;
                        }
                        // A streamed message for a command that is not streaming.
                        let rogue = command
                            .payload
                            .as_ref()
                            .and_then(|p| AddLineItem::decode(p.value.as_slice()).ok());
                        if rogue.is_some_and(|item| item.product_id == "stream-rogue") {
                            let out = CrdtStreamOut {
                                message: Some(crdt_stream_out::Message::StreamedMessage(CrdtStreamedMessage {
                                    command_id: command.id,
                                    client_action: None,
                                    side_effects: vec![],
                                    end_stream: false,
                                })),
                            };
                            if tx.send(Ok(out)).await.is_err() {
                                break;
                            }
                        }
                    }
                    _ => {}
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::var("PORT")?.parse()?;
    tonic::transport::Server::builder()
        .add_service(EntityDiscoveryServer::new(Rogue))
        .add_service(CrdtServer::new(Rogue))
        .serve(([127, 0, 0, 1], port).into())
        .await?;
    Ok(())
}
