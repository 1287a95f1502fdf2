//! Goldens: per scenario, one insta snapshot in `goldens/<scenario>.snap` with a line per trace
//! point and step: shape, rms to 6 significant digits, blake3. They are exact: any changed value
//! fails the `golden` check with a diff naming the points. They change only by a deliberate bless:
//! `harness bless [SCENARIO]` (runs the engine and writes the golden), or `harness review`, which
//! shows each pending golden (the `goldens/<scenario>.snap.new` a failing run leaves when `CI` is
//! not set) with its first changed points and accepts or rejects it. (The files keep insta's
//! format, but cargo-insta does not look for them: `goldens/` is outside every package.)

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
    /// Lines that differ, matched by point, as `-old` / `+new` in the new golden's order (lines
    /// only in the old one last); `first_point` is the first changed, added or removed point.
    Changed {
        first_point: String,
        diff: Vec<String>,
    },
}

/// A snapshot's text (a golden or a pending one): a regular file of bounded size, not a link
/// (the harness writes none, and accepting one would copy whatever it points at into `goldens/`),
/// whose body is golden lines.
fn read_snapshot(path: &Path) -> std::io::Result<String> {
    let bad = |what: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("`{}` is not a golden snapshot: {what}", path.display()),
        )
    };
    if std::fs::symlink_metadata(path)?.file_type().is_symlink() {
        return Err(bad("it is a symbolic link".into()));
    }
    let text = bitnet_engine::files::read_text_limited(
        path,
        bitnet_engine::files::MAX_REPORT_BYTES,
        "golden snapshot",
    )?;
    check_snapshot(&text).map_err(bad)?;
    Ok(text)
}

/// Whether a snapshot's body is golden lines, each point once: `input N | NAME step S | shape
/// [..] | rms X | blake3 H` (64 hex digits), or `input N | generated [ids]`. The error names the
/// file's line.
pub fn check_snapshot(text: &str) -> Result<(), String> {
    let body = snapshot_body(text);
    if body.trim().is_empty() {
        return Err("its body is empty (no trace point)".into());
    }
    // Lines before the body's first (`body` lies inside `text`).
    let start = body.as_ptr() as usize - text.as_ptr() as usize;
    let offset = text[..start].matches('\n').count();
    let mut keys = std::collections::HashSet::new();
    for (i, line) in body.lines().enumerate() {
        let at = |what: &str| format!("line {}: {what}: `{line}`", offset + i + 1);
        let fields: Vec<&str> = line.split(" | ").collect();
        let input_ok = fields[0]
            .strip_prefix("input ")
            .is_some_and(|n| n.parse::<usize>().is_ok());
        let ok = input_ok
            && match fields.as_slice() {
                [_, generated] => generated
                    .strip_prefix("generated ")
                    .is_some_and(|ids| serde_json::from_str::<Vec<u32>>(ids).is_ok()),
                [_, point, shape, rms, hash] => {
                    point
                        .rsplit_once(" step ")
                        .is_some_and(|(name, step)| !name.is_empty() && step.parse::<u32>().is_ok())
                        && shape
                            .strip_prefix("shape ")
                            .is_some_and(|s| serde_json::from_str::<Vec<usize>>(s).is_ok())
                        // (`f64` parsing reads `NaN` and `inf` too.)
                        && rms
                            .strip_prefix("rms ")
                            .is_some_and(|r| r.parse::<f64>().is_ok())
                        && hash
                            .strip_prefix("blake3 ")
                            .is_some_and(bitnet_engine::trace::is_blake3_hex)
                }
                _ => false,
            };
        if !ok {
            return Err(at(
                "expected `input N | POINT step S | shape [..] | rms X | blake3 HASH` or `input N | generated [..]`",
            ));
        }
        if !keys.insert(line_key(line)) {
            return Err(at("a second line for this point"));
        }
    }
    Ok(())
}

