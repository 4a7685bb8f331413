//! `strata services`: lists the registered services with their desired and ready
//! instance counts, read from the management API.

use anyhow::Context;
use clap::Args;
use serde::Deserialize;

#[derive(Args)]
pub struct ServicesArgs {
    /// Management API of any control-plane node.
    #[arg(long, env = "STRATA_API", default_value = "http://127.0.0.1:9100")]
    api: String,
    /// Bearer token (admin or read-only).
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Deserialize)]
struct ServiceList {
    services: Vec<Service>,
}

#[derive(Deserialize)]
struct Service {
    name: String,
    desired_replicas: u32,
    ready_replicas: u32,
    status: String,
    revision: u64,
}

pub async fn run(args: ServicesArgs) -> anyhow::Result<()> {
    let url = format!("{}/api/v1/services", args.api.trim_end_matches('/'));
    let mut request = reqwest::Client::new().get(&url);
    if let Some(token) = &args.token {
        request = request.bearer_auth(token);
    }
    let reply = request
        .send()
        .await
        .with_context(|| format!("cannot reach the management API at {}", args.api))?;
    let status = reply.status();
    let body = reply.text().await.context("reading the API's answer")?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|value| value["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(body);
        anyhow::bail!("the API answered {status}: {message}");
    }
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let list: ServiceList = serde_json::from_str(&body).context("the API's answer is not a service list")?;
    println!(
        "{:<32} {:>7} {:>5} {:<15} {:>8}",
        "NAME", "DESIRED", "READY", "STATUS", "REVISION"
    );
    for service in list.services {
        println!(
            "{:<32} {:>7} {:>5} {:<15} {:>8}",
            service.name, service.desired_replicas, service.ready_replicas, service.status, service.revision
        );
    }
    Ok(())
}
