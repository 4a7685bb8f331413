//! What the user function serves, as the proxy sees it: built once from the
//! discovered `EntitySpec`. Resolves every gRPC method to its entity (or action),
//! its input and output types, its entity key fields and its HTTP bindings (the
//! `google.api.http` ones, else the default `POST /package.Service/Method`). Pure
//! data, no I/O.

use std::{collections::HashMap, sync::Arc, time::Duration};

use http::{uri::PathAndQuery, Method};
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, MessageDescriptor, MethodDescriptor, Value};
use strata_proto::cloudstate::{entity_passivation_strategy::Strategy, EntitySpec};
use strata_proto::entity_types;

use crate::{
    descriptors::{DescriptorError, DescriptorFiles},
    path_template::PathTemplate,
};

/// How long an idle entity stays active when the function does not say.
pub const DEFAULT_PASSIVATION: Duration = Duration::from_secs(30);

/// What kind of thing serves a gRPC service of the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    EventSourced,
    Value,
    /// A replicated data type (`cloudstate.crdt.Crdt`).
    Crdt,
    /// Stateless: no entity key, no store; calls may be streamed.
    Action,
}

impl EntityKind {
    pub fn is_entity(self) -> bool {
        !matches!(self, EntityKind::Action)
    }
}

/// One entity (or action) service the function serves.
#[derive(Debug)]
pub struct EntityModel {
    pub kind: EntityKind,
    /// Fully qualified gRPC service name, e.g. `com.example.shoppingcart.ShoppingCart`.
    pub service_name: String,
    pub persistence_id: String,
    pub passivation: Duration,
}

/// One gRPC method of an entity.
#[derive(Debug)]
pub struct MethodModel {
    pub entity: Arc<EntityModel>,
    pub descriptor: MethodDescriptor,
    /// Fields of the input message that together name the entity (none for an
    /// action).
    pub key_fields: Vec<FieldDescriptor>,
    /// `/package.Service/Method`, made once: every call passed on carries it.
    path: PathAndQuery,
    /// The `Any` type URLs of the input and output messages.
    input_type_url: String,
    output_type_url: String,
}

/// The message type of raw HTTP bodies (`google.api.HttpBody`).
pub const HTTP_BODY: &str = "google.api.HttpBody";

impl MethodModel {
    pub fn name(&self) -> &str {
        self.descriptor.name()
    }
    /// `/package.Service/Method`.
    pub fn path(&self) -> &str {
        self.path.as_str()
    }
    /// [`MethodModel::path`] as a request target (a cheap clone).
    pub fn request_path(&self) -> PathAndQuery {
        self.path.clone()
    }
    /// `type.googleapis.com/` and the input message's full name.
    pub fn input_type_url(&self) -> &str {
        &self.input_type_url
    }
    /// `type.googleapis.com/` and the output message's full name.
    pub fn output_type_url(&self) -> &str {
        &self.output_type_url
    }
    /// Whether the client sends a stream of messages, receives one, or both.
    pub fn is_streamed(&self) -> bool {
        self.descriptor.is_client_streaming() || self.descriptor.is_server_streaming()
    }
    pub fn input(&self) -> MessageDescriptor {
        self.descriptor.input()
    }
    pub fn output(&self) -> MessageDescriptor {
        self.descriptor.output()
    }

    /// The entity id of a command: the key fields' values joined with `-`.
    pub fn entity_id(&self, message: &DynamicMessage) -> Result<String, String> {
        let mut parts = Vec::with_capacity(self.key_fields.len());
        for field in &self.key_fields {
            let part = match message.get_field(field).as_ref() {
                Value::String(s) => s.clone(),
                Value::I32(v) => v.to_string(),
                Value::I64(v) => v.to_string(),
                Value::U32(v) => v.to_string(),
                Value::U64(v) => v.to_string(),
                Value::Bool(v) => v.to_string(),
                Value::EnumNumber(v) => v.to_string(),
                Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                _ => return Err(format!("entity key field {} has an unsupported type", field.name())),
            };
            if part.is_empty() {
                return Err(format!(
                    "the entity key field {} of {} is missing or empty",
                    field.name(),
                    self.input().full_name()
                ));
            }
            parts.push(part);
        }
        Ok(parts.join("-"))
    }
}