/// Compare `body` with the golden; never writes the golden itself.
pub fn compare_golden(goldens: &Path, stem: &str, body: &str) -> std::io::Result<GoldenOutcome> {
    let path = snapshot_path(goldens, stem);
    let old = match read_snapshot(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(GoldenOutcome::Missing),
        Err(e) => return Err(e),
    };
    let old_body = snapshot_body(&old);
    if old_body == body {
        return Ok(GoldenOutcome::Match);
    }
    // Lines are matched by their point (`input 0 | blk.0.q step 2`, `input 0 | generated`), so
    // an added step shows as added lines, not as every later line changed.
    let old_lines: std::collections::HashMap<&str, &str> =
        old_body.lines().map(|l| (line_key(l), l)).collect();
    let new_keys: std::collections::HashSet<&str> = body.lines().map(line_key).collect();
    let mut diff = Vec::new();
    let mut first_point = String::new();
    for y in body.lines() {
        let key = line_key(y);
        match old_lines.get(key) {
            Some(x) if *x == y => continue,
            Some(x) => diff.push(format!("-{x}")),
            None => {}
        }
        diff.push(format!("+{y}"));
        if first_point.is_empty() {
            first_point = key.to_string();
        }
    }
    for x in old_body.lines().filter(|x| !new_keys.contains(line_key(x))) {
        diff.push(format!("-{x}"));
        if first_point.is_empty() {
            first_point = line_key(x).to_string();
        }
    }
    Ok(GoldenOutcome::Changed { first_point, diff })
}

/// What a golden line is about: `input 0 | blk.0.q step 2`, or `input 0 | generated`.
fn line_key(line: &str) -> &str {
    let mut ends = line.match_indices(" | ").map(|(i, _)| i);
    let (first, second) = (ends.next(), ends.next());
    let end = second.unwrap_or(line.len());
    let key = &line[..end];
    match first {
        Some(i) if line[i + 3..end].starts_with("generated") => &line[..i + 3 + "generated".len()],
        _ => key,
    }
}

/// Write a golden (atomically). Used by `harness bless`.
pub fn write_golden(goldens: &Path, stem: &str, body: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(goldens)?;
    let path = snapshot_path(goldens, stem);
    bitnet_engine::npy::write_atomic(&path, to_snapshot(stem, body).as_bytes())?;
    Ok(path)
}

/// Leave a `.snap.new` beside the golden for `harness review`.
pub fn write_pending(goldens: &Path, stem: &str, body: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(goldens)?;
    let path = goldens.join(format!("{stem}.snap.new"));
    bitnet_engine::npy::write_atomic(&path, to_snapshot(stem, body).as_bytes())?;
    Ok(path)
}

/// The pending golden of a scenario.
pub fn pending_path(goldens: &Path, stem: &str) -> PathBuf {
    goldens.join(format!("{stem}.snap.new"))
}

/// A golden waiting for review: a `.snap.new` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub stem: String,
    pub path: PathBuf,
}

/// The pending goldens in `goldens`, sorted by scenario (none when the directory is absent).
pub fn pending(goldens: &Path) -> std::io::Result<Vec<Pending>> {
    let dir = match std::fs::read_dir(goldens) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in dir {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(stem) = name.strip_suffix(".snap.new") {
            if !stem.is_empty() && !stem.starts_with('.') {
                out.push(Pending {
                    stem: stem.to_string(),
                    path,
                });
            }
        }
    }
    out.sort_by(|a, b| a.stem.cmp(&b.stem));
    Ok(out)
}

/// What a pending golden would change: its body and the comparison with the current golden.
pub fn review_pending(goldens: &Path, p: &Pending) -> std::io::Result<(String, GoldenOutcome)> {
    let text = read_snapshot(&p.path)?;
    let body = snapshot_body(&text).to_string();
    let outcome = compare_golden(goldens, &p.stem, &body)?;
    Ok((body, outcome))
}

/// Accept a pending golden whose body `shown` the reviewer saw: it replaces `<stem>.snap` (by
/// rename, so atomically). A `.snap.new` that no longer holds `shown` (a run rewrote it while it
/// was on screen) is refused and left pending: only what was shown is ever accepted.
pub fn accept_pending(goldens: &Path, p: &Pending, shown: &str) -> std::io::Result<PathBuf> {
    let text = read_snapshot(&p.path)?;
    if snapshot_body(&text) != shown {
        return Err(std::io::Error::other(format!(
            "`{}` changed since it was shown: review it again",
            p.path.display()
        )));
    }
    // Rewrite through `write_golden` so the header is this harness's, then drop the candidate.
    let path = write_golden(goldens, &p.stem, shown)?;
    std::fs::remove_file(&p.path)?;
    Ok(path)
}

