//! A user function that breaks the rules on purpose, for the proxy's fault tests.
//! It serves the shopping cart's API; what it does depends on the entity id:
//! `wrong-id` answers with the wrong command id, `snapshot-only` sends a snapshot
//! without events, `hang` never answers when ROGUE_HANG is set (and notes the
//! command in ROGUE_LOG), `forward-nowhere` forwards to a service that does not
//! exist, `effect-nowhere` asks for a side effect on a method that does not exist,
//! `loop` asks for a synchronous side effect on its own AddItem (forever),
//! anything else answers correctly with empty replies. Each answer carries one
//! event. With ROGUE_CONFLICT set, discovery sends the cart's file twice, the
//! second time changed. Errors the proxy reports are appended to ROGUE_LOG.

use std::{io::Write, pin::Pin};

use futures::Stream;
use prost::Message;
use prost_types::Any;
use strata_e2e::{shoppingcart::AddLineItem, SHOPPING_CART_DESCRIPTORS};
use strata_proto::cloudstate::{
    client_action::Action,
    entity_discovery_server::{EntityDiscovery, EntityDiscoveryServer},
    eventsourced::{
        event_sourced_server::{EventSourced, EventSourcedServer},
        event_sourced_stream_in, event_sourced_stream_out, EventSourcedReply, EventSourcedStreamIn,
        EventSourcedStreamOut,
    },
    ClientAction, Entity, EntitySpec, Forward, ProxyInfo, Reply, ServiceInfo, SideEffect, UserFunctionError,
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
        let mut proto = SHOPPING_CART_DESCRIPTORS.to_vec();
        if std::env::var_os("ROGUE_CONFLICT").is_some() {
            // The cart's file again, with its service renamed: the same file name
            // for two different files.
            let set = prost_types::FileDescriptorSet::decode(SHOPPING_CART_DESCRIPTORS).expect("descriptors");
            let mut changed = set
                .file
                .into_iter()
                .find(|f| f.name() == "shoppingcart.proto")
                .expect("the cart's file");
            changed.service[0].name = Some("ShoppingBasket".into());
            proto.extend(prost_types::FileDescriptorSet { file: vec![changed] }.encode_to_vec());
        }
        Ok(Response::new(EntitySpec {
            proto,
            entities: vec![Entity {
                entity_type: "cloudstate.eventsourced.EventSourced".into(),
                service_name: "com.example.shoppingcart.ShoppingCart".into(),
                persistence_id: "rogue-cart".into(),
                passivation_strategy: None,
            }],
            service_info: Some(ServiceInfo {
                service_name: "rogue".into(),
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

type OutStream = Pin<Box<dyn Stream<Item = Result<EventSourcedStreamOut, Status>> + Send>>;

#[tonic::async_trait]
impl EventSourced for Rogue {
    type handleStream = OutStream;

    async fn handle(&self, request: Request<Streaming<EventSourcedStreamIn>>) -> Result<Response<OutStream>, Status> {
        let mut input = request.into_inner();
        let output = async_stream(move |tx| async move {
            let mut entity_id = String::new();
            while let Some(Ok(message)) = input.next().await {
                match message.message {
                    Some(event_sourced_stream_in::Message::Init(init)) => entity_id = init.entity_id,
                    Some(event_sourced_stream_in::Message::Command(command)) => {
                        let empty = Any {
                            type_url: "type.googleapis.com/google.protobuf.Empty".into(),
                            value: Vec::new(),
                        };
                        let event = Any {
                            type_url: "type.googleapis.com/rogue.Event".into(),
                            value: b"e".to_vec(),
                        };
                        let mut side_effects = Vec::new();
                        let mut forward = None;
                        match entity_id.as_str() {
                            "forward-nowhere" => {
                                forward = Some(Action::Forward(Forward {
                                    service_name: "no.such.Service".into(),
                                    command_name: "Call".into(),
                                    payload: None,
                                    metadata: None,
                                }))
                            }
                            "effect-nowhere" => side_effects.push(SideEffect {
                                service_name: "com.example.shoppingcart.ShoppingCart".into(),
                                command_name: "Nope".into(),
                                payload: None,
                                synchronous: false,
                                metadata: None,
                            }),
                            "loop" => side_effects.push(SideEffect {
                                service_name: "com.example.shoppingcart.ShoppingCart".into(),
                                command_name: "AddItem".into(),
                                payload: Some(Any {
                                    type_url: "type.googleapis.com/com.example.shoppingcart.AddLineItem".into(),
                                    value: AddLineItem {
                                        user_id: "loop".into(),
                                        product_id: "p".into(),
                                        name: "P".into(),
                                        quantity: 1,
                                    }
                                    .encode_to_vec(),
                                }),
                                synchronous: true,
                                metadata: None,
                            }),
                            _ => {}
                        }
                        let (command_id, events, snapshot) = match entity_id.as_str() {
                            "wrong-id" => (command.id + 100, vec![event], None),
                            "snapshot-only" => (command.id, vec![], Some(event)),
                            "hang" if std::env::var_os("ROGUE_HANG").is_some() => {
                                log(&format!("holding command {} for {entity_id}", command.id));
                                std::future::pending::<()>().await;
                                unreachable!()
                            }
                            _ => (command.id, vec![event], None),
                        };
                        let payload = if command.name == "GetCart" {
                            Any {
                                type_url: "type.googleapis.com/com.example.shoppingcart.Cart".into(),
                                value: Vec::new(),
                            }
                        } else {
                            empty
                        };
                        let action = forward.unwrap_or(Action::Reply(Reply {
                            payload: Some(payload),
                            metadata: None,
                        }));
                        let reply = EventSourcedReply {
                            command_id,
                            client_action: Some(ClientAction { action: Some(action) }),
                            side_effects,
                            events,
                            snapshot,
                        };
                        let out = EventSourcedStreamOut {
                            message: Some(event_sourced_stream_out::Message::Reply(reply)),
                        };
                        if tx.send(Ok(out)).await.is_err() {
                            return;
                        }
                    }
                    _ => {}
                }
            }
        });
        Ok(Response::new(output))
    }
}

/// A stream fed by a spawned task.
fn async_stream<F, Fut>(body: F) -> OutStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<EventSourcedStreamOut, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(body(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::var("PORT")?.parse()?;
    tonic::transport::Server::builder()
        .add_service(EntityDiscoveryServer::new(Rogue))
        .add_service(EventSourcedServer::new(Rogue))
        .serve(([127, 0, 0, 1], port).into())
        .await?;
    Ok(())
}
