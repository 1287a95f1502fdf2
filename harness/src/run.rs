//! Running scenarios: resolve the model, run the engine and the reference once per scenario, and
//! turn each check into a [`Verdict`]. Used by the `scenarios` test target (one trial per check)
//! and by `harness run` (the main job).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bitnet_engine::forward::{self, Tracer};
use bitnet_engine::kernels::plan::KernelPlan;
use bitnet_engine::kernels::Kernel;
use bitnet_engine::model::Model;
use bitnet_engine::trace::{read_trace, PointFilter, TraceRecord};
use serde::Serialize;

use crate::compare::{compare_trace_dirs, CompareSpec, Comparison, Headroom};
use crate::golden::{self, GoldenOutcome};
use crate::reference::{RefBuild, RefRequest};
use crate::scenario::{Backend, LoadedScenario, NamedReference, Reference};

pub mod cuda;

/// The checks a scenario can have, in the order they are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// The engine runs; every trace record is finite and shaped as documented.
    Engine,
    /// The trace hashes equal the golden snapshot.
    Golden,
    /// Every trace point and the logits agree with the reference within tolerance.
    Parity,
    /// Greedy tokens equal the reference's.
    Generation,
    /// Each stage of the engine, fed the reference's own input to it, reproduces the reference's
    /// output of that stage ([`crate::replay`]).
    Replay,
    /// Every kernel variant this CPU runs gives the default variant's trace, bit for bit
    /// (scenarios tagged `fast`).
    Variants,
    /// Prefill in chunks gives the one-shot prefill's logits.
    Chunking,
    /// The engine's token ids of each text prompt equal llama.cpp's.
    Tokenizer,
    /// The run meets the scenario's receipt requirements (decode tokens/s, kernels).
    Receipt,
    /// The engine on the CUDA backend against the CPU engine, every point ([`cuda`]); ignored
    /// with the reason where no GPU can run it.
    Cuda,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Check::Engine => "engine",
            Check::Golden => "golden",
            Check::Parity => "parity",
            Check::Generation => "generation",
            Check::Replay => "replay",
            Check::Variants => "variants",
            Check::Chunking => "chunking",
            Check::Tokenizer => "tokenizer",
            Check::Receipt => "receipt",
            Check::Cuda => "cuda",
        }
    }
}

/// One scenario × check.
#[derive(Debug, Clone)]
pub struct Trial {
    pub scenario: Arc<LoadedScenario>,
    pub check: Check,
    /// Why it cannot run here, if it cannot.
    pub ignored: Option<String>,
}

impl Trial {
    /// `scenarios::<file stem>::<check>`.
    pub fn name(&self) -> String {
        format!("scenarios::{}::{}", self.scenario.stem, self.check.name())
    }
}

/// The checks a scenario enables.
pub fn checks_of(s: &LoadedScenario) -> Vec<Check> {
    let sc = &s.scenario;
    let mut v = vec![Check::Engine];
    if sc.golden {
        v.push(Check::Golden);
    }
    if !sc.reference.is_none() {
        v.push(Check::Parity);
        // Replay feeds each stage the reference's input to it: every point must be traced.
        let all_traced = PointFilter::new(&sc.trace.points).is_ok_and(|f| {
            bitnet_engine::trace::TracePoint::all(64)
                .iter()
                .all(|p| f.matches(&p.name()))
        });
        if all_traced {
            v.push(Check::Replay);
        }
        if sc.generation.steps > 0 {
            v.push(Check::Generation);
        }
    }
    if !sc.prefill_chunks.is_empty() {
        v.push(Check::Chunking);
    }
    if sc.tags.iter().any(|t| t == "fast") {
        v.push(Check::Variants);
    }
    if !sc.inputs.prompts.is_empty() && !sc.reference.is_none() {
        v.push(Check::Tokenizer);
    }
    if sc.receipt.min_decode_tps.is_some() || !sc.receipt.kernels.is_empty() {
        v.push(Check::Receipt);
    }
    if sc.backends.contains(&Backend::Cuda) {
        v.push(Check::Cuda);
    }
    v
}

/// Why a scenario cannot run here, if it cannot.
pub fn skip_reason(s: &LoadedScenario) -> Option<String> {
    let sc = &s.scenario;
    let dir = s.path.parent().unwrap_or(Path::new("."));
    if sc.tags.iter().any(|t| t == "slow")
        && std::env::var("BITNET_SLOW").map_or(true, |v| v.is_empty() || v == "0")
    {
        return Some("slow scenario: set BITNET_SLOW=1 to run it".into());
    }
    if let Some(p) = &sc.model.path {
        let full = dir.join(p);
        // Absent: skipped with the reason. Present but not a file (a directory, say): the engine
        // run fails saying so, rather than every check being ignored.
        if !full.exists() {
            return Some(format!("model file `{}` is absent", full.display()));
        }
    }
    if let Some(name) = &sc.model.locked {
        // Not fetched: skipped, with the command that fetches it.
        if let Some(reason) = crate::fetch::locked_skip_reason(&s.path, name) {
            return Some(reason);
        }
    }
    for f in &sc.skip_unless.files_exist {
        let full = dir.join(f);
        if !full.exists() {
            return Some(format!("required file `{}` is absent", full.display()));
        }
    }
    for v in &sc.skip_unless.env {
        if std::env::var(v).map_or(true, |x| x.is_empty()) {
            return Some(format!("environment variable `{v}` is not set"));
        }
    }
    None
}

/// All trials of the scenarios, sorted by name.
pub fn trials(scenarios: &[LoadedScenario]) -> Vec<Trial> {
    let mut out = Vec::new();
    for s in scenarios {
        let shared = Arc::new(s.clone());
        let skip = skip_reason(s);
        for check in checks_of(s) {
            let ignored = match check {
                Check::Cuda => skip
                    .clone()
                    .or_else(|| cuda::ignore_reason(&cuda::root_of(s))),
                _ => skip.clone(),
            };
            out.push(Trial {
                scenario: shared.clone(),
                check,
                ignored,
            });
        }
    }
    out.sort_by_key(|t| t.name());
    out
}

