//! Synthetic BitNet models from a seed: the GGUF files scenarios run on when no real model is
//! needed (DESIGN.md, "harness::model": a synthetic model from a seed).
//!
//! A [`ModelSpec`] names the shape and formats; [`generate`] writes a GGUF file that llama.cpp's
//! `bitnet` architecture loads: exactly the tensors of `src/models/bitnet.cpp`
//! (`load_arch_tensors`) and the `bitnet.*` keys it reads. The same spec gives the same bytes.
//!
//! # Scales
//! Three requirements pull against each other, and the scales are chosen so all three hold on
//! every preset, the 24-layer `700m` one included:
//! 1. activations of order one in every layer;
//! 2. stability: a one-ulp nudge of the input embedding moves the logits by a relative L2 below
//!    1e-3 *through llama.cpp's int8 activation path*, and leaves the greedy tokens unchanged;
//! 3. greedy generation that varies (not a copy of the last input token) with modest margins.
//!
//! Why (2) shapes everything: llama.cpp quantizes every activation that feeds a ternary weight to
//! int8 (Q8_K, one step = max|x|/127 ≈ 0.026·rms per 256 values). A perturbation ε far below the
//! step still flips a rounding with probability ≈ ε/step, and a flip moves one value by a whole
//! step, so in expectation a quantizer turns a relative perturbation δ into about
//! `sqrt(δ · 0.026)`: two quantizers per block, and the relative perturbation of a block's output
//! settles near 1e-2 whatever δ was (measured on this generator's previous scales, whose blocks
//! made up the residual stream: the 24-layer `700m` moved its logits by 1-5e-2 under a one-ulp
//! nudge, in the engine and in an f64 emulation of llama.cpp's arithmetic alike). The
//! logits are stable only if the blocks' share of the residual stream (and so of the logits) is
//! small: with share φ the perturbation settles near `0.026 · φ^(4/3)`, below 1e-3 for φ ≲ 0.08.
//! So the residual stream is carried by two things that do not cascade, and every deeper block
//! is a small correction:
//! - projections that feed attention and the FFN (q, k, v, gate, up) are ternary (a third of the
//!   weights zero) times `1/sqrt(2/3 · n_in)`: an input of RMS 1 gives an output of RMS about 1;
//! - the token embedding has standard deviation `embedding_std` (default 1);
//! - layer 0's attention output (attn_output times `first_attn_scale`, default 2) adds a
//!   context-dependent vector about twice as large as the embedding (the stream's RMS is then
//!   about 2.2). Its input is the embedding itself, so it flips a rounding only when the nudge
//!   does so directly (a few percent of prompts on `700m`), not by a cascade. With a factor of 1
//!   greedy generation often falls into two-token cycles (the embedding's part of the logits is
//!   a symmetric function of the last token); with 2 the context decides more;
//! - every other projection that writes into the stream (the other attn_output, every ffn_down)
//!   carries `residual_scale`, by default `0.05/sqrt(2·n_layer)`: together they make up about 5%
//!   of the stream, so even when their own outputs move by 1e-2 the logits move by about 5e-4;
//! - the output is tied to the embedding, and with an embedding this large the logit of the last
//!   input token `Σ e_i² w_i` would dwarf the others (greedy decoding would copy its input). The
//!   `output_norm` weights therefore carry random signs: `Σ e_i² w_i` then has mean zero, and the
//!   logits are a random function of the last token plus the context through layer 0's
//!   attention plus the deeper blocks' share. Their magnitude,
//!   `3/(embedding_std·sqrt(n_embd))` times [0.8, 1.2], gives logits of standard deviation
//!   about 3;
//! - the other norm weights are uniform in [0.8, 1.2], so a norm applied without its weight is
//!   caught.
//!
//! Measured with these scales on `700m` (one-ulp nudge of the input embedding): logits rel L2
//! 1.3-2.2e-4 through the engine's int8 path, 1.8e-4 in the numpy emulation of llama.cpp
//! (`tests/py/bitnet_forward.py --q8`), greedy tokens unchanged; the engine against llama.cpp
//! itself 1.7-2.5e-4 with every argmax equal. The smaller presets stay below 2e-5.
//!
//! Every scale is rounded to f16 first, so a model with `.scale` tensors and one with the scale
//! folded into the TQ blocks describe the same weights.

