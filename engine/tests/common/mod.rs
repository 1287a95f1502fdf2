//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The Python interpreter with the `gguf` and `numpy` packages: `BITNET_PYTHON`, else the
/// workspace's `.venv`. Panics with the fix when neither works: these tests are not optional.
pub fn python() -> PathBuf {
    let candidates: Vec<PathBuf> = std::env::var_os("BITNET_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([workspace_root().join(".venv/bin/python")])
        .collect();
    for p in &candidates {
        let ok = Command::new(p)
            .args(["-c", "import gguf, numpy"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return p.clone();
        }
    }
    panic!(
        "no Python with the `gguf` and `numpy` packages (tried {candidates:?}): run `bash ci/setup.sh` \
         or set BITNET_PYTHON"
    );
}

/// Run a script under `engine/tests/py/` with arguments; panics with its stderr on failure.
pub fn run_py(script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
