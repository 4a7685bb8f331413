//! Actions and streamed calls over real processes: the conformance kit's action
//! model (strata-sdk) in all four shapes over gRPC, server streams over
//! Server-Sent Events, newline-delimited JSON and gRPC-web, a client stream over
//! HTTP, cancellation reaching the function, and the per-command deadline. Behind
//! `strata proxy`, and the shapes and streams again behind `strata dev`'s gateway.

use std::time::{Duration, Instant};

use strata_e2e::{binary, dev::start_dev, free_port, start_function, start_proxy};
use strata_tck::model::action::{
    action_tck_model_client::ActionTckModelClient, process_step::Step, ProcessGroup, ProcessStep, Reply, Request,
};

const STREAMED_OUT: &str = "/cloudstate.tck.model.action.ActionTckModel/ProcessStreamedOut";

fn reply(message: &str) -> Request {
    Request {
        groups: vec![ProcessGroup {
            steps: vec![ProcessStep {
                step: Some(Step::Reply(Reply {
                    message: message.into(),
                })),
            }],
        }],
    }
}

/// One request whose groups answer `messages`, one each.
fn replies(messages: &[&str]) -> Request {
    Request {
        groups: messages.iter().flat_map(|m| reply(m).groups).collect(),
    }
}

/// The four shapes of an action over gRPC, on the proxy or gateway at `port`.
async fn four_shapes(port: u16) {
    let mut client = ActionTckModelClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");

    // --- unary
    let answer = client.process_unary(reply("one")).await.expect("unary").into_inner();
    assert_eq!(answer.message, "one");

    // --- streamed in: every request's steps, one answer once they end
    let answer = client
        .process_streamed_in(futures::stream::iter([reply("a"), reply("b")]))
        .await
        .expect("streamed in")
        .into_inner();
    assert_eq!(answer.message, "b", "the last reply step wins");

    // --- streamed out: an answer per group, then the end
    let mut answers = client
        .process_streamed_out(replies(&["x", "y", "z"]))
        .await
        .expect("streamed out")
        .into_inner();
    let mut messages = Vec::new();
    while let Some(answer) = answers.message().await.expect("stream") {
        messages.push(answer.message);
    }
    assert_eq!(messages, ["x", "y", "z"]);

    // --- both ways: answers as the requests come
    let (requests, outgoing) = tokio::sync::mpsc::unbounded_channel();
    let mut answers = client
        .process_streamed(tokio_stream::wrappers::UnboundedReceiverStream::new(outgoing))
        .await
        .expect("streamed")
        .into_inner();
    for message in ["p", "q"] {
        requests.send(reply(message)).unwrap();
        let answer = answers.message().await.expect("stream").expect("an answer");
        assert_eq!(answer.message, message);
    }
    drop(requests);
    assert!(
        answers.message().await.expect("stream").is_none(),
        "the stream ends with the requests"
    );
}

