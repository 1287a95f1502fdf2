//! `harness perf-gate` on hand-made bench reports: pass, a ratio below its floor, one within the
//! noise margin, a floor with no measurement, and malformed inputs (the error names the file and
//! the field). The reports are written by hand here; no timing is asserted.

use std::path::{Path, PathBuf};
use std::process::Command;

fn harness() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_harness"))
}

fn stats(v: f64) -> serde_json::Value {
    serde_json::json!({ "median": v, "min": v, "max": v, "samples": [v, v, v] })
}

/// A report with engine/llama.cpp rates giving the ratios asked for.
fn report(ratios: &[(usize, f64, f64)]) -> serde_json::Value {
    let results: Vec<serde_json::Value> = ratios
        .iter()
        .map(|&(threads, prefill, decode)| {
            serde_json::json!({
                "threads": threads,
                "bandwidth_gbs": 20.0,
                "bound_decode_tps": 73.0,
                "engine": { "prefill_tps": stats(100.0 * prefill), "decode_tps": stats(30.0 * decode) },
                "llama": { "prefill_tps": stats(100.0), "decode_tps": stats(30.0) },
                "prefill_ratio": prefill,
                "decode_ratio": decode,
                "engine_share_of_bound": 30.0 * decode / 73.0,
                "llama_share_of_bound": 30.0 / 73.0
            })
        })
        .collect();
    serde_json::json!({
        "schema_version": 1,
        "model": "m.gguf",
        "model_blake3": "00",
        "weight_bytes_per_token": 274000000u64,
        "prompt_tokens": 128,
        "decode_tokens": 64,
        "rounds": 3,
        "engine_kernel": "avx512",
        "engine_kernels": ["tq2_0_q8k_dot_avx512"],
        "reference": {
            "binary": "harness", "build_flags": {}, "n_ctx": 256, "n_batch": 128,
            "n_ubatch": 128, "kv_type": "f32", "flash_attn": false
        },
        "cpu_features": ["avx2"],
        "results": results,
        "started_at": "2026-11-22T00:00:00Z"
    })
}

fn baseline(margin: f64) -> serde_json::Value {
    serde_json::json!({
        "schema_version": 1,
        "note": "test floors",
        "noise_margin": margin,
        "floors": [
            { "threads": 1, "phase": "decode", "min_ratio": 1.5 },
            { "threads": 1, "phase": "prefill", "min_ratio": 1.2 },
            { "threads": 2, "phase": "decode", "min_ratio": 1.5 }
        ]
    })
}

fn gate(dir: &Path, base: &str, rep: &str) -> (i32, String) {
    let (b, r) = (dir.join("base.json"), dir.join("bench.json"));
    std::fs::write(&b, base).unwrap();
    std::fs::write(&r, rep).unwrap();
    let out = Command::new(harness())
        .args(["perf-gate", "--baseline"])
        .arg(&b)
        .arg("--bench")
        .arg(&r)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn ratios_at_or_above_their_floors_pass() {
    let d = tempfile::tempdir().unwrap();
    let (code, out) = gate(
        d.path(),
        &baseline(0.1).to_string(),
        &report(&[(1, 1.3, 1.6), (2, 1.0, 1.5)]).to_string(),
    );
    assert_eq!(code, 0, "{out}");
    // The floors in use, then one line per floor.
    assert_eq!(out.matches("pass  ").count(), 3, "{out}");
    assert!(
        out.contains("note  using the conservative floors (no entry for CPU `unknown`)"),
        "{out}"
    );
}

/// A report from a test build (the planted-bug switch compiled in, as `cargo test` builds the
/// binary) is refused whatever its ratios, naming the file and the field; the same report
/// without the mark passes.
#[test]
fn a_report_from_a_test_build_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut rep = report(&[(1, 1.3, 1.6), (2, 1.0, 1.5)]);
    rep["test_build"] = serde_json::json!(true);
    let (code, out) = gate(d.path(), &baseline(0.1).to_string(), &rep.to_string());
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("bench.json")
            && out.contains("`test_build` is true")
            && !out.contains("pass  "),
        "{out}"
    );
    rep["test_build"] = serde_json::json!(false);
    let (code, out) = gate(d.path(), &baseline(0.1).to_string(), &rep.to_string());
    assert_eq!(code, 0, "{out}");
}

