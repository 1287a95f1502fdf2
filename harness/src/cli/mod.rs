//! One module per subcommand; `main.rs` parses arguments and maps errors to exit codes.

pub mod bench;
pub mod calibrate;
pub mod fetch;
pub mod gen_model;
pub mod inspect;
pub mod ref_trace;
pub mod run;
pub mod trace;
pub mod verify;

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