mod rng;

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::gguf::{GgmlType, GgufWriter, Value};
use crate::quant::{f16_to_f32, f32_to_f16, quantize};
pub use rng::Rng;

/// Ternary weight formats a synthetic model can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TernaryType {
    #[serde(rename = "TQ2_0")]
    Tq2_0,
    #[serde(rename = "TQ1_0")]
    Tq1_0,
    /// bitnet.cpp's I2_S (x86 layout, one scale per tensor); llama.cpp does not read it.
    #[serde(rename = "I2_S")]
    I2s,
}

impl TernaryType {
    pub fn ggml(self) -> GgmlType {
        match self {
            TernaryType::Tq2_0 => GgmlType::TQ2_0,
            TernaryType::Tq1_0 => GgmlType::TQ1_0,
            TernaryType::I2s => GgmlType::I2_S,
        }
    }
}

/// The vocabulary written into a synthetic model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// A small real byte-level BPE vocabulary (`tokenizer.ggml.model = gpt2`), so text prompts work.
    Bpe,
    /// No vocabulary (`tokenizer.ggml.model = none`): token ids only.
    None,
}

/// The architecture a synthetic model is written for (`general.architecture`, and the prefix of
/// its hyperparameter keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ArchName {
    /// llama.cpp's `bitnet` (SiLU FFN).
    #[serde(rename = "bitnet")]
    Bitnet,
    /// bitnet.cpp's `bitnet-b1.58` (ReLU² FFN), as BitNet b1.58 2B4T's GGUF says.
    #[serde(rename = "bitnet-b1.58")]
    BitnetB158,
    /// The older name of `bitnet-b1.58` (bitnet.cpp's first 2B4T files).
    #[serde(rename = "bitnet-25")]
    Bitnet25,
}

impl ArchName {
    /// The `general.architecture` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ArchName::Bitnet => "bitnet",
            ArchName::BitnetB158 => "bitnet-b1.58",
            ArchName::Bitnet25 => "bitnet-25",
        }
    }
}

/// Embedding formats a synthetic model can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EmbeddingType {
    F32,
    F16,
    /// ggml's Q6_K, quantized as `llama-quantize` does a tied embedding of a TQ1_0/TQ2_0 model.
    #[serde(rename = "Q6_K")]
    Q6K,
}

