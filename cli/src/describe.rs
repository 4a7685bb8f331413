//! `strata describe SERVICE`: one page about a service, read from the management
//! API: its settings (every one, `default` where unset), its instances (address, state, uptime, shards owned), the
//! event logs it subscribes to, its last scale decisions with their reasons, and
//! its recent traffic (requests, failed requests and latency over the last minute).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use clap::Args;
use reqwest::Method;
use serde_json::Value;
use strata_control_plane::logs::{now_ms, rfc3339_ms};
use strata_settings::ServiceSettings;

use crate::api_client::{ApiArgs, ApiClient};

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// The service to describe.
    service: String,
    /// How many of the latest events to show.
    #[arg(long, default_value_t = 10)]
    events: usize,
    #[command(flatten)]
    api: ApiArgs,
}

/// What the page is made of, as the API answered it.
struct Reads {
    service: Value,
    instances: Value,
    shards: Value,
    history: Value,
    /// `None` when no series is available (not the leader's, or no samples yet).
    metrics: Option<Value>,
}

pub async fn run(args: DescribeArgs) -> anyhow::Result<()> {
    let api = args.api.client()?;
    let name = &args.service;
    let get = |path: String| {
        let api: &ApiClient = &api;
        async move { api.call(Method::GET, &path, None).await?.success() }
    };
    // The service first: an unknown name is said once, with the names that exist.
    let service = get(format!("/services/{name}")).await?;
    let reads = Reads {
        service,
        instances: get(format!("/services/{name}/instances")).await?,
        shards: get(format!("/services/{name}/shards")).await?,
        history: get(format!("/services/{name}/history?limit={}", args.events)).await?,
        metrics: get(format!("/services/{name}/metrics?window=1m")).await.ok(),
    };
    say!("{}", page(&reads, now_ms()));
    Ok(())
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// The whole page, as text.
fn page(reads: &Reads, now_ms: u64) -> String {
    let service = &reads.service;
    let mut out = String::new();
    let field = |out: &mut String, name: &str, value: String| {
        let _ = writeln!(out, "{name:<22}{value}");
    };
    field(&mut out, "Name:", text(&service["name"]));
    field(&mut out, "Status:", text(&service["status"]));
    field(&mut out, "Revision:", text(&service["revision"]));
    let runs = if service["image"].is_string() {
        format!("image {}", text(&service["image"]))
    } else {
        text(&service["command"])
    };
    field(&mut out, "Runs:", runs);
    field(
        &mut out,
        "Instances:",
        format!(
            "{} desired, {} ready",
            text(&service["desired_replicas"]),
            text(&service["ready_replicas"])
        ),
    );
    let _ = writeln!(out, "Settings:");
    for setting in ServiceSettings::FIELDS {
        // Unset: the platform's default (the autoscaler's or the gateway's own).
        let value = match &service[*setting] {
            Value::Null => "default".to_owned(),
            value => text(value),
        };
        let _ = writeln!(out, "  {setting:<22}{value}");
    }
    let entities: Vec<String> = service["entities"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entity| format!("{} ({})", text(&entity["service_name"]), text(&entity["entity_type"])))
        .collect();
    field(&mut out, "Entities:", list(&entities));
    let subscriptions: Vec<String> = service["subscriptions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    field(&mut out, "Subscribes to:", list(&subscriptions));
    if service["failure"].is_object() {
        field(&mut out, "Failing:", text(&service["failure"]["reason"]));
    }
    field(&mut out, "Recent traffic:", traffic(reads.metrics.as_ref()));

    let _ = writeln!(out, "\nInstances:");
    let owned = shards_by_owner(&reads.shards);
    let instances = reads.instances["instances"].as_array().cloned().unwrap_or_default();
    if instances.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        let _ = writeln!(
            out,
            "  {:<24} {:<9} {:>8} {:<22} {:>8} {:>6}",
            "ID", "STATE", "REVISION", "ADDRESS", "UPTIME", "SHARDS"
        );
        for instance in &instances {
            let id = text(&instance["id"]);
            let registered = instance["registered_at_ms"].as_u64().unwrap_or(now_ms);
            let _ = writeln!(
                out,
                "  {:<24} {:<9} {:>8} {:<22} {:>8} {:>6}",
                id,
                text(&instance["state"]),
                match instance["revision"].as_u64() {
                    Some(revision) if revision > 0 => revision.to_string(),
                    _ => "-".to_owned(),
                },
                text(&instance["address"]),
                uptime(now_ms.saturating_sub(registered) / 1000),
                owned.get(id.as_str()).copied().unwrap_or(0),
            );
        }
    }
    let unowned = owned.get("").copied().unwrap_or(0);
    if unowned > 0 {
        let _ = writeln!(out, "  {unowned} shard(s) have no owner (no ready instance)");
    }

    let _ = writeln!(out, "\nEvents (newest first):");
    let events = reads.history["events"].as_array().cloned().unwrap_or_default();
    if events.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for event in &events {
        let at = event["at_ms"].as_u64().map(rfc3339_ms).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {at}  {:<20} {}",
            text(&event["kind"]),
            event["reason"].as_str().unwrap_or_default()
        );
    }
    out
}

