//! `harness trace`: run the engine on a model and tokens and write its trace directory
//! (`trace.jsonl`, `<point>.step<k>.npy`, `logits.npy`, `generated.json`).

use anyhow::{Context, Result};
use bitnet_engine::forward::{self, Tracer};
use bitnet_engine::kernels::Kernel;
use bitnet_engine::model::Model;

use super::ref_trace::TraceArgs;
use super::UsageError;

pub fn run(args: TraceArgs, kernel: Option<String>) -> Result<()> {
    if args.threads == 0 {
        return Err(UsageError("`--threads` must be at least 1".into()).into());
    }
    let kernel = match kernel {
        Some(k) => Kernel::parse(&k).map_err(UsageError)?,
        None => Kernel::from_env().map_err(UsageError)?,
    };
    let model = Model::load(&args.model).map_err(|e| UsageError(e.to_string()))?;
    let tokens = match &args.prompt {
        Some(p) => {
            let t = model.tokenizer.as_ref().ok_or_else(|| {
                UsageError(format!(
                    "`{}` has no vocabulary (`tokenizer.ggml.model = none`): give `--tokens`",
                    args.model.display()
                ))
            })?;
            let ids = t.encode(p, true);
            println!("prompt tokens: {ids:?}");
            ids
        }
        None => args.tokens.clone(),
    };
    if tokens.is_empty() {
        return Err(UsageError("the prompt gives no tokens".into()).into());
    }
    let filter = args.filter()?;
    let unmatched = filter.unmatched(model.config.n_layer as u32);
    if !unmatched.is_empty() {
        return Err(UsageError(format!(
            "`--points` {unmatched:?} match no trace point of this model"
        ))
        .into());
    }
    let mut tracer = Tracer::new(filter, &args.output, true)
        .with_context(|| format!("creating `{}`", args.output.display()))?;
    let start = std::time::Instant::now();
    let out = forward::run(
        &model,
        &tokens,
        args.generate,
        None,
        args.threads,
        kernel,
        Some(&mut tracer),
    )
    .map_err(UsageError)?;
    let elapsed = start.elapsed();
    tracer
        .finish()
        .with_context(|| format!("writing `{}`", args.output.display()))?;
    let n_vocab = model.config.n_vocab;
    bitnet_engine::npy::write_npy(
        &args.output.join("logits.npy"),
        &[tokens.len(), n_vocab],
        &out.logits,
    )?;
    bitnet_engine::npy::write_atomic(
        &args.output.join("generated.json"),
        &serde_json::to_vec(&out.generated)?,
    )?;
    let last = &out.logits[(tokens.len() - 1) * n_vocab..];
    let top = forward::argmax(last);
    println!(
        "engine trace of {} tokens written to {} in {:.3} s ({} threads, kernels: {})",
        tokens.len(),
        args.output.display(),
        elapsed.as_secs_f64(),
        args.threads,
        out.kernels.join(", ")
    );
    println!(
        "last-position logits: argmax {top} ({:.4}), first values {:?}",
        last[top as usize],
        &last[..4.min(last.len())]
    );
    println!("generated: {:?}", out.generated);
    Ok(())
}