/// The outcome of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub status: Status,
    /// One paragraph: what was checked, or what failed and how to fix it.
    pub message: String,
    /// The first divergence, for failed parity checks.
    pub divergence: Option<String>,
    /// The metric with the least headroom, for parity checks.
    pub worst: Option<Headroom>,
    /// Worst metrics per layer, for parity checks (of the input that failed, or the last one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_layer: Vec<crate::compare::LayerRow>,
    pub seconds: f64,
    /// Per input, the comparison's figures for the HTML report (parity, pass or fail).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<crate::report::InputFigures>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Ignored,
}

impl Verdict {
    fn pass(message: String) -> Verdict {
        Verdict {
            status: Status::Pass,
            message,
            divergence: None,
            worst: None,
            per_layer: Vec::new(),
            seconds: 0.0,
            figures: Vec::new(),
        }
    }
    fn fail(message: String) -> Verdict {
        Verdict {
            status: Status::Fail,
            message,
            divergence: None,
            worst: None,
            per_layer: Vec::new(),
            seconds: 0.0,
            figures: Vec::new(),
        }
    }
    pub fn ignored(message: String) -> Verdict {
        Verdict {
            status: Status::Ignored,
            message,
            divergence: None,
            worst: None,
            per_layer: Vec::new(),
            seconds: 0.0,
            figures: Vec::new(),
        }
    }
}

/// A scenario's engine runs, computed once per process.
pub type RunCell = Arc<OnceLock<Result<Runs, String>>>;

/// A reference run's trace directory, computed once per process.
type RefCell = Arc<OnceLock<Result<PathBuf, String>>>;

/// Where things live and how to start the reference.
pub struct Context {
    /// The workspace root (goldens are in `<root>/goldens`).
    pub root: PathBuf,
    /// Generated models: `<root>/target/harness/models`.
    pub models: PathBuf,
    /// Run directories: one per scenario and input.
    pub runs: PathBuf,
    /// The `harness` binary (for `harness ref-trace`).
    pub harness: PathBuf,
    /// Whether a missing golden should leave a `.snap.new` (not under CI).
    pub write_pending: bool,
    pub reference_timeout: Duration,
    cache: Mutex<HashMap<String, RunCell>>,
    /// Reference runs per (scenario, input), shared by the parity and generation checks.
    ref_cache: Mutex<HashMap<(String, usize), RefCell>>,
    /// Wall time of the reference runs per scenario: charged to the reference, not to the check
    /// that first needed them ([`Context::reference_seconds`]).
    ref_seconds: Mutex<HashMap<String, f64>>,
}

/// Engine (and reference) outputs of one scenario, per input.
pub struct Runs {
    pub model: PathBuf,
    /// That model, loaded once for every check of the scenario.
    pub loaded: Arc<Model>,
    /// The kernel variant the engine ran (`BITNET_KERNEL`, or the fastest).
    pub kernel: Kernel,
    /// The per-product plan `harness bench` tuned for this CPU, model shape and thread count
    /// (`target/harness/tune.json`), used when no variant is forced; `None`: `kernel` throughout.
    pub plan: Option<KernelPlan>,
    pub inputs: Vec<InputRun>,
    /// Kernel IDs the engine executed.
    pub kernels: Vec<String>,
    pub engine_seconds: f64,
    /// Prompt tokens and wall time of the prefills, decode calls and their time (all inputs).
    pub prefill_tokens: usize,
    pub prefill_seconds: f64,
    pub decode_calls: usize,
    pub decode_seconds: f64,
}

pub struct InputRun {
    pub tokens: Vec<u32>,
    pub engine_dir: PathBuf,
    pub records: Vec<TraceRecord>,
    pub generated: Vec<u32>,
    pub logits: Vec<f32>,
}

/// Models larger than this are generated with a progress bar (on a terminal) or a line when
/// generation starts and ends (in logs).
const BIG_MODEL_BYTES: u64 = 64 << 20;

