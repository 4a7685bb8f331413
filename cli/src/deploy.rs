//! `strata deploy`: registers a service (or updates an existing one) through the
//! management API. The local runtime runs its command; the autoscaler scales it.

use clap::Args;
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::api_client::ApiClient;

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The service name (a DNS-1123 label, e.g. "cart").
    name: String,
    /// The command that starts one instance of the function; it gets HOST and PORT.
    /// It runs in the directory strata dev was started in.
    #[arg(long)]
    command: String,
    /// Fewest instances (0 allows scale to zero; default 0).
    #[arg(long)]
    min_scale: Option<u32>,
    /// Most instances (default 10).
    #[arg(long)]
    max_scale: Option<u32>,
    /// Concurrent requests one instance should handle (default 70).
    #[arg(long)]
    target_concurrency: Option<u32>,
    /// How long the last instance stays once the stable window has seen no traffic,
    /// before the service scales to zero (e.g. 30s, 2m; default 30s).
    #[arg(long)]
    scale_to_zero_grace: Option<String>,
    /// How far back the autoscaler averages load (e.g. 60s; 1s to 1h). Default:
    /// strata dev's --stable-window.
    #[arg(long)]
    stable_window: Option<String>,
    /// How the last instance is kept once traffic stops: "histogram" (the default:
    /// learned from the service's idle times, kept or started ahead only where the next
    /// request is expected; Knative's behaviour where it cannot pre-warm) or "fixed"
    /// (Knative's: the stable window, then the grace).
    #[arg(long, value_parser = ["fixed", "histogram"])]
    keep_alive: Option<String>,
    /// With --keep-alive histogram: the idle-time percentile at which an instance is
    /// started ahead of the next request (0 to 50; default 5).
    #[arg(long)]
    prewarm_percentile: Option<u32>,
    /// With --keep-alive histogram: the idle-time percentile until which it is kept
    /// (50 to 100; default 99).
    #[arg(long)]
    keep_alive_percentile: Option<u32>,
    /// Management API of any control-plane node.
    #[arg(long, env = "STRATA_API", default_value = "http://127.0.0.1:9100")]
    api: String,
    /// Admin token.
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: crate::tls::ApiTlsArgs,
}

pub async fn run(args: DeployArgs) -> anyhow::Result<()> {
    for (flag, value) in [
        ("--scale-to-zero-grace", &args.scale_to_zero_grace),
        ("--stable-window", &args.stable_window),
    ] {
        if let Some(value) = value {
            crate::duration::parse(value).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
        }
    }
    let mut fields = Map::new();
    fields.insert("command".into(), json!(args.command));
    for (key, value) in [
        ("min_scale", args.min_scale),
        ("max_scale", args.max_scale),
        ("target_concurrency", args.target_concurrency),
        ("prewarm_percentile", args.prewarm_percentile),
        ("keep_alive_percentile", args.keep_alive_percentile),
    ] {
        if let Some(value) = value {
            fields.insert(key.into(), json!(value));
        }
    }
    if let Some(grace) = &args.scale_to_zero_grace {
        fields.insert("scale_to_zero_grace".into(), json!(grace));
    }
    if let Some(window) = &args.stable_window {
        fields.insert("stable_window".into(), json!(window));
    }
    if let Some(keep_alive) = &args.keep_alive {
        fields.insert("keep_alive".into(), json!(keep_alive));
    }
    let api = ApiClient::new(&args.api, args.token.clone(), &args.tls)?;
    let mut create = fields.clone();
    create.insert("name".into(), json!(args.name));
    let answer = api
        .call(Method::POST, "/services", Some(&Value::Object(create)))
        .await?;
    let answer = if answer.status == StatusCode::CONFLICT {
        // Already deployed: update it in place.
        let path = format!("/services/{}", args.name);
        api.call(Method::PATCH, &path, Some(&Value::Object(fields))).await?
    } else {
        answer
    };
    let body = answer.success()?;
    println!(
        "deployed {} (revision {}, desired {} instance(s))",
        args.name, body["revision"], body["desired_replicas"]
    );
    Ok(())
}
