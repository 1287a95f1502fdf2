//! `harness bench` as a user runs it, on the tiny preset with few tokens: the report's shape and
//! provenance (not its speed: timings are never asserted), the receipt's bench section, and the
//! errors for bad arguments.

use std::path::Path;
use std::process::Command;

use bitnet_harness::bench::BenchReport;

mod common;
use common::{harness, text};

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
    let reference = r.reference.as_ref().expect("llama.cpp ran");
    assert_eq!(r.reference_unavailable, None);
    assert_eq!(
        reference.build_flags.get("GGML_AVX2").map(String::as_str),
        Some("ON")
    );
    assert_eq!(
        (reference.kv_type.as_str(), reference.flash_attn),
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
        let llama = t.llama.as_ref().expect("llama.cpp ran");
        for s in [
            &t.engine.prefill_tps,
            &t.engine.decode_tps,
            &llama.prefill_tps,
            &llama.decode_tps,
        ] {
            assert_eq!(s.samples.len(), 2);
            assert!(
                s.min <= s.median && s.median <= s.max && s.min > 0.0,
                "{s:?}"
            );
        }
        let ratio = t.engine.decode_tps.median / llama.decode_tps.median;
        assert!((t.decode_ratio.unwrap() - ratio).abs() <= 1e-12 * ratio);
        assert!(t.bandwidth_gbs > 0.0);
        let bound = t.bandwidth_gbs * 1e9 / r.weight_bytes_per_token as f64;
        assert!((t.bound_decode_tps - bound).abs() <= 1e-9 * bound);
        let with_kv =
            t.bandwidth_gbs * 1e9 / (r.weight_bytes_per_token + r.kv_bytes_per_token) as f64;
        assert!((t.bound_with_kv_decode_tps - with_kv).abs() <= 1e-9 * with_kv);
    }
    // The KV cache a decode step reads, from the model's shape read here from the GGUF's
    // metadata: steps attend to 9..=12 positions (10.5 on average) of a key and a value of
    // n_head_kv × head_dim F32 values per layer.
    let key = |k: &str| {
        f.get(k)
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("{k}"))
    };
    let (layers, heads, kv_heads, embd) = (
        key("bitnet.block_count"),
        key("bitnet.attention.head_count"),
        key("bitnet.attention.head_count_kv"),
        key("bitnet.embedding_length"),
    );
    let per_position = layers * kv_heads * (embd / heads) * 2 * 4;
    assert_eq!(r.kv_bytes_per_token * 2, per_position * 21);
    assert!(t.contains("with the KV cache"), "{t}");
    // The weights-only share's ceiling at this prompt length: weights / (weights + KV bytes).
    let ceiling = 100.0 * r.weight_bytes_per_token as f64
        / (r.weight_bytes_per_token + r.kv_bytes_per_token) as f64;
    assert!(ceiling < 100.0, "{ceiling}");
    assert!(
        t.contains(&format!(
            "reaches at most {ceiling:.0}% of the weights-only bound"
        )),
        "{t}"
    );
    // The weights are held in huge pages by default (where the kernel has THP), and the table
    // says where they were.
    assert!(
        r.weight_pages.starts_with("huge pages (THP ") || r.weight_pages == "small pages",
        "{}",
        r.weight_pages
    );
    assert!(
        t.contains(&format!("engine weights in {}", r.weight_pages)),
        "{t}"
    );
}

