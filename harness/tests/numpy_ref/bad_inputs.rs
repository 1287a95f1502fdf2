//! numpy-ref's refusals: bad models, tokens and output directories each fail with one line
//! naming the problem (exit 2), never a traceback.

use super::*;

pub(super) fn run_direct(args: &[&str]) -> Output {
    Command::new(numpy_ref())
        .args(args)
        .output()
        .expect("start numpy-ref")
}

/// Run numpy-ref on `model` and expect a failure whose one-line message contains each of `want`.
fn expect_failure(what: &str, model: &Path, tokens: &str, out: &Path, want: &[&str]) {
    let o = run_direct(&[
        model.to_str().unwrap(),
        "--tokens",
        tokens,
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{what}: exited successfully");
    assert_eq!(o.status.code(), Some(1), "{what}: {err}");
    assert!(!err.contains("Traceback"), "{what}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
    assert!(err.starts_with("numpy-ref: error: "), "{what}: {err}");
    for w in want {
        assert!(err.contains(w), "{what}: `{w}` not in: {err}");
    }
    assert!(!out.join("trace.jsonl").exists(), "{what}");
}

/// Where tensor `name`'s info stores its data offset in the GGUF bytes `b`.
fn offset_field(b: &[u8], name: &str) -> usize {
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    let at = b
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .expect("tensor info")
        + key.len();
    let n_dims = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    at + 4 + 8 * n_dims + 4
}

#[test]
fn bad_inputs_fail_with_one_line_naming_the_problem() {
    if !available("bad_inputs_fail_with_one_line_naming_the_problem") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    let good = build(&preset("tiny").unwrap()).unwrap().to_bytes().unwrap();

    // Truncated inside the metadata, and inside the tensor data.
    let p = d.join("header.gguf");
    std::fs::write(&p, &good[..300]).unwrap();
    expect_failure(
        "truncated header",
        &p,
        "1,2",
        &out,
        &["header.gguf", "truncated"],
    );
    let p = d.join("data.gguf");
    std::fs::write(&p, &good[..good.len() - 1000]).unwrap();
    expect_failure(
        "truncated data",
        &p,
        "1,2",
        &out,
        &["data.gguf", "runs past the end of the file"],
    );
    // A tensor whose offset points past the end (the file itself whole).
    let mut b = good.clone();
    let at = offset_field(&b, "blk.0.ffn_norm.weight");
    let far = (b.len() as u64).next_multiple_of(32);
    b[at..at + 8].copy_from_slice(&far.to_le_bytes());
    let p = d.join("offset.gguf");
    std::fs::write(&p, &b).unwrap();
    expect_failure(
        "offset past the end",
        &p,
        "1,2",
        &out,
        &["`blk.0.ffn_norm.weight`", "runs past the end of the file"],
    );
    // Not a GGUF file at all; an empty one.
    let p = d.join("text.gguf");
    std::fs::write(&p, "this is not a model, just some text to fill the header").unwrap();
    expect_failure("bad magic", &p, "1", &out, &["not a GGUF file"]);
    let p = d.join("empty.gguf");
    std::fs::write(&p, b"").unwrap();
    expect_failure("empty", &p, "1", &out, &["empty.gguf", "too short"]);
    // An architecture numpy-ref does not run.
    let mut w = build(&preset("tiny").unwrap()).unwrap();
    w.add_kv("general.architecture", "llama");
    let p = d.join("llama.gguf");
    w.write(&p).unwrap();
    expect_failure(
        "unknown architecture",
        &p,
        "1",
        &out,
        &["architecture `llama`", "general.architecture"],
    );
    // A tensor type it does not compute with (the type id of an F32 norm set to Q8_0's, 8).
    let mut b = good.clone();
    let at = offset_field(&b, "output_norm.weight") - 4;
    b[at..at + 4].copy_from_slice(&8u32.to_le_bytes());
    let p = d.join("q8.gguf");
    std::fs::write(&p, &b).unwrap();
    expect_failure(
        "unsupported type",
        &p,
        "1",
        &out,
        &["`output_norm.weight`", "Q8_0"],
    );
    // A missing tensor.
    let mut b = good.clone();
    let name = b"blk.1.ffn_up.weight";
    let at = b.windows(name.len()).position(|w| w == name).unwrap();
    b[at + 6] = b'x';
    let p = d.join("missing.gguf");
    std::fs::write(&p, &b).unwrap();
    expect_failure(
        "missing tensor",
        &p,
        "1",
        &out,
        &["`blk.1.ffn_up.weight` is missing"],
    );
    // A token id past the vocabulary (512 tokens).
    let p = d.join("tiny.gguf");
    std::fs::write(&p, &good).unwrap();
    expect_failure(
        "token id",
        &p,
        "1,512",
        &out,
        &["token id 512", "n_vocab 512"],
    );
    expect_failure("no file", &d.join("nope.gguf"), "1", &out, &["nope.gguf"]);
    // Usage errors exit 2, also on one line.
    for args in [
        vec![p.to_str().unwrap(), "--tokens", "1,x", "-o", "o"],
        vec![
            p.to_str().unwrap(),
            "--tokens",
            "1",
            "--ubatch",
            "0",
            "-o",
            "o",
        ],
        vec![
            p.to_str().unwrap(),
            "--tokens",
            "1",
            "--points",
            "[a",
            "-o",
            "o",
        ],
        vec![p.to_str().unwrap(), "--tokens", "1"],
    ] {
        let o = run_direct(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("Traceback"), "{err}");
    }
}
