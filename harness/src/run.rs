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

mod checks;
use checks::{check_engine, check_receipt_requirements};
pub mod cuda;
mod receipts;
pub use receipts::reproduce_receipt;

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
        for (k, p) in sc.inputs.prompts.iter().enumerate() {
            let t = model
                .text_tokenizer(&model_path.display().to_string())
                .map_err(|e| {
                    format!(
                        "text prompts need a vocabulary: {}",
                        e.replace("give token ids", "give `inputs.tokens`")
                    )
                })?;
            let ids = t.encode(p, true);
            if ids.is_empty() {
                return Err(format!("the prompt {p:?} gives no tokens"));
            }
            // The loader holds `inputs.tokens` to the context; a prompt's length is known only
            // once it is tokenized, here, before anything is sized by it.
            let (steps, n_ctx) = (sc.generation.steps, model.config.n_ctx_train);
            if ids.len() + steps > n_ctx {
                return Err(format!(
                    "`inputs.prompts[{k}]` is {} tokens and `generation.steps` is {steps}: {} positions, more than the model's context (`context_length` {n_ctx})",
                    ids.len(),
                    ids.len() + steps
                ));
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
        // `BITNET_KERNEL` forces a variant (with knobs: a plan giving them to every kind, which
        // the receipt records); else the plan `harness bench` tuned here, if any.
        let forced = KernelPlan::from_env()?;
        let kernel = forced.as_ref().map_or(Kernel::best(), |(p, _)| p.base);
        let tune_cache = self.root.join("target/harness/tune.json");
        let plan = match &forced {
            Some((p, _)) => (!p.products.is_empty()).then(|| p.clone()),
            None => crate::tune::cached_plan(&model, sc.threads, &tune_cache),
        };
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
                None,
                None,
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
            let text = bitnet_engine::files::read_text_limited(
                &dir.join("timing.json"),
                bitnet_engine::files::MAX_JSON_BYTES,
                "timing",
            )
            .ok()?;
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
            kv_cache: sc.kv_cache,
        };
        self.run_scenario_reference(s, &req)
            .map_err(|e| e.to_string())?;
        check_timing(&dir, req.tokens.len(), sc.generation.steps)?;
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
}