/// Floors are per processor family: the entry whose `cpu_match` is part of the report's CPU
/// model applies, any other CPU gets the conservative floors; a noisy round set is named.
#[test]
fn floors_follow_the_cpu_model_and_noise_is_named() {
    let d = tempfile::tempdir().unwrap();
    let mut base = baseline(0.0);
    base["floors"] = serde_json::json!([{ "threads": 1, "phase": "decode", "min_ratio": 0.5 }]);
    base["cpus"] = serde_json::json!([{
        "cpu_match": "(family 25, model 17)",
        "note": "test",
        "floors": [{ "threads": 1, "phase": "decode", "min_ratio": 2.0 }]
    }]);
    let mut rep = report(&[(1, 1.3, 1.6)]);
    rep["cpu_model"] = "AMD EPYC 9R14 (family 25, model 17)".into();
    let (code, out) = gate(d.path(), &base.to_string(), &rep.to_string());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("using the floors of `(family 25, model 17)`"),
        "{out}"
    );
    assert!(
        out.contains("FAIL  decode at 1 thread(s): engine/llama.cpp 1.600x, floor 2.000x"),
        "{out}"
    );
    rep["cpu_model"] = "Some Other CPU (family 6, model 1)".into();
    let (code, out) = gate(d.path(), &base.to_string(), &rep.to_string());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("conservative floors (no entry for CPU `Some Other CPU"),
        "{out}"
    );
    // Engine decode samples 10, 48 and 60 (the median 48 keeps the ratio): spread 6x, named.
    rep["results"][0]["engine"]["decode_tps"] = serde_json::json!({ "median": 48.0, "min": 10.0, "max": 60.0, "samples": [60.0, 10.0, 48.0] });
    let (_, out) = gate(d.path(), &base.to_string(), &rep.to_string());
    assert!(
        out.contains("(noisy: engine decode [10.0-60.0] spreads more than 1.5x)"),
        "{out}"
    );
}

#[test]
fn a_ratio_below_its_floor_less_the_margin_fails_and_is_named() {
    let d = tempfile::tempdir().unwrap();
    // decode at 2 threads: 1.2 < 1.5 × 0.9 = 1.35.
    let (code, out) = gate(
        d.path(),
        &baseline(0.1).to_string(),
        &report(&[(1, 1.3, 1.6), (2, 1.0, 1.2)]).to_string(),
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  decode at 2 thread(s): engine/llama.cpp 1.200x"),
        "{out}"
    );
    assert_eq!(out.matches("FAIL").count(), 1, "{out}");
}

#[test]
fn the_noise_margin_is_applied() {
    let d = tempfile::tempdir().unwrap();
    // 1.4 is below the 1.5 floor but within 10%: passes; with no margin it fails.
    let rep = report(&[(1, 1.3, 1.4), (2, 1.0, 1.5)]).to_string();
    assert_eq!(gate(d.path(), &baseline(0.1).to_string(), &rep).0, 0);
    let (code, out) = gate(d.path(), &baseline(0.0).to_string(), &rep);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("decode at 1 thread(s)"), "{out}");
}

#[test]
fn a_floor_without_a_measurement_fails() {
    let d = tempfile::tempdir().unwrap();
    let (code, out) = gate(
        d.path(),
        &baseline(0.1).to_string(),
        &report(&[(1, 1.3, 1.6)]).to_string(),
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("decode at 2 thread(s): no measurement in the report"),
        "{out}"
    );
}

#[test]
fn malformed_inputs_name_the_file_and_the_field() {
    let d = tempfile::tempdir().unwrap();
    let rep = report(&[(1, 1.3, 1.6)]).to_string();
    // A misspelled field.
    let mut b = baseline(0.1);
    b["floors"][0] = serde_json::json!({ "threads": 1, "phase": "decode", "min_ration": 1.5 });
    let (code, out) = gate(d.path(), &b.to_string(), &rep);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("base.json") && out.contains("min_ration"),
        "{out}"
    );
    // Not JSON at all.
    let (code, out) = gate(d.path(), "floors: [", &rep);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("base.json") && out.contains("line 1"), "{out}");
    // A phase that does not exist.
    let mut b = baseline(0.1);
    b["floors"][0]["phase"] = "warmup".into();
    let (code, out) = gate(d.path(), &b.to_string(), &rep);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("base.json: `floors`[0]: `phase` is `warmup`, expected `prefill` or `decode`"),
        "{out}"
    );
    // A truncated report.
    let (code, out) = gate(d.path(), &baseline(0.1).to_string(), &rep[..rep.len() / 2]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("bench.json"), "{out}");
}

