//! Quick engine speed check: `cargo run --release -p bitnet-engine --example speed --
//! PRESET|FILE.gguf [threads] [kernel, with knobs, or `tuned`] [prompt] [decode]` (a preset is generated into the temp
//! dir once; delete it there after changing the generator).
//! `harness bench` is the measured comparison against llama.cpp; this is for kernel work.

use std::time::Instant;

use bitnet_engine::forward::{argmax, Session};
use bitnet_engine::kernels::plan::KernelPlan;
use bitnet_engine::model::Model;
use bitnet_engine::synth::{build, preset};

fn main() -> Result<(), String> {
    if bitnet_engine::planted::COMPILED {
        // `cargo build --example` at the workspace root unifies the harness's dev-dependency
        // features, the planted-bug switch among them: a check per operation, slower timings.
        eprintln!(
            "warning: this build has the planted-bug switch compiled in (built from the workspace \
             root without `-p bitnet-engine`?); its timings are slower than the engine's"
        );
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().map(String::as_str).unwrap_or("tiny");
    let threads: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(1);
    // A variant with any knobs, as `BITNET_KERNEL` takes them (`"avx512 rows 1"`), or `tuned`:
    // the first plan for this thread count in `target/harness/tune.json` (as `harness bench`
    // wrote it; run from the workspace root), with any kind replaced by `PLAN_<kind>` (`/` as
    // `__`: `PLAN_TQ2_0__decode="vnni256 rows 8 prefetch 0"`).
    let spec = args.get(2).map(String::as_str).unwrap_or("auto");
    let plan = if spec == "tuned" {
        tuned_plan(threads)?
    } else {
        KernelPlan::forced(spec)?.0
    };
    let kernel = plan.base;
    let prompt: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(32);
    let decode: usize = args.get(4).and_then(|v| v.parse().ok()).unwrap_or(32);
    let path = if name.ends_with(".gguf") {
        std::path::PathBuf::from(name)
    } else {
        std::env::temp_dir().join(format!("bitnet-speed-{name}.gguf"))
    };
    if !path.exists() {
        let spec = preset(name).ok_or(format!("no preset {name}"))?;
        build(&spec)
            .map_err(|e| e.to_string())?
            .write(&path)
            .map_err(|e| e.to_string())?;
    }
    let model = Model::load(&path).map_err(|e| e.to_string())?;
    let n_vocab = model.config.n_vocab as u32;
    let tokens: Vec<u32> = (0..prompt as u32)
        .map(|i| (i * 7919 + 3) % n_vocab)
        .collect();
    // As `harness bench` measures: the prompt in one call with the last position's logits only,
    // then greedy decode one token per call.
    for round in 0..3 {
        let mut s = Session::new(&model, threads, kernel);
        s.set_plan(plan.clone());
        // As `harness bench`: the cache's storage made before the clock starts.
        s.reserve(tokens.len() + decode);
        let t = Instant::now();
        let logits = s.forward(&tokens, false, None)?;
        let prefill = t.elapsed().as_secs_f64();
        let mut tok = argmax(&logits);
        let t1 = Instant::now();
        for _ in 0..decode {
            tok = argmax(&s.forward(&[tok], false, None)?);
        }
        let decode_s = t1.elapsed().as_secs_f64();
        println!(
            "round {round}: prefill {:.1} tok/s, decode {:.1} tok/s, total {:.2}s, kernels {:?}",
            prompt as f64 / prefill,
            decode as f64 / decode_s,
            t.elapsed().as_secs_f64(),
            s.kernels_used()
        );
    }
    Ok(())
}

/// The plan `harness bench` tuned for `threads` threads (see `main`).
fn tuned_plan(threads: usize) -> Result<KernelPlan, String> {
    let path = "target/harness/tune.json";
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let cache: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let entry = cache["entries"]
        .as_array()
        .and_then(|es| {
            es.iter()
                .find(|e| e["threads"].as_u64() == Some(threads as u64))
        })
        .ok_or(format!("{path}: no entry for {threads} thread(s)"))?;
    let mut plan: std::collections::BTreeMap<String, String> =
        serde_json::from_value(entry["plan"].clone()).map_err(|e| format!("{path}: {e}"))?;
    for (k, v) in std::env::vars() {
        if let Some(kind) = k.strip_prefix("PLAN_") {
            plan.insert(kind.replace("__", "/"), v);
        }
    }
    let plan = KernelPlan::parse_description(&plan)?;
    println!("plan: {:?}", plan.describe());
    Ok(plan)
}