/// Write the synthetic model `spec` to `path` (atomically); a large one shows its progress on
/// standard error.
pub fn generate_with_progress(
    spec: &bitnet_engine::synth::ModelSpec,
    path: &Path,
) -> Result<(), String> {
    let total = spec.weight_bytes();
    if total < BIG_MODEL_BYTES {
        return bitnet_engine::synth::generate(spec, path, &mut |_, _| {})
            .map_err(|e| e.to_string());
    }
    let start = Instant::now();
    // Progress lines, dropped if standard error is a closed pipe (never a panic).
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "generating a {:.2} GB synthetic model into `{}` (once; later runs reuse it)",
        total as f64 / 1e9,
        path.display()
    );
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message("generating");
    let r = bitnet_engine::synth::generate(spec, path, &mut |done, all| {
        bar.set_length(all);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    r.map_err(|e| e.to_string())?;
    let _ = writeln!(
        std::io::stderr(),
        "generated `{}` in {:.0} s",
        path.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

impl Context {
    pub fn new(root: &Path, runs: PathBuf, harness: PathBuf) -> Context {
        Context {
            root: root.to_owned(),
            models: root.join("target/harness/models"),
            runs,
            harness,
            write_pending: std::env::var_os("CI").is_none(),
            reference_timeout: Duration::from_secs(600),
            cache: Mutex::new(HashMap::new()),
            ref_cache: Mutex::new(HashMap::new()),
            ref_seconds: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds this process has spent running the scenario's reference (every input so far).
    /// A check's own time leaves them out: the run prints them as the reference's row.
    pub fn reference_seconds(&self, stem: &str) -> f64 {
        self.ref_seconds
            .lock()
            .map_or(0.0, |m| m.get(stem).copied().unwrap_or(0.0))
    }

    /// The model file of a scenario: generated (once, atomically) for presets and specs; for a
    /// locked model, the fetched file, verified against the lock once per process.
    pub fn model_path(&self, s: &LoadedScenario) -> Result<PathBuf, String> {
        let m = &s.scenario.model;
        if let Some(name) = &m.locked {
            return crate::fetch::locked_model_path(&s.path, name);
        }
        if let Some(p) = &m.path {
            let full = s.path.parent().unwrap_or(Path::new(".")).join(p);
            if !full.is_file() {
                return Err(format!(
                    "`model.path` `{}` is not a file (expected a GGUF file)",
                    full.display()
                ));
            }
            verify_hashes(&full, m.sha256.as_deref(), m.blake3.as_deref())?;
            return Ok(full);
        }
        let spec = match (&m.preset, &m.spec) {
            (Some(p), _) => {
                bitnet_engine::synth::preset(p).ok_or(format!("unknown preset `{p}`"))?
            }
            (None, Some(spec)) => spec.clone(),
            (None, None) => return Err("the scenario names no model".into()),
        };
        let key = blake3::hash(
            serde_json::to_string(&spec)
                .expect("spec serializes")
                .as_bytes(),
        )
        .to_hex();
        let path = self.models.join(format!("{}.gguf", &key[..16]));
        if !path.exists() {
            std::fs::create_dir_all(&self.models)
                .map_err(|e| format!("cannot create `{}`: {e}", self.models.display()))?;
            generate_with_progress(&spec, &path)?;
        }
        Ok(path)
    }

    /// Run the engine for every input of the scenario, once per process.
    pub fn runs(&self, s: &LoadedScenario) -> Result<RunCell, String> {
        let cell = self
            .cache
            .lock()
            .map_err(|_| "run cache poisoned")?
            .entry(s.stem.clone())
            .or_default()
            .clone();
        cell.get_or_init(|| self.run_engine(s));
        Ok(cell)
    }

    fn run_engine(&self, s: &LoadedScenario) -> Result<Runs, String> {
        let sc = &s.scenario;
        let model_path = self.model_path(s)?;
        let model = Model::load(&model_path).map_err(|e| e.to_string())?;
        // The gate mapper (`harness inspect --check-arch`): a tensor the engine would not read
        // (an untied output, a fused projection) fails the run instead of being ignored.
        let findings = bitnet_engine::arch::check(&model.file);
        if !findings.is_empty() {
            return Err(format!(
                "`{}` does not map to its architecture (`harness inspect --check-arch`): {}",
                model_path.display(),
                findings
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        let mut all_inputs = sc.inputs.tokens.clone();
        for p in &sc.inputs.prompts {
            let t = model.tokenizer.as_ref().ok_or_else(|| {
                format!("text prompts need a vocabulary; `{}` has none (`tokenizer.ggml.model = none`): give `inputs.tokens`", model_path.display())
            })?;
            let ids = t.encode(p, true);
            if ids.is_empty() {
                return Err(format!("the prompt {p:?} gives no tokens"));
            }
            all_inputs.push(ids);
        }
        let filter = PointFilter::new(&sc.trace.points)?;
        let unmatched = filter.unmatched(model.config.n_layer as u32);
        if !unmatched.is_empty() {
            return Err(format!(
                "trace points {unmatched:?} match no point of this {}-layer model",
                model.config.n_layer
            ));
        }
        let kernel = Kernel::from_env()?;
        let forced = std::env::var_os("BITNET_KERNEL").is_some_and(|v| !v.is_empty());
        let tune_cache = self.root.join("target/harness/tune.json");
        let plan = (!forced && tune_cache.is_file())
            .then(|| {
                // The session `harness bench` keys its plans by (see `bench::run`).
                let probe = forward::Session::new(&model, sc.threads, Kernel::best());
                crate::tune::cached_plan(&probe, &tune_cache)
            })
            .flatten();
        let mut inputs = Vec::new();
        let mut kernels = Vec::new();
        let (mut prefill_tokens, mut prefill_seconds, mut decode_calls, mut decode_seconds) =
            (0, 0.0, 0, 0.0);
        let start = Instant::now();
        for (i, tokens) in all_inputs.iter().enumerate() {
            let dir = self.runs.join(&s.stem).join(i.to_string()).join("engine");
            let out = engine_trace(
                &model,
                tokens,
                sc,
                None,
                kernel,
                plan.as_ref(),
                &filter,
                &dir,
            )?;
            let records = read_trace(&dir.join("trace.jsonl"))?;
            kernels.extend(out.kernels);
            prefill_tokens += tokens.len();
            prefill_seconds += out.prefill_seconds;
            decode_calls += out.decode_calls;
            decode_seconds += out.decode_seconds;
            inputs.push(InputRun {
                tokens: tokens.clone(),
                engine_dir: dir,
                records,
                generated: out.generated,
                logits: out.logits,
            });
        }
        kernels.sort();
        kernels.dedup();
        Ok(Runs {
            loaded: Arc::new(model),
            kernel,
            plan,
            model: model_path,
            inputs,
            kernels,
            engine_seconds: start.elapsed().as_secs_f64(),
            prefill_tokens,
            prefill_seconds,
            decode_calls,
            decode_seconds,
        })
    }

    /// The reference's timing summed over the inputs it ran for: (prefill tokens, prefill s,
    /// decode calls, decode s); `None` when it did not run.
    pub fn reference_timing(&self, s: &LoadedScenario) -> Option<(usize, f64, usize, f64)> {
        let cache = self.ref_cache.lock().ok()?;
        let mut total = (0usize, 0f64, 0usize, 0f64);
        let mut any = false;
        for ((stem, _), cell) in cache.iter() {
            if stem != &s.stem {
                continue;
            }
            let Some(Ok(dir)) = cell.get() else {
                return None;
            };
            let text = std::fs::read_to_string(dir.join("timing.json")).ok()?;
            let t: serde_json::Value = serde_json::from_str(&text).ok()?;
            total.0 += t["prefill_tokens"].as_u64()? as usize;
            total.1 += t["prefill_seconds"].as_f64()?;
            total.2 += t["decode_calls"].as_u64()? as usize;
            total.3 += t["decode_seconds"].as_f64()?;
            any = true;
        }
        any.then_some(total)
    }

    /// The reference's trace directory for input `i`, run once per process.
    fn reference(&self, s: &LoadedScenario, runs: &Runs, i: usize) -> Result<PathBuf, String> {
        let cell = self
            .ref_cache
            .lock()
            .map_err(|_| "reference cache poisoned")?
            .entry((s.stem.clone(), i))
            .or_default()
            .clone();
        cell.get_or_init(|| {
            let start = Instant::now();
            let r = self.run_reference(s, runs, i);
            if let Ok(mut m) = self.ref_seconds.lock() {
                *m.entry(s.stem.clone()).or_default() += start.elapsed().as_secs_f64();
            }
            r
        })
        .clone()
    }

    fn run_reference(&self, s: &LoadedScenario, runs: &Runs, i: usize) -> Result<PathBuf, String> {
        let sc = &s.scenario;
        let dir = self
            .runs
            .join(&s.stem)
            .join(i.to_string())
            .join("reference");
        let _ = std::fs::remove_dir_all(&dir);
        let req = RefRequest {
            model: runs.model.clone(),
            tokens: runs.inputs[i].tokens.clone(),
            generate: sc.generation.steps,
            points: PointFilter::new(&sc.trace.points)?,
            threads: sc.threads,
            out: dir.clone(),
            ubatch: None,
            nudge_embeddings: false,
        };
        self.run_scenario_reference(s, &req)
            .map_err(|e| e.to_string())?;
        Ok(dir)
    }

    /// Run the scenario's reference (llama.cpp through `harness ref-trace`, or its command) on
    /// `req`.
    fn run_scenario_reference(
        &self,
        s: &LoadedScenario,
        req: &RefRequest,
    ) -> Result<(), crate::reference::RefError> {
        crate::reference::run_scenario_reference(
            &s.scenario.reference,
            s.path.parent().unwrap_or(Path::new(".")),
            &self.harness,
            req,
            self.reference_timeout,
        )
    }

    /// Run one check. A panic inside it (the engine's included, on any of its threads) fails
    /// this check alone, with the panic's message and location; the run goes on.
    pub fn run_check(&self, s: &LoadedScenario, check: Check) -> Verdict {
        let start = Instant::now();
        let ref_before = self.reference_seconds(&s.stem);
        install_panic_capture();
        let mut v = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.check_inner(s, check)
        })) {
            Ok(v) => v,
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic without a message".into());
                let first = FIRST_PANIC
                    .lock()
                    .ok()
                    .and_then(|mut p| p.take())
                    .map(|p| format!(" (first panic: {p})"))
                    .unwrap_or_default();
                Verdict::fail(format!("the {} check panicked: {msg}{first}", check.name()))
            }
        };
        // The reference runs this check started are the reference's time, not the check's.
        let ref_spent = self.reference_seconds(&s.stem) - ref_before;
        v.seconds = (start.elapsed().as_secs_f64() - ref_spent).max(0.0);
        v
    }

    fn check_inner(&self, s: &LoadedScenario, check: Check) -> Verdict {
        if let Some(reason) = skip_reason(s) {
            return Verdict::ignored(reason);
        }
        if check == Check::Cuda {
            if let Some(reason) = cuda::ignore_reason(&self.root) {
                return Verdict::ignored(reason);
            }
        }
        let cell = match self.runs(s) {
            Ok(c) => c,
            Err(e) => return Verdict::fail(e),
        };
        let runs = match cell.get().expect("initialised by runs()") {
            Ok(r) => r,
            Err(e) => return Verdict::fail(format!("the engine did not run: {e}")),
        };
        match check {
            Check::Engine => check_engine(s, runs),
            Check::Golden => self.check_golden(s, runs),
            Check::Parity | Check::Generation => self.check_parity(s, runs, check),
            Check::Replay => self.check_replay(s, runs),
            Check::Variants => self.check_variants(s, runs),
            Check::Chunking => self.check_chunking(s, runs),
            Check::Tokenizer => self.check_tokenizer(s, runs),
            Check::Receipt => check_receipt_requirements(s, runs),
            Check::Cuda => cuda::check_cuda(self, s, runs),
        }
    }

    fn check_tokenizer(&self, s: &LoadedScenario, runs: &Runs) -> Verdict {
        let n_tok = s.scenario.inputs.tokens.len();
        let mut notes = Vec::new();
        for (k, prompt) in s.scenario.inputs.prompts.iter().enumerate() {
            let engine = &runs.inputs[n_tok + k].tokens;
            let out = std::process::Command::new(&self.harness)
                .arg("ref-tokenize")
                .arg(&runs.model)
                .args(["--prompt", prompt])
                .output();
            let out = match out {
                Ok(o) if o.status.success() => o,
                Ok(o) => {
                    return Verdict::fail(format!(
                        "llama.cpp could not tokenize prompt {k}: {}",
                        String::from_utf8_lossy(&o.stderr)
                    ))
                }
                Err(e) => return Verdict::fail(format!("cannot run `harness ref-tokenize`: {e}")),
            };
            let reference: Vec<u32> = match serde_json::from_slice(&out.stdout) {
                Ok(v) => v,
                Err(e) => {
                    return Verdict::fail(format!("`harness ref-tokenize` printed no id list: {e}"))
                }
            };
            if &reference != engine {
                let at = engine
                    .iter()
                    .zip(&reference)
                    .position(|(a, b)| a != b)
                    .unwrap_or(engine.len().min(reference.len()));
                return Verdict::fail(format!(
                    "prompt {k} {prompt:?}: token ids differ at index {at}: engine {engine:?}, llama.cpp {reference:?}"
                ));
            }
            notes.push(format!("prompt {k}: {} ids equal", engine.len()));
        }
        Verdict::pass(notes.join("; "))
    }

    fn check_golden(&self, s: &LoadedScenario, runs: &Runs) -> Verdict {
        let body = golden_body(runs);
        let goldens = self.root.join("goldens");
        match golden::compare_golden(&goldens, &s.stem, &body) {
            Ok(GoldenOutcome::Match) => Verdict::pass(format!(
                "{} trace lines match `goldens/{}.snap`",
                body.lines().count(),
                s.stem
            )),
            Ok(GoldenOutcome::Missing) => {
                let pending = if self.write_pending {
                    golden::write_pending(&goldens, &s.stem, &body)
                        .ok()
                        .map(|p| format!(" (candidate written to `{}`)", p.display()))
                } else {
                    None
                };
                Verdict::fail(format!(
                    "missing golden `goldens/{}.snap`{}: review the trace and accept it with `harness bless {}` or `harness review`",
                    s.stem,
                    pending.unwrap_or_default(),
                    s.stem
                ))
            }
            Ok(GoldenOutcome::Changed { first_point, diff }) => {
                if self.write_pending {
                    let _ = golden::write_pending(&goldens, &s.stem, &body);
                }
                let shown: Vec<String> = diff.iter().take(12).cloned().collect();
                let mut v = Verdict::fail(format!(
                    "golden `goldens/{}.snap` differs, first at `{first_point}` ({} lines changed):\n{}\nif the change is intended, accept it with `harness bless {}` or `harness review`",
                    s.stem,
                    diff.len(),
                    shown.join("\n"),
                    s.stem
                ));
                v.divergence = Some(first_point);
                v
            }
            Err(e) => Verdict::fail(format!("cannot read `goldens/{}.snap`: {e}", s.stem)),
        }
    }

    /// Whether exactness applies against the reference that wrote `ref_dir`: `Err` names why not.
    fn exactness(s: &LoadedScenario, ref_dir: &Path) -> Result<(bool, Option<String>), String> {
        let default_exact = s.scenario.exact.unwrap_or(matches!(
            s.scenario.reference,
            Reference::Named(NamedReference::LlamaCpp)
        ));
        let build_reason = match RefBuild::read(ref_dir)? {
            Some(b) => b.inexact_reason(),
            None => Some("the reference wrote no `build.json` saying how it was built".into()),
        };
        Ok((default_exact, build_reason))
    }

    /// Prefill in chunks, engine against the reference run with the same chunks (llama.cpp's
    /// `n_ubatch`), every point of the prefill and the decode steps after it, exactly where parity
    /// is exact; without a reference, [`check_chunking_engine_only`].
    fn check_chunking(&self, s: &LoadedScenario, runs: &Runs) -> Verdict {
        let sc = &s.scenario;
        if sc.reference.is_none() {
            return check_chunking_engine_only(s, runs);
        }
        let (model, kernel) = (&*runs.loaded, runs.kernel);
        let filter = match PointFilter::new(&sc.trace.points) {
            Ok(f) => f,
            Err(e) => return Verdict::fail(e),
        };
        let tol = &sc.tolerances;
        let mut notes = Vec::new();
        for (i, input) in runs.inputs.iter().enumerate() {
            for &chunk in &sc.prefill_chunks {
                let size = if chunk == 0 {
                    input.tokens.len()
                } else {
                    chunk
                };
                if size >= input.tokens.len() {
                    notes.push(format!("input {i}: chunks of {size}: one prefill (parity)"));
                    continue;
                }
                let dir = self
                    .runs
                    .join(&s.stem)
                    .join(i.to_string())
                    .join(format!("chunks{size}"));
                let (eng, refd) = (dir.join("engine"), dir.join("reference"));
                if let Err(e) = engine_trace(
                    model,
                    &input.tokens,
                    sc,
                    Some(size),
                    kernel,
                    runs.plan.as_ref(),
                    &filter,
                    &eng,
                ) {
                    return Verdict::fail(format!("input {i}: chunks of {size}: {e}"));
                }
                let _ = std::fs::remove_dir_all(&refd);
                let req = RefRequest {
                    model: runs.model.clone(),
                    tokens: input.tokens.clone(),
                    generate: sc.generation.steps,
                    points: filter.clone(),
                    // One thread: llama.cpp's values do not depend on it, so this also holds the
                    // engine's threads against one, and many small ubatches do not pay ggml's
                    // spinning barriers on a busy machine.
                    threads: 1,
                    out: refd.clone(),
                    ubatch: Some(size),
                    nudge_embeddings: false,
                };
                if let Err(e) = self.run_scenario_reference(s, &req) {
                    return Verdict::fail(format!(
                        "input {i}: the reference with chunks of {size}: {e}"
                    ));
                }
                let (default_exact, build_reason) = match Self::exactness(s, &refd) {
                    Ok(x) => x,
                    Err(e) => return Verdict::fail(format!("input {i}: {e}")),
                };
                let tolerance = exact_tolerance(tol, default_exact, build_reason.is_none());
                let spec = CompareSpec {
                    tolerance: &tolerance,
                    logits: tol.logits,
                    generated_equal: true,
                };
                let c = match compare_trace_dirs(&eng, &refd, &spec) {
                    Ok(c) => c,
                    Err(e) => return Verdict::fail(format!("input {i}: chunks of {size}: {e}")),
                };
                if !c.passed() {
                    let mut v = Verdict::fail(format!(
                        "input {i}: prefill in chunks of {size} against the reference's: {}",
                        c.failure_summary()
                    ));
                    v.divergence = c.first_divergence.as_ref().map(|d| d.to_string());
                    v.per_layer = c.per_layer.clone();
                    v.figures = vec![crate::report::InputFigures::build(
                        format!("input {i}, chunks of {size}"),
                        i,
                        &c,
                        &spec,
                        &eng,
                        &refd,
                    )];
                    return v;
                }
                let exact = c.points.iter().filter(|p| p.exact).count();
                notes.push(format!(
                    "input {i}: chunks of {size}: {} points × positions, {exact} bit-exact",
                    c.points.len()
                ));
            }
        }
        Verdict::pass(notes.join("; "))
    }

    /// The engine on every kernel variant this CPU runs (scalar, AVX2, AVX-512, NEON), each
    /// against the default variant's trace: every record's hash and the greedy tokens equal.
    fn check_variants(&self, s: &LoadedScenario, runs: &Runs) -> Verdict {
        let sc = &s.scenario;
        let model = &*runs.loaded;
        let filter = match PointFilter::new(&sc.trace.points) {
            Ok(f) => f,
            Err(e) => return Verdict::fail(e),
        };
        let variants = Kernel::available();
        for &k in &variants {
            for (i, input) in runs.inputs.iter().enumerate() {
                let dir = self
                    .runs
                    .join(&s.stem)
                    .join(i.to_string())
                    .join(format!("variant-{k:?}").to_lowercase());
                let out = match engine_trace(model, &input.tokens, sc, None, k, None, &filter, &dir)
                {
                    Ok(o) => o,
                    Err(e) => return Verdict::fail(format!("input {i}: {k:?}: {e}")),
                };
                let records = match read_trace(&dir.join("trace.jsonl")) {
                    Ok(r) => r,
                    Err(e) => return Verdict::fail(format!("input {i}: {k:?}: {e}")),
                };
                let _ = std::fs::remove_dir_all(&dir);
                let diff =
                    input.records.iter().zip(&records).find(|(a, b)| {
                        (&a.name, a.step, &a.blake3) != (&b.name, b.step, &b.blake3)
                    });
                if let Some((a, b)) = diff {
                    let mut v = Verdict::fail(format!(
                        "input {i}: kernel variant {k:?} differs from the default run at `{}` step {} (blake3 {} vs {})",
                        b.name, b.step, b.blake3, a.blake3
                    ));
                    v.divergence = Some(format!("{k:?} at `{}` step {}", b.name, b.step));
                    return v;
                }
                if records.len() != input.records.len() || out.generated != input.generated {
                    return Verdict::fail(format!(
                        "input {i}: kernel variant {k:?} gives {} records and tokens {:?}; the default run {} and {:?}",
                        records.len(),
                        out.generated,
                        input.records.len(),
                        input.generated
                    ));
                }
            }
        }
        Verdict::pass(format!(
            "{} variants give the same trace bit for bit: {}",
            variants.len(),
            variants
                .iter()
                .map(|k| format!("{k:?}").to_lowercase())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    fn check_replay(&self, s: &LoadedScenario, runs: &Runs) -> Verdict {
        let tol = &s.scenario.tolerances;
        let (model, kernel) = (&*runs.loaded, runs.kernel);
        let mut notes = Vec::new();
        for (i, input) in runs.inputs.iter().enumerate() {
            // The reference's run, and whether its build allows exactness at all.
            let (ref_dir, default_exact, build_reason) =
                match self.reference(s, runs, i).and_then(|d| {
                    let (x, why) = Self::exactness(s, &d)?;
                    Ok((d, x, why))
                }) {
                    Ok(r) => r,
                    Err(e) => return Verdict::fail(format!("input {i}: {e}")),
                };
            // Stages are held exactly wherever the end-to-end comparison is; otherwise to the
            // points' tolerances.
            let points = exact_tolerance(tol, default_exact, build_reason.is_none());
            let tolerance = |name: &str| match &tol.replay {
                Some(r) => crate::compare::Tolerance {
                    exact: Some(r.exact.unwrap_or(false) && build_reason.is_none()),
                    ..*r
                },
                None => points(name),
            };
            let r = match crate::replay::replay(
                model,
                &input.tokens,
                &ref_dir,
                s.scenario.threads,
                kernel,
                &tolerance,
            ) {
                Ok(r) => r,
                Err(e) => return Verdict::fail(format!("input {i}: {e}")),
            };
            if let Some(f) = r.first_failure() {
                let failed = r.stages.iter().filter(|s| !s.violations.is_empty()).count();
                let mut v = Verdict::fail(format!(
                    "input {i}: {failed} of {} replayed stages differ; the first: {f}",
                    r.stages.len()
                ));
                v.divergence = Some(format!("replay: {f}"));
                return v;
            }
            if r.stages.is_empty() {
                return Verdict::fail(format!(
                    "input {i}: nothing to replay: {} (replay feeds each stage the reference's input, so the inputs must be traced too; `trace.points: [\"*\"]` traces them all)",
                    r.skipped.join("; ")
                ));
            }
            let boundary: usize = r
                .stages
                .iter()
                .filter_map(|s| s.q8k.as_ref())
                .map(|q| q.boundary)
                .sum();
            let exact = r.stages.iter().filter(|s| s.exact).count();
            notes.push(format!(
                "input {i}: {} stages replayed, {exact} of them bit-exact, {boundary} int8 boundary flips ({}){}",
                r.stages.len(),
                {
                    let mut f: Vec<&str> = r
                        .stages
                        .iter()
                        .filter_map(|s| s.q8k.as_ref().map(|q| q.format))
                        .collect();
                    f.sort_unstable();
                    f.dedup();
                    if f.is_empty() { "no int8 products".to_string() } else { f.join(", ") + " activations checked" }
                },
                if r.skipped.is_empty() {
                    String::new()
                } else {
                    format!("; not replayed: {}", r.skipped.join("; "))
                }
            ));
        }
        Verdict::pass(notes.join("; "))
    }

    fn check_parity(&self, s: &LoadedScenario, runs: &Runs, check: Check) -> Verdict {
        let tol = &s.scenario.tolerances;
        let mut worst: Option<Headroom> = None;
        let mut per_layer = Vec::new();
        let mut notes = Vec::new();
        let mut figures = Vec::new();
        for i in 0..runs.inputs.len() {
            // The reference's run, and whether its build allows exactness at all.
            let (ref_dir, default_exact, build_reason) =
                match self.reference(s, runs, i).and_then(|d| {
                    let (x, why) = Self::exactness(s, &d)?;
                    Ok((d, x, why))
                }) {
                    Ok(r) => r,
                    Err(e) => return Verdict::fail(format!("input {i}: {e}")),
                };
            let tolerance = exact_tolerance(tol, default_exact, build_reason.is_none());
            let spec = CompareSpec {
                tolerance: &tolerance,
                logits: tol.logits,
                generated_equal: true,
            };
            let c: Comparison =
                match compare_trace_dirs(&runs.inputs[i].engine_dir, &ref_dir, &spec) {
                    Ok(c) => c,
                    Err(e) => return Verdict::fail(format!("input {i}: {e}")),
                };
            let exact_points = c.points.iter().filter(|p| p.exact).count();
            let why_not: Vec<String> = build_reason
                .iter()
                .filter(|_| default_exact)
                .map(|r| format!("not exact: {r}; the tolerances apply"))
                .collect();
            if check == Check::Generation {
                if let Some(at) = c.generated_mismatch {
                    return Verdict::fail(format!(
                        "input {i}: generated tokens differ at index {at}: engine {:?}, reference {:?}",
                        c.engine_generated, c.reference_generated
                    ));
                }
                // The path `harness bench` and real use run: no tracer, last-position logits only.
                let fast = forward::generate_last_only(
                    &runs.loaded,
                    &runs.inputs[i].tokens,
                    s.scenario.generation.steps,
                    s.scenario.threads,
                    runs.kernel,
                );
                match fast {
                    Ok((tokens, _)) if tokens == c.engine_generated => {}
                    Ok((tokens, _)) => {
                        return Verdict::fail(format!(
                            "input {i}: generation without tracing, with last-position logits only, gives {tokens:?}; the traced run (equal to the reference's) gave {:?}",
                            c.engine_generated
                        ))
                    }
                    Err(e) => return Verdict::fail(format!("input {i}: untraced generation: {e}")),
                }
                notes.push(format!(
                    "input {i}: {} tokens equal (traced, untraced last-logits-only, reference)",
                    c.engine_generated.len()
                ));
                continue;
            }
            figures.push(crate::report::InputFigures::build(
                format!("input {i}"),
                i,
                &c,
                &spec,
                &runs.inputs[i].engine_dir,
                &ref_dir,
            ));
            if c.first_divergence.is_some()
                || !c.logit_violations.is_empty()
                || !c.unmatched.is_empty()
            {
                let mut v = Verdict::fail(format!("input {i}: {}", c.failure_summary()));
                v.divergence = c.first_divergence.as_ref().map(|d| d.to_string());
                v.worst = c.worst_headroom().cloned();
                v.per_layer = c.per_layer.clone();
                v.figures = figures;
                return v;
            }
            // Bounds only matter where a point was not held to exactness.
            if exact_points < c.points.len() {
                if let Some(h) = c.worst_headroom() {
                    if worst.as_ref().is_none_or(|w| h.factor < w.factor) {
                        worst = Some(h.clone());
                    }
                }
            }
            notes.push(format!(
                "input {i}: {} points × positions compared, {exact_points} of them bit-exact{}",
                c.points.len(),
                if why_not.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", why_not.join("; "))
                }
            ));
            per_layer = c.per_layer.clone();
        }
        let mut v = Verdict::pass(notes.join("; "));
        v.worst = worst;
        v.per_layer = per_layer;
        v.figures = figures;
        v
    }
}

fn verify_hashes(path: &Path, sha256: Option<&str>, b3: Option<&str>) -> Result<(), String> {
    if sha256.is_none() && b3.is_none() {
        return Ok(());
    }
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    if let Some(want) = sha256 {
        use sha2::Digest;
        let got: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if !got.eq_ignore_ascii_case(want) {
            return Err(format!(
                "`{}` has sha256 {got}, the scenario expects {want}",
                path.display()
            ));
        }
    }
    if let Some(want) = b3 {
        let got = blake3::hash(&bytes).to_hex().to_string();
        if !got.eq_ignore_ascii_case(want) {
            return Err(format!(
                "`{}` has blake3 {got}, the scenario expects {want}",
                path.display()
            ));
        }
    }
    Ok(())
}

/// The tolerance of each point: the scenario's, held to exactness where the scenario asks for it
/// (`exact`, by default against llama.cpp) and the reference's build allows it.
fn exact_tolerance(
    tol: &crate::scenario::Tolerances,
    default_exact: bool,
    build_allows: bool,
) -> impl Fn(&str) -> crate::compare::Tolerance + '_ {
    move |name| {
        let mut t = tol.for_point(name);
        t.exact = Some(t.exact.unwrap_or(default_exact) && build_allows);
        t
    }
}

/// The first panic's message and location since it was last taken (any thread: the engine's
/// kernel threads re-panic on the caller without the original location).
static FIRST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Record each panic's message and location in [`FIRST_PANIC`], then report it as before.
fn install_panic_capture() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let at = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            if let Ok(mut p) = FIRST_PANIC.lock() {
                p.get_or_insert(format!("{msg} at {at}"));
            }
            prev(info);
        }));
    });
}

