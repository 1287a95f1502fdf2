//! Receipts of a run, and `verify-receipt --reproduce`.

use super::*;

impl Context {
    /// The receipt of a scenario whose checks ran (`None` when the engine did not run: every
    /// check ignored, or the engine failed before producing a trace).
    pub fn receipt(
        &self,
        s: &LoadedScenario,
        verdicts: &[(Check, Status)],
        started: std::time::SystemTime,
        seconds: f64,
    ) -> Option<crate::receipt::Receipt> {
        use crate::receipt::{self, BuildInfo, EngineInfo, Receipt, Throughput};
        if verdicts.iter().all(|(_, st)| *st == Status::Ignored) {
            return None;
        }
        // Only a run that completed: a receipt never starts (or re-panics) an engine run.
        let cell = self.cache.lock().ok()?.get(&s.stem)?.clone();
        let runs = cell.get()?.as_ref().ok()?;
        let rel = |p: &Path| {
            // Relative to the project root, wherever the run was started from.
            let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
            abs.strip_prefix(&self.root)
                .map_or_else(|_| p.display().to_string(), |r| r.display().to_string())
        };
        let model_blake3 = {
            let mut h = blake3::Hasher::new();
            h.update_mmap(&runs.model).ok()?;
            h.finalize().to_hex().to_string()
        };
        let (git_commit, git_dirty) = receipt::git_state(&self.root);
        let per = |n: usize, secs: f64| (n > 0 && secs > 0.0).then(|| n as f64 / secs);
        let reference = self.reference_timing(s);
        let mut r = Receipt {
            schema_version: 1,
            scenario: s.stem.clone(),
            scenario_file: rel(&s.path),
            scenario_blake3: s.file_blake3.clone(),
            model: rel(&runs.model),
            model_blake3,
            engine: EngineInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                git_commit,
                git_dirty,
            },
            build: BuildInfo {
                profile: if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                }
                .into(),
                target_arch: std::env::consts::ARCH.into(),
                cpu_features: receipt::cpu_features(),
                cpu_model: crate::tune::cpu_model(),
            },
            backend: "cpu".into(),
            kernels: runs.kernels.clone(),
            kernel_plan: runs.plan.as_ref().map(|p| p.describe()),
            compute_path: "real".into(),
            threads: s.scenario.threads,
            kv_cache: s.scenario.kv_cache,
            throughput: Throughput {
                prefill_tps: per(runs.prefill_tokens, runs.prefill_seconds).unwrap_or(f64::NAN),
                decode_tps: per(runs.decode_calls, runs.decode_seconds),
                reference_prefill_tps: reference.and_then(|r| per(r.0, r.1)),
                reference_decode_tps: reference.and_then(|r| per(r.2, r.3)),
            },
            trace_digest: receipt::trace_digest(&golden_body(runs)),
            verdicts: verdicts
                .iter()
                .map(|(c, st)| {
                    let v = match st {
                        Status::Pass => "pass",
                        Status::Fail => "fail",
                        Status::Ignored => "ignored",
                    };
                    (c.name().to_string(), v.to_string())
                })
                .collect(),
            started_at: receipt::rfc3339(started),
            duration_seconds: seconds,
            bench: None,
            gpu: None,
        };
        cuda::annotate_receipt(self, &s.stem, &mut r);
        Some(r)
    }
}

/// `verify-receipt --reproduce`: re-run the receipt's scenario on the engine side here (model
/// generated or read as the scenario says, `threads` as recorded) and confirm the trace digest,
/// then the engine's throughput within `tps_factor` of the recorded figure (decode when the
/// scenario decodes, else prefill). The receipt must have passed [`crate::receipt::verify_file`] first.
/// Returns a line describing what was reproduced.
pub fn reproduce_receipt(
    path: &Path,
    base: &Path,
    harness: &Path,
    tps_factor: f64,
) -> Result<String, crate::receipt::Failure> {
    use crate::receipt::{self, Receipt};
    let shown = path.display().to_string();
    let fail = |code: u8, message: String| receipt::Failure {
        code,
        message: format!("{shown}: --reproduce: {message}"),
    };
    let text = bitnet_engine::files::read_text_limited(
        path,
        bitnet_engine::files::MAX_JSON_BYTES,
        "receipt",
    )
    .map_err(|e| fail(receipt::EXIT_MALFORMED, format!("cannot read: {e}")))?;
    let r: Receipt = crate::bounded::json(&text)
        .and_then(|()| serde_json::from_str(&text))
        .map_err(|e| fail(receipt::EXIT_MALFORMED, format!("not a receipt: {e}")))?;
    let s = crate::scenario::load_scenario(&base.join(&r.scenario_file))
        .map_err(|e| fail(receipt::EXIT_SCENARIO_HASH, e.to_string()))?;
    if let Some(why) = skip_reason(&s) {
        return Err(fail(
            receipt::EXIT_REPRODUCE,
            format!("the scenario cannot run here: {why}"),
        ));
    }
    let runs_dir = tempfile::tempdir().map_err(|e| {
        fail(
            receipt::EXIT_REPRODUCE,
            format!("no scratch directory: {e}"),
        )
    })?;
    let ctx = Context::new(base, runs_dir.path().to_path_buf(), harness.to_path_buf());
    let cell = ctx.runs(&s).map_err(|e| fail(receipt::EXIT_REPRODUCE, e))?;
    let runs = match cell.get() {
        Some(Ok(runs)) => runs,
        Some(Err(e)) => {
            return Err(fail(
                receipt::EXIT_REPRODUCE,
                format!("the engine run failed: {e}"),
            ))
        }
        None => unreachable!("runs() initialises the cell"),
    };
    let digest = receipt::trace_digest(&golden_body(runs));
    if digest != r.trace_digest {
        return Err(fail(
            receipt::EXIT_REPRODUCE,
            format!(
                "the engine's trace here has digest {digest}, the receipt says {}: the recorded run is not this scenario's on this engine",
                r.trace_digest
            ),
        ));
    }
    let per = |n: usize, secs: f64| (n > 0 && secs > 0.0).then(|| n as f64 / secs);
    let (what, here, claimed) = match (
        per(runs.decode_calls, runs.decode_seconds),
        r.throughput.decode_tps,
    ) {
        (Some(h), Some(c)) => ("decode", h, c),
        _ => (
            "prefill",
            per(runs.prefill_tokens, runs.prefill_seconds).unwrap_or(f64::NAN),
            r.throughput.prefill_tps,
        ),
    };
    if !(claimed <= here * tps_factor && claimed >= here / tps_factor) {
        return Err(fail(
            receipt::EXIT_REPRODUCE,
            format!(
                "{what} {claimed:.1} tokens/s recorded, {here:.1} measured here: outside a factor of {tps_factor}"
            ),
        ));
    }
    Ok(format!(
        "reproduced: trace digest {}…, {what} {claimed:.1} tokens/s recorded, {here:.1} here (within {tps_factor}x)",
        &digest[..12]
    ))
}
