//! What `deploy/` relies on from the binary: `strata crd` prints exactly the
//! CustomResourceDefinition that `deploy/` commits, and the control plane refuses the
//! secret template's placeholders.
//! When the `StatefulService` types change, regenerate the CRD:
//! `cargo run -p strata -- crd > deploy/crd/statefulservice.yaml`.

use std::process::Command;

#[test]
fn strata_crd_equals_the_committed_crd() {
    let output = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("crd")
        .output()
        .expect("run strata crd");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8(output.stdout).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crd/statefulservice.yaml");
    let committed = std::fs::read_to_string(path).expect("deploy/crd/statefulservice.yaml");
    if printed != committed {
        let (line, (ours, theirs)) = printed
            .lines()
            .zip(committed.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .unwrap_or((
                printed.lines().count().min(committed.lines().count()),
                ("(end)", "(end)"),
            ));
        panic!(
            "deploy/crd/statefulservice.yaml differs from `strata crd` at line {}:\n  strata crd: {ours}\n  committed:  {theirs}\n\
             regenerate it: cargo run -p strata -- crd > deploy/crd/statefulservice.yaml",
            line + 1
        );
    }
}

/// `deploy/secret.yaml` ships placeholders; a control plane refuses to start on them.
#[test]
fn the_control_plane_refuses_the_secret_templates_placeholders() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["control-plane", "--node-id", "1", "--bootstrap"])
        .args(["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("STRATA_CLUSTER_SECRET", "REPLACE-with-a-long-random-string")
        .env("STRATA_ADMIN_TOKEN", "a-real-token")
        .output()
        .expect("run strata control-plane");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("STRATA_CLUSTER_SECRET is still the placeholder from deploy/secret.yaml"),
        "{stderr}"
    );
}
