//! The operating verbs against a real `strata dev`: `strata logs` (every line with
//! its time and instance, one instance, `--since`, and `-f` following new lines
//! of a new instance), `strata describe` and `strata delete` (asking first), and
//! what each says about a service or instance that does not exist.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use strata_e2e::binary;
use strata_e2e::dev::{start_dev, Dev, TOKEN};

fn strata(dev: &Dev, args: &[&str]) -> Command {
    let mut command = Command::new(binary("strata"));
    command
        .args(args)
        .args(["--api", &format!("http://127.0.0.1:{}", dev.api)])
        .env("STRATA_TOKEN", TOKEN);
    command
}

fn run(dev: &Dev, args: &[&str]) -> Output {
    strata(dev, args).stdin(Stdio::null()).output().expect("strata runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A line as `strata logs` prints it: `TIME INSTANCE PROCESS TEXT`.
fn is_log_line(line: &str, instance: &str, process: &str) -> bool {
    let mut words = line.split_whitespace();
    let time = words.next().unwrap_or_default();
    strata_control_plane::logs::parse_rfc3339_ms(time).is_some()
        && words.next() == Some(instance)
        && words.next() == Some(process)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_describe_and_delete_against_strata_dev() {
    let dir = tempfile::tempdir().unwrap();
    let dev = start_dev(dir, &[]);
    dev.deploy(&["--min-scale", "1"]);
    dev.until("the cart is ready", Duration::from_secs(60), |s| {
        s["ready_replicas"] == 1
    })
    .await;
    let instances = dev.api("/services/cart/instances").await;
    let first = instances["instances"][0]["id"].as_str().unwrap().to_owned();

    // --- strata logs: the function's and the sidecar's lines, each with time and instance
    let logs = run(&dev, &["logs", "cart"]);
    assert!(logs.status.success(), "strata logs failed: {}", stderr(&logs));
    let text = stdout(&logs);
    assert!(
        text.lines()
            .any(|l| is_log_line(l, &first, "function") && l.contains("user function listening")),
        "the function's start-up line, stamped: {text}"
    );
    assert!(
        text.lines().any(|l| is_log_line(l, &first, "sidecar")),
        "the sidecar's lines too: {text}"
    );
    let one = run(&dev, &["logs", "cart", "--instance", &first, "--since", "10m"]);
    assert!(one.status.success(), "{}", stderr(&one));
    assert!(stdout(&one)
        .lines()
        .all(|l| l.split_whitespace().nth(1) == Some(first.as_str())));
    assert!(!stdout(&one).is_empty());

    // --- what does not exist is said, with what does
    let unknown = run(&dev, &["logs", "nope"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("404") && stderr(&unknown).contains("no service named nope; services: cart"),
        "{}",
        stderr(&unknown)
    );
    let unknown = run(&dev, &["logs", "cart", "--instance", "cart-00000000"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains(&format!(
            "cart has no instance cart-00000000; its instances with logs: {first}"
        )),
        "{}",
        stderr(&unknown)
    );
    let bad = run(&dev, &["logs", "cart", "--since", "ten minutes"]);
    assert!(!bad.status.success(), "a since that is no duration is refused");

    // --- strata logs -f: follows, and picks up a new instance's lines
    let mut follower = strata(&dev, &["logs", "cart", "-f"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("strata logs -f");
    let (lines, followed) = mpsc::channel();
    let out = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    dev.deploy(&["--min-scale", "2"]);
    let second = loop {
        let line = followed
            .recv_timeout(Duration::from_secs(60))
            .expect("a second instance's start-up line reaches the follower");
        let instance = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
        if instance != first && line.contains("user function listening") {
            assert!(is_log_line(&line, &instance, "function"), "{line}");
            break instance;
        }
    };
    follower.kill().unwrap();
    let _ = follower.wait();
    dev.until("both instances are ready", Duration::from_secs(60), |s| {
        s["ready_replicas"] == 2
    })
    .await;

    // --- strata describe: settings, both instances with their shards, the scale events
    let described = run(&dev, &["describe", "cart"]);
    assert!(described.status.success(), "{}", stderr(&described));
    let page = stdout(&described);
    for expected in [
        "Name:                 cart",
        "Instances:            2 desired, 2 ready",
        "  min_scale             2\n",
        "  max_scale             10\n",
        "com.example.shoppingcart.ShoppingCart",
        first.as_str(),
        second.as_str(),
        "Events (newest first):",
        "instance_ready",
    ] {
        assert!(page.contains(expected), "describe lacks {expected:?}:\n{page}");
    }
    let owned: usize = page
        .lines()
        .filter(|l| l.contains(&first) || l.contains(&second))
        .filter_map(|l| l.split_whitespace().last()?.parse::<usize>().ok())
        .sum();
    assert_eq!(owned, 64, "every shard is owned by one of the two:\n{page}");
    let unknown = run(&dev, &["describe", "nope"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("no service named nope; services: cart"),
        "{}",
        stderr(&unknown)
    );

    // --- strata delete: asks first; no answer keeps the service, "y" deletes it
    let kept = run(&dev, &["delete", "cart"]);
    assert!(!kept.status.success());
    assert!(stderr(&kept).contains("pass --yes"), "{}", stderr(&kept));
    assert_eq!(dev.service().await["name"], "cart", "still there");
    let refused = {
        let mut asked = strata(&dev, &["delete", "cart"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        asked.stdin.take().unwrap().write_all(b"n\n").unwrap();
        asked.wait_with_output().unwrap()
    };
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("not deleted"), "{}", stderr(&refused));
    let unknown = run(&dev, &["delete", "nope", "--yes"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("no service named nope; services: cart"),
        "{}",
        stderr(&unknown)
    );
    let deleted = {
        let mut asked = strata(&dev, &["delete", "cart"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        asked.stdin.take().unwrap().write_all(b"y\n").unwrap();
        asked.wait_with_output().unwrap()
    };
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert!(
        stderr(&deleted).contains("delete the service cart"),
        "it asked: {}",
        stderr(&deleted)
    );
    let gone = run(&dev, &["describe", "cart"]);
    assert!(!gone.status.success());
    assert!(
        stderr(&gone).contains("no service named cart; there are none"),
        "{}",
        stderr(&gone)
    );
}
