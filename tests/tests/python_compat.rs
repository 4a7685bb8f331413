//! CloudState compatibility with a real non-Rust SDK: the shopping cart of
//! `examples/python-shopping-cart`, written for CloudState's own Python support
//! library (`cloudstate` 0.1.1 from PyPI, unmodified), runs behind `strata proxy`
//! with the same protos and public API as the Rust cart; and
//! `examples/python-orders`, two entities from one `.proto` (which that SDK sends
//! once per entity) with a side effect between them, and a durable timer
//! scheduled by a side effect to `strata.timers.Timers` with the published proto.
//!
//! It needs the virtualenv made by `scripts/python-cart-env.sh`, whose interpreter
//! goes in `STRATA_TEST_PYTHON_CART`. Without it the test is skipped, unless
//! `STRATA_REQUIRE_PYTHON=1` (`scripts/check` sets both), which makes it fail.
//!
//! What the Python SDK does differently from strata-sdk, and the proxy must accept:
//! its `EntitySpec` lists the user's files before their imports and brings its own
//! `cloudstate/entity_key.proto`; its `ServiceInfo` states no protocol version and its
//! entities no passivation strategy; its command handler sends no response headers
//! until its first reply; failures come back as a `ClientAction` failure whose
//! description is the Python `repr` of a list of messages; snapshots follow its own
//! count of sequence numbers (see the last phases).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use prost::Message;
use serde_json::{json, Value};
use strata_e2e::{binary, cart_client, free_port, shoppingcart, wait_for_port, Http, Process};
use strata_store::EntityKey;

/// The cart's persisted messages (`examples/shopping-cart/proto/domain.proto`), to
/// read what the Python SDK wrote.
mod domain {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LineItem {
        #[prost(string, tag = "1")]
        pub product_id: String,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(int32, tag = "3")]
        pub quantity: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ItemAdded {
        #[prost(message, optional, tag = "1")]
        pub item: Option<LineItem>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ItemRemoved {
        #[prost(string, tag = "1")]
        pub product_id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Cart {
        #[prost(message, repeated, tag = "1")]
        pub items: Vec<LineItem>,
    }
}

/// The type URLs the Python SDK gives events and snapshots (`Any.Pack`).
const ITEM_ADDED: &str = "type.googleapis.com/com.example.shoppingcart.persistence.ItemAdded";
const ITEM_REMOVED: &str = "type.googleapis.com/com.example.shoppingcart.persistence.ItemRemoved";
const CART_SNAPSHOT: &str = "type.googleapis.com/com.example.shoppingcart.persistence.Cart";

/// The venv's interpreter, or `None` to skip.
fn python_interpreter() -> Option<PathBuf> {
    match std::env::var_os("STRATA_TEST_PYTHON_CART") {
        Some(python) if !python.is_empty() => Some(PathBuf::from(python)),
        _ => {
            assert!(
                std::env::var("STRATA_REQUIRE_PYTHON").as_deref() != Ok("1"),
                "STRATA_REQUIRE_PYTHON=1 but STRATA_TEST_PYTHON_CART is not set \
                 (it is the python that scripts/python-cart-env.sh prints)"
            );
            eprintln!(
                "skipping the Python SDK test: STRATA_TEST_PYTHON_CART is not set; \
                 STRATA_TEST_PYTHON_CART=$(scripts/python-cart-env.sh | tail -n 1) sets it"
            );
            None
        }
    }
}

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python-shopping-cart")
}

fn orders_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python-orders")
}

/// Waits until the process serves on `port`; fails at once if it exits first.
fn wait_until_serving(process: &mut Process, port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if wait_for_port(port, Duration::from_millis(200)) {
            return;
        }
        assert!(
            !process.exited(),
            "{} exited before serving on {port} (run with STRATA_TEST_LOGS=1 to see why)",
            process.name()
        );
    }
    panic!("{} did not serve on {port} within {timeout:?}", process.name());
}

/// A Python example, as a user runs it: `python SCRIPT` in its folder with HOST
/// and PORT, the way the SDK reads them, plus `env`.
fn start_python(python: &Path, dir: PathBuf, script: &str, port: u16, env: &[(&str, String)]) -> Process {
    let mut command = Command::new(python);
    command
        .arg(script)
        .current_dir(dir)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .envs(env.iter().map(|(k, v)| (k, v)));
    let mut process = Process::spawn(&format!("python {script}"), command);
    wait_until_serving(&mut process, port, Duration::from_secs(30));
    process
}

