//! `harness bench`: the engine and llama.cpp on the same GGUF and thread count, side by side.
//!
//! Each round runs the engine (in this process) and then llama.cpp (in a child `harness
//! ref-bench` process, so it can be another build of llama.cpp: `--reference-bin`), alternating,
//! each timing one prompt pass (logits of the last position) and greedy single-token decode
//! steps. Model loading is outside the timings. Results are medians with min–max spread over the
//! rounds, the engine/llama.cpp ratios, and the share of the memory-bandwidth bound: a decode step
//! reads every weight once, so `bound = bandwidth / weight bytes`, with the bandwidth measured by
//! this tool (a plain multi-pass read of a buffer far larger than the caches, same thread count)
//! in every round, beside the runs it bounds (median over the rounds).
//!
//! The perf gate ([`gate`]) compares a report's ratios with the floors of
//! `receipts/perf-baseline.json` less its stated noise margin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bitnet_engine::attention::KvType;
use bitnet_engine::forward::{argmax, Session};
use bitnet_engine::kernels::plan::KernelPlan;
use bitnet_engine::kernels::Kernel;
use bitnet_engine::model::Model;
use schemars::JsonSchema;

use crate::scenario::MAX_THREADS;
use serde::{Deserialize, Serialize};

use crate::reference::LlamaTiming;

pub mod cuda;
mod gate;
use crate::reference::run_child;
pub use gate::{
    check_baseline, check_report, gate, noisy, read_json, CpuFloors, Floor, PerfBaseline,
    ShareFloor, NOISY_SPREAD,
};

/// Median and spread of one measured rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Stats {
    pub fn of(samples: &[f64]) -> Stats {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let median = match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        };
        Stats {
            median,
            min: s.first().copied().unwrap_or(f64::NAN),
            max: s.last().copied().unwrap_or(f64::NAN),
            samples: samples.to_vec(),
        }
    }
}

/// Prefill and decode rates of one side, tokens per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rates {
    pub prefill_tps: Stats,
    pub decode_tps: Stats,
}

/// One thread count's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ThreadResult {
    pub threads: usize,
    /// Plain read bandwidth at this thread count, GB/s (10^9 bytes): the median of two
    /// measurements per round, taken just before and just after that round's engine run (the
    /// host's read rate moves within seconds; one measurement beside a run can catch a moment
    /// the run did not see).
    pub bandwidth_gbs: f64,
    /// Decode tokens/s if every weight byte streamed at that bandwidth.
    pub bound_decode_tps: f64,
    pub engine: Rates,
    /// The engine's variant per kind of product at this thread count, with its measured knobs
    /// (`TQ2_0/decode` → `avx512 prefetch 8192`, `vnni256 rows 8 prefetch 4096`; `TQ2_0/prefill`
    /// → `vnni256 tokens 2`; `other` for the rest), tuned by measurement unless one variant was
    /// forced.
    #[serde(default)]
    pub engine_plan: BTreeMap<String, String>,
    /// llama.cpp's rates; `None` when it cannot run the model (the report's
    /// `reference_unavailable` says why) and the engine was timed alone.
    pub llama: Option<Rates>,
    /// Engine median / llama.cpp median (`None` without a llama.cpp run).
    pub prefill_ratio: Option<f64>,
    pub decode_ratio: Option<f64>,
    /// Median decode tokens/s over the bound.
    pub engine_share_of_bound: f64,
    pub llama_share_of_bound: Option<f64>,
    /// Decode tokens/s if the weights and the KV cache a step attends to (the report's
    /// `kv_bytes_per_token`) streamed at `bandwidth_gbs`: the bound of the bytes a step must
    /// read. 0 in reports written before it was recorded.
    #[serde(default)]
    pub bound_with_kv_decode_tps: f64,
}

/// The llama.cpp side: which binary ran it, how it was built, the context it used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferenceInfo {
    pub binary: String,
    /// `GGML_*` / `LLAMA_*` build options the binary was compiled with (from its
    /// `harness ref-bench --build-info`).
    pub build_flags: BTreeMap<String, String>,
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_ubatch: u32,
    pub kv_type: String,
    pub flash_attn: bool,
}

