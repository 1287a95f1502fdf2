//! Scenarios: the YAML files users write (`scenarios/*.yaml`), parsed and validated with errors
//! that name the file, line and column, what was expected, and a close match for a misspelt
//! field or trace point. First step of the data flow (DESIGN.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bitnet_engine::synth::ModelSpec;
use bitnet_engine::trace::{PointFilter, TracePoint};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::compare::{LogitTolerance, Tolerance};

mod root;
mod schema;

pub use root::{enclosing_project, project_root};
pub use schema::json_schema;

/// A scenario: one model, some inputs, and the checks to run on them.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Defaults to the file name without `.yaml`.
    #[serde(default)]
    pub name: Option<String>,
    /// What the scenario guards.
    #[serde(default)]
    pub description: String,
    /// Free tags; `slow` scenarios run only with `BITNET_SLOW=1`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The model: a preset, an inline synthetic spec, a local GGUF file, or a model of
    /// `models.lock`.
    pub model: ModelSource,
    /// Inputs: token-id lists (each a separate run) and/or text prompts.
    pub inputs: Inputs,
    /// Greedy generation after the prompt.
    #[serde(default)]
    pub generation: Generation,
    /// Which trace points to capture and compare.
    #[serde(default)]
    pub trace: TraceSpec,
    /// Comparison tolerances against the reference.
    #[serde(default)]
    pub tolerances: Tolerances,
    /// Hold every trace point to exact equality with the reference (bit for bit; a mismatch names
    /// the first differing element, both values and their ULP distance). Defaults to `true`
    /// against llama.cpp, whose CPU build the engine reproduces bit for bit, and `false` against
    /// other references. Where exactness cannot hold (a reference built for another instruction
    /// set, a shape ggml sums in an order the engine does not reproduce) the report says why,
    /// per point, and the tolerances apply there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<bool>,
    /// Backends to run the engine on: `cpu`, and `cuda` for the `cuda` check (the CUDA backend
    /// against the CPU run at every point; ignored, with the reason, where no GPU can run it).
    #[serde(default = "default_backends")]
    pub backends: Vec<Backend>,
    /// The reference: `llama.cpp` (default), `none`, or `{ command: [program, args...] }`.
    #[serde(default)]
    pub reference: Reference,
    /// Keep a golden snapshot of the engine's trace hashes.
    #[serde(default = "yes")]
    pub golden: bool,
    /// Prefill chunk sizes to check against a one-shot prefill (`0` means all tokens at once).
    #[serde(default)]
    pub prefill_chunks: Vec<usize>,
    /// Engine and reference threads (1 to 256, and at most this machine's cores unless
    /// `force_threads`).
    #[serde(default = "default_threads")]
    #[schemars(range(min = 1, max = 256))]
    pub threads: usize,
    /// Run `threads` even when the machine has fewer cores (oversubscribed threads make the
    /// run slower and timing figures meaningless; values stay the same).
    #[serde(default)]
    pub force_threads: bool,
    /// Conditions under which the scenario's checks are skipped (reported as ignored).
    #[serde(default)]
    pub skip_unless: SkipUnless,
    /// What this scenario's receipt must show.
    #[serde(default)]
    pub receipt: ReceiptRequirements,
}

fn yes() -> bool {
    true
}
fn default_threads() -> usize {
    2
}
fn default_backends() -> Vec<Backend> {
    vec![Backend::Cpu]
}

/// Where the model comes from: exactly one of `preset`, `spec`, `path`, `locked`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSource {
    /// A synthetic preset (`tiny`, `gqa`, `i2s`, `700m`, ...: the schema lists them all).
    #[serde(default)]
    pub preset: Option<String>,
    /// An inline synthetic model spec (fields of `harness gen-model --spec`).
    #[serde(default)]
    pub spec: Option<ModelSpec>,
    /// A local GGUF file, relative to the scenario file. Absent → the scenario is skipped.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Expected SHA-256 of the file at `path` (hex).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Expected BLAKE3 of the file at `path` (hex).
    #[serde(default)]
    pub blake3: Option<String>,
    /// A real model named in `models.lock` (the nearest one above the scenario file), fetched by
    /// `harness fetch-models NAME` to `target/harness/models/NAME.gguf` and verified against the
    /// lock's hashes. Absent → the scenario is skipped, with the fetch command in the reason.
    #[serde(default)]
    pub locked: Option<String>,
}

