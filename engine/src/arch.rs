//! The gate mapper: whether a GGUF file is a model of an architecture this engine runs, checked
//! tensor by tensor and key by key before anything is loaded (`harness inspect --check-arch`).
//!
//! Every tensor must map to a role of its architecture (llama.cpp's `bitnet` and bitnet.cpp's
//! `bitnet-b1.58`, `src/models/bitnet.cpp` `load_arch_tensors`: the token embedding, which is also
//! the tied output, the final norm, and per block four norms and seven projections, each
//! projection with an optional one-element `.scale`), every required tensor must be present with
//! its role's shape and a type the engine reads for it, and the metadata must agree with itself:
//! the hyperparameter keys under the file's own architecture name, the head counts dividing, the
//! vocabulary size, the tokenizer and the embedding agreeing, `general.file_type` naming the
//! projections' type. [`check`] lists every finding, each with a code of its own.

use std::collections::BTreeSet;

use crate::gguf::{GgmlType, GgufFile, Value};
use crate::model::Arch;

/// Types a projection may have: the ternary formats, and F32/F16 for tests and references.
pub const PROJECTION_TYPES: &[GgmlType] = &[
    GgmlType::TQ2_0,
    GgmlType::TQ1_0,
    GgmlType::I2_S,
    GgmlType::F32,
    GgmlType::F16,
];
/// Types the token embedding (the tied output) may have.
/// Q6_K is what `llama-quantize` gives a tied embedding when it quantizes to TQ1_0 or TQ2_0.
pub const EMBEDDING_TYPES: &[GgmlType] = &[GgmlType::F32, GgmlType::F16, GgmlType::Q6_K];
/// Types a norm weight or a projection's `.scale` may have.
pub const VECTOR_TYPES: &[GgmlType] = &[GgmlType::F32, GgmlType::F16, GgmlType::BF16];

/// The four norms of a block, with whether their length is `n_embd` (else `n_ff`).
const NORMS: [(&str, bool); 4] = [
    ("attn_norm", true),
    ("attn_sub_norm", true),
    ("ffn_norm", true),
    ("ffn_sub_norm", false),
];
/// The seven projections of a block.
const PROJECTIONS: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

/// One thing wrong with a file: a code of its own (stable, for scripts and tests), what it is
/// about (a key or a tensor), and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub code: &'static str,
    pub subject: String,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] `{}`: {}", self.code, self.subject, self.message)
    }
}

/// The hyperparameters as the file states them (each `None` when absent or unusable).
#[derive(Default)]
struct Hyper {
    n_embd: Option<u64>,
    n_layer: Option<u64>,
    n_ff: Option<u64>,
    n_head: Option<u64>,
    n_head_kv: Option<u64>,
    n_vocab: Option<u64>,
}

