//! The receipt changes of the campaign: forgeries of fields the gate can check (each must be
//! refused), and changes only `verify-receipt --reproduce` can see (accepted by design).

use super::harness_bodies::ReceiptFixture;
use super::Rng;
use serde_json::{json, Value as Json};

/// A forged receipt: the valid one with `edit` applied.
pub(super) type Forgery = (String, Json);

/// Forgeries of fields the gate can check: each must be refused.
pub(super) fn checkable_forgery(rng: &mut Rng, fx: &ReceiptFixture) -> Forgery {
    let mut r = fx.valid_receipt();
    let hex = |rng: &mut Rng, n: usize| -> String {
        (0..n)
            .map(|_| char::from_digit(rng.below(16) as u32, 16).unwrap())
            .collect()
    };
    let path_forgeries = [
        "",
        ".",
        "models",
        "models/none.gguf",
        "/dev/null",
        "/dev/zero",
        "/proc/self/pagemap",
        "/proc/self/status",
        "scenarios/small.yaml",
        "goldens/small.snap",
        "../models/small.gguf",
        "models/small.gguf/",
        "models/small.gguf\0",
    ];
    let label = match rng.below(22) {
        0 => {
            let v = *rng.pick(&[
                0.0,
                -1.0,
                5e-324,
                1e-4,
                9.99e-4,
                1.000001e8,
                1e300,
                1.8446744073709552e19,
            ]);
            let f = *rng.pick(&[
                "prefill_tps",
                "decode_tps",
                "reference_prefill_tps",
                "reference_decode_tps",
            ]);
            r["throughput"][f] = json!(v);
            format!("throughput.{f} = {v}")
        }
        1 => {
            let f = *rng.pick(&["reference_prefill_tps", "reference_decode_tps"]);
            r["throughput"][f] = Json::Null;
            format!("throughput.{f} = null (parity passed)")
        }
        2 => {
            let p = *rng.pick(&path_forgeries);
            r["model"] = json!(p);
            if rng.percent(30) {
                // A forger states the hash of what the path holds: here, nothing.
                r["model"] = json!("models/empty.gguf");
                r["model_blake3"] = json!(blake3::hash(b"").to_hex().to_string());
                "model = models/empty.gguf, with the empty hash".to_string()
            } else {
                format!("model = {p:?}")
            }
        }
        3 => {
            let p = match *rng.pick(&path_forgeries) {
                "scenarios/small.yaml" => "scenarios/../models/small.gguf",
                p => p,
            };
            r["scenario_file"] = json!(p);
            format!("scenario_file = {p:?}")
        }
        4 | 5 => {
            let f = *rng.pick(&["model_blake3", "scenario_blake3", "trace_digest"]);
            let real = r[f].as_str().unwrap().to_string();
            let v = match rng.below(4) {
                0 => hex(rng, 64),
                1 => real.to_uppercase(),
                2 => real[..63].to_string(),
                _ => format!("{}g", &real[..63]),
            };
            let v = if v == real { "0".repeat(64) } else { v };
            r[f] = json!(v);
            format!("{f} = {v}")
        }
        6 => {
            let v = *rng.pick(&[-1.0, 604801.0, 1e19, 1.7e308]);
            r["duration_seconds"] = json!(v);
            format!("duration_seconds = {v}")
        }
        7 => {
            let v = *rng.pick(&[
                "2999-01-01T00:00:00Z",
                "2026-09-21T14:30:00Z",
                "2001-01-01T00:00:00Z",
                "2026-08-01T00:00:00Z",
                "yesterday",
                "",
                "2026-02-30T00:00:00Z",
                "2026-09-21 12:00:00",
                "99999-01-01T00:00:00Z",
            ]);
            r["started_at"] = json!(v);
            format!("started_at = {v}")
        }
        8 => {
            let isa = *rng.pick(&["neon", "avx512", "cuda", "sse"]);
            let k: Vec<Json> = r["kernels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| {
                    let s = k.as_str().unwrap();
                    match s.rsplit_once('_') {
                        Some((base, "avx2")) => json!(format!("{base}_{isa}")),
                        _ => k.clone(),
                    }
                })
                .collect();
            r["kernels"] = json!(k);
            format!("kernels switched to {isa}")
        }
        9 => {
            let keep: Vec<Json> = r["kernels"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|k| *k != "tq2_0_q8k_dot_avx2")
                .filter(|_| rng.percent(50))
                .cloned()
                .collect();
            r["kernels"] = json!(keep);
            format!("kernels cut to {keep:?} (the scenario requires tq2_0_q8k_dot_avx2)")
        }
        10 => {
            let k = *rng.pick(&[
                "q4_q8_dot_scalar",
                "tq3_0_q8k_dot_avx2",
                "tq2_0_q8k_dot_avx2x",
                "f16_f16_dot_avx512",
                "tq2_0_q8k_dot_neon",
                "tq2_0_q8k_dot_cuda",
                "TQ2_0_Q8K_DOT_AVX2",
                "",
            ]);
            r["kernels"].as_array_mut().unwrap().push(json!(k));
            format!("kernel `{k}` added")
        }
        11 => {
            let checks: Vec<String> = r["verdicts"].as_object().unwrap().keys().cloned().collect();
            let c = rng.pick(&checks).clone();
            r["verdicts"].as_object_mut().unwrap().remove(&c);
            format!("verdict `{c}` dropped")
        }
        12 => {
            let checks: Vec<String> = r["verdicts"].as_object().unwrap().keys().cloned().collect();
            let c = rng.pick(&checks).clone();
            let v = *rng.pick(&["fail", "FAIL", "passed", "", "skipped", "ignored"]);
            r["verdicts"][&c] = json!(v);
            format!("verdict `{c}` = {v:?}")
        }
        13 => {
            let v = match rng.below(4) {
                0 => hex(rng, 40),
                1 => hex(rng, 39),
                2 => "HEAD".into(),
                _ => "main".into(),
            };
            r["engine"]["git_commit"] = json!(v);
            format!("engine.git_commit = {v}")
        }
        14 => {
            let v = *rng.pick(&["0.1.1", "9.9.9", "", "0.1.0-dev", "v0.1.0"]);
            r["engine"]["version"] = json!(v);
            format!("engine.version = {v:?}")
        }
        15 => {
            let v = *rng.pick(&[0u64, 2, 7, 256, 1 << 40]);
            r["threads"] = json!(v);
            format!("threads = {v}")
        }
        16 => {
            let v = *rng.pick(&["cuda", "gpu", "", "CPU", "metal"]);
            r["backend"] = json!(v);
            format!("backend = {v:?}")
        }
        17 => {
            let v = *rng.pick(&["mock", "replay", "", "REAL", "real "]);
            r["compute_path"] = json!(v);
            format!("compute_path = {v:?}")
        }
        18 => {
            let v = *rng.pick(&["other", "", "small.yaml", "../small", "SMALL"]);
            r["scenario"] = json!(v);
            format!("scenario = {v:?}")
        }
        19 => {
            match rng.below(3) {
                0 => r["build"]["target_arch"] = json!(*rng.pick(&["aarch64", "", "riscv64"])),
                1 => {
                    let f: Vec<Json> = r["build"]["cpu_features"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|f| *f != "avx2")
                        .cloned()
                        .collect();
                    r["build"]["cpu_features"] = json!(f);
                }
                _ => r["build"]["profile"] = json!(*rng.pick(&["fast", "", "Release"])),
            }
            format!("build = {}", r["build"])
        }
        20 => {
            let v = *rng.pick(&[0u64, 2, 100]);
            r["schema_version"] = json!(v);
            format!("schema_version = {v}")
        }
        _ => {
            // The scenario asks for at least 1 decode token/s.
            let v = *rng.pick(&[0.5, 0.01]);
            r["throughput"]["decode_tps"] = json!(v);
            format!("throughput.decode_tps = {v}, under the scenario's min_decode_tps 1")
        }
    };
    (label, r)
}

