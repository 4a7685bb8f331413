//! Transcoding and the service model against `fixtures/things.proto`: every HTTP
//! binding form, query parameters, nested fields, keys, and their errors.

use http::Method;
use prost_reflect::{DynamicMessage, Value};
use serde_json::json;

use super::*;
use crate::{error::ProxyError, model::ServiceModel};

fn model() -> ServiceModel {
    crate::fixtures::model()
}

/// Transcodes one HTTP request into the JSON of the message it becomes.
fn transcode(model: &ServiceModel, method: Method, uri: &str, body: &str) -> Result<serde_json::Value, ProxyError> {
    let (path, query) = uri.split_once('?').map_or((uri, None), |(p, q)| (p, Some(q)));
    let (route, bindings) = model
        .route(&method, path)
        .map_err(|_| ProxyError::NotFound(uri.into()))?;
    let message = request_message(route, bindings, query, body.as_bytes(), Some("application/json"))?;
    let options = prost_reflect::SerializeOptions::new();
    let mut out = serde_json::Serializer::new(Vec::new());
    message.serialize_with_options(&mut out, &options).unwrap();
    Ok(serde_json::from_slice(&out.into_inner()).unwrap())
}

#[test]
fn body_star_with_path_variables_winning() {
    let model = model();
    let message = transcode(
        &model,
        Method::POST,
        "/v1/shelves/top/things",
        r#"{"shelf": "ignored", "thingId": "7", "name": "lamp", "colour": "RED", "tags": ["a"], "size": {"width": 3}}"#,
    )
    .unwrap();
    assert_eq!(
        message,
        json!({"shelf": "top", "thingId": "7", "name": "lamp", "colour": "RED", "tags": ["a"], "size": {"width": 3}})
    );
}

#[test]
fn body_field_plus_query_parameters() {
    let model = model();
    for method in [Method::PUT, Method::PATCH] {
        let message = transcode(
            &model,
            method,
            "/v1/shelves/top/things/42?fields=name&fields=colour",
            r#"{"name": "chair", "fragile": true}"#,
        )
        .unwrap();
        assert_eq!(
            message,
            json!({"shelf": "top", "thingId": "42", "thing": {"name": "chair", "fragile": true}, "fields": ["name", "colour"]})
        );
    }
}

#[test]
fn no_body_reads_nested_and_typed_query_parameters() {
    let model = model();
    let message = transcode(
        &model,
        Method::GET,
        "/v1/shelves/a%20b/things/9:list?size.height=4&colour=BLUE&weight=1.5&tags=x&tags=y&fragile=true&name=%C3%A9+t",
        "",
    )
    .unwrap();
    assert_eq!(
        message,
        json!({"shelf": "a b", "thingId": "9", "name": "é t", "colour": "BLUE", "tags": ["x", "y"],
               "size": {"height": 4}, "fragile": true, "weight": 1.5})
    );
    // The custom binding (HEAD) reaches the same method.
    assert!(transcode(&model, Method::HEAD, "/v1/shelves/a/things/9:list", "").is_ok());
}

