//! `deploy/` checked without a cluster: `kubectl kustomize deploy/` renders (the real
//! kubectl), and everything it renders, every example in `deploy/examples/`, and
//! what `strata render deploy/examples/shopping-cart.yaml` prints (the objects the
//! operator applies for the example) validate (`scripts/validate-manifests.py`):
//! built-in kinds against the Kubernetes 1.33 OpenAPI schemas, the example
//! `StatefulService` against the committed CRD's own schema, unknown fields refused.
//! The tools come from `scripts/k8s-tools.sh`, whose python goes in
//! `STRATA_TEST_K8S_PYTHON` (kubectl beside it). Without it the test is skipped,
//! unless `STRATA_REQUIRE_K8S_TOOLS=1` (`scripts/check` sets both, and builds the
//! `strata` binary first).

use serde::Deserialize;
use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tools() -> Option<(PathBuf, PathBuf)> {
    match std::env::var_os("STRATA_TEST_K8S_PYTHON") {
        Some(python) if !python.is_empty() => {
            let python = PathBuf::from(python);
            let kubectl = python.with_file_name("kubectl");
            Some((python, kubectl))
        }
        _ => {
            assert!(
                std::env::var("STRATA_REQUIRE_K8S_TOOLS").as_deref() != Ok("1"),
                "STRATA_REQUIRE_K8S_TOOLS=1 but STRATA_TEST_K8S_PYTHON is not set \
                 (it is the python that scripts/k8s-tools.sh prints)"
            );
            eprintln!(
                "skipping the manifest checks: STRATA_TEST_K8S_PYTHON is not set; \
                 STRATA_TEST_K8S_PYTHON=$(scripts/k8s-tools.sh | tail -n 1) sets it"
            );
            None
        }
    }
}