/// Run the engine on `tokens` (prefill in chunks of `chunk`, then the scenario's generation)
/// with a tracer into `dir` (cleared first), and write its `logits.npy` and `generated.json`.
#[allow(clippy::too_many_arguments)]
fn engine_trace(
    model: &Model,
    tokens: &[u32],
    sc: &crate::scenario::Scenario,
    chunk: Option<usize>,
    kernel: Kernel,
    plan: Option<&KernelPlan>,
    filter: &PointFilter,
    dir: &Path,
) -> Result<forward::RunOutput, String> {
    let _ = std::fs::remove_dir_all(dir);
    let mut tracer =
        Tracer::new(filter.clone(), dir, true).map_err(|e| format!("`{}`: {e}", dir.display()))?;
    let opts = forward::RunOptions {
        generate: sc.generation.steps,
        chunk,
        threads: sc.threads,
        kernel,
        nudge_embeddings: false,
        unpack_tq1: None,
        plan: plan.cloned(),
    };
    let out = forward::run_with(model, tokens, &opts, Some(&mut tracer))?;
    tracer.finish().map_err(|e| e.to_string())?;
    bitnet_engine::npy::write_npy(
        &dir.join("logits.npy"),
        &[tokens.len(), model.config.n_vocab],
        &out.logits,
    )
    .map_err(|e| e.to_string())?;
    bitnet_engine::npy::write_atomic(
        &dir.join("generated.json"),
        &serde_json::to_vec(&out.generated).expect("ids"),
    )
    .map_err(|e| e.to_string())?;
    Ok(out)
}