/// Where the body of an HTTP request goes.
#[derive(Debug, Clone)]
pub enum BodyTarget {
    /// No body: every field not in the path comes from the query string.
    None,
    /// `body: "*"`: the whole request message.
    Whole,
    /// `body: "field"`: one field; the others come from path and query.
    Field(FieldDescriptor),
}

/// One HTTP binding of a method (`google.api.http` or an additional binding).
#[derive(Debug, Clone)]
pub struct HttpRoute {
    pub method: Method,
    pub template: PathTemplate,
    pub body: BodyTarget,
    pub response_body: Option<FieldDescriptor>,
    pub target: Arc<MethodModel>,
}

/// Everything the function serves.
#[derive(Debug)]
pub struct ServiceModel {
    pub pool: DescriptorPool,
    /// The discovered files, each once (repeats merged), as the function sent them.
    pub files: DescriptorFiles,
    /// The discovered `FileDescriptorSet` with repeated files merged.
    pub descriptor_set: Vec<u8>,
    pub entities: Vec<Arc<EntityModel>>,
    /// By gRPC path, `/package.Service/Method`.
    pub methods: HashMap<String, Arc<MethodModel>>,
    /// In precedence order: most literal segments first.
    pub http_routes: Vec<HttpRoute>,
    /// Entities the proxy skipped, with why (reported to the function).
    pub skipped: Vec<String>,
    /// Action methods fed by an event log (`(cloudstate.eventing).in.event_log`).
    pub subscriptions: Vec<Subscription>,
}

/// An action method that consumes the events of one persistence id.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub method: Arc<MethodModel>,
    /// The persistence id whose journal writes the method receives.
    pub event_log: String,
}

impl Subscription {
    /// The subscriber's name for its stored offsets: `package.Service.Method`.
    pub fn subscriber(&self) -> String {
        format!("{}.{}", self.method.entity.service_name, self.method.name())
    }