/// The Python cart; `snapshot_every` sets CART_SNAPSHOT_EVERY.
fn start_python_cart(python: &Path, port: u16, snapshot_every: Option<u32>) -> Process {
    let env: Vec<(&str, String)> = snapshot_every
        .map(|every| ("CART_SNAPSHOT_EVERY", every.to_string()))
        .into_iter()
        .collect();
    start_python(python, example_dir(), "main.py", port, &env)
}

/// `strata proxy` for the function on `function_port`, like `start_proxy` but
/// failing as soon as the proxy exits (it does when discovery is refused).
fn start_proxy(function_port: u16, http_port: u16, store: &str) -> Process {
    let mut command = Command::new(binary("strata"));
    command
        .arg("proxy")
        .env("USER_FUNCTION_PORT", function_port.to_string())
        .env("HTTP_PORT", http_port.to_string())
        .env("STRATA_STORE", store);
    let mut process = Process::spawn("strata proxy", command);
    wait_until_serving(&mut process, http_port, Duration::from_secs(30));
    process
}

/// Adds `quantity` of a product to `user`'s cart over HTTP+JSON.
async fn add(http: &Http, user: &str, product: &str, name: &str, quantity: i32) -> (u16, Value) {
    let body = json!({"productId": product, "name": name, "quantity": quantity});
    http.post(&format!("/cart/{user}/items/add"), body).await
}

/// A cart's items as (product, name, quantity), in the order of the answer.
type Items = Vec<(String, String, i32)>;

fn items_of_json(json: &Value) -> Items {
    json.as_array()
        .or_else(|| json["items"].as_array())
        .unwrap_or_else(|| panic!("a list of items, got {json}"))
        .iter()
        .map(|item| {
            (
                item["productId"].as_str().unwrap().to_string(),
                item["name"].as_str().unwrap().to_string(),
                item["quantity"].as_i64().unwrap() as i32,
            )
        })
        .collect()
}

fn items_of_grpc(cart: &shoppingcart::Cart) -> Items {
    cart.items
        .iter()
        .map(|i| (i.product_id.clone(), i.name.clone(), i.quantity))
        .collect()
}

fn items(list: &[(&str, &str, i32)]) -> Items {
    list.iter()
        .map(|(p, n, q)| (p.to_string(), n.to_string(), *q))
        .collect()
}