/// A `harness bench` report (also the receipt's `bench` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BenchReport {
    /// Always 1.
    pub schema_version: u32,
    pub model: String,
    pub model_blake3: String,
    /// Bytes of every tensor the model reads per decode step (all weights; the tied embedding
    /// once, as the output matrix).
    pub weight_bytes_per_token: u64,
    /// Mean bytes of KV cache (of type `kv_cache`) a timed decode step reads: the keys and values
    /// of every position it attends to (the prompt, the earlier steps and its own), in every
    /// layer. 0 in reports written before it was recorded.
    #[serde(default)]
    pub kv_bytes_per_token: u64,
    /// The KV cache's type on both sides (`f32`, `f16`; `harness bench --kv-cache`). `f32` in
    /// reports written before it was recorded.
    #[serde(default = "f32_label")]
    pub kv_cache: String,
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    pub rounds: usize,
    /// The engine's kernel variant (`tuned`: chosen per kind of product by measurement, see each
    /// result's `engine_plan`) and the kernel IDs that ran.
    pub engine_kernel: String,
    pub engine_kernels: Vec<String>,
    /// The llama.cpp side; `None` when it cannot run the model.
    pub reference: Option<ReferenceInfo>,
    /// Why there is no side-by-side reference (the model is I2_S or `bitnet-b1.58`, which
    /// upstream llama.cpp does not run): the engine is then timed alone against the bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_unavailable: Option<String>,
    pub cpu_features: Vec<String>,
    /// `/proc/cpuinfo`'s model name, family and model.
    #[serde(default)]
    pub cpu_model: String,
    /// Where the engine held its weights (`huge pages (THP madvise)`, `file map`; see
    /// `BITNET_WEIGHT_PAGES`); the bandwidth buffer is read from the same kind of pages, so the
    /// bound is what this machine reads with them. Empty in reports written before it was
    /// recorded.
    #[serde(default)]
    pub weight_pages: String,
    pub results: Vec<ThreadResult>,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// Whether the engine that ran had the planted-bug switch compiled in (a test build: `cargo
    /// test` builds the `harness` binary so, into the same path as `cargo build --release`).
    /// Its checks sit in hot loops, so such a report does not measure the release engine;
    /// `harness perf-gate` refuses it. Absent (false) otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test_build: bool,
}

fn f32_label() -> String {
    "f32".into()
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub model: PathBuf,
    pub threads: Vec<usize>,
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    pub rounds: usize,
    /// One variant for everything (with any knobs: [`KernelPlan::forced`]) and its label, or
    /// `None`: each kind of product on the variant measured fastest for it ([`crate::tune`],
    /// cached in `tune_cache`).
    pub kernel: Option<(KernelPlan, String)>,
    pub tune_cache: PathBuf,
    /// The harness binary whose `ref-bench` runs llama.cpp.
    pub reference_bin: PathBuf,
    pub timeout: Duration,
    /// The KV cache's type, the engine's and llama.cpp's.
    pub kv_cache: KvType,
}

/// The build options of the llama.cpp linked into this binary (`.cargo/config.toml` pins them).
pub fn build_flags() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for (k, v) in [
        ("LLAMA_LIB_PROFILE", option_env!("LLAMA_LIB_PROFILE")),
        ("GGML_NATIVE", option_env!("GGML_NATIVE")),
        ("GGML_AVX", option_env!("GGML_AVX")),
        ("GGML_AVX2", option_env!("GGML_AVX2")),
        ("GGML_AVX512", option_env!("GGML_AVX512")),
        ("GGML_FMA", option_env!("GGML_FMA")),
        ("GGML_F16C", option_env!("GGML_F16C")),
        ("GGML_OPENMP", option_env!("GGML_OPENMP")),
    ] {
        m.insert(k.to_string(), v.unwrap_or("default").to_string());
    }
    m.insert("llama-cpp-sys-2".into(), "0.1.161".into());
    m
}

/// The buffer [`measure_bandwidth`] reads: 1 GiB, far larger than the caches, written once, in
/// anonymous memory advised for transparent huge pages when `huge` (as the engine holds its
/// weights by default: a bound read from small pages would understate what the machine reads
/// from huge ones).
pub fn bandwidth_buffer(huge: bool) -> Result<memmap2::MmapMut, String> {
    let mut m = memmap2::MmapMut::map_anon(1 << 30)
        .map_err(|e| format!("cannot map 1 GiB for the bandwidth buffer: {e}"))?;
    if huge {
        // Advice only: where the kernel has no THP the buffer stays in small pages, as the
        // weights' copy does.
        let _ = m.advise(memmap2::Advice::HugePage);
    }
    for (i, w) in m.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&(i as u64).to_le_bytes());
    }
    Ok(m)
}