/// Inputs of a scenario.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    /// Token-id lists, each run separately.
    #[serde(default)]
    pub tokens: Vec<Vec<u32>>,
    /// Text prompts, tokenized with the model's vocabulary.
    #[serde(default)]
    pub prompts: Vec<String>,
}

/// Generation settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Generation {
    /// Tokens to generate after the prompt (0: prefill only; at most 4096).
    #[serde(default)]
    #[schemars(range(max = 4096))]
    pub steps: usize,
    /// Greedy decoding (the only mode: comparisons need determinism).
    #[serde(default = "yes")]
    pub greedy: bool,
}

impl Default for Generation {
    fn default() -> Self {
        Generation {
            steps: 0,
            greedy: true,
        }
    }
}

/// Trace capture settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceSpec {
    /// Globs over canonical trace point names (`blk.*.attn_out`, `logits`); all by default.
    #[serde(default = "all_points")]
    #[schemars(length(min = 1))]
    pub points: Vec<String>,
}

fn all_points() -> Vec<String> {
    vec!["*".into()]
}

impl Default for TraceSpec {
    fn default() -> Self {
        TraceSpec {
            points: all_points(),
        }
    }
}

/// Tolerances: a default, overrides by point glob (the last matching override wins, field by
/// field), and logit metrics.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tolerances {
    /// The tolerance of every point no override names (default: cosine ≥ 0.9997, rel L2 ≤ 5e-2,
    /// NMSE ≤ 2.5e-3; see the README's tolerance section).
    #[serde(default = "default_tolerance")]
    pub default: Tolerance,
    /// Overrides by point glob (`blk.*.ffn_down`, `logits`): each sets the fields it names over
    /// `default`; where several match, the last in sorted order wins, field by field.
    #[serde(default)]
    pub points: BTreeMap<String, Tolerance>,
    /// Bounds on the logits over positions: KL divergence, top-1 agreement, top-k overlap
    /// (default: KL ≤ 1e-4 at every position, top-1 agreement 1).
    #[serde(default = "default_logit_tolerance")]
    pub logits: LogitTolerance,
    /// The bound of every stage in the `replay` check, when it differs from the points' (default:
    /// each stage is held to its point's tolerance). Stage replay feeds each stage the
    /// reference's own input, so against a reference the engine does not equal bit for bit (the
    /// numpy second implementation) a stage stays within rounding even where an int8 flip moves
    /// the end-to-end points by 1e-2: this keeps replay tight while `default` admits the flips.
    #[serde(default)]
    pub replay: Option<Tolerance>,
}

/// Defaults, measured on the shipped scenarios (engine against llama.cpp; see the README's
/// tolerance section): where no int8 activation flips, points agree to rel L2 ≤ 7e-7; an
/// activation that sits on a Q8_K rounding boundary flips on a 1e-7 difference upstream and moves
/// the points after it at that position by up to rel L2 1.1e-2 (cosine 0.99994). These defaults
/// sit about 5x above that; scenarios without flips declare tight bounds (1e-5) of their own.
fn default_tolerance() -> Tolerance {
    Tolerance {
        cosine_min: Some(0.9997),
        rel_l2_max: Some(5e-2),
        max_abs: None,
        nmse_max: Some(2.5e-3),
        exact: None,
    }
}

fn default_logit_tolerance() -> LogitTolerance {
    LogitTolerance {
        kl_max: Some(1e-4),
        top1_agreement_min: Some(1.0),
        ..LogitTolerance::default()
    }
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            default: default_tolerance(),
            points: BTreeMap::new(),
            logits: default_logit_tolerance(),
            replay: None,
        }
    }
}

impl Tolerances {
    /// The tolerance in force for a canonical point.
    pub fn for_point(&self, name: &str) -> Tolerance {
        let mut t = self.default;
        for (glob, over) in &self.points {
            if PointFilter::new(&[glob.as_str()]).is_ok_and(|f| f.matches(name)) {
                t = t.merged(over);
            }
        }
        t
    }
}

/// Engine backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Cpu,
    Cuda,
}

/// The reference implementation.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Reference {
    /// `llama.cpp` or `none`.
    Named(NamedReference),
    /// Any program taking `harness ref-trace`'s arguments and writing the same trace files.
    Command { command: Vec<String> },
}

