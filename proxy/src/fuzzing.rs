//! Entry points for the fuzz targets in `fuzz/` (and for the unit test that
//! replays their committed corpora): each takes arbitrary bytes, as a hostile
//! client or function would send them, and must never panic. Owns only the
//! slicing of the bytes; what is exercised is the real code.

use http::Method;
use prost::Message;
use strata_proto::cloudstate::EntitySpec;

use crate::{descriptors::DescriptorFiles, path_template::PathTemplate};
pub use crate::{fixtures::things_spec, model::ServiceModel};

/// An HTTP+JSON request to `model`: `METHOD PATH?QUERY\nBODY`. Routes it,
/// transcodes it to the method's input, reads its entity key, and writes the
/// message back as a JSON answer.
pub fn http_json(model: &ServiceModel, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once('\n').unwrap_or((&text, ""));
    let (method, target) = head.split_once(' ').unwrap_or(("POST", head));
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let Ok((route, bindings)) = model.route(&method, path) else {
        return;
    };
    let Ok(message) =
        crate::ingress::transcode::request_message(route, bindings, query, body.as_bytes(), Some("application/json"))
    else {
        return;
    };
    let _ = route.target.entity_id(&message);
    let _ = crate::ingress::transcode::response_json(route, &message);
}

/// A path template and a path to match: `TEMPLATE\nPATH`.
pub fn path_template(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (template, path) = text.split_once('\n').unwrap_or((&text, "/"));
    let _ = crate::path_template::percent_decode(path);
    if let Ok(template) = PathTemplate::parse(template) {
        let _ = template.matches(path);
        let _ = template.literal_count();
    }
}

/// A discovery answer from a hostile function: an `EntitySpec`, its
/// descriptor set split into files and merged, and the service model built.
pub fn discovery(data: &[u8]) {
    let Ok(spec) = EntitySpec::decode(data) else {
        return;
    };
    if let Ok(files) = DescriptorFiles::parse(&spec.proto) {
        let _ = files.encode();
    }
    let _ = ServiceModel::from_spec(&spec);
}

/// A hostile function's answer to command 1 on an entity stream (event
/// sourced and value entity), for the method the first byte picks.
pub fn entity_reply(model: &ServiceModel, data: &[u8]) {
    let Some((pick, bytes)) = data.split_first() else {
        return;
    };
    let mut methods: Vec<_> = model
        .methods
        .iter()
        .filter(|(_, method)| method.entity.kind.is_entity())
        .collect();
    methods.sort_by(|a, b| a.0.cmp(b.0));
    if methods.is_empty() {
        return;
    }
    let (_, method) = methods[*pick as usize % methods.len()];
    crate::sidecar::entity::decide_untrusted_reply(method, model, bytes);
}

#[cfg(test)]
mod tests {
    //! Replays every committed corpus file through its entry point, so the
    //! corpora are exercised by every test run, with or without cargo-fuzz.

    use super::*;
    use crate::fixtures;

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("no corpus at {}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "the {target} corpus is empty");
        files.iter().map(|path| std::fs::read(path).unwrap()).collect()
    }

    /// Writes the hand-made seeds of the binary corpora (run once with
    /// `--ignored`; libFuzzer grows the corpora from them).
    #[test]
    #[ignore]
    fn write_binary_seeds() {
        use prost_types::Any;
        use strata_proto::cloudstate::{
            client_action, eventsourced::event_sourced_stream_out, eventsourced::EventSourcedReply,
            eventsourced::EventSourcedStreamOut, valueentity::value_entity_action,
            valueentity::value_entity_stream_out, valueentity::ValueEntityAction, valueentity::ValueEntityReply,
            valueentity::ValueEntityStreamOut, valueentity::ValueEntityUpdate, ClientAction, Failure, Forward, Reply,
            SideEffect,
        };
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let write =
            |target: &str, name: &str, bytes: Vec<u8>| std::fs::write(root.join(target).join(name), bytes).unwrap();
        write("discovery", "things", fixtures::spec().encode_to_vec());
        let thing = fixtures::thing("a", 1);
        let reply = |action| ClientAction { action: Some(action) };
        let es = |message| {
            let mut bytes = vec![0u8];
            bytes.extend(EventSourcedStreamOut { message: Some(message) }.encode_to_vec());
            bytes
        };
        write(
            "entity_reply",
            "es_reply_events_snapshot",
            es(event_sourced_stream_out::Message::Reply(EventSourcedReply {
                command_id: 1,
                client_action: Some(reply(client_action::Action::Reply(Reply {
                    payload: Some(thing.clone()),
                    metadata: None,
                }))),
                side_effects: vec![SideEffect {
                    service_name: "test.things.Auditor".into(),
                    command_name: "Record".into(),
                    payload: Some(fixtures::thing_ref("a", 1)),
                    synchronous: true,
                    metadata: None,
                }],
                events: vec![Any {
                    type_url: "type.googleapis.com/test.things.Thing".into(),
                    value: thing.value.clone(),
                }],
                snapshot: Some(thing.clone()),
            })),
        );
        write(
            "entity_reply",
            "es_forward",
            es(event_sourced_stream_out::Message::Reply(EventSourcedReply {
                command_id: 1,
                client_action: Some(reply(client_action::Action::Forward(Forward {
                    service_name: "test.things.Auditor".into(),
                    command_name: "Copy".into(),
                    payload: Some(thing.clone()),
                    metadata: None,
                }))),
                ..Default::default()
            })),
        );
        write(
            "entity_reply",
            "es_failure",
            es(event_sourced_stream_out::Message::Failure(Failure {
                command_id: 1,
                description: "no".into(),
                restart: true,
            })),
        );
        let mut value = vec![3u8];
        value.extend(
            ValueEntityStreamOut {
                message: Some(value_entity_stream_out::Message::Reply(ValueEntityReply {
                    command_id: 1,
                    client_action: Some(reply(client_action::Action::Reply(Reply {
                        payload: Some(thing.clone()),
                        metadata: None,
                    }))),
                    side_effects: Vec::new(),
                    state_action: Some(ValueEntityAction {
                        action: Some(value_entity_action::Action::Update(ValueEntityUpdate {
                            value: Some(thing),
                        })),
                    }),
                })),
            }
            .encode_to_vec(),
        );
        write("entity_reply", "value_update", value);
    }

    #[test]
    fn the_committed_corpora_run_clean() {
        let model = fixtures::model();
        for input in corpus("http_json") {
            http_json(&model, &input);
        }
        for input in corpus("path_template") {
            path_template(&input);
        }
        for input in corpus("discovery") {
            discovery(&input);
        }
        for input in corpus("entity_reply") {
            entity_reply(&model, &input);
        }
    }
}
