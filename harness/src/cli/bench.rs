//! `harness bench`, its llama.cpp child `harness ref-bench`, and `harness perf-gate`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use bitnet_engine::attention::KvType;
use bitnet_engine::kernels::plan::KernelPlan;
use bitnet_harness::bench::{self, BenchOptions, BenchReport, PerfBaseline};
use bitnet_harness::receipt::Receipt;

use super::{ChecksFailed, UsageError};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model (or give `--preset`).
    model: Option<PathBuf>,
    /// A synthetic preset (tiny, 700m, ...), generated under `target/harness/models/` once.
    #[arg(long, conflicts_with = "model")]
    preset: Option<String>,
    /// Thread counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Alternating rounds per thread count (engine, then llama.cpp).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Engine kernel variant for everything, optionally with knobs: `avx512`, `avx2 prefetch
    /// 16384`, `vnni256 rows 8 tokens 2 prefetch 0` (default: BITNET_KERNEL, else each kind of
    /// product on the variant and knobs measured fastest for it on this CPU and model, cached in
    /// `target/harness/tune.json`).
    #[arg(long)]
    kernel: Option<String>,
    /// A harness binary built against another llama.cpp build, to run its `ref-bench`
    /// (default: this binary).
    #[arg(long)]
    reference_bin: Option<PathBuf>,
    /// Write the report as JSON (atomically).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Add the report to this receipt as its `bench` section (rewritten atomically).
    #[arg(long)]
    receipt: Option<PathBuf>,
    /// `cpu`: the engine against llama.cpp on this CPU; `cuda`: the engine's CUDA backend against
    /// the GPU's memory-bandwidth bound (no GPU: exit 2 saying why).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    backend: String,
    /// The KV cache's type on both sides: `f32`, or `f16` (llama.cpp's default; half the bytes a
    /// decode step reads from the cache).
    #[arg(long = "kv-cache", default_value = "f32", value_parser = super::ref_trace::parse_kv_cache)]
    kv_cache: KvType,
}

