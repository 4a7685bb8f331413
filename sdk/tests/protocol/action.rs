//! The action protocol in its four shapes: replies with metadata and side
//! effects, forwards, no reply, failures (which may list side effects), panics,
//! streams in and out, and a cancelled call reaching the action.

use strata_proto::cloudstate::{
    action::{action_protocol_client::ActionProtocolClient, action_response::Response, ActionCommand, ActionResponse},
    metadata_entry, Metadata as ProtocolMetadata, MetadataEntry,
};
use strata_sdk::{pack, unpack};
use tokio::sync::oneshot;

use crate::support::{service_with_action, within, Running, Stream, COUNTER, ECHO};

fn command(name: &str, word: &str) -> ActionCommand {
    ActionCommand {
        service_name: ECHO.to_owned(),
        name: name.to_owned(),
        payload: Some(pack(&word.to_owned())),
        metadata: None,
    }
}

fn reply_text(response: &ActionResponse) -> String {
    match &response.response {
        Some(Response::Reply(reply)) => unpack::<String>(reply.payload.as_ref().unwrap()).unwrap(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn failure(response: &ActionResponse) -> String {
    match &response.response {
        Some(Response::Failure(failure)) => failure.description.clone(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

async fn start() -> (
    Running,
    ActionProtocolClient<tonic::transport::Channel>,
    oneshot::Receiver<()>,
) {
    let (cancelled, on_cancel) = oneshot::channel();
    let running = Running::start(service_with_action(cancelled)).await;
    let client = ActionProtocolClient::new(running.channel.clone());
    (running, client, on_cancel)
}

#[tokio::test]
async fn unary_replies_forwards_nothing_and_failures() {
    let (_running, mut client, _) = start().await;

    // --- a reply with metadata and an asynchronous side effect
    let response = client.handle_unary(command("Shout", "hi")).await.unwrap().into_inner();
    assert_eq!(reply_text(&response), "HI");
    let Some(Response::Reply(reply)) = &response.response else {
        unreachable!()
    };
    let metadata = reply.metadata.as_ref().unwrap();
    assert_eq!(metadata.entries[0].key, "x-loud");
    assert_eq!(response.side_effects.len(), 1);
    let effect = &response.side_effects[0];
    assert_eq!(
        (effect.service_name.as_str(), effect.command_name.as_str()),
        (COUNTER, "Increase")
    );
    assert!(!effect.synchronous);
    assert_eq!(unpack::<i64>(effect.payload.as_ref().unwrap()).unwrap(), 1);

    // --- a forward
    let response = client.handle_unary(command("Forward", "")).await.unwrap().into_inner();
    let Some(Response::Forward(forward)) = response.response else {
        panic!("expected a forward")
    };
    assert_eq!(
        (forward.service_name.as_str(), forward.command_name.as_str()),
        (COUNTER, "Get")
    );

    // --- no reply, with a side effect
    let response = client.handle_unary(command("Quiet", "")).await.unwrap().into_inner();
    assert_eq!(response.response, None);
    assert_eq!(response.side_effects.len(), 1);

    // --- a failure lists its side effect (the proxy will not perform it)
    let response = client.handle_unary(command("Refuse", "")).await.unwrap().into_inner();
    assert_eq!(failure(&response), "refused");
    assert_eq!(response.side_effects.len(), 1);

    // --- a panic fails the call, and the function goes on
    let response = client.handle_unary(command("Panic", "")).await.unwrap().into_inner();
    assert_eq!(failure(&response), "action panicked: action boom");
    let response = client
        .handle_unary(command("Shout", "again"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply_text(&response), "AGAIN");

    // --- an unknown service or method is a failure, not a broken call
    let mut unknown = command("Shout", "x");
    unknown.service_name = "test.Nope".into();
    let response = client.handle_unary(unknown).await.unwrap().into_inner();
    assert!(
        failure(&response).contains("unknown service \"test.Nope\""),
        "{response:?}"
    );
    let response = client.handle_unary(command("Whisper", "x")).await.unwrap().into_inner();
    assert_eq!(
        failure(&response),
        "unknown command \"Whisper\" for service \"test.Echo\""
    );
}

#[tokio::test]
async fn streamed_in_out_and_both_ways() {
    let (_running, mut client, _) = start().await;

    // --- streamed in: the first command names the method and carries the metadata
    let header = ActionCommand {
        service_name: ECHO.to_owned(),
        name: "Join".to_owned(),
        payload: None,
        metadata: Some(ProtocolMetadata {
            entries: vec![MetadataEntry {
                key: "x-origin".into(),
                value: Some(metadata_entry::Value::StringValue("test".into())),
            }],
        }),
    };
    let messages = ["a", "b", "c"].map(|word| ActionCommand {
        payload: Some(pack(&word.to_owned())),
        ..Default::default()
    });
    let requests = futures::stream::iter(std::iter::once(header).chain(messages));
    let response = client.handle_streamed_in(requests).await.unwrap().into_inner();
    assert_eq!(reply_text(&response), "test:a,b,c");

    // --- streamed out: one command, a reply per word, then the end
    let mut replies = client
        .handle_streamed_out(command("Split", "x y z"))
        .await
        .unwrap()
        .into_inner();
    let mut words = Vec::new();
    while let Some(response) = within(replies.message()).await.unwrap() {
        words.push(reply_text(&response));
    }
    assert_eq!(words, ["x", "y", "z"]);

    // --- both ways: an answer per message; a failure answers one and the stream goes on
    let mut stream = Stream::open(|requests| async move { client.handle_streamed(requests).await }).await;
    stream
        .send(ActionCommand {
            service_name: ECHO.to_owned(),
            name: "Upper".to_owned(),
            ..Default::default()
        })
        .await;
    for (word, answer) in [("one", Ok("ONE")), ("bad", Err("bad word")), ("two", Ok("TWO"))] {
        stream
            .send(ActionCommand {
                payload: Some(pack(&word.to_owned())),
                ..Default::default()
            })
            .await;
        let response = stream.recv().await;
        match answer {
            Ok(text) => assert_eq!(reply_text(&response), text),
            Err(description) => assert_eq!(failure(&response), description),
        }
    }
    stream.close();
    stream.assert_closed().await;
}

#[tokio::test]
async fn a_cancelled_stream_reaches_the_action() {
    let (_running, mut client, cancelled) = start().await;
    let mut replies = client
        .handle_streamed_out(command("Hold", ""))
        .await
        .unwrap()
        .into_inner();
    let first = within(replies.message()).await.unwrap().unwrap();
    assert_eq!(reply_text(&first), "started");
    // --- the proxy drops the call: the action's stream is dropped with it
    drop(replies);
    within(cancelled).await.expect("the action saw the cancellation");
}

#[tokio::test]
async fn discovery_lists_the_action() {
    let (running, _, _) = start().await;
    let mut discovery =
        strata_proto::cloudstate::entity_discovery_client::EntityDiscoveryClient::new(running.channel.clone());
    let spec = discovery
        .discover(strata_proto::cloudstate::ProxyInfo {
            protocol_major_version: 0,
            protocol_minor_version: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let action = spec.entities.iter().find(|e| e.service_name == ECHO).unwrap();
    assert_eq!(action.entity_type, strata_proto::entity_types::ACTION);
    assert_eq!(action.persistence_id, "");
}
