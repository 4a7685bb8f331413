//! Routing's forwarding over real loopback sockets, as the gateway does it: a
//! sidecar that dies in the middle of a call, one that cannot be reached at all,
//! and one that answers (a sidecar's real ingress over stand-in commands). The
//! routing, its forwarder and its routes are the real ones.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use prost_types::Any;
use strata_proto::cloudstate::Entity;
use strata_proto::strata::controlplane::v1::{EntityRoute, InstanceRoute, RouteSnapshot, ServiceRoutes};
use tokio::{io::AsyncReadExt, net::TcpListener, sync::watch};

use super::Outbound;
use crate::routing::{hold::Holds, routes::RouteTable};
use crate::{
    call::{Answer, Answers, Call, CallContext, Commands, StreamedCall},
    error::ProxyError,
    fixtures,
    ingress::{self, Ingress},
    metrics::Metrics,
    model::Catalog,
};

const ECHO: &str = "/test.things.Clerk/Echo";

/// Routes with one ready instance of the fixture's service at `address`.
fn routes(version: u64, address: &str) -> Arc<RouteTable> {
    let spec = fixtures::spec();
    let snapshot = RouteSnapshot {
        version,
        services: vec![ServiceRoutes {
            name: "things".into(),
            descriptor_set: spec.proto.clone(),
            entities: spec
                .entities
                .iter()
                .map(
                    |Entity {
                         entity_type,
                         service_name,
                         persistence_id,
                         ..
                     }| EntityRoute {
                        entity_type: entity_type.clone(),
                        service_name: service_name.clone(),
                        persistence_id: persistence_id.clone(),
                    },
                )
                .collect(),
            shards: Vec::new(),
            instances: vec![InstanceRoute {
                id: format!("things-{version}"),
                address: address.into(),
                state: "ready".into(),
                revision: 0,
            }],
            desired_replicas: 1,
            revision: 1,
            hold_timeout_ms: 0,
            ..Default::default()
        }],
    };
    Arc::new(RouteTable::build(&snapshot, &RouteTable::default()))
}

fn gateway(routes: watch::Receiver<Arc<RouteTable>>, metrics: Arc<Metrics>) -> Outbound {
    let holds = Holds::new(4, std::time::Duration::from_secs(5), metrics.clone());
    Outbound::new(routes, metrics, holds)
}

fn echo_call(text: &str) -> Call {
    let (_, method) = fixtures::method(ECHO);
    let body = strata_proto::google::api::HttpBody {
        content_type: "text/plain".into(),
        data: text.as_bytes().to_vec(),
        extensions: Vec::new(),
    };
    let payload = Any {
        type_url: "type.googleapis.com/google.api.HttpBody".into(),
        value: body.encode_to_vec(),
    };
    Call::new(method, payload, None, CallContext::default()).unwrap()
}

/// A "sidecar" that takes the connection, waits for the call's HEADERS frame
/// (so the call was sent) and then dies: the socket closes with no answer.
async fn dying_sidecar() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut preface = [0u8; 24];
        socket.read_exact(&mut preface).await.unwrap();
        loop {
            let mut header = [0u8; 9];
            socket.read_exact(&mut header).await.unwrap();
            let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let mut payload = vec![0u8; length];
            socket.read_exact(&mut payload).await.unwrap();
            const HEADERS: u8 = 0x1;
            if header[3] == HEADERS {
                return; // dropped: the connection resets mid-call
            }
        }
    });
    address
}

/// A "sidecar" that takes calls and never answers (frozen, say).
async fn silent_sidecar() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut sink = Vec::new();
        let _ = socket.read_to_end(&mut sink).await;
    });
    address
}

/// A "sidecar" that refuses every call unseen, as a draining HTTP/2 server
/// does: each stream is reset with REFUSED_STREAM.
async fn refusing_sidecar() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut connection = h2::server::handshake(socket).await.unwrap();
        while let Some(Ok((_, mut respond))) = connection.accept().await {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
        }
    });
    address
}

/// An address nothing listens on.
fn closed_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Answers every call with its own payload.
struct Echo;