/// `BITNET_WEIGHT_PAGES=file` keeps the weights in the file's pages, and the report says so; a
/// value it does not know is a usage error naming the variable and what it takes.
#[test]
fn the_weight_pages_setting_reaches_the_report_and_a_bad_one_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let bench = |pages: &str| {
        Command::new(env!("CARGO_BIN_EXE_harness"))
            .current_dir(d.path())
            .args([
                "bench",
                "--preset",
                "tiny",
                "--threads",
                "1",
                "--rounds",
                "1",
            ])
            .args([
                "--prompt-tokens",
                "4",
                "--decode-tokens",
                "2",
                "--json",
                "b.json",
            ])
            .args(["--kernel", "scalar"])
            .env("BITNET_WEIGHT_PAGES", pages)
            .output()
            .unwrap()
    };
    let out = bench("file");
    assert!(out.status.success(), "{}", text(&out));
    let r: BenchReport =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("b.json")).unwrap()).unwrap();
    assert_eq!(r.weight_pages, "file map");
    assert!(
        text(&out).contains("engine weights in file map"),
        "{}",
        text(&out)
    );
    // `harness preflight` says what a load will do, by default and with the setting.
    let preflight = |pages: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_harness"));
        c.current_dir(d.path()).args(["preflight", "--json"]);
        match pages {
            Some(p) => c.env("BITNET_WEIGHT_PAGES", p),
            None => c.env_remove("BITNET_WEIGHT_PAGES"),
        };
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["weight_pages"].as_str().unwrap().to_string()
    };
    let default = preflight(None);
    assert!(
        default.starts_with("copied into huge pages (THP ") || default.contains("THP never"),
        "{default}"
    );
    assert_eq!(
        preflight(Some("file")),
        "the file's pages (BITNET_WEIGHT_PAGES=file)"
    );
    // It reports a bad value (and still exits 0), where other commands refuse it.
    assert!(
        preflight(Some("files")).starts_with(
            "none: environment variable BITNET_WEIGHT_PAGES is `files`, expected `huge`"
        ),
        "{}",
        preflight(Some("files"))
    );
    for bad in ["files", "Huge"] {
        let out = bench(bad);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out));
        assert!(
            text(&out).contains(&format!(
                "environment variable BITNET_WEIGHT_PAGES is `{bad}`, expected `huge`"
            )),
            "{}",
            text(&out)
        );
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
    // The bench section is held to what `harness bench` writes, and to the receipt's model.
    type Edit = fn(&mut serde_json::Value);
    let edits: [(&str, Edit, i32, &str); 3] = [
        (
            "a median that is not its samples'",
            |v| v["bench"]["results"][0]["engine"]["decode_tps"]["median"] = 1e12.into(),
            17,
            "field `bench`: `results[0]` (1 threads): `engine.decode_tps`: median",
        ),
        (
            "no results",
            |v| v["bench"]["results"] = serde_json::json!([]),
            17,
            "field `bench`: `results` is empty",
        ),
        (
            "another model's bench",
            |v| v["bench"]["model_blake3"] = "ab".repeat(32).into(),
            15,
            "field `bench.model_blake3`",
        ),
    ];
    for (what, edit, code, want) in edits {
        let mut forged = v.clone();
        edit(&mut forged);
        std::fs::write(
            root.join("receipts/forged.json"),
            serde_json::to_string_pretty(&forged).unwrap(),
        )
        .unwrap();
        let out = harness(root, &["verify-receipt", "receipts/forged.json"]);
        assert_eq!(out.status.code(), Some(code), "{what}: {}", text(&out));
        assert!(text(&out).contains(want), "{what}: {}", text(&out));
    }
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
        (
            &[
                "bench",
                "--preset",
                "tiny",
                "--kernel",
                "scalar prefetch 4096",
            ][..],
            "--kernel: `scalar prefetch 4096`: the `scalar` kernels take no prefetch distance",
        ),
        (
            &["bench", "--preset", "tiny", "--kernel", "scalar tiles 4"][..],
            "at most `rows N`, `tokens N`, `prefetch BYTES` and `kv huge|small` once each, found \
             `tiles`",
        ),
        // Output paths refused before anything is measured (no llama.cpp reachable here:
        // `--reference-bin` names nothing, so a bench that ran would fail otherwise).
        (
            &[
                "bench",
                "--preset",
                "tiny",
                "--reference-bin",
                "/nonexistent",
                "--json",
                "/",
            ][..],
            "cannot write `/`",
        ),
        (
            &[
                "bench",
                "--preset",
                "tiny",
                "--reference-bin",
                "/nonexistent",
                "--json",
                "no/dir/b.json",
            ][..],
            "cannot write `no/dir/b.json`",
        ),
        (
            &[
                "bench",
                "--preset",
                "tiny",
                "--reference-bin",
                "/nonexistent",
                "--receipt",
                "absent.json",
            ][..],
            "absent.json",
        ),
    ] {
        let out = harness(d.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(want), "{args:?}: {}", text(&out));
    }
}

