//! One module per subcommand; `main.rs` parses arguments and maps errors to exit codes.

pub mod bench;
pub mod calibrate;
pub mod diff;
pub mod fetch;
pub mod gen_model;
pub mod inspect;
pub mod preflight;
pub mod ref_trace;
pub mod report;
pub mod review;
pub mod run;
pub mod trace;
pub mod verify;

/// Write `text` to standard output; a reader that went away (`harness inspect m.gguf | head -1`)
/// ends the output quietly instead of a panic on the broken pipe.
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|()| o.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// `n` and the noun, plural unless `n` is 1: "1 scenario", "2 checks".
pub fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// An error that the CLI reports as bad input or usage (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Some checks failed (exit code 1); the report already says which.
#[derive(Debug)]
pub struct ChecksFailed;

impl std::fmt::Display for ChecksFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("some checks failed")
    }
}

impl std::error::Error for ChecksFailed {}
