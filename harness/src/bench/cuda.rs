//! `harness bench --backend cuda`: the engine's CUDA backend on one GPU against that GPU's
//! memory-bandwidth bound. A decode step reads every weight once, so `bound = bandwidth / weight
//! bytes`; the bandwidth is measured on the device in every round (a plain read of a 1 GiB buffer,
//! `bn_read_sum`, timed with CUDA events) beside the runs it bounds, and the device's peak from
//! its memory clock and bus width is reported beside it. There is no llama.cpp side: the linked
//! llama.cpp is a CPU build. Without a GPU, [`run`] says why (the CLI exits 2).

use std::path::{Path, PathBuf};
use std::time::Instant;

use bitnet_engine::cuda::{self, CudaSession, DeviceInfo, Target};
use bitnet_engine::forward::argmax;
use bitnet_engine::model::Model;
use serde::{Deserialize, Serialize};

use super::{prompt, weight_bytes, Stats};

/// What to measure.
#[derive(Debug, Clone)]
pub struct CudaBenchOptions {
    pub model: PathBuf,
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    pub rounds: usize,
    /// Where the kernels' PTX is cached (`target/harness/ptx`).
    pub ptx_cache: PathBuf,
}

/// A `harness bench --backend cuda` report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CudaBenchReport {
    /// Always 1.
    pub schema_version: u32,
    /// Always `cuda`.
    pub backend: String,
    pub model: String,
    pub model_blake3: String,
    pub weight_bytes_per_token: u64,
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    pub rounds: usize,
    pub device: DeviceInfo,
    /// Measured device read bandwidth, GB/s (median over the rounds).
    pub bandwidth_gbs: f64,
    /// Decode tokens/s if every weight byte streamed at that bandwidth.
    pub bound_decode_tps: f64,
    pub prefill_tps: Stats,
    pub decode_tps: Stats,
    /// Median decode tokens/s over the bound.
    pub share_of_bound: f64,
    /// The `_cuda` kernel IDs that ran.
    pub kernels: Vec<String>,
    /// RFC 3339, UTC.
    pub started_at: String,
}

/// Why the bench cannot run here (no GPU: the CLI's usage exit), or what failed on the GPU.
#[derive(Debug, thiserror::Error)]
pub enum CudaBenchError {
    #[error("`--backend cuda` needs a GPU: {0}")]
    NoGpu(String),
    #[error("{0}")]
    Failed(String),
}

/// Run the bench; `progress` receives a line per round.
pub fn run(
    o: &CudaBenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<CudaBenchReport, CudaBenchError> {
    let fail = |e: String| CudaBenchError::Failed(e);
    super::check_counts(&[1], o.prompt_tokens, o.decode_tokens, o.rounds).map_err(fail)?;
    let cache: &Path = &o.ptx_cache;
    let device = cuda::probe(0, Some(cache)).map_err(|e| CudaBenchError::NoGpu(e.to_string()))?;
    let started_at = crate::receipt::rfc3339(std::time::SystemTime::now());
    let model = Model::load(&o.model).map_err(|e| fail(e.to_string()))?;
    super::check_context(
        &o.model,
        model.config.n_ctx_train,
        o.prompt_tokens,
        o.decode_tokens,
    )
    .map_err(fail)?;
    let tokens = prompt(o.prompt_tokens, model.config.n_vocab);
    let wbytes = weight_bytes(&o.model).map_err(fail)?;
    let target = Target::Gpu {
        ordinal: 0,
        ptx_cache: Some(cache.to_path_buf()),
    };
    let (mut bws, mut pre, mut dec) = (Vec::new(), Vec::new(), Vec::new());
    let mut kernels = Vec::new();
    let mut info = device;
    for round in 0..o.rounds {
        bws.push(
            cuda::measure_bandwidth(0, Some(cache), 1 << 30, 5).map_err(|e| fail(e.to_string()))?,
        );
        // The weights go to the device here, outside the timed passes.
        let mut s = CudaSession::new(&model, &target).map_err(|e| fail(e.to_string()))?;
        info = s.device().clone();
        let t0 = Instant::now();
        let logits = s
            .forward(&tokens, false, None)
            .map_err(|e| fail(e.to_string()))?;
        let p = t0.elapsed().as_secs_f64();
        let mut tok = argmax(&logits);
        let t1 = Instant::now();
        for _ in 0..o.decode_tokens {
            tok = argmax(
                &s.forward(&[tok], false, None)
                    .map_err(|e| fail(e.to_string()))?,
            );
        }
        let d = t1.elapsed().as_secs_f64();
        kernels = s.kernels_used();
        pre.push(o.prompt_tokens as f64 / p);
        dec.push(o.decode_tokens as f64 / d.max(1e-12));
        progress(&format!(
            "round {}: device read {:.0} GB/s; cuda prefill {:.1} decode {:.1} tok/s",
            round + 1,
            bws[round],
            pre[round],
            dec[round]
        ));
    }
    let bw = Stats::of(&bws).median;
    let bound = bw * 1e9 / wbytes as f64;
    let decode_tps = Stats::of(&dec);
    Ok(CudaBenchReport {
        schema_version: 1,
        backend: "cuda".into(),
        model: o.model.display().to_string(),
        model_blake3: crate::receipt::blake3_file(&o.model).map_err(|e| fail(e.to_string()))?,
        weight_bytes_per_token: wbytes,
        prompt_tokens: o.prompt_tokens,
        decode_tokens: o.decode_tokens,
        rounds: o.rounds,
        device: info,
        bandwidth_gbs: bw,
        bound_decode_tps: bound,
        prefill_tps: Stats::of(&pre),
        share_of_bound: decode_tps.median / bound,
        decode_tps,
        kernels,
        started_at,
    })
}

/// The report as a table.
pub fn table(r: &CudaBenchReport) -> String {
    let d = &r.device;
    format!(
        "device      {} (compute {}, driver {}, NVRTC {})\n\
         bandwidth   {:.0} GB/s measured, {:.0} GB/s peak; bound {:.1} tok/s over {:.1} MB of weights\n\
         prefill     {:.1} tok/s (min {:.1}, max {:.1})\n\
         decode      {:.1} tok/s (min {:.1}, max {:.1}): {:.1}% of the bound\n",
        d.name,
        d.compute_capability,
        d.driver_version,
        d.nvrtc_version.as_deref().unwrap_or("not loaded (cached PTX)"),
        r.bandwidth_gbs,
        d.peak_bandwidth_gbs,
        r.bound_decode_tps,
        r.weight_bytes_per_token as f64 / 1e6,
        r.prefill_tps.median,
        r.prefill_tps.min,
        r.prefill_tps.max,
        r.decode_tps.median,
        r.decode_tps.min,
        r.decode_tps.max,
        100.0 * r.share_of_bound
    )
}