/// The description of a synthetic model. Every field has a default (the `tiny` preset's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSpec {
    /// The architecture: `bitnet` (default), `bitnet-b1.58` or `bitnet-25`.
    pub architecture: ArchName,
    /// Hidden size; a multiple of 256 (the TQ block) and of `n_head` (default 256).
    pub n_embd: u32,
    /// Number of transformer blocks (default 2).
    pub n_layer: u32,
    /// Attention heads; `n_embd / n_head` (the head size) must be even for RoPE (default 4).
    pub n_head: u32,
    /// Key/value heads (grouped-query attention when fewer than `n_head`); divides `n_head`.
    /// Defaults to `n_head`.
    pub n_head_kv: Option<u32>,
    /// FFN hidden size; a multiple of 256 (default 512).
    pub n_ff: u32,
    /// Vocabulary size (default 512).
    pub n_vocab: u32,
    /// Training context length written to the file (default 512).
    pub n_ctx: u32,
    /// RoPE frequency base (default 10000).
    pub rope_base: f32,
    /// RMSNorm epsilon (default 1e-5).
    pub rms_eps: f32,
    /// Format of the ternary projection weights (default `TQ2_0`).
    pub ternary_type: TernaryType,
    /// Format of the token embedding, also the tied output matrix (default `F32`).
    pub embedding_type: EmbeddingType,
    /// Store each projection's scale in a separate `.scale` tensor, the block scales then 1
    /// (default false).
    pub scale_tensors: bool,
    /// Standard deviation of the token embedding (default 1).
    pub embedding_std: f32,
    /// Extra factor on layer 0's attn_output (default 2): its context-dependent output is about
    /// twice as large as the embedding (see the module docs).
    pub first_attn_scale: f32,
    /// Extra factor on every other projection that writes into the residual stream (attn_output
    /// of layers 1.., every ffn_down); default `0.05/sqrt(2·n_layer)`, so those blocks make up
    /// about 5% of the stream and the model is stable under int8 activation quantization.
    pub residual_scale: Option<f32>,
    /// Seed of every random draw (default 0).
    pub seed: u64,
    /// The vocabulary: `bpe` (needs `n_vocab` ≥ 258) or `none` (default `bpe`).
    pub tokenizer: TokenizerKind,
    /// The BPE vocabulary's pre-tokenizer (`tokenizer.ggml.pre`): `gpt-2` (default) or
    /// `llama-bpe` (LLaMA 3's, as BitNet b1.58 2B files use).
    pub pre_tokenizer: String,
    /// Give each projection its own scale (q, k, v, gate and up differ instead of sharing one),
    /// so a product that takes a sibling's scale changes the result (default false).
    pub distinct_scales: bool,
    /// With an F16 embedding, make every 37th value an F16 subnormal (magnitude below 6.1e-5),
    /// so conversions that flush subnormals change the result (default false).
    pub f16_subnormals: bool,
}

/// The largest synthetic model a spec may ask for: the size of a real 8B-parameter ternary model
/// with room to spare. A spec within every other bound could otherwise ask for 124 GB of disk.
pub const MAX_MODEL_BYTES: u64 = 8 << 30;

/// The largest `embedding_std` F16 embeddings hold without overflowing.
pub const MAX_F16_EMBEDDING_STD: f32 = 10000.0;

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec {
            architecture: ArchName::Bitnet,
            n_embd: 256,
            n_layer: 2,
            n_head: 4,
            n_head_kv: None,
            n_ff: 512,
            n_vocab: 512,
            n_ctx: 512,
            rope_base: 10000.0,
            rms_eps: 1e-5,
            ternary_type: TernaryType::Tq2_0,
            embedding_type: EmbeddingType::F32,
            scale_tensors: false,
            embedding_std: 1.0,
            first_attn_scale: 2.0,
            residual_scale: None,
            seed: 0,
            tokenizer: TokenizerKind::Bpe,
            pre_tokenizer: "gpt-2".into(),
            distinct_scales: false,
            f16_subnormals: false,
        }
    }
}

/// The blocks' default share of the residual stream's RMS (see the module docs).
pub const BLOCK_SHARE: f32 = 0.05;

/// The standard deviation the logits are given (through the `output_norm` weight magnitude).
pub const LOGIT_STD: f32 = 3.0;

/// Names of the presets.
pub const PRESETS: &[&str] = &[
    "tiny",
    "tiny-scales",
    "gqa",
    "tq1",
    "i2s",
    "f16",
    "q6k",
    "mixed",
    "b158-tiny",
    "700m",
    "700m-tq1",
    "2b4t",
];

/// Presets whose files take seconds to minutes to generate (hundreds of MB to GB): tests that
/// walk every preset leave them to the slow scenarios.
pub const SLOW_PRESETS: &[&str] = &["700m", "700m-tq1", "2b4t"];