#[test]
fn the_shipped_baseline_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let b: bitnet_harness::bench::PerfBaseline =
        bitnet_harness::bench::read_json(&root.join("receipts/perf-baseline.json")).unwrap();
    assert_eq!(b.schema_version, 1);
    bitnet_harness::bench::check_baseline(&b).unwrap();
}

/// The gate reads the report's ratios, so a report that disagrees with itself is refused as bad
/// input (exit 2), naming the field: a ratio the medians do not give, statistics that are not their
/// samples', a thread count measured twice, a rate that is not a positive number. And a baseline
/// that cannot gate anything is refused the same way.
#[test]
fn an_edited_report_or_an_empty_baseline_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let base = baseline(0.1).to_string();
    type Edit = fn(&mut serde_json::Value);
    let cases: Vec<(Edit, &str)> = vec![
        (
            // Engine 30×0.5 = 15 tok/s against 30: the medians give 0.5, the file claims 2.
            |r| r["results"][0]["decode_ratio"] = 2.0.into(),
            "`results[0]` (1 threads): `decode_ratio` is 2, but the medians give 0.5000",
        ),
        (
            |r| r["results"][0]["prefill_ratio"] = serde_json::Value::Null,
            "`results[0]` (1 threads): `prefill_ratio` is missing beside a llama.cpp run",
        ),
        (
            |r| r["results"][0]["engine"]["decode_tps"]["median"] = 60.0.into(),
            "`results[0]` (1 threads): `engine.decode_tps`: median 60, min 15, max 15 are not its samples' (15, 15, 15)",
        ),
        (
            |r| r["results"][0]["llama"]["decode_tps"]["samples"] = serde_json::json!([]),
            "`llama.decode_tps` has 0 samples, expected 1 to 3 (one per round)",
        ),
        (
            |r| r["results"][0]["engine"]["prefill_tps"]["samples"][1] = (-1.0).into(),
            "`engine.prefill_tps` has the sample -1, expected a positive rate",
        ),
        (
            |r| {
                let second = r["results"][1].clone();
                r["results"][0]["threads"] = second["threads"].clone();
            },
            "`results[1]` (2 threads): a second result for 2 threads",
        ),
        (|r| r["rounds"] = 0.into(), "`rounds` 0"),
        (|r| r["schema_version"] = 2.into(), "`schema_version` is 2, expected 1"),
        (
            |r| r["reference_unavailable"] = "I2_S".into(),
            "`reference_unavailable` is set, yet results hold llama.cpp runs",
        ),
        (
            // The engine's 15 tok/s over the 73 tok/s bound is 0.2055, not 0.9.
            |r| r["results"][0]["engine_share_of_bound"] = 0.9.into(),
            "`results[0]` (1 threads): `engine_share_of_bound` is 0.9, but the decode median over `bound_decode_tps` gives 0.2055",
        ),
        (
            // 20 GB/s over 274 MB of weights is 72.99 tok/s, not 30.
            |r| r["results"][1]["bound_decode_tps"] = 30.0.into(),
            "`results[1]` (2 threads): `bound_decode_tps` is 30, but `bandwidth_gbs` over `weight_bytes_per_token` gives 72.9927",
        ),
        (
            // A subnormal read rate gives a bound so small that any share over it is infinite:
            // the stored share cannot match, however it was chosen.
            |r| {
                r["results"][0]["bandwidth_gbs"] = 1e-310.into();
                r["results"][0]["bound_decode_tps"] = (1e-310 * 1e9 / 274e6).into();
            },
            "`results[0]` (1 threads): `engine_share_of_bound` is 0.2054794520547945, but the decode median over `bound_decode_tps` gives inf",
        ),
        (
            |r| r["results"][0]["bandwidth_gbs"] = 0.0.into(),
            "`results[0]` (1 threads): `bandwidth_gbs` is 0, expected a positive read rate",
        ),
        (
            |r| r["results"][1]["llama_share_of_bound"] = serde_json::Value::Null,
            "`results[1]` (2 threads): `llama_share_of_bound` is missing beside a llama.cpp run",
        ),
    ];
    for (edit, says) in cases {
        let mut r = report(&[(1, 1.3, 0.5), (2, 1.0, 1.6)]);
        edit(&mut r);
        let (code, out) = gate(d.path(), &base, &r.to_string());
        assert_eq!(code, 2, "{says}: {out}");
        assert!(
            out.contains("bench.json: ") && out.contains(says),
            "{says}: {out}"
        );
    }
    // The unedited report gates normally (0.5 is below the 1.5 floor: exit 1, not 2).
    let (code, out) = gate(
        d.path(),
        &base,
        &report(&[(1, 1.3, 0.5), (2, 1.0, 1.6)]).to_string(),
    );
    assert_eq!(code, 1, "{out}");
    let rep = report(&[(1, 1.3, 1.6), (2, 1.0, 1.6)]).to_string();
    let bases: Vec<(Edit, &str)> = vec![
        (|b| b["floors"] = serde_json::json!([]), "`floors` is empty"),
        (
            |b| b["floors"][0]["min_ratio"] = (-5.0).into(),
            "`floors`[0]: `min_ratio` is -5",
        ),
        (
            |b| b["floors"][1]["phase"] = "decode".into(),
            "`floors`[1]: a second floor for decode at 1 threads",
        ),
        (
            |b| b["cpus"] = serde_json::json!([{ "cpu_match": "", "note": "", "floors": [] }]),
            "`cpus[0].cpu_match` is empty",
        ),
        (
            |b| b["cpus"] = serde_json::json!([{ "cpu_match": "EPYC", "note": "", "floors": [] }]),
            "`cpus[0].floors` is empty",
        ),
        (|b| b["noise_margin"] = 1.0.into(), "`noise_margin` is 1"),
        (
            |b| b["engine_only_floors"] = serde_json::json!([{ "threads": 1, "min_share": 1.5 }]),
            "`engine_only_floors`[0]: `min_share` is 1.5, expected a share of the bound above 0 and at most 1",
        ),
        (
            |b| {
                b["cpus"] = serde_json::json!([{
                    "cpu_match": "EPYC", "note": "",
                    "floors": [{ "threads": 1, "phase": "decode", "min_ratio": 1.0 }],
                    "engine_only_floors": [{ "threads": 2, "min_share": 0.5 }, { "threads": 2, "min_share": 0.6 }]
                }])
            },
            "`cpus[0].engine_only_floors`[1]: a second floor for 2 threads",
        ),
    ];
    for (edit, says) in bases {
        let mut b = baseline(0.1);
        edit(&mut b);
        let (code, out) = gate(d.path(), &b.to_string(), &rep);
        assert_eq!(code, 2, "{says}: {out}");
        assert!(
            out.contains("base.json: ") && out.contains(says),
            "{says}: {out}"
        );
    }
}

