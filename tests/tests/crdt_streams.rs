//! Streamed CRDT commands end to end, through `strata dev` (SQLite, two
//! instances, so the gateway must route each call to the room's owner): the
//! presence example's `Watch` over Server-Sent Events and over gRPC server
//! streaming sees joins and leaves made by other clients; a gRPC watcher that
//! names a user keeps that user online, and its disconnect reaches the
//! function as a cancel whose state change is persisted and seen by the other
//! watcher; a watch with a client deadline ends with DEADLINE_EXCEEDED; after
//! `kill -9` of the sidecars the watch ends and a new one sees the persisted
//! room. A function that sends a streamed message for a command that is not
//! streaming (`rogue-crdt`) is reported and restarted.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_e2e::{binary, dev::start_dev, free_port, start_function, start_proxy, Http};

/// How long a watcher may wait for the next event before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// The watched room's users, as a sorted list.
fn users(online: &Value) -> Vec<String> {
    online["users"]
        .as_array()
        .map(|users| users.iter().map(|u| u.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// A Server-Sent Events stream, read event by event.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(url: String) -> Events {
        Self::try_open(&url)
            .await
            .unwrap_or_else(|status| panic!("watch: {status}"))
    }

    async fn try_open(url: &str) -> Result<Events, u16> {
        let response = reqwest::Client::new()
            .get(url)
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("watch");
        if response.status() != 200 {
            return Err(response.status().as_u16());
        }
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Ok(Events {
            response,
            buffer: String::new(),
        })
    }

    /// Opens a watch, asking again while the gateway cannot serve it yet (an
    /// instance is being replaced).
    async fn open_when_served(url: String) -> Events {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match Self::try_open(&url).await {
                Ok(events) => return events,
                Err(status) => assert!(Instant::now() < deadline, "never served again: {status}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reads until the stream ends; returns the error event it ended with, if any
    /// (`None`: it just ended).
    async fn end(mut self) -> Option<String> {
        loop {
            if let Some(start) = self.buffer.find("event: error") {
                return Some(self.buffer[start..].to_string());
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("the stream ends in time");
            match chunk {
                Ok(Some(chunk)) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next event's data, as JSON.
    async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data = event
                    .lines()
                    .find_map(|line| line.strip_prefix("data: "))
                    .unwrap_or_else(|| panic!("an event without data: {event:?}"));
                assert!(!event.starts_with("event: error"), "the stream failed: {event}");
                return serde_json::from_str(data).unwrap();
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("an event in time")
                .expect("the stream is readable")
                .expect("the stream is still open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads events until one lists exactly `expected`.
    async fn until(&mut self, expected: &[&str]) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let online = self.next().await;
            if users(&online) == expected {
                return;
            }
            assert!(Instant::now() < deadline, "never saw {expected:?}; last {online}");
        }
    }
}

/// The presence messages, for a gRPC client without generated code.
mod api {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WatchRoom {
        #[prost(string, tag = "1")]
        pub room: String,
        #[prost(string, tag = "2")]
        pub user: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Online {
        #[prost(string, repeated, tag = "1")]
        pub users: Vec<String>,
    }
}

async fn grpc_watch(port: u16, room: &str, user: &str) -> tonic::codec::Streaming<api::Online> {
    grpc_watch_within(port, room, user, None).await.expect("a gRPC watch")
}

/// A gRPC watch, with the client's deadline if `timeout` is given.
async fn grpc_watch_within(
    port: u16,
    room: &str,
    user: &str,
    timeout: Option<Duration>,
) -> Result<tonic::codec::Streaming<api::Online>, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(api::WatchRoom {
        room: room.into(),
        user: user.into(),
    });
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    grpc.server_streaming(
        request,
        "/com.example.presence.Presence/Watch".parse().unwrap(),
        tonic_prost::ProstCodec::<api::WatchRoom, api::Online>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

async fn next_grpc(stream: &mut tonic::codec::Streaming<api::Online>) -> Vec<String> {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("a message in time")
        .expect("the stream is readable")
        .expect("the stream is still open")
        .users
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_watchers_see_joins_leaves_and_cancels_over_sse_and_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir, &[]);
    dev.deploy_command(
        "presence",
        &binary("presence").display().to_string(),
        &["--min-scale", "2", "--max-scale", "2"],
    );
    // Two instances: the gateway must route each watch and each change to
    // the room's owner (a sidecar refuses entities it does not own).
    dev.until_service("presence", "both instances are ready", PATIENCE, |s| {
        s["ready_replicas"] == 2
    })
    .await;
    let http = Http::new(dev.gateway);

    // --- a browser-style watcher over SSE: the room is empty at first
    let mut watcher = Events::open(dev.url("/rooms/lobby/watch")).await;
    assert_eq!(users(&watcher.next().await), Vec::<String>::new());

    // --- another client joins: the watcher sees it
    let (status, body) = http.post("/rooms/lobby/join", json!({"user": "alice"})).await;
    assert_eq!((status, users(&body)), (200, vec!["alice".to_string()]), "{body}");
    watcher.until(&["alice"]).await;

    // --- a gRPC watcher that is carol: carol is online while it watches
    let mut carol = grpc_watch(dev.gateway, "lobby", "carol").await;
    assert_eq!(next_grpc(&mut carol).await, ["alice", "carol"]);
    watcher.until(&["alice", "carol"]).await;

    // --- alice leaves: both watchers see it
    let (status, body) = http.post("/rooms/lobby/leave", json!({"user": "alice"})).await;
    assert_eq!((status, users(&body)), (200, vec!["carol".to_string()]), "{body}");
    watcher.until(&["carol"]).await;
    assert_eq!(next_grpc(&mut carol).await, ["carol"]);

    // --- carol's client goes: the function hears the cancel and takes carol
    // out; the change is persisted and the SSE watcher sees it
    drop(carol);
    watcher.until(&[]).await;
    let (status, body) = http.post("/rooms/lobby/join", json!({"user": "bob"})).await;
    assert_eq!((status, users(&body)), (200, vec!["bob".to_string()]), "{body}");
    watcher.until(&["bob"]).await;

    // --- bad input: a join without a user fails and changes nothing
    let (status, body) = http.post("/rooms/lobby/join", json!({"user": " "})).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "UNKNOWN", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("a user name is required"),
        "{body}"
    );
    let (status, body) = http.post("/rooms/lobby/join", json!({"user": "dan"})).await;
    assert_eq!(
        (status, users(&body)),
        (200, vec!["bob".to_string(), "dan".to_string()]),
        "{body}"
    );
    watcher.until(&["bob", "dan"]).await;

    // --- a watch with a client deadline ends with DEADLINE_EXCEEDED, and
    // its user leaves as for any client that goes
    let ended = async {
        let mut erin = grpc_watch_within(dev.gateway, "lobby", "erin", Some(Duration::from_millis(500))).await?;
        while erin.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    };
    let status = tokio::time::timeout(PATIENCE, ended)
        .await
        .expect("the watch ends at its deadline")
        .expect_err("a watch does not end by itself");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    watcher.until(&["bob", "dan"]).await;

    // --- the room's sidecar counted carol's watch as cancelled by its client
    let instances = dev.api("/services/presence/instances").await;
    let cancelled = "strata_proxy_requests_total{code=\"CANCELLED\",method=\"Watch\",protocol=\"grpc\",service=\"com.example.presence.Presence\"}";
    let mut counted = Vec::new();
    for instance in instances["instances"].as_array().unwrap() {
        let sidecar = instance["admin_address"].as_str().unwrap();
        let metrics = reqwest::get(format!("http://{sidecar}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        counted.push(metrics.contains(cancelled));
    }
    assert!(
        counted.contains(&true),
        "no sidecar counted the cancelled watch: {instances}"
    );

    // --- kill -9 the sidecars: the watch ends (it is not left hanging); a new
    // watch on a replacement sees the persisted room
    let sidecars = dev.sidecars();
    assert!(!sidecars.is_empty(), "no running sidecar");
    for pid in sidecars.iter().map(|sidecar| sidecar.pid) {
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
    }
    let error = watcher.end().await.expect("the watch ends with an error event");
    assert!(error.contains("\"code\":\"UNAVAILABLE\""), "{error}");
    let mut again = Events::open_when_served(dev.url("/rooms/lobby/watch")).await;
    assert_eq!(users(&again.next().await), ["bob", "dan"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_message_for_a_command_that_is_not_streaming_is_a_violation() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("rogue.log");
    let store = format!("sqlite://{}", dir.path().join("crdt.db").display());
    let (function_port, http_port) = (free_port(), free_port());
    let _function = start_function("rogue-crdt", function_port, &[("ROGUE_LOG", log.to_str().unwrap())]);
    let _proxy = start_proxy(function_port, http_port, &store, &[]);
    let http = Http::new(http_port);

    // The command is answered (its reply came first and was stored); the
    // streamed message after it is reported and the entity restarted with
    // the stored state.
    let (status, body) = http
        .post(
            "/cart/s1/items/add",
            json!({"productId": "stream-rogue", "name": "Thing", "quantity": 3}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let reported = logged(&log, "which is not streaming").await;
    assert!(reported.contains("protocol violation by entity s1"), "{reported}");
    assert_eq!(
        http.post(
            "/cart/s1/items/add",
            json!({"productId": "p", "name": "Thing", "quantity": 1})
        )
        .await
        .0,
        200
    );
    let init = logged(&log, "init s1 Some").await;
    assert!(init.contains("change: 3"), "restarted with the stored counter: {init}");
}

/// Waits until the rogue function's log has a line containing `text`.
async fn logged(log: &std::path::Path, text: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let content = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = content.lines().rev().find(|l| l.contains(text)) {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "never logged {text:?}: {content}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
