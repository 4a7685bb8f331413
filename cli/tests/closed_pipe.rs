//! A verb whose reader stops reading (`strata render big.yaml | head -1`) ends
//! quietly with success, as Unix tools do, rather than panicking on the closed pipe.

use std::io::Read;
use std::process::{Command, Stdio};

#[test]
fn a_reader_that_goes_away_ends_a_verb_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // Far more output than a pipe holds, so the writer meets the closed end.
    let resources: Vec<String> = (0..400)
        .map(|n| {
            format!(
                "apiVersion: strata.dev/v1alpha1\nkind: StatefulService\nmetadata: {{name: cart{n}}}\n\
                 spec: {{image: 'cart:1', storeSecret: {{name: store}}}}\n"
            )
        })
        .collect();
    let file = dir.path().join("many.yaml");
    std::fs::write(&file, resources.join("---\n")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("render")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run strata render");
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe's read end is dropped here: the reader went away.
    let output = child.wait_with_output().unwrap();
    assert_eq!(&first, b"apiVersion: v1\nk");
    assert!(output.status.success(), "{:?}", output.status);
    assert_eq!(String::from_utf8_lossy(&output.stderr), "", "nothing said on stderr");
}
