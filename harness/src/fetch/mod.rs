//! Real models: the lock (`models.lock`, [`lock`]), their resumable, verified download
//! (`harness fetch-models`, [`download`]), and the resolution of a scenario's
//! `model: { locked: NAME }` to the fetched file. It sits before the model step of the data flow
//! (DESIGN.md): a locked model is a local GGUF file whose hashes the lock holds.
//!
//! ```no_run
//! use std::path::Path;
//! use bitnet_harness::fetch::{self, download};
//!
//! let lock = fetch::load_lock(Path::new("models.lock")).unwrap();
//! let agent = download::agent(&download::FetchOptions::default());
//! for m in &lock.models {
//!     let outcome = download::fetch_model(
//!         &agent,
//!         m,
//!         Path::new("target/harness/models"),
//!         &download::FetchOptions::default(),
//!         &mut |_event| {},
//!     );
//!     println!("{}: {outcome:?}", m.name);
//! }
//! ```

#[cfg(feature = "download")]
pub mod download;
pub mod lock;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

pub use lock::{find_lock, load_lock, parse_lock, LockError, LockedModel, ModelLock};

/// Exit code of `harness fetch-models`: every model present and verified.
pub const EXIT_OK: u8 = 0;
/// Exit code: another failure (a file that cannot be written, another fetch holding the model).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad arguments (an unknown option, a model name the lock lacks).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the lock file is missing or malformed.
pub const EXIT_LOCK: u8 = 3;
/// Exit code: a network or HTTP failure (after the retries, or at once on 4xx).
pub const EXIT_NETWORK: u8 = 4;
/// Exit code: a file's size or hash differs from the lock's.
pub const EXIT_MISMATCH: u8 = 5;
/// Exit code: with `--offline`, a model is not present.
pub const EXIT_MISSING: u8 = 6;

/// Where the models a lock names are fetched to, relative to the lock's directory (the
/// repository root): `harness fetch-models`' default `--dir`.
pub const MODELS_DIR: &str = "target/harness/models";

/// The file a locked model is fetched to in `dir`.
pub fn model_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.gguf"))
}

/// The partial download beside it, resumed by the next fetch.
pub fn part_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.gguf.part"))
}

/// A download that failed verification, kept for inspection (the next fetch starts over).
pub fn bad_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.gguf.bad"))
}

/// Size and the hashes asked for of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub size: u64,
    pub sha256: Option<String>,
    pub blake3: Option<String>,
}

/// Hash a file in one streaming pass (SHA-256 and/or BLAKE3, as asked).
pub fn digest_file(path: &Path, sha256: bool, blake3: bool) -> std::io::Result<FileDigest> {
    use sha2::Digest;
    let mut f = bitnet_engine::files::open_regular(path)?;
    let mut sha = sha256.then(sha2::Sha256::new);
    let mut b3 = blake3.then(blake3::Hasher::new);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        size += n as u64;
        if let Some(h) = &mut sha {
            h.update(&buf[..n]);
        }
        if let Some(h) = &mut b3 {
            h.update(&buf[..n]);
        }
    }
    Ok(FileDigest {
        size,
        sha256: sha.map(|h| h.finalize().iter().map(|b| format!("{b:02x}")).collect()),
        blake3: b3.map(|h| h.finalize().to_hex().to_string()),
    })
}

/// A file whose size or hash is not the lock's.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.describe())]
pub struct Mismatch {
    /// The locked model's name.
    pub model: String,
    /// The file checked.
    pub path: PathBuf,
    /// `size`, `sha256` or `blake3`.
    pub what: &'static str,
    pub expected: String,
    pub actual: String,
    /// What became of the file: a note for the message (`kept as ...`, `left untouched`).
    pub note: String,
}

impl Mismatch {
    fn describe(&self) -> String {
        format!(
            "model `{}`: {} mismatch in `{}`: expected {}, actual {}{}",
            self.model,
            self.what,
            self.path.display(),
            self.expected,
            self.actual,
            if self.note.is_empty() {
                String::new()
            } else {
                format!("; {}", self.note)
            }
        )
    }
}

/// Why a file did not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Its size or a hash is not the lock's.
    #[error(transparent)]
    Mismatch(Box<Mismatch>),
    /// It could not be read.
    #[error(transparent)]
    Io(std::io::Error),
}

/// Check a file against the lock: its size first (no hashing when it differs), then each hash
/// the lock holds.
pub fn verify_file(path: &Path, m: &LockedModel) -> Result<(), VerifyError> {
    let mismatch = |what, expected: String, actual: String| Mismatch {
        model: m.name.clone(),
        path: path.to_owned(),
        what,
        expected,
        actual,
        note: String::new(),
    };
    let len = std::fs::metadata(path).map_err(VerifyError::Io)?.len();
    if len != m.size {
        return Err(VerifyError::Mismatch(Box::new(mismatch(
            "size",
            format!("{} bytes", m.size),
            format!("{len} bytes"),
        ))));
    }
    let d = digest_file(path, m.sha256.is_some(), m.blake3.is_some()).map_err(VerifyError::Io)?;
    if d.size != m.size {
        return Err(VerifyError::Mismatch(Box::new(mismatch(
            "size",
            format!("{} bytes", m.size),
            format!("{} bytes", d.size),
        ))));
    }
    for (what, want, got) in [
        ("sha256", &m.sha256, &d.sha256),
        ("blake3", &m.blake3, &d.blake3),
    ] {
        if let (Some(want), Some(got)) = (want, got) {
            if !want.eq_ignore_ascii_case(got) {
                return Err(VerifyError::Mismatch(Box::new(mismatch(
                    what,
                    want.clone(),
                    got.clone(),
                ))));
            }
        }
    }
    Ok(())
}