#[test]
fn bad_requests_are_invalid_arguments() {
    let model = model();
    let cases = [
        (Method::POST, "/v1/shelves/s/things", "{not json"),
        (Method::POST, "/v1/shelves/s/things", r#"{"name": 5}"#),
        (Method::POST, "/v1/shelves/s/things", r#"{"unknownField": 1}"#),
        (Method::POST, "/v1/shelves/s/things", r#"{"name": "a"} trailing"#),
        (Method::GET, "/v1/shelves/s/things/notanumber:list", ""),
        (Method::GET, "/v1/shelves/s/things/1:list?weight=heavy", ""),
        (Method::GET, "/v1/shelves/s/things/1:list?colour=GREEN", ""),
        (Method::GET, "/v1/shelves/s/things/1:list?nosuch=1", ""),
        (Method::GET, "/v1/shelves/s/things/1:list?size=1", ""),
        (Method::PUT, "/v1/shelves/s/things/1", r#"{"name": ["x"]}"#),
    ];
    for (method, uri, body) in cases {
        match transcode(&model, method.clone(), uri, body) {
            Err(ProxyError::InvalidArgument(message)) => assert!(!message.is_empty()),
            other => panic!("{method} {uri} {body}: expected INVALID_ARGUMENT, got {other:?}"),
        }
    }
}

#[test]
fn unknown_routes_and_wrong_methods() {
    let model = model();
    assert_eq!(model.route(&Method::GET, "/v2/nothing").err(), Some(false));
    // The path exists, for another method.
    assert_eq!(model.route(&Method::GET, "/v1/shelves/s/things").err(), Some(true));
}

#[test]
fn entity_keys_join_fields_and_reject_empty_ones() {
    let model = model();
    let create = model.method("/test.things.Warehouse/Create").unwrap();
    assert_eq!(create.key_fields.len(), 2);
    let mut thing = DynamicMessage::new(create.input());
    thing.set_field_by_name("shelf", Value::String("top".into()));
    thing.set_field_by_name("thing_id", Value::I64(42));
    assert_eq!(create.entity_id(&thing).unwrap(), "top-42");
    thing.set_field_by_name("shelf", Value::String(String::new()));
    assert!(create.entity_id(&thing).unwrap_err().contains("shelf"));

    // The legacy option (50002) marks keys too.
    let remove = model.method("/test.things.Warehouse/Remove").unwrap();
    let names: Vec<_> = remove.key_fields.iter().map(|f| f.name().to_string()).collect();
    assert_eq!(names, ["shelf", "thing_id"]);
}

#[test]
fn responses_render_proto3_json_with_defaults_and_response_body() {
    let model = model();
    let (route, _) = model.route(&Method::GET, "/v1/shelves/s/things/1:list").unwrap();
    let output = route.target.output();
    let mut things = DynamicMessage::new(output.clone());
    let thing_desc = output.get_field_by_name("things").unwrap();
    let prost_reflect::Kind::Message(thing_type) = thing_desc.kind() else {
        panic!("things is a message list")
    };
    let mut thing = DynamicMessage::new(thing_type);
    thing.set_field_by_name("name", Value::String("lamp".into()));
    things.set_field(&thing_desc, Value::List(vec![Value::Message(thing)]));
    let body: serde_json::Value = serde_json::from_slice(&response_json(route, &things).unwrap()).unwrap();
    // response_body: "things" gives the list alone, each thing with its defaults.
    assert_eq!(body[0]["name"], "lamp");
    assert_eq!(body[0]["thingId"], "0");
    assert_eq!(body[0]["tags"], json!([]));

    let (create, _) = model.route(&Method::POST, "/v1/shelves/s/things").unwrap();
    let empty = DynamicMessage::new(create.target.output());
    let body: serde_json::Value = serde_json::from_slice(&response_json(create, &empty).unwrap()).unwrap();
    assert_eq!(body["name"], "");
    assert_eq!(body["colour"], "COLOUR_UNSPECIFIED");
}

#[test]
fn methods_without_an_http_option_get_the_default_route() {
    let model = model();
    let message = transcode(
        &model,
        Method::POST,
        "/test.things.Auditor/Copy",
        r#"{"shelf": "top", "thingId": "3"}"#,
    )
    .unwrap();
    assert_eq!(message, json!({"shelf": "top", "thingId": "3"}));
    // Only POST, and only for methods without an option of their own.
    assert!(model.route(&Method::GET, "/test.things.Auditor/Copy").is_err());
    assert!(model.route(&Method::POST, "/test.things.Warehouse/Create").is_err());
    // Streamed action methods have one too.
    assert!(model.route(&Method::POST, "/test.things.Clerk/Watch").is_ok());
}

#[test]
fn http_body_requests_and_responses_are_raw() {
    let model = model();
    let (echo, bindings) = model.route(&Method::POST, "/v1/echo").unwrap();
    let message = request_message(echo, bindings, None, b"<p>hi</p>", Some("text/html")).unwrap();
    assert_eq!(
        message.get_field_by_name("content_type").unwrap().as_str(),
        Some("text/html")
    );
    assert_eq!(
        message
            .get_field_by_name("data")
            .unwrap()
            .as_bytes()
            .map(|b| b.to_vec()),
        Some(b"<p>hi</p>".to_vec())
    );
    assert_eq!(
        response_document(echo, &message).unwrap(),
        ("text/html".to_string(), b"<p>hi</p>".to_vec())
    );

    // A body field of type HttpBody takes the raw body; the rest comes from the path.
    let (label, bindings) = model.route(&Method::PUT, "/v1/labels/red").unwrap();
    let message = request_message(label, bindings, None, b"\x00\x01", None).unwrap();
    assert_eq!(message.get_field_by_name("name").unwrap().as_str(), Some("red"));
    let Value::Message(content) = message.get_field_by_name("content").unwrap().into_owned() else {
        panic!("content is a message")
    };
    assert_eq!(
        content
            .get_field_by_name("data")
            .unwrap()
            .as_bytes()
            .map(|b| b.to_vec()),
        Some(vec![0, 1])
    );
    // A raw reply without a content type is an octet stream.
    let empty = DynamicMessage::new(label.target.output());
    assert_eq!(
        response_document(label, &empty).unwrap(),
        ("application/octet-stream".to_string(), Vec::new())
    );
}
