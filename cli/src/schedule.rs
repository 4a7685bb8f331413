//! `strata schedule create|list|delete`: cron schedules whose calls the control
//! plane's leader makes, through the management API (`/schedules`).

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api_client::ApiArgs;
use crate::revisions::utc;

#[derive(Args)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    command: ScheduleCommand,
}

#[derive(Subcommand)]
enum ScheduleCommand {
    /// Create a schedule: call SERVICE/METHOD with the JSON body at every time of the cron expression.
    Create(CreateArgs),
    /// List the schedules with their next and last runs.
    List(ListArgs),
    /// Delete a schedule.
    Delete(DeleteArgs),
}

#[derive(Args)]
struct CreateArgs {
    /// The schedule's name.
    name: String,
    /// Five fields (minute hour day-of-month month day-of-week), or six with seconds first.
    #[arg(long)]
    cron: String,
    /// An IANA time zone, e.g. Europe/Berlin (default UTC).
    #[arg(long)]
    time_zone: Option<String>,
    /// A time missed while no leader could run it: run once for it, or skip it.
    #[arg(long, value_enum, default_value = "once")]
    catch_up: CatchUp,
    /// The call: SERVICE/package.Service/Method, e.g. cart/com.example.shoppingcart.ShoppingCart/AddItem.
    #[arg(long)]
    call: String,
    /// The request as JSON (the method's input message).
    #[arg(long, default_value = "{}")]
    body: String,
    #[command(flatten)]
    api: ApiArgs,
    /// Print the API's JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum CatchUp {
    Once,
    Skip,
}

#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DeleteArgs {
    /// The schedule's name.
    name: String,
    #[command(flatten)]
    api: ApiArgs,
}

pub async fn run(args: ScheduleArgs) -> anyhow::Result<()> {
    match args.command {
        ScheduleCommand::Create(args) => create(args).await,
        ScheduleCommand::List(args) => list(args).await,
        ScheduleCommand::Delete(args) => delete(args).await,
    }
}

/// SERVICE/package.Service/Method split at its first slash.
fn split_call(call: &str) -> anyhow::Result<(&str, &str)> {
    call.split_once('/')
        .filter(|(service, method)| !service.is_empty() && method.contains('/'))
        .with_context(|| {
            format!("--call {call:?}: write it as SERVICE/package.Service/Method, e.g. cart/com.example.shoppingcart.ShoppingCart/AddItem")
        })
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let (service, method) = split_call(&args.call)?;
    let body: Value =
        serde_json::from_str(&args.body).with_context(|| format!("--body {:?} is not JSON", args.body))?;
    let request = json!({
        "name": args.name,
        "cron": args.cron,
        "time_zone": args.time_zone,
        "catch_up": match args.catch_up { CatchUp::Once => "run_once", CatchUp::Skip => "skip" },
        "service": service,
        "method": method,
        "body": body,
    });
    let api = args.api.client()?;
    let created = api
        .call(reqwest::Method::POST, "/schedules", Some(&request))
        .await?
        .success()?;
    if args.json {
        sayln!("{created}");
        return Ok(());
    }
    let schedule: ScheduleRow = serde_json::from_value(created).context("the API's answer is not a schedule")?;
    sayln!(
        "schedule {} created; next run {}",
        schedule.name,
        schedule.next_run_ms.map_or_else(|| "never".to_owned(), utc)
    );
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let api = args.api.client()?;
    let body = api.call(reqwest::Method::GET, "/schedules", None).await?.success()?;
    if args.json {
        sayln!("{body}");
        return Ok(());
    }
    let list: ScheduleList = serde_json::from_value(body).context("the API's answer is not a schedule list")?;
    say!("{}", table(&list.schedules));
    Ok(())
}

async fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let api = args.api.client()?;
    api.call(reqwest::Method::DELETE, &format!("/schedules/{}", args.name), None)
        .await?
        .success()?;
    sayln!("schedule {} deleted", args.name);
    Ok(())
}

#[derive(Deserialize)]
struct ScheduleList {
    schedules: Vec<ScheduleRow>,
}

#[derive(Deserialize)]
struct ScheduleRow {
    name: String,
    cron: String,
    time_zone: String,
    service: String,
    method: String,
    next_run_ms: Option<u64>,
    last_run: Option<RunRow>,
}

#[derive(Deserialize)]
struct RunRow {
    time_ms: u64,
    outcome: String,
    error: Option<String>,
}

fn table(schedules: &[ScheduleRow]) -> String {
    let mut out = format!(
        "{:<20} {:<16} {:<14} {:<21} {:<32} {}\n",
        "NAME", "CRON", "TIME ZONE", "NEXT RUN", "LAST RUN", "CALL"
    );
    for schedule in schedules {
        let last = schedule.last_run.as_ref().map_or_else(
            || "-".to_owned(),
            |run| match &run.error {
                Some(error) => format!("{} {}: {error}", utc(run.time_ms), run.outcome),
                None => format!("{} {}", utc(run.time_ms), run.outcome),
            },
        );
        out.push_str(&format!(
            "{:<20} {:<16} {:<14} {:<21} {:<32} {}/{}\n",
            schedule.name,
            schedule.cron,
            schedule.time_zone,
            schedule.next_run_ms.map_or_else(|| "never".to_owned(), utc),
            last,
            schedule.service,
            schedule.method
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_splits_at_its_first_slash() {
        assert_eq!(
            split_call("cart/com.example.shoppingcart.ShoppingCart/AddItem").unwrap(),
            ("cart", "com.example.shoppingcart.ShoppingCart/AddItem")
        );
        assert!(split_call("cart").is_err());
        assert!(split_call("cart/AddItem").is_err());
        assert!(split_call("/a.B/C").is_err());
    }
}
