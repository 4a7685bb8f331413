//! What `deploy/` relies on from the binary: `strata crd` prints exactly the
//! CustomResourceDefinition that `deploy/` commits, the control plane refuses the
//! secret template's placeholders, and `strata render` prints what the operator
//! would apply.
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

/// Runs `strata render -` on `input`; (success, stdout, stderr).
fn render_stdin(input: &str, extra: &[&str]) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["render", "-"])
        .args(extra)
        .env_remove("STRATA_CLUSTER_SECRET")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run strata render");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `strata render -` reads stdin and prints a List; the credential is a
/// placeholder unless the cluster secret is given; a spec the operator would refuse
/// is refused with the operator's words.
#[test]
fn strata_render_prints_a_list_from_stdin_and_refuses_what_the_operator_would() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/shopping-cart.yaml"
    ))
    .unwrap();
    let (ok, printed, stderr) = render_stdin(&example, &[]);
    assert!(ok, "{stderr}");
    assert!(printed.starts_with("apiVersion: v1\nkind: List\nitems:\n"), "{printed}");
    for object in [
        "kind: Service",
        "kind: Secret",
        "kind: NetworkPolicy",
        "kind: Deployment",
        "image: strata-shopping-cart:0.1.0",
        "image: strata:0.1.0",
        "value: http://strata-control-plane.strata.svc:9200",
    ] {
        assert!(printed.contains(object), "{object} missing from:\n{printed}");
    }
    assert!(printed.contains("token: REPLACE-with-the-credential"), "{printed}");
    let (ok, with_secret, _) = render_stdin(&example, &["--cluster-secret", "s3cret"]);
    assert!(ok && !with_secret.contains("REPLACE-with-the-credential"));

    let reserved = example.replace("name: shopping-cart\n", "name: strata-gateway\n");
    let (ok, _, stderr) = render_stdin(&reserved, &[]);
    assert!(!ok);
    assert!(
        stderr.contains("StatefulService \"strata-gateway\" would not run: metadata.name \"strata-gateway\" is the name of one of Strata's own objects"),
        "{stderr}"
    );
}