/// The exact command that fetches a locked model.
pub fn fetch_command(name: &str) -> String {
    format!("harness fetch-models {name}")
}

/// A scenario's locked model: the lock nearest above the scenario file, its entry, and the
/// file it is fetched to (`target/harness/models/<name>.gguf` beside the lock).
pub fn resolve_locked(scenario: &Path, name: &str) -> Result<(LockedModel, PathBuf), String> {
    let dir = scenario.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let lock_path = find_lock(dir).ok_or_else(|| {
        format!(
            "`model.locked` names `{name}`, but there is no `models.lock` in `{}` or above it",
            dir.display()
        )
    })?;
    let lock = load_lock(&lock_path).map_err(|e| e.to_string())?;
    let m = lock.get(name).ok_or_else(|| {
        let hint = crate::scenario::did_you_mean(name, lock.names())
            .map(|m| format!("; did you mean `{m}`?"))
            .unwrap_or_default();
        format!(
            "`model.locked` names `{name}`, which `{}` does not lock; it locks: {}{hint}",
            lock_path.display(),
            lock.names().join(", ")
        )
    })?;
    let root = lock_path.parent().unwrap_or(Path::new("."));
    Ok((m.clone(), model_file(&root.join(MODELS_DIR), name)))
}

/// Why a scenario naming a locked model cannot run here (its file is absent), with the command
/// that fetches it; `None` when the file is present or the lock cannot be read (the run then
/// fails saying why).
pub fn locked_skip_reason(scenario: &Path, name: &str) -> Option<String> {
    let (_, file) = resolve_locked(scenario, name).ok()?;
    (!file.exists()).then(|| {
        format!(
            "locked model `{name}` is not fetched (`{}` is absent): run `{}`",
            file.display(),
            fetch_command(name)
        )
    })
}

/// A verification result, computed once.
type VerifyCell = Arc<OnceLock<Result<(), String>>>;
/// A file as verified: its path, size and modification time.
type FileKey = (PathBuf, u64, std::time::SystemTime);
/// Verification results per file: a 1 GB model is hashed once per process however many
/// scenarios name it.
static VERIFIED: Mutex<Option<HashMap<FileKey, VerifyCell>>> = Mutex::new(None);

/// The verified file of a scenario's locked model (hashed once per process).
pub fn locked_model_path(scenario: &Path, name: &str) -> Result<PathBuf, String> {
    let (m, file) = resolve_locked(scenario, name)?;
    let meta = std::fs::metadata(&file).map_err(|e| {
        format!(
            "locked model `{name}`: `{}`: {e}; run `{}`",
            file.display(),
            fetch_command(name)
        )
    })?;
    if !meta.is_file() {
        return Err(format!(
            "locked model `{name}`: `{}` is not a file (expected a GGUF file)",
            file.display()
        ));
    }
    let key = (
        file.clone(),
        meta.len(),
        meta.modified().unwrap_or(std::time::UNIX_EPOCH),
    );
    let cell = VERIFIED
        .lock()
        .map_err(|_| "verification cache poisoned".to_string())?
        .get_or_insert_with(HashMap::new)
        .entry(key)
        .or_default()
        .clone();
    cell.get_or_init(|| match verify_file(&file, &m) {
        Ok(()) => Ok(()),
        Err(VerifyError::Mismatch(mut mismatch)) => {
            mismatch.note = format!(
                "the file does not match `models.lock`: delete it and run `{}`",
                fetch_command(name)
            );
            Err(mismatch.to_string())
        }
        Err(VerifyError::Io(e)) => Err(format!("cannot read `{}`: {e}", file.display())),
    })
    .clone()
    .map(|()| file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_the_one_shot_hashes() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_001u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let d = digest_file(&path, true, true).unwrap();
        assert_eq!(d.size, data.len() as u64);
        let sha: String = sha2::Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(d.sha256.unwrap(), sha);
        assert_eq!(d.blake3.unwrap(), blake3::hash(&data).to_hex().to_string());
        let only = digest_file(&path, false, true).unwrap();
        assert!(only.sha256.is_none());
    }

    #[test]
    fn verification_names_the_model_and_both_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, b"abc").unwrap();
        let mut m = LockedModel {
            name: "m".into(),
            url: "http://127.0.0.1:1/m".into(),
            size: 3,
            sha256: None,
            blake3: Some(blake3::hash(b"abc").to_hex().to_string()),
            license: "MIT".into(),
            architecture: "bitnet".into(),
            description: None,
        };
        verify_file(&path, &m).unwrap();
        m.blake3 = Some("0".repeat(64));
        let e = verify_file(&path, &m).unwrap_err().to_string();
        assert!(e.contains("model `m`: blake3 mismatch"), "{e}");
        assert!(e.contains(&format!("expected {}", "0".repeat(64))), "{e}");
        assert!(
            e.contains(&blake3::hash(b"abc").to_hex().to_string()),
            "{e}"
        );
        m.size = 4;
        let e = verify_file(&path, &m).unwrap_err().to_string();
        assert!(
            e.contains("size mismatch") && e.contains("expected 4 bytes, actual 3 bytes"),
            "{e}"
        );
    }
}
