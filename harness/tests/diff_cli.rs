//! `harness diff A B` on real trace directories:
//! - the engine against llama.cpp: bit-exact, exit 0;
//! - two engine builds, one with a planted bug (the V cache rounded to F16): exit 1 with the
//!   first divergence named at its layer and stage, the points before it and the per-layer
//!   table; within the default tolerances, exit 0; `--rel-l2-max`, `--scenario`, `--json` and
//!   `--html`;
//! - bad input: exit 2 naming what is wrong;
//! - trace directories written whole: a shorter re-run of `harness trace` / `ref-trace` leaves
//!   no stale step file, and a directory that is not a trace is not replaced;
//! - output into a closed pipe (`harness inspect m.gguf | head -1`) ends quietly.

use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
use common::text;

fn harness(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_harness"));
    c.current_dir(dir).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

const TOKENS: &str = "1,17,300,42,5";

/// A tiny model in `dir`, and the engine's trace of it into `dir/<out>`.
fn setup(dir: &Path) {
    let out = harness(dir, &["gen-model", "--preset", "tiny", "-o", "m.gguf"], &[]);
    assert!(out.status.success(), "{}", text(&out));
}

fn trace(dir: &Path, cmd: &str, out: &str, generate: &str, env: &[(&str, &str)]) {
    let o = harness(
        dir,
        &[
            cmd,
            "m.gguf",
            "--tokens",
            TOKENS,
            "--generate",
            generate,
            "-o",
            out,
        ],
        env,
    );
    assert!(o.status.success(), "{cmd}: {}", text(&o));
}

#[test]
fn diff_names_the_first_divergence_and_exits_by_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    trace(d, "trace", "engine", "3", &[]);
    trace(d, "ref-trace", "llama", "3", &[]);
    trace(
        d,
        "trace",
        "planted",
        "3",
        &[("BITNET_PLANT", "v_cache_f16")],
    );

    // The engine against llama.cpp: every value equal.
    let out = harness(d, &["diff", "llama", "engine", "--exact"], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("B is within tolerance of A"), "{t}");
    assert!(
        t.contains("per layer (worst over steps and positions)"),
        "{t}"
    );
    assert!(
        t.contains("generated tokens: A") && t.contains("(equal)"),
        "{t}"
    );

    // Two engine builds, held exact: the planted bug is named where it first acts.
    let out = harness(d, &["diff", "engine", "planted", "--exact"], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("first divergence at step 0, position 0, layer 0, stage kqv_out (`blk.0.kqv_out`): not bit-exact"),
        "{t}"
    );
    let before = t.find("blk.0.attn_probs").expect("the points before it");
    assert!(before < t.find("<- first divergence").unwrap(), "{t}");
    assert!(t.contains("B is NOT within tolerance of A"), "{t}");

    // The default tolerances (the scenarios') admit it; a tighter rel L2 does not.
    let out = harness(d, &["diff", "engine", "planted"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = harness(
        d,
        &["diff", "engine", "planted", "--rel-l2-max", "1e-3"],
        &[],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("rel_l2") && t.contains("> 1e-3"), "{t}");

    // Tolerances from a scenario file.
    std::fs::write(
        d.join("s.yaml"),
        "description: x\nmodel:\n  preset: tiny\ninputs:\n  tokens:\n    - [1]\nexact: true\n",
    )
    .unwrap();
    let out = harness(
        d,
        &["diff", "engine", "planted", "--scenario", "s.yaml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // JSON and HTML.
    let out = harness(
        d,
        &[
            "diff", "engine", "planted", "--exact", "--json", "--html", "d.html",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["within"], false);
    assert_eq!(doc["figures"]["divergence"]["name"], "blk.0.kqv_out");
    assert_eq!(doc["figures"]["steps"].as_array().unwrap().len(), 3);
    let html = std::fs::read_to_string(d.join("d.html")).unwrap();
    assert!(html.contains("<g class=\"divergence\">"));
    assert_eq!(html.matches("<figure class=\"stage").count(), 3 * 14);
}

#[test]
fn bad_input_is_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    trace(d, "trace", "a", "1", &[]);
    std::fs::create_dir(d.join("empty")).unwrap();
    for (args, want) in [
        (vec!["diff", "a", "missing"], "B `missing` does not exist"),
        (vec!["diff", "m.gguf", "a"], "A `m.gguf` is not a directory"),
        (vec!["diff", "a", "empty"], "B `empty` has no `trace.jsonl`"),
        (
            vec!["diff", "a", "a", "--rel-l2-max=-1"],
            "`--rel-l2-max` is -1",
        ),
        (
            vec!["diff", "a", "a", "--top1-agreement-min", "2"],
            "`--top1-agreement-min` is 2",
        ),
    ] {
        let out = harness(d, &args, &[]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {t}");
        assert!(t.contains(want), "{args:?}: {t}");
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn trace_directories_are_written_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    for cmd in ["trace", "ref-trace"] {
        trace(d, cmd, "out", "3", &[]);
        assert!(names(&d.join("out")).iter().any(|n| n.contains(".step2.")));
        // Fewer steps into the same directory: only this run's files remain.
        trace(d, cmd, "out", "1", &[]);
        let files = names(&d.join("out"));
        assert!(
            !files
                .iter()
                .any(|n| n.contains(".step1.") || n.contains(".step2.")),
            "{cmd}: stale step files: {files:?}"
        );
        let records = std::fs::read_to_string(d.join("out/trace.jsonl")).unwrap();
        for f in files
            .iter()
            .filter(|n| n.ends_with(".npy") && *n != "logits.npy")
        {
            assert!(records.contains(f.as_str()), "{cmd}: `{f}` is in no record");
        }
        // Nothing hidden left beside it.
        assert!(
            !names(d).iter().any(|n| n.starts_with('.')),
            "{:?}",
            names(d)
        );
    }
    // A directory that is not a trace directory is not replaced.
    std::fs::create_dir(d.join("mine")).unwrap();
    std::fs::write(d.join("mine/notes.txt"), "keep").unwrap();
    let out = harness(
        d,
        &["trace", "m.gguf", "--tokens", TOKENS, "-o", "mine"],
        &[],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("is not a trace directory"), "{t}");
    assert_eq!(names(&d.join("mine")), ["notes.txt"]);
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    trace(d, "trace", "a", "1", &[]);
    for args in [
        vec!["inspect", "m.gguf"],
        vec!["inspect", "m.gguf", "--json"],
        vec!["diff", "a", "a"],
    ] {
        // The reader is gone before the harness writes anything (`| head -0`).
        let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
            .current_dir(d)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    }
}

/// Trace directories are untrusted: a record that disagrees with itself is bad input (exit 2, naming the file and line), and values that are NaN on both sides are not
/// agreement (exit 1, named).
#[test]
fn traces_that_lie_are_refused_and_nan_is_not_agreement() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    trace(d, "trace", "a", "0", &[]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(d.join("a/trace.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["name"], "embeddings");
    let write_b = |records: &[serde_json::Value]| {
        let b = d.join("b");
        let _ = std::fs::remove_dir_all(&b);
        std::fs::create_dir(&b).unwrap();
        for e in std::fs::read_dir(d.join("a")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), b.join(e.file_name())).unwrap();
        }
        let text: Vec<String> = records.iter().map(|r| r.to_string()).collect();
        std::fs::write(b.join("trace.jsonl"), text.join("\n") + "\n").unwrap();
    };
    type Edit = fn(&mut Vec<serde_json::Value>);
    let cases: Vec<(Edit, &str)> = vec![
        (
            |r| r[0]["blake3"] = "xyz".into(),
            "`blake3` is \"xyz\", expected 64 hex digits",
        ),
        (
            |r| {
                let first = r[0].clone();
                r.push(first);
            },
            "`embeddings` step 0 again (first at line 1)",
        ),
        (
            |r| r[0]["dtype"] = "f16".into(),
            "trace.jsonl:1: `embeddings` step 0: `dtype` is \"f16\"",
        ),
        (
            |r| r[0]["positions"] = serde_json::json!([9, 2]),
            "`positions` is [9, 2], expected start ≤ end",
        ),
        (
            |r| r[0]["count"] = 7.into(),
            "`count` is 7, but `shape` [5, 256] holds 1280",
        ),
        (
            |r| r[1]["layer"] = 3.into(),
            "trace.jsonl:2: `blk.0.attn_norm` step 0: `layer` Some(3)",
        ),
        (|r| r.clear(), "no trace record: nothing to compare"),
    ];
    for (edit, says) in cases {
        let mut records = lines.clone();
        edit(&mut records);
        write_b(&records);
        let out = harness(d, &["diff", "a", "b", "--exact"], &[]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{says}: {t}");
        assert!(t.contains(says), "{says}: {t}");
    }

    // The same NaNs on both sides: every bit equal, and still a failure at the first point.
    let nan = vec![f32::NAN; 5 * 256];
    let mut bytes = Vec::new();
    for v in &nan {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let mut records = lines.clone();
    records[0]["blake3"] = blake3::hash(&bytes).to_hex().to_string().into();
    // (The values are compared; the hash is kept true to them all the same.)
    for side in ["a", "b"] {
        if side == "b" {
            write_b(&records);
        } else {
            let text: Vec<String> = records.iter().map(|r| r.to_string()).collect();
            std::fs::write(d.join("a/trace.jsonl"), text.join("\n") + "\n").unwrap();
        }
        bitnet_engine::npy::write_npy(&d.join(side).join("embeddings.step0.npy"), &[5, 256], &nan)
            .unwrap();
    }
    let out = harness(d, &["diff", "a", "b", "--exact"], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(
            "non-finite values (NaN or infinity): 256 in the engine's, 256 in the reference's"
        ),
        "{t}"
    );
    assert!(t.contains("embeddings"), "{t}");
}
