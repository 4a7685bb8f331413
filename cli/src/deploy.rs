//! `strata deploy`: registers a service (or updates an existing one) through the
//! management API. The local runtime runs its command; the autoscaler scales it.
//! Its setting flags are the service's settings (`strata-settings`), one flag each.
//! A deploy that changes what runs (the command, `--arg`s or `--env`) makes a new
//! revision (`strata revisions`); one that changes only settings does not.

use anyhow::Context;
use clap::Args;
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};
use strata_settings::{EnvVar, ServiceSettings};

use crate::api_client::ApiClient;

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The service name (a DNS-1123 label, e.g. "cart").
    name: String,
    /// The command that starts one instance of the function; it gets HOST and PORT.
    /// It runs in the directory strata dev was started in.
    #[arg(long)]
    command: String,
    /// An argument after the command, one word whatever it holds (repeatable). Given
    /// once or more, they replace the revision's arguments; not given, they are kept.
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    args: Vec<String>,
    /// A variable of the function's environment, NAME=VALUE (repeatable). Given once
    /// or more, they replace the revision's environment; not given, it is kept.
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = EnvVar::parse)]
    env: Vec<EnvVar>,
    #[command(flatten)]
    settings: ServiceSettings,
    /// Deploy the new revision as a canary serving this percentage of the traffic
    /// (1 to 99: the same entities on every call) beside the serving revision, rather
    /// than rolling out to it; `strata promote` or `strata rollback` finish it.
    #[arg(long, value_name = "PERCENT")]
    traffic: Option<u32>,
    #[command(flatten)]
    canary: crate::traffic::CanaryArgs,
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
    let mut fields = Map::new();
    fields.insert("command".into(), json!(args.command));
    if !args.args.is_empty() {
        fields.insert("args".into(), json!(args.args));
    }
    if !args.env.is_empty() {
        fields.insert("env".into(), json!(args.env));
    }
    // Only the settings given: a redeploy leaves the others as they are.
    if let Value::Object(settings) = serde_json::to_value(&args.settings)? {
        fields.extend(settings.into_iter().filter(|(_, value)| !value.is_null()));
    }
    let api = ApiClient::new(&args.api, args.token.clone(), &args.tls)?;
    if let Some(traffic) = args.traffic {
        // A canary beside the serving revision: only an update can make one.
        fields.insert("traffic".into(), json!(traffic));
        fields.extend(args.canary.fields());
        let path = format!("/services/{}", args.name);
        let answer = api.call(Method::PATCH, &path, Some(&Value::Object(fields))).await?;
        if answer.status == StatusCode::NOT_FOUND {
            anyhow::bail!(
                "service {:?} does not exist yet: deploy it without --traffic first (a canary serves beside a revision that serves)",
                args.name
            );
        }
        answer.success()?;
        let path = format!("/services/{}/revisions", args.name);
        let list = api.call(Method::GET, &path, None).await?.success()?;
        let list: crate::revisions::RevisionList =
            serde_json::from_value(list).context("the API's answer is not a revision list")?;
        sayln!("deployed {} as a canary", args.name);
        sayln!("{}", crate::traffic::split_line(&args.name, &list));
        return Ok(());
    }
    if !args.canary.fields().is_empty() {
        anyhow::bail!("--canary-max-error-rate, --canary-min-calls and --canary-window go with --traffic");
    }
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
    sayln!(
        "deployed {} (revision {}, desired {} instance(s))",
        args.name,
        body["revision"],
        body["desired_replicas"]
    );
    if let Some(rollout) = rollout(&api, &args.name).await {
        sayln!("{rollout}");
    }
    Ok(())
}

/// What a deploy that made a new revision set moving, in a sentence (`None` when
/// nothing is rolling out, or the API does not say).
async fn rollout(api: &ApiClient, name: &str) -> Option<String> {
    let path = format!("/services/{name}/revisions");
    let list = api.call(Method::GET, &path, None).await.ok()?.success().ok()?;
    let rollout = list.get("rollout")?;
    Some(format!(
        "rolling out: revision {} keeps serving until an instance of revision {} is ready, then its shards move over",
        rollout["from"], rollout["to"]
    ))
}