#[async_trait::async_trait]
impl Commands for Echo {
    async fn unary(&self, call: Call) -> Result<Answer, ProxyError> {
        Ok(Answer::new(call.payload))
    }

    async fn streamed(&self, _: StreamedCall) -> Result<Answers, ProxyError> {
        Err(ProxyError::Unimplemented("no streams here".into()))
    }
}

/// Refuses every call as invalid.
struct Refuse;

#[async_trait::async_trait]
impl Commands for Refuse {
    async fn unary(&self, _: Call) -> Result<Answer, ProxyError> {
        Err(ProxyError::InvalidArgument("the thing is not valid".into()))
    }

    async fn streamed(&self, _: StreamedCall) -> Result<Answers, ProxyError> {
        Err(ProxyError::Unimplemented("no streams here".into()))
    }
}

/// A sidecar's real ingress over `commands` on `listener`; it stops (closing
/// its connections) when the sender is used or dropped.
fn serve_sidecar(
    listener: TcpListener,
    commands: Arc<dyn Commands>,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let router = ingress::router(Ingress {
        role: crate::trace::Role::Sidecar,
        catalog: Arc::new(Catalog::new(vec![Arc::new(fixtures::model())])),
        commands,
        metrics: Arc::new(Metrics::new()),
        max_body: 1 << 20,
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    (stop, served)
}

/// A sidecar's real ingress over [`Echo`].
async fn answering_sidecar() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, _) = serve_sidecar(listener, Arc::new(Echo));
    std::mem::forget(stop);
    address
}

fn echoed(answer: Answer) -> Vec<u8> {
    strata_proto::google::api::HttpBody::decode(Bytes::from(answer.payload.value))
        .unwrap()
        .data
}

#[tokio::test]
async fn a_sidecar_dying_mid_call_is_unavailable_never_unknown() {
    let (_tx, rx) = watch::channel(routes(1, &dying_sidecar().await));
    let gateway = gateway(rx, Arc::new(Metrics::new()));

    let error = gateway.unary(echo_call("hello")).await.unwrap_err();

    // UNKNOWN (500) is the function's own Failure; a lost connection is a
    // retryable outage whose outcome the gateway cannot know.
    assert!(matches!(error, ProxyError::Unavailable(_)), "{error:?}");
    assert!(
        error.to_string().contains("may or may not have been applied"),
        "{error}"
    );
    let response = crate::ingress::http_json::json_error(&error);
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key(http::header::RETRY_AFTER));
}

