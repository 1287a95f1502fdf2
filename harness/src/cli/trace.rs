//! `harness trace`: run the engine on a model and tokens and write its trace directory
//! (`trace.jsonl`, `<point>.step<k>.npy`, `logits.npy`, `generated.json`). Trace directories
//! (this one's and `harness ref-trace`'s) are written whole ([`write_whole`]): no file of an
//! earlier run into the same directory is left beside the new one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bitnet_engine::forward::{self, Tracer};
use bitnet_engine::kernels::plan::KernelPlan;
use bitnet_engine::model::Model;

use super::ref_trace::TraceArgs;
use super::UsageError;

pub fn run(args: TraceArgs, kernel: Option<String>) -> Result<()> {
    args.check_counts()?;
    let forced = match kernel {
        Some(k) => Some(KernelPlan::forced(&k).map_err(UsageError)?),
        None => KernelPlan::from_env().map_err(UsageError)?,
    };
    let plan = forced.map(|(p, _)| p);
    let model = Model::load(&args.model).map_err(|e| UsageError(e.to_string()))?;
    let tokens = match &args.prompt {
        Some(p) => {
            let t = model
                .text_tokenizer(&args.model.display().to_string())
                .map_err(|e| UsageError(e.replace("give token ids", "give `--tokens`")))?;
            let ids = t.encode(p, true);
            outln!("prompt tokens: {ids:?}");
            ids
        }
        None => args.tokens.clone(),
    };
    if tokens.is_empty() {
        return Err(UsageError("the prompt gives no tokens".into()).into());
    }
    args.check_context(tokens.len(), Some(model.config.n_ctx_train as u64))?;
    let filter = args.filter()?;
    let unmatched = filter.unmatched(model.config.n_layer as u32);
    if !unmatched.is_empty() {
        return Err(UsageError(format!(
            "`--points` {unmatched:?} match no trace point of this model"
        ))
        .into());
    }
    let n_vocab = model.config.n_vocab;
    let (out, elapsed) = write_whole(&args.output, |dir| {
        let mut tracer = Tracer::new(filter, dir, true)
            .with_context(|| format!("creating `{}`", dir.display()))?;
        let start = std::time::Instant::now();
        let opts = forward::RunOptions {
            generate: args.generate,
            chunk: None,
            threads: args.threads,
            kernel: plan
                .as_ref()
                .map_or(bitnet_engine::kernels::Kernel::best(), |p| p.base),
            nudge_embeddings: false,
            unpack_tq1: None,
            plan: plan.clone().filter(|p| !p.products.is_empty()),
            kv_type: args.kv_cache,
        };
        let out =
            forward::run_with(&model, &tokens, &opts, Some(&mut tracer)).map_err(UsageError)?;
        let elapsed = start.elapsed();
        tracer
            .finish()
            .with_context(|| format!("writing `{}`", dir.display()))?;
        bitnet_engine::npy::write_npy(
            &dir.join("logits.npy"),
            &[tokens.len(), n_vocab],
            &out.logits,
        )?;
        bitnet_engine::npy::write_atomic(
            &dir.join("generated.json"),
            &serde_json::to_vec(&out.generated)?,
        )?;
        Ok((out, elapsed))
    })?;
    let last = &out.logits[(tokens.len() - 1) * n_vocab..];
    let top = forward::argmax(last);
    outln!(
        "engine trace of {} tokens written to {} in {:.3} s ({} threads, kernels: {})",
        tokens.len(),
        args.output.display(),
        elapsed.as_secs_f64(),
        args.threads,
        out.kernels.join(", ")
    );
    outln!(
        "last-position logits: argmax {top} ({:.4}), first values {:?}",
        last[top as usize],
        &last[..4.min(last.len())]
    );
    outln!("generated: {:?}", out.generated);
    Ok(())
}

/// Write a trace directory whole: `write` fills a fresh hidden sibling of `out`, which then takes
/// `out`'s place (an earlier trace directory there is removed), so no file of an earlier run
/// stays beside the new ones, and a failed run leaves the old directory as it was. An `out` that
/// exists, is not empty and holds no `trace.jsonl` is not a trace directory and is refused.
pub fn write_whole<T>(out: &Path, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    if out.file_name().is_none() {
        return Err(UsageError(format!("`{}` names no directory", out.display())).into());
    }
    let parent: PathBuf = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    if out.exists() {
        if !out.is_dir() {
            return Err(
                UsageError(format!("`{}` exists and is not a directory", out.display())).into(),
            );
        }
        let empty = std::fs::read_dir(out)
            .with_context(|| format!("reading `{}`", out.display()))?
            .next()
            .is_none();
        if !empty && !out.join("trace.jsonl").exists() {
            return Err(UsageError(format!(
                "`{}` exists and is not a trace directory (no `trace.jsonl`): it is not replaced; choose another `-o`",
                out.display()
            ))
            .into());
        }
    }
    std::fs::create_dir_all(&parent).with_context(|| format!("creating `{}`", parent.display()))?;
    // Removed with its contents however `write` ends (an error or a panic), unless kept below.
    let tmp = bitnet_engine::npy::temp_dir_beside(out)
        .with_context(|| format!("creating a directory beside `{}`", out.display()))?;
    let value = write(tmp.path())?;
    // The old directory moves aside (a temporary directory too: removed when dropped).
    let old = if out.exists() {
        let old = bitnet_engine::npy::temp_dir_beside(out)
            .with_context(|| format!("creating a directory beside `{}`", out.display()))?;
        std::fs::rename(out, old.path())
            .with_context(|| format!("moving the old `{}` aside", out.display()))?;
        Some(old)
    } else {
        None
    };
    if let Err(e) = std::fs::rename(tmp.path(), out) {
        if let Some(old) = old {
            let _ = std::fs::rename(old.path(), out);
            let _ = old.keep();
        }
        return Err(anyhow::Error::new(e).context(format!("renaming into `{}`", out.display())));
    }
    let _ = tmp.keep();
    if let Some(old) = old {
        let shown = old.path().display().to_string();
        old.close()
            .with_context(|| format!("removing the old trace `{shown}`"))?;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_trace_directory_keeps_no_stale_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        write_whole(&out, |d| {
            std::fs::write(d.join("trace.jsonl"), "1")?;
            std::fs::write(d.join("blk.0.q.step3.npy"), "x")?;
            Ok(())
        })
        .unwrap();
        write_whole(&out, |d| Ok(std::fs::write(d.join("trace.jsonl"), "2")?)).unwrap();
        let names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["trace.jsonl"]);
        // A failed write leaves the old directory; nothing hidden is left beside it.
        let e = write_whole::<()>(&out, |d| {
            std::fs::write(d.join("trace.jsonl"), "3")?;
            anyhow::bail!("engine failed")
        });
        assert!(e.is_err());
        assert_eq!(
            std::fs::read_to_string(out.join("trace.jsonl")).unwrap(),
            "2"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A directory that is not a trace directory is not replaced.
        let mine = dir.path().join("mine");
        std::fs::create_dir(&mine).unwrap();
        std::fs::write(mine.join("notes.txt"), "keep").unwrap();
        let e = write_whole(&mine, |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("not a trace directory"), "{e}");
        assert!(mine.join("notes.txt").exists());
    }
}