/// Check `file` against its architecture; empty when the file maps completely.
pub fn check(file: &GgufFile) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut find = |code: &'static str, subject: &str, message: String| {
        out.push(Finding {
            code,
            subject: subject.to_string(),
            message,
        })
    };
    let arch_name = match file.get("general.architecture") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            find(
                "architecture-type",
                "general.architecture",
                format!("is a {}, expected a string", v.type_name()),
            );
            return out;
        }
        None => {
            find(
                "architecture-missing",
                "general.architecture",
                "missing: the file names no architecture".into(),
            );
            return out;
        }
    };
    if Arch::from_name(&arch_name).is_none() {
        find(
            "architecture-unknown",
            "general.architecture",
            format!(
                "is `{arch_name}`; this engine runs {}",
                Arch::NAMES
                    .iter()
                    .map(|(n, _)| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        return out;
    }
    let key = |k: &str| format!("{arch_name}.{k}");

    // Keys of another architecture: a converter that wrote the wrong prefix.
    let own = format!("{arch_name}.");
    for (k, _) in file.metadata() {
        let foreign = Arch::NAMES
            .iter()
            .find(|(n, _)| *n != arch_name && k.starts_with(&format!("{n}.")));
        if let (Some((other, _)), false) = (foreign, k.starts_with(&own)) {
            find(
                "key-foreign",
                k,
                format!(
                    "a key of architecture `{other}` in a `{arch_name}` file: its hyperparameters must be under `{own}`"
                ),
            );
        }
    }

    // Hyperparameters.
    let mut h = Hyper::default();
    // As llama.cpp reads them: a uint32 (and, for the per-layer keys, an array of uint32 or
    // int32 with one value per layer, which the engine runs when every layer has the same).
    let int = |k: &str,
               required: bool,
               per_layer: bool,
               find: &mut dyn FnMut(&'static str, &str, String)| {
        let full = key(k);
        let value = match file.get(&full) {
            Some(Value::U32(x)) => u64::from(*x),
            Some(Value::Array(a)) if per_layer && is_per_layer_array(a) => {
                match one_value_per_layer(a) {
                    Ok(v) => v,
                    Err(_) => {
                        find(
                            "key-value",
                            &full,
                            format!(
                                "is {}, expected one non-negative value for every layer (the engine runs one size for all layers)",
                                Value::Array(a.clone()).display_short()
                            ),
                        );
                        return None;
                    }
                }
            }
            Some(v) => {
                find(
                    "key-type",
                    &full,
                    format!(
                        "is {} {}, expected a uint32{}",
                        v.type_name(),
                        v.display_short(),
                        if per_layer {
                            " (or an array of one uint32 or int32 per layer)"
                        } else {
                            ""
                        }
                    ),
                );
                return None;
            }
            None if required => {
                find("key-missing", &full, "missing (a uint32)".into());
                return None;
            }
            None => return None,
        };
        if value == 0 {
            find("key-value", &full, "is 0, expected at least 1".into());
            return None;
        }
        Some(value)
    };
    h.n_embd = int("embedding_length", true, false, &mut find);
    h.n_layer = int("block_count", true, false, &mut find);
    h.n_ff = int("feed_forward_length", true, true, &mut find);
    h.n_head = int("attention.head_count", true, true, &mut find);
    h.n_head_kv = int("attention.head_count_kv", false, true, &mut find).or(h.n_head);
    let n_rot = int("rope.dimension_count", false, false, &mut find);
    int("context_length", true, false, &mut find);
    for (k, required) in [
        ("attention.layer_norm_rms_epsilon", true),
        ("rope.freq_base", false),
    ] {
        let full = key(k);
        match file.get(&full) {
            Some(v) => match v.as_f32() {
                Some(x) if x.is_finite() && x > 0.0 => {}
                Some(x) => find(
                    "key-value",
                    &full,
                    format!("is {x}, expected a finite positive number"),
                ),
                None => find(
                    "key-type",
                    &full,
                    format!(
                        "is {} {}, expected a float32",
                        v.type_name(),
                        v.display_short()
                    ),
                ),
            },
            None if required => find("key-missing", &full, "missing (a float)".into()),
            None => {}
        }
    }
    let head_dim = match (h.n_embd, h.n_head) {
        (Some(e), Some(n)) if e % n == 0 => Some(e / n),
        (Some(e), Some(n)) => {
            find(
                "key-inconsistent",
                &key("attention.head_count"),
                format!("{n} heads do not divide the embedding length {e}"),
            );
            None
        }
        _ => None,
    };
    if let (Some(n), Some(kv)) = (h.n_head, h.n_head_kv) {
        if n % kv != 0 {
            find(
                "key-inconsistent",
                &key("attention.head_count_kv"),
                format!("{kv} key/value heads do not divide the {n} query heads"),
            );
            h.n_head_kv = None;
        }
    }
    if let (Some(r), Some(hd)) = (n_rot, head_dim) {
        if r > hd || r % 2 != 0 {
            find(
                "key-inconsistent",
                &key("rope.dimension_count"),
                format!("is {r}, expected an even number up to the head size {hd}"),
            );
        }
    }

    // The vocabulary: the size key, the tokenizer's tokens and the embedding's rows agree.
    let tokens = file
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .map(|a| a.values.len() as u64);
    let emb_rows = file
        .tensor("token_embd.weight")
        .and_then(|t| (t.dims.len() == 2).then(|| t.dims[1]));
    h.n_vocab = match file.get(&key("vocab_size")) {
        Some(v) => match v.as_u64() {
            Some(x) => Some(x),
            None => {
                find(
                    "key-type",
                    &key("vocab_size"),
                    format!("is {}, expected an integer", v.type_name()),
                );
                None
            }
        },
        None => tokens.or(emb_rows),
    };
    if let (Some(v), Some(t)) = (h.n_vocab, tokens) {
        if v != t {
            find(
                "vocab-inconsistent",
                "tokenizer.ggml.tokens",
                format!("holds {t} tokens, the vocabulary size is {v}"),
            );
        }
    }

    // Tensors: each maps to a role, and each role is filled once with the right shape and type.
    let n_layer = h.n_layer.unwrap_or(0);
    let kv_width = match (h.n_head_kv, head_dim) {
        (Some(kv), Some(hd)) => Some(kv * hd),
        _ => None,
    };
    let mut seen = BTreeSet::new();
    for t in file.tensors() {
        let name = t.name.as_str();
        let Some(role) = role_of(name) else {
            find(
                "tensor-unknown",
                name,
                format!(
                    "maps to no role of `{arch_name}`{}",
                    match name {
                        "output.weight" =>
                            ": the output is tied to `token_embd.weight`; a separate output matrix would be ignored",
                        n if n.ends_with(".bias") => ": the architecture has no biases",
                        n if n.contains("attn_qkv") => ": q, k and v are separate projections (`attn_q`, `attn_k`, `attn_v`)",
                        _ => "",
                    }
                ),
            );
            continue;
        };
        if let Some(l) = role.layer {
            if h.n_layer.is_some() && l >= n_layer {
                find(
                    "tensor-layer",
                    name,
                    format!(
                        "belongs to block {l}, but the file has {n_layer} blocks (`{}`)",
                        key("block_count")
                    ),
                );
                continue;
            }
        }
        seen.insert(name.to_string());
        let (want_dims, types): (Option<Vec<u64>>, &[GgmlType]) = match role.kind {
            Kind::Embedding => (
                h.n_embd.zip(h.n_vocab).map(|(e, v)| vec![e, v]),
                EMBEDDING_TYPES,
            ),
            Kind::Norm { embd } => (
                if embd { h.n_embd } else { h.n_ff }.map(|n| vec![n]),
                VECTOR_TYPES,
            ),
            Kind::Projection(p) => (
                projection_dims(p, h.n_embd, h.n_ff, kv_width),
                PROJECTION_TYPES,
            ),
            Kind::Scale => (Some(vec![1]), VECTOR_TYPES),
        };
        if let Some(want) = want_dims {
            let one_element_scale =
                matches!(role.kind, Kind::Scale) && t.dims.iter().product::<u64>() == 1;
            if t.dims != want && !one_element_scale {
                find(
                    "tensor-shape",
                    name,
                    format!("shape {:?}, expected {want:?}", t.dims),
                );
            }
        }
        if !types.contains(&t.ty) {
            find(
                "tensor-type",
                name,
                format!(
                    "type {} is not one the engine reads for it (expected one of {})",
                    t.ty.name(),
                    types
                        .iter()
                        .map(|t| t.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
    let mut required = vec![
        "token_embd.weight".to_string(),
        "output_norm.weight".to_string(),
    ];
    for l in 0..n_layer.min(4096) {
        required.extend(NORMS.iter().map(|(n, _)| format!("blk.{l}.{n}.weight")));
        required.extend(PROJECTIONS.iter().map(|p| format!("blk.{l}.{p}.weight")));
    }
    for r in required {
        if !seen.contains(&r) && file.tensor(&r).is_none() {
            find(
                "tensor-missing",
                &r,
                "missing: a required tensor of the architecture".into(),
            );
        }
    }

    // `general.file_type` names the projections' type, as llama.cpp's "mostly" types do: a
    // file may keep some projections in another type (both loaders run those), but one whose
    // projections never have the named type says something about itself that is not so.
    if let Some(ft) = file.get("general.file_type").and_then(Value::as_u64) {
        let named = match ft {
            36 => Some(GgmlType::TQ1_0),
            37 => Some(GgmlType::TQ2_0),
            40 => Some(GgmlType::I2_S),
            _ => None,
        };
        if let Some(want) = named {
            let projections: BTreeSet<&str> = file
                .tensors()
                .iter()
                .filter(|t| matches!(role_of(&t.name).map(|r| r.kind), Some(Kind::Projection(_))))
                .map(|t| t.ty.name())
                .collect();
            if !projections.is_empty() && !projections.contains(want.name()) {
                find(
                    "file-type",
                    "general.file_type",
                    format!(
                        "is {ft} ({}), but no projection is: they are {}",
                        want.name(),
                        projections.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Kind {
    Embedding,
    Norm { embd: bool },
    Projection(&'static str),
    Scale,
}

struct Role {
    layer: Option<u64>,
    kind: Kind,
}

/// The role of a tensor name in the `bitnet` family, or `None`.
/// Whether an array holds the element type of a per-layer hyperparameter: uint32 (GGUF type 4)
/// or int32 (5), as llama.cpp's `get_key_or_arr` takes them.
pub(crate) fn is_per_layer_array(a: &crate::gguf::Array) -> bool {
    [4, 5].contains(&a.elem_type)
}

/// The one value of a per-layer array when every layer has it and it is non-negative; else
/// `Some((layer, first, that layer's))` for non-negative values that differ, `None` for an empty
/// array or a negative value.
pub(crate) fn one_value_per_layer(
    a: &crate::gguf::Array,
) -> Result<u64, Option<(usize, i64, i64)>> {
    let values: Vec<i64> = a.values.iter().filter_map(Value::as_i64).collect();
    match values.first() {
        Some(&v) if v >= 0 && values.iter().all(|&x| x == v) => Ok(v as u64),
        Some(&v) if values.iter().all(|&x| x >= 0) => {
            let k = values.iter().position(|&x| x != v).unwrap_or(0);
            Err(Some((k, v, values[k])))
        }
        _ => Err(None),
    }
}

/// Whether `name` is a tensor of the `bitnet` family (the embedding, the output norm, a layer's
/// norm, projection or projection scale).
pub fn is_known_tensor(name: &str) -> bool {
    role_of(name).is_some()
}

fn role_of(name: &str) -> Option<Role> {
    match name {
        "token_embd.weight" => {
            return Some(Role {
                layer: None,
                kind: Kind::Embedding,
            })
        }
        "output_norm.weight" => {
            return Some(Role {
                layer: None,
                kind: Kind::Norm { embd: true },
            })
        }
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, what) = rest.split_once('.')?;
    if layer.is_empty() || (layer.len() > 1 && layer.starts_with('0')) {
        return None;
    }
    let layer: u64 = layer.parse().ok()?;
    let kind = if let Some(base) = what.strip_suffix(".weight") {
        if let Some(&(_, embd)) = NORMS.iter().find(|(n, _)| *n == base) {
            Kind::Norm { embd }
        } else {
            Kind::Projection(PROJECTIONS.iter().find(|p| **p == base)?)
        }
    } else {
        let base = what.strip_suffix(".scale")?;
        PROJECTIONS.iter().find(|p| **p == base)?;
        Kind::Scale
    };
    Some(Role {
        layer: Some(layer),
        kind,
    })
}

/// A projection's ggml dims `[n_in, n_out]`.
fn projection_dims(
    p: &str,
    n_embd: Option<u64>,
    n_ff: Option<u64>,
    kv: Option<u64>,
) -> Option<Vec<u64>> {
    let (i, o) = match p {
        "attn_q" | "attn_output" => (n_embd?, n_embd?),
        "attn_k" | "attn_v" => (n_embd?, kv?),
        "ffn_gate" | "ffn_up" => (n_embd?, n_ff?),
        "ffn_down" => (n_ff?, n_embd?),
        _ => return None,
    };
    Some(vec![i, o])
}
