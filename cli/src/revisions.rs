//! `strata revisions NAME`: a service's revisions, newest first, the serving one
//! marked, read from the management API (`GET /services/{name}/revisions`).

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use strata_control_plane::logs::rfc3339_ms;
use strata_settings::RevisionSpec;

use crate::api_client::ApiClient;

#[derive(Args)]
pub struct RevisionsArgs {
    /// The service.
    name: String,
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
pub(crate) struct RevisionList {
    pub serving: u64,
    /// A revision serving a slice of the traffic beside the serving one.
    #[serde(default)]
    pub canary: Option<Canary>,
    pub revisions: Vec<Revision>,
}

#[derive(Deserialize)]
pub(crate) struct Canary {
    pub revision: u64,
    pub percent: u32,
    pub shards: u32,
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    #[serde(default)]
    pub max_p99_ratio: Option<f64>,
}

#[derive(Deserialize)]
pub(crate) struct Revision {
    number: u64,
    serving: bool,
    #[serde(flatten)]
    spec: RevisionSpec,
    created_at_ms: u64,
    created_by: String,
    /// Why its rollout stopped.
    #[serde(default)]
    failure: Option<String>,
}

pub async fn run(args: RevisionsArgs) -> anyhow::Result<()> {
    let api = ApiClient::new(&args.api, args.token.clone(), &args.tls)?;
    let path = format!("/services/{}/revisions", args.name);
    let body = api.call(reqwest::Method::GET, &path, None).await?.success()?;
    if args.json {
        sayln!("{body}");
        return Ok(());
    }
    let list: RevisionList = serde_json::from_value(body).context("the API's answer is not a revision list")?;
    if list.canary.is_some() {
        sayln!("{}", crate::traffic::split_line(&args.name, &list));
    }
    say!("{}", table(&list));
    Ok(())
}

pub(crate) fn table(list: &RevisionList) -> String {
    let mut out = format!(
        "{:<9} {:<8} {:<24} {:<20} {}\n",
        "REVISION", "SERVING", "CREATED", "BY", "RUNS"
    );
    let canary = list
        .canary
        .as_ref()
        .map(|canary| (canary.revision, format!("{}%", canary.percent)));
    for revision in &list.revisions {
        out.push_str(&format!(
            "{:<9} {:<8} {:<24} {:<20} {}\n",
            revision.number,
            match (revision.serving, &revision.failure, &canary) {
                (true, _, _) => "*",
                (false, _, Some((number, share))) if *number == revision.number => share.as_str(),
                (false, Some(_), _) => "failed",
                (false, None, _) => "",
            },
            utc(revision.created_at_ms),
            revision.created_by,
            runs(&revision.spec)
        ));
        if let Some(failure) = &revision.failure {
            out.push_str(&format!("{:<9} it failed: {failure}\n", ""));
        }
    }
    out
}

/// A time in milliseconds since the Unix epoch as UTC to the second, e.g.
/// `2026-12-07T13:00:38Z`.
pub(crate) fn utc(ms: u64) -> String {
    let to_the_milli = rfc3339_ms(ms);
    format!("{}Z", &to_the_milli[..19])
}

/// What a revision runs, on one line: the command or image, its arguments, its
/// environment.
fn runs(spec: &RevisionSpec) -> String {
    let mut words: Vec<String> = spec.command.iter().chain(&spec.image).cloned().collect();
    words.extend(spec.args.iter().flatten().map(|arg| format!("{arg:?}")));
    words.extend(
        spec.env
            .iter()
            .flatten()
            .map(|var| format!("{}={:?}", var.name, var.value)),
    );
    words.extend(spec.template.iter().map(|digest| format!("(pod template {digest})")));
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use strata_settings::EnvVar;

    use super::*;

    #[test]
    fn times_read_as_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_796_648_438_000), "2026-12-07T13:00:38Z");
        assert_eq!(utc(951_825_600_000), "2000-02-29T12:00:00Z");
    }

    #[test]
    fn the_table_marks_the_serving_revision_and_says_what_each_runs() {
        let revisions = [
            Revision {
                number: 2,
                serving: true,
                spec: RevisionSpec {
                    args: Some(vec!["--fast".into()]),
                    env: Some(vec![EnvVar::new("LABEL", "two")]),
                    ..RevisionSpec::command("./cart")
                },
                created_at_ms: 1_000,
                created_by: "admin token".into(),
                failure: None,
            },
            Revision {
                number: 1,
                serving: false,
                spec: RevisionSpec::command("./cart"),
                created_at_ms: 0,
                created_by: "admin token".into(),
                failure: None,
            },
        ];
        let table = table(&RevisionList {
            serving: 2,
            canary: None,
            revisions: revisions.into(),
        });
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].starts_with("2         *        1970-01-01T00:00:01Z"),
            "{table}"
        );
        assert!(
            lines[1].ends_with("admin token          ./cart \"--fast\" LABEL=\"two\""),
            "{table}"
        );
        assert!(lines[2].starts_with("1                 "), "{table}");
    }
}
