//! Helpers shared by the harness's integration tests that run the `harness` binary.
#![allow(dead_code)] // each test target uses its own share of these

use std::path::Path;
use std::process::{Command, Output};

/// Run `harness args...` in `dir` (with `CI` unset, so failing runs write pending goldens).
pub fn harness(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(dir)
        .args(args)
        .env_remove("CI")
        .output()
        .unwrap()
}

/// A run's standard output and error, as one text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The engine's trace directory of `tokens` on `model`, as `harness trace` writes it (every
/// point with values, `logits.npy`, `generated.json`), replacing `out`; the run's output.
pub fn engine_trace_dir(
    model: &bitnet_engine::model::Model,
    tokens: &[u32],
    generate: usize,
    threads: usize,
    kernel: bitnet_engine::kernels::Kernel,
    out: &Path,
) -> bitnet_engine::forward::RunOutput {
    use bitnet_engine::forward::{self, Tracer};
    use bitnet_engine::trace::PointFilter;
    let _ = std::fs::remove_dir_all(out);
    let mut t = Tracer::new(PointFilter::all(), out, true).unwrap();
    let r = forward::run(model, tokens, generate, None, threads, kernel, Some(&mut t)).unwrap();
    t.finish().unwrap();
    bitnet_engine::npy::write_npy(
        &out.join("logits.npy"),
        &[tokens.len(), model.config.n_vocab],
        &r.logits,
    )
    .unwrap();
    std::fs::write(
        out.join("generated.json"),
        serde_json::to_vec(&r.generated).unwrap(),
    )
    .unwrap();
    r
}