impl Default for Reference {
    fn default() -> Self {
        Reference::Named(NamedReference::LlamaCpp)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum NamedReference {
    #[serde(rename = "llama.cpp")]
    LlamaCpp,
    #[serde(rename = "none")]
    None,
}

impl Reference {
    /// Whether a reference runs.
    pub fn is_none(&self) -> bool {
        matches!(self, Reference::Named(NamedReference::None))
    }
}

/// Conditions for running the scenario's checks.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SkipUnless {
    /// Files that must exist (relative to the scenario file).
    #[serde(default)]
    pub files_exist: Vec<PathBuf>,
    /// Environment variables that must be set to a non-empty value.
    #[serde(default)]
    pub env: Vec<String>,
}

/// What the receipt must show.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptRequirements {
    /// Smallest acceptable engine decode tokens/s.
    #[serde(default)]
    pub min_decode_tps: Option<f64>,
    /// Kernel IDs that must have executed (e.g. `tq2_0_q8k_dot_avx2`); a glob such as
    /// `tq2_0_q8k_dot_*` accepts any variant.
    #[serde(default)]
    pub kernels: Vec<String>,
}

/// A loaded scenario and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedScenario {
    pub path: PathBuf,
    /// File stem: the trial prefix.
    pub stem: String,
    pub scenario: Scenario,
    /// blake3 of the file.
    pub file_blake3: String,
}

/// A bad scenario: where, and what to change.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}:{column}: {message}")]
pub struct ScenarioError {
    pub path: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The canonical names a scenario may use in point globs, for "did you mean".
fn field_names() -> &'static [&'static str] {
    &[
        "name",
        "description",
        "tags",
        "model",
        "inputs",
        "generation",
        "trace",
        "tolerances",
        "backends",
        "reference",
        "golden",
        "prefill_chunks",
        "threads",
        "force_threads",
        "exact",
        "skip_unless",
        "receipt",
        "preset",
        "spec",
        "path",
        "sha256",
        "blake3",
        "locked",
        "tokens",
        "prompts",
        "steps",
        "greedy",
        "points",
        "default",
        "logits",
        "cosine_min",
        "rel_l2_max",
        "max_abs",
        "nmse_max",
        "kl_max",
        "kl_mean_max",
        "top1_agreement_min",
        "topk_overlap_min",
        "k",
        "files_exist",
        "env",
        "min_decode_tps",
        "kernels",
        "command",
        "n_embd",
        "n_layer",
        "n_head",
        "n_head_kv",
        "n_ff",
        "n_vocab",
        "n_ctx",
        "rope_base",
        "rms_eps",
        "ternary_type",
        "embedding_type",
        "scale_tensors",
        "embedding_std",
        "first_attn_scale",
        "residual_scale",
        "seed",
    ]
}

/// The closest candidate within a small edit distance.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(d, c)| *d > 0 && *d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| c)
}

/// Find the 1-based line and column of `needle` in the YAML text, outside comments: where it
/// stands as a key (`needle:` first on its line, or after `{`, `,` or `-`), else its first
/// mention (a value: a preset, a glob). A comment that names a field is not the field.
fn locate(text: &str, needle: &str) -> (usize, usize) {
    let key = format!("{}:", needle.trim_end_matches(':'));
    let lines: Vec<&str> = text.lines().map(uncommented).collect();
    let as_key = |line: &str| {
        line.match_indices(&key).map(|(i, _)| i).find(|&i| {
            let before = line[..i].trim_end();
            before.is_empty() || before.ends_with(['{', ',', '-'])
        })
    };
    let anywhere = |line: &str| line.find(needle);
    for find in [&as_key as &dyn Fn(&str) -> Option<usize>, &anywhere] {
        for (i, line) in lines.iter().enumerate() {
            if let Some(col) = find(line) {
                return (i + 1, col + 1);
            }
        }
    }
    (1, 1)
}

/// A line without its comment: from a `#` at its start or after whitespace, outside quotes.
fn uncommented(line: &str) -> &str {
    let (mut quote, mut prev): (Option<char>, char) = (None, ' ');
    for (i, ch) in line.char_indices() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(ch),
            (None, '#') if prev.is_whitespace() => return &line[..i],
            _ => {}
        }
        prev = ch;
    }
    line
}

/// serde's Rust type names (`expected usize`, `expected f64`) in words a scenario's author reads.
fn humane_types(message: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected u64", "expected a whole number (0 or more)"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected a string", "expected text"),
    ];
    let mut m = message.to_string();
    for (from, to) in WORDS {
        if let Some(i) = m.rfind(from) {
            // Only a whole word: `expected u32` is not the start of `expected u32x`.
            let end = i + from.len();
            if !m[end..].starts_with(|c: char| c.is_ascii_alphanumeric()) {
                m.replace_range(i..end, to);
            }
        }
    }
    m
}