/// A named preset.
pub fn preset(name: &str) -> Option<ModelSpec> {
    let tiny = ModelSpec::default();
    Some(match name {
        "tiny" => tiny,
        "tiny-scales" => ModelSpec {
            scale_tensors: true,
            seed: 1,
            ..tiny
        },
        "gqa" => ModelSpec {
            n_embd: 512,
            n_head: 8,
            n_head_kv: Some(2),
            n_layer: 3,
            n_ff: 768,
            seed: 2,
            ..tiny
        },
        "tq1" => ModelSpec {
            ternary_type: TernaryType::Tq1_0,
            seed: 3,
            ..tiny
        },
        "i2s" => ModelSpec {
            ternary_type: TernaryType::I2s,
            seed: 5,
            ..tiny
        },
        "f16" => ModelSpec {
            embedding_type: EmbeddingType::F16,
            seed: 4,
            ..tiny
        },
        // A Q6_K tied embedding, as `llama-quantize` writes for TQ1_0 and TQ2_0 files.
        "q6k" => ModelSpec {
            embedding_type: EmbeddingType::Q6K,
            seed: 11,
            ..tiny
        },
        // What the other presets leave unexercised: a LLaMA-3-style RoPE base and
        // pre-tokenizer, a 2:1 GQA ratio with 128-wide heads, a distinct scale per projection,
        // F16 subnormals in the embedding, and an output row count (509) that no kernel tile
        // divides.
        "mixed" => ModelSpec {
            n_embd: 512,
            n_head: 4,
            n_head_kv: Some(2),
            n_ff: 768,
            n_vocab: 509,
            rope_base: 500000.0,
            embedding_type: EmbeddingType::F16,
            distinct_scales: true,
            scale_tensors: true,
            f16_subnormals: true,
            pre_tokenizer: "llama-bpe".into(),
            seed: 6,
            ..tiny
        },
        // bitnet.cpp's `bitnet-b1.58` in small: ReLU² FFN, I2_S weights (one scale per tensor),
        // F16 tied embedding, LLaMA-3 pre-tokenizer and RoPE base, 4:1 GQA as 2B4T's 20:5, and an
        // FFN width (640) that is a whole number of I2_S blocks (128) but not of 256.
        "b158-tiny" => ModelSpec {
            architecture: ArchName::BitnetB158,
            n_embd: 256,
            n_head: 4,
            n_head_kv: Some(1),
            n_ff: 640,
            n_vocab: 1000,
            rope_base: 500000.0,
            ternary_type: TernaryType::I2s,
            embedding_type: EmbeddingType::F16,
            pre_tokenizer: "llama-bpe".into(),
            seed: 158,
            ..tiny
        },
        // The shape of `microsoft/bitnet-b1.58-2B-4T` in bitnet.cpp's GGUF: 2560 wide, 30 layers,
        // 20 heads over 5 KV heads, n_ff 6912, a LLaMA-3 vocabulary of 128256 (`llama-bpe`; the
        // learned merges are the generator's corpus's, the rest of the 128256 entries unused
        // tokens), RoPE base 500000, I2_S weights and an F16 tied embedding. About 1.2 GB.
        "2b4t" => ModelSpec {
            architecture: ArchName::BitnetB158,
            n_embd: 2560,
            n_layer: 30,
            n_head: 20,
            n_head_kv: Some(5),
            n_ff: 6912,
            n_vocab: 128256,
            n_ctx: 4096,
            rope_base: 500000.0,
            ternary_type: TernaryType::I2s,
            embedding_type: EmbeddingType::F16,
            pre_tokenizer: "llama-bpe".into(),
            seed: 2404,
            ..tiny
        },
        // The shape of `1bitLLM/bitnet_b1_58-large`.
        "700m" => ModelSpec {
            n_embd: 1536,
            n_layer: 24,
            n_head: 16,
            n_head_kv: None,
            n_ff: 4096,
            n_vocab: 32002,
            n_ctx: 2048,
            embedding_type: EmbeddingType::F16,
            seed: 700,
            ..tiny
        },
        // `700m` in TQ1_0 (1.69 bits per weight), for `harness bench` on the base-3 format.
        "700m-tq1" => ModelSpec {
            ternary_type: TernaryType::Tq1_0,
            seed: 701,
            ..preset("700m")?
        },
        _ => return None,
    })
}

