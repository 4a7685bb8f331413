//! Bad input gets a clear answer with the right HTTP status or gRPC code, and costs
//! no data: every case runs against real processes.

use serde_json::{json, Value};
use strata_e2e::{cart_client, free_port, shoppingcart::*, start_proxy, start_shopping_cart, CartStack};
use strata_store::EntityKey;
use tonic::Code;

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_and_grpc_bad_input() {
    let stack = CartStack::start();
    let http = reqwest::Client::new();
    let mut grpc = stack.grpc().await;

    // --- malformed JSON: 400 INVALID_ARGUMENT
    let (status, body) = send(
        http.post(stack.url("/cart/u1/items/add"))
            .header("content-type", "application/json")
            .body("{\"productId\": "),
    )
    .await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT");

    // --- wrong field types and unknown fields: 400
    let (status, body) = send(
        http.post(stack.url("/cart/u1/items/add"))
            .json(&json!({"quantity": "lots"})),
    )
    .await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT");
    let (status, body) = send(
        http.post(stack.url("/cart/u1/items/add"))
            .json(&json!({"colour": "red"})),
    )
    .await;
    assert_error(status, &body, 400, "INVALID_ARGUMENT");

    // --- unknown path, and a known path with the wrong method: 404
    let (status, body) = send(http.get(stack.url("/nothing/here"))).await;
    assert_error(status, &body, 404, "UNIMPLEMENTED");
    let (status, body) = send(http.delete(stack.url("/carts/u1"))).await;
    assert_error(status, &body, 404, "UNIMPLEMENTED");

    // --- unknown gRPC method: UNIMPLEMENTED
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", stack.http_port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.unwrap();
    let status = raw
        .unary::<_, (), _>(
            tonic::Request::new(()),
            "/com.example.shoppingcart.ShoppingCart/Checkout".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // --- missing entity key: INVALID_ARGUMENT over gRPC
    let status = grpc
        .add_item(AddLineItem {
            user_id: String::new(),
            product_id: "p".into(),
            name: "P".into(),
            quantity: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("user_id"), "{}", status.message());

    // --- a failing command (quantity 0): HTTP 500 / gRPC UNKNOWN with the description, no event
    let (status, body) = send(
        http.post(stack.url("/cart/zero/items/add"))
            .json(&json!({"productId": "p", "name": "P", "quantity": 0})),
    )
    .await;
    assert_error(status, &body, 500, "UNKNOWN");
    let status = grpc
        .add_item(AddLineItem {
            user_id: "zero".into(),
            product_id: "p".into(),
            name: "P".into(),
            quantity: -1,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unknown);
    assert!(!status.message().is_empty());
    let store = strata_store::open(&stack.store_url()).await.unwrap();
    assert!(store
        .events(&EntityKey::new("shopping-cart", "zero"), 1)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let function_port = free_port();
    let http_port = free_port();
    let _function = start_shopping_cart(function_port);
    let store = format!("sqlite://{}", dir.path().join("s.db").display());
    let _proxy = start_proxy(function_port, http_port, &store, &["--max-body-bytes", "1024"]);

    // --- HTTP: 413 RESOURCE_EXHAUSTED
    let big = "x".repeat(4096);
    let (status, body) = send(
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{http_port}/cart/u1/items/add"))
            .json(&json!({"productId": "p", "name": big, "quantity": 1})),
    )
    .await;
    assert_error(status, &body, 413, "RESOURCE_EXHAUSTED");

    // --- gRPC: RESOURCE_EXHAUSTED
    let mut grpc = cart_client(http_port).await;
    let status = grpc
        .add_item(AddLineItem {
            user_id: "u1".into(),
            product_id: "p".into(),
            name: big,
            quantity: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);

    // --- and nothing was stored
    let store = strata_store::open(&store).await.unwrap();
    assert!(store
        .events(&EntityKey::new("shopping-cart", "u1"), 1)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_function_is_503_unavailable() {
    let mut stack = CartStack::start();
    let http = reqwest::Client::new();
    let (status, _) = send(
        http.post(stack.url("/cart/u1/items/add"))
            .json(&json!({"productId": "p", "name": "P", "quantity": 1})),
    )
    .await;
    assert_eq!(status, 200);

    // --- the function goes away: an active entity and a new one both get 503
    stack.function.kill();
    for user in ["u1", "new-user"] {
        let (status, body) = send(
            http.post(stack.url(&format!("/cart/{user}/items/add")))
                .json(&json!({"productId": "p", "name": "P", "quantity": 1})),
        )
        .await;
        assert_error(status, &body, 503, "UNAVAILABLE");
    }
    let mut grpc = stack.grpc().await;
    let status = grpc
        .get_cart(GetShoppingCart { user_id: "u1".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);

    // --- it comes back: the same proxy serves again, with the state intact
    stack.function = start_shopping_cart(stack.function_port);
    let cart = grpc
        .get_cart(GetShoppingCart { user_id: "u1".into() })
        .await
        .expect("served again")
        .into_inner();
    assert_eq!(cart.items.len(), 1);
    assert_eq!(cart.items[0].quantity, 1);
}
