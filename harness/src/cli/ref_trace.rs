//! `harness ref-trace`: run llama.cpp on a model and tokens and write its trace directory.
//! The harness runs this as a child process; it can also be run by hand.

use std::path::PathBuf;

use anyhow::Result;
use bitnet_engine::attention::KvType;
use bitnet_engine::trace::PointFilter;

use super::UsageError;
use bitnet_harness::reference::{llama, RefRequest};
use bitnet_harness::scenario::{MAX_STEPS, MAX_THREADS};

/// Arguments shared by `harness trace` and `harness ref-trace`.
#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    /// The GGUF model.
    pub model: PathBuf,
    /// Input token ids, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "prompt",
        conflicts_with = "prompt"
    )]
    pub tokens: Vec<u32>,
    /// Input text, tokenized with the model's vocabulary (the engine's tokenizer for `trace`,
    /// llama.cpp's for `ref-trace`).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Greedy tokens to generate after the prompt.
    #[arg(long, default_value_t = 0)]
    pub generate: usize,
    /// Trace points to capture (globs over canonical names); all when none is given.
    #[arg(long = "points")]
    pub points: Vec<String>,
    /// Threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// The KV cache's type: `f32`, or `f16` (llama.cpp's default `type_k` / `type_v`).
    #[arg(long = "kv-cache", default_value = "f32", value_parser = parse_kv_cache)]
    pub kv_cache: KvType,
    /// Output directory.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// `--kv-cache`'s value.
pub fn parse_kv_cache(s: &str) -> std::result::Result<KvType, String> {
    KvType::parse(s).ok_or_else(|| format!("expected `f32` or `f16`, found `{s}`"))
}

impl TraceArgs {
    /// `--threads` from 1 to [`MAX_THREADS`] and `--generate` at most [`MAX_STEPS`], the bounds a
    /// scenario's `threads` and `generation.steps` have (each step is traced to its own files).
    pub fn check_counts(&self) -> Result<()> {
        if self.threads == 0 || self.threads > MAX_THREADS {
            return Err(UsageError(format!(
                "`--threads` is {}, expected 1 to {MAX_THREADS}",
                self.threads
            ))
            .into());
        }
        if self.generate > MAX_STEPS {
            return Err(UsageError(format!(
                "`--generate` is {}, at most {MAX_STEPS} (every step is traced)",
                self.generate
            ))
            .into());
        }
        Ok(())
    }

    /// The prompt's tokens and `--generate` must fit the model's `context_length` (when it is
    /// known), as a scenario's must: a longer list would size activations and both KV caches
    /// past what the model was made for.
    pub fn check_context(&self, n_tokens: usize, n_ctx: Option<u64>) -> Result<()> {
        let Some(n_ctx) = n_ctx else { return Ok(()) };
        let total = n_tokens as u64 + self.generate as u64;
        if total > n_ctx {
            return Err(UsageError(format!(
                "{n_tokens} prompt tokens and `--generate` {}: {total} positions, more than the context of `{}` (`context_length` {n_ctx})",
                self.generate,
                self.model.display()
            ))
            .into());
        }
        Ok(())
    }

    pub fn filter(&self) -> Result<PointFilter> {
        let f = if self.points.is_empty() {
            PointFilter::all()
        } else {
            PointFilter::new(&self.points).map_err(UsageError)?
        };
        Ok(f)
    }
}

/// Arguments of `harness ref-trace`: those of `harness trace`, and the perturbations
/// calibration uses.
#[derive(clap::Args, Debug)]
pub struct RefTraceArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Decode the prompt in calls of this many tokens.
    #[arg(long)]
    pub ubatch: Option<usize>,
    /// Feed the input embeddings nudged up by one f32 ulp instead of token ids.
    #[arg(long)]
    pub nudge_embeddings: bool,
}

pub fn run(a: RefTraceArgs) -> Result<()> {
    let (args, ubatch, nudge_embeddings) = (a.trace, a.ubatch, a.nudge_embeddings);
    if ubatch == Some(0) {
        return Err(UsageError("`--ubatch` must be at least 1".into()).into());
    }
    llama::check_model(&args.model).map_err(UsageError)?;
    // A file llama.cpp cannot run, or would abort on: said here, not left to its abort.
    if let Some(why) = bitnet_harness::reference::llama_cannot_run(&args.model) {
        return Err(UsageError(format!(
            "`{}`: {why}; {}",
            args.model.display(),
            bitnet_harness::reference::SCENARIO_REFERENCE_HINT
        ))
        .into());
    }
    args.check_counts()?;
    let tokens = match &args.prompt {
        Some(p) => llama::tokenize(&args.model, p).map_err(UsageError)?,
        None => args.tokens.clone(),
    };
    let header = bitnet_engine::gguf::GgufFile::open(&args.model).ok();
    args.check_context(
        tokens.len(),
        header
            .as_ref()
            .and_then(bitnet_engine::model::context_length),
    )?;
    let points = args.filter()?;
    // Written whole, as `harness trace` does: no stale file of an earlier run stays.
    let req = super::trace::write_whole(&args.output, |dir| {
        let req = RefRequest {
            model: args.model.clone(),
            tokens,
            generate: args.generate,
            points,
            threads: args.threads,
            out: dir.to_owned(),
            ubatch,
            nudge_embeddings,
            kv_cache: args.kv_cache,
        };
        llama::run(&req).map_err(anyhow::Error::msg)?;
        Ok(req)
    })?;
    outln!(
        "llama.cpp trace of {} tokens (+{} generated) written to {}",
        req.tokens.len(),
        req.generate,
        args.output.display()
    );
    Ok(())
}

/// Arguments of `harness ref-tokenize` and `harness tokenize`.
#[derive(clap::Args, Debug)]
pub struct TokenizeArgs {
    /// The GGUF model.
    pub model: PathBuf,
    /// The text.
    #[arg(long)]
    pub prompt: String,
}

/// `harness ref-tokenize`: llama.cpp's token ids of a text, as a JSON array.
pub fn ref_tokenize(args: TokenizeArgs) -> Result<()> {
    llama::check_model(&args.model).map_err(UsageError)?;
    let ids = llama::tokenize(&args.model, &args.prompt).map_err(UsageError)?;
    outln!("{}", serde_json::to_string(&ids)?);
    Ok(())
}

/// `harness tokenize`: the engine's token ids of a text, as a JSON array.
pub fn tokenize(args: TokenizeArgs) -> Result<()> {
    let model =
        bitnet_engine::model::Model::load(&args.model).map_err(|e| UsageError(e.to_string()))?;
    let t = model
        .text_tokenizer(&args.model.display().to_string())
        .map_err(UsageError)?;
    outln!("{}", serde_json::to_string(&t.encode(&args.prompt, true))?);
    Ok(())
}
