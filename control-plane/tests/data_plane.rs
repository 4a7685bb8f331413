//! The data-plane gRPC API over real loopback sockets against in-process nodes started
//! with `server::start`: registration, readiness with descriptors, the route watch,
//! shard splits and moves, heartbeat expiry, drain, scale-from-zero pokes, tokens, bad
//! input, and calls on followers of a three-node cluster.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use prost::Message;
use strata_control_plane::api::Tokens;
use strata_control_plane::auth::ClusterSecret;
use strata_control_plane::node::Timing;
use strata_control_plane::registry::{Command, EventKind, InstanceState, ServiceSettings, ServiceSpec};
use strata_control_plane::runtime::autoscale::AutoscaleConfig;
use strata_control_plane::server::{self, RunningServer, ServerConfig};
use strata_proto::strata::controlplane::v1::data_plane_client::DataPlaneClient;
use strata_proto::strata::controlplane::v1::{
    DrainRequest, EntityRoute, HeartbeatRequest, PokeRequest, RegisterInstanceRequest, ReleaseShardsRequest,
    ReportReadyRequest, RouteSnapshot, ServiceRoutes, WatchRoutesRequest,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

const SECRET: &str = "data-plane-test-secret";
const ADMIN: &str = "data-plane-test-admin";
const GATEWAY: &str = "data-plane-test-gateway";
const DEADLINE: Duration = Duration::from_secs(30);
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);
const SHARDS: usize = 8;

// --- harness ---

fn config(dir: &Path, node_id: u64) -> ServerConfig {
    ServerConfig {
        node_id: Some(node_id),
        data_dir: dir.join(format!("node-{node_id}")),
        listen: Some("127.0.0.1:0".into()),
        api_listen: Some("127.0.0.1:0".into()),
        cluster_secret: SECRET.into(),
        tokens: Tokens {
            admin: Some(ADMIN.into()),
            read_only: None,
        },
        gateway_token: Some(GATEWAY.into()),
        raft_timing: Timing {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
        },
        heartbeat_interval: HEARTBEAT_INTERVAL,
        heartbeat_timeout: HEARTBEAT_TIMEOUT,
        ..ServerConfig::default()
    }
}

async fn one_node(dir: &Path) -> RunningServer {
    let server = server::start(ServerConfig {
        bootstrap: true,
        ..config(dir, 1)
    })
    .await
    .expect("node 1 starts");
    eventually("node 1 to lead", || async { server.node().is_leader().then_some(()) }).await;
    server
}

/// Node 1 bootstraps; nodes 2 and 3 join through its API.
async fn three_nodes(dir: &Path) -> Vec<RunningServer> {
    let first = one_node(dir).await;
    let join = format!("http://{}", first.api_address());
    let mut servers = vec![first];
    for node_id in 2..=3 {
        let server = server::start(ServerConfig {
            join: Some(join.clone()),
            ..config(dir, node_id)
        })
        .await
        .expect("a node joins");
        servers.push(server);
    }
    servers
}

async fn eventually<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Clone)]
struct Bearer(Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        Ok(request)
    }
}

type Client = DataPlaneClient<InterceptedService<Channel, Bearer>>;

fn client(server: &RunningServer, token: Option<&str>) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.raft_address()))
        .unwrap()
        .connect_lazy();
    DataPlaneClient::with_interceptor(channel, Bearer(token.map(str::to_owned)))
}

async fn create_service(server: &RunningServer, name: &str, min_scale: u32) {
    server
        .node()
        .write(Command::CreateService(ServiceSpec {
            name: name.into(),
            runs: strata_control_plane::registry::RevisionSpec::command("./cart"),
            settings: ServiceSettings {
                min_scale: Some(min_scale),
                shard_count: Some(SHARDS as u32),
                ..Default::default()
            },
        }))
        .await
        .expect("create the service");
}

