//! The CLI's client of the management API: one place for the base URL, the token,
//! request timeouts, and waiting out a leaderless moment (a 503 while the cluster
//! elects a leader, as right after `strata dev` starts), bounded and honouring
//! `Retry-After`. Errors carry the API's own message.

use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::tls::ApiTlsArgs;

/// How long a command waits for the cluster to have a leader before giving up.
const LEADER_PATIENCE: Duration = Duration::from_secs(30);
/// Each request's own limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the management API is and how to call it: the flags of every command
/// that reads or writes through it.
#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    /// Management API of any control-plane node.
    #[arg(long, env = "STRATA_API", default_value = "http://127.0.0.1:9100")]
    pub api: String,
    /// Bearer token (admin; a read-only token for reads).
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: ApiTlsArgs,
}

impl ApiArgs {
    pub fn client(&self) -> anyhow::Result<ApiClient> {
        ApiClient::new(&self.api, self.token.clone(), &self.tls)
    }
}

pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    /// For answers read as they come (followed logs): no limit on the whole
    /// exchange, only on connecting.
    streaming: reqwest::Client,
}

/// An answer: its status and its JSON body (`Null` when it had none).
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// The API's error message (`{"error": {"message"}}`), or the status alone.
    pub fn error_message(&self) -> String {
        self.body["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| "no message".to_owned())
    }

    /// Fails with the API's message unless the status is a success.
    pub fn success(self) -> anyhow::Result<Value> {
        if self.status.is_success() {
            return Ok(self.body);
        }
        anyhow::bail!("the API answered {}: {}", self.status, self.error_message())
    }
}

impl ApiClient {
    /// Why a request got no answer; a server certificate this client does not trust
    /// says so and how to trust it, instead of a bare transport error.
    fn unreachable(&self, error: reqwest::Error) -> anyhow::Error {
        let mut chain = String::new();
        let mut source: Option<&dyn std::error::Error> = Some(&error);
        while let Some(cause) = source {
            chain.push_str(&cause.to_string());
            chain.push('\n');
            source = cause.source();
        }
        if chain.contains("invalid peer certificate") || chain.contains("UnknownIssuer") {
            return anyhow::anyhow!(
                "the management API at {} presented a TLS certificate this client does not trust ({}); \
                 if it is signed by a private CA, pass that CA with --tls-ca or STRATA_TLS_CA",
                self.base,
                chain.lines().last().unwrap_or_default()
            );
        }
        anyhow::Error::new(error).context(format!("cannot reach the management API at {}", self.base))
    }

    pub fn new(base: &str, token: Option<String>, tls: &ApiTlsArgs) -> anyhow::Result<Self> {
        let roots = match &tls.tls_ca {
            Some(path) => strata_tls::trusted_ca(path).context("--tls-ca")?,
            None => Vec::new(),
        };
        let client = |builder: reqwest::ClientBuilder| {
            roots
                .iter()
                .fold(builder, |builder, root| builder.add_root_certificate(root.clone()))
                .build()
                .context("cannot build an HTTP client")
        };
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: client(reqwest::Client::builder().timeout(REQUEST_TIMEOUT))?,
            streaming: client(reqwest::Client::builder().connect_timeout(REQUEST_TIMEOUT))?,
        })
    }

    /// Sends `GET path` (under `/api/v1`) and hands back the answer to be read as it
    /// comes; an unsuccessful status fails with the API's message.
    pub async fn open(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let mut request = self.streaming.get(format!("{}/api/v1{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let reply = request.send().await.map_err(|error| self.unreachable(error))?;
        if reply.status().is_success() {
            return Ok(reply);
        }
        let status = reply.status();
        let body = reply.json().await.unwrap_or(Value::Null);
        anyhow::bail!("the API answered {status}: {}", Answer { status, body }.error_message())
    }

    /// Sends `method path` (under `/api/v1`) with an optional JSON body. A 503
    /// (no leader yet) is retried until [`LEADER_PATIENCE`] has passed.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Answer> {
        let url = format!("{}/api/v1{path}", self.base);
        let deadline = tokio::time::Instant::now() + LEADER_PATIENCE;
        loop {
            let mut request = self.http.request(method.clone(), &url);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let reply = request.send().await.map_err(|error| self.unreachable(error))?;
            let status = reply.status();
            let wait = retry_after(&reply);
            let body = reply.json().await.unwrap_or(Value::Null);
            let answer = Answer { status, body };
            let now = tokio::time::Instant::now();
            if status != StatusCode::SERVICE_UNAVAILABLE || now >= deadline {
                return Ok(answer);
            }
            tracing::debug!(message = %answer.error_message(), "the API is unavailable; retrying");
            tokio::time::sleep(wait.min(deadline - now)).await;
        }
    }
}

/// The server's `Retry-After` in seconds, kept between 100 ms and 2 s so a
/// leaderless moment is waited out promptly.
fn retry_after(reply: &reqwest::Response) -> Duration {
    reply
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_millis(250))
        .clamp(Duration::from_millis(100), Duration::from_secs(2))
}