/// `--kernel` and `BITNET_KERNEL` take knobs after the variant: the bench runs them on every kind
/// of product that takes them and names them in its report; bad knobs are usage errors.
#[test]
fn forced_knobs_run_on_every_kind_and_are_reported() {
    use bitnet_engine::kernels::Kernel;
    let d = tempfile::tempdir().unwrap();
    let simd = Kernel::best();
    if !Kernel::Vnni256.is_available() && simd == Kernel::Scalar {
        eprintln!("skipped: no SIMD variant here takes knobs");
        return;
    }
    // The 256-bit VNNI variant's groups where this CPU runs it, else the best variant's
    // prefetch distance alone.
    let (spec, decode, prefill) = if Kernel::Vnni256.is_available() {
        (
            "vnni256 rows 8 tokens 2 prefetch 0",
            "vnni256 rows 8 prefetch 0",
            "vnni256 tokens 2",
        )
    } else {
        ("avx2 prefetch 0", "avx2 prefetch 0", "avx2")
    };
    for from_env in [false, true] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
        cmd.current_dir(d.path())
            .args([
                "bench",
                "--preset",
                "tiny",
                "--threads",
                "1",
                "--rounds",
                "1",
                "--prompt-tokens",
                "8",
                "--decode-tokens",
                "2",
                "--json",
                "forced.json",
            ])
            .env_remove("CI");
        if from_env {
            cmd.env("BITNET_KERNEL", spec);
        } else {
            cmd.env_remove("BITNET_KERNEL").args(["--kernel", spec]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let r: BenchReport =
            serde_json::from_str(&std::fs::read_to_string(d.path().join("forced.json")).unwrap())
                .unwrap();
        assert_eq!(r.engine_kernel, spec);
        let plan = &r.results[0].engine_plan;
        assert_eq!(plan["TQ2_0/decode"], decode, "{plan:?}");
        assert_eq!(plan["TQ2_0/prefill"], prefill, "{plan:?}");
        // The F16 products take the distance but no group.
        let f16 = if spec.starts_with("vnni256") {
            "vnni256 prefetch 0"
        } else {
            "avx2 prefetch 0"
        };
        assert_eq!(plan["F16/decode"], f16, "{plan:?}");
        // The engine ran that variant's kernels, and no other's.
        assert!(
            !r.engine_kernels.iter().any(|k| k.ends_with("_avx512")),
            "{:?}",
            r.engine_kernels
        );
    }
}

/// I2_S and `bitnet-b1.58` models, which upstream llama.cpp does not run, are timed engine-only
/// against the bandwidth bound, and the report says that there is no side-by-side reference.
#[test]
fn i2_s_and_b158_models_run_engine_only_saying_why() {
    let d = tempfile::tempdir().unwrap();
    for (preset, why) in [
        (
            "i2s",
            "llama.cpp cannot read I2_S weights (type 36, bitnet.cpp's own; `token_embd.weight` is one)",
        ),
        (
            "b158-tiny",
            "llama.cpp cannot run architecture `bitnet-b1.58`",
        ),
    ] {
        let out = harness(
            d.path(),
            &[
                "bench",
                "--preset",
                preset,
                "--threads",
                "1",
                "--rounds",
                "2",
                "--prompt-tokens",
                "4",
                "--decode-tokens",
                "2",
                "--json",
                "bench.json",
            ],
        );
        assert!(out.status.success(), "{preset}: {}", text(&out));
        let t = text(&out);
        assert!(t.contains("no side-by-side reference"), "{preset}: {t}");
        assert!(!t.contains("llama.cpp prefill"), "{preset}: {t}");
        let r: BenchReport =
            serde_json::from_str(&std::fs::read_to_string(d.path().join("bench.json")).unwrap())
                .unwrap();
        let unavailable = r.reference_unavailable.as_deref().unwrap_or("");
        assert!(
            unavailable.starts_with(why.split(" (").next().unwrap()),
            "{preset}: {unavailable}"
        );
        // The reason alone: a scenario's advice (`reference:` in its YAML) is no use to a bench
        // report, nor to `harness perf-gate`, which prints the reason when it refuses one.
        assert!(!unavailable.contains("scenario"), "{preset}: {unavailable}");
        assert!(!t.contains("scenario"), "{preset}: {t}");
        assert!(r.reference.is_none());
        let x = &r.results[0];
        assert!(x.llama.is_none() && x.decode_ratio.is_none() && x.prefill_ratio.is_none());
        assert_eq!(x.engine.decode_tps.samples.len(), 2);
        let bound = x.bandwidth_gbs * 1e9 / r.weight_bytes_per_token as f64;
        assert!((x.bound_decode_tps - bound).abs() <= 1e-9 * bound);
        assert!((x.engine_share_of_bound - x.engine.decode_tps.median / bound).abs() <= 1e-9);
        assert!(r.engine_kernels.iter().any(|k| k.starts_with("i2_s_i8_dot_")), "{:?}", r.engine_kernels);
    }
}

/// Without `--kernel` (and `BITNET_KERNEL`), each kind of product runs on the variant measured
/// fastest for it here: the plan is in the report per thread count, cached in
/// `target/harness/tune.json` by CPU model, shape and threads, and reused by the next run.
#[test]
fn the_kernel_plan_is_measured_once_cached_and_reported() {
    let d = tempfile::tempdir().unwrap();
    let args = [
        "bench",
        "--preset",
        "f16",
        "--threads",
        "1",
        "--rounds",
        "1",
        "--prompt-tokens",
        "8",
        "--decode-tokens",
        "2",
        "--json",
        "bench.json",
    ];
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_harness"))
            .current_dir(d.path())
            .args(args)
            .env_remove("CI")
            .env_remove("BITNET_KERNEL")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        text(&out)
    };
    let first = run();
    assert!(
        first.contains("kernel plan") && first.contains("measured now"),
        "{first}"
    );
    let r: BenchReport =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("bench.json")).unwrap())
            .unwrap();
    assert_eq!(r.engine_kernel, "tuned");
    assert!(!r.cpu_model.is_empty());
    // The binary under test is a test build (the planted-bug switch compiled in, as for this
    // test crate): the report says so, and the output warns that its timings are not the
    // release engine's.
    const { assert!(bitnet_engine::planted::COMPILED) };
    assert!(r.test_build);
    assert!(
        first.contains("warning: this harness is a test build"),
        "{first}"
    );
    let available: Vec<&str> = bitnet_engine::kernels::Kernel::available()
        .iter()
        .map(|k| k.suffix())
        .collect();
    let plan = &r.results[0].engine_plan;
    for kind in [
        "TQ2_0/decode",
        "TQ2_0/prefill",
        "F16/decode",
        "F16/prefill",
        "other",
    ] {
        let v = plan
            .get(kind)
            .unwrap_or_else(|| panic!("{kind} not in {plan:?}"));
        // `avx512`, then the knobs the tuner measured for that variant and kind: `rows N` or
        // `tokens N` where the variant comes in several groups, and for a decode kind on a
        // variant whose kernels prefetch, `prefetch BYTES` with one of the distances tried.
        let words: Vec<&str> = v.split(' ').collect();
        assert!(available.contains(&words[0]), "{kind}: {v}");
        if kind == "other" {
            // The attention's prefetch distance, where the variant's attention takes one; then
            // the KV cache's pages, measured too.
            let k = bitnet_engine::kernels::Kernel::parse(words[0]).unwrap();
            let pages = &words[words.len() - 2..];
            assert!(pages == ["kv", "huge"] || pages == ["kv", "small"], "{v}");
            if k.tunes_attention_prefetch() {
                assert_eq!((words.len(), words[1]), (5, "prefetch"), "{v}");
                let n: usize = words[2].parse().unwrap();
                assert!(
                    bitnet_engine::kernels::PREFETCH_DISTANCES.contains(&n),
                    "{v}"
                );
            } else {
                assert_eq!(words.len(), 3, "{v}");
            }
            continue;
        }
        let k = bitnet_engine::kernels::Kernel::parse(words[0]).unwrap();
        let ty = if kind.starts_with("F16") {
            bitnet_engine::gguf::GgmlType::F16
        } else {
            bitnet_engine::gguf::GgmlType::TQ2_0
        };
        let decode = kind.ends_with("/decode");
        let mut want_knobs = Vec::new();
        if !k.groups(ty, !decode).is_empty() {
            want_knobs.push(if decode { "rows" } else { "tokens" });
        }
        if decode && k.tunes_prefetch(ty) {
            want_knobs.push("prefetch");
        }
        let knobs: Vec<&str> = words[1..].iter().step_by(2).copied().collect();
        assert_eq!(knobs, want_knobs, "{kind}: {v}");
        for pair in words[1..].chunks(2) {
            let n: usize = pair[1].parse().unwrap();
            match pair[0] {
                "prefetch" => assert!(
                    bitnet_engine::kernels::PREFETCH_DISTANCES.contains(&n),
                    "{kind}: {v}"
                ),
                _ => assert!(k.groups(ty, !decode).contains(&n), "{kind}: {v}"),
            }
        }
    }
    // The cache holds the measurements behind the plan: the chosen variant (and prefetch
    // distance) is the fastest, for the products and for the rest of a decode step (`other`:
    // attention, RoPE, activation), which every variant here was timed on.
    let cache: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("target/harness/tune.json")).unwrap(),
    )
    .unwrap();
    let entry = &cache["entries"][0];
    assert_eq!(entry["threads"], 1);
    let timed_other: Vec<&str> = entry["timings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "other")
        .map(|t| t["variant"].as_str().unwrap())
        .collect();
    let mut variants_timed = timed_other.clone();
    variants_timed.dedup();
    assert_eq!(variants_timed, available, "{entry}");
    // The timing of `kind` with the fewest microseconds.
    let fastest_of = |kind: &str| {
        entry["timings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["kind"] == kind)
            .min_by(|a, b| {
                a["micros"]
                    .as_f64()
                    .unwrap()
                    .total_cmp(&b["micros"].as_f64().unwrap())
            })
    };
    for (kind, chosen) in plan.iter() {
        // A decode kind's variant and distance are decided again on whole decode steps: the
        // fastest there, with its group, where steps were timed.
        let fastest_step = fastest_of(&format!("{kind}{}", bitnet_engine::kernels::plan::IN_STEPS));
        let fastest = fastest_step.unwrap_or_else(|| fastest_of(kind).unwrap());
        let mut timed = fastest["variant"].as_str().unwrap().to_string();
        if let Some(g) = fastest["group"].as_u64() {
            let unit = if kind.ends_with("/prefill") {
                "tokens"
            } else {
                "rows"
            };
            timed.push_str(&format!(" {unit} {g}"));
        }
        if kind.ends_with("/decode") && chosen.contains(" prefetch ") {
            assert!(fastest_step.is_some(), "{kind}: no step timings: {entry}");
        }
        if let Some(d) = fastest["prefetch"].as_u64() {
            timed.push_str(&format!(" prefetch {d}"));
        }
        if kind == "other" {
            // The KV cache's pages, timed with the variant and distance chosen: huge only where
            // they were at least 3% faster.
            let pages: Vec<(String, f64)> = entry["timings"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["kind"] == bitnet_engine::kernels::plan::KV_PAGES_KIND)
                .map(|t| {
                    assert_eq!(
                        (t["variant"].as_str().unwrap(), t["prefetch"].as_u64()),
                        (
                            fastest["variant"].as_str().unwrap(),
                            fastest["prefetch"].as_u64()
                        ),
                        "{t}"
                    );
                    let m = t["matrix"].as_str().unwrap();
                    let page = m.rsplit(" in ").next().unwrap().to_string();
                    (page, t["micros"].as_f64().unwrap())
                })
                .collect();
            assert_eq!(pages.len(), 2, "{entry}");
            assert_eq!(
                (&pages[0].0[..], &pages[1].0[..]),
                ("small pages", "huge pages")
            );
            let huge = pages[1].1 <= bitnet_engine::kernels::plan::KV_HUGE_GAIN * pages[0].1;
            timed.push_str(if huge { " kv huge" } else { " kv small" });
        }
        assert_eq!(&timed, chosen, "{kind}");
    }
    let second = run();
    assert!(second.contains("from target/harness/tune.json"), "{second}");
    // An entry tuned by an engine with another set of variants (one added since) is measured
    // again, not reused.
    assert_eq!(entry["variants"], serde_json::json!(available));
    let mut older = cache.clone();
    older["entries"][0]["variants"] = serde_json::json!(["scalar"]);
    std::fs::write(
        d.path().join("target/harness/tune.json"),
        serde_json::to_vec(&older).unwrap(),
    )
    .unwrap();
    let third = run();
    assert!(third.contains("measured now"), "{third}");
    // So is an entry tuned with the weights in another kind of pages (the decode timings stream
    // from the weights' kind), which the entry names as the bench report does.
    let report: BenchReport =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("bench.json")).unwrap())
            .unwrap();
    assert_eq!(
        entry["weight_pages"],
        serde_json::json!(report.weight_pages)
    );
    let mut other_pages = cache.clone();
    other_pages["entries"][0]["weight_pages"] = serde_json::json!("file map");
    std::fs::write(
        d.path().join("target/harness/tune.json"),
        serde_json::to_vec(&other_pages).unwrap(),
    )
    .unwrap();
    let pages_run = run();
    assert!(pages_run.contains("measured now"), "{pages_run}");
    // So is a file of an older version (tuned before prefetch distances were measured).
    let mut old_version = cache.clone();
    old_version["schema_version"] = serde_json::json!(1);
    std::fs::write(
        d.path().join("target/harness/tune.json"),
        serde_json::to_vec(&old_version).unwrap(),
    )
    .unwrap();
    let fourth = run();
    assert!(fourth.contains("measured now"), "{fourth}");
    // Forcing a variant bypasses the plan.
    let out = harness(
        d.path(),
        &[
            "bench",
            "--preset",
            "f16",
            "--threads",
            "1",
            "--rounds",
            "1",
            "--prompt-tokens",
            "4",
            "--decode-tokens",
            "2",
            "--kernel",
            "scalar",
            "--json",
            "forced.json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let r: BenchReport =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("forced.json")).unwrap())
            .unwrap();
    assert_eq!(r.engine_kernel, "scalar");
    assert!(r.results[0].engine_plan.values().all(|v| v == "scalar"));
}

/// `harness run` uses the plan `harness bench` tuned for this CPU, model and thread count: the
/// receipt records it (`kernel_plan`) with the kernels it ran, mixed as the plan says, and the
/// gate accepts that mix only with the plan that explains it.
#[test]
fn a_tuned_plan_is_used_by_run_and_recorded_in_its_receipt() {
    use bitnet_engine::kernels::Kernel;
    let simd: Vec<Kernel> = Kernel::available()
        .into_iter()
        .filter(|k| *k != Kernel::Scalar)
        .collect();
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    std::fs::write(
        root.join("scenarios/p.yaml"),
        "model:\n  preset: tiny\ninputs:\n  tokens:\n    - [1, 2, 3, 4, 5, 6]\ngeneration:\n  steps: 3\nthreads: 1\ngolden: false\n",
    )
    .unwrap();
    let bench = |root: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_harness"))
            .current_dir(root)
            .args([
                "bench",
                "--preset",
                "tiny",
                "--threads",
                "1",
                "--rounds",
                "1",
                "--prompt-tokens",
                "8",
                "--decode-tokens",
                "2",
            ])
            .env_remove("BITNET_KERNEL")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    };
    bench(root);
    // A deliberately mixed plan, so the receipt shows it was used: ternary decode products on
    // this CPU's last SIMD variant, everything else on its first (scalar where there is none).
    let cache_path = root.join("target/harness/tune.json");
    let mut cache: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cache_path).unwrap()).unwrap();
    let decode = simd.last().map_or("scalar", |k| k.suffix());
    let other = simd.first().map_or("scalar", |k| k.suffix());
    let plan = serde_json::json!({"TQ2_0/decode": decode, "TQ2_0/prefill": other, "F16/decode": other, "F16/prefill": other, "other": other});
    cache["entries"][0]["plan"] = plan.clone();
    std::fs::write(&cache_path, serde_json::to_vec(&cache).unwrap()).unwrap();
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_harness"))
            .current_dir(root)
            .args(["run"])
            .env_remove("CI")
            .env_remove("BITNET_KERNEL")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_str::<serde_json::Value>(
            &std::fs::read_to_string(root.join("receipts/p.json")).unwrap(),
        )
        .unwrap()
    };
    let receipt = run();
    assert_eq!(receipt["kernel_plan"], plan, "{receipt}");
    let kernels: Vec<&str> = receipt["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    // Decode steps on one variant; the prompt (6 tokens: a prefill product) on the other.
    for v in [decode, other] {
        let tq2 = format!("tq2_0_q8k_dot_{v}");
        assert!(kernels.contains(&tq2.as_str()), "{v}: {kernels:?}");
    }
    let out = harness(root, &["verify-receipt", "receipts"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The same kernels without the plan that explains them, or with a plan naming a variant
    // this engine lacks, do not pass.
    let verify = |r: &serde_json::Value| {
        std::fs::write(root.join("forged.json"), serde_json::to_vec(r).unwrap()).unwrap();
        harness(root, &["verify-receipt", "forged.json"])
    };
    // (Two SIMD variants that no single variant records together: AVX2 with AVX-512.)
    if simd.len() >= 2 && (decode, other) != ("vnni256", "avx2") {
        let mut r = receipt.clone();
        r.as_object_mut().unwrap().remove("kernel_plan");
        let out = verify(&r);
        assert_eq!(out.status.code(), Some(13), "{}", text(&out));
    }
    // A plan that does not name the variant some recorded kernels belong to.
    if decode != other {
        let mut r = receipt.clone();
        r["kernel_plan"]["TQ2_0/decode"] = serde_json::json!(other);
        let out = verify(&r);
        assert_eq!(out.status.code(), Some(13), "{}", text(&out));
        assert!(
            text(&out).contains("which no variant of `kernel_plan` runs"),
            "{}",
            text(&out)
        );
    }
    let mut r = receipt.clone();
    r["kernel_plan"]["other"] = serde_json::json!("sse9");
    let out = verify(&r);
    assert_eq!(out.status.code(), Some(13), "{}", text(&out));
    assert!(text(&out).contains("`sse9`"), "{}", text(&out));
    // Forcing a variant bypasses the plan: no `kernel_plan` in the receipt.
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(root)
        .args(["run"])
        .env_remove("CI")
        .env("BITNET_KERNEL", "scalar")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let forced: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("receipts/p.json")).unwrap())
            .unwrap();
    assert!(forced.get("kernel_plan").is_none(), "{forced}");
    // Forcing a variant with knobs runs them on every kind that takes them, and the receipt
    // records that plan; the gate accepts it, and refuses a knob the variant does not take.
    let Some(&k) = simd
        .iter()
        .find(|k| k.tunes_prefetch(bitnet_engine::gguf::GgmlType::TQ2_0))
    else {
        return;
    };
    let spec = format!("{} prefetch 0", k.suffix());
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(root)
        .args(["run"])
        .env_remove("CI")
        .env("BITNET_KERNEL", &spec)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let forced: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("receipts/p.json")).unwrap())
            .unwrap();
    assert_eq!(
        forced["kernel_plan"]["TQ2_0/decode"],
        spec.as_str(),
        "{forced}"
    );
    // The attention takes the distance too.
    assert_eq!(forced["kernel_plan"]["other"], spec.as_str(), "{forced}");
    let out = harness(root, &["verify-receipt", "receipts"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut r = forced.clone();
    r["kernel_plan"]["TQ2_0/prefill"] = serde_json::json!(format!("{} prefetch 0", k.suffix()));
    let out = verify(&r);
    assert_eq!(out.status.code(), Some(13), "{}", text(&out));
    assert!(text(&out).contains("`TQ2_0/prefill`"), "{}", text(&out));
}
