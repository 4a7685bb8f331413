//! `strata logs SERVICE [--instance ID] [-f] [--since 10m]`: prints what a service's
//! instances (function and sidecar) wrote, each line with its time and instance,
//! read from the management API (`GET /api/v1/services/{name}/logs`), so it works
//! the same against `strata dev` and a remote control plane.

use anyhow::Context;
use clap::Args;
use strata_control_plane::logs::LogLine;

use crate::api_client::ApiArgs;

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The service whose instances' output to print.
    service: String,
    /// One instance only (an id as `strata describe` lists it).
    #[arg(long)]
    instance: Option<String>,
    /// Keep printing lines as they are written, until interrupted.
    #[arg(short, long)]
    follow: bool,
    /// Only lines written within this long (e.g. 10m, 1h).
    #[arg(long, value_parser = crate::duration::parse)]
    since: Option<std::time::Duration>,
    /// Print the API's JSON lines as they come.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let api = args.api.client()?;
    let mut path = format!("/services/{}/logs?follow={}", args.service, args.follow);
    if let Some(instance) = &args.instance {
        path.push_str(&format!("&instance={instance}"));
    }
    if let Some(since) = args.since {
        path.push_str(&format!("&since={}ms", since.as_millis()));
    }
    let mut reply = api.open(&path).await?;
    let mut pending = Vec::new();
    loop {
        let chunk = tokio::select! {
            chunk = reply.chunk() => chunk.context("the log stream broke off")?,
            () = crate::shutdown_signal() => return Ok(()),
        };
        let Some(chunk) = chunk else { break };
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            print_line(&line[..end], args.json)?;
        }
    }
    Ok(())
}

fn print_line(json: &[u8], raw: bool) -> anyhow::Result<()> {
    if raw {
        sayln!("{}", String::from_utf8_lossy(json));
        return Ok(());
    }
    let line: LogLine = serde_json::from_slice(json).context("the API sent a line that is not a log line")?;
    sayln!("{}", format_line(&line));
    Ok(())
}

/// `2026-12-07T12:00:00.123Z cart-0a1b2c3d function  text`.
fn format_line(line: &LogLine) -> String {
    format!("{} {} {:<8} {}", line.at, line.instance, line.process, line.line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_says_when_and_where() {
        let line = LogLine::new("cart-0a1b2c3d", "function", 1_796_644_800_007, "added apple");
        assert_eq!(
            format_line(&line),
            "2026-12-07T12:00:00.007Z cart-0a1b2c3d function added apple"
        );
    }
}