/// `45s`, `1m5s`, `2h5m`, `3d4h`: two units at most.
fn uptime(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{}s", seconds / 60, seconds % 60),
        3600..86_400 => format!("{}h{}m", seconds / 3600, seconds / 60 % 60),
        _ => format!("{}d{}h", seconds / 86_400, seconds / 3600 % 24),
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

/// Shards per owning instance id (`""` for shards without an owner).
fn shards_by_owner(shards: &Value) -> BTreeMap<&str, usize> {
    let mut owned = BTreeMap::new();
    for shard in shards["shards"].as_array().into_iter().flatten() {
        *owned.entry(shard["owner"].as_str().unwrap_or("")).or_default() += 1;
    }
    owned
}

/// Requests a second, the share that failed, and the worst p99 over the samples.
fn traffic(metrics: Option<&Value>) -> String {
    let Some(samples) = metrics.and_then(|m| m["samples"].as_array()).filter(|s| !s.is_empty()) else {
        return "no samples (the autoscaler's leader keeps them)".to_owned();
    };
    let mean = |field: &str| {
        let values: Vec<f64> = samples.iter().filter_map(|s| s[field].as_f64()).collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    let requests = mean("requests_per_second").unwrap_or(0.0);
    let errors = mean("errors_per_second").unwrap_or(0.0);
    let error_share = if requests > 0.0 { errors / requests * 100.0 } else { 0.0 };
    let p99 = samples
        .iter()
        .filter_map(|s| s["latency_p99_ms"].as_f64())
        .fold(None, |worst: Option<f64>, p99| Some(worst.map_or(p99, |w| w.max(p99))));
    let p99 = p99.map_or_else(|| "-".to_owned(), |p99| format!("{p99:.1} ms"));
    format!("over the last minute: {requests:.1} requests/s, {errors:.2} failed/s ({error_share:.1}%), p99 up to {p99}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_page_shows_settings_instances_shards_and_reasons() {
        let reads = Reads {
            service: json!({
                "name": "cart", "status": "ready", "revision": 2, "command": "shopping-cart",
                "desired_replicas": 2, "ready_replicas": 1, "min_scale": 0, "max_scale": 10,
                "target_concurrency": 70, "stable_window": null, "scale_to_zero_grace": "30s",
                "shard_count": 64, "keep_alive": "fixed", "prewarm_percentile": 5,
                "keep_alive_percentile": 99, "hold_timeout": null, "subscriptions": [],
                "entities": [{"service_name": "com.example.shoppingcart.ShoppingCart", "entity_type": "event_sourced"}],
            }),
            instances: json!({"instances": [
                {"id": "cart-0000000a", "state": "ready", "revision": 2, "address": "127.0.0.1:4000", "registered_at_ms": 10_000},
                {"id": "cart-0000000b", "state": "starting", "address": "127.0.0.1:4002", "registered_at_ms": 69_000},
            ]}),
            shards: json!({"shards": [{"owner": "cart-0000000a"}, {"owner": "cart-0000000a"}, {"owner": null}]}),
            history: json!({"events": [
                {"at_ms": 1_796_644_800_000u64, "kind": "scale", "reason": "scale up to 2: 150 in flight over a target of 70"},
            ]}),
            metrics: Some(json!({"samples": [
                {"requests_per_second": 10.0, "errors_per_second": 1.0, "latency_p99_ms": 4.0},
                {"requests_per_second": 30.0, "errors_per_second": 1.0, "latency_p99_ms": 9.5},
            ]})),
        };
        let page = page(&reads, 70_000);
        for expected in [
            "Name:                 cart\n",
            "Instances:            2 desired, 1 ready\n",
            "Settings:\n  min_scale             0\n  max_scale             10\n  target_concurrency    70\n  scale_to_zero_grace   30s\n  stable_window         default\n",
            "  keep_alive            fixed\n",
            "  hold_timeout          default\n",
            "Entities:             com.example.shoppingcart.ShoppingCart (event_sourced)\n",
            "Subscribes to:        -\n",
            "Recent traffic:       over the last minute: 20.0 requests/s, 1.00 failed/s (5.0%), p99 up to 9.5 ms\n",
            "  cart-0000000a            ready            2 127.0.0.1:4000             1m0s      2\n",
            "  cart-0000000b            starting         - 127.0.0.1:4002               1s      0\n",
            "  1 shard(s) have no owner (no ready instance)\n",
            "  2026-12-07T12:00:00.000Z  scale                scale up to 2: 150 in flight over a target of 70\n",
        ] {
            assert!(page.contains(expected), "missing {expected:?} in:\n{page}");
        }
    }

    #[test]
    fn uptimes_read_in_two_units() {
        assert_eq!(uptime(45), "45s");
        assert_eq!(uptime(65), "1m5s");
        assert_eq!(uptime(7500), "2h5m");
        assert_eq!(uptime(3 * 86_400 + 4 * 3600 + 5), "3d4h");
    }

    #[test]
    fn no_samples_is_said() {
        assert_eq!(traffic(None), "no samples (the autoscaler's leader keeps them)");
        assert_eq!(
            traffic(Some(&json!({"samples": []}))),
            "no samples (the autoscaler's leader keeps them)"
        );
    }
}
