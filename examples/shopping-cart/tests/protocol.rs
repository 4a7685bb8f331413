//! The shopping cart served on a loopback port and driven through the raw CloudState
//! protocol, as a proxy would: discovery, then one cart's stream from init to snapshot,
//! then a fresh stream restored from that snapshot.

use std::time::Duration;

use prost::Message;
use shopping_cart::{api, domain, DESCRIPTORS, PERSISTENCE_ID, SERVICE_NAME};
use strata_proto::{
    cloudstate::{
        client_action::Action,
        entity_discovery_client::EntityDiscoveryClient,
        eventsourced::{
            event_sourced_client::EventSourcedClient, event_sourced_stream_in::Message as In,
            event_sourced_stream_out::Message as Out, EventSourcedInit, EventSourcedReply, EventSourcedSnapshot,
            EventSourcedStreamIn, EventSourcedStreamOut,
        },
        ClientAction, Command, Failure, ProxyInfo, Reply,
    },
    entity_types,
};
use strata_sdk::{pack, Any};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{transport::Channel, Streaming};

const PATIENCE: Duration = Duration::from_secs(10);

/// The proxy's end of one entity stream.
struct CartStream {
    requests: mpsc::Sender<EventSourcedStreamIn>,
    replies: Streaming<EventSourcedStreamOut>,
    next_id: i64,
}

impl CartStream {
    async fn open(channel: &Channel, snapshot: Option<EventSourcedSnapshot>) -> Self {
        let (requests, receiver) = mpsc::channel(16);
        let replies = EventSourcedClient::new(channel.clone())
            .handle(ReceiverStream::new(receiver))
            .await
            .unwrap()
            .into_inner();
        let stream = Self {
            requests,
            replies,
            next_id: 1,
        };
        stream
            .send(In::Init(EventSourcedInit {
                service_name: SERVICE_NAME.to_owned(),
                entity_id: "alice".to_owned(),
                snapshot,
            }))
            .await;
        stream
    }

    async fn send(&self, message: In) {
        self.requests
            .send(EventSourcedStreamIn { message: Some(message) })
            .await
            .unwrap();
    }

    /// Sends a command and returns its id and the function's answer.
    async fn command<M: Message + prost::Name>(&mut self, name: &str, payload: &M) -> (i64, EventSourcedStreamOut) {
        let id = self.next_id;
        self.next_id += 1;
        self.send(In::Command(Command {
            entity_id: "alice".to_owned(),
            id,
            name: name.to_owned(),
            payload: Some(pack(payload)),
            ..Default::default()
        }))
        .await;
        let answer = tokio::time::timeout(PATIENCE, self.replies.message())
            .await
            .expect("timed out waiting for a reply")
            .unwrap()
            .expect("the stream ended");
        (id, answer)
    }

    async fn add(&mut self, product_id: &str, name: &str, quantity: i32) -> (i64, EventSourcedStreamOut) {
        let add = api::AddLineItem {
            user_id: "alice".to_owned(),
            product_id: product_id.to_owned(),
            name: name.to_owned(),
            quantity,
        };
        self.command("AddItem", &add).await
    }

    async fn get(&mut self) -> (i64, EventSourcedStreamOut) {
        let get = api::GetShoppingCart {
            user_id: "alice".to_owned(),
        };
        self.command("GetCart", &get).await
    }
}

fn reply(command_id: i64, payload: Any, events: Vec<Any>, snapshot: Option<Any>) -> EventSourcedStreamOut {
    EventSourcedStreamOut {
        message: Some(Out::Reply(EventSourcedReply {
            command_id,
            client_action: Some(ClientAction {
                action: Some(Action::Reply(Reply {
                    payload: Some(payload),
                    metadata: None,
                })),
            }),
            side_effects: vec![],
            events,
            snapshot,
        })),
    }
}

fn added(product_id: &str, name: &str, quantity: i32) -> Any {
    pack(&domain::ItemAdded {
        item: Some(domain::LineItem {
            product_id: product_id.to_owned(),
            name: name.to_owned(),
            quantity,
        }),
    })
}

fn cart(items: &[(&str, &str, i32)]) -> Any {
    pack(&api::Cart {
        items: items
            .iter()
            .map(|(product_id, name, quantity)| api::LineItem {
                product_id: (*product_id).to_owned(),
                name: (*name).to_owned(),
                quantity: *quantity,
            })
            .collect(),
    })
}