/// A spec that cannot make a model: the field and what it must be.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("model spec: `{field}` is {value}: {expected}")]
    Invalid {
        field: &'static str,
        value: String,
        expected: String,
    },
    #[error(transparent)]
    Write(#[from] crate::gguf::GgufError),
}

impl ModelSpec {
    /// Key/value heads.
    pub fn n_head_kv(&self) -> u32 {
        self.n_head_kv.unwrap_or(self.n_head)
    }

    /// Head size.
    pub fn head_dim(&self) -> u32 {
        self.n_embd / self.n_head.max(1)
    }

    /// The residual-stream factor in effect.
    pub fn residual_scale(&self) -> f32 {
        self.residual_scale
            .unwrap_or(BLOCK_SHARE / (2.0 * self.n_layer.max(1) as f32).sqrt())
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |field: &'static str, value: &dyn std::fmt::Display, expected: &str| {
            Err(SynthError::Invalid {
                field,
                value: value.to_string(),
                expected: expected.into(),
            })
        };
        let block = self.ternary_type.ggml().block_size() as u32;
        if self.n_embd == 0 || self.n_embd % block != 0 || self.n_embd > 16384 {
            return bad(
                "n_embd",
                &self.n_embd,
                &format!("a multiple of {block} up to 16384"),
            );
        }
        if self.n_ff == 0 || self.n_ff % block != 0 || self.n_ff > 65536 {
            return bad(
                "n_ff",
                &self.n_ff,
                &format!("a multiple of {block} up to 65536"),
            );
        }
        if self.n_layer == 0 || self.n_layer > 256 {
            return bad("n_layer", &self.n_layer, "between 1 and 256");
        }
        if self.n_head == 0 || self.n_embd % self.n_head != 0 || self.head_dim() % 2 != 0 {
            return bad(
                "n_head",
                &self.n_head,
                "a divisor of n_embd giving an even head size",
            );
        }
        let kv = self.n_head_kv();
        if kv == 0 || self.n_head % kv != 0 {
            return bad("n_head_kv", &kv, "a divisor of n_head");
        }
        if self.n_vocab == 0 || self.n_vocab > 1 << 20 {
            return bad("n_vocab", &self.n_vocab, "between 1 and 1048576");
        }
        if self.n_ctx == 0 {
            return bad("n_ctx", &self.n_ctx, "at least 1");
        }
        if !(self.rope_base.is_finite() && self.rope_base > 0.0) {
            return bad("rope_base", &self.rope_base, "a positive number");
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0) {
            return bad("rms_eps", &self.rms_eps, "a positive number");
        }
        if !(self.embedding_std.is_finite() && self.embedding_std > 0.0) {
            return bad("embedding_std", &self.embedding_std, "a positive number");
        }
        if self.tokenizer == TokenizerKind::Bpe && self.n_vocab < 258 {
            return bad(
                "n_vocab",
                &self.n_vocab,
                "at least 258 with `tokenizer: bpe` (256 bytes and 2 control tokens)",
            );
        }
        if !matches!(self.pre_tokenizer.as_str(), "gpt-2" | "llama-bpe") {
            return bad(
                "pre_tokenizer",
                &self.pre_tokenizer,
                "`gpt-2` or `llama-bpe`",
            );
        }
        let rs = self.residual_scale();
        if !(rs.is_finite() && rs > 0.0) {
            return bad("residual_scale", &rs, "a positive number");
        }
        if !(self.first_attn_scale.is_finite() && self.first_attn_scale > 0.0) {
            return bad(
                "first_attn_scale",
                &self.first_attn_scale,
                "a positive number",
            );
        }
        // Embedding values reach about 5 standard deviations; F16 holds at most 65504.
        if self.embedding_type == EmbeddingType::F16 && self.embedding_std > MAX_F16_EMBEDDING_STD {
            return bad(
                "embedding_std",
                &self.embedding_std,
                &format!("at most {MAX_F16_EMBEDDING_STD} with F16 embeddings (larger values overflow F16 to infinity)"),
            );
        }
        let bytes = self.weight_bytes();
        if bytes > MAX_MODEL_BYTES {
            return Err(SynthError::Invalid {
                field: "n_layer",
                value: self.n_layer.to_string(),
                expected: format!(
                    "a model of at most {} GiB: this spec's weights take {:.1} GiB (`n_layer` × the layer size from `n_embd`, `n_ff`, plus the embedding)",
                    MAX_MODEL_BYTES >> 30,
                    bytes as f64 / (1u64 << 30) as f64
                ),
            });
        }
        Ok(())
    }

    /// Total bytes of weights read per token (every tensor once), for bandwidth bounds.
    pub fn weight_bytes(&self) -> u64 {
        let tt = self.ternary_type.ggml();
        let (e, f, kv) = (
            self.n_embd as u64,
            self.n_ff as u64,
            (self.n_head_kv() * self.head_dim()) as u64,
        );
        let tern = |n_in: u64, n_out: u64| tt.row_bytes(n_in).unwrap_or(0) * n_out;
        let per_layer = tern(e, e) * 2 + tern(e, kv) * 2 + tern(e, f) * 2 + tern(f, e);
        let emb = match self.embedding_type {
            EmbeddingType::F32 => 4 * e,
            EmbeddingType::F16 => 2 * e,
            EmbeddingType::Q6K => e / 256 * crate::quant::Q6_K_BYTES as u64,
        } * self.n_vocab as u64;
        per_layer * self.n_layer as u64 + emb
    }
}