/// Plain read bandwidth with `threads` threads: each sums its share of `buf` (as 64-bit words),
/// several passes, median GB/s.
pub fn measure_bandwidth(buf: &[u8], threads: usize) -> f64 {
    let bytes = buf.len();
    let per = buf.len().div_ceil(64 * threads.max(1)) * 64;
    let mut rates = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = buf
                .chunks(per)
                .map(|c| {
                    s.spawn(move || {
                        // Eight independent sums so the loop is bound by the loads.
                        let mut acc = [0u64; 8];
                        for w in c.chunks_exact(64) {
                            for (k, a) in acc.iter_mut().enumerate() {
                                let word = u64::from_le_bytes(
                                    w[8 * k..8 * k + 8].try_into().unwrap_or_default(),
                                );
                                *a = a.wrapping_add(word);
                            }
                        }
                        acc.iter().fold(0u64, |a, &b| a.wrapping_add(b))
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0, u64::wrapping_add)
        });
        std::hint::black_box(total);
        rates.push(bytes as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    Stats::of(&rates).median
}

/// Mean bytes of KV cache of type `kv` a decode step reads over `decode` steps after a
/// `prompt`-token prompt: step `i` attends to `prompt + i + 1` positions, each holding a key and
/// a value of `n_head_kv × head_dim` elements per layer.
pub fn kv_bytes_per_step(
    c: &bitnet_engine::model::Config,
    prompt: usize,
    decode: usize,
    kv: KvType,
) -> u64 {
    if decode == 0 {
        return 0;
    }
    let per_position = (c.n_layer * c.n_head_kv * c.head_dim * 2 * kv.bytes()) as u64;
    // Σ_{i<decode} (prompt + i + 1) positions, over decode steps.
    let (p, d) = (prompt as u64, decode as u64);
    let positions_sum = d * p + d * (d + 1) / 2;
    per_position * positions_sum / d
}

/// Bytes of all tensors in the file (what one decode step reads).
pub fn weight_bytes(model: &Path) -> Result<u64, String> {
    let f = bitnet_engine::gguf::GgufFile::open(model).map_err(|e| e.to_string())?;
    Ok(f.tensors().iter().map(|t| t.n_bytes).sum())
}

/// The prompt: deterministic token ids spread over the vocabulary.
pub fn prompt(n: usize, n_vocab: usize) -> Vec<u32> {
    (0..n as u64)
        .map(|i| ((i * 7919 + 3) % n_vocab.max(1) as u64) as u32)
        .collect()
}

/// One engine measurement: (prefill seconds, decode seconds, kernel IDs).
pub fn engine_once(
    model: &Model,
    tokens: &[u32],
    decode: usize,
    threads: usize,
    plan: &KernelPlan,
    kv: KvType,
) -> Result<(f64, f64, Vec<String>), String> {
    let (mut s, prefill, mut tok) = engine_prompt(model, tokens, decode, threads, plan, kv)?;
    let t1 = Instant::now();
    for _ in 0..decode {
        tok = argmax(&s.forward(&[tok], false, None)?);
    }
    Ok((prefill, t1.elapsed().as_secs_f64(), s.kernels_used()))
}

/// A new session under `plan` that has run `tokens` as one prompt, its cache's storage for
/// `decode` more positions made before the clock started (as llama.cpp makes its cache for
/// n_ctx when the context is created): the session, the prompt's seconds and the greedy next
/// token.
pub fn engine_prompt<'m>(
    model: &'m Model,
    tokens: &[u32],
    decode: usize,
    threads: usize,
    plan: &KernelPlan,
    kv: KvType,
) -> Result<(Session<'m>, f64, u32), String> {
    let mut s = Session::new(model, threads, plan.base);
    s.set_plan(plan.clone());
    s.set_kv_type(kv);
    s.reserve(tokens.len() + decode);
    let t0 = Instant::now();
    let logits = s.forward(tokens, false, None)?;
    let prefill = t0.elapsed().as_secs_f64();
    Ok((s, prefill, argmax(&logits)))
}

/// One llama.cpp measurement in a child `ref-bench` process.
pub fn llama_once(o: &BenchOptions, threads: usize) -> Result<LlamaTiming, String> {
    let mut args: Vec<String> = vec![
        "ref-bench".into(),
        o.model.display().to_string(),
        "--threads".into(),
        threads.to_string(),
        "--prompt-tokens".into(),
        o.prompt_tokens.to_string(),
        "--decode-tokens".into(),
        o.decode_tokens.to_string(),
    ];
    // Only when not the default: a `--reference-bin` that predates the option still benches F32.
    if o.kv_cache != KvType::F32 {
        args.extend(["--kv-cache".into(), o.kv_cache.label().into()]);
    }
    let out = run_child(&o.reference_bin, &args, o.timeout).map_err(|e| e.to_string())?;
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| {
            format!(
                "`{} ref-bench` printed no JSON result",
                o.reference_bin.display()
            )
        })?;
    serde_json::from_str(line).map_err(|e| format!("`ref-bench` result: {e}"))
}