/// Metadata both ways: a request header reaches the action, its reply metadata
/// comes back as an HTTP response header and as gRPC metadata.
async fn metadata_both_ways(port: u16) {
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/greet"))
        .header("x-caller", "ann")
        .json(&serde_json::json!({"number": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-greeting"], "hello ann");
    assert_eq!(response.text().await.unwrap(), "{\"number\":7}");

    let mut client = strata_e2e::streamer::streamer_client::StreamerClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let mut request = tonic::Request::new(strata_e2e::streamer::Tick { number: 8 });
    request.metadata_mut().insert("x-caller", "bob".parse().unwrap());
    let response = client.greet(request).await.unwrap();
    assert_eq!(response.metadata().get("x-greeting").unwrap(), "hello bob");
    assert_eq!(response.into_inner().number, 8);
}

/// A server stream over HTTP: Server-Sent Events when asked for, else NDJSON.
async fn server_streams_over_http(port: u16) {
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}{STREAMED_OUT}");
    let body = serde_json::json!({"groups": [
        {"steps": [{"reply": {"message": "x"}}]},
        {"steps": [{"reply": {"message": "y"}}]},
    ]});

    let response = http
        .post(&url)
        .header("accept", "text/event-stream")
        .json(&body)
        .send()
        .await
        .expect("SSE");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(
        response.text().await.unwrap(),
        "data: {\"message\":\"x\"}\n\ndata: {\"message\":\"y\"}\n\n"
    );

    let response = http.post(&url).json(&body).send().await.expect("NDJSON");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    assert_eq!(
        response.text().await.unwrap(),
        "{\"message\":\"x\"}\n{\"message\":\"y\"}\n"
    );

    // --- a failure mid-stream ends it with the error, after the answers before it
    let failing = serde_json::json!({"groups": [
        {"steps": [{"reply": {"message": "x"}}]},
        {"steps": [{"fail": {"message": "no more"}}]},
    ]});
    let text = http
        .post(&url)
        .json(&failing)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0], serde_json::json!({"message": "x"}));
    assert_eq!(lines[1]["error"]["code"], "UNKNOWN");
    assert_eq!(lines[1]["error"]["message"], "no more");
    assert_eq!(lines.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn actions_and_streams_behind_strata_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("s.db").display());
    let (function_port, http_port) = (free_port(), free_port());
    let _function = start_function("tck-model", function_port, &[]);
    let _proxy = start_proxy(function_port, http_port, &store, &[]);

    four_shapes(http_port).await;
    server_streams_over_http(http_port).await;

    // --- a server stream over gRPC-web (binary): the messages, then the status frame
    use prost::Message;
    let request = replies(&["w1", "w2"]).encode_to_vec();
    let mut framed = vec![0];
    framed.extend((request.len() as u32).to_be_bytes());
    framed.extend(request);
    let body = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{http_port}{STREAMED_OUT}"))
        .header("content-type", "application/grpc-web+proto")
        .body(framed)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut frames = Vec::new();
    let mut rest = &body[..];
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        frames.push((rest[0], rest[5..5 + len].to_vec()));
        rest = &rest[5 + len..];
    }
    let messages: Vec<String> = frames
        .iter()
        .filter(|(flag, _)| *flag == 0)
        .map(|(_, bytes)| {
            strata_tck::model::action::Response::decode(bytes.as_slice())
                .unwrap()
                .message
        })
        .collect();
    assert_eq!(messages, ["w1", "w2"]);
    let trailer = String::from_utf8(frames.last().unwrap().1.clone()).unwrap();
    assert!(
        frames.last().unwrap().0 == 0x80 && trailer.contains("grpc-status:0"),
        "{trailer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_stream_reaches_the_function() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("streamer.log");
    let store = format!("sqlite://{}", dir.path().join("s.db").display());
    let (function_port, http_port) = (free_port(), free_port());
    let _function = start_function("streamer", function_port, &[("STREAMER_LOG", log.to_str().unwrap())]);
    let _proxy = start_proxy(function_port, http_port, &store, &[]);
    let logged = |needle: &'static str| {
        let log = log.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !std::fs::read_to_string(&log).unwrap_or_default().contains(needle) {
                assert!(
                    Instant::now() < deadline,
                    "{needle:?} never appeared in the function's log"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // --- over SSE: two ticks arrive, then the client goes away mid-stream
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{http_port}/ticks"))
        .header("accept", "text/event-stream")
        .json(&serde_json::json!({"count": 2}))
        .send()
        .await
        .unwrap();
    let mut response = response;
    let mut seen = String::new();
    while !seen.contains("\"number\":2") {
        let chunk = response.chunk().await.unwrap().expect("more ticks");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.starts_with("data: {\"number\":1}"), "{seen}");
    drop(response);
    logged("cancelled after 2 ticks").await;

    // --- over gRPC, the same
    let mut client =
        strata_e2e::streamer::streamer_client::StreamerClient::connect(format!("http://127.0.0.1:{http_port}"))
            .await
            .unwrap();
    let mut ticks = client
        .ticks(strata_e2e::streamer::TickRequest { count: 3 })
        .await
        .unwrap()
        .into_inner();
    for number in 1..=3 {
        assert_eq!(ticks.message().await.unwrap().unwrap().number, number);
    }
    drop(ticks);
    logged("cancelled after 3 ticks").await;

    // --- the proxy counts both as cancelled by the client
    let metrics = reqwest::get(format!("http://127.0.0.1:{http_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for protocol in ["http", "grpc"] {
        let line = format!(
            "strata_proxy_requests_total{{code=\"CANCELLED\",method=\"Ticks\",protocol=\"{protocol}\",service=\"strata.test.streamer.Streamer\"}} 1"
        );
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }

    metadata_both_ways(http_port).await;

    // --- a client stream over HTTP: newline-delimited JSON requests
    let response = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{http_port}/strata.test.streamer.Streamer/Sum"
        ))
        .body("{\"number\": 1}\n{\"number\": 2}\n{\"number\": 39}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "{\"number\":42}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_function_gets_deadline_exceeded_and_its_entity_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("rogue.log");
    let store = format!("sqlite://{}", dir.path().join("s.db").display());
    let (function_port, http_port) = (free_port(), free_port());
    let _rogue = start_function(
        "rogue-function",
        function_port,
        &[("ROGUE_LOG", log.to_str().unwrap()), ("ROGUE_HANG", "1")],
    );
    let _proxy = start_proxy(function_port, http_port, &store, &["--command-timeout", "1s"]);
    let http = reqwest::Client::new();
    let add = |user: &str| {
        http.post(format!("http://127.0.0.1:{http_port}/cart/{user}/items/add"))
            .json(&serde_json::json!({"productId": "p", "name": "P", "quantity": 1}))
            .send()
    };

    // --- the function never answers: the proxy's limit answers for it, 504
    let hung = tokio::spawn(add("hang"));
    // Meanwhile other entities are served.
    let response = add("fine-1").await.unwrap();
    assert_eq!(response.status(), 200);
    let response = hung.await.unwrap().unwrap();
    assert_eq!(response.status(), 504);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "DEADLINE_EXCEEDED", "{body}");
    assert_eq!(
        body["error"]["message"],
        "the user function did not answer AddItem within 1s; the entity was restarted"
    );

    // --- the entity was restarted: the next command arrives on a new stream (id 1
    // again); a client's own shorter deadline (grpc-timeout) wins
    let response = http
        .get(format!("http://127.0.0.1:{http_port}/carts/hang"))
        .header("grpc-timeout", "300m")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "the client's deadline passed before the user function answered GetCart; the entity was restarted"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("holding command 1 for hang").count(), 2, "{text}");

    // --- still, every other entity is served
    assert_eq!(add("fine-2").await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn actions_and_streams_through_strata_dev() {
    let dev = start_dev(tempfile::tempdir().unwrap(), &[]);
    let command = binary("tck-model").display().to_string();
    dev.deploy_command("model", &command, &["--min-scale", "0", "--scale-to-zero-grace", "2s"]);
    let streamer = binary("streamer").display().to_string();
    dev.deploy_command("streamer", &streamer, &["--min-scale", "2"]);
    dev.until_service("model", "the model is ready", Duration::from_secs(60), |s| {
        s["ready_replicas"] == 1
    })
    .await;
    dev.until_service("streamer", "two streamers are ready", Duration::from_secs(60), |s| {
        s["ready_replicas"] == 2
    })
    .await;
    four_shapes(dev.gateway).await;
    server_streams_over_http(dev.gateway).await;
    metadata_both_ways(dev.gateway).await;

    // --- action calls are spread over the ready instances: one after another,
    // each finds the other instance less busy, so both serve half
    let http = reqwest::Client::new();
    for number in 0..10 {
        let response = http
            .post(dev.url("/greet"))
            .json(&serde_json::json!({"number": number}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let instances = dev.api("/services/streamer/instances").await;
    let sidecars: Vec<String> = instances["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sidecars.len(), 2, "{instances}");
    let metrics_of = |sidecar: String| async move {
        reqwest::get(format!("http://{sidecar}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    for sidecar in &sidecars {
        let metrics = metrics_of(sidecar.clone()).await;
        let served = "strata_proxy_requests_total{code=\"OK\",method=\"Greet\",protocol=\"grpc\",service=\"strata.test.streamer.Streamer\"}";
        let count: u64 = metrics
            .lines()
            .find_map(|line| line.strip_prefix(served))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        // metadata_both_ways sent one more Greet before these ten.
        assert!((5..=6).contains(&count), "{sidecar} served {count} of 11:\n{metrics}");
    }

    // --- a client that leaves a stream through the gateway cancels it at the
    // sidecar (which cancels it at the function, as behind strata proxy)
    let mut response = reqwest::Client::new()
        .post(dev.url("/ticks"))
        .header("accept", "text/event-stream")
        .json(&serde_json::json!({"count": 1}))
        .send()
        .await
        .unwrap();
    let first = response.chunk().await.unwrap().expect("a tick");
    assert!(String::from_utf8_lossy(&first).starts_with("data: {\"number\":1}"));
    drop(response);
    let cancelled = "strata_proxy_requests_total{code=\"CANCELLED\",method=\"Ticks\",protocol=\"grpc\",service=\"strata.test.streamer.Streamer\"} 1";
    let deadline = Instant::now() + Duration::from_secs(20);
    'seen: loop {
        for sidecar in &sidecars {
            if metrics_of(sidecar.clone()).await.contains(cancelled) {
                break 'seen;
            }
        }
        assert!(Instant::now() < deadline, "no sidecar saw the cancellation");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // --- idle, an action scales to zero like an entity; the next call wakes it
    dev.until_service("model", "scaled to zero", Duration::from_secs(90), |s| {
        s["ready_replicas"] == 0 && s["desired_replicas"] == 0
    })
    .await;
    four_shapes(dev.gateway).await;
}