/// The same cart over HTTP+JSON (both bindings) and over gRPC; returns it.
async fn cart_everywhere(http: &Http, http_port: u16, user: &str) -> Items {
    let (status, body) = http.get(&format!("/carts/{user}")).await;
    assert_eq!(status, 200, "GET /carts/{user}: {body}");
    let over_http = items_of_json(&body);
    let (status, body) = http.get(&format!("/carts/{user}/items")).await;
    assert_eq!(status, 200, "GET /carts/{user}/items: {body}");
    assert!(body.is_array(), "response_body: items gives a bare list, got {body}");
    assert_eq!(items_of_json(&body), over_http, "the two HTTP bindings differ");
    let cart = cart_client(http_port)
        .await
        .get_cart(shoppingcart::GetShoppingCart { user_id: user.into() })
        .await
        .expect("gRPC GetCart")
        .into_inner();
    assert_eq!(items_of_grpc(&cart), over_http, "gRPC and HTTP+JSON answer differently");
    over_http
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_cart_runs_behind_the_proxy() {
    let Some(python) = python_interpreter() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let store_url = format!("sqlite://{}", dir.path().join("strata.db").display());
    let function_port = free_port();
    let http_port = free_port();

    // --- the Python cart, and strata proxy on a fresh SQLite file
    // (The SDK ships its own cloudstate/entity_key.proto declaring the option as
    // 50002 while the cart's protos mark keys with 1080: the proxy must recognise
    // both numbers, as CloudState's did.)
    let mut function = start_python_cart(&python, function_port, None);
    let mut proxy = start_proxy(function_port, http_port, &store_url);
    let http = Http::new(http_port);

    // --- three items into "ann" over HTTP+JSON, one removed
    // (grpcio sends the stream's response headers only with its first reply, so
    // the proxy must send the first command without waiting for them.)
    for (product, name, quantity) in [("apple", "Apple", 3), ("pear", "Pear", 2), ("fig", "Fig", 1)] {
        let (status, body) = add(&http, "ann", product, name, quantity).await;
        assert_eq!(status, 200, "AddItem {product}: {body}");
        assert_eq!(body, json!({}));
    }
    let (status, body) = http.post("/cart/ann/items/pear/remove", json!({})).await;
    assert_eq!(status, 200, "RemoveItem: {body}");

    // --- GetCart over HTTP+JSON and over gRPC: the same cart, in the order added
    let ann = items(&[("apple", "Apple", 3), ("fig", "Fig", 1)]);
    assert_eq!(cart_everywhere(&http, http_port, "ann").await, ann);

    // --- quantity 0 fails with the SDK's message (a Python list of the messages
    // given to ctx.fail), over HTTP and gRPC, and stores nothing
    let sdk_message = "['Quantity for item kiwi must be greater than zero.']";
    let (status, body) = add(&http, "ann", "kiwi", "Kiwi", 0).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "UNKNOWN", "{body}");
    assert_eq!(body["error"]["message"], sdk_message, "{body}");
    let status = cart_client(http_port)
        .await
        .add_item(shoppingcart::AddLineItem {
            user_id: "ann".into(),
            product_id: "kiwi".into(),
            name: "Kiwi".into(),
            quantity: 0,
        })
        .await
        .expect_err("quantity 0 must fail");
    assert_eq!(status.code(), tonic::Code::Unknown);
    assert_eq!(status.message(), sdk_message);
    let (status, body) = http.post("/cart/ann/items/plum/remove", json!({})).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        body["error"]["message"],
        "['Cannot remove item plum because it is not in the cart.']"
    );
    let store = strata_store::open(&store_url).await.expect("open the store");
    let ann_key = EntityKey::new("shopping-cart", "ann");
    assert_eq!(store.events(&ann_key, 1).await.expect("events").len(), 4);
    assert_eq!(cart_everywhere(&http, http_port, "ann").await, ann);

    // --- seven items into "kim", then kill -9 both processes and start both again
    let mut kim = Items::new();
    for i in 1..=7 {
        let (product, name) = (format!("p{i}"), format!("Thing {i}"));
        let (status, body) = add(&http, "kim", &product, &name, i).await;
        assert_eq!(status, 200, "AddItem {product}: {body}");
        kim.push((product, name, i));
    }
    assert_eq!(cart_everywhere(&http, http_port, "kim").await, kim);
    proxy.kill();
    function.kill();
    let mut function = start_python_cart(&python, function_port, None);
    let mut proxy = start_proxy(function_port, http_port, &store_url);

    // --- both carts are intact
    assert_eq!(cart_everywhere(&http, http_port, "kim").await, kim);
    assert_eq!(cart_everywhere(&http, http_port, "ann").await, ann);

    // --- the journal holds the Python SDK's events, type URLs and bytes, in order
    let ann_events = store.events(&ann_key, 1).await.expect("events");
    let urls: Vec<_> = ann_events.iter().map(|e| e.payload.type_url.as_str()).collect();
    assert_eq!(urls, [ITEM_ADDED, ITEM_ADDED, ITEM_ADDED, ITEM_REMOVED]);
    assert_eq!(ann_events.iter().map(|e| e.seq_nr).collect::<Vec<_>>(), [1, 2, 3, 4]);
    let first = domain::ItemAdded::decode(ann_events[0].payload.value.as_slice()).expect("an ItemAdded");
    let apple = domain::LineItem {
        product_id: "apple".into(),
        name: "Apple".into(),
        quantity: 3,
    };
    assert_eq!(first.item, Some(apple));
    let removed = domain::ItemRemoved::decode(ann_events[3].payload.value.as_slice()).expect("an ItemRemoved");
    assert_eq!(removed.product_id, "pear");
    let kim_key = EntityKey::new("shopping-cart", "kim");
    let kim_recovery = store.recover(&kim_key).await.expect("recover kim");
    assert_eq!(kim_recovery.events.len(), 7);
    assert!(kim_recovery.events.iter().all(|e| e.payload.type_url == ITEM_ADDED));
    // The cart takes no snapshots by default (SDK 0.1.1 cannot read them back).
    assert!(kim_recovery.snapshot.is_none());
    assert!(store.recover(&ann_key).await.expect("recover ann").snapshot.is_none());

    // --- snapshots on (CART_SNAPSHOT_EVERY=5, function restarted under the proxy):
    // the SDK numbers a command's events from the last event it was replayed, never
    // from earlier commands', so after replaying ann's 4 events it takes a snapshot
    // with *every* command; the proxy files each under its reply's last event
    function.kill();
    let mut function = start_python_cart(&python, function_port, Some(5));
    for (product, name, quantity) in [("date", "Date", 2), ("apple", "Apple", 1)] {
        let (status, body) = add(&http, "ann", product, name, quantity).await;
        assert_eq!(status, 200, "AddItem {product}: {body}");
    }
    let ann = items(&[("apple", "Apple", 4), ("fig", "Fig", 1), ("date", "Date", 2)]);
    assert_eq!(cart_everywhere(&http, http_port, "ann").await, ann);
    let recovery = store.recover(&ann_key).await.expect("recover ann");
    let snapshot = recovery.snapshot.expect("a snapshot from the Python SDK");
    assert_eq!(snapshot.seq_nr, 6);
    assert_eq!(snapshot.payload.type_url, CART_SNAPSHOT);
    let cart = domain::Cart::decode(snapshot.payload.value.as_slice()).expect("a Cart");
    let snapshot_items: Items = cart
        .items
        .iter()
        .map(|i| (i.product_id.clone(), i.name.clone(), i.quantity))
        .collect();
    assert_eq!(snapshot_items, ann);
    assert!(recovery.events.is_empty());

    // --- SDK 0.1.1 cannot load a snapshot back (its get_payload asks the snapshot's
    // Any for a `.payload`): after kill -9 of both, ann fails with the SDK's own
    // error (500 / INTERNAL, the function broke), but is not lost
    proxy.kill();
    function.kill();
    let _function = start_python_cart(&python, function_port, None);
    let _proxy = start_proxy(function_port, http_port, &store_url);
    let (status, body) = http.get("/carts/ann").await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "INTERNAL", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("has no attribute 'payload'"), "{body}");
    assert_eq!(cart_everywhere(&http, http_port, "kim").await, kim);
    let recovery = store.recover(&ann_key).await.expect("recover ann");
    assert_eq!(recovery.snapshot.map(|s| s.seq_nr), Some(6));
    assert_eq!(store.events(&ann_key, 1).await.expect("events").len(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_two_entities_from_one_proto() {
    let Some(python) = python_interpreter() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let store_url = format!("sqlite://{}", dir.path().join("strata.db").display());
    let function_port = free_port();
    let http_port = free_port();

    // --- the SDK sends orders/orders.proto once per entity: discovery accepts it
    let _function = start_python(&python, orders_dir(), "function.py", function_port, &[]);
    let _proxy = start_proxy(function_port, http_port, &store_url);
    let http = Http::new(http_port);

    // --- an order reserves its stock (a synchronous side effect on the other
    // entity) before the client hears back
    let (status, body) = http
        .post("/orders/o-1", json!({"productId": "apple", "quantity": 2}))
        .await;
    assert_eq!(status, 200, "Place: {body}");
    let (status, body) = http.get("/stock/apple").await;
    assert_eq!(status, 200, "Stock.Get: {body}");
    assert_eq!(body, json!({"reserved": 2}));
    let (status, body) = http
        .post("/orders/o-2", json!({"productId": "apple", "quantity": 3}))
        .await;
    assert_eq!(status, 200, "Place: {body}");
    let (_, body) = http.get("/stock/apple").await;
    assert_eq!(body, json!({"reserved": 5}));
    let (status, body) = http.get("/orders/o-1").await;
    assert_eq!(status, 200, "Orders.Get: {body}");
    assert_eq!(body, json!({"productId": "apple", "quantity": 2}));

    // --- both entities' events are in the store, each under its persistence id
    let store = strata_store::open(&store_url).await.expect("open the store");
    assert_eq!(
        store.events(&EntityKey::new("orders", "o-1"), 1).await.unwrap().len(),
        1
    );
    assert_eq!(
        store.events(&EntityKey::new("stock", "apple"), 1).await.unwrap().len(),
        2
    );

    // --- a failed order reserves nothing
    let (status, body) = http
        .post("/orders/o-3", json!({"productId": "apple", "quantity": 0}))
        .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "UNKNOWN", "{body}");
    let (_, body) = http.get("/stock/apple").await;
    assert_eq!(body, json!({"reserved": 5}));

    // --- a command that both forwards and replies: the SDK refuses it, and the
    // client hears why (500 / INTERNAL with the SDK's message)
    let (status, body) = http.post("/orders/o-1/confused", json!({})).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "INTERNAL", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Both a reply was returned, and a forward message was sent"),
        "{body}"
    );
    // The entity is served again afterwards.
    let (status, body) = http.get("/orders/o-1").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_function_schedules_a_timer_through_the_published_proto() {
    let Some(python) = python_interpreter() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let store_url = format!("sqlite://{}", dir.path().join("strata.db").display());
    let function_port = free_port();
    let http_port = free_port();
    let _function = start_python(&python, orders_dir(), "function.py", function_port, &[]);
    let _proxy = start_proxy(function_port, http_port, &store_url);
    let http = Http::new(http_port);
    let store = strata_store::open(&store_url).await.expect("open the store");
    let timers = store.timers().expect("SQLite keeps timers");

    // --- Hold reserves the stock and, as a side effect with the published
    // ScheduleTimer message, schedules its release: stored with the event
    let (status, body) = http
        .post("/stock/pear/hold", json!({"quantity": 4, "holdMs": 1500}))
        .await;
    assert_eq!(status, 200, "Hold: {body}");
    let pending = timers
        .list_timers("standalone", strata_store::TimerState::Pending, 10)
        .await
        .unwrap();
    let timer = pending
        .iter()
        .find(|timer| timer.key.entity_id == "pear")
        .unwrap_or_else(|| panic!("no timer stored for pear: {pending:?}"));
    assert_eq!(timer.key.name, "release");
    assert_eq!(timer.key.owner, "com.example.orders.Stock");
    assert_eq!(
        (timer.call.service_name.as_str(), timer.call.method.as_str()),
        ("com.example.orders.Stock", "Release")
    );
    let (_, body) = http.get("/stock/pear").await;
    assert_eq!(body, json!({"reserved": 4}));

    // --- a failed Hold stores no timer
    let (status, body) = http
        .post("/stock/plum/hold", json!({"quantity": 0, "holdMs": 1500}))
        .await;
    assert_eq!(status, 500, "{body}");
    let pending = timers
        .list_timers("standalone", strata_store::TimerState::Pending, 10)
        .await
        .unwrap();
    assert!(pending.iter().all(|timer| timer.key.entity_id != "plum"), "{pending:?}");

    // --- when it is due the sidecar calls Stock.Release: the stock is free again
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http.get("/stock/pear").await;
        assert_eq!(status, 200, "{body}");
        if body == json!({}) || body == json!({"reserved": 0}) {
            break;
        }
        assert!(Instant::now() < deadline, "the hold was never released: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pending = timers
        .list_timers("standalone", strata_store::TimerState::Pending, 10)
        .await
        .unwrap();
    assert!(pending.is_empty(), "the fired timer is removed: {pending:?}");
}

/// The CloudState Python cart receives the call's `traceparent` in the
/// command's metadata: read on the wire by the conformance kit's interceptor
/// between the proxy and the function, which the cart answers as before.
#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_cart_receives_the_traceparent() {
    use strata_proto::cloudstate::{eventsourced::event_sourced_stream_in, metadata_entry};
    let Some(python) = python_interpreter() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (function_port, http_port) = (free_port(), free_port());
    let _cart = start_python_cart(&python, function_port, None);
    let interceptor = strata_tck::intercept::Interceptor::start(([127, 0, 0, 1], function_port).into())
        .await
        .unwrap();
    let store = format!("sqlite://{}", dir.path().join("cart.db").display());
    let _proxy = start_proxy(interceptor.address.port(), http_port, &store);

    // --- a call with a client's traceparent
    let traceparent = "00-8bf92f3577b34da6a3ce929d0e0e473a-5555555555555555-01";
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{http_port}/cart/traced/items/add"))
        .header("traceparent", traceparent)
        .json(&json!({"productId": "apple", "name": "apple", "quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    // --- the command the Python cart received carries it, once
    let mut stream = interceptor.event_sourced().await.unwrap();
    let command = loop {
        match stream.incoming.message().await.unwrap().message {
            Some(event_sourced_stream_in::Message::Command(command)) => break command,
            _ => continue,
        }
    };
    let entries = command.metadata.unwrap_or_default().entries;
    let sent: Vec<_> = entries.iter().filter(|entry| entry.key == "traceparent").collect();
    assert_eq!(sent.len(), 1, "{entries:?}");
    assert_eq!(
        sent[0].value,
        Some(metadata_entry::Value::StringValue(traceparent.into())),
        "no exporter in this proxy: the client's traceparent, passed on"
    );
}
