use super::*;
use crate::gguf::GgufFile;

#[test]
fn same_spec_same_bytes_and_seed_matters() {
    let a = build(&preset("tiny").unwrap()).unwrap().to_bytes().unwrap();
    let b = build(&preset("tiny").unwrap()).unwrap().to_bytes().unwrap();
    assert_eq!(blake3::hash(&a), blake3::hash(&b));
    let c = build(&ModelSpec {
        seed: 99,
        ..preset("tiny").unwrap()
    })
    .unwrap()
    .to_bytes()
    .unwrap();
    assert_ne!(blake3::hash(&a), blake3::hash(&c));
}

#[test]
fn holds_exactly_the_tensors_llama_cpp_bitnet_loads() {
    for name in PRESETS.iter().filter(|n| !SLOW_PRESETS.contains(n)) {
        let spec = preset(name).unwrap();
        let f = GgufFile::from_bytes(build(&spec).unwrap().to_bytes().unwrap(), name).unwrap();
        let (e, ff, kv) = (
            spec.n_embd as u64,
            spec.n_ff as u64,
            (spec.n_head_kv() * spec.head_dim()) as u64,
        );
        let mut expected: Vec<(String, Vec<u64>)> = vec![
            ("token_embd.weight".into(), vec![e, spec.n_vocab as u64]),
            ("output_norm.weight".into(), vec![e]),
        ];
        for l in 0..spec.n_layer {
            for (t, d) in [
                ("attn_norm.weight", vec![e]),
                ("attn_sub_norm.weight", vec![e]),
                ("ffn_norm.weight", vec![e]),
                ("ffn_sub_norm.weight", vec![ff]),
                ("attn_q.weight", vec![e, e]),
                ("attn_k.weight", vec![e, kv]),
                ("attn_v.weight", vec![e, kv]),
                ("attn_output.weight", vec![e, e]),
                ("ffn_gate.weight", vec![e, ff]),
                ("ffn_up.weight", vec![e, ff]),
                ("ffn_down.weight", vec![ff, e]),
            ] {
                expected.push((format!("blk.{l}.{t}"), d));
            }
            if spec.scale_tensors {
                for t in [
                    "attn_q",
                    "attn_k",
                    "attn_v",
                    "attn_output",
                    "ffn_gate",
                    "ffn_up",
                    "ffn_down",
                ] {
                    expected.push((format!("blk.{l}.{t}.scale"), vec![1]));
                }
            }
        }
        let mut got: Vec<(String, Vec<u64>)> = f
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), t.dims.clone()))
            .collect();
        expected.sort();
        got.sort();
        assert_eq!(got, expected, "{name}");
        let arch = spec.architecture.as_str();
        assert_eq!(
            f.get("general.architecture"),
            Some(&Value::String(arch.into()))
        );
        for key in [
            "context_length",
            "embedding_length",
            "block_count",
            "feed_forward_length",
            "attention.head_count",
            "attention.head_count_kv",
            "rope.dimension_count",
            "vocab_size",
        ] {
            let key = format!("{arch}.{key}");
            assert!(
                f.get(&key).and_then(|v| v.as_u32()).is_some(),
                "{name}: {key}"
            );
        }
        assert_eq!(
            f.get(&format!("{arch}.attention.layer_norm_rms_epsilon")),
            Some(&Value::F32(spec.rms_eps))
        );
    }
}

#[test]
fn scale_tensors_describe_the_same_weights() {
    // With `.scale` tensors the blocks hold pure ternary values; times the scale they equal the
    // folded variant's weights exactly (scales are f16-exact).
    let base = ModelSpec {
        seed: 5,
        ..ModelSpec::default()
    };
    let folded = GgufFile::from_bytes(build(&base).unwrap().to_bytes().unwrap(), "a").unwrap();
    let scaled = ModelSpec {
        scale_tensors: true,
        ..base
    };
    let scaled = GgufFile::from_bytes(build(&scaled).unwrap().to_bytes().unwrap(), "b").unwrap();
    for t in ["blk.1.attn_q", "blk.0.ffn_down"] {
        let a = folded.tensor(&format!("{t}.weight")).unwrap();
        let b = scaled.tensor(&format!("{t}.weight")).unwrap();
        let s = scaled.tensor(&format!("{t}.scale")).unwrap();
        let s = f32::from_le_bytes(scaled.tensor_data(s).try_into().unwrap());
        let n = a.n_elements() as usize;
        let wa = crate::quant::dequantize(a.ty, folded.tensor_data(a), n).unwrap();
        let wb = crate::quant::dequantize(b.ty, scaled.tensor_data(b), n).unwrap();
        assert!(wb.iter().all(|v| [-1.0, 0.0, 1.0].contains(v)));
        assert!(wa.iter().zip(&wb).all(|(x, y)| *x == y * s), "{t}");
    }
}

