//! The GGUF mutations of the campaign: hostile values for any key, semantic changes (a key's
//! value, a tensor's type, shape or offset), and byte damage past the header.

use super::Rng;
use bitnet_engine::gguf::{GgmlType, GgufFile, GgufWriter, Value};

/// Values a hostile or broken file might hold in any key.
fn hostile_value(rng: &mut Rng) -> Value {
    let strings = |a: &[&str]| bitnet_engine::gguf::string_array(a);
    let all = [
        Value::U32(0),
        Value::U32(1),
        Value::U32(2),
        Value::U32(3),
        Value::U32(7),
        Value::U32(1 << 31),
        Value::U32(u32::MAX),
        Value::U64(u64::MAX >> 1),
        Value::U64(1 << 32),
        Value::I32(-1),
        Value::I64(i64::MIN),
        Value::U8(255),
        Value::I16(-1),
        Value::F32(f32::NAN),
        Value::F32(f32::INFINITY),
        Value::F32(f32::NEG_INFINITY),
        Value::F32(0.0),
        Value::F32(-1e-5),
        Value::F32(1e-45),
        Value::F32(3e38),
        Value::F64(f64::NAN),
        Value::Bool(true),
        Value::String(String::new()),
        Value::String("bitnet".into()),
        Value::String("bitnet-b1.58".into()),
        Value::String("gpt2".into()),
        Value::String("llama-bpe".into()),
        Value::String("x".repeat(1000)),
        strings(&[]),
        strings(&["a", "a"]),
        strings(&["a b", "b c", "nospace"]),
        bitnet_engine::gguf::i32_array(&[-1, 3, 1 << 30]),
    ];
    rng.pick(&all).clone()
}

/// A valid file rebuilt with one semantic change (a key, a tensor's shape, type, name or
/// values), through the writer so that the result is well formed where the change allows.
pub(super) fn semantic_mutation(rng: &mut Rng, file: &GgufFile) -> Option<(Vec<u8>, String)> {
    let arch = file
        .get("general.architecture")
        .and_then(Value::as_str)
        .unwrap_or("bitnet")
        .to_string();
    let mut meta: Vec<(String, Value)> = file.metadata().to_vec();
    let mut tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)> = file
        .tensors()
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.dims.clone(),
                t.ty,
                file.tensor_data(t).to_vec(),
            )
        })
        .collect();
    let label;
    let ti = rng.below(tensors.len());
    match rng.below(8) {
        0 | 1 => {
            let keys = [
                "general.architecture",
                "general.alignment",
                "block_count",
                "context_length",
                "embedding_length",
                "feed_forward_length",
                "attention.head_count",
                "attention.head_count_kv",
                "rope.dimension_count",
                "rope.freq_base",
                "attention.layer_norm_rms_epsilon",
                "vocab_size",
                "tokenizer.ggml.model",
                "tokenizer.ggml.pre",
                "tokenizer.ggml.tokens",
                "tokenizer.ggml.merges",
                "tokenizer.ggml.token_type",
                "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.add_bos_token",
            ];
            let k = *rng.pick(&keys);
            let key = if k.starts_with("general.") || k.starts_with("tokenizer.") {
                k.to_string()
            } else {
                format!("{arch}.{k}")
            };
            let v = hostile_value(rng);
            label = format!("set `{key}` = {}", v.display_short());
            meta.retain(|(k, _)| *k != key);
            meta.push((key, v));
        }
        2 => {
            let i = rng.below(meta.len());
            label = format!("remove key `{}`", meta[i].0);
            meta.remove(i);
        }
        3 => {
            label = format!("remove tensor `{}`", tensors[ti].0);
            tensors.remove(ti);
        }
        4 => {
            let t = &mut tensors[ti];
            let old = t.1.clone();
            let d = rng.below(t.1.len());
            match rng.below(6) {
                0 => t.1.reverse(),
                1 => t.1[d] += 1,
                2 => t.1[d] *= 2,
                3 => t.1[d] = 0,
                4 => t.1.push(1),
                _ => {
                    if t.1.len() > 1 {
                        let last = t.1.pop().unwrap();
                        t.1[0] *= last;
                    }
                }
            }
            label = format!("reshape `{}` {old:?} -> {:?}", t.0, t.1);
        }
        5 => {
            let types: Vec<GgmlType> = GgmlType::all().collect();
            let t = &mut tensors[ti];
            let ty = *rng.pick(&types);
            label = format!("retype `{}` {} -> {ty}", t.0, t.2);
            t.2 = ty;
        }
        6 => {
            let t = &mut tensors[ti];
            let new = if rng.percent(50) {
                t.0.replacen("blk.0.", "blk.1.", 1)
            } else {
                format!("{}.extra", t.0)
            };
            label = format!("rename `{}` -> `{new}`", t.0);
            t.0 = new;
        }
        _ => {
            // Poison values: NaN, infinities, huge values or 0xff bytes over a range.
            let t = &mut tensors[ti];
            let n = t.3.len();
            let (a, len) = (rng.below(n), 1 + rng.below(64));
            let fill: [u8; 4] = *rng.pick(&[
                f32::NAN.to_le_bytes(),
                f32::INFINITY.to_le_bytes(),
                3e38f32.to_le_bytes(),
                [0x00, 0x7c, 0x00, 0x7c], // F16 infinities
                [0x00, 0x7e, 0x00, 0x7e], // F16 NaNs
                [0xff; 4],
            ]);
            for (i, b) in t.3[a..(a + len * 4).min(n)].iter_mut().enumerate() {
                *b = fill[i % 4];
            }
            label = format!("poison `{}` bytes {a}.. with {fill:02x?}", t.0);
        }
    }
    // The writer pads every tensor to the alignment: 2^31 would write gigabytes of padding.
    let huge_alignment = meta
        .iter()
        .any(|(k, v)| k == "general.alignment" && v.as_u64().is_some_and(|a| a > 1 << 16));
    if huge_alignment {
        return None;
    }
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.add_kv(&k, v);
    }
    for (name, dims, ty, mut data) in tensors {
        let n: u64 = dims.iter().product();
        let bytes = ty.data_bytes(dims.first().copied().unwrap_or(1), n)?;
        data.resize(usize::try_from(bytes).ok().filter(|&b| b < 64 << 20)?, 0);
        w.add_tensor(&name, &dims, ty, data);
    }
    Some((w.to_bytes().ok()?, label))
}

