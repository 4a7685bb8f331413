//! The proxy speaks more than plain gRPC: server reflection (v1 and v1alpha) and
//! gRPC-web (binary and text), checked with real clients on loopback.

use base64::Engine;
use prost::Message;
use strata_e2e::{shoppingcart::*, CartStack};
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread")]
async fn reflection_lists_the_shopping_cart() {
    let stack = CartStack::start();
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", stack.http_port))
        .unwrap()
        .connect()
        .await
        .unwrap();

    // --- v1
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse, ServerReflectionRequest,
    };
    let mut client = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"com.example.shoppingcart.ShoppingCart"), "{names:?}");

    // --- v1alpha, and the file that defines the service
    use tonic_reflection::pb::v1alpha::{
        server_reflection_client::ServerReflectionClient as AlphaClient,
        server_reflection_request::MessageRequest as AlphaRequest,
        server_reflection_response::MessageResponse as AlphaResponse, ServerReflectionRequest as AlphaMessage,
    };
    let mut client = AlphaClient::new(channel);
    let requests = [
        AlphaMessage {
            host: String::new(),
            message_request: Some(AlphaRequest::ListServices(String::new())),
        },
        AlphaMessage {
            host: String::new(),
            message_request: Some(AlphaRequest::FileContainingSymbol(
                "com.example.shoppingcart.ShoppingCart".into(),
            )),
        },
    ];
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let Some(AlphaResponse::ListServicesResponse(list)) = answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list")
    };
    assert!(list
        .service
        .iter()
        .any(|s| s.name == "com.example.shoppingcart.ShoppingCart"));
    let Some(AlphaResponse::FileDescriptorResponse(files)) = answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected file descriptors")
    };
    let file = prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
    assert_eq!(file.package(), "com.example.shoppingcart");
}

fn grpc_web_frame(message: &impl Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    frame.extend_from_slice(&bytes);
    frame
}

/// Splits a gRPC-web body into its message and its trailer text.
fn split_grpc_web(body: &[u8]) -> (Option<Vec<u8>>, String) {
    let mut message = None;
    let mut trailers = String::new();
    let mut rest = body;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let payload = &rest[5..5 + len];
        if rest[0] & 0x80 != 0 {
            trailers = String::from_utf8(payload.to_vec()).unwrap();
        } else {
            message = Some(payload.to_vec());
        }
        rest = &rest[5 + len..];
    }
    (message, trailers)
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_web_binary_and_text() {
    let stack = CartStack::start();
    let http = reqwest::Client::new();
    let url = stack.url("/com.example.shoppingcart.ShoppingCart/AddItem");

    // --- binary: add an item
    let add = AddLineItem {
        user_id: "web".into(),
        product_id: "p1".into(),
        name: "Widget".into(),
        quantity: 2,
    };
    let response = http
        .post(&url)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(grpc_web_frame(&add))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let (_, trailers) = split_grpc_web(&response.bytes().await.unwrap());
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    // --- text (base64): read the cart back
    let get = GetShoppingCart { user_id: "web".into() };
    let body = base64::engine::general_purpose::STANDARD.encode(grpc_web_frame(&get));
    let response = http
        .post(stack.url("/com.example.shoppingcart.ShoppingCart/GetCart"))
        .header("content-type", "application/grpc-web-text")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(response.bytes().await.unwrap())
        .unwrap();
    let (message, trailers) = split_grpc_web(&decoded);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let cart = Cart::decode(message.unwrap().as_slice()).unwrap();
    assert_eq!(cart.items.len(), 1);
    assert_eq!(cart.items[0].quantity, 2);

    // --- an error travels in the trailer frame
    let bad = AddLineItem {
        user_id: "web".into(),
        product_id: "p2".into(),
        name: "Nothing".into(),
        quantity: 0,
    };
    let response = http
        .post(&url)
        .header("content-type", "application/grpc-web+proto")
        .body(grpc_web_frame(&bad))
        .send()
        .await
        .unwrap();
    let (message, trailers) = split_grpc_web(&response.bytes().await.unwrap());
    assert!(message.is_none());
    assert!(trailers.contains("grpc-status:2"), "UNKNOWN expected: {trailers}");

    // --- a browser's CORS preflight is answered
    let response = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,x-grpc-web")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}
