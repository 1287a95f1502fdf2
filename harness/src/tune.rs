//! The kernel choice by measurement, cached: [`bitnet_engine::kernels::plan::tune`] times every
//! variant on each kind of product of a model and on the rest of a decode step (attention, RoPE,
//! the FFN activation: the plan's `other`), once per CPU model, model shape and thread count;
//! then each decode kind's prefetch distance is decided again on whole decode steps of the model
//! ([`refine_on_steps`]), and `target/harness/tune.json` keeps the result (written atomically).
//! `BITNET_KERNEL` and `--kernel` still force one variant for everything.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bitnet_engine::forward::Session;
use bitnet_engine::kernels::plan::{refine_on_steps, tune, KernelPlan, Timing};
use serde::{Deserialize, Serialize};

/// One tuned plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneEntry {
    /// `/proc/cpuinfo`'s model name with family and model numbers.
    pub cpu_model: String,
    /// The matrices timed (name, type, rows × cols): the model's shape as the products see it.
    pub shape: String,
    pub threads: usize,
    /// The variants this engine ran here when it tuned (`scalar`, `avx2`, ...): an engine with
    /// another set (a variant added) tunes again. Absent in older files.
    #[serde(default)]
    pub variants: Vec<String>,
    /// Where the model's weights were held when it tuned (`huge pages (THP madvise)`, `file
    /// map`; [`bitnet_engine::gguf::GgufFile::pages`]): the decode timings stream from the same
    /// kind of pages, which moves the fastest prefetch distance, so weights held otherwise tune
    /// again.
    pub weight_pages: String,
    /// Kind of product (`TQ2_0/decode`) → variant, and `other` → the rest's variant.
    pub plan: BTreeMap<String, String>,
    pub timings: Vec<Timing>,
    /// RFC 3339, UTC.
    pub measured_at: String,
}

/// The version of `tune.json` this harness writes and reads; a file of another version (one
/// tuned before decode kinds had measured prefetch distances, before entries recorded the
/// weights' pages, before the attention's prefetch distance was measured, before the decode
/// distances were decided on whole decode steps, before the `vnni256` TQ2_0 decode kernels
/// read rows grouped, before the KV cache's pages were measured, before the eight-row
/// `vnni256` TQ2_0 decode body took its masked-plane form, before the I2_S decode kernels
/// came in several rows per call, before the attention's SIMD form took eight keys a call and
/// each value lane in registers, before the grouped TQ2_0 copy put each group's scales in
/// front of its codes, before decode steps decided among a variant's row groups too, before
/// the AVX2 TQ2_0 decode offered the table-lookup kernel, before the AVX2 I2_S decode did, or
/// before the F16/F32 decode read its activations as f32 and offered two rows a call, or before
/// a decode-step timing was the fastest of eight steps rather than the mean of four, and a
/// candidate's the median of five rounds of those rather than the best of three) is measured
/// again and replaced.
pub const TUNE_SCHEMA: u32 = 16;

/// `target/harness/tune.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneFile {
    pub schema_version: u32,
    pub entries: Vec<TuneEntry>,
}

/// This CPU: `model name` of `/proc/cpuinfo` with its family and model numbers (x86), or the
/// architecture when there is none.
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |k: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|n| n.trim() == k))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    match field("model name") {
        Some(name) => match (field("cpu family"), field("model")) {
            (Some(f), Some(m)) => format!("{name} (family {f}, model {m})"),
            _ => name,
        },
        None => format!("{} CPU", std::env::consts::ARCH),
    }
}

/// The shape key of a session's work: its products' matrices, and the attention and FFN shape
/// the `other` variant is timed on.
pub fn shape_key(s: &Session) -> String {
    let c = &s.model().config;
    let mut parts: Vec<String> = s
        .representative_matrices()
        .iter()
        .map(|(n, m)| format!("{n} {} {}x{}", m.ty, m.rows, m.cols))
        .collect();
    parts.push(format!(
        "attention {}x{} kv {}; ffn {} {:?}",
        c.n_head,
        c.head_dim,
        c.n_head_kv,
        c.n_ff,
        c.arch.ffn()
    ));
    // Only when not F32, so the keys of plans cached before the option stay the same.
    if s.kv_type() != bitnet_engine::attention::KvType::F32 {
        parts.push(format!("kv cache {}", s.kv_type().label()));
    }
    parts.join("; ")
}

/// The variants this engine runs here, by name.
fn variants_here() -> Vec<String> {
    bitnet_engine::kernels::Kernel::available()
        .iter()
        .map(|k| k.suffix().to_string())
        .collect()
}

/// The entry of `file` for `s` on this CPU: same CPU model, shape, threads and variants, with a
/// plan whose every variant runs here.
fn lookup(file: &TuneFile, s: &Session) -> Option<TuneEntry> {
    let (cpu, shape, variants) = (cpu_model(), shape_key(s), variants_here());
    let pages = s.model().file.pages();
    file.entries
        .iter()
        .find(|e| {
            e.cpu_model == cpu
                && e.shape == shape
                && e.threads == s.threads
                && e.variants == variants
                && e.weight_pages == pages
        })
        .filter(|e| KernelPlan::from_description(&e.plan).is_some())
        .cloned()
}