/// Reject a pending golden: the `.snap.new` is removed, the golden left as it is.
pub fn reject_pending(p: &Pending) -> std::io::Result<()> {
    std::fs::remove_file(&p.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_the_first_changed_point() {
        let dir = tempfile::tempdir().unwrap();
        let body = "input 0 | embeddings step 0 | shape [1, 4] | rms 1.00000e0 | blake3 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\ninput 0 | blk.0.q step 0 | shape [1, 4] | rms 2.00000e0 | blake3 bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        assert_eq!(
            compare_golden(dir.path(), "s", body).unwrap(),
            GoldenOutcome::Missing
        );
        write_golden(dir.path(), "s", body).unwrap();
        assert_eq!(
            compare_golden(dir.path(), "s", body).unwrap(),
            GoldenOutcome::Match
        );
        let changed = body.replace(
            "blake3 bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            "blake3 cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
        );
        match compare_golden(dir.path(), "s", &changed).unwrap() {
            GoldenOutcome::Changed { first_point, diff } => {
                assert_eq!(first_point, "input 0 | blk.0.q step 0");
                assert_eq!(diff.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(snapshot_body(&to_snapshot("s", body)), body);
        // One more step: its lines are added, the generated tokens changed, nothing else.
        let longer = format!("{body}\ninput 0 | embeddings step 1 | shape [1, 4] | rms 1.00000e0 | blake3 dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\ninput 0 | generated [5, 6]");
        let shorter = format!("{body}\ninput 0 | generated [5]");
        write_golden(dir.path(), "t", &shorter).unwrap();
        match compare_golden(dir.path(), "t", &longer).unwrap() {
            GoldenOutcome::Changed { first_point, diff } => {
                assert_eq!(first_point, "input 0 | embeddings step 1");
                assert_eq!(
                    diff,
                    [
                        "+input 0 | embeddings step 1 | shape [1, 4] | rms 1.00000e0 | blake3 dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
                        "-input 0 | generated [5]",
                        "+input 0 | generated [5, 6]"
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        match compare_golden(dir.path(), "t", body).unwrap() {
            GoldenOutcome::Changed { first_point, diff } => {
                assert_eq!(first_point, "input 0 | generated");
                assert_eq!(diff, ["-input 0 | generated [5]"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pending_goldens_are_listed_accepted_and_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path();
        assert!(pending(&g.join("absent")).unwrap().is_empty());
        write_golden(g, "a", "input 0 | x step 0 | shape [1] | rms 1.00000e0 | blake3 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").unwrap();
        write_pending(g, "a", "input 0 | x step 0 | shape [1] | rms 1.00000e0 | blake3 bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb").unwrap();
        write_pending(g, "b", "input 0 | y step 0 | shape [1] | rms 1.00000e0 | blake3 cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc").unwrap();
        std::fs::write(g.join(".hidden.snap.new"), "x").unwrap();
        let p = pending(g).unwrap();
        assert_eq!(
            p.iter().map(|x| x.stem.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let (shown, outcome) = review_pending(g, &p[0]).unwrap();
        assert!(matches!(outcome, GoldenOutcome::Changed { .. }));
        assert_eq!(review_pending(g, &p[1]).unwrap().1, GoldenOutcome::Missing);
        // Rewritten after it was shown: refused, left pending, the golden unchanged.
        write_pending(g, "a", "input 0 | x step 0 | shape [1] | rms 1.00000e0 | blake3 dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd").unwrap();
        let e = accept_pending(g, &p[0], &shown).unwrap_err();
        assert!(e.to_string().contains("changed since it was shown"), "{e}");
        assert!(g.join("a.snap.new").exists());
        write_pending(g, "a", &shown).unwrap();
        accept_pending(g, &p[0], &shown).unwrap();
        assert_eq!(
            compare_golden(g, "a", "input 0 | x step 0 | shape [1] | rms 1.00000e0 | blake3 bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb").unwrap(),
            GoldenOutcome::Match
        );
        reject_pending(&p[1]).unwrap();
        assert!(!g.join("b.snap").exists() && !g.join("b.snap.new").exists());
        assert!(pending(g).unwrap().is_empty());
    }
}
