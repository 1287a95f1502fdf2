//! What the harness's fuzz targets run, one function per target, on the fuzzer's bytes, and the
//! receipt fixture they share with the mutation campaign.
//!
//! Each returns `Err(message)` for input the harness refuses, which is fine: only a panic, an
//! abort or a hang is a finding (and, for receipts, a forgery accepted: see
//! `harness/tests/mutation_campaign.rs`). The same functions replay the seed corpora in
//! `harness/tests/fuzz_corpus.rs`, which includes this file by path.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use bitnet_harness::receipt::{self, verify_file, VerifyOptions};
use bitnet_harness::scenario::{load_scenario, MAX_STEPS};
use bitnet_harness::{golden, run};

/// Scenario bytes, as a file `harness run` loads: parsed and validated. An error names a line
/// and a column; a scenario that loads keeps the bounds the schema states, and its checks and
/// skip reason can be worked out.
pub fn scenario_parser(data: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let path = dir.path().join("fuzz.yaml");
    std::fs::write(&path, data).expect("fuzz.yaml");
    let s = match load_scenario(&path) {
        Ok(s) => s,
        Err(e) => {
            let text = e
                .to_string()
                .replace(&path.display().to_string(), "fuzz.yaml");
            // Line 0 only for a file that cannot be read as text.
            assert!(
                (e.line >= 1 && e.column >= 1) || text.contains("cannot read"),
                "no line and column: {text}"
            );
            return Err(text);
        }
    };
    check_bounds(&s.scenario).map_err(|e| format!("accepted out of bounds: {e}"))?;
    let _ = run::checks_of(&s);
    let _ = run::skip_reason(&s);
    Ok(())
}

/// The bounds a loaded scenario keeps (the schema's, which `load_scenario` enforces).
pub fn check_bounds(s: &bitnet_harness::scenario::Scenario) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if s.threads == 0 || s.threads > 256 || (s.threads > cores && !s.force_threads) {
        return Err(format!("threads {}", s.threads));
    }
    if s.generation.steps > MAX_STEPS || !s.generation.greedy {
        return Err(format!("steps {}", s.generation.steps));
    }
    if s.trace.points.is_empty() {
        return Err("no trace points".into());
    }
    if s.inputs.tokens.is_empty() && s.inputs.prompts.is_empty()
        || s.inputs.tokens.iter().any(|t| t.is_empty())
    {
        return Err("no inputs".into());
    }
    let t = &s.tolerances;
    let tolerances = std::iter::once(&t.default)
        .chain(t.points.values())
        .chain(t.replay.as_ref());
    for (i, tol) in tolerances.enumerate() {
        let non_negative = [tol.rel_l2_max, tol.max_abs, tol.nmse_max];
        if non_negative
            .iter()
            .flatten()
            .any(|v| v.is_nan() || *v < 0.0)
            || tol.cosine_min.is_some_and(|c| !(-1.0..=1.0).contains(&c))
        {
            return Err(format!("tolerance {i}: {tol:?}"));
        }
    }
    let l = &t.logits;
    if [l.kl_max, l.kl_mean_max]
        .iter()
        .flatten()
        .any(|v| v.is_nan() || *v < 0.0)
        || [l.top1_agreement_min, l.topk_overlap_min]
            .iter()
            .flatten()
            .any(|v| !(0.0..=1.0).contains(v))
        || l.k == 0
    {
        return Err(format!("logits tolerance {l:?}"));
    }
    if let Some(v) = s.receipt.min_decode_tps {
        if !(v.is_finite() && v > 0.0) {
            return Err(format!("min_decode_tps {v}"));
        }
    }
    Ok(())
}

/// A directory a receipt can be checked in: `scenarios/small.yaml`, the model file it names,
/// its golden, and optionally a git repository holding one commit.
pub struct ReceiptFixture {
    pub dir: tempfile::TempDir,
    pub model_blake3: String,
    pub scenario_blake3: String,
    pub trace_digest: String,
    /// The commit of the repository, or `unknown` without one.
    pub git_commit: String,
}

/// The fixture's scenario: every check it implies is in the receipt (engine, golden, parity,
/// replay, generation, chunking, variants, receipt), and it requires the AVX2 ternary kernel.
pub const FIXTURE_SCENARIO: &str = "description: the receipt fixture\n\
tags: [fast]\n\
model:\n  preset: tiny\n\
inputs:\n  tokens:\n    - [1, 2, 3, 4]\n\
generation:\n  steps: 3\n\
prefill_chunks: [1]\n\
threads: 1\n\
receipt:\n  kernels: [tq2_0_q8k_dot_avx2]\n  min_decode_tps: 1\n";

/// "Now" for receipts checked against the fixture: 2026-09-21T14:13:20Z.
pub const FIXTURE_NOW: i64 = 1_790_000_000;

