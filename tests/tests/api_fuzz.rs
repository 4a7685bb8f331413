//! The management API fuzzed from its own OpenAPI document by schemathesis against a
//! real `strata dev`: no answer is a 500, no process dies, every answer's status,
//! content type and body conform to the document. A bounded number of examples per
//! operation keeps it short; `STRATA_FUZZ_EXAMPLES` raises it for a long run.
//!
//! schemathesis comes from PyPI (`scripts/schemathesis.sh` prints its path); put that
//! path in `STRATA_TEST_SCHEMATHESIS`. Without it the test is skipped, unless
//! `STRATA_REQUIRE_SCHEMATHESIS=1` (`scripts/check` sets both), which makes it fail.

use std::{process::Command, time::Duration};

use strata_e2e::{
    dev::{start_dev, TOKEN},
    wait_for_port,
};

/// Checks that hold for any input. `positive_data_acceptance` and
/// `negative_data_rejection` are left out: the document does not (yet) carry every
/// rule of a valid name or scale, so they would report the API being stricter than
/// its document, not a fault.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

fn schemathesis() -> Option<String> {
    match std::env::var("STRATA_TEST_SCHEMATHESIS") {
        Ok(path) if !path.is_empty() => Some(path),
        _ => {
            assert!(
                std::env::var("STRATA_REQUIRE_SCHEMATHESIS").as_deref() != Ok("1"),
                "STRATA_REQUIRE_SCHEMATHESIS=1 but STRATA_TEST_SCHEMATHESIS is not set \
                 (run scripts/schemathesis.sh and put the path it prints there)"
            );
            eprintln!("skipping: STRATA_TEST_SCHEMATHESIS is not set (scripts/schemathesis.sh installs it)");
            None
        }
    }
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let examples = std::env::var("STRATA_FUZZ_EXAMPLES").unwrap_or_else(|_| "25".into());
    let mut dev = start_dev(tempfile::tempdir().unwrap(), &[]);
    assert!(wait_for_port(dev.api, Duration::from_secs(30)), "the API never opened");
    let report = dev.dir.path().join("schemathesis");
    let output = Command::new(&schemathesis)
        .arg("run")
        .arg(format!("http://127.0.0.1:{}/api/v1/openapi.json", dev.api))
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--checks", CHECKS])
        .args(["--max-examples", &examples])
        // The event stream never ends by design.
        .args(["--exclude-path", "/api/v1/events"])
        .args(["--seed", "1", "--generation-database", "none", "--workers", "1"])
        .args(["--request-timeout", "30"])
        .arg("--report-dir")
        .arg(&report)
        .env("NO_COLOR", "1")
        // Its cache (`.schemathesis/`) goes in the test's folder, not the repository.
        .current_dir(dev.dir.path())
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "schemathesis found faults:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!dev.process.exited(), "strata dev died under the fuzzing");
    assert!(
        stdout.contains("generated"),
        "schemathesis ran no test cases:\n{stdout}"
    );
}