/// Deepest flow-collection nesting a scenario may use (the YAML parser's time grows with depth:
/// 50,000 levels took 10 s, even with an error on line 4).
pub const MAX_FLOW_DEPTH: usize = 64;

/// The line and column (1-based) where `[`/`{` nesting first passes `max`, outside quoted
/// strings and comments; `None` when it never does.
fn too_deep(text: &str, max: usize) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    for (ln, line) in text.lines().enumerate() {
        let (mut quote, mut prev): (Option<char>, char) = (None, ' ');
        for (col, ch) in line.chars().enumerate() {
            match (quote, ch) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(ch),
                // A comment starts at `#` after whitespace (or at the start of the line).
                (None, '#') if prev.is_whitespace() => break,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > max {
                        return Some((ln + 1, col + 1));
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
            prev = ch;
        }
    }
    None
}

/// Parse and validate a scenario file: one error, with file, line and column.
pub fn load_scenario(path: &Path) -> Result<LoadedScenario, ScenarioError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        path: shown.clone(),
        line: 0,
        column: 0,
        message: format!("cannot read the file: {e}"),
    })?;
    if let Some((line, column)) = too_deep(&text, MAX_FLOW_DEPTH) {
        return Err(ScenarioError {
            path: shown,
            line,
            column,
            message: format!(
                "`[`/`{{` nested deeper than {MAX_FLOW_DEPTH} levels; a scenario needs a few"
            ),
        });
    }
    let scenario: Scenario = serde_norway::from_str(&text).map_err(|e| {
        let (mut line, mut column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        let mut message = e.to_string();
        // serde_norway appends " at line L column C"; the prefix already says where.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        message = humane_types(&message);
        if message.contains("untagged enum Reference") {
            // serde gives untagged enums no location: point at the value of `reference:`.
            message =
                "`reference` must be `llama.cpp`, `none` or `{ command: [program, args...] }`"
                    .into();
            let (l, c) = locate(&text, "reference:");
            (line, column) = (l, c + "reference: ".len());
        }
        if let Some(rest) = message.find("unknown field `").map(|i| &message[i + 15..]) {
            if let Some(word) = rest.split('`').next() {
                if let Some(m) = did_you_mean(word, field_names().iter().copied()) {
                    let hint = format!("; did you mean `{m}`?");
                    message.push_str(&hint);
                }
            }
        }
        ScenarioError {
            path: shown.clone(),
            line,
            column,
            message,
        }
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let err = |needle: &str, message: String| {
        let (line, column) = locate(&text, needle);
        ScenarioError {
            path: shown.clone(),
            line,
            column,
            message,
        }
    };
    validate(&scenario, path, &err)?;
    check_token_ids(&scenario, path, &text)?;
    Ok(LoadedScenario {
        path: path.to_owned(),
        stem,
        scenario,
        file_blake3: blake3::hash(text.as_bytes()).to_hex().to_string(),
    })
}

/// The vocabulary size of the scenario's model, where it is known without building the model: a
/// preset's or spec's `n_vocab`, or the token embedding's rows in the header of a GGUF file that
/// exists (`path`, or a fetched `locked` model). `None` otherwise; the run reports what is wrong.
pub fn model_vocab(m: &ModelSource, scenario: &Path) -> Option<u64> {
    if let Some(spec) = m.spec.as_ref() {
        return Some(u64::from(spec.n_vocab));
    }
    if let Some(p) = &m.preset {
        return bitnet_engine::synth::preset(p).map(|s| u64::from(s.n_vocab));
    }
    let file = match (&m.path, &m.locked) {
        (Some(p), _) => scenario.parent().unwrap_or(Path::new(".")).join(p),
        (None, Some(name)) => crate::fetch::resolve_locked(scenario, name).ok()?.1,
        (None, None) => return None,
    };
    let f = bitnet_engine::gguf::GgufFile::open(&file).ok()?;
    f.tensor("token_embd.weight")
        .and_then(|t| t.dims.get(1).copied())
}

/// Token ids of `inputs.tokens` outside the model's vocabulary, caught when the scenario is read
/// (one error at the id's line and column) instead of by every check of the run.
fn check_token_ids(s: &Scenario, path: &Path, text: &str) -> Result<(), ScenarioError> {
    let Some(n_vocab) = model_vocab(&s.model, path) else {
        return Ok(());
    };
    let mut k = 0;
    for (i, list) in s.inputs.tokens.iter().enumerate() {
        for (j, &t) in list.iter().enumerate() {
            if u64::from(t) >= n_vocab {
                let (line, column) = locate_number(text, "tokens", k);
                return Err(ScenarioError {
                    path: path.display().to_string(),
                    line,
                    column,
                    message: format!(
                        "token id `{t}` (`inputs.tokens[{i}][{j}]`) is outside the model's vocabulary: `n_vocab` is {n_vocab}, so ids run from 0 to {}",
                        n_vocab - 1
                    ),
                });
            }
            k += 1;
        }
    }
    Ok(())
}

/// The 1-based line and column of the `k`-th number (0-based) after the key `key:`, outside
/// comments: the `k`-th token id of `inputs.tokens` in either flow or block form. The key's own
/// position when it has fewer numbers after it.
fn locate_number(text: &str, key: &str, k: usize) -> (usize, usize) {
    let (kl, kc) = locate(text, key);
    let mut seen = 0;
    for (ln, line) in text.lines().enumerate().skip(kl - 1) {
        let line = uncommented(line);
        let start = if ln + 1 == kl { kc - 1 + key.len() } else { 0 };
        let bytes = line.as_bytes();
        let mut i = start;
        while i < bytes.len() {
            let boundary =
                i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
            if bytes[i].is_ascii_digit() && boundary {
                if seen == k {
                    return (ln + 1, i + 1);
                }
                seen += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            } else {
                i += 1;
            }
        }
    }
    (kl, kc)
}

/// Most greedy steps a scenario may ask for (each is traced, run by the reference and compared).
pub const MAX_STEPS: usize = 4096;

fn validate(
    s: &Scenario,
    path: &Path,
    err: &dyn Fn(&str, String) -> ScenarioError,
) -> Result<(), ScenarioError> {
    let m = &s.model;
    let sources = [m.preset.is_some(), m.spec.is_some(), m.path.is_some()]
        .iter()
        .filter(|&&b| b)
        .count();
    if let Some(name) = &m.locked {
        if sources != 0 || m.sha256.is_some() || m.blake3.is_some() {
            return Err(err(
                "locked:",
                "`model.locked` names a model of `models.lock`, which holds its URL and hashes: drop `preset`, `spec`, `path`, `sha256` and `blake3`".into(),
            ));
        }
        crate::fetch::resolve_locked(path, name).map_err(|e| err("locked:", e))?;
    } else if sources != 1 {
        return Err(err(
            "model",
            format!("`model` needs exactly one of `preset`, `spec`, `path` (found {sources}), or `locked`: a model of `models.lock`"),
        ));
    }
    if let Some(p) = &m.preset {
        if bitnet_engine::synth::preset(p).is_none() {
            let hint = did_you_mean(p, bitnet_engine::synth::PRESETS.iter().copied())
                .map(|m| format!("; did you mean `{m}`?"))
                .unwrap_or_default();
            return Err(err(
                p,
                format!(
                    "unknown preset `{p}`; presets: {}{hint}",
                    bitnet_engine::synth::PRESETS.join(", ")
                ),
            ));
        }
    }
    if let Some(spec) = &m.spec {
        spec.validate().map_err(|e| err("spec", e.to_string()))?;
    }
    if (m.sha256.is_some() || m.blake3.is_some()) && m.path.is_none() {
        return Err(err(
            "model",
            "`sha256`/`blake3` check a file: they need `path`".into(),
        ));
    }
    for (key, v, len) in [("sha256", &m.sha256, 64), ("blake3", &m.blake3, 64)] {
        if let Some(h) = v {
            if h.len() != len || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(err(
                    key,
                    format!("`{key}` must be {len} hex digits, found `{h}`"),
                ));
            }
        }
    }
    if s.inputs.tokens.is_empty() && s.inputs.prompts.is_empty() {
        return Err(err(
            "inputs",
            "`inputs` needs at least one `tokens` list or `prompts` entry".into(),
        ));
    }
    if let Some(i) = s.inputs.tokens.iter().position(|t| t.is_empty()) {
        return Err(err(
            "tokens",
            format!("`inputs.tokens[{i}]` is empty: give at least one token id"),
        ));
    }
    if !s.generation.greedy {
        return Err(err(
            "greedy",
            "only greedy generation is supported (`greedy: true`): comparisons need determinism"
                .into(),
        ));
    }
    if s.threads == 0 || s.threads > 256 {
        return Err(err(
            "threads",
            format!("`threads` is {}, expected 1 to 256", s.threads),
        ));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if s.threads > cores && !s.force_threads {
        return Err(err(
            "threads",
            format!(
                "`threads` is {}, but this machine has {cores} core{}; set `force_threads: true` to oversubscribe anyway",
                s.threads,
                if cores == 1 { "" } else { "s" }
            ),
        ));
    }
    let names: Vec<String> = TracePoint::all(64).iter().map(|p| p.name()).collect();
    let check_glob = |g: &str| -> Result<(), ScenarioError> {
        let f = PointFilter::new(&[g]).map_err(|e| err(g, e))?;
        if !names.iter().any(|n| f.matches(n)) {
            // Suggest against the layer-independent form (`blk.*.attn_out`).
            let generic: Vec<String> = TracePoint::all(1)
                .iter()
                .map(|p| p.name().replace("blk.0.", "blk.*."))
                .collect();
            let hint = did_you_mean(g, generic.iter().map(|s| s.as_str()))
                .map(|m| format!("; did you mean `{m}`?"))
                .unwrap_or_default();
            return Err(err(
                g,
                format!("trace point `{g}` matches no canonical trace point{hint}"),
            ));
        }
        Ok(())
    };
    for g in &s.trace.points {
        check_glob(g)?;
    }
    for (g, t) in &s.tolerances.points {
        check_glob(g)?;
        check_tolerance(t, &|m| err(g, m))?;
    }
    check_tolerance(&s.tolerances.default, &|m| err("default", m))?;
    if let Some(t) = &s.tolerances.replay {
        check_tolerance(t, &|m| err("replay", m))?;
    }
    let lt = &s.tolerances.logits;
    if lt.k == 0 {
        return Err(err("k:", "`tolerances.logits.k` must be at least 1".into()));
    }
    for (name, v) in [("kl_max", lt.kl_max), ("kl_mean_max", lt.kl_mean_max)] {
        if v.is_some_and(|v| v.is_nan() || v < 0.0) {
            return Err(err(name, format!("`{name}` must be a non-negative number")));
        }
    }
    if let Some(v) = s.receipt.min_decode_tps {
        if !(v.is_finite() && v > 0.0) {
            return Err(err(
                "min_decode_tps",
                format!("`min_decode_tps` is {v}, expected a finite positive number"),
            ));
        }
    }
    if s.trace.points.is_empty() {
        return Err(err(
            "points",
            "`trace.points` is empty: name at least one point (`[\"*\"]` traces them all)".into(),
        ));
    }
    if s.generation.steps > MAX_STEPS {
        return Err(err(
            "steps",
            format!(
                "`generation.steps` is {}, at most {MAX_STEPS} (every step is traced and compared)",
                s.generation.steps
            ),
        ));
    }
    for (name, v) in [
        ("top1_agreement_min", lt.top1_agreement_min),
        ("topk_overlap_min", lt.topk_overlap_min),
    ] {
        if v.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
            return Err(err(name, format!("`{name}` must be between 0 and 1")));
        }
    }
    if let Reference::Command { command } = &s.reference {
        if command.is_empty() {
            return Err(err("command", "`reference.command` needs a program".into()));
        }
    }
    if s.prefill_chunks.contains(&0) && s.prefill_chunks.len() == 1 {
        return Err(err(
            "prefill_chunks",
            "`prefill_chunks: [0]` compares a prefill with itself; add chunk sizes".into(),
        ));
    }
    Ok(())
}

fn check_tolerance(
    t: &Tolerance,
    err: &dyn Fn(String) -> ScenarioError,
) -> Result<(), ScenarioError> {
    if let Some(c) = t.cosine_min {
        if !(-1.0..=1.0).contains(&c) {
            return Err(err(format!(
                "`cosine_min` is {c}, expected a value between -1 and 1"
            )));
        }
    }
    for (name, v) in [
        ("rel_l2_max", t.rel_l2_max),
        ("max_abs", t.max_abs),
        ("nmse_max", t.nmse_max),
    ] {
        if v.is_some_and(|v| v.is_nan() || v < 0.0) {
            return Err(err(format!("`{name}` must be a non-negative number")));
        }
    }
    Ok(())
}

/// Every `*.yaml` under `paths` (files or directories), sorted; `schema.json` is not a scenario.
pub fn find_scenarios(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries =
                std::fs::read_dir(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))?;
            for e in entries.flatten() {
                let path = e.path();
                if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                    out.push(path);
                }
            }
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(format!("`{}` does not exist", p.display()));
        }
    }
    out.sort();
    Ok(out)
}
