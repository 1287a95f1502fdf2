//! Whole runs: a prompt (whole or in chunks) then greedy generation, traced or not.

use super::*;

/// Output of [`run`]: prefill logits, greedy tokens, kernels used.
pub struct RunOutput {
    /// `n_prompt × n_vocab`.
    pub logits: Vec<f32>,
    pub generated: Vec<u32>,
    pub kernels: Vec<String>,
    /// Wall time of the prefill and of the decode calls (with tracing, when a tracer was given).
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    /// Decode calls made (`generate − 1` when generating).
    pub decode_calls: usize,
}

/// Prefill `tokens` (in chunks of `chunk` tokens, or all at once), then generate `generate` greedy
/// tokens (step 0 is the prefill, step k the k-th decode call), as llama.cpp's reference runner
/// does.
pub fn run(
    model: &Model,
    tokens: &[u32],
    generate: usize,
    chunk: Option<usize>,
    threads: usize,
    kernel: Kernel,
    tracer: Option<&mut Tracer>,
) -> Result<RunOutput, String> {
    let opts = RunOptions {
        generate,
        chunk,
        threads,
        kernel,
        nudge_embeddings: false,
        unpack_tq1: None,
        plan: None,
        kv_type: Default::default(),
    };
    run_with(model, tokens, &opts, tracer)
}

/// Greedy generation as `harness bench` and real use run it: no tracer, and each call computes
/// the logits of its last position only. Returns the `generate` tokens and the last call's logits.
pub fn generate_last_only(
    model: &Model,
    tokens: &[u32],
    generate: usize,
    threads: usize,
    kernel: Kernel,
) -> Result<(Vec<u32>, Vec<f32>), String> {
    let mut s = Session::new(model, threads, kernel);
    s.reserve(tokens.len() + generate);
    let mut logits = s.forward(tokens, false, None)?;
    let mut out = Vec::with_capacity(generate);
    for i in 0..generate {
        out.push(argmax(&logits));
        if i + 1 < generate {
            logits = s.forward(&[out[i]], false, None)?;
        }
    }
    Ok((out, logits))
}

/// Options of [`run_with`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub generate: usize,
    /// Prefill chunk size (all tokens at once when `None`).
    pub chunk: Option<usize>,
    pub threads: usize,
    pub kernel: Kernel,
    /// See [`Session::nudge_embeddings`].
    pub nudge_embeddings: bool,
    /// See [`Session::unpack_tq1`]; `None`: the default for the kernel ([`unpack_tq1_for`]).
    pub unpack_tq1: Option<bool>,
    /// Each kind of product on the variant this plan names (its base for everything else, in
    /// place of `kernel`); `None`: `kernel` for everything. Every plan gives the same bits.
    pub plan: Option<KernelPlan>,
    /// The KV cache's element type ([`Session::set_kv_type`]).
    pub kv_type: crate::attention::KvType,
}

/// [`run`] with every option.
pub fn run_with(
    model: &Model,
    tokens: &[u32],
    opts: &RunOptions,
    mut tracer: Option<&mut Tracer>,
) -> Result<RunOutput, String> {
    let (generate, chunk) = (opts.generate, opts.chunk);
    if tokens.is_empty() {
        return Err("no input tokens".into());
    }
    let unpack = opts
        .unpack_tq1
        .unwrap_or_else(|| unpack_tq1_for(opts.kernel));
    let mut s = Session::new_with(model, opts.threads, opts.kernel, unpack);
    if let Some(plan) = &opts.plan {
        s.set_plan(plan.clone());
    }
    s.nudge_embeddings = opts.nudge_embeddings;
    s.set_kv_type(opts.kv_type);
    // Every position's cache storage before the clock starts (see `Session::reserve`).
    s.reserve(tokens.len() + generate);
    let chunk = chunk.unwrap_or(tokens.len()).max(1);
    let mut logits = Vec::with_capacity(tokens.len() * model.config.n_vocab);
    let t0 = std::time::Instant::now();
    let chunked = chunk < tokens.len();
    if chunked {
        if let Some(t) = tracer.as_deref_mut() {
            t.hold();
        }
    }
    for part in tokens.chunks(chunk) {
        // Chunks of one prefill are one trace step.
        let calls = s.calls;
        logits.extend(s.forward(part, true, tracer.as_deref_mut())?);
        s.calls = calls;
    }
    if let Some(t) = tracer.as_deref_mut() {
        t.release();
    }
    s.calls = 1;
    let prefill_seconds = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let n_vocab = model.config.n_vocab;
    let mut generated = Vec::new();
    if generate > 0 {
        generated.push(argmax(&logits[(tokens.len() - 1) * n_vocab..]));
        for _ in 1..generate {
            let next = s.forward(
                &[*generated.last().expect("one token")],
                true,
                tracer.as_deref_mut(),
            )?;
            generated.push(argmax(&next));
        }
    }
    let decode_calls = generate.saturating_sub(1);
    Ok(RunOutput {
        logits,
        generated,
        kernels: s.kernels_used(),
        prefill_seconds,
        decode_seconds: t1.elapsed().as_secs_f64(),
        decode_calls,
    })
}