/// A report the engine ran alone (a model llama.cpp cannot run): decode at `decode_tps` tok/s per
/// thread count against a 73 tok/s bound (20 GB/s over 274 MB), no llama.cpp side.
fn engine_only_report(decodes: &[(usize, f64)]) -> serde_json::Value {
    let mut r = report(&[(1, 1.0, 1.0)]);
    r["reference"] = serde_json::Value::Null;
    r["reference_unavailable"] =
        "llama.cpp cannot run architecture `bitnet-b1.58` (bitnet.cpp's ReLU² graph)".into();
    r["results"] = decodes
        .iter()
        .map(|&(threads, decode)| {
            serde_json::json!({
                "threads": threads,
                "bandwidth_gbs": 20.0,
                "bound_decode_tps": 73.0,
                "engine": { "prefill_tps": stats(40.0), "decode_tps": stats(decode) },
                "llama": null,
                "prefill_ratio": null,
                "decode_ratio": null,
                "engine_share_of_bound": decode / 73.0,
                "llama_share_of_bound": null
            })
        })
        .collect();
    r
}

/// A report the engine ran alone is held to the engine-only floors: its decode share of the
/// bandwidth bound, by the CPU's entry or else the conservative ones; a share below its floor
/// less the margin fails and is named with the reason the engine ran alone; a baseline with no
/// engine-only floors cannot pass such a report.
#[test]
fn engine_only_reports_are_held_to_their_share_floors() {
    let d = tempfile::tempdir().unwrap();
    let mut base = baseline(0.1);
    base["engine_only_floors"] = serde_json::json!([{ "threads": 1, "min_share": 0.5 }]);
    base["cpus"] = serde_json::json!([
        {
            "cpu_match": "(family 25, model 17)",
            "note": "test",
            "floors": [{ "threads": 1, "phase": "decode", "min_ratio": 1.5 }],
            "engine_only_floors": [{ "threads": 1, "min_share": 0.7 }, { "threads": 2, "min_share": 0.7 }]
        },
        {
            "cpu_match": "(family 6, model 167)",
            "note": "ratio floors only",
            "floors": [{ "threads": 1, "phase": "decode", "min_ratio": 1.5 }]
        }
    ]);
    // 43.8 of 73 tok/s: 60% of the bound, above the conservative 50% less 10% = 45%.
    let mut rep = engine_only_report(&[(1, 43.8)]);
    let (code, out) = gate(d.path(), &base.to_string(), &rep.to_string());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "note  using the conservative engine-only floors (no engine-only entry for CPU \
             `unknown`): the engine ran alone (llama.cpp cannot run architecture `bitnet-b1.58`"
        ) && out.contains(
            "pass  decode at 1 thread(s): engine alone at 60.0% of the bandwidth bound (43.8 of \
             73.0 tok/s at 20.0 GB/s), floor 50.0% less 10% = 45.0%"
        ),
        "{out}"
    );
    // A CPU whose entry has ratio floors only gets the conservative engine-only ones too.
    rep["cpu_model"] = "Intel(R) Xeon(R) Processor (family 6, model 167)".into();
    let (code, out) = gate(d.path(), &base.to_string(), &rep.to_string());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("conservative engine-only floors (no engine-only entry for CPU `Intel"),
        "{out}"
    );
    // Zen 4's own floors: 60% is below 70% less 10% = 63%, and 2 threads were not measured.
    rep["cpu_model"] = "AMD EPYC (family 25, model 17)".into();
    let (code, out) = gate(d.path(), &base.to_string(), &rep.to_string());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("note  using the engine-only floors of `(family 25, model 17)`")
            && out.contains(
                "FAIL  decode at 1 thread(s): engine alone at 60.0% of the bandwidth bound"
            )
            && out.contains("FAIL  decode at 2 thread(s): no measurement in the report"),
        "{out}"
    );
    // Both thread counts at 65% and 90%: both pass.
    let mut rep = engine_only_report(&[(1, 0.65 * 73.0), (2, 0.9 * 73.0)]);
    rep["cpu_model"] = "AMD EPYC (family 25, model 17)".into();
    let (code, out) = gate(d.path(), &base.to_string(), &rep.to_string());
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("pass  decode at").count(), 2, "{out}");
    // Without engine-only floors in the baseline, such a report cannot pass.
    let (code, out) = gate(d.path(), &baseline(0.1).to_string(), &rep.to_string());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("the baseline has no engine-only floors to hold this report to"),
        "{out}"
    );
}