/// A serialized FileDescriptorSet, as discovery would bring it.
fn descriptors() -> Vec<u8> {
    prost_types::FileDescriptorSet {
        file: vec![prost_types::FileDescriptorProto {
            name: Some("cart.proto".into()),
            package: Some("com.example.shoppingcart".into()),
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn cart_entity() -> EntityRoute {
    EntityRoute {
        entity_type: "cloudstate.eventsourced.EventSourced".into(),
        service_name: "com.example.shoppingcart.ShoppingCart".into(),
        persistence_id: "shopping-cart".into(),
    }
}

async fn register_and_ready(client: &mut Client, id: &str, service: &str) {
    let registered = client
        .register_instance(RegisterInstanceRequest {
            instance_id: id.into(),
            service: service.into(),
            address: format!("127.0.0.1:{}", 10_000 + id.len()),
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner();
    assert_eq!(registered.heartbeat_interval_ms, 100);
    assert_eq!(registered.heartbeat_timeout_ms, 1000);
    client
        .report_ready(ReportReadyRequest {
            instance_id: id.into(),
            descriptor_set: descriptors(),
            entities: vec![cart_entity()],
            ..Default::default()
        })
        .await
        .expect("report ready");
}

/// Heartbeats for `id` until the returned task is aborted (dropped instances stay alive
/// only while their heartbeat task runs).
fn keep_alive(mut client: Client, id: &str) -> tokio::task::JoinHandle<()> {
    let id = id.to_owned();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
        loop {
            ticks.tick().await;
            let _ = client
                .heartbeat(HeartbeatRequest {
                    instance_id: id.clone(),
                })
                .await;
        }
    })
}

async fn watch(client: &mut Client) -> Streaming<RouteSnapshot> {
    client
        .watch_routes(WatchRoutesRequest {})
        .await
        .expect("watch routes")
        .into_inner()
}

/// Reads snapshots until one shows `service` satisfying `check`.
/// The next snapshot's routes of `service` (snapshots without it are skipped).
async fn next_routes(stream: &mut Streaming<RouteSnapshot>, service: &str) -> ServiceRoutes {
    loop {
        let snapshot = stream
            .message()
            .await
            .expect("the watch stream stays healthy")
            .expect("the watch stream stays open");
        if let Some(routes) = snapshot.services.into_iter().find(|routes| routes.name == service) {
            return routes;
        }
    }
}

async fn routes_until(
    stream: &mut Streaming<RouteSnapshot>,
    service: &str,
    what: &str,
    check: impl Fn(&ServiceRoutes) -> bool,
) -> ServiceRoutes {
    let wait = async {
        loop {
            let routes = next_routes(stream, service).await;
            if check(&routes) {
                return routes;
            }
        }
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for routes where {what}"))
}

/// [`routes_until`], releasing every shard handed off on the way as the owner's
/// sidecar would once its commands for the shard are done.
async fn releasing_routes_until(
    stream: &mut Streaming<RouteSnapshot>,
    client: &mut Client,
    service: &str,
    what: &str,
    check: impl Fn(&ServiceRoutes) -> bool,
) -> ServiceRoutes {
    let wait = async {
        loop {
            let routes = next_routes(stream, service).await;
            if check(&routes) {
                return routes;
            }
            let mut handed_off: BTreeMap<String, Vec<u32>> = BTreeMap::new();
            for (number, shard) in routes.shards.iter().enumerate() {
                if !shard.handoff_to.is_empty() {
                    handed_off.entry(shard.owner.clone()).or_default().push(number as u32);
                }
            }
            for (instance_id, shards) in handed_off {
                client
                    .release_shards(ReleaseShardsRequest { instance_id, shards })
                    .await
                    .expect("release");
            }
        }
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for routes where {what}"))
}

fn owners(routes: &ServiceRoutes) -> BTreeMap<String, usize> {
    let mut owners = BTreeMap::new();
    for shard in &routes.shards {
        *owners.entry(shard.owner.clone()).or_default() += 1;
    }
    owners
}

fn all_owned_by(routes: &ServiceRoutes, id: &str) -> bool {
    routes.shards.iter().all(|shard| shard.owner == id)
}

fn events_of(server: &RunningServer, kind: EventKind, instance: &str) -> Vec<String> {
    server.node().read(|registry| {
        registry
            .events
            .iter()
            .filter(|event| event.kind == kind && event.instance.as_deref() == Some(instance))
            .map(|event| event.reason.clone())
            .collect()
    })
}

// --- scenarios ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_instances_own_the_shards_and_split_them_evenly() {
    let dir = tempfile::tempdir().unwrap();
    let server = one_node(dir.path()).await;
    create_service(&server, "cart", 0).await;
    let mut client = client(&server, Some(ADMIN));
    let mut routes = watch(&mut client).await;

    println!("--- the first snapshot arrives at once: the service, no owners yet");
    let first = routes_until(&mut routes, "cart", "the service is listed", |_| true).await;
    assert_eq!(first.shards.len(), SHARDS);
    assert!(first.instances.is_empty());
    assert!(first.descriptor_set.is_empty());

    println!("--- register and ready instance a: it owns every shard");
    register_and_ready(&mut client, "a", "cart").await;
    let _a = keep_alive(client.clone(), "a");
    let owned = routes_until(&mut routes, "cart", "a owns every shard", |r| all_owned_by(r, "a")).await;
    assert!(owned.shards.iter().all(|shard| shard.epoch == 1));
    assert_eq!(
        owned.descriptor_set,
        descriptors(),
        "the descriptors travel with the routes"
    );
    assert_eq!(owned.entities, vec![cart_entity()]);
    assert_eq!(owned.instances.len(), 1);
    assert_eq!(owned.instances[0].state, "ready");
    assert_eq!(owned.revision, 2, "discovered descriptors are a new revision");

    println!("--- a second instance: a hands half the shards over, each with a new epoch once released");
    register_and_ready(&mut client, "b", "cart").await;
    let _b = keep_alive(client.clone(), "b");
    let split = releasing_routes_until(&mut routes, &mut client, "cart", "b owns half the shards", |r| {
        owners(r).get("b") == Some(&(SHARDS / 2))
    })
    .await;
    assert_eq!(
        owners(&split),
        BTreeMap::from([("a".to_owned(), SHARDS / 2), ("b".to_owned(), SHARDS / 2)])
    );
    for (before, after) in owned.shards.iter().zip(&split.shards) {
        if after.owner == "b" {
            assert_eq!(after.epoch, before.epoch + 1, "a moved shard fences its old owner");
        } else {
            assert_eq!(after.epoch, before.epoch, "a kept shard keeps its epoch");
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_instance_is_removed_and_its_shards_move() {
    let dir = tempfile::tempdir().unwrap();
    let server = one_node(dir.path()).await;
    create_service(&server, "cart", 0).await;
    let mut client = client(&server, Some(ADMIN));
    let mut routes = watch(&mut client).await;
    register_and_ready(&mut client, "a", "cart").await;
    let _a = keep_alive(client.clone(), "a");
    register_and_ready(&mut client, "b", "cart").await;
    let b = keep_alive(client.clone(), "b");
    routes_until(&mut routes, "cart", "a and b share the shards", |r| {
        owners(r).len() == 2
    })
    .await;

    println!("--- b stops heartbeating");
    b.abort();
    let survivor = routes_until(&mut routes, "cart", "b is gone", |r| {
        r.instances.iter().all(|instance| instance.id != "b")
    })
    .await;
    assert!(all_owned_by(&survivor, "a"), "b's shards moved to a: {survivor:?}");
    assert_eq!(
        events_of(&server, EventKind::InstanceRemoved, "b"),
        vec!["missed heartbeats for 1s".to_owned()]
    );
    assert!(
        events_of(&server, EventKind::InstanceRemoved, "a").is_empty(),
        "a kept heartbeating"
    );

    println!("--- b's late heartbeat learns that it is no longer known");
    let late = client
        .heartbeat(HeartbeatRequest {
            instance_id: "b".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!late.known);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_instance_hands_its_shards_over() {
    let dir = tempfile::tempdir().unwrap();
    let server = one_node(dir.path()).await;
    create_service(&server, "cart", 0).await;
    let mut client = client(&server, Some(ADMIN));
    let mut routes = watch(&mut client).await;
    register_and_ready(&mut client, "a", "cart").await;
    let _a = keep_alive(client.clone(), "a");
    register_and_ready(&mut client, "b", "cart").await;
    let _b = keep_alive(client.clone(), "b");
    releasing_routes_until(&mut routes, &mut client, "cart", "a and b share the shards", |r| {
        owners(r).get("b") == Some(&(SHARDS / 2))
    })
    .await;

    println!("--- b drains");
    client
        .drain(DrainRequest {
            instance_id: "b".into(),
            reason: "scale down".into(),
        })
        .await
        .expect("drain");
    let drained = releasing_routes_until(&mut routes, &mut client, "cart", "b handed every shard to a", |r| {
        all_owned_by(r, "a")
    })
    .await;
    assert!(
        drained
            .instances
            .iter()
            .any(|instance| instance.id == "b" && instance.state == "draining"),
        "b is draining: {drained:?}"
    );
    assert_eq!(
        events_of(&server, EventKind::InstanceDraining, "b"),
        vec!["scale down".to_owned()]
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poke_at_zero_asks_for_one_instance_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = one_node(dir.path()).await;
    create_service(&server, "cart", 0).await;
    server
        .node()
        .write(Command::SetDesiredReplicas {
            service: "cart".into(),
            replicas: 0,
            reason: "idle".into(),
        })
        .await
        .unwrap();
    let mut client = client(&server, Some(ADMIN));
    let mut routes = watch(&mut client).await;
    routes_until(&mut routes, "cart", "desired is 0", |r| r.desired_replicas == 0).await;

    println!("--- poke at zero");
    let poked = client
        .poke(PokeRequest {
            service: "cart".into(),
            held: 1,
            ..Default::default()
        })
        .await
        .expect("poke")
        .into_inner();
    assert_eq!(poked.desired_replicas, 1);
    routes_until(&mut routes, "cart", "desired is 1", |r| r.desired_replicas == 1).await;
    let scale_reasons = || {
        server.node().read(|registry| {
            registry
                .events
                .iter()
                .filter(|event| event.kind == EventKind::Scale)
                .map(|event| event.reason.clone())
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(
        scale_reasons().last().map(String::as_str),
        Some("desired replicas 0 -> 1: request arrived at zero: scale from zero")
    );

    println!("--- a second poke changes nothing; an unknown service is NOT_FOUND");
    let count = scale_reasons().len();
    let again = client
        .poke(PokeRequest {
            service: "cart".into(),
            held: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.desired_replicas, 1);
    assert_eq!(scale_reasons().len(), count);
    let unknown = client
        .poke(PokeRequest {
            service: "nope".into(),
            held: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_autoscaler_a_poke_is_sized_by_the_requests_held() {
    let dir = tempfile::tempdir().unwrap();
    let server = server::start(ServerConfig {
        bootstrap: true,
        autoscaler: Some(AutoscaleConfig {
            stable_window: Duration::from_secs(6),
        }),
        ..config(dir.path(), 1)
    })
    .await
    .expect("node 1 starts");
    eventually("node 1 to lead", || async { server.node().is_leader().then_some(()) }).await;
    server
        .node()
        .write(Command::CreateService(ServiceSpec {
            name: "cart".into(),
            runs: strata_control_plane::registry::RevisionSpec::command("./cart"),
            settings: ServiceSettings {
                target_concurrency: Some(1),
                max_scale: Some(6),
                ..Default::default()
            },
        }))
        .await
        .unwrap();
    let set = |replicas: u32, reason: &str| Command::SetDesiredReplicas {
        service: "cart".into(),
        replicas,
        reason: reason.into(),
    };
    server.node().write(set(0, "idle")).await.unwrap();
    let mut client = client(&server, Some(ADMIN));
    let poke = |held: u32| PokeRequest {
        service: "cart".into(),
        held,
        ..Default::default()
    };

    println!("--- three requests held at zero: three instances at once");
    let poked = client.poke(poke(3)).await.expect("poke").into_inner();
    assert_eq!(poked.desired_replicas, 3);
    let last_scale = || {
        server.node().read(|registry| {
            registry
                .events
                .iter()
                .rev()
                .find(|event| event.kind == EventKind::Scale)
                .map(|event| event.reason.clone())
        })
    };
    assert_eq!(
        last_scale().as_deref(),
        Some("desired replicas 0 -> 3: scale from zero: 3 requests held at the gateway at target 1 per instance")
    );

    println!("--- an operator sets 4: the autoscaler takes it over instead of writing 3 back");
    server.node().write(set(4, "operator")).await.unwrap();
    let poked = client.poke(poke(1)).await.expect("poke").into_inner();
    assert_eq!(poked.desired_replicas, 4);
    assert_eq!(last_scale().as_deref(), Some("desired replicas 3 -> 4: operator"));

    println!("--- many more held while they start: more asked, up to max scale");
    let poked = client.poke(poke(40)).await.expect("poke").into_inner();
    assert_eq!(poked.desired_replicas, 6);
    assert!(
        last_scale().is_some_and(|reason| reason.ends_with("capped at max scale 6")),
        "{:?}",
        last_scale()
    );

    println!("--- an unknown service is NOT_FOUND");
    let unknown = client
        .poke(PokeRequest {
            service: "nope".into(),
            held: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_token_or_the_cluster_secret_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    let server = one_node(dir.path()).await;
    create_service(&server, "cart", 0).await;
    let heartbeat = || HeartbeatRequest {
        instance_id: "x".into(),
    };

    for token in [None, Some("wrong"), Some("")] {
        let refused = client(&server, token).heartbeat(heartbeat()).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "token {token:?}");
        let refused = client(&server, token)
            .watch_routes(WatchRoutesRequest {})
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "watch with token {token:?}");
    }
    let refused = client(&server, Some("wrong"))
        .register_instance(RegisterInstanceRequest {
            instance_id: "a".into(),
            service: "cart".into(),
            address: "127.0.0.1:1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        server.node().read(|registry| registry.instances.is_empty()),
        "a refused call changes nothing"
    );
    for token in [ADMIN, SECRET] {
        let answer = client(&server, Some(token)).heartbeat(heartbeat()).await;
        assert!(answer.is_ok(), "token {token}: {answer:?}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_credential_does_only_its_own_part() {
    let dir = tempfile::tempdir().unwrap();
    let servers = three_nodes(dir.path()).await;
    let leader = &servers[0];
    // Every call goes to a follower, which relays it: the leader checks the scope.
    let follower = &servers[1];
    create_service(leader, "cart", 0).await;
    create_service(leader, "shop", 0).await;
    let secret = ClusterSecret::new(SECRET);
    let own = secret.instance_credential("cart", Some("cart-a"));
    let register = |id: &str, service: &str| RegisterInstanceRequest {
        instance_id: id.into(),
        service: service.into(),
        address: format!("127.0.0.1:{}", 20_000 + id.len()),
        admin_address: String::new(),
        revision: 0,
    };
    let drain = |id: &str| DrainRequest {
        instance_id: id.into(),
        reason: "scale down".into(),
    };

    // --- an instance registers, reports ready and heartbeats as itself
    let mut instance = client(follower, Some(&own));
    instance
        .register_instance(register("cart-a", "cart"))
        .await
        .expect("register itself");
    instance
        .report_ready(ReportReadyRequest {
            instance_id: "cart-a".into(),
            descriptor_set: descriptors(),
            entities: vec![cart_entity()],
            ..Default::default()
        })
        .await
        .expect("report itself ready");
    let beat = instance
        .heartbeat(HeartbeatRequest {
            instance_id: "cart-a".into(),
        })
        .await
        .expect("heartbeat itself");
    assert!(beat.into_inner().known);

    // --- but nothing for anyone else
    client(leader, Some(ADMIN))
        .register_instance(register("cart-b", "cart"))
        .await
        .unwrap();
    let denied = [
        (
            "register another instance",
            code_of(instance.register_instance(register("cart-c", "cart")).await),
        ),
        (
            "register under another service",
            code_of(instance.register_instance(register("cart-a", "shop")).await),
        ),
        ("drain another instance", code_of(instance.drain(drain("cart-b")).await)),
        (
            "heartbeat for another instance",
            code_of(
                instance
                    .heartbeat(HeartbeatRequest {
                        instance_id: "cart-b".into(),
                    })
                    .await,
            ),
        ),
        (
            "poke",
            code_of(
                instance
                    .poke(PokeRequest {
                        service: "cart".into(),
                        held: 1,
                        ..Default::default()
                    })
                    .await,
            ),
        ),
    ];
    for (what, code) in denied {
        assert_eq!(code, Code::PermissionDenied, "an instance credential may not {what}");
    }

    // --- it may wake a service that subscribes to its own service's event log, only that
    let mut admin = client(leader, Some(ADMIN));
    admin
        .register_instance(register("shop-1", "shop"))
        .await
        .expect("register a shop instance");
    admin
        .report_ready(ReportReadyRequest {
            instance_id: "shop-1".into(),
            descriptor_set: descriptors(),
            entities: vec![EntityRoute {
                entity_type: "cloudstate.action.ActionProtocol".into(),
                service_name: "com.example.shop.CartEvents".into(),
                persistence_id: String::new(),
            }],
            subscriptions: vec!["shopping-cart".into(), "shopping-cart".into()],
        })
        .await
        .expect("the shop reports its subscription");
    assert_eq!(
        leader
            .node()
            .read(|registry| registry.services["shop"].subscriptions.clone()),
        ["shopping-cart"]
    );
    let wake = |service: &str, event_log: &str| PokeRequest {
        service: service.into(),
        held: 1,
        event_log: event_log.into(),
    };
    instance
        .poke(wake("shop", "shopping-cart"))
        .await
        .expect("the cart's events wake the shop");
    let mut shop = client(follower, Some(&secret.instance_credential("shop", Some("shop-1"))));
    for (what, code) in [
        (
            "wake for a log its service does not write",
            code_of(instance.poke(wake("shop", "orders")).await),
        ),
        (
            "wake a service that does not subscribe to the log",
            code_of(instance.poke(wake("cart", "shopping-cart")).await),
        ),
        (
            "wake for another service's log",
            code_of(shop.poke(wake("shop", "shopping-cart")).await),
        ),
    ] {
        assert_eq!(code, Code::PermissionDenied, "an instance credential may not {what}");
    }
    assert_eq!(
        code_of(
            admin
                .report_ready(ReportReadyRequest {
                    instance_id: "shop-1".into(),
                    subscriptions: vec![" ".into()],
                    ..Default::default()
                })
                .await
        ),
        Code::InvalidArgument,
        "a subscription names its event log"
    );
    // It learns its own shards (and where to forward) from the route watch.
    let mut own_routes = watch(&mut instance).await;
    assert!(
        own_routes.message().await.unwrap().is_some(),
        "an instance watches routes"
    );
    let registry = leader.node().read(|registry| registry.instances.clone());
    assert!(
        !registry.contains_key("cart-c"),
        "a refused registration left an instance"
    );
    assert_eq!(registry["cart-a"].service, "cart");
    assert_eq!(
        registry["cart-b"].state,
        InstanceState::Starting,
        "a refused drain changed the instance"
    );

    // --- a service-bound credential (Kubernetes pods) serves any instance of its service only
    let any_cart = client(follower, Some(&secret.instance_credential("cart", None)));
    assert_eq!(
        code_of(any_cart.clone().register_instance(register("shop-x", "shop")).await),
        Code::PermissionDenied
    );
    any_cart
        .clone()
        .register_instance(register("cart-pod", "cart"))
        .await
        .expect("any cart pod");

    // --- the gateway watches and pokes, and may not touch instances
    let mut gateway = client(follower, Some(GATEWAY));
    let mut routes = watch(&mut gateway).await;
    assert!(
        routes.message().await.unwrap().is_some(),
        "the gateway gets route snapshots"
    );
    gateway
        .poke(PokeRequest {
            service: "cart".into(),
            held: 1,
            ..Default::default()
        })
        .await
        .expect("the gateway pokes");
    assert_eq!(
        code_of(gateway.register_instance(register("cart-g", "cart")).await),
        Code::PermissionDenied
    );
    assert_eq!(code_of(gateway.drain(drain("cart-b")).await), Code::PermissionDenied);

    // --- a credential minted with another cluster's secret is nobody
    let forged = ClusterSecret::new("another cluster").instance_credential("cart", Some("cart-a"));
    assert_eq!(
        code_of(client(follower, Some(&forged)).drain(drain("cart-a")).await),
        Code::Unauthenticated
    );

    // --- nor may data-plane credentials use the management API
    let http = reqwest::Client::new();
    let services = format!("http://{}/api/v1/services", follower.api_address());
    for (token, status) in [
        (own.as_str(), 403),
        (GATEWAY, 403),
        (forged.as_str(), 401),
        ("wrong", 401),
    ] {
        let read = http.get(&services).bearer_auth(token).send().await.unwrap();
        assert_eq!(read.status().as_u16(), status, "GET with {token}");
        let write = http
            .post(&services)
            .bearer_auth(token)
            .json(&serde_json::json!({"name": "evil", "command": "./evil"}))
            .send()
            .await
            .unwrap();
        assert_eq!(write.status().as_u16(), status, "POST with {token}");
    }
    assert!(leader.node().read(|registry| !registry.services.contains_key("evil")));

    // --- and an instance drains itself
    instance.drain(drain("cart-a")).await.expect("drain itself");
    eventually("cart-a to drain", || async {
        let state = leader
            .node()
            .read(|registry| registry.instances.get("cart-a").map(|i| i.state));
        (state == Some(InstanceState::Draining)).then_some(())
    })
    .await;
    for server in servers {
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_get_precise_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = one_node(dir.path()).await;
    create_service(&server, "cart", 0).await;
    let mut client = client(&server, Some(SECRET));
    let register = |id: &str, service: &str| RegisterInstanceRequest {
        instance_id: id.into(),
        service: service.into(),
        address: "127.0.0.1:1".into(),
        ..Default::default()
    };

    assert_eq!(
        code_of(client.register_instance(register("", "cart")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code_of(client.register_instance(register("a", "")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code_of(client.register_instance(register("a", "nope")).await),
        Code::NotFound
    );
    client.register_instance(register("a", "cart")).await.unwrap();
    client
        .register_instance(register("a", "cart"))
        .await
        .expect("registering again is idempotent");
    let mut elsewhere = register("a", "cart");
    elsewhere.address = "127.0.0.1:2".into();
    assert_eq!(code_of(client.register_instance(elsewhere).await), Code::AlreadyExists);

    let ready = |id: &str, descriptor_set: Vec<u8>| ReportReadyRequest {
        instance_id: id.into(),
        descriptor_set,
        entities: vec![cart_entity()],
        ..Default::default()
    };
    assert_eq!(
        code_of(client.report_ready(ready("ghost", descriptors())).await),
        Code::NotFound
    );
    assert_eq!(
        code_of(client.report_ready(ready("a", b"\x0a\x05ab".to_vec())).await),
        Code::InvalidArgument
    );
    let drain = DrainRequest {
        instance_id: "ghost".into(),
        reason: String::new(),
    };
    assert_eq!(code_of(client.drain(drain).await), Code::NotFound);
    assert_eq!(
        code_of(
            client
                .poke(PokeRequest {
                    service: String::new(),
                    held: 1,
                    ..Default::default()
                })
                .await
        ),
        Code::InvalidArgument
    );
    let unknown = client
        .heartbeat(HeartbeatRequest {
            instance_id: "ghost".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!unknown.known);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_relay_calls_to_the_leader_and_serve_the_watch() {
    let dir = tempfile::tempdir().unwrap();
    let servers = three_nodes(dir.path()).await;
    let leader = &servers[0];
    create_service(leader, "cart", 0).await;
    let (follower, other) = (&servers[1], &servers[2]);
    assert!(!follower.node().is_leader());
    let mut on_follower = client(follower, Some(ADMIN));
    let mut routes = watch(&mut client(other, Some(SECRET))).await;

    println!("--- register, ready and heartbeat through a follower");
    register_and_ready(&mut on_follower, "a", "cart").await;
    let _a = keep_alive(on_follower.clone(), "a");
    let known = on_follower
        .heartbeat(HeartbeatRequest {
            instance_id: "a".into(),
        })
        .await
        .expect("heartbeat through a follower")
        .into_inner();
    assert!(known.known);
    routes_until(
        &mut routes,
        "cart",
        "a owns every shard (seen on another follower)",
        |r| all_owned_by(r, "a"),
    )
    .await;

    println!("--- a second instance, silent, is removed by the leader");
    register_and_ready(&mut on_follower, "b", "cart").await;
    // (a releases what it hands b, through the follower, as its sidecar would)
    releasing_routes_until(&mut routes, &mut on_follower, "cart", "b owns shards", |r| {
        owners(r).contains_key("b")
    })
    .await;
    let after = routes_until(&mut routes, "cart", "b is removed", |r| {
        r.instances.iter().all(|instance| instance.id != "b")
    })
    .await;
    assert!(all_owned_by(&after, "a"), "a kept heartbeating through the follower");

    println!("--- poke and drain through a follower");
    leader
        .node()
        .write(Command::SetDesiredReplicas {
            service: "cart".into(),
            replicas: 0,
            reason: "idle".into(),
        })
        .await
        .unwrap();
    let poked = on_follower
        .poke(PokeRequest {
            service: "cart".into(),
            held: 1,
            ..Default::default()
        })
        .await
        .expect("poke through a follower")
        .into_inner();
    assert_eq!(poked.desired_replicas, 1);
    on_follower
        .drain(DrainRequest {
            instance_id: "a".into(),
            reason: "bye".into(),
        })
        .await
        .expect("drain through a follower");
    let drained = routes_until(&mut routes, "cart", "a is draining", |r| {
        r.instances.iter().any(|instance| instance.state == "draining")
    })
    .await;
    assert!(drained.shards.iter().all(|shard| shard.owner.is_empty()));
    assert_eq!(
        code_of(
            on_follower
                .register_instance(RegisterInstanceRequest {
                    instance_id: "c".into(),
                    service: "nope".into(),
                    address: "127.0.0.1:3".into(),
                    ..Default::default()
                })
                .await
        ),
        Code::NotFound,
        "the leader's answer comes back through the follower"
    );
    for server in servers {
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_keeps_live_instances_and_removes_silent_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = three_nodes(dir.path()).await;
    create_service(&servers[0], "cart", 0).await;
    let mut on_follower = client(&servers[2], Some(SECRET));
    register_and_ready(&mut on_follower, "alive", "cart").await;
    let _alive = keep_alive(on_follower.clone(), "alive");
    register_and_ready(&mut on_follower, "silent", "cart").await;
    let silent = keep_alive(on_follower.clone(), "silent");

    println!("--- stop the leader (node 1)");
    let old_leader = servers.remove(0);
    old_leader.shutdown().await;
    let survivors = &servers;
    eventually("a new leader", || async {
        survivors.iter().any(|server| server.node().is_leader()).then_some(())
    })
    .await;

    println!("--- the live instance stays; the silent one is removed by the new leader");
    silent.abort();
    let mut routes = watch(&mut on_follower).await;
    let after = routes_until(&mut routes, "cart", "silent is removed", |r| {
        r.instances.iter().all(|instance| instance.id != "silent")
    })
    .await;
    assert_eq!(after.instances.len(), 1);
    assert!(all_owned_by(&after, "alive"));
    for server in servers {
        server.shutdown().await;
    }
}

fn code_of<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    result.unwrap_err().code()
}

/// Found by schemathesis: a member added under a new id at an existing node's address
/// passed the ping (that node answered) and left a one-node cluster without a quorum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_at_another_nodes_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = one_node(dir.path()).await;
    let http = reqwest::Client::new();
    let members = format!("http://{}/api/v1/cluster/members", server.api_address());
    let reply = http
        .post(&members)
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({
            "node_id": 100,
            "address": server.raft_address().to_string(),
            "api_address": server.api_address().to_string(),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 400);
    let body: serde_json::Value = reply.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is node 1, not node 100"),
        "{body}"
    );
    assert_eq!(server.node().voters().into_iter().collect::<Vec<_>>(), vec![1]);

    let reply = http
        .delete(format!("{members}/-1"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 400);
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["error"]["field"], "node_id", "a JSON error body: {body}");
    server.shutdown().await;
}
