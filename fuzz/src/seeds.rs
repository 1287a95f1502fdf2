//! The seed corpora: `<crate>/tests/fuzz_cases/<target>/`, one input per file and beside it
//! `<file>.expected`, the result it must give: `ok`, or lines the error message must each
//! contain (`#` lines are comments: which reproducer the seed is). `ci/fuzz.sh` starts each
//! target from its folder; [`replay`] runs every seed through the target's function.

use std::path::{Path, PathBuf};

/// The seeds of a folder, sorted: every file but the `.expected` ones.
pub fn seed_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read `{}`: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|x| x != "expected"))
        .collect();
    v.sort();
    v
}

/// Run every seed of `dir` through `body`: each gives its `.expected` result and none panics.
/// Returns the number of seeds; panics listing every seed that did otherwise.
pub fn replay(dir: &Path, body: &dyn Fn(&[u8]) -> Result<(), String>) -> usize {
    let seeds = seed_files(dir);
    let mut wrong = Vec::new();
    // An `.expected` without its seed is a seed lost.
    for e in std::fs::read_dir(dir).expect("the seed folder").flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "expected") && !p.with_extension("").is_file() {
            wrong.push(format!("{}: no seed beside it", p.display()));
        }
    }
    for seed in &seeds {
        let name = seed.file_name().unwrap_or_default().to_string_lossy();
        let expected_path = PathBuf::from(format!("{}.expected", seed.display()));
        let Ok(expected) = std::fs::read_to_string(&expected_path) else {
            wrong.push(format!(
                "{name}: no `{name}.expected` (write `ok` or the error)"
            ));
            continue;
        };
        let wants: Vec<&str> = expected
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let data = std::fs::read(seed).expect("seed bytes");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&data)));
        match (result, wants.as_slice()) {
            (Err(p), _) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                wrong.push(format!("{name}: panicked: {msg}"));
            }
            (Ok(Ok(())), ["ok"]) => {}
            (Ok(Ok(())), _) => wrong.push(format!("{name}: accepted, expected {wants:?}")),
            (Ok(Err(e)), ["ok"]) => wrong.push(format!("{name}: refused, expected ok: {e}")),
            (Ok(Err(e)), _) => {
                if wants.is_empty() {
                    wrong.push(format!("{name}: `.expected` is empty"));
                }
                for w in &wants {
                    if !e.contains(w) {
                        wrong.push(format!("{name}: the error lacks `{w}`: {e}"));
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} seeds in `{}` gave another result:\n{}",
        wrong.len(),
        seeds.len(),
        dir.display(),
        wrong.join("\n")
    );
    seeds.len()
}