    /// Whether the method takes an event with this type URL: an event of its
    /// input type, or any event if its input is `google.protobuf.Any` (JSON
    /// events, `json.cloudstate.io/...`, only so). Several methods may
    /// subscribe to one event log, each to the events of its own type.
    pub fn accepts(&self, type_url: &str) -> bool {
        let input = self.method.input();
        input.full_name() == "google.protobuf.Any"
            || type_url
                .rsplit_once('/')
                .is_some_and(|(_, name)| name == input.full_name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the function's descriptors cannot be read: {0}")]
    Descriptors(String),
    #[error("the function's descriptors cannot be read: {0}")]
    Files(#[from] DescriptorError),
    #[error("entity {service}: {reason}")]
    Entity { service: String, reason: String },
}

impl ServiceModel {
    pub fn from_spec(spec: &EntitySpec) -> Result<Self, ModelError> {
        let files = DescriptorFiles::parse(&spec.proto)?;
        let descriptor_set = files.encode();
        let pool =
            DescriptorPool::decode(descriptor_set.as_slice()).map_err(|e| ModelError::Descriptors(e.to_string()))?;
        let http_option = pool.get_extension_by_name("google.api.http");

        let mut model = ServiceModel {
            pool: pool.clone(),
            files,
            descriptor_set,
            entities: Vec::new(),
            methods: HashMap::new(),
            http_routes: Vec::new(),
            skipped: Vec::new(),
            subscriptions: Vec::new(),
        };
        let eventing_option = pool.get_extension_by_name("cloudstate.eventing");
        for entity in &spec.entities {
            let fail = |reason: String| ModelError::Entity {
                service: entity.service_name.clone(),
                reason,
            };
            let kind = match entity.entity_type.as_str() {
                entity_types::EVENT_SOURCED => EntityKind::EventSourced,
                entity_types::VALUE_ENTITY => EntityKind::Value,
                entity_types::CRDT => EntityKind::Crdt,
                entity_types::ACTION => EntityKind::Action,
                other => {
                    model.skipped.push(format!(
                        "entity {} has type {other}, which this proxy does not serve yet",
                        entity.service_name
                    ));
                    continue;
                }
            };
            let service = pool
                .get_service_by_name(&entity.service_name)
                .ok_or_else(|| fail("the service is not in the discovered descriptors".into()))?;
            let passivation = match entity.passivation_strategy.as_ref().and_then(|p| p.strategy.as_ref()) {
                Some(Strategy::Timeout(t)) if t.timeout > 0 => Duration::from_millis(t.timeout as u64),
                _ => DEFAULT_PASSIVATION,
            };
            let entity_model = Arc::new(EntityModel {
                kind,
                service_name: entity.service_name.clone(),
                persistence_id: strata_proto::persistence_id(&entity.persistence_id, &entity.service_name).to_owned(),
                passivation,
            });
            for method in service.methods() {
                // CRDT entities may have server-streamed commands (a client
                // watching the state); any other entity command is unary.
                let streamed = method.is_client_streaming() || method.is_server_streaming();
                let crdt_stream = kind == EntityKind::Crdt && !method.is_client_streaming();
                if streamed && kind.is_entity() && !crdt_stream {
                    model.skipped.push(format!(
                        "method {} is streamed, which only actions and a CRDT entity's server-streamed \
                         commands may be (other entity commands are unary)",
                        method.full_name()
                    ));
                    continue;
                }
                let key_fields: Vec<FieldDescriptor> = match kind {
                    EntityKind::Action => Vec::new(),
                    _ => method
                        .input()
                        .fields()
                        .filter(|f| marks_entity_key(&f.options()))
                        .collect(),
                };
                if key_fields.is_empty() && kind.is_entity() {
                    return Err(fail(format!(
                        "the input {} of method {} has no field marked (cloudstate.entity_key) = true",
                        method.input().full_name(),
                        method.name()
                    )));
                }
                let path = format!("/{}/{}", service.full_name(), method.name());
                let method_model = Arc::new(MethodModel {
                    entity: entity_model.clone(),
                    descriptor: method.clone(),
                    key_fields,
                    path: PathAndQuery::try_from(path.as_str())
                        .map_err(|e| fail(format!("the method path {path} is not a valid request path: {e}")))?,
                    input_type_url: format!("type.googleapis.com/{}", method.input().full_name()),
                    output_type_url: format!("type.googleapis.com/{}", method.output().full_name()),
                });
                model.methods.insert(path, method_model.clone());
                let eventing = eventing_option
                    .as_ref()
                    .filter(|ext| method.options().has_extension(ext))
                    .map(|ext| method.options().get_extension(ext).into_owned());
                if let Some(Value::Message(eventing)) = eventing {
                    match event_log_of(&eventing, &method_model) {
                        Ok(Some(event_log)) => model.subscriptions.push(Subscription {
                            method: method_model.clone(),
                            event_log,
                        }),
                        Ok(None) => {}
                        Err(reason) => model.skipped.push(reason),
                    }
                }
                let rule = http_option
                    .as_ref()
                    .filter(|ext| method.options().has_extension(ext))
                    .map(|ext| method.options().get_extension(ext).into_owned());
                match rule {
                    Some(Value::Message(rule)) => {
                        add_http_rule(&mut model.http_routes, &rule, &method_model, true).map_err(fail)?
                    }
                    _ => model.http_routes.push(default_route(&method_model).map_err(fail)?),
                }
            }
            model.entities.push(entity_model);
        }
        model
            .http_routes
            .sort_by_key(|r| std::cmp::Reverse(r.template.literal_count()));
        Ok(model)
    }

    /// The method for a gRPC path.
    pub fn method(&self, path: &str) -> Option<&Arc<MethodModel>> {
        self.methods.get(path)
    }

    /// The route for an HTTP method and path, with the bound path variables.
    /// `Err(true)` when the path matches some route but not for this method.
    pub fn route(&self, method: &Method, path: &str) -> Result<(&HttpRoute, Vec<crate::path_template::Binding>), bool> {
        let mut path_matched = false;
        for route in &self.http_routes {
            if let Some(bindings) = route.template.matches(path) {
                if route.method == method {
                    return Ok((route, bindings));
                }
                path_matched = true;
            }
        }
        Err(path_matched)
    }

    /// The names of the services the function serves (for reflection).
    pub fn service_names(&self) -> impl Iterator<Item = &str> {
        self.entities.iter().map(|e| e.service_name.as_str())
    }

    /// The event logs the function's event-sourced entities write (their
    /// persistence ids), sorted, each once.
    pub fn event_logs(&self) -> Vec<String> {
        let mut logs: Vec<String> = self
            .entities
            .iter()
            .filter(|e| e.kind == EntityKind::EventSourced)
            .map(|e| e.persistence_id.clone())
            .collect();
        logs.sort();
        logs.dedup();
        logs
    }

    /// The event logs the function's actions subscribe to, sorted, each once.
    pub fn subscribed_logs(&self) -> Vec<String> {
        let mut logs: Vec<String> = self.subscriptions.iter().map(|s| s.event_log.clone()).collect();
        logs.sort();
        logs.dedup();
        logs
    }
}

/// The methods a forward or side effect may target, by service and method name.
pub trait Targets: Send + Sync + 'static {
    fn method(&self, service: &str, method: &str) -> Option<Arc<MethodModel>>;
}

impl Targets for ServiceModel {
    fn method(&self, service: &str, method: &str) -> Option<Arc<MethodModel>> {
        self.methods.get(&format!("/{service}/{method}")).cloned()
    }
}

/// The route of a method without a `google.api.http` option, as CloudState's
/// proxy serves it: `POST /package.Service/Method` with the whole message as body.
fn default_route(method: &Arc<MethodModel>) -> Result<HttpRoute, String> {
    Ok(HttpRoute {
        method: Method::POST,
        template: PathTemplate::parse(method.path()).map_err(|e| e.to_string())?,
        body: BodyTarget::Whole,
        response_body: None,
        target: method.clone(),
    })
}

/// The event log a method's `(cloudstate.eventing)` option subscribes it to
/// (`None`: the option names no source), or why the proxy cannot honour the
/// option: topics (brokers) are out of scope, and only a unary action method
/// can consume events.
fn event_log_of(eventing: &DynamicMessage, method: &MethodModel) -> Result<Option<String>, String> {
    let name = format!("{}.{}", method.entity.service_name, method.name());
    let text = |message: &DynamicMessage, field: &str| {
        message
            .has_field_by_name(field)
            .then(|| message.get_field_by_name(field))
            .flatten()
            .and_then(|v| v.as_str().map(str::to_string))
    };
    let message_field = |field: &str| match eventing.has_field_by_name(field) {
        true => eventing.get_field_by_name(field).and_then(|v| v.as_message().cloned()),
        false => None,
    };
    if let Some(topic) = message_field("out").and_then(|out| text(&out, "topic")) {
        return Err(format!(
            "method {name} publishes to topic {topic:?}: topic eventing is not supported by this proxy \
             (only event log sources are); the method is served without it"
        ));
    }
    let Some(source) = message_field("in") else {
        return Ok(None);
    };
    if let Some(topic) = text(&source, "topic") {
        return Err(format!(
            "method {name} subscribes to topic {topic:?}: topic eventing is not supported by this proxy \
             (only event log sources are); the method is served but receives nothing"
        ));
    }
    let Some(event_log) = text(&source, "event_log") else {
        return Ok(None);
    };
    if event_log.is_empty() {
        return Err(format!(
            "method {name} subscribes to an event log with an empty persistence id"
        ));
    }
    if method.entity.kind.is_entity() {
        return Err(format!(
            "method {name} subscribes to event log {event_log:?}, but only action methods can consume events"
        ));
    }
    if method.descriptor.is_client_streaming() {
        return Err(format!(
            "method {name} subscribes to event log {event_log:?}, but it takes a stream; \
             a subscriber takes one event per call"
        ));
    }
    Ok(Some(event_log))
}

/// Field option numbers that mark an entity key: `cloudstate.entity_key` (1080)
/// and the number early CloudState releases used (50002).
const ENTITY_KEY_OPTIONS: [u32; 2] = [1080, 50002];

/// Whether a field's options set either entity key option to true. Decided by
/// number on the encoded options, not by name in the function's descriptors:
/// SDKs ship their own `cloudstate/entity_key.proto`, and some declare the name
/// `entity_key` with the legacy number (CloudState's proxy also checks both).
fn marks_entity_key(options: &DynamicMessage) -> bool {
    use prost::{
        encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType},
        Message,
    };
    let encoded = options.encode_to_vec();
    let mut buf = encoded.as_slice();
    while !buf.is_empty() {
        let Ok((number, wire_type)) = decode_key(&mut buf) else {
            return false;
        };
        if wire_type == WireType::Varint && ENTITY_KEY_OPTIONS.contains(&number) {
            match decode_varint(&mut buf) {
                Ok(value) if value != 0 => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
        if skip_field(wire_type, number, &mut buf, DecodeContext::default()).is_err() {
            return false;
        }
    }
    false
}

/// Reads one `google.api.HttpRule` (and its additional bindings) into routes.
fn add_http_rule(
    routes: &mut Vec<HttpRoute>,
    rule: &DynamicMessage,
    target: &Arc<MethodModel>,
    top_level: bool,
) -> Result<(), String> {
    let text = |name: &str| -> String {
        rule.get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let (method, path) = if let Some(pattern) = ["get", "put", "post", "delete", "patch"]
        .into_iter()
        .find(|p| rule.has_field_by_name(p))
    {
        (
            Method::from_bytes(pattern.to_uppercase().as_bytes()).map_err(|e| e.to_string())?,
            text(pattern),
        )
    } else if let Some(Value::Message(custom)) = rule
        .has_field_by_name("custom")
        .then(|| rule.get_field_by_name("custom"))
        .flatten()
        .as_deref()
    {
        let field = |name: &str| {
            custom
                .get_field_by_name(name)
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        };
        let kind = field("kind");
        let method = Method::from_bytes(kind.as_bytes()).map_err(|_| format!("invalid custom HTTP method {kind:?}"))?;
        (method, field("path"))
    } else {
        return Err(format!("the HTTP rule of {} has no pattern", target.name()));
    };
    let template = PathTemplate::parse(&path).map_err(|e| e.to_string())?;
    let input = target.input();
    let body = match text("body").as_str() {
        "" => BodyTarget::None,
        "*" => BodyTarget::Whole,
        field => BodyTarget::Field(
            input
                .get_field_by_name(field)
                .ok_or_else(|| format!("HTTP body field {field:?} is not in {}", input.full_name()))?,
        ),
    };
    let response_body = match text("response_body").as_str() {
        "" => None,
        field => Some(target.output().get_field_by_name(field).ok_or_else(|| {
            format!(
                "HTTP response_body field {field:?} is not in {}",
                target.output().full_name()
            )
        })?),
    };
    routes.push(HttpRoute {
        method,
        template,
        body,
        response_body,
        target: target.clone(),
    });
    if top_level {
        if let Some(Value::List(extra)) = rule.get_field_by_name("additional_bindings").as_deref() {
            for binding in extra {
                if let Value::Message(binding) = binding {
                    add_http_rule(routes, binding, target, false)?;
                }
            }
        }
    }
    Ok(())
}

/// Every service an ingress serves: one [`ServiceModel`] per user function (a
/// sidecar has one; a gateway has one per deployed service). Each keeps its own
/// descriptor pool, so two functions may use different versions of a same-named
/// proto file.
#[derive(Debug, Default)]
pub struct Catalog {
    models: Vec<Arc<ServiceModel>>,
}

impl Catalog {
    pub fn new(models: Vec<Arc<ServiceModel>>) -> Self {
        Self { models }
    }

    pub fn models(&self) -> &[Arc<ServiceModel>] {
        &self.models
    }

    /// The method for a gRPC path, in whichever function serves it.
    pub fn method(&self, path: &str) -> Option<&Arc<MethodModel>> {
        self.models.iter().find_map(|m| m.method(path))
    }

    /// Every service name served, sorted (for reflection).
    pub fn service_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .models
            .iter()
            .flat_map(|m| m.service_names().map(str::to_string))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The HTTP route for a method and path across every function; `Err(true)`
    /// when the path exists only for other HTTP methods.
    pub fn route(&self, method: &Method, path: &str) -> Result<(&HttpRoute, Vec<crate::path_template::Binding>), bool> {
        let mut path_matched = false;
        for model in &self.models {
            match model.route(method, path) {
                Ok(found) => return Ok(found),
                Err(matched) => path_matched |= matched,
            }
        }
        Err(path_matched)
    }
}

impl Targets for Catalog {
    fn method(&self, service: &str, method: &str) -> Option<Arc<MethodModel>> {
        Catalog::method(self, &format!("/{service}/{method}")).cloned()
    }
}
