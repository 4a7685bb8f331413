//! `strata crd`: prints the `StatefulService` CustomResourceDefinition that
//! `deploy/crd/statefulservice.yaml` commits (`strata crd > deploy/crd/statefulservice.yaml`).

use clap::Args;

#[derive(Args, Debug)]
pub struct CrdArgs {}

pub fn run(_args: CrdArgs) -> anyhow::Result<()> {
    say!("{}", strata_runtime::kubernetes::crd::crd_yaml());
    Ok(())
}