/// The library's gate refuses a baseline whose noise margin is out of range on either path (the
/// CLI checks the baseline first; a caller of the library may not): a margin of 1.5 would turn
/// every floor negative and pass anything.
#[test]
fn the_library_gate_refuses_an_out_of_range_noise_margin_on_either_path() {
    let mut base = baseline(1.5);
    base["engine_only_floors"] = serde_json::json!([{ "threads": 1, "min_share": 0.5 }]);
    let base: bitnet_harness::bench::PerfBaseline = serde_json::from_value(base).unwrap();
    // 20% of the bound, and a ratio of 0.5: both far below their floors.
    let engine_only: bitnet_harness::bench::BenchReport =
        serde_json::from_value(engine_only_report(&[(1, 0.2 * 73.0)])).unwrap();
    let both: bitnet_harness::bench::BenchReport =
        serde_json::from_value(report(&[(1, 0.5, 0.5)])).unwrap();
    for (name, rep) in [("engine alone", &engine_only), ("against llama.cpp", &both)] {
        let err = bitnet_harness::bench::gate(&base, rep).expect_err(name);
        assert!(
            err.len() == 1 && err[0].contains("`noise_margin` is 1.5, expected 0 to below 1"),
            "{name}: {err:?}"
        );
    }
    // The same reports under a sound margin fail on their floors, as they should.
    let mut sound = base.clone();
    sound.noise_margin = 0.1;
    for rep in [&engine_only, &both] {
        let err = bitnet_harness::bench::gate(&sound, rep).expect_err("below the floors");
        assert!(err.iter().any(|l| l.contains("thread(s)")), "{err:?}");
    }
}

/// The shipped baseline holds an engine-only report on the conservative floors too (a CPU with
/// no entry), so the `2b4t` bench can be gated anywhere.
#[test]
fn the_shipped_baseline_has_conservative_engine_only_floors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let b: bitnet_harness::bench::PerfBaseline =
        bitnet_harness::bench::read_json(&root.join("receipts/perf-baseline.json")).unwrap();
    let threads: Vec<usize> = b.engine_only_floors.iter().map(|f| f.threads).collect();
    assert_eq!(threads, [1, 2]);
}