/// Changes no gate can see without re-running the scenario (`verify-receipt --reproduce` checks
/// the digest and the tokens/s): accepted by design, counted apart.
pub(super) fn unverifiable_change(rng: &mut Rng, fx: &ReceiptFixture) -> Forgery {
    let mut r = fx.valid_receipt();
    let label = match rng.below(8) {
        0 => {
            r["engine"]["git_dirty"] = json!(true);
            "engine.git_dirty = true".to_string()
        }
        1 => {
            r["build"]["cpu_features"]
                .as_array_mut()
                .unwrap()
                .push(json!("avx512f"));
            "cpu feature avx512f added".into()
        }
        2 => {
            let v = 1.0 + rng.below(100_000) as f64;
            r["throughput"]["prefill_tps"] = json!(v);
            format!("throughput.prefill_tps = {v} (in range)")
        }
        3 => {
            r["started_at"] = json!("2026-09-20T08:00:00Z");
            "started_at a day earlier".into()
        }
        4 => {
            r["duration_seconds"] = json!(600.0);
            "duration_seconds = 600".into()
        }
        5 => {
            r["build"]["profile"] = json!("debug");
            "build.profile = debug".into()
        }
        6 => {
            r["kernels"] = json!(["tq2_0_q8k_dot_avx2"]);
            "kernels cut to the required one".into()
        }
        _ => {
            r["engine"]["git_commit"] = json!("unknown");
            "engine.git_commit = unknown".into()
        }
    };
    (label, r)
}

/// What an accepted receipt must still say: the fields the gate checks, as the valid one says
/// them (a commit in either case names the same object).
pub(super) fn checkable_fields(r: &Json) -> Json {
    let mut c = r.clone();
    let o = c.as_object_mut().unwrap();
    for unverifiable in [
        "throughput",
        "started_at",
        "duration_seconds",
        "kernels",
        "build",
    ] {
        o.remove(unverifiable);
    }
    o["engine"]["git_dirty"] = Json::Null;
    if let Some(s) = o["engine"]["git_commit"].as_str() {
        o["engine"]["git_commit"] = json!(s.to_lowercase());
    }
    c
}
