//! `strata-tck`: runs the conformance kit against a user function (by default
//! `tck-model`, strata-sdk's implementation of the model services, started here).
//! It starts the interceptor in front of the function and a `strata proxy` (on a
//! fresh SQLite store) talking to the interceptor, takes the proxy's discovery,
//! runs every case, and ends with the line `N passed, M failed, P pending`. Exits
//! non-zero if a case failed, or if one is pending (the function does not serve
//! what it needs) unless `--allow-pending` is given: a model that lost a service
//! must not pass.

use std::{net::SocketAddr, path::PathBuf, process::Stdio, time::Duration};

use anyhow::{bail, Context};
use clap::Parser;
use strata_tck::{cases, intercept::Interceptor, kit};

#[derive(Parser)]
#[command(
    name = "strata-tck",
    about = "Strata's conformance kit for CloudState user functions"
)]
struct Args {
    /// The user function under test; without it, `tck-model` (beside this
    /// binary) is started and tested.
    #[arg(long, value_name = "HOST:PORT")]
    function: Option<String>,
    /// The `strata` binary to run as the proxy (default: the one beside this binary).
    #[arg(long)]
    strata: Option<PathBuf>,
    /// Run only the cases whose name or section contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// Show the proxy's log.
    #[arg(long)]
    verbose: bool,
    /// Pass even when cases are pending (the function does not serve what they
    /// need), as when testing a function that implements only some of the
    /// model's services; without it a pending case fails the run.
    #[arg(long)]
    allow_pending: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let allow_pending = args.allow_pending;
    match run(args).await {
        Ok(summary) if summary.passes(allow_pending) => {}
        Ok(summary) => {
            if summary.failed == 0 {
                eprintln!(
                    "strata-tck: {} cases pending: the function does not serve what they need \
                     (--allow-pending accepts that)",
                    summary.pending
                );
            }
            std::process::exit(1)
        }
        Err(error) => {
            eprintln!("strata-tck: {error:#}");
            std::process::exit(2);
        }
    }
}

async fn run(args: Args) -> anyhow::Result<kit::Summary> {
    let beside = |name: &str| -> anyhow::Result<PathBuf> {
        let path = std::env::current_exe()?
            .parent()
            .context("the kit's binary has no folder")?
            .join(name);
        anyhow::ensure!(path.exists(), "{} is missing: build it first", path.display());
        Ok(path)
    };
    let strata = match args.strata {
        Some(path) => path,
        None => beside("strata")?,
    };
    // The model function, unless another one was named.
    let mut _model = None;
    let function = match &args.function {
        Some(function) => function.clone(),
        None => {
            let port = strata_ports::free_loopback_port()?;
            let mut command = tokio::process::Command::new(beside("tck-model")?);
            command
                .env("HOST", "127.0.0.1")
                .env("PORT", port.to_string())
                .stdin(Stdio::null())
                .kill_on_drop(true);
            if !args.verbose {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
            _model = Some(command.spawn().context("cannot start tck-model")?);
            format!("127.0.0.1:{port}")
        }
    };
    let function: SocketAddr = tokio::net::lookup_host(&function)
        .await
        .with_context(|| format!("cannot resolve the function's address {function}"))?
        .next()
        .with_context(|| format!("{function} resolves to no address"))?;

    // --- the interceptor in front of the function, the proxy in front of both
    let interceptor = Interceptor::start(function).await?;
    let store = tempfile::tempdir()?;
    let store_url = format!("sqlite://{}", store.path().join("tck.db").display());
    let http_port = strata_ports::free_loopback_port()?;
    let mut command = tokio::process::Command::new(&strata);
    command
        .arg("proxy")
        .env("USER_FUNCTION_HOST", "127.0.0.1")
        .env("USER_FUNCTION_PORT", interceptor.address.port().to_string())
        .env("HTTP_PORT", http_port.to_string())
        .env("STRATA_STORE", &store_url)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if !args.verbose {
        command.stdout(Stdio::null()).stderr(Stdio::null());
    }
    let mut proxy = command
        .spawn()
        .with_context(|| format!("cannot start {}", strata.display()))?;

    // --- discovery, as the proxy does it at start (retrying while the function
    // comes up)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (info, spec) = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let discovery = interceptor
            .discovery(left)
            .await
            .map_err(|e| anyhow::anyhow!("{e} (is the function up at {function}?)"))?;
        match discovery.spec {
            Ok(spec) => break (discovery.info, spec),
            Err(status) if status.starts_with("Unavailable") => continue,
            Err(status) => bail!("the function refused discovery: {status}"),
        }
    };
    let proxy_address = SocketAddr::from(([127, 0, 0, 1], http_port));
    wait_until_serving(&mut proxy, proxy_address).await?;
    println!(
        "strata-tck: function {function} ({} services), proxy {proxy_address}",
        spec.entities.len()
    );

    let function_channel = tonic::transport::Endpoint::from_shared(format!("http://{function}"))?.connect_lazy();
    let store = strata_store::open(&store_url)
        .await
        .with_context(|| format!("cannot open the proxy's store {store_url}"))?;
    let kit = kit::Kit::new(proxy_address, function_channel, interceptor, info, spec, store)?;
    let summary = kit::run_all(&kit, &cases::all(), &cases::pending(), args.filter.as_deref()).await;
    println!("{}", summary.line());
    let _ = proxy.kill().await;
    Ok(summary)
}

/// Waits until the proxy accepts connections; fails if it exits first.
async fn wait_until_serving(proxy: &mut tokio::process::Child, address: SocketAddr) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = proxy.try_wait()? {
            bail!("the proxy exited ({status}) before serving; run with --verbose to see why");
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the proxy did not serve on {address} within 30s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