impl ReceiptFixture {
    pub fn new(git: bool) -> ReceiptFixture {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let root = dir.path();
        for sub in ["scenarios", "models", "goldens", "receipts"] {
            std::fs::create_dir_all(root.join(sub)).expect("fixture directory");
        }
        std::fs::write(root.join("scenarios/small.yaml"), FIXTURE_SCENARIO).expect("scenario");
        std::fs::write(
            root.join("models/small.gguf"),
            b"GGUF: the model the run read\n",
        )
        .expect("model");
        // An empty file, whose hash a forger can state: the gate must not take it as a model.
        std::fs::write(root.join("models/empty.gguf"), b"").expect("empty model");
        let body = "input 0 | embeddings step 0 | shape [4, 256] | rms 1.00000e0 | blake3 00";
        std::fs::write(
            golden::snapshot_path(&root.join("goldens"), "small"),
            golden::to_snapshot("small", body),
        )
        .expect("golden");
        let hash = |p: &str| receipt::blake3_file(&root.join(p)).expect("hash");
        let git_commit = if git {
            let git = |args: &[&str]| {
                // The commit is dated before the receipts' `started_at` (2026-09-21T12:00:00Z):
                // a run cannot start before the commit it built was made.
                let out = std::process::Command::new("git")
                    .current_dir(root)
                    .env("GIT_AUTHOR_DATE", "2026-09-21T11:00:00Z")
                    .env("GIT_COMMITTER_DATE", "2026-09-21T11:00:00Z")
                    .args([
                        "-c",
                        "user.name=fixture",
                        "-c",
                        "user.email=fixture@invalid",
                    ])
                    .args(args)
                    .output()
                    .expect("git runs");
                assert!(out.status.success(), "git {args:?}: {out:?}");
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            };
            git(&["init", "-q"]);
            git(&["add", "scenarios"]);
            git(&["commit", "-q", "-m", "fixture"]);
            git(&["rev-parse", "HEAD"])
        } else {
            "unknown".into()
        };
        ReceiptFixture {
            model_blake3: hash("models/small.gguf"),
            scenario_blake3: hash("scenarios/small.yaml"),
            trace_digest: receipt::trace_digest(body),
            git_commit,
            dir,
        }
    }

    /// A receipt of the fixture that the gate accepts (with placeholders filled).
    pub fn valid_receipt(&self) -> serde_json::Value {
        serde_json::from_str(&self.fill(VALID_RECEIPT)).expect("the valid receipt is JSON")
    }

    /// Replace the placeholders `@MODEL_BLAKE3@`, `@SCENARIO_BLAKE3@`, `@TRACE_DIGEST@` and
    /// `@GIT_COMMIT@` with the fixture's values, so seeds can name them.
    pub fn fill(&self, text: &str) -> String {
        text.replace("@MODEL_BLAKE3@", &self.model_blake3)
            .replace("@SCENARIO_BLAKE3@", &self.scenario_blake3)
            .replace("@TRACE_DIGEST@", &self.trace_digest)
            .replace("@GIT_COMMIT@", &self.git_commit)
    }

    /// What `harness verify-receipt --against-goldens --max-age 30d` checks, run in the fixture.
    pub fn options(&self) -> VerifyOptions {
        VerifyOptions {
            require_gpu_kernels: false,
            min_decode_tps: None,
            max_age_seconds: Some(30 * 86400),
            goldens: Some(self.dir.path().join("goldens")),
            base: self.dir.path().to_path_buf(),
            now: FIXTURE_NOW,
        }
    }

    /// Check receipt bytes (placeholders filled when they are UTF-8): `Err((exit code, message))`,
    /// the message naming the receipt `receipt.json`.
    pub fn verify(&self, data: &[u8]) -> Result<(), (u8, String)> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path: PathBuf = self
            .dir
            .path()
            .join(format!("receipts/r{}-{n}.json", std::process::id()));
        match std::str::from_utf8(data) {
            Ok(text) => std::fs::write(&path, self.fill(text)),
            Err(_) => std::fs::write(&path, data),
        }
        .expect("receipt file");
        let result = verify_file(&path, &self.options());
        let _ = std::fs::remove_file(&path);
        result.map_err(|f| {
            let message = f
                .message
                .replace(&path.display().to_string(), "receipt.json")
                .replace(&self.dir.path().display().to_string(), "FIXTURE");
            (f.code, message)
        })
    }
}

/// The receipt the fixture's run would write (engine AVX2 kernels, every check passed).
pub const VALID_RECEIPT: &str = r#"{
  "schema_version": 1,
  "scenario": "small",
  "scenario_file": "scenarios/small.yaml",
  "scenario_blake3": "@SCENARIO_BLAKE3@",
  "model": "models/small.gguf",
  "model_blake3": "@MODEL_BLAKE3@",
  "engine": { "version": "0.1.0", "git_commit": "@GIT_COMMIT@", "git_dirty": false },
  "build": { "profile": "release", "target_arch": "x86_64", "cpu_features": ["avx2", "f16c", "fma"] },
  "backend": "cpu",
  "kernels": ["q8k_quantize_scalar", "f32_f32_dot_avx2", "tq2_0_q8k_dot_avx2"],
  "compute_path": "real",
  "threads": 1,
  "throughput": {
    "prefill_tps": 1200.5,
    "decode_tps": 450.25,
    "reference_prefill_tps": 1100.0,
    "reference_decode_tps": 400.0
  },
  "trace_digest": "@TRACE_DIGEST@",
  "verdicts": {
    "chunking": "pass",
    "engine": "pass",
    "generation": "pass",
    "golden": "pass",
    "parity": "pass",
    "receipt": "pass",
    "replay": "pass",
    "variants": "pass"
  },
  "started_at": "2026-09-21T12:00:00Z",
  "duration_seconds": 2.5
}
"#;

/// Receipt bytes, checked as the CI gate checks them in a fixture made once per process:
/// `Err("exit CODE: message")` when refused.
pub fn receipt_verifier(data: &[u8]) -> Result<(), String> {
    static FIXTURE: std::sync::OnceLock<ReceiptFixture> = std::sync::OnceLock::new();
    receipt_verifier_in(FIXTURE.get_or_init(|| ReceiptFixture::new(true)), data)
}

/// [`receipt_verifier`] in a given fixture (the tests make their own, and remove it).
pub fn receipt_verifier_in(fx: &ReceiptFixture, data: &[u8]) -> Result<(), String> {
    fx.verify(data)
        .map_err(|(code, message)| format!("exit {code}: {message}"))
}