fn snapshot(items: &[(&str, &str, i32)]) -> domain::Cart {
    domain::Cart {
        items: items
            .iter()
            .map(|(product_id, name, quantity)| domain::LineItem {
                product_id: (*product_id).to_owned(),
                name: (*name).to_owned(),
                quantity: *quantity,
            })
            .collect(),
    }
}

#[tokio::test]
async fn the_cart_speaks_the_cloudstate_protocol() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(shopping_cart::service().serve_with_shutdown(listener, std::future::pending()));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    // --- discovery describes the cart and ships its protos with their imports
    let spec = EntityDiscoveryClient::new(channel.clone())
        .discover(ProxyInfo {
            protocol_major_version: 0,
            protocol_minor_version: 2,
            proxy_name: "test".to_owned(),
            proxy_version: "0".to_owned(),
            supported_entity_types: vec![entity_types::EVENT_SOURCED.to_owned()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.proto, DESCRIPTORS);
    let [entity] = spec.entities.as_slice() else {
        panic!("expected one entity, got {:?}", spec.entities);
    };
    assert_eq!(entity.entity_type, entity_types::EVENT_SOURCED);
    assert_eq!(entity.service_name, SERVICE_NAME);
    assert_eq!(entity.persistence_id, PERSISTENCE_ID);
    assert_eq!(spec.service_info.unwrap().service_name, "shopping-cart");
    let files = prost_types::FileDescriptorSet::decode(spec.proto.as_slice()).unwrap();
    let names: Vec<&str> = files.file.iter().map(|file| file.name()).collect();
    for expected in [
        "shoppingcart.proto",
        "domain.proto",
        "cloudstate/entity_key.proto",
        "google/api/annotations.proto",
        "google/api/http.proto",
        "google/protobuf/empty.proto",
        "google/protobuf/descriptor.proto",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }

    // --- add three items, remove one, read the cart
    let mut stream = CartStream::open(&channel, None).await;
    let empty = pack(&());
    let (id, answer) = stream.add("tea", "Tea", 2).await;
    assert_eq!(answer, reply(id, empty.clone(), vec![added("tea", "Tea", 2)], None));
    let (id, answer) = stream.add("cake", "Cake", 1).await;
    assert_eq!(answer, reply(id, empty.clone(), vec![added("cake", "Cake", 1)], None));
    let (id, answer) = stream.add("tea", "Tea", 3).await;
    assert_eq!(answer, reply(id, empty.clone(), vec![added("tea", "Tea", 3)], None));
    let remove = api::RemoveLineItem {
        user_id: "alice".to_owned(),
        product_id: "cake".to_owned(),
    };
    let (id, answer) = stream.command("RemoveItem", &remove).await;
    let removed = pack(&domain::ItemRemoved {
        product_id: "cake".to_owned(),
    });
    assert_eq!(answer, reply(id, empty.clone(), vec![removed], None));
    let (id, answer) = stream.get().await;
    assert_eq!(answer, reply(id, cart(&[("tea", "Tea", 5)]), vec![], None));

    // --- a non-positive quantity fails the command and emits nothing
    let (id, answer) = stream.add("cake", "Cake", 0).await;
    assert_eq!(
        answer,
        EventSourcedStreamOut {
            message: Some(Out::Reply(EventSourcedReply {
                command_id: id,
                client_action: Some(ClientAction {
                    action: Some(Action::Failure(Failure {
                        command_id: id,
                        description: "Quantity for item cake must be greater than zero.".to_owned(),
                        restart: false,
                    })),
                }),
                ..Default::default()
            })),
        }
    );

    // --- the fifth event carries a snapshot of the cart with it applied
    let (id, answer) = stream.add("coffee", "Coffee", 1).await;
    let expected = snapshot(&[("tea", "Tea", 5), ("coffee", "Coffee", 1)]);
    assert_eq!(
        answer,
        reply(
            id,
            empty.clone(),
            vec![added("coffee", "Coffee", 1)],
            Some(pack(&expected))
        )
    );
    let (_, answer) = stream.add("coffee", "Coffee", 1).await;
    let Some(Out::Reply(sixth)) = answer.message else {
        panic!("expected a reply")
    };
    assert_eq!(sixth.snapshot, None);

    // --- a new stream restored from the snapshot sees the same cart
    let mut restored = CartStream::open(
        &channel,
        Some(EventSourcedSnapshot {
            snapshot_sequence: 5,
            snapshot: Some(pack(&expected)),
        }),
    )
    .await;
    let (id, answer) = restored.get().await;
    assert_eq!(
        answer,
        reply(id, cart(&[("tea", "Tea", 5), ("coffee", "Coffee", 1)]), vec![], None)
    );

    server.abort();
}