/// The cache file, when it reads as this harness's version ([`TUNE_SCHEMA`]).
fn read_cache(cache: &Path) -> Option<TuneFile> {
    let text = bitnet_engine::files::read_text_limited(
        cache,
        bitnet_engine::files::MAX_JSON_BYTES,
        "tuning cache",
    )
    .ok()?;
    serde_json::from_str::<TuneFile>(&text)
        .ok()
        .filter(|f| f.schema_version == TUNE_SCHEMA)
}

/// The plan `harness bench` tuned for `model` at `threads` on this CPU and cached in `cache`, if
/// any: what `harness run` uses when no variant is forced. Never measures; the model's shape key
/// (a session like bench's) is worked out only when the cache holds an entry for this CPU and
/// thread count.
pub fn cached_plan(
    model: &bitnet_engine::model::Model,
    threads: usize,
    cache: &Path,
) -> Option<KernelPlan> {
    let file = read_cache(cache)?;
    let (cpu, variants) = (cpu_model(), variants_here());
    if !file
        .entries
        .iter()
        .any(|e| e.cpu_model == cpu && e.threads == threads && e.variants == variants)
    {
        return None;
    }
    // The session `harness bench` keys its plans by (see `bench::run`).
    let probe = Session::new(model, threads, bitnet_engine::kernels::Kernel::best());
    KernelPlan::from_description(&lookup(&file, &probe)?.plan)
}

/// The prompt before the decode steps that [`refine_on_steps`] times.
const STEP_PROMPT: usize = 8;
/// Decode steps per timing; the fastest step is the timing. A step of the 700M preset takes about
/// 11 ms, shorter than most busy spells of a shared host: the mean of four steps, as this was
/// before, put the `vnni256` four- and eight-row plans within 0.1% of each other on Zen 4
/// (2026-12-07, 10.51 against 10.52 ms a step), where the eight rows' products took 0.3-0.4 ms
/// a step less in alternating decodes of 64 steps.
const STEPS: usize = 8;

/// Seconds of the fastest of `steps` greedy decode steps after `prompt`, in a new session under
/// `plan` ([`crate::bench::engine_prompt`], as `harness bench` runs it).
fn fastest_step(
    model: &bitnet_engine::model::Model,
    prompt: &[u32],
    steps: usize,
    threads: usize,
    plan: &KernelPlan,
    kv: bitnet_engine::attention::KvType,
) -> Result<f64, String> {
    let (mut s, _, mut tok) = crate::bench::engine_prompt(model, prompt, steps, threads, plan, kv)?;
    let mut fastest = f64::INFINITY;
    for _ in 0..steps {
        let t = std::time::Instant::now();
        tok = bitnet_engine::forward::argmax(&s.forward(&[tok], false, None)?);
        fastest = fastest.min(t.elapsed().as_secs_f64());
    }
    Ok(fastest)
}

/// The plan for `s` at its thread count: from `cache` when this CPU model, shape and thread count
/// were tuned before (and every variant it names runs here), else measured now (`budget` per
/// kind and variant) and added to `cache`. Returns the entry and whether it was cached.
pub fn plan_for(s: &Session, cache: &Path, budget: Duration) -> Result<(TuneEntry, bool), String> {
    let (cpu, shape, threads) = (cpu_model(), shape_key(s), s.threads);
    let variants = variants_here();
    let mut file = read_cache(cache).unwrap_or_default();
    if let Some(e) = lookup(&file, s) {
        return Ok((e, true));
    }
    let mut other = s.decode_other_work();
    let weight_pages = s.model().file.pages();
    let (plan, mut timings) = tune(
        &s.representative_matrices(),
        Some(&mut other),
        threads,
        budget,
        s.model().file.huge_pages_advised(),
    );
    // The decode kinds' variants and prefetch distances, decided again on whole decode steps of
    // the model.
    let (model, kv) = (s.model(), s.kv_type());
    let prompt = crate::bench::prompt(STEP_PROMPT, model.config.n_vocab);
    let what = format!("the fastest of {STEPS} decode steps after a {STEP_PROMPT}-token prompt");
    // Each timing: a new session runs the prompt, then `STEPS` greedy steps, as the bench does.
    let (plan, step_timings) = refine_on_steps(plan, &timings, &what, |p| {
        fastest_step(model, &prompt, STEPS, threads, p, kv).unwrap_or(f64::INFINITY)
    });
    timings.extend(step_timings);
    let entry = TuneEntry {
        cpu_model: cpu,
        shape,
        threads,
        variants,
        weight_pages,
        plan: plan.describe(),
        timings,
        measured_at: crate::receipt::rfc3339(std::time::SystemTime::now()),
    };
    file.schema_version = TUNE_SCHEMA;
    file.entries.retain(|e| {
        !(e.cpu_model == entry.cpu_model
            && e.shape == entry.shape
            && e.threads == threads
            && e.weight_pages == entry.weight_pages)
    });
    file.entries.push(entry.clone());
    if let Some(dir) = cache.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    }
    let json = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
    bitnet_engine::npy::write_atomic(cache, &json)
        .map_err(|e| format!("cannot write `{}`: {e}", cache.display()))?;
    Ok((entry, false))
}