/// The reference binary's build flags (`ref-bench --build-info`).
pub fn reference_flags(o: &BenchOptions) -> Result<BTreeMap<String, String>, String> {
    let args = vec!["ref-bench".to_string(), "--build-info".to_string()];
    let out = run_child(&o.reference_bin, &args, o.timeout).map_err(|e| e.to_string())?;
    serde_json::from_str(out.trim()).map_err(|e| format!("`ref-bench --build-info`: {e}"))
}

/// The counts a bench is given, checked before anything runs: thread counts from 1 to
/// [`MAX_THREADS`], each once (a report holds one result per thread count, and
/// [`gate::check_report`] refuses a second), and at least one prompt token, decode step and
/// round.
pub fn check_counts(
    threads: &[usize],
    prompt_tokens: usize,
    decode_tokens: usize,
    rounds: usize,
) -> Result<(), String> {
    if threads.is_empty() || threads.iter().any(|&t| t == 0 || t > MAX_THREADS) {
        return Err(format!(
            "--threads: give thread counts from 1 to {MAX_THREADS}, e.g. 1,2 (got {threads:?})"
        ));
    }
    if let Some((i, t)) = threads
        .iter()
        .enumerate()
        .find(|(i, t)| threads[..*i].contains(t))
    {
        return Err(format!(
            "--threads: {t} is given twice (entries {} and {}); give each thread count once, \
             e.g. 1,2 (got {threads:?})",
            threads.iter().position(|x| x == t).unwrap_or(0) + 1,
            i + 1
        ));
    }
    for (flag, n) in [
        ("--prompt-tokens", prompt_tokens),
        ("--decode-tokens", decode_tokens),
        ("--rounds", rounds),
    ] {
        if n == 0 {
            return Err(format!("{flag} must be at least 1"));
        }
    }
    Ok(())
}

/// The prompt and the decode steps must fit the model's context (`context_length`): a bench
/// past it measures nothing the model is for, and its KV cache and activations are sized by
/// them.
pub fn check_context(
    model: &Path,
    n_ctx_train: usize,
    prompt_tokens: usize,
    decode_tokens: usize,
) -> Result<(), String> {
    match prompt_tokens.checked_add(decode_tokens) {
        Some(n) if n <= n_ctx_train => Ok(()),
        _ => Err(format!(
            "--prompt-tokens {prompt_tokens} + --decode-tokens {decode_tokens} exceed the \
             context of `{}` (`context_length` {n_ctx_train} tokens)",
            model.display()
        )),
    }
}

