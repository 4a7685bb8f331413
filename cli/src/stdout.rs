//! Writing a verb's output: what [`say!`](crate::say) and `sayln!` print with.
//! A closed pipe (the reader, such as `head`, has read enough) ends the process
//! at once with success and no message; any other failure to write is a panic,
//! as with `print!`.

use std::io::{ErrorKind, Write};

/// Writes `text` to stdout, unbuffered beyond the line.
pub fn write(text: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(text).and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::BrokenPipe => std::process::exit(0),
        Err(error) => panic!("failed printing to stdout: {error}"),
    }
}