/// The golden body of a scenario's engine runs.
pub fn golden_body(runs: &Runs) -> String {
    let mut lines = Vec::new();
    for (i, input) in runs.inputs.iter().enumerate() {
        for r in &input.records {
            lines.push(golden::golden_line(i, r));
        }
        lines.push(format!("input {i} | generated {:?}", input.generated));
    }
    lines.join("\n")
}

fn check_engine(s: &LoadedScenario, runs: &Runs) -> Verdict {
    let mut n = 0;
    for (i, input) in runs.inputs.iter().enumerate() {
        for r in &input.records {
            n += 1;
            if r.nan > 0 || r.inf > 0 {
                return Verdict::fail(format!(
                    "input {i}: `{}` step {} has {} NaN and {} Inf values",
                    r.name, r.step, r.nan, r.inf
                ));
            }
            let n_pos = (r.positions[1] - r.positions[0]) as usize;
            if r.shape.first() != Some(&n_pos) || r.shape.iter().product::<usize>() != r.count {
                return Verdict::fail(format!(
                    "input {i}: `{}` step {} has shape {:?} for positions {:?}",
                    r.name, r.step, r.shape, r.positions
                ));
            }
        }
        let want = s.scenario.generation.steps;
        if input.generated.len() != want {
            return Verdict::fail(format!(
                "input {i}: generated {} tokens, expected {want}",
                input.generated.len()
            ));
        }
    }
    Verdict::pass(format!(
        "{} inputs, {n} trace records, finite and well shaped; kernels: {}",
        runs.inputs.len(),
        runs.kernels.join(", ")
    ))
}

