//! The load generator of the side-by-side suite: HTTP/1.1 clients on kept-alive
//! loopback connections, closed loop (N clients, each sends its next request when
//! the last is answered) or open loop (a fixed rate, latency counted from when
//! each request was due, so a stall is not hidden by the requests it delayed).
//! Latencies go into an HDR histogram in microseconds; any answer that is not 2xx
//! is counted as refused, with the first one kept for the report.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;

/// One request: a path and, for a POST, its JSON body.
#[derive(Debug, Clone)]
pub enum Request {
    Get(String),
    Post(String, Bytes),
}

/// Which request a client sends next: `(client, its n-th request)`.
pub type Plan = Arc<dyn Fn(usize, u64) -> Request + Send + Sync>;

/// What one run measured.
#[derive(Clone)]
pub struct Outcome {
    pub answered: u64,
    pub refused: u64,
    pub first_refusal: Option<String>,
    pub elapsed: Duration,
    /// Latency in microseconds.
    pub latency: Histogram<u64>,
}

impl Outcome {
    fn empty() -> Outcome {
        Outcome {
            answered: 0,
            refused: 0,
            first_refusal: None,
            elapsed: Duration::ZERO,
            latency: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
        }
    }

    pub fn per_second(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency percentile in milliseconds.
    pub fn ms(&self, percentile: f64) -> f64 {
        self.latency.value_at_percentile(percentile) as f64 / 1000.0
    }

    fn merge(&mut self, other: Outcome) {
        self.answered += other.answered;
        self.refused += other.refused;
        if self.first_refusal.is_none() {
            self.first_refusal = other.first_refusal;
        }
        self.latency.add(&other.latency).expect("same histogram bounds");
    }

    fn record(&mut self, started: Instant, answer: Result<(), String>) {
        let micros = started.elapsed().as_micros().clamp(1, 120_000_000) as u64;
        match answer {
            Ok(()) => {
                self.answered += 1;
                self.latency.saturating_record(micros);
            }
            Err(why) => {
                self.refused += 1;
                self.first_refusal.get_or_insert(why);
            }
        }
    }
}

/// One kept-alive HTTP/1.1 connection.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Connection> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(connection);
        Ok(Connection {
            sender,
            host: addr.to_string(),
        })
    }

    /// Sends one request; `Err` with the status and body when it is not 2xx.
    pub async fn send(&mut self, request: &Request) -> anyhow::Result<Result<Bytes, String>> {
        let builder = hyper::Request::builder().header("host", &self.host);
        let request = match request {
            Request::Get(path) => builder.method("GET").uri(path).body(Full::new(Bytes::new()))?,
            // An empty POST has no content type: Restate refuses one for a handler without input.
            Request::Post(path, body) if body.is_empty() => {
                builder.method("POST").uri(path).body(Full::new(Bytes::new()))?
            }
            Request::Post(path, body) => builder
                .method("POST")
                .uri(path)
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))?,
        };
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status.is_success() {
            Ok(Ok(body))
        } else {
            Ok(Err(format!("{status}: {}", String::from_utf8_lossy(&body))))
        }
    }
}

/// `clients` clients, each on its own connection, sending as fast as answers come.
pub async fn closed(addr: SocketAddr, clients: usize, duration: Duration, plan: Plan) -> anyhow::Result<Outcome> {
    closed_while(addr, clients, plan, move |started: Instant| {
        started.elapsed() < duration
    })
    .await
}

/// As [`closed`], sending while `running(started)` holds (checked before each
/// request), e.g. until something the run waits for has happened.
pub async fn closed_while(
    addr: SocketAddr,
    clients: usize,
    plan: Plan,
    running: impl Fn(Instant) -> bool + Clone + Send + 'static,
) -> anyhow::Result<Outcome> {
    let mut connections = Vec::new();
    for _ in 0..clients {
        connections.push(Connection::open(addr).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (client, mut connection) in connections.into_iter().enumerate() {
        let plan = plan.clone();
        let running = running.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome::empty();
            let mut n = 0;
            while running(started) {
                let request = plan(client, n);
                n += 1;
                let sent = Instant::now();
                let answer = connection.send(&request).await?.map(|_| ());
                outcome.record(sent, answer);
            }
            anyhow::Ok(outcome)
        }));
    }
    gather(tasks, started).await
}

/// `rate` requests a second over `connections` connections, each request due at
/// its own moment and timed from then.
pub async fn open(
    addr: SocketAddr,
    rate: f64,
    connections: usize,
    duration: Duration,
    plan: Plan,
) -> anyhow::Result<Outcome> {
    let mut opened = Vec::new();
    for _ in 0..connections {
        opened.push(Connection::open(addr).await?);
    }
    let interval = Duration::from_secs_f64(connections as f64 / rate);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (client, mut connection) in opened.into_iter().enumerate() {
        let plan = plan.clone();
        // Spread the connections' schedules over one interval.
        let offset = interval.mul_f64(client as f64 / connections as f64);
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome::empty();
            let mut n = 0u64;
            loop {
                let due = started + offset + interval.mul_f64(n as f64);
                if due.duration_since(started) >= duration {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let request = plan(client, n);
                n += 1;
                let answer = connection.send(&request).await?.map(|_| ());
                outcome.record(due, answer);
            }
            anyhow::Ok(outcome)
        }));
    }
    gather(tasks, started).await
}

async fn gather(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Outcome>>>,
    started: Instant,
) -> anyhow::Result<Outcome> {
    let mut total = Outcome::empty();
    for task in tasks {
        total.merge(task.await??);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// One request on a new connection, as `curl` sends it: its latency, including
/// the connection's setup.
pub async fn once(addr: SocketAddr, request: &Request) -> anyhow::Result<(Duration, Result<Bytes, String>)> {
    let started = Instant::now();
    let mut connection = Connection::open(addr).await?;
    let answer = connection.send(request).await?;
    Ok((started.elapsed(), answer))
}
