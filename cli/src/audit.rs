//! `strata audit`: prints the control plane's audit log of management writes (who,
//! what, the outcome, when), read page by page from `GET /api/v1/audit`.

use anyhow::Context;
use clap::Args;
use serde::Deserialize;

use crate::api_client::ApiClient;

#[derive(Args)]
pub struct AuditArgs {
    /// Management API of any control-plane node.
    #[arg(long, env = "STRATA_API", default_value = "http://127.0.0.1:9100")]
    api: String,
    /// Bearer token (admin or read-only).
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: crate::tls::ApiTlsArgs,
    /// Only records after this id (as printed in the first column).
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// Print the API's JSON records, one per line, instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Deserialize)]
struct Page {
    records: Vec<serde_json::Value>,
    next_after: Option<u64>,
}

pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let api = ApiClient::new(&args.api, args.token.clone(), &args.tls)?;
    if !args.json {
        sayln!(
            "{:>6} {:>13} {:<20} {:<6} {:<40} {:>6}",
            "ID",
            "AT_MS",
            "WHO",
            "METHOD",
            "PATH",
            "STATUS"
        );
    }
    let mut after = args.after;
    loop {
        let body = api
            .call(reqwest::Method::GET, &format!("/audit?after={after}&limit=1000"), None)
            .await?
            .success()?;
        let page: Page = serde_json::from_value(body).context("the API's answer is not an audit page")?;
        for record in &page.records {
            if args.json {
                sayln!("{record}");
                continue;
            }
            let text = |field: &str| record[field].as_str().unwrap_or_default().to_owned();
            sayln!(
                "{:>6} {:>13} {:<20} {:<6} {:<40} {:>6}",
                record["id"],
                record["at_ms"],
                text("principal"),
                text("method"),
                text("path"),
                record["status"]
            );
        }
        match page.next_after {
            Some(next) => after = next,
            None => return Ok(()),
        }
    }
}
