//! Goldens: per scenario, one insta snapshot in `goldens/<scenario>.snap` with a line per trace
//! point and step: shape, rms to 6 significant digits, blake3. They are exact: any changed value
//! fails the `golden` check with a diff naming the points. They change only by a deliberate bless
//! (`harness bless [SCENARIO]`, or `cargo insta review` on the `.snap.new` files a failing run
//! leaves when `CI` is not set).

use std::path::{Path, PathBuf};

use bitnet_engine::trace::TraceRecord;

/// The golden body's line for one record (`input` distinguishes a scenario's token lists).
pub fn golden_line(input: usize, r: &TraceRecord) -> String {
    format!(
        "input {input} | {} step {} | shape {:?} | rms {:.5e} | blake3 {}",
        r.name, r.step, r.shape, r.rms, r.blake3
    )
}

/// The snapshot file of a scenario.
pub fn snapshot_path(goldens: &Path, stem: &str) -> PathBuf {
    goldens.join(format!("{stem}.snap"))
}

/// An insta snapshot: metadata header, then the body.
pub fn to_snapshot(stem: &str, body: &str) -> String {
    format!("---\nsource: harness/tests/scenarios.rs\nexpression: {stem}\n---\n{body}\n")
}

/// The body of an insta snapshot file (after the second `---` line).
pub fn snapshot_body(text: &str) -> &str {
    let mut rest = text;
    if let Some(r) = rest.strip_prefix("---\n") {
        if let Some(i) = r.find("\n---\n") {
            rest = &r[i + 5..];
        }
    }
    rest.trim_end_matches('\n')
}

/// The outcome of a golden comparison.
#[derive(Debug, PartialEq)]
pub enum GoldenOutcome {
    Match,
    Missing,
    /// Lines that differ, as `-old` / `+new`, the first changed point named first.
    Changed {
        first_point: String,
        diff: Vec<String>,
    },
}

/// Compare `body` with the golden; never writes the golden itself.
pub fn compare_golden(goldens: &Path, stem: &str, body: &str) -> std::io::Result<GoldenOutcome> {
    let path = snapshot_path(goldens, stem);
    let old = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(GoldenOutcome::Missing),
        Err(e) => return Err(e),
    };
    let old_body = snapshot_body(&old);
    if old_body == body {
        return Ok(GoldenOutcome::Match);
    }
    let (a, b): (Vec<&str>, Vec<&str>) = (old_body.lines().collect(), body.lines().collect());
    let mut diff = Vec::new();
    let mut first_point = String::new();
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i), b.get(i));
        if x != y {
            if first_point.is_empty() {
                let line = y.or(x).copied().unwrap_or_default();
                first_point = line.split(" | ").take(2).collect::<Vec<_>>().join(" | ");
            }
            if let Some(x) = x {
                diff.push(format!("-{x}"));
            }
            if let Some(y) = y {
                diff.push(format!("+{y}"));
            }
        }
    }
    Ok(GoldenOutcome::Changed { first_point, diff })
}

/// Write a golden (atomically). Used by `harness bless`.
pub fn write_golden(goldens: &Path, stem: &str, body: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(goldens)?;
    let path = snapshot_path(goldens, stem);
    bitnet_engine::npy::write_atomic(&path, to_snapshot(stem, body).as_bytes())?;
    Ok(path)
}

/// Leave a `.snap.new` beside the golden for `cargo insta review`.
pub fn write_pending(goldens: &Path, stem: &str, body: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(goldens)?;
    let path = goldens.join(format!("{stem}.snap.new"));
    bitnet_engine::npy::write_atomic(&path, to_snapshot(stem, body).as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_the_first_changed_point() {
        let dir = tempfile::tempdir().unwrap();
        let body = "input 0 | embeddings step 0 | shape [1, 4] | rms 1.00000e0 | blake3 aa\ninput 0 | blk.0.q step 0 | shape [1, 4] | rms 2.00000e0 | blake3 bb";
        assert_eq!(
            compare_golden(dir.path(), "s", body).unwrap(),
            GoldenOutcome::Missing
        );
        write_golden(dir.path(), "s", body).unwrap();
        assert_eq!(
            compare_golden(dir.path(), "s", body).unwrap(),
            GoldenOutcome::Match
        );
        let changed = body.replace("blake3 bb", "blake3 cc");
        match compare_golden(dir.path(), "s", &changed).unwrap() {
            GoldenOutcome::Changed { first_point, diff } => {
                assert_eq!(first_point, "input 0 | blk.0.q step 0");
                assert_eq!(diff.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(snapshot_body(&to_snapshot("s", body)), body);
    }
}
