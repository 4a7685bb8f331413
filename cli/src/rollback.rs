//! `strata rollback NAME [--to N]`: serves an earlier revision again
//! (`POST /services/{name}/rollback`). Its instances start, the shards move to them
//! once one is ready, and the others stop, as in any rollout. With a canary, it
//! ends the canary: its slice goes back to the serving revision.

use anyhow::Context;
use clap::Args;
use serde_json::json;

use crate::api_client::ApiArgs;
use crate::revisions::{table, RevisionList};

#[derive(Args)]
pub struct RollbackArgs {
    /// The service.
    name: String,
    /// The revision to serve; default: the one the serving revision replaced.
    #[arg(long)]
    to: Option<u64>,
    #[command(flatten)]
    api: ApiArgs,
}

pub async fn run(args: RollbackArgs) -> anyhow::Result<()> {
    let api = args.api.client()?;
    let path = format!("/services/{}/rollback", args.name);
    let body = api
        .call(reqwest::Method::POST, &path, Some(&json!({ "to": args.to })))
        .await?
        .success()?;
    let list: RevisionList = serde_json::from_value(body).context("the API's answer is not a revision list")?;
    sayln!(
        "{} now serves revision {} everywhere; its instances start (unless they run), and the shards move to them once one is ready",
        args.name, list.serving
    );
    say!("{}", table(&list));
    Ok(())
}