fn check_receipt_requirements(s: &LoadedScenario, runs: &Runs) -> Verdict {
    let req = &s.scenario.receipt;
    let mut notes = Vec::new();
    if let Some(floor) = req.min_decode_tps {
        if runs.decode_calls == 0 || runs.decode_seconds <= 0.0 {
            return Verdict::fail(format!("`receipt.min_decode_tps` is {floor} but the scenario makes no decode call (set `generation.steps` ≥ 2)"));
        }
        let tps = runs.decode_calls as f64 / runs.decode_seconds;
        if tps < floor {
            return Verdict::fail(format!(
                "engine decode {tps:.1} tokens/s is below `receipt.min_decode_tps` {floor}"
            ));
        }
        notes.push(format!("decode {tps:.1} tokens/s ≥ {floor}"));
    }
    for k in &req.kernels {
        // A glob (`tq2_0_q8k_dot_*`) asks for the product whatever variant the CPU picked.
        let matcher = match globset::Glob::new(k) {
            Ok(g) => g.compile_matcher(),
            Err(e) => return Verdict::fail(format!("`receipt.kernels` entry `{k}`: {e}")),
        };
        if !runs.kernels.iter().any(|ran| matcher.is_match(ran)) {
            return Verdict::fail(format!(
                "kernel `{k}` required by `receipt.kernels` did not run; ran: {}",
                runs.kernels.join(", ")
            ));
        }
    }
    if !req.kernels.is_empty() {
        notes.push(format!("kernels {} ran", req.kernels.join(", ")));
    }
    Verdict::pass(notes.join("; "))
}

