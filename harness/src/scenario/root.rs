//! The project root of a scenario: where its goldens, receipts and reports go, found from the
//! scenario file's location rather than the current directory.

use std::path::{Path, PathBuf};

/// The project a scenario belongs to, where its `goldens/`, `receipts/` and `target/harness/` are:
/// the parent of the scenario's directory when that is named `scenarios`, else the nearest
/// ancestor holding `scenarios/` and `goldens/` or a Cargo workspace manifest, else the
/// scenario's own directory. Never the current directory as such: `harness run my/mine.yaml`
/// run from elsewhere writes into `my`'s project.
pub fn project_root(scenario: &Path) -> PathBuf {
    let abs = std::path::absolute(scenario).unwrap_or_else(|_| scenario.to_owned());
    let dir = if abs.is_dir() {
        abs
    } else {
        abs.parent().map(Path::to_owned).unwrap_or(abs)
    };
    if dir.file_name().is_some_and(|n| n == "scenarios") {
        if let Some(parent) = dir.parent() {
            return parent.to_owned();
        }
    }
    enclosing_project(&dir).unwrap_or(dir)
}

/// The nearest of `dir` and its ancestors that holds `scenarios/` and `goldens/`, or a Cargo
/// workspace manifest (`[workspace]` in `Cargo.toml`): how `harness bless` finds the project from
/// any directory inside it.
pub fn enclosing_project(dir: &Path) -> Option<PathBuf> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    dir.ancestors()
        .find(|a| {
            (a.join("scenarios").is_dir() && a.join("goldens").is_dir())
                || std::fs::read_to_string(a.join("Cargo.toml"))
                    .is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
        })
        .map(Path::to_owned)
}