fn kustomize(kubectl: &Path) -> String {
    let output = Command::new(kubectl)
        .args(["kustomize", "deploy/"])
        .current_dir(repository())
        .output()
        .expect("run kubectl kustomize");
    assert!(
        output.status.success(),
        "kubectl kustomize deploy/ failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs the validator over the rendered stream (stdin) and `files`.
fn validate(python: &Path, rendered: &str, files: &[PathBuf]) -> (bool, String) {
    let mut child = Command::new(python)
        .arg("scripts/validate-manifests.py")
        .args(["--kubernetes-version", "1.33", "-"])
        .args(files)
        .current_dir(repository())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/validate-manifests.py");
    child.stdin.take().unwrap().write_all(rendered.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repository().join("deploy/examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// The `strata` binary of this build (`cargo build --workspace --bins` made it).
fn strata() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    let strata = profile.join("strata");
    assert!(
        strata.exists(),
        "{} is missing: cargo build --workspace --bins",
        strata.display()
    );
    strata
}

/// `strata render deploy/examples/shopping-cart.yaml`, as a file to validate.
fn render_example(dir: &Path) -> PathBuf {
    let output = Command::new(strata())
        .args(["render", "deploy/examples/shopping-cart.yaml"])
        .current_dir(repository())
        .output()
        .expect("run strata render");
    assert!(
        output.status.success(),
        "strata render failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let file = dir.join("shopping-cart-rendered.yaml");
    std::fs::write(&file, output.stdout).unwrap();
    file
}

#[test]
fn the_kustomization_renders_and_everything_validates() {
    let Some((python, kubectl)) = tools() else { return };
    let rendered = kustomize(&kubectl);
    let dir = tempfile::tempdir().unwrap();
    let mut files = examples();
    files.push(render_example(dir.path()));
    let (valid, report) = validate(&python, &rendered, &files);
    assert!(valid, "{report}");
    // What the operator applies for the example, each object valid.
    for object in [
        "shopping-cart-rendered.yaml: Service/shopping-cart",
        "shopping-cart-rendered.yaml: Secret/shopping-cart-strata-credential",
        "shopping-cart-rendered.yaml: NetworkPolicy/shopping-cart",
        "shopping-cart-rendered.yaml: Deployment/shopping-cart",
    ] {
        assert!(report.contains(object), "{object} missing from:\n{report}");
    }
    // Everything a user gets, each checked once.
    for object in [
        "ok   -: Namespace/strata",
        "ok   -: CustomResourceDefinition/statefulservices.strata.dev",
        "ok   -: ServiceAccount/strata-control-plane",
        "ok   -: ServiceAccount/strata-gateway",
        "ok   -: Role/strata-control-plane",
        "ok   -: RoleBinding/strata-control-plane",
        "ok   -: ClusterRole/strata-control-plane-statefulservices",
        "ok   -: ClusterRoleBinding/strata-control-plane-statefulservices",
        "ok   -: Secret/strata",
        "ok   -: Service/strata-control-plane-peers",
        "ok   -: Service/strata-control-plane",
        "ok   -: StatefulSet/strata-control-plane",
        "ok   -: PodDisruptionBudget/strata-control-plane",
        "ok   -: Deployment/strata-gateway",
        "ok   -: Service/strata-gateway",
        "ok   -: PodDisruptionBudget/strata-gateway",
    ] {
        assert!(report.contains(object), "{object} missing from:\n{report}");
    }
    assert!(report.contains("StatefulService/shopping-cart"), "{report}");
    // The sidecar image follows the control plane's image.
    assert!(
        rendered.contains("- name: STRATA_SIDECAR_IMAGE\n          value: strata:0.1.0"),
        "{rendered}"
    );
}

#[test]
fn the_validator_refuses_what_the_api_server_would() {
    let Some((python, kubectl)) = tools() else { return };
    let crd = kustomize(&kubectl);
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // A typo in a field of the custom resource.
        (
            "apiVersion: strata.dev/v1alpha1\nkind: StatefulService\nmetadata: {name: cart}\nspec: {image: cart, minScal: 1}\n",
            "Additional properties are not allowed ('minScal' was unexpected)",
        ),
        // A wrong type in the custom resource.
        (
            "apiVersion: strata.dev/v1alpha1\nkind: StatefulService\nmetadata: {name: cart}\nspec: {image: cart, maxScale: many}\n",
            "is not of type",
        ),
        // A wrong field in a built-in kind.
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{prot: 80}]}\n",
            "FAIL",
        ),
        // A kind nobody defines.
        (
            "apiVersion: example.dev/v1\nkind: Mystery\nmetadata: {name: m}\n",
            "Couldn't find schema",
        ),
    ];
    for (index, (manifest, expected)) in cases.into_iter().enumerate() {
        let file = dir.path().join(format!("bad-{index}.yaml"));
        std::fs::write(&file, manifest).unwrap();
        let (valid, report) = validate(&python, &crd, &[file]);
        assert!(!valid, "accepted:\n{manifest}\n{report}");
        assert!(report.contains(expected), "{expected:?} not in:\n{report}");
    }
}

/// A `StatefulService` named like one of `deploy/`'s objects would take it over:
/// every name `deploy/` and its examples give a Service, Secret, Deployment or
/// StatefulSet is one the operator refuses.
#[test]
fn every_name_deploy_uses_is_reserved() {
    let Some((_, kubectl)) = tools() else { return };
    let mut text = kustomize(&kubectl);
    text.push_str("\n---\n");
    text.push_str(&std::fs::read_to_string(repository().join("deploy/examples/postgres.yaml")).unwrap());
    let mut names = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(document).unwrap();
        let kind = value["kind"].as_str().unwrap_or_default();
        if ["Service", "Secret", "Deployment", "StatefulSet"].contains(&kind) {
            names.push(value["metadata"]["name"].as_str().unwrap().to_owned());
        }
    }
    assert!(names.len() >= 6, "{names:?}");
    for name in names {
        assert!(
            strata_runtime::kubernetes::names::RESERVED_NAMES.contains(&name.as_str()),
            "{name} is not in RESERVED_NAMES"
        );
    }
}