/// Round to the nearest f16 value (scales are f16-exact so TQ block scales hold them exactly).
fn f16_round(v: f32) -> f32 {
    f16_to_f32(f32_to_f16(v))
}

/// A ternary projection `[n_in] → [n_out]`: its tensor bytes and its scale.
fn ternary_tensor(
    seed: u64,
    name: &str,
    n_in: u32,
    n_out: u32,
    scale: f32,
    spec: &ModelSpec,
) -> Vec<u8> {
    let mut rng = Rng::for_tensor(seed, name);
    let block_scale = if spec.scale_tensors { 1.0 } else { scale };
    let values: Vec<f32> = (0..n_in as usize * n_out as usize)
        .map(|_| rng.trit() as f32 * block_scale)
        .collect();
    quantize(spec.ternary_type.ggml(), &values).expect("n_in is a multiple of the block size")
}

/// A norm weight vector, uniform in [0.8, 1.2].
fn norm_tensor(seed: u64, name: &str, n: u32) -> Vec<u8> {
    let mut rng = Rng::for_tensor(seed, name);
    (0..n)
        .flat_map(|_| (0.8 + 0.4 * rng.uniform()).to_le_bytes())
        .collect()
}

/// The final norm's weights: `magnitude` times [0.8, 1.2], each with a random sign, so the tied
/// output does not favour the last input token (module docs).
fn signed_norm_tensor(seed: u64, name: &str, n: u32, magnitude: f32) -> Vec<u8> {
    let mut rng = Rng::for_tensor(seed, name);
    (0..n)
        .flat_map(|_| {
            let m = magnitude * (0.8 + 0.4 * rng.uniform());
            let sign = if rng.next_u64() >> 63 == 0 { 1.0 } else { -1.0 };
            (sign * m).to_le_bytes()
        })
        .collect()
}

/// Write the model described by `spec` to `out` (atomically, one tensor in memory at a time),
/// calling `progress(done, total)` with bytes of tensor data as they are produced.
pub fn generate(
    spec: &ModelSpec,
    out: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), SynthError> {
    build(spec)?.write_with_progress(out, progress)?;
    Ok(())
}