/// Run the whole comparison; `progress` receives a line per measurement.
pub fn run(o: &BenchOptions, progress: &mut dyn FnMut(&str)) -> Result<BenchReport, String> {
    check_counts(&o.threads, o.prompt_tokens, o.decode_tokens, o.rounds)?;
    if bitnet_engine::planted::COMPILED {
        progress(TEST_BUILD_WARNING);
    }
    let started_at = crate::receipt::rfc3339(std::time::SystemTime::now());
    let model = Model::load(&o.model).map_err(|e| e.to_string())?;
    check_context(
        &o.model,
        model.config.n_ctx_train,
        o.prompt_tokens,
        o.decode_tokens,
    )?;
    // I2_S and `bitnet-b1.58` models: upstream llama.cpp runs neither, so the engine is timed
    // alone, against the bandwidth bound.
    let unavailable = crate::reference::llama_cannot_run(&o.model);
    if let Some(why) = &unavailable {
        progress(&format!(
            "no side-by-side reference: {why}; timing the engine alone"
        ));
    }
    let tokens = prompt(o.prompt_tokens, model.config.n_vocab);
    let wbytes = weight_bytes(&o.model)?;
    let kv_bytes = kv_bytes_per_step(&model.config, o.prompt_tokens, o.decode_tokens, o.kv_cache);
    let flags = match unavailable {
        None => Some(reference_flags(o)?),
        Some(_) => None,
    };
    let mut results = Vec::new();
    // Every kernel ID any run took (a tuned plan may differ between thread counts).
    let mut kernels = std::collections::BTreeSet::new();
    let mut ctx_info = None;
    let weight_pages = model.file.pages();
    let buf = bandwidth_buffer(model.file.huge_pages_advised())?;
    for &threads in &o.threads {
        let plan = match &o.kernel {
            Some((p, _)) => p.clone(),
            None => {
                let mut s = Session::new(&model, threads, Kernel::best());
                s.set_kv_type(o.kv_cache);
                let (entry, cached) =
                    crate::tune::plan_for(&s, &o.tune_cache, Duration::from_millis(150))?;
                progress(&format!(
                    "threads {threads}: kernel plan {} ({})",
                    entry
                        .plan
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if cached {
                        format!(
                            "measured {}, from {}",
                            entry.measured_at,
                            o.tune_cache.display()
                        )
                    } else {
                        "measured now".to_string()
                    }
                ));
                KernelPlan::from_description(&entry.plan)
                    .ok_or("the tuned plan names a variant this CPU does not run")?
            }
        };
        let (mut ep, mut ed, mut lp, mut ld) = (vec![], vec![], vec![], vec![]);
        let mut bws = Vec::new();
        for round in 0..o.rounds {
            // The bandwidth is measured in every round, just before and just after the engine's
            // run it bounds: the machine's other load moves it as much as it moves the runs, and
            // within seconds.
            let before = measure_bandwidth(&buf, threads);
            let (p, d, k) =
                engine_once(&model, &tokens, o.decode_tokens, threads, &plan, o.kv_cache)?;
            let after = measure_bandwidth(&buf, threads);
            bws.extend([before, after]);
            kernels.extend(k);
            ep.push(o.prompt_tokens as f64 / p);
            ed.push(o.decode_tokens as f64 / d);
            let line = format!(
                "threads {threads} round {}: read {before:.1} / {after:.1} GB/s (before / after \
                 the engine); engine prefill {:.1} decode {:.1} tok/s",
                round + 1,
                ep[round],
                ed[round],
            );
            if unavailable.is_some() {
                progress(&line);
                continue;
            }
            let l = llama_once(o, threads)?;
            lp.push(l.prompt_tokens as f64 / l.prefill_seconds);
            ld.push(l.decode_calls as f64 / l.decode_seconds);
            progress(&format!(
                "{line}; llama.cpp prefill {:.1} decode {:.1} tok/s",
                lp[round], ld[round]
            ));
            ctx_info = Some(l);
        }
        let bw = Stats::of(&bws).median;
        let bound = bw * 1e9 / wbytes as f64;
        let bound_with_kv = bw * 1e9 / (wbytes + kv_bytes) as f64;
        let engine = Rates {
            prefill_tps: Stats::of(&ep),
            decode_tps: Stats::of(&ed),
        };
        let llama = (!lp.is_empty()).then(|| Rates {
            prefill_tps: Stats::of(&lp),
            decode_tps: Stats::of(&ld),
        });
        results.push(ThreadResult {
            threads,
            engine_plan: plan.describe(),
            bandwidth_gbs: bw,
            bound_decode_tps: bound,
            prefill_ratio: llama
                .as_ref()
                .map(|l| engine.prefill_tps.median / l.prefill_tps.median),
            decode_ratio: llama
                .as_ref()
                .map(|l| engine.decode_tps.median / l.decode_tps.median),
            engine_share_of_bound: engine.decode_tps.median / bound,
            llama_share_of_bound: llama.as_ref().map(|l| l.decode_tps.median / bound),
            bound_with_kv_decode_tps: bound_with_kv,
            engine,
            llama,
        });
    }
    let reference = match (ctx_info, flags) {
        (Some(l), Some(build_flags)) => Some(ReferenceInfo {
            binary: o.reference_bin.display().to_string(),
            build_flags,
            n_ctx: l.n_ctx,
            n_batch: l.n_batch,
            n_ubatch: l.n_ubatch,
            kv_type: l.kv_type,
            flash_attn: l.flash_attn,
        }),
        _ => None,
    };
    Ok(BenchReport {
        schema_version: 1,
        model: o.model.display().to_string(),
        model_blake3: crate::receipt::blake3_file(&o.model).map_err(|e| e.to_string())?,
        weight_bytes_per_token: wbytes,
        kv_bytes_per_token: kv_bytes,
        kv_cache: o.kv_cache.label().into(),
        prompt_tokens: o.prompt_tokens,
        decode_tokens: o.decode_tokens,
        rounds: o.rounds,
        engine_kernel: o
            .kernel
            .as_ref()
            .map_or("tuned".to_string(), |(_, label)| label.clone()),
        engine_kernels: kernels.into_iter().collect(),
        reference,
        reference_unavailable: unavailable,
        cpu_features: crate::receipt::cpu_features(),
        cpu_model: crate::tune::cpu_model(),
        weight_pages,
        results,
        started_at,
        test_build: bitnet_engine::planted::COMPILED,
    })
}

