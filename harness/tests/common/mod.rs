//! Helpers shared by the harness's integration tests that run the `harness` binary.
#![allow(dead_code)] // each test target uses its own share of these

use std::path::Path;
use std::process::{Command, Output};

/// Run `harness args...` in `dir` (with `CI` unset, so failing runs write pending goldens).
pub fn harness(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(dir)
        .args(args)
        .env_remove("CI")
        .output()
        .unwrap()
}

/// A run's standard output and error, as one text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
