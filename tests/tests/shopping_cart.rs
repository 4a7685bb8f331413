//! The shopping cart end to end: the Rust cart function and `strata proxy` as real
//! processes on loopback, state in a real SQLite file.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use strata_e2e::{shoppingcart::*, CartStack};
use strata_store::EntityKey;

async fn post(stack: &CartStack, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(stack.url(path))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(stack: &CartStack, path: &str) -> (u16, Value) {
    let response = reqwest::get(stack.url(path)).await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn add(user: &str, product: &str, name: &str, quantity: i32) -> AddLineItem {
    AddLineItem {
        user_id: user.into(),
        product_id: product.into(),
        name: name.into(),
        quantity,
    }
}

/// Items of a cart as product -> (name, quantity), from the JSON answer.
fn items_of(json: &Value) -> BTreeMap<String, (String, i64)> {
    json.as_array()
        .or_else(|| json["items"].as_array())
        .expect("a list of items")
        .iter()
        .map(|item| {
            (
                item["productId"].as_str().unwrap().to_string(),
                (
                    item["name"].as_str().unwrap().to_string(),
                    item["quantity"].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}

fn items_of_grpc(cart: &Cart) -> BTreeMap<String, (String, i64)> {
    cart.items
        .iter()
        .map(|i| (i.product_id.clone(), (i.name.clone(), i.quantity as i64)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn same_cart_over_http_json_and_grpc() {
    let stack = CartStack::start();
    let mut grpc = stack.grpc().await;

    // --- build cart "ann" over HTTP+JSON and cart "bob" over gRPC, the same way
    for (product, name, quantity) in [("apple", "Apple", 1), ("pear", "Pear", 2), ("fig", "Fig", 3)] {
        let (status, body) = post(
            &stack,
            "/cart/ann/items/add",
            json!({"productId": product, "name": name, "quantity": quantity}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, json!({}));
        grpc.add_item(add("bob", product, name, quantity))
            .await
            .expect("gRPC AddItem");
    }
    let (status, _) = post(&stack, "/cart/ann/items/pear/remove", json!({})).await;
    assert_eq!(status, 200);
    grpc.remove_item(RemoveLineItem {
        user_id: "bob".into(),
        product_id: "pear".into(),
    })
    .await
    .expect("gRPC RemoveItem");

    // --- read both carts both ways: four identical answers
    let expected: BTreeMap<_, _> = [
        ("apple".to_string(), ("Apple".to_string(), 1)),
        ("fig".to_string(), ("Fig".to_string(), 3)),
    ]
    .into();
    for user in ["ann", "bob"] {
        let (status, cart) = get(&stack, &format!("/carts/{user}")).await;
        assert_eq!(status, 200);
        assert_eq!(items_of(&cart), expected, "HTTP cart of {user}: {cart}");
        let cart = grpc
            .get_cart(GetShoppingCart { user_id: user.into() })
            .await
            .expect("gRPC GetCart")
            .into_inner();
        assert_eq!(items_of_grpc(&cart), expected, "gRPC cart of {user}");
    }

    // --- the additional binding answers with the items alone
    let (status, items) = get(&stack, "/carts/ann/items").await;
    assert_eq!(status, 200);
    assert!(items.is_array(), "response_body: items gives a bare list, got {items}");
    assert_eq!(items_of(&items), expected);

    // --- original proto field names are accepted as well as camelCase
    let (status, _) = post(
        &stack,
        "/cart/cy/items/add",
        json!({"product_id": "kiwi", "name": "Kiwi", "quantity": 4}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, cart) = get(&stack, "/carts/cy").await;
    assert_eq!(items_of(&cart)["kiwi"], ("Kiwi".to_string(), 4));
}

#[tokio::test(flavor = "multi_thread")]
async fn cart_survives_kill_9_and_restores_from_snapshot() {
    let mut stack = CartStack::start();

    // --- twelve events: snapshots at 5 and 10 (the cart snapshots every 5 events)
    for i in 1..=12 {
        let (status, body) = post(
            &stack,
            "/cart/kim/items/add",
            json!({"productId": format!("p{}", i % 4), "name": "Thing", "quantity": i}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, before) = get(&stack, "/carts/kim").await;

    // --- kill -9 the proxy and the function; start both again
    stack.kill_and_restart();
    let (status, after) = get(&stack, "/carts/kim").await;
    assert_eq!(status, 200);
    assert_eq!(items_of(&after), items_of(&before), "the cart changed across kill -9");
    let total: i64 = items_of(&after).values().map(|(_, q)| q).sum();
    assert_eq!(total, (1..=12).sum::<i64>());

    // --- recovery is the snapshot at 10 plus events 11 and 12
    let store = strata_store::open(&stack.store_url()).await.expect("open the store");
    let recovery = store
        .recover(&EntityKey::new("shopping-cart", "kim"))
        .await
        .expect("recover");
    assert_eq!(recovery.snapshot.as_ref().map(|s| s.seq_nr), Some(10));
    assert_eq!(
        recovery.events.iter().map(|e| e.seq_nr).collect::<Vec<_>>(),
        vec![11, 12]
    );
    assert!(recovery
        .snapshot
        .unwrap()
        .payload
        .type_url
        .ends_with("com.example.shoppingcart.persistence.Cart"));
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_concurrent_adds_to_one_cart_are_all_kept() {
    let stack = CartStack::start();
    let grpc = stack.grpc().await;
    let mut calls = Vec::new();
    for i in 1..=100 {
        let mut client = grpc.clone();
        calls.push(tokio::spawn(async move {
            client.add_item(add("hot", &format!("p{}", i % 7), "Thing", i)).await
        }));
    }
    let mut acknowledged = 0;
    for call in calls {
        call.await.expect("task").expect("AddItem acknowledged");
        acknowledged += 1;
    }
    assert_eq!(acknowledged, 100);
    let cart = grpc
        .clone()
        .get_cart(GetShoppingCart { user_id: "hot".into() })
        .await
        .expect("GetCart")
        .into_inner();
    let total: i64 = cart.items.iter().map(|i| i.quantity as i64).sum();
    assert_eq!(total, (1..=100).sum::<i64>());
    let store = strata_store::open(&stack.store_url()).await.expect("open the store");
    let events = store
        .events(&EntityKey::new("shopping-cart", "hot"), 1)
        .await
        .expect("events");
    assert_eq!(events.len(), 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn cart_on_postgres_survives_kill_9() {
    let Some(store) = strata_e2e::fresh_postgres_database("cart_e2e").await else {
        return;
    };
    let function_port = strata_e2e::free_port();
    let http_port = strata_e2e::free_port();
    let mut function = strata_e2e::start_shopping_cart(function_port);
    let mut proxy = strata_e2e::start_proxy(function_port, http_port, &store, &[]);
    let mut grpc = strata_e2e::cart_client(http_port).await;

    // --- seven items into one cart: a snapshot at 5 and two events after it
    for i in 1..=7 {
        grpc.add_item(add("pg", &format!("p{i}"), "Thing", i))
            .await
            .expect("AddItem");
    }

    // --- kill -9 both, start both again on the same database
    proxy.kill();
    function.kill();
    let _function = strata_e2e::start_shopping_cart(function_port);
    let _proxy = strata_e2e::start_proxy(function_port, http_port, &store, &[]);
    let mut grpc = strata_e2e::cart_client(http_port).await;
    let cart = grpc
        .get_cart(GetShoppingCart { user_id: "pg".into() })
        .await
        .expect("GetCart")
        .into_inner();
    assert_eq!(cart.items.len(), 7);
    assert_eq!(cart.items.iter().map(|i| i.quantity).sum::<i32>(), 28);

    let recovery = strata_store::open(&store)
        .await
        .expect("open postgres")
        .recover(&EntityKey::new("shopping-cart", "pg"))
        .await
        .expect("recover");
    assert_eq!(recovery.snapshot.map(|s| s.seq_nr), Some(5));
    assert_eq!(recovery.events.iter().map(|e| e.seq_nr).collect::<Vec<_>>(), vec![6, 7]);
}

#[tokio::test(flavor = "multi_thread")]
async fn active_carts_keep_working_after_the_function_restarts() {
    let mut stack = CartStack::start();
    let mut grpc = stack.grpc().await;
    grpc.add_item(add("ivy", "p", "Thing", 1)).await.expect("AddItem");

    // --- the function restarts while the cart is active (its stream is dead)
    stack.function.kill();
    stack.function = strata_e2e::start_shopping_cart(stack.function_port);

    // --- the very next command is served from a fresh stream, state intact
    grpc.add_item(add("ivy", "p", "Thing", 2))
        .await
        .expect("AddItem after the restart");
    let cart = grpc
        .get_cart(GetShoppingCart { user_id: "ivy".into() })
        .await
        .expect("GetCart")
        .into_inner();
    assert_eq!(cart.items[0].quantity, 3);
}
