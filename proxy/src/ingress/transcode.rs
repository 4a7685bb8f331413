//! HTTP+JSON transcoding of gRPC methods (`google.api.http`): builds the request
//! message from path variables, query parameters and the JSON body (or the raw
//! body, for a `google.api.HttpBody`), and renders the reply (or its
//! `response_body` field) as proto3 JSON (or as the raw body of an `HttpBody`).

use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, SerializeOptions,
    Value,
};

use crate::{
    error::ProxyError,
    model::{BodyTarget, HttpRoute, HTTP_BODY},
    path_template::{percent_decode, Binding},
};

/// Builds the request message of `route` from the bound path variables, the query
/// string and the body (of type `content_type`).
pub fn request_message(
    route: &HttpRoute,
    bindings: Vec<Binding>,
    query: Option<&str>,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<DynamicMessage, ProxyError> {
    let input = route.target.input();
    let mut message = match &route.body {
        BodyTarget::Whole if input.full_name() == HTTP_BODY => http_body(&input, body, content_type),
        BodyTarget::Whole => parse_json(&input, body)?,
        BodyTarget::Field(field) if is_http_body(field) => {
            let mut message = DynamicMessage::new(input.clone());
            let Kind::Message(body_type) = field.kind() else {
                unreachable!("is_http_body checked the kind")
            };
            message.set_field(field, Value::Message(http_body(&body_type, body, content_type)));
            message
        }
        BodyTarget::Field(field) => {
            // Parse `{"<field>": <body>}` so scalars, lists and messages all follow
            // the proto3 JSON rules of that field.
            let value: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(body).map_err(|e| json_error(&e))?
            };
            let wrapped = serde_json::json!({ field.json_name(): value });
            parse_json(&input, wrapped.to_string().as_bytes())?
        }
        BodyTarget::None => DynamicMessage::new(input.clone()),
    };
    if !matches!(route.body, BodyTarget::Whole) {
        for (key, value) in parse_query(query.unwrap_or_default())? {
            let path: Vec<String> = key.split('.').map(str::to_string).collect();
            set_path(&mut message, &path, &value, true)?;
        }
    }
    for (path, value) in bindings {
        set_path(&mut message, &path, &value, false)?;
    }
    Ok(message)
}

fn parse_json(descriptor: &MessageDescriptor, body: &[u8]) -> Result<DynamicMessage, ProxyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DynamicMessage::new(descriptor.clone()));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let message = DynamicMessage::deserialize_with_options(
        descriptor.clone(),
        &mut deserializer,
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .map_err(|e| json_error(&e))?;
    deserializer.end().map_err(|e| json_error(&e))?;
    Ok(message)
}

fn json_error(error: &serde_json::Error) -> ProxyError {
    ProxyError::InvalidArgument(format!("the request body is not valid JSON for this method: {error}"))
}

fn parse_query(query: &str) -> Result<Vec<(String, String)>, ProxyError> {
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_decode(&s.replace('+', " "))
                .ok_or_else(|| ProxyError::InvalidArgument(format!("the query parameter {key:?} is not valid UTF-8")))
        };
        pairs.push((decode(key)?, decode(value)?));
    }
    Ok(pairs)
}

/// Sets the (possibly nested) field at `path` from its text form. Repeated fields
/// get the value appended when `append` is set (repeated query parameters).
fn set_path(message: &mut DynamicMessage, path: &[String], text: &str, append: bool) -> Result<(), ProxyError> {
    let (first, rest) = path.split_first().expect("field paths are never empty");
    let descriptor = message.descriptor();
    let field = descriptor
        .get_field_by_name(first)
        .or_else(|| descriptor.get_field_by_json_name(first))
        .ok_or_else(|| ProxyError::InvalidArgument(format!("{} has no field {first:?}", descriptor.full_name())))?;
    if !rest.is_empty() {
        let Value::Message(inner) = message.get_field_mut(&field) else {
            return Err(ProxyError::InvalidArgument(format!(
                "the field {first:?} is not a message, so {:?} cannot be set in it",
                path.join(".")
            )));
        };
        return set_path(inner, rest, text, append);
    }
    let value = scalar(&field, text)?;
    if field.is_list() {
        let Value::List(list) = message.get_field_mut(&field) else {
            unreachable!("list fields hold lists")
        };
        if !append {
            list.clear();
        }
        list.push(value);
    } else {
        message.set_field(&field, value);
    }
    Ok(())
}