/// The writer for `spec`, with tensors produced lazily.
pub fn build(spec: &ModelSpec) -> Result<GgufWriter, SynthError> {
    spec.validate()?;
    let s = spec.clone();
    let seed = spec.seed;
    let (e, f) = (spec.n_embd, spec.n_ff);
    let kv = spec.n_head_kv() * spec.head_dim();
    let mut w = GgufWriter::new();
    let arch = spec.architecture.as_str();
    w.add_kv("general.architecture", arch);
    w.add_kv("general.name", format!("synthetic {arch} (seed {seed})"));
    w.add_kv(
        "general.file_type",
        Value::U32(match spec.ternary_type {
            TernaryType::Tq1_0 => 36, // LLAMA_FTYPE_MOSTLY_TQ1_0
            TernaryType::Tq2_0 => 37, // LLAMA_FTYPE_MOSTLY_TQ2_0
            TernaryType::I2s => 40,   // bitnet.cpp's LLAMA_FTYPE_MOSTLY_I2_S
        }),
    );
    let key = |k: &str| format!("{arch}.{k}");
    w.add_kv(&key("context_length"), Value::U32(spec.n_ctx));
    w.add_kv(&key("embedding_length"), Value::U32(e));
    w.add_kv(&key("block_count"), Value::U32(spec.n_layer));
    w.add_kv(&key("feed_forward_length"), Value::U32(f));
    w.add_kv(&key("attention.head_count"), Value::U32(spec.n_head));
    w.add_kv(
        &key("attention.head_count_kv"),
        Value::U32(spec.n_head_kv()),
    );
    w.add_kv(&key("rope.dimension_count"), Value::U32(spec.head_dim()));
    w.add_kv(&key("rope.freq_base"), Value::F32(spec.rope_base));
    w.add_kv(
        &key("attention.layer_norm_rms_epsilon"),
        Value::F32(spec.rms_eps),
    );
    w.add_kv(&key("vocab_size"), Value::U32(spec.n_vocab));
    match spec.tokenizer {
        TokenizerKind::None => w.add_kv("tokenizer.ggml.model", "none"),
        TokenizerKind::Bpe => {
            let v = crate::tokenizer::synthetic_bpe_vocab(spec.n_vocab as usize).map_err(|e| {
                SynthError::Invalid {
                    field: "n_vocab",
                    value: spec.n_vocab.to_string(),
                    expected: e,
                }
            })?;
            w.add_kv("tokenizer.ggml.model", "gpt2");
            w.add_kv("tokenizer.ggml.pre", spec.pre_tokenizer.as_str());
            w.add_kv(
                "tokenizer.ggml.tokens",
                crate::gguf::string_array(&v.tokens),
            );
            w.add_kv(
                "tokenizer.ggml.token_type",
                crate::gguf::i32_array(&v.token_types),
            );
            w.add_kv(
                "tokenizer.ggml.merges",
                crate::gguf::string_array(&v.merges),
            );
            if let Some(b) = v.bos {
                w.add_kv("tokenizer.ggml.bos_token_id", Value::U32(b));
            }
            if let Some(e) = v.eos {
                w.add_kv("tokenizer.ggml.eos_token_id", Value::U32(e));
            }
            w.add_kv("tokenizer.ggml.add_bos_token", Value::Bool(v.add_bos));
        }
    }

    // Token embedding [n_embd, n_vocab].
    let emb_ty = match spec.embedding_type {
        EmbeddingType::F32 => GgmlType::F32,
        EmbeddingType::F16 => GgmlType::F16,
        EmbeddingType::Q6K => GgmlType::Q6_K,
    };
    let (std, n_vocab, subnormals) = (spec.embedding_std, spec.n_vocab, spec.f16_subnormals);
    w.add_tensor_lazy(
        "token_embd.weight",
        &[e as u64, n_vocab as u64],
        emb_ty,
        Box::new(move || {
            // Straight to bytes: the largest tensor, so no f32 copy of it is held.
            let mut rng = Rng::for_tensor(seed, "token_embd.weight");
            let n = e as usize * n_vocab as usize;
            if emb_ty == GgmlType::Q6_K {
                let v: Vec<f32> = (0..n).map(|_| rng.normal() * std).collect();
                return crate::quant::quantize(emb_ty, &v).expect("n_embd is a multiple of 256");
            }
            let mut out = Vec::with_capacity(n * emb_ty.type_size());
            for i in 0..n {
                let mut v = rng.normal() * std;
                if subnormals && i % 37 == 5 {
                    // An F16 subnormal: mantissa 1..=1023, exponent 0, either sign.
                    let m = 1 + (rng.next_u64() % 1023) as u16;
                    let sign = if rng.next_u64() >> 63 == 0 { 0 } else { 0x8000 };
                    v = f16_to_f32(sign | m);
                }
                match emb_ty {
                    GgmlType::F16 => out.extend_from_slice(&f32_to_f16(v).to_le_bytes()),
                    _ => out.extend_from_slice(&v.to_le_bytes()),
                }
            }
            out
        }),
    );
    let out_magnitude = LOGIT_STD / (std * (e as f32).sqrt());
    w.add_tensor_lazy(
        "output_norm.weight",
        &[e as u64],
        GgmlType::F32,
        Box::new(move || signed_norm_tensor(seed, "output_norm.weight", e, out_magnitude)),
    );

    let p = 2.0f32 / 3.0;
    let in_scale = |n_in: u32| f16_round(1.0 / (p * n_in as f32).sqrt());
    let out_scale = |n_in: u32, factor: f32| f16_round(factor / (p * n_in as f32).sqrt());
    let rs = spec.residual_scale();
    for l in 0..spec.n_layer {
        let attn_factor = if l == 0 { spec.first_attn_scale } else { rs };
        let name = |t: &str| format!("blk.{l}.{t}");
        for (t, n) in [
            ("attn_norm", e),
            ("attn_sub_norm", e),
            ("ffn_norm", e),
            ("ffn_sub_norm", f),
        ] {
            let tn = name(&format!("{t}.weight"));
            let key = tn.clone();
            w.add_tensor_lazy(
                &tn,
                &[n as u64],
                GgmlType::F32,
                Box::new(move || norm_tensor(seed, &key, n)),
            );
        }
        // With `distinct_scales` each projection's scale is moved by its own factor (f16-exact
        // products of f16 scales stay close to the balanced ones the module docs derive).
        let d = |k: f32| if spec.distinct_scales { k } else { 1.0 };
        let projections = [
            ("attn_q", e, e, f16_round(in_scale(e) * d(1.25))),
            ("attn_k", e, kv, f16_round(in_scale(e) * d(0.75))),
            ("attn_v", e, kv, f16_round(in_scale(e) * d(1.5))),
            ("attn_output", e, e, out_scale(e, attn_factor)),
            ("ffn_gate", e, f, f16_round(in_scale(e) * d(0.875))),
            ("ffn_up", e, f, f16_round(in_scale(e) * d(1.125))),
            ("ffn_down", f, e, out_scale(f, rs)),
        ];
        for (t, n_in, n_out, scale) in projections {
            let tn = name(&format!("{t}.weight"));
            let (key, spec_c) = (tn.clone(), s.clone());
            w.add_tensor_lazy(
                &tn,
                &[n_in as u64, n_out as u64],
                spec.ternary_type.ggml(),
                Box::new(move || ternary_tensor(seed, &key, n_in, n_out, scale, &spec_c)),
            );
            if spec.scale_tensors {
                w.add_tensor(
                    &name(&format!("{t}.scale")),
                    &[1],
                    GgmlType::F32,
                    scale.to_le_bytes().to_vec(),
                );
            }
        }
    }
    Ok(w)
}

#[cfg(test)]
mod tests;
