//! `strata render FILE|-`: prints every object the operator would apply for the
//! `StatefulService`s of a file (or stdin) as one `List` in YAML, rendered by the
//! operator's own code (`strata_runtime::kubernetes::render`), to review, diff, or
//! apply by hand. Other documents in the file (a store Secret beside it) are skipped.

use std::io::Read;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::Value;
use strata_control_plane::auth::ClusterSecret;
use strata_runtime::kubernetes::{
    objects::{OperatorSettings, CREDENTIAL_KEY},
    render::render_list,
};

/// What the credential Secret holds when no cluster secret is given.
pub const CREDENTIAL_PLACEHOLDER: &str =
    "REPLACE-with-the-credential-the-control-plane-derives (render with --cluster-secret)";

#[derive(Args, Debug)]
pub struct RenderArgs {
    /// A YAML file holding StatefulServices, or `-` for stdin.
    file: String,
    /// The namespace of resources that name none: the operator's (`deploy/` installs into `strata`).
    #[arg(long, default_value = "strata")]
    namespace: String,
    /// The sidecar image, as the control plane's --sidecar-image.
    #[arg(long, env = "STRATA_SIDECAR_IMAGE", default_value = concat!("strata:", env!("CARGO_PKG_VERSION")))]
    sidecar_image: String,
    /// Where sidecars reach the control plane, as its --sidecar-control-plane
    /// (default: `deploy/`'s, http://strata-control-plane.NAMESPACE.svc:9200).
    #[arg(long, env = "STRATA_SIDECAR_CONTROL_PLANE")]
    sidecar_control_plane: Option<String>,
    /// The cluster secret, to print the sidecars' real credential; without it the
    /// credential Secret holds a placeholder.
    #[arg(long, env = "STRATA_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// As the control plane's --ready-timeout (it sizes the sidecar's startup budget).
    #[arg(long, default_value = "120s", value_parser = crate::duration::parse)]
    ready_timeout: Duration,
}

pub fn run(args: RenderArgs) -> anyhow::Result<()> {
    let input = if args.file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("read stdin")?;
        text
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("read {}", args.file))?
    };
    let cluster_secret = args.cluster_secret.filter(|secret| !secret.is_empty());
    let settings = OperatorSettings {
        control_plane_url: args
            .sidecar_control_plane
            .unwrap_or_else(|| format!("http://strata-control-plane.{}.svc:9200", args.namespace)),
        namespace: args.namespace,
        sidecar_image: args.sidecar_image,
        cluster_secret: ClusterSecret::new(cluster_secret.clone().unwrap_or_default()),
        ready_timeout: args.ready_timeout,
    };
    let mut list = render_list(&input, &settings)?;
    if cluster_secret.is_none() {
        for item in list["items"].as_array_mut().into_iter().flatten() {
            if item["kind"] == "Secret" {
                item["stringData"][CREDENTIAL_KEY] = Value::from(CREDENTIAL_PLACEHOLDER);
            }
        }
    }
    say!("{}", serde_yaml::to_string(&list).context("write YAML")?);
    Ok(())
}