pub fn run(a: Args) -> Result<()> {
    bench::check_counts(&a.threads, a.prompt_tokens, a.decode_tokens, a.rounds)
        .map_err(UsageError)?;
    // Where the figures go, checked before minutes of measuring: a file can be written beside
    // each path, and the receipt is one.
    for path in a.json.iter().chain(&a.receipt) {
        bitnet_engine::npy::temp_beside(path)
            .map_err(|e| UsageError(format!("cannot write `{}`: {e}", path.display())))?;
    }
    let receipt: Option<Receipt> = match &a.receipt {
        Some(path) => Some(bench::read_json(path).map_err(UsageError)?),
        None => None,
    };
    let model = match (&a.model, &a.preset) {
        (Some(m), None) => {
            if !m.is_file() {
                // Why not: absent, or there as a directory, a pipe or a device.
                let why = match bitnet_engine::files::open_regular(m) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        " does not exist".to_string()
                    }
                    Err(e) => format!(": {e}"),
                    Ok(_) => " cannot be read".to_string(),
                };
                return Err(UsageError(format!("model file `{}`{why}", m.display())).into());
            }
            m.clone()
        }
        (None, Some(p)) => {
            let spec = bitnet_engine::synth::preset(p).ok_or_else(|| {
                UsageError(format!(
                    "unknown preset `{p}`; expected one of {}",
                    bitnet_engine::synth::PRESETS.join(", ")
                ))
            })?;
            // Named by the spec's contents, so a changed generator makes a new file.
            let tag = blake3::hash(format!("{spec:?}").as_bytes()).to_hex();
            let path =
                PathBuf::from("target/harness/models").join(format!("{p}-{}.gguf", &tag[..12]));
            if !path.is_file() {
                std::fs::create_dir_all(path.parent().expect("has a parent"))?;
                errln!("generating preset `{p}` into {}", path.display());
                // A write error names the file.
                bitnet_engine::synth::build(&spec)
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .write(&path)?;
            }
            path
        }
        _ => return Err(UsageError("give a MODEL path or --preset NAME".into()).into()),
    };
    if a.backend == "cuda" {
        return cuda_bench(&a, model);
    }
    let kernel = match &a.kernel {
        Some(k) => Some(KernelPlan::forced(k).map_err(|e| UsageError(format!("--kernel: {e}")))?),
        None => KernelPlan::from_env().map_err(UsageError)?,
    };
    let reference_bin = match a.reference_bin {
        Some(p) => p,
        None => std::env::current_exe()?,
    };
    let o = BenchOptions {
        model,
        threads: a.threads,
        prompt_tokens: a.prompt_tokens,
        decode_tokens: a.decode_tokens,
        rounds: a.rounds,
        kernel,
        tune_cache: PathBuf::from("target/harness/tune.json"),
        reference_bin,
        timeout: Duration::from_secs(600),
        kv_cache: a.kv_cache,
    };
    let report = bench::run(&o, &mut |line| errln!("{line}")).map_err(anyhow::Error::msg)?;
    out!("{}", bench::table(&report));
    if let Some(path) = &a.json {
        let json = serde_json::to_vec_pretty(&report)?;
        bitnet_engine::npy::write_atomic(path, &json)
            .with_context(|| format!("writing {}", path.display()))?;
        errln!("report: {}", path.display());
    }
    if let (Some(path), Some(mut r)) = (&a.receipt, receipt) {
        r.bench = Some(report);
        let json = serde_json::to_vec_pretty(&r)?;
        bitnet_engine::npy::write_atomic(path, &json)
            .with_context(|| format!("writing {}", path.display()))?;
        errln!("receipt: {} (bench section)", path.display());
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct RefBenchArgs {
    model: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Print this binary's llama.cpp build options (JSON) and exit.
    #[arg(long)]
    build_info: bool,
    /// The KV cache's type: `f32` or `f16`.
    #[arg(long = "kv-cache", default_value = "f32", value_parser = super::ref_trace::parse_kv_cache)]
    kv_cache: KvType,
}

/// The llama.cpp side of `harness bench`, in a child process: one JSON line on stdout.
pub fn ref_bench(a: RefBenchArgs) -> Result<()> {
    if a.build_info {
        outln!("{}", serde_json::to_string(&bench::build_flags())?);
        return Ok(());
    }
    let model = a
        .model
        .ok_or_else(|| UsageError("ref-bench: give a MODEL path".into()))?;
    bitnet_harness::reference::llama::check_model(&model).map_err(UsageError)?;
    bench::check_counts(&[a.threads], a.prompt_tokens, a.decode_tokens, 1).map_err(UsageError)?;
    let config = bitnet_engine::model::Model::load(&model)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .config;
    bench::check_context(&model, config.n_ctx_train, a.prompt_tokens, a.decode_tokens)
        .map_err(UsageError)?;
    let tokens = bench::prompt(a.prompt_tokens, config.n_vocab);
    let t = bitnet_harness::reference::llama::bench(
        &model,
        a.threads,
        &tokens,
        a.decode_tokens,
        a.kv_cache,
    )
    .map_err(anyhow::Error::msg)?;
    outln!("{}", serde_json::to_string(&t)?);
    Ok(())
}

#[derive(clap::Args)]
pub struct GateArgs {
    /// The stored floors.
    #[arg(long, default_value = "receipts/perf-baseline.json")]
    baseline: PathBuf,
    /// A `harness bench --json` report.
    #[arg(long)]
    bench: PathBuf,
}

/// Exit 0 when every floor holds, 1 (naming each miss) when not, 2 on unreadable input.
pub fn perf_gate(a: GateArgs) -> Result<()> {
    let base: PerfBaseline = bench::read_json(&a.baseline).map_err(UsageError)?;
    bench::check_baseline(&base)
        .map_err(|e| UsageError(format!("{}: {e}", a.baseline.display())))?;
    let report: BenchReport = bench::read_json(&a.bench).map_err(UsageError)?;
    bench::check_report(&report).map_err(|e| {
        UsageError(format!(
            "{}: {e}: not a report as `harness bench` writes it",
            a.bench.display()
        ))
    })?;
    if report.test_build {
        return Err(UsageError(format!(
            "{}: `test_build` is true: the engine that ran was a test build (the planted-bug \
             switch compiled in, as `cargo test` builds the `harness` binary), whose timings are \
             not the release engine's; run `cargo build --release` and bench again",
            a.bench.display()
        ))
        .into());
    }
    match bench::gate(&base, &report) {
        Ok(lines) => {
            for l in lines {
                let tag = if l.starts_with("using the ") {
                    "note"
                } else {
                    "pass"
                };
                outln!("{tag}  {l}");
            }
            Ok(())
        }
        Err(lines) => {
            for l in lines {
                let tag = if l.starts_with("using the ") {
                    "note"
                } else {
                    "FAIL"
                };
                outln!("{tag}  {l}");
            }
            Err(ChecksFailed.into())
        }
    }
}

/// `harness bench --backend cuda`: the CUDA backend against the GPU's bandwidth bound.
fn cuda_bench(a: &Args, model: PathBuf) -> Result<()> {
    use bitnet_harness::bench::cuda::{self, CudaBenchError, CudaBenchOptions};
    if a.receipt.is_some() {
        return Err(UsageError(
            "--receipt takes the cpu bench's report; the cuda report is written with --json".into(),
        )
        .into());
    }
    let o = CudaBenchOptions {
        model,
        prompt_tokens: a.prompt_tokens,
        decode_tokens: a.decode_tokens,
        rounds: a.rounds,
        ptx_cache: bitnet_harness::run::cuda::ptx_cache(&std::env::current_dir()?),
    };
    let report = match cuda::run(&o, &mut |line| errln!("{line}")) {
        Ok(r) => r,
        Err(e @ CudaBenchError::NoGpu(_)) => return Err(UsageError(e.to_string()).into()),
        Err(e) => return Err(anyhow::Error::msg(e.to_string())),
    };
    out!("{}", cuda::table(&report));
    if let Some(path) = &a.json {
        let json = serde_json::to_vec_pretty(&report)?;
        bitnet_engine::npy::write_atomic(path, &json)
            .with_context(|| format!("writing {}", path.display()))?;
        errln!("report: {}", path.display());
    }
    Ok(())
}
