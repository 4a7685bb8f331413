//! `strata delete SERVICE [--yes]`: deletes a service (its instances stop; its
//! entities' state stays in the store), after asking unless `--yes`.

use std::io::{BufRead, Write};

use clap::Args;
use reqwest::Method;

use crate::api_client::ApiArgs;

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The service to delete.
    service: String,
    /// Do not ask first.
    #[arg(short, long)]
    yes: bool,
    #[command(flatten)]
    api: ApiArgs,
}

pub async fn run(args: DeleteArgs) -> anyhow::Result<()> {
    let api = args.api.client()?;
    // Read first, so a name that does not exist is said before anything is asked.
    api.call(Method::GET, &format!("/services/{}", args.service), None)
        .await?
        .success()?;
    if !args.yes && !confirmed(&args.service)? {
        anyhow::bail!("not deleted: {} was kept", args.service);
    }
    api.call(Method::DELETE, &format!("/services/{}", args.service), None)
        .await?
        .success()?;
    sayln!(
        "deleted {}; its instances stop, its entities' state stays in the store",
        args.service
    );
    Ok(())
}

/// Asks, and reads the answer from standard input (a terminal or a pipe); no
/// answer at all (nothing to read) keeps the service.
fn confirmed(service: &str) -> anyhow::Result<bool> {
    eprint!("delete the service {service} and stop its instances? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer)? == 0 {
        anyhow::bail!("not deleted: no answer was given; pass --yes to delete {service} without asking");
    }
    Ok(is_yes(&answer))
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yes_deletes() {
        assert!(is_yes("y\n"));
        assert!(is_yes(" YES "));
        assert!(!is_yes("\n"));
        assert!(!is_yes("no"));
        assert!(!is_yes("yes please"));
    }
}
