//! Revisions through `strata dev` and the CLI: each deploy that changes what runs
//! (the command, `--arg`s, `--env`) is a new numbered revision that `strata
//! revisions` lists with the serving one marked; a change of settings alone is not.
//! The local runtime starts instances with the serving revision's arguments and
//! environment: a deploy rolls the running service over to the new revision (its
//! own test under load is `rollouts.rs`). Bad input is a clear 4xx that changes
//! nothing.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use strata_e2e::binary;
use strata_e2e::dev::{add, start_dev, write_script, Dev, TOKEN};

/// A cart that first writes what it was started with (its pid, `$LABEL` and its
/// arguments) to `started-<pid>` in the working directory, then becomes the cart.
const WRAPPER: &str = "run-cart.sh";

fn write_wrapper(dir: &Path) {
    let body = format!(
        "printf '%s\\n' \"$$\" \"$LABEL\" \"$@\" > \"started-$$.tmp\" && mv \"started-$$.tmp\" \"started-$$\"\nexec {}\n",
        binary("shopping-cart").display()
    );
    write_script(dir, WRAPPER, &body);
}

/// What each instance started so far was started with: (pid, LABEL, arguments).
fn starts(dir: &Path) -> Vec<(u32, String, Vec<String>)> {
    let mut starts: Vec<(u32, String, Vec<String>)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.starts_with("started-") && !name.ends_with(".tmp")
        })
        .map(|entry| {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let mut lines = text.lines().map(str::to_owned);
            let pid = lines.next().and_then(|pid| pid.parse().ok()).expect("a pid");
            let label = lines.next().unwrap_or_default();
            (pid, label, lines.collect())
        })
        .collect();
    starts.sort();
    starts
}

fn strata(dev: &Dev, args: &[&str]) -> std::process::Output {
    dev.cli(args)
}

fn succeeded(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "strata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: never happened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploys_that_change_what_runs_are_revisions_and_new_instances_run_the_serving_one() {
    let dir = tempfile::tempdir().unwrap();
    write_wrapper(dir.path());
    let dev = start_dev(dir, &[]);
    let http = reqwest::Client::new();
    let work = dev.dir.path().to_path_buf();

    // --- revision 1: the wrapper with an argument of two words and LABEL=one
    let deployed = succeeded(&strata(
        &dev,
        &[
            "deploy",
            "cart",
            "--command",
            &format!("./{WRAPPER}"),
            "--arg",
            "two words",
            "--env",
            "LABEL=one",
            "--min-scale",
            "1",
            "--max-scale",
            "1",
        ],
    ));
    assert!(deployed.contains("(revision 1,"), "{deployed}");
    let response = add(&http, &dev, "ann", 1).await;
    assert!(response.status().is_success(), "{}", response.status());
    let first = starts(&work);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(
        (first[0].1.as_str(), first[0].2.clone()),
        ("one", vec!["two words".to_owned()]),
        "the instance runs revision 1's environment and arguments"
    );

    // --- revision 2: a new environment; the command and arguments are kept
    let deployed = succeeded(&strata(
        &dev,
        &[
            "deploy",
            "cart",
            "--command",
            &format!("./{WRAPPER}"),
            "--env",
            "LABEL=two",
        ],
    ));
    assert!(deployed.contains("(revision 2,"), "{deployed}");
    // --- settings alone: no revision 3
    let deployed = succeeded(&strata(
        &dev,
        &[
            "deploy",
            "cart",
            "--command",
            &format!("./{WRAPPER}"),
            "--max-scale",
            "2",
        ],
    ));
    assert!(deployed.contains("(revision 2,"), "{deployed}");

    let list = dev.api("/services/cart/revisions").await;
    assert_eq!((&list["serving"], &list["revision_history"]), (&json!(2), &json!(20)));
    let revisions = list["revisions"].as_array().expect("revisions");
    let numbers: Vec<&Value> = revisions.iter().map(|r| &r["number"]).collect();
    assert_eq!(numbers, [&json!(2), &json!(1)], "newest first: {list}");
    assert_eq!(
        (&revisions[0]["serving"], &revisions[0]["env"], &revisions[0]["args"]),
        (
            &json!(true),
            &json!([{"name": "LABEL", "value": "two"}]),
            &json!(["two words"])
        )
    );
    assert_eq!(
        (&revisions[1]["serving"], &revisions[1]["env"]),
        (&json!(false), &json!([{"name": "LABEL", "value": "one"}]))
    );
    let by = revisions[0]["created_by"].as_str().expect("who deployed it");
    assert!(!by.is_empty() && by != "the control plane", "the API's principal: {by}");

    let table = succeeded(&strata(&dev, &["revisions", "cart"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("REVISION"), "{table}");
    assert!(lines[1].starts_with("2         *"), "{table}");
    assert!(lines[1].contains("LABEL=\"two\""), "{table}");
    assert!(lines[2].starts_with("1          "), "{table}");

    // --- the deploy rolled the service over: an instance of revision 2 started,
    // took the shards, and the one of revision 1 stopped
    wait_for("an instance of revision 2 started", Duration::from_secs(60), || {
        starts(&work).len() >= 2
    })
    .await;
    let replacement = starts(&work).into_iter().find(|start| start.0 != first[0].0).unwrap();
    assert_eq!(
        (replacement.1.as_str(), replacement.2.clone()),
        ("two", vec!["two words".to_owned()]),
        "the new instance runs the serving revision"
    );
    let old = first[0].0;
    wait_for("the instance of revision 1 stopped", Duration::from_secs(60), || {
        !Path::new(&format!("/proc/{old}")).exists()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = add(&http, &dev, "ann", 1).await;
        if response.status().is_success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cart never came back: {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // --- bad input: a clear 4xx, and nothing changes
    let refused = http
        .patch(format!("http://127.0.0.1:{}/api/v1/services/cart", dev.api))
        .bearer_auth(TOKEN)
        .json(&json!({"env": [{"name": "STRATA_TOKEN", "value": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let body: Value = refused.json().await.unwrap();
    assert!(body.to_string().contains("STRATA_TOKEN is reserved"), "{body}");
    let unknown = http
        .get(format!("http://127.0.0.1:{}/api/v1/services/nope/revisions", dev.api))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    let refused_cli = strata(&dev, &["deploy", "cart", "--command", "./x", "--env", "NOEQUALS"]);
    assert!(!refused_cli.status.success());
    assert!(
        String::from_utf8_lossy(&refused_cli.stderr).contains("is not NAME=VALUE"),
        "{}",
        String::from_utf8_lossy(&refused_cli.stderr)
    );
    let after = dev.api("/services/cart/revisions").await;
    assert_eq!(
        after["revisions"], list["revisions"],
        "the refused writes changed nothing"
    );
}
