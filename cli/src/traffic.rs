//! Canaries from the command line. `strata traffic NAME REV=PERCENT` gives a kept
//! revision that share of the traffic beside the serving one (the same entities on
//! every call; `REV=100` promotes it, `REV=0` ends it; `OLD=90 NEW=10` says the same
//! with the serving revision named, and must add up to 100); `strata promote NAME`
//! makes the canary the serving revision. `strata deploy --traffic N` deploys a new
//! revision as a canary, and the analysis flags here ([`CanaryArgs`]) let the
//! control plane roll a failing canary back on its own.

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Map, Value};

use crate::api_client::ApiArgs;
use crate::revisions::{table, RevisionList};

/// Automatic analysis of a canary.
#[derive(Args, Debug, Default, Clone)]
pub struct CanaryArgs {
    /// Roll the canary back on its own when its error rate (server errors) over the
    /// window exceeds this and the serving revision's: a fraction (0.05) or "5%".
    #[arg(long, value_name = "RATE")]
    pub canary_max_error_rate: Option<String>,
    /// Calls the canary must answer in the window before it is judged (default 20).
    #[arg(long, value_name = "N")]
    pub canary_min_calls: Option<u32>,
    /// The window the canary is judged over (default 60s).
    #[arg(long, value_name = "DURATION")]
    pub canary_window: Option<String>,
    /// Also roll the canary back when its p99 latency over the window is above this
    /// many times the serving revision's (e.g. 1.5), and at least 5 ms slower.
    #[arg(long, value_name = "RATIO")]
    pub canary_max_p99_ratio: Option<f64>,
}

impl CanaryArgs {
    /// The API's fields for what was given.
    pub fn fields(&self) -> Map<String, Value> {
        let mut fields = Map::new();
        if let Some(rate) = &self.canary_max_error_rate {
            fields.insert("canary_max_error_rate".into(), json!(rate));
        }
        if let Some(calls) = self.canary_min_calls {
            fields.insert("canary_min_calls".into(), json!(calls));
        }
        if let Some(window) = &self.canary_window {
            fields.insert("canary_window".into(), json!(window));
        }
        if let Some(ratio) = self.canary_max_p99_ratio {
            fields.insert("canary_max_p99_ratio".into(), json!(ratio));
        }
        fields
    }
}

#[derive(Args)]
pub struct TrafficArgs {
    /// The service.
    name: String,
    /// REVISION=PERCENT, once (the canary) or twice (the serving revision and the
    /// canary, adding up to 100).
    #[arg(value_name = "REVISION=PERCENT", required = true, num_args = 1..=2, value_parser = parse_share)]
    split: Vec<(u64, u32)>,
    #[command(flatten)]
    analysis: CanaryArgs,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Args)]
pub struct PromoteArgs {
    /// The service.
    name: String,
    #[command(flatten)]
    api: ApiArgs,
}

fn parse_share(text: &str) -> Result<(u64, u32), String> {
    let (revision, percent) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not REVISION=PERCENT (for example 3=10)"))?;
    let revision = revision
        .trim()
        .parse()
        .map_err(|_| format!("{revision:?} is not a revision number"))?;
    let percent = percent.trim().trim_end_matches('%');
    let percent: u32 = percent
        .parse()
        .map_err(|_| format!("{percent:?} is not a percentage from 0 to 100"))?;
    if percent > 100 {
        return Err(format!("{percent}% is more than all the traffic"));
    }
    Ok((revision, percent))
}

/// The canary and its share from a split, given the serving revision: one entry
/// is the canary's; two name the serving revision and the canary, adding up to 100.
fn canary_of(split: &[(u64, u32)], serving: u64) -> anyhow::Result<(u64, u32)> {
    match split {
        [one] => Ok(*one),
        [first, second] => {
            if first.1 + second.1 != 100 {
                bail!(
                    "the split does not add up: {}% + {}% is {}%, not 100%",
                    first.1,
                    second.1,
                    first.1 + second.1
                );
            }
            match (first.0 == serving, second.0 == serving) {
                (true, false) => Ok(*second),
                (false, true) => Ok(*first),
                _ => bail!(
                    "a split of two names the serving revision ({serving}) and one other, not {} and {}",
                    first.0,
                    second.0
                ),
            }
        }
        _ => bail!("give REVISION=PERCENT once or twice"),
    }
}

pub async fn traffic(args: TrafficArgs) -> anyhow::Result<()> {
    let api = args.api.client()?;
    let serving = if args.split.len() == 2 {
        let path = format!("/services/{}/revisions", args.name);
        let body = api.call(reqwest::Method::GET, &path, None).await?.success()?;
        let list: RevisionList = serde_json::from_value(body).context("the API's answer is not a revision list")?;
        list.serving
    } else {
        0
    };
    let (revision, percent) = canary_of(&args.split, serving)?;
    let mut body = args.analysis.fields();
    body.insert("revision".into(), json!(revision));
    body.insert("percent".into(), json!(percent));
    let path = format!("/services/{}/traffic", args.name);
    let answer = api
        .call(reqwest::Method::POST, &path, Some(&Value::Object(body)))
        .await?
        .success()?;
    let list: RevisionList = serde_json::from_value(answer).context("the API's answer is not a revision list")?;
    sayln!("{}", split_line(&args.name, &list));
    say!("{}", table(&list));
    Ok(())
}

pub async fn promote(args: PromoteArgs) -> anyhow::Result<()> {
    let api = args.api.client()?;
    let path = format!("/services/{}/promote", args.name);
    let answer = api.call(reqwest::Method::POST, &path, None).await?.success()?;
    let list: RevisionList = serde_json::from_value(answer).context("the API's answer is not a revision list")?;
    sayln!(
        "{} now serves revision {} everywhere; the other shards move to it and the old instances stop",
        args.name,
        list.serving
    );
    say!("{}", table(&list));
    Ok(())
}

/// The split in a sentence.
pub(crate) fn split_line(name: &str, list: &RevisionList) -> String {
    match &list.canary {
        Some(canary) => format!(
            "{name}: revision {} serves {}% of the traffic ({} shard(s)), revision {} the rest{}",
            canary.revision,
            canary.percent,
            canary.shards,
            list.serving,
            canary.max_error_rate.map_or(String::new(), |rate| format!(
                "; rolled back on its own above {:.1}% errors{}",
                rate * 100.0,
                canary.max_p99_ratio.map_or(String::new(), |ratio| format!(
                    " or a p99 above {ratio} times revision {}'s",
                    list.serving
                ))
            ))
        ),
        None => format!("{name}: revision {} serves all the traffic", list.serving),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_names_the_canary_once_or_beside_the_serving_revision_and_adds_up() {
        assert_eq!(parse_share("3=10"), Ok((3, 10)));
        assert_eq!(parse_share("3=10%"), Ok((3, 10)));
        assert!(parse_share("3").unwrap_err().contains("REVISION=PERCENT"));
        assert!(parse_share("3=150").unwrap_err().contains("more than all"));
        assert_eq!(canary_of(&[(3, 25)], 2).unwrap(), (3, 25));
        assert_eq!(canary_of(&[(2, 75), (3, 25)], 2).unwrap(), (3, 25));
        assert_eq!(canary_of(&[(3, 25), (2, 75)], 2).unwrap(), (3, 25));
        let error = canary_of(&[(2, 70), (3, 25)], 2).unwrap_err().to_string();
        assert!(error.contains("does not add up: 70% + 25% is 95%"), "{error}");
        let error = canary_of(&[(4, 75), (3, 25)], 2).unwrap_err().to_string();
        assert!(error.contains("names the serving revision (2)"), "{error}");
    }
}
