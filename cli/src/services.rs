//! `strata services`: lists the registered services with their desired and ready
//! instance counts, read from the management API.

use anyhow::Context;
use clap::Args;
use serde::Deserialize;

use crate::api_client::ApiClient;

#[derive(Args)]
pub struct ServicesArgs {
    /// Management API of any control-plane node.
    #[arg(long, env = "STRATA_API", default_value = "http://127.0.0.1:9100")]
    api: String,
    /// Bearer token (admin or read-only).
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: crate::tls::ApiTlsArgs,
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
    let api = ApiClient::new(&args.api, args.token.clone(), &args.tls)?;
    let body = api.call(reqwest::Method::GET, "/services", None).await?.success()?;
    if args.json {
        sayln!("{body}");
        return Ok(());
    }
    let list: ServiceList = serde_json::from_value(body).context("the API's answer is not a service list")?;
    sayln!(
        "{:<32} {:>7} {:>5} {:<15} {:>8}",
        "NAME",
        "DESIRED",
        "READY",
        "STATUS",
        "REVISION"
    );
    for service in list.services {
        sayln!(
            "{:<32} {:>7} {:>5} {:<15} {:>8}",
            service.name,
            service.desired_replicas,
            service.ready_replicas,
            service.status,
            service.revision
        );
    }
    Ok(())
}
