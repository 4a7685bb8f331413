//! `strata crd` prints exactly the CustomResourceDefinition that `deploy/` commits.
//! When the `StatefulService` types change, regenerate it:
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
