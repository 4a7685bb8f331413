//! Records the compiler's version so discovery can report the runtime, as CloudState's
//! other language supports report theirs ("rust 1.85.0").

use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    // `rustc --version` prints "rustc 1.85.0 (4d91de4e4 2025-02-17)"; keep the number.
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=STRATA_SDK_RUSTC_VERSION={version}");
    println!("cargo:rerun-if-changed=build.rs");
}
