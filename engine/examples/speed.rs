//! Quick engine speed check: `cargo run --release -p bitnet-engine --example speed --
//! PRESET|FILE.gguf [threads] [kernel, with knobs] [prompt] [decode]` (a preset is generated into the temp
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
    // A variant with any knobs, as `BITNET_KERNEL` takes them (`"avx512 rows 1"`).
    let (plan, _) = KernelPlan::forced(args.get(2).map(String::as_str).unwrap_or("auto"))?;
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