fn verify_hashes(path: &Path, sha256: Option<&str>, b3: Option<&str>) -> Result<(), String> {
    if sha256.is_none() && b3.is_none() {
        return Ok(());
    }
    // One streaming pass: a model file can be larger than the memory a whole read would take.
    let d = crate::fetch::digest_file(path, sha256.is_some(), b3.is_some())
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    for (name, want, got) in [("sha256", sha256, d.sha256), ("blake3", b3, d.blake3)] {
        if let (Some(want), Some(got)) = (want, got) {
            if !got.eq_ignore_ascii_case(want) {
                return Err(format!(
                    "`{}` has {name} {got}, the scenario expects {want}",
                    path.display()
                ));
            }
        }
    }
    Ok(())
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

/// A reference's `timing.json`, which its receipt's tokens/s come from: the prefill of the
/// `tokens` it was given and `steps − 1` decode calls, each taking a positive time that gives a
/// rate the receipt gate accepts. Checked when the reference finishes, so a run cannot pass and
/// leave a receipt the gate then refuses.
fn check_timing(dir: &Path, tokens: usize, steps: usize) -> Result<(), String> {
    let path = dir.join("timing.json");
    let bad = |what: String| format!("the reference's `{}`: {what}", path.display());
    let text = bitnet_engine::files::read_text_limited(
        &path,
        bitnet_engine::files::MAX_JSON_BYTES,
        "timing.json",
    )
    .map_err(|e| {
        bad(format!(
            "{e} (a reference writes its prefill and decode times there)"
        ))
    })?;
    let t: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let shown = |k: &str| t.get(k).map_or("absent".to_string(), |v| v.to_string());
    let count = |k: &str| t.get(k).and_then(serde_json::Value::as_u64);
    let seconds = |k: &str| t.get(k).and_then(serde_json::Value::as_f64);
    let calls = steps.saturating_sub(1);
    if count("prefill_tokens") != Some(tokens as u64) || count("decode_calls") != Some(calls as u64)
    {
        return Err(bad(format!(
            "`prefill_tokens` {} and `decode_calls` {}, expected {tokens} and {calls} (the tokens it was given; one call per generated token after the first)",
            shown("prefill_tokens"),
            shown("decode_calls")
        )));
    }
    let (lo, hi) = (crate::receipt::MIN_TPS, crate::receipt::MAX_TPS);
    for (k, n) in [("prefill_seconds", tokens), ("decode_seconds", calls)] {
        let v = seconds(k);
        let ok = match v {
            _ if n == 0 => v.is_some_and(|x| x.is_finite() && x >= 0.0),
            Some(x) if x.is_finite() && x > 0.0 => (lo..=hi).contains(&(n as f64 / x)),
            _ => false,
        };
        if !ok {
            return Err(bad(format!(
                "`{k}` is {} for {n}: expected a time in seconds giving {lo} to {hi:e} tokens/s",
                shown(k)
            )));
        }
    }
    Ok(())
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
    unpack_tq1: Option<bool>,
    threads: Option<usize>,
) -> Result<forward::RunOutput, String> {
    let _ = std::fs::remove_dir_all(dir);
    let mut tracer =
        Tracer::new(filter.clone(), dir, true).map_err(|e| format!("`{}`: {e}", dir.display()))?;
    let opts = forward::RunOptions {
        generate: sc.generation.steps,
        chunk,
        threads: threads.unwrap_or(sc.threads),
        kernel,
        nudge_embeddings: false,
        unpack_tq1,
        plan: plan.cloned(),
        kv_type: sc.kv_cache,
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

#[cfg(test)]
mod timing_tests {
    use super::check_timing;

    #[test]
    fn a_reference_timing_is_held_to_its_request_and_to_rates_the_gate_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let check = |json: &str| {
            std::fs::write(dir.path().join("timing.json"), json).unwrap();
            check_timing(dir.path(), 8, 4)
        };
        let good = r#"{"prefill_tokens": 8, "prefill_seconds": 0.01, "decode_calls": 3, "decode_seconds": 0.02}"#;
        assert_eq!(check(good), Ok(()));
        for (json, want) in [
            (
                r#"{"prefill_tokens": 8, "prefill_seconds": 0, "decode_calls": 3, "decode_seconds": 0.02}"#,
                "`prefill_seconds` is 0 for 8",
            ),
            (
                r#"{"prefill_tokens": 8, "prefill_seconds": -1e-9, "decode_calls": 3, "decode_seconds": 0.02}"#,
                "`prefill_seconds` is -1e-9",
            ),
            (
                r#"{"prefill_tokens": 8, "prefill_seconds": 1e-12, "decode_calls": 3, "decode_seconds": 0.02}"#,
                "giving 0.001 to 1e8 tokens/s",
            ),
            (
                r#"{"prefill_tokens": 8, "prefill_seconds": 0.01, "decode_calls": 3}"#,
                "`decode_seconds` is absent",
            ),
            (
                r#"{"prefill_tokens": 9, "prefill_seconds": 0.01, "decode_calls": 3, "decode_seconds": 0.02}"#,
                "expected 8 and 3",
            ),
            ("[]", "expected 8 and 3"),
            ("{", "not JSON"),
        ] {
            let e = check(json).unwrap_err();
            assert!(e.contains(want), "{json}: {e}");
        }
        // No decode call: its time may be 0.
        std::fs::write(
            dir.path().join("timing.json"),
            r#"{"prefill_tokens": 8, "prefill_seconds": 0.01, "decode_calls": 0, "decode_seconds": 0}"#,
        )
        .unwrap();
        assert_eq!(check_timing(dir.path(), 8, 1), Ok(()));
        std::fs::remove_file(dir.path().join("timing.json")).unwrap();
        assert!(check_timing(dir.path(), 8, 1)
            .unwrap_err()
            .contains("writes its prefill and decode times"));
    }
}
