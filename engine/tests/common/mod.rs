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

/// Hand-assembled GGUF bytes, so that each field can be broken on purpose.
#[derive(Clone)]
pub struct B(pub Vec<u8>);

impl B {
    pub fn header(version: u32, n_tensors: u64, n_kv: u64) -> B {
        let mut v = b"GGUF".to_vec();
        v.extend(version.to_le_bytes());
        v.extend(n_tensors.to_le_bytes());
        v.extend(n_kv.to_le_bytes());
        B(v)
    }
    pub fn u32(mut self, x: u32) -> B {
        self.0.extend(x.to_le_bytes());
        self
    }
    pub fn u64(mut self, x: u64) -> B {
        self.0.extend(x.to_le_bytes());
        self
    }
    pub fn bytes(mut self, b: &[u8]) -> B {
        self.0.extend_from_slice(b);
        self
    }
    pub fn str(self, s: &str) -> B {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    pub fn kv_u32(self, k: &str, x: u32) -> B {
        self.str(k).u32(4).u32(x)
    }
    pub fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> B {
        let mut b = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            b = b.u64(d);
        }
        b.u32(ty).u64(offset)
    }
    /// Pad to 32 and append `n` data bytes.
    pub fn data(mut self, n: usize) -> B {
        while self.0.len() % 32 != 0 {
            self.0.push(0);
        }
        self.0.extend(std::iter::repeat_n(0x3c, n));
        self
    }
}