/// A call routed first to the sidecar at `first`, which never runs it: the
/// call waits for new routes (it is not failed), and when a replacement is
/// ready the same call is answered there.
async fn goes_to_the_next_one(first: String) {
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = watch::channel(routes(1, &first));
    let gateway = Arc::new(gateway(rx, metrics.clone()));
    let call = tokio::spawn({
        let gateway = gateway.clone();
        async move { gateway.unary(echo_call("hello")).await }
    });
    let rerouted = || metrics.reroutes.with_label_values(&["things", "unreachable"]).get();
    while rerouted() == 0 {
        assert!(!call.is_finished(), "not re-routed: {:?}", call.await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    tx.send(routes(2, &answering_sidecar().await)).unwrap();
    assert_eq!(echoed(call.await.unwrap().unwrap()), b"hello");
}

#[tokio::test]
async fn a_call_that_never_reached_its_instance_goes_to_the_next_one() {
    // The first instance refuses the connection.
    goes_to_the_next_one(closed_address()).await;
}

#[tokio::test]
async fn a_call_a_sidecar_refused_unseen_goes_to_the_next_one() {
    // The first instance resets the stream with REFUSED_STREAM: refused, not lost.
    goes_to_the_next_one(refusing_sidecar().await).await;
}

#[tokio::test]
async fn a_sidecar_that_never_answers_costs_a_504_not_a_hang() {
    let (_tx, rx) = watch::channel(routes(1, &silent_sidecar().await));
    let gateway = gateway(rx, Arc::new(Metrics::new())).with_forward_timeout(std::time::Duration::from_millis(200));

    let answer = tokio::time::timeout(std::time::Duration::from_secs(30), gateway.unary(echo_call("hello"))).await;

    let error = answer.expect("the forward has a deadline of its own").unwrap_err();
    assert!(matches!(error, ProxyError::DeadlineExceeded(_)), "{error:?}");
}

#[tokio::test]
async fn a_sidecars_error_reaches_the_caller_with_its_code_and_message() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (_stop, _) = serve_sidecar(listener, Arc::new(Refuse));
    let (_tx, rx) = watch::channel(routes(1, &address));

    let error = gateway(rx, Arc::new(Metrics::new()))
        .unary(echo_call("hello"))
        .await
        .unwrap_err();

    assert!(matches!(error, ProxyError::InvalidArgument(_)), "{error:?}");
    assert!(error.to_string().contains("the thing is not valid"), "{error}");
}

#[tokio::test]
async fn a_sidecar_restarted_at_the_same_address_is_called_on_a_new_connection() {
    let metrics = Arc::new(Metrics::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, served) = serve_sidecar(listener, Arc::new(Echo));
    let (_tx, rx) = watch::channel(routes(1, &address.to_string()));
    let gateway = gateway(rx, metrics.clone());
    assert_eq!(echoed(gateway.unary(echo_call("first")).await.unwrap()), b"first");

    // --- the sidecar stops (its connections close) and a new one takes its address
    stop.send(()).unwrap();
    served.await.unwrap();
    let (_stop, _) = serve_sidecar(TcpListener::bind(address).await.unwrap(), Arc::new(Echo));

    // --- the call goes over a new connection, with no re-routing
    assert_eq!(echoed(gateway.unary(echo_call("second")).await.unwrap()), b"second");
    let rerouted = metrics.reroutes.with_label_values(&["things", "unreachable"]).get();
    assert_eq!(rerouted, 0);
}

/// Hop-by-hop headers an HTTP/1.1 client may send (`Proxy-Connection` among
/// them) are not passed on: HTTP/2 forbids them, and a call carrying one could
/// not be sent to the sidecar at all.
#[tokio::test]
async fn a_clients_hop_by_hop_headers_stay_at_the_gateway() {
    let (_tx, rx) = watch::channel(routes(1, &answering_sidecar().await));
    let gateway = gateway(rx, Arc::new(Metrics::new()));
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("proxy-connection", "keep-alive"),
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("x-user", "ann"),
    ] {
        headers.insert(name, value.parse().unwrap());
    }
    let mut call = echo_call("hello");
    call.metadata = crate::metadata::metadata_of(&headers);

    assert_eq!(echoed(gateway.unary(call).await.unwrap()), b"hello");
}

/// Instances come and go (scaling, restarts on new ports): the gateway keeps
/// connections only to the sidecars its current routes name.
#[tokio::test]
async fn connections_to_sidecars_the_routes_dropped_are_let_go() {
    let (first, second) = (answering_sidecar().await, answering_sidecar().await);
    let (tx, rx) = watch::channel(routes(1, &first));
    let gateway = gateway(rx, Arc::new(Metrics::new()));
    assert_eq!(echoed(gateway.unary(echo_call("one")).await.unwrap()), b"one");
    assert!(gateway.forwarder.holds(&first));
    assert_eq!(gateway.forwarder.known(), 1);

    // --- the instance is replaced by one at another address
    tx.send(routes(2, &second)).unwrap();
    assert_eq!(echoed(gateway.unary(echo_call("two")).await.unwrap()), b"two");
    assert_eq!(
        gateway.forwarder.known(),
        1,
        "only the live sidecar's connection is kept"
    );

    // --- a newer version keeps the connections it names
    gateway.trim_connections(&routes(3, &second));
    assert!(gateway.forwarder.holds(&second));
    assert_eq!(gateway.forwarder.known(), 1);

    // --- a call still holding an older table does not undo the newer trim
    gateway.trim_connections(&routes(1, &first));
    assert_eq!(gateway.forwarder.known(), 1);
    assert!(gateway.forwarder.holds(&second));
}