/// What `harness bench` says when its engine is a test build (and its table repeats).
pub const TEST_BUILD_WARNING: &str = "warning: this harness is a test build (the planted-bug \
     switch is compiled in, as `cargo test` builds it, into the same path as `cargo build \
     --release`); its checks cost time in the engine's hot loops, so these timings are not the \
     release engine's and `harness perf-gate` refuses the report: run `cargo build --release` \
     first";

/// The human table.
pub fn table(r: &BenchReport) -> String {
    let reference = match (&r.reference, &r.reference_unavailable) {
        (Some(x), _) => format!(
            "llama.cpp {} (n_ctx {}, n_batch {}, {} KV, flash attention {})",
            x.binary,
            x.n_ctx,
            x.n_batch,
            x.kv_type,
            if x.flash_attn { "on" } else { "off" },
        ),
        // Reports written before the reason was recorded alone carried a scenario's advice after
        // it (`; give the scenario a reference ...`), which a bench table has no use for.
        (None, Some(why)) => format!(
            "no side-by-side reference: {}",
            why.split("; give").next().unwrap_or(why)
        ),
        (None, None) => "no reference".into(),
    };
    let mut s = format!(
        "model {} ({:.1} MB of weights per token), prompt {} tokens, {} decode steps, {} rounds\n\
         engine kernel {}; {reference}\n",
        r.model,
        r.weight_bytes_per_token as f64 / 1e6,
        r.prompt_tokens,
        r.decode_tokens,
        r.rounds,
        r.engine_kernel,
    );
    if !r.cpu_model.is_empty() {
        s.push_str(&format!("cpu {}\n", r.cpu_model));
    }
    if r.test_build {
        s.push_str(&format!("{TEST_BUILD_WARNING}\n"));
    }
    if !r.weight_pages.is_empty() {
        s.push_str(&format!(
            "engine weights in {}; the read bound from a buffer in the same kind of pages\n",
            r.weight_pages
        ));
    }
    for t in &r.results {
        if r.engine_kernel == "tuned" {
            s.push_str(&format!(
                "engine plan at {} thread(s): {}\n",
                t.threads,
                t.engine_plan
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    s.push_str(
        "threads  phase    engine tok/s [min-max]     llama.cpp tok/s [min-max]  ratio  \
         share of bound (engine / llama.cpp)\n",
    );
    let rate = |x: Option<&Stats>| match x {
        Some(x) => format!("{:>8.1} [{:.1}-{:.1}]", x.median, x.min, x.max),
        None => format!("{:>8}", "—"),
    };
    let pct = |x: Option<f64>| x.map_or("—".to_string(), |v| format!("{:.0}%", 100.0 * v));
    for t in &r.results {
        let l = t.llama.as_ref();
        for (phase, e, lr, ratio) in [
            (
                "prefill",
                &t.engine.prefill_tps,
                l.map(|l| &l.prefill_tps),
                t.prefill_ratio,
            ),
            (
                "decode",
                &t.engine.decode_tps,
                l.map(|l| &l.decode_tps),
                t.decode_ratio,
            ),
        ] {
            let share = if phase == "decode" {
                format!(
                    "{:.0}% / {} of {:.1} tok/s ({:.1} GB/s)",
                    100.0 * t.engine_share_of_bound,
                    pct(t.llama_share_of_bound),
                    t.bound_decode_tps,
                    t.bandwidth_gbs
                )
            } else {
                String::new()
            };
            s.push_str(&format!(
                "{:>7}  {:<7} {}{:>8} {}{:>8} {:>6}  {}\n",
                t.threads,
                phase,
                rate(Some(e)),
                "",
                rate(lr),
                "",
                ratio.map_or("—".to_string(), |x| format!("{x:.2}x")),
                share
            ));
        }
    }
    if r.kv_bytes_per_token > 0 {
        for t in r
            .results
            .iter()
            .filter(|t| t.bound_with_kv_decode_tps > 0.0)
        {
            let share = |tps: f64| format!("{:.0}%", 100.0 * tps / t.bound_with_kv_decode_tps);
            s.push_str(&format!(
                "with the KV cache ({:.1} MB of {} keys and values read per decode step, mean) \
                 at {} thread(s): engine {} / llama.cpp {} of {:.1} tok/s\n",
                r.kv_bytes_per_token as f64 / 1e6,
                r.kv_cache.to_uppercase(),
                t.threads,
                share(t.engine.decode_tps.median),
                t.llama
                    .as_ref()
                    .map_or("—".into(), |l| share(l.decode_tps.median)),
                t.bound_with_kv_decode_tps,
            ));
        }
        let w = r.weight_bytes_per_token as f64;
        s.push_str(&format!(
            "a decode step that reads the KV cache too reaches at most {:.0}% of the weights-only \
             bound, even at the plain read rate ({:.1} MB of weights / {:.1} MB in all)\n",
            100.0 * w / (w + r.kv_bytes_per_token as f64),
            w / 1e6,
            (w + r.kv_bytes_per_token as f64) / 1e6,
        ));
    }
    for t in &r.results {
        for n in noisy(t) {
            s.push_str(&format!("noisy at {} thread(s): {n}\n", t.threads));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitnet_engine::model::{Arch, Config};

    #[test]
    fn a_bench_fits_the_models_context_and_counts_at_least_one() {
        let m = Path::new("m.gguf");
        // 500 + 12 = 512 fills a 512-token context exactly; one more does not fit.
        assert_eq!(check_context(m, 512, 500, 12), Ok(()));
        let e = check_context(m, 512, 500, 13).unwrap_err();
        assert!(e.contains("(`context_length` 512 tokens)"), "{e}");
        // A sum past usize is refused, not wrapped around into a small one.
        assert!(check_context(m, 512, usize::MAX, 2).is_err());
        assert_eq!(check_counts(&[1, MAX_THREADS], 1, 1, 1), Ok(()));
        for (threads, p, d, r) in [
            (vec![], 1, 1, 1),
            (vec![0], 1, 1, 1),
            (vec![1, MAX_THREADS + 1], 1, 1, 1),
            (vec![1, 1], 1, 1, 1),
            (vec![2, 1, 2], 1, 1, 1),
            (vec![1], 0, 1, 1),
            (vec![1], 1, 0, 1),
            (vec![1], 1, 1, 0),
        ] {
            assert!(
                check_counts(&threads, p, d, r).is_err(),
                "{threads:?} {p} {d} {r}"
            );
        }
    }

    #[test]
    fn kv_bytes_count_every_position_each_step_attends_to() {
        let c = Config {
            arch: Arch::Bitnet,
            arch_name: "bitnet".into(),
            n_vocab: 10,
            n_embd: 8,
            n_layer: 2,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 4,
            n_ff: 16,
            n_ctx_train: 64,
            rope_base: 10000.0,
            n_rot: 4,
            rms_eps: 1e-5,
        };
        // A position: a key and a value of 2 heads × 4 floats in each of 2 layers = 128 bytes.
        // After a 3-token prompt, steps attend to 4 and 5 positions: 4.5 on average.
        assert_eq!(kv_bytes_per_step(&c, 3, 2, KvType::F32), 576);
        assert_eq!(kv_bytes_per_step(&c, 0, 1, KvType::F32), 128);
        assert_eq!(kv_bytes_per_step(&c, 5, 0, KvType::F32), 0);
        // Halves: half the bytes.
        assert_eq!(kv_bytes_per_step(&c, 3, 2, KvType::F16), 288);
        // 128-token prompt, 64 steps on the 700M shape (24 layers, 16 KV heads × 96): 160.5
        // positions of 294,912 bytes.
        let big = Config {
            n_layer: 24,
            n_head_kv: 16,
            head_dim: 96,
            ..c
        };
        assert_eq!(kv_bytes_per_step(&big, 128, 64, KvType::F32), 47_333_376);
    }
}