fn scalar(field: &FieldDescriptor, text: &str) -> Result<Value, ProxyError> {
    let bad =
        |what: &str| ProxyError::InvalidArgument(format!("the field {} takes {what}, not {text:?}", field.name()));
    Ok(match field.kind() {
        Kind::String => Value::String(text.to_string()),
        Kind::Bool => Value::Bool(text.parse().map_err(|_| bad("true or false"))?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(text.parse().map_err(|_| bad("a 32-bit integer"))?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(text.parse().map_err(|_| bad("a 64-bit integer"))?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(text.parse().map_err(|_| bad("an unsigned 32-bit integer"))?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(text.parse().map_err(|_| bad("an unsigned 64-bit integer"))?),
        Kind::Float => Value::F32(text.parse().map_err(|_| bad("a number"))?),
        Kind::Double => Value::F64(text.parse().map_err(|_| bad("a number"))?),
        Kind::Bytes => {
            use base64::Engine;
            let engine = base64::engine::general_purpose::STANDARD;
            let url_safe = base64::engine::general_purpose::URL_SAFE;
            Value::Bytes(
                engine
                    .decode(text)
                    .or_else(|_| url_safe.decode(text))
                    .map_err(|_| bad("base64 bytes"))?
                    .into(),
            )
        }
        Kind::Enum(e) => match e.get_value_by_name(text) {
            Some(v) => Value::EnumNumber(v.number()),
            None => Value::EnumNumber(text.parse().map_err(|_| bad("an enum value name"))?),
        },
        Kind::Message(m) => {
            return Err(ProxyError::InvalidArgument(format!(
                "the field {} is a message ({}) and cannot be set from a path or query string",
                field.name(),
                m.full_name()
            )))
        }
    })
}

/// A `google.api.HttpBody` holding a raw request body.
fn http_body(descriptor: &MessageDescriptor, body: &[u8], content_type: Option<&str>) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor.clone());
    message.set_field_by_name(
        "content_type",
        Value::String(content_type.unwrap_or_default().to_string()),
    );
    message.set_field_by_name("data", Value::Bytes(body.to_vec().into()));
    message
}

fn is_http_body(field: &FieldDescriptor) -> bool {
    matches!(field.kind(), Kind::Message(m) if m.full_name() == HTTP_BODY)
}

/// The HTTP answer for a reply: its content type and body. A reply (or
/// `response_body` field) of type `google.api.HttpBody` is sent raw with its own
/// content type; anything else as JSON.
pub fn response_document(route: &HttpRoute, reply: &DynamicMessage) -> Result<(String, Vec<u8>), ProxyError> {
    let raw = match &route.response_body {
        Some(field) if is_http_body(field) => match reply.get_field(field).as_ref() {
            Value::Message(body) => Some(body.clone()),
            _ => None,
        },
        None if reply.descriptor().full_name() == HTTP_BODY => Some(reply.clone()),
        _ => None,
    };
    let Some(body) = raw else {
        return Ok(("application/json".into(), response_json(route, reply)?));
    };
    let content_type = match body.get_field_by_name("content_type").as_deref() {
        Some(Value::String(text)) if !text.is_empty() => text.clone(),
        _ => "application/octet-stream".into(),
    };
    let data = match body.get_field_by_name("data").as_deref() {
        Some(Value::Bytes(bytes)) => bytes.to_vec(),
        _ => Vec::new(),
    };
    Ok((content_type, data))
}

/// The JSON answer for a reply: the whole message, or its `response_body` field.
pub fn response_json(route: &HttpRoute, reply: &DynamicMessage) -> Result<Vec<u8>, ProxyError> {
    let options = SerializeOptions::new().skip_default_fields(false);
    let mut serializer = serde_json::Serializer::new(Vec::new());
    reply
        .serialize_with_options(&mut serializer, &options)
        .map_err(|e| ProxyError::Internal(format!("the reply cannot be rendered as JSON: {e}")))?;
    let whole = serializer.into_inner();
    let Some(field) = &route.response_body else {
        return Ok(whole);
    };
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&whole).map_err(|e| ProxyError::Internal(e.to_string()))?;
    let value = object.remove(field.json_name()).unwrap_or(serde_json::Value::Null);
    Ok(value.to_string().into_bytes())
}

#[cfg(test)]
#[path = "transcode_tests.rs"]
mod tests;