/// Byte-level damage, mostly in the header (`header` bytes long).
pub(super) fn byte_mutation(rng: &mut Rng, bytes: &mut Vec<u8>, header: usize) -> String {
    if bytes.len() < 16 {
        return "too short to mutate".into();
    }
    let at = |rng: &mut Rng, len: usize, width: usize| {
        let region = if rng.percent(75) { header } else { len };
        rng.below(region.clamp(1, len - width))
    };
    match rng.below(4) {
        0 => {
            let i = at(rng, bytes.len(), 1);
            let x = 1 + rng.below(255) as u8;
            bytes[i] ^= x;
            format!("flip byte {i} ^ {x:#04x}")
        }
        1 => {
            let n = rng.below(bytes.len());
            bytes.truncate(n);
            format!("truncate to {n}")
        }
        2 => {
            let i = at(rng, bytes.len(), 8);
            let random = rng.next();
            let v = *rng.pick(&[
                u64::MAX,
                u64::MAX >> 1,
                1 << 32,
                1 << 31,
                1 << 40,
                0,
                1,
                random,
            ]);
            bytes[i..i + 8].copy_from_slice(&v.to_le_bytes());
            format!("u64 {v} at {i}")
        }
        _ => {
            let i = at(rng, bytes.len(), 4);
            let random = rng.next() as u32;
            let v = *rng.pick(&[
                0u32,
                1,
                u32::MAX,
                0x8000_0000,
                f32::NAN.to_bits(),
                f32::INFINITY.to_bits(),
                (-1.0f32).to_bits(),
                random,
            ]);
            bytes[i..i + 4].copy_from_slice(&v.to_le_bytes());
            format!("u32 {v:#x} at {i}")
        }
    }
}