#[test]
fn invalid_specs_name_the_field() {
    let cases = [
        (
            ModelSpec {
                n_embd: 100,
                ..ModelSpec::default()
            },
            "`n_embd` is 100",
        ),
        (
            ModelSpec {
                n_ff: 300,
                ..ModelSpec::default()
            },
            "`n_ff` is 300",
        ),
        (
            ModelSpec {
                n_head: 3,
                ..ModelSpec::default()
            },
            "`n_head` is 3",
        ),
        (
            ModelSpec {
                n_head_kv: Some(3),
                ..ModelSpec::default()
            },
            "`n_head_kv` is 3",
        ),
        (
            ModelSpec {
                n_layer: 0,
                ..ModelSpec::default()
            },
            "`n_layer` is 0",
        ),
        (
            ModelSpec {
                rms_eps: -1.0,
                ..ModelSpec::default()
            },
            "`rms_eps` is -1",
        ),
        (
            // 64 layers of seven 16384×16384 ternary matrices: by hand, 484,442,112 bytes of TQ2_0 per layer
            // (66 bytes per 256 weights) and a 32 MiB embedding: 31,037,849,600 bytes.
            ModelSpec {
                n_embd: 16384,
                n_ff: 16384,
                n_layer: 64,
                ..ModelSpec::default()
            },
            "a model of at most 8 GiB: this spec's weights take 28.9 GiB",
        ),
        (
            ModelSpec {
                embedding_type: EmbeddingType::F16,
                embedding_std: 1e6,
                ..ModelSpec::default()
            },
            "`embedding_std` is 1000000: at most 10000 with F16 embeddings",
        ),
    ];
    for (spec, msg) in cases {
        let e = spec.validate().unwrap_err().to_string();
        assert!(e.contains(msg), "{e}");
    }
    // Every preset, the slow ones too, is within the bounds.
    for name in PRESETS {
        preset(name).unwrap().validate().unwrap();
    }
}

#[test]
fn spec_yaml_refuses_unknown_fields_and_fills_defaults() {
    let s: ModelSpec = serde_json::from_str(r#"{"n_layer": 4, "ternary_type": "TQ1_0"}"#).unwrap();
    assert_eq!(
        (s.n_layer, s.n_embd, s.ternary_type),
        (4, 256, TernaryType::Tq1_0)
    );
    assert!(serde_json::from_str::<ModelSpec>(r#"{"n_layers": 4}"#).is_err());
}

#[test]
fn scales_follow_the_documented_formulas() {
    // tiny: n_embd 256, n_ff 512, 2 layers: residual_scale 0.05/sqrt(4) = 0.025.
    let spec = preset("tiny").unwrap();
    assert_eq!(spec.residual_scale(), 0.025);
    let f = GgufFile::from_bytes(build(&spec).unwrap().to_bytes().unwrap(), "tiny").unwrap();
    let magnitude = |name: &str| {
        let t = f.tensor(name).unwrap();
        let w = crate::quant::dequantize(t.ty, f.tensor_data(t), t.n_elements() as usize).unwrap();
        let nz: Vec<f32> = w.iter().map(|v| v.abs()).filter(|v| *v != 0.0).collect();
        // A third of the weights are zero, the rest ± one per-tensor magnitude.
        let zeros = w.len() - nz.len();
        assert!(
            (zeros as f64 / w.len() as f64 - 1.0 / 3.0).abs() < 0.02,
            "{name}"
        );
        assert!(nz.iter().all(|v| *v == nz[0]), "{name}");
        nz[0]
    };
    let f16 = |v: f64| half::f16::from_f64(v).to_f32();
    let (n_in, n_ff) = (256f64 * 2.0 / 3.0, 512f64 * 2.0 / 3.0);
    assert_eq!(magnitude("blk.0.attn_q.weight"), f16(1.0 / n_in.sqrt()));
    assert_eq!(magnitude("blk.1.ffn_up.weight"), f16(1.0 / n_in.sqrt()));
    // first_attn_scale 2 on layer 0's attention output.
    assert_eq!(
        magnitude("blk.0.attn_output.weight"),
        f16(2.0 / n_in.sqrt())
    );
    assert_eq!(
        magnitude("blk.1.attn_output.weight"),
        f16(0.025 / n_in.sqrt())
    );
    assert_eq!(magnitude("blk.0.ffn_down.weight"), f16(0.025 / n_ff.sqrt()));

    // output_norm: magnitude 3/sqrt(256) times [0.8, 1.2], random signs.
    let t = f.tensor("output_norm.weight").unwrap();
    let w: Vec<f32> = f
        .tensor_data(t)
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let m = 3.0 / 16.0;
    assert!(w.iter().all(|v| (0.8 * m..=1.2 * m).contains(&v.abs())));
    let neg = w.iter().filter(|v| **v < 0.0).count();
    assert!((100..156).contains(&neg), "{neg} of 256 negative");
    // The other norms: positive, in [0.8, 1.2].
    let t = f.tensor("blk.0.ffn_sub_norm.weight").unwrap();
    assert!(f
        .tensor_data(t)
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .all(|v| (0.8..=1.2).contains(&v)));
}