/// Without a reference: each chunked prefill's logits against the one-shot prefill's, within the
/// logits tolerance (chunks of one token sum some products in another order, as llama.cpp does).
fn check_chunking_engine_only(s: &LoadedScenario, runs: &Runs) -> Verdict {
    let (model, kernel) = (&*runs.loaded, runs.kernel);
    let tol = s.scenario.tolerances.for_point("logits");
    let mut notes = Vec::new();
    for (i, input) in runs.inputs.iter().enumerate() {
        for &chunk in &s.scenario.prefill_chunks {
            let size = if chunk == 0 {
                input.tokens.len()
            } else {
                chunk
            };
            let out = match forward::run(
                model,
                &input.tokens,
                0,
                Some(size),
                s.scenario.threads,
                kernel,
                None,
            ) {
                Ok(o) => o,
                Err(e) => return Verdict::fail(e),
            };
            let m = crate::compare::tensor_metrics(&input.logits, &out.logits);
            let violations = tol.violations(&m);
            if !violations.is_empty() {
                return Verdict::fail(format!(
                    "input {i}: prefill in chunks of {size} differs from one prefill: {}",
                    violations.join(", ")
                ));
            }
            let exact = input.logits == out.logits;
            notes.push(format!(
                "chunks of {size}: {}",
                if exact {
                    "bit-identical".to_string()
                } else {
                    format!("rel L2 {:.2e}", m.rel_l2)
                }
            ));
        }
    }
    Verdict::pass(notes.join("; "))
}

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
/// scenario decodes, else prefill). The receipt must have passed [`receipt::verify_file`] first.
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
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(receipt::EXIT_MALFORMED, format!("cannot read: {e}")))?;
    let r: Receipt = serde_json::from_str(&text)
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
