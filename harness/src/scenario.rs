//! Scenarios: the YAML files users write (`scenarios/*.yaml`), parsed and validated with errors
//! that name the file, line and column, what was expected, and a close match for a misspelt
//! field or trace point. First step of the data flow (DESIGN.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bitnet_engine::attention::KvType;
use bitnet_engine::synth::ModelSpec;
use bitnet_engine::trace::{PointFilter, TracePoint};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::compare::{LogitTolerance, Tolerance};

mod load;
mod root;
mod schema;

pub use load::{
    did_you_mean, find_scenarios, load_scenario, model_vocab, ScenarioError, MAX_FLOW_DEPTH,
    MAX_STEPS, MAX_THREADS,
};
pub use root::{enclosing_project, project_root};
pub use schema::json_schema;

/// A scenario: one model, some inputs, and the checks to run on them.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// A label: 1 to 128 letters, digits, `_`, `-` or `.` (not first). The scenario's trials,
    /// golden and receipt are named by its file name without `.yaml`.
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
    /// The KV cache's type, the engine's and the reference's (llama.cpp's `type_k` and `type_v`):
    /// `f32` (the default), or `f16` (llama.cpp's own default: keys and values rounded to halves
    /// as they are stored, and the query and probabilities rounded to halves where they meet
    /// them; the engine still equals llama.cpp bit for bit). The CUDA backend keeps F32.
    #[serde(default, skip_serializing_if = "KvType::is_f32")]
    pub kv_cache: KvType,
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
