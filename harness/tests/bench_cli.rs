//! `harness bench` as a user runs it, on the tiny preset with few tokens: the report's shape and
//! provenance (not its speed: timings are never asserted), the receipt's bench section, and the
//! errors for bad arguments.

use std::path::Path;
use std::process::{Command, Output};

use bitnet_harness::bench::BenchReport;

fn harness(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(dir)
        .args(args)
        .env_remove("CI")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_bench_report_names_both_sides_and_is_consistent() {
    let d = tempfile::tempdir().unwrap();
    let out = harness(
        d.path(),
        &[
            "bench",
            "--preset",
            "tiny",
            "--threads",
            "1,2",
            "--rounds",
            "2",
            "--prompt-tokens",
            "8",
            "--decode-tokens",
            "4",
            "--json",
            "bench.json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("prefill") && t.contains("decode") && t.contains("share of bound"),
        "{t}"
    );
    let r: BenchReport =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("bench.json")).unwrap())
            .unwrap();
    assert_eq!(
        r.results.iter().map(|x| x.threads).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!((r.prompt_tokens, r.decode_tokens, r.rounds), (8, 4, 2));
    // The weight bytes are the model file's tensor bytes, read independently here from the
    // GGUF's tensor table.
    let f = bitnet_engine::gguf::GgufFile::open(Path::new(&d.path().join(&r.model))).unwrap();
    let bytes: u64 = f.tensors().iter().map(|t| t.n_bytes).sum();
    assert_eq!(r.weight_bytes_per_token, bytes);
    assert_eq!(
        r.reference.build_flags.get("GGML_AVX2").map(String::as_str),
        Some("ON")
    );
    assert_eq!(
        (r.reference.kv_type.as_str(), r.reference.flash_attn),
        ("f32", false)
    );
    assert!(
        r.engine_kernels
            .iter()
            .any(|k| k.starts_with("tq2_0_q8k_dot_")),
        "{:?}",
        r.engine_kernels
    );
    for t in &r.results {
        for s in [
            &t.engine.prefill_tps,
            &t.engine.decode_tps,
            &t.llama.prefill_tps,
            &t.llama.decode_tps,
        ] {
            assert_eq!(s.samples.len(), 2);
            assert!(
                s.min <= s.median && s.median <= s.max && s.min > 0.0,
                "{s:?}"
            );
        }
        let ratio = t.engine.decode_tps.median / t.llama.decode_tps.median;
        assert!((t.decode_ratio - ratio).abs() <= 1e-12 * ratio);
        assert!(t.bandwidth_gbs > 0.0);
        let bound = t.bandwidth_gbs * 1e9 / r.weight_bytes_per_token as f64;
        assert!((t.bound_decode_tps - bound).abs() <= 1e-9 * bound);
    }
}

#[test]
fn a_receipt_takes_the_bench_section_and_still_verifies() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    std::fs::write(
        root.join("scenarios/small.yaml"),
        "description: small\nmodel:\n  preset: tiny\ninputs:\n  tokens:\n    - [1, 2, 3, 4]\n",
    )
    .unwrap();
    assert!(harness(root, &["bless"]).status.success());
    let out = harness(root, &["run"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = harness(
        root,
        &[
            "bench",
            "--preset",
            "tiny",
            "--threads",
            "1",
            "--rounds",
            "1",
            "--prompt-tokens",
            "4",
            "--decode-tokens",
            "2",
            "--receipt",
            "receipts/small.json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("receipts/small.json")).unwrap())
            .unwrap();
    assert_eq!(v["bench"]["results"][0]["threads"], 1);
    let out = harness(root, &["verify-receipt", "receipts/small.json"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn bad_arguments_are_usage_errors() {
    let d = tempfile::tempdir().unwrap();
    for (args, want) in [
        (
            &["bench", "missing.gguf"][..],
            "model file `missing.gguf` does not exist",
        ),
        (
            &["bench", "--preset", "huge"][..],
            "unknown preset `huge`; expected one of",
        ),
        (&["bench"][..], "give a MODEL path or --preset NAME"),
        (
            &["bench", "--preset", "tiny", "--threads", "0"][..],
            "--threads",
        ),
        (
            &["bench", "--preset", "tiny", "--kernel", "sse9"][..],
            "unknown kernel `sse9`",
        ),
    ] {
        let out = harness(d.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(want), "{args:?}: {}", text(&out));
    }
}

#[test]
fn an_i2_s_model_is_refused_before_measuring_saying_why() {
    let d = tempfile::tempdir().unwrap();
    let out = harness(d.path(), &["bench", "--preset", "i2s", "--rounds", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(
            "`blk.0.attn_q.weight` is I2_S, bitnet.cpp's type, which llama.cpp does not read"
        ) && !t.contains("measuring"),
        "{t}"
    );
}
