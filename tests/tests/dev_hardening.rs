//! `strata dev` at its edges: a deploy issued the moment the API port opens, and
//! what a user's function can see of Strata's secrets.

use std::{process::Command, time::Duration};

use strata_e2e::{
    binary,
    dev::{dev_command, Dev, TOKEN},
    free_port, wait_for_port, Process,
};

/// The README's run command waits for the API port and deploys at once; that
/// used to meet "the cluster has no leader right now" and fail. The CLI now
/// waits out a leaderless moment.
#[test]
fn a_deploy_right_after_start_succeeds() {
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let api = free_port();
        let _dev = Process::spawn("strata dev", dev_command(&dir, free_port(), api, &[]));
        assert!(wait_for_port(api, Duration::from_secs(30)), "the API never opened");
        let output = Command::new(binary("strata"))
            .args([
                "deploy",
                "cart",
                "--command",
                &binary("shopping-cart").display().to_string(),
            ])
            .args(["--api", &format!("http://127.0.0.1:{api}")])
            .env("STRATA_TOKEN", TOKEN)
            .output()
            .expect("strata deploy");
        assert!(
            output.status.success(),
            "round {round}: strata deploy failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        // `strata audit` shows the deploy: who, what, the outcome.
        let audit = Command::new(binary("strata"))
            .args(["audit", "--api", &format!("http://127.0.0.1:{api}")])
            .env("STRATA_TOKEN", TOKEN)
            .output()
            .expect("strata audit");
        let table = String::from_utf8_lossy(&audit.stdout);
        assert!(
            audit.status.success(),
            "strata audit failed: {}",
            String::from_utf8_lossy(&audit.stderr)
        );
        assert!(
            table.lines().any(|line| line.contains("admin token")
                && line.contains("POST")
                && line.contains("/api/v1/services")
                && line.trim_end().ends_with("201")),
            "round {round}: the deploy is not in the audit log:\n{table}"
        );
    }
}

/// A function runs user code: it must not inherit the admin token or any other
/// `STRATA_*` setting of the `strata dev` that started it.
#[tokio::test(flavor = "multi_thread")]
async fn functions_start_without_strata_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (gateway, api) = (free_port(), free_port());
    let mut command = dev_command(&dir, gateway, api, &[]);
    command
        .env("STRATA_TOKEN", TOKEN)
        .env("STRATA_CLUSTER_SECRET", "cluster-secret-from-the-environment");
    let process = Process::spawn("strata dev", command);
    assert!(wait_for_port(gateway, Duration::from_secs(30)));
    let env_file = dir.path().join("function-env.txt");
    let dev = Dev {
        dir,
        process,
        gateway,
        api,
    };
    let cart = binary("shopping-cart").display().to_string();
    dev.deploy_command(
        "cart",
        &format!("env > {}; exec {cart}", env_file.display()),
        &["--min-scale", "1"],
    );
    dev.until("the instance is ready", Duration::from_secs(30), |s| {
        s["ready_replicas"] == 1
    })
    .await;
    let env = std::fs::read_to_string(&env_file).expect("the function wrote its environment");
    assert!(
        env.lines().any(|l| l.starts_with("PORT=")),
        "the function gets its PORT: {env}"
    );
    let leaked: Vec<&str> = env.lines().filter(|l| l.starts_with("STRATA_")).collect();
    assert!(leaked.is_empty(), "Strata settings reached user code: {leaked:?}");
    assert!(!env.contains(TOKEN), "the admin token reached user code");

    // The sidecar that registered this ready instance holds its own credential only.
    let sidecar = dev.sidecars().into_iter().next().expect("a running sidecar").pid;
    let environ = std::fs::read(format!("/proc/{sidecar}/environ")).expect("the sidecar's environment");
    let sidecar_env: Vec<String> = environ
        .split(|byte| *byte == 0)
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect();
    let token = sidecar_env
        .iter()
        .find_map(|entry| entry.strip_prefix("STRATA_TOKEN="))
        .expect("the sidecar has a credential");
    assert!(
        token.starts_with("strata-instance.v1."),
        "the sidecar holds something other than an instance credential"
    );
    let joined = sidecar_env.join("\n");
    assert!(!joined.contains(TOKEN), "the admin token reached the sidecar");
    assert!(
        !joined.contains("cluster-secret-from-the-environment"),
        "the cluster secret reached the sidecar"
    );
}
