//! GGUF round trips against an independent implementation: llama.cpp's `gguf` Python package.
//! Both directions: files we write are read by `gguf.GGUFReader` with equal metadata and values;
//! files `gguf.GGUFWriter` writes are read by us with values equal to gguf-py's dequantization,
//! and our quantizers produce gguf-py's bytes.

mod common;

use bitnet_engine::gguf::{
    i32_array, string_array, value_type, Array, GgmlType, GgufFile, GgufWriter, Value,
};
use bitnet_engine::npy::read_npy;
use bitnet_engine::quant::{dequantize, quantize};

fn sample_values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as f32 * 0.731 + seed as f32).sin() * 1.7).round() * 0.25 + (i % 7) as f32 * 0.01
        })
        .collect()
}

#[test]
fn gguf_py_reads_what_we_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.gguf");
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", "bitnet");
    w.add_kv("t.u8", Value::U8(200));
    w.add_kv("t.i8", Value::I8(-100));
    w.add_kv("t.u16", Value::U16(60000));
    w.add_kv("t.i16", Value::I16(-30000));
    w.add_kv("t.u32", Value::U32(4_000_000_000));
    w.add_kv("t.i32", Value::I32(-2_000_000_000));
    w.add_kv("t.u64", Value::U64(1 << 60));
    w.add_kv("t.i64", Value::I64(-(1 << 60)));
    w.add_kv("t.f32", Value::F32(0.1));
    w.add_kv("t.f64", Value::F64(-0.3));
    w.add_kv("t.bool", Value::Bool(false));
    w.add_kv("t.str", "ünïcode");
    w.add_kv("t.strs", string_array(&["a", "", "ß c"]));
    w.add_kv("t.ints", i32_array(&[1, -2, 3]));
    w.add_kv(
        "t.nested",
        Value::Array(Array::new(
            value_type::ARRAY,
            vec![i32_array(&[4, 5]), i32_array(&[6])],
        )),
    );
    let types = [
        (GgmlType::F32, vec![8u64, 3]),
        (GgmlType::F16, vec![64, 2]),
        (GgmlType::BF16, vec![32, 3]),
        (GgmlType::Q8_0, vec![64, 3]),
        (GgmlType::Q6_K, vec![512, 3]),
        (GgmlType::TQ1_0, vec![256, 2]),
        (GgmlType::TQ2_0, vec![512, 3]),
    ];
    let mut expected = Vec::new();
    for (i, (ty, dims)) in types.iter().enumerate() {
        let n = dims.iter().product::<u64>() as usize;
        let bytes = quantize(*ty, &sample_values(n, i as u32)).unwrap();
        expected.push((
            format!("w.{}", ty.name().to_lowercase()),
            dequantize(*ty, &bytes, n).unwrap(),
        ));
        w.add_tensor(&expected[i].0, dims, *ty, bytes);
    }
    w.write(&path).unwrap();

    let out = dir.path().join("read");
    common::run_py(
        "gguf_oracle.py",
        &["read", path.to_str().unwrap(), out.to_str().unwrap()],
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metadata.json")).unwrap()).unwrap();
    let meta = &j["metadata"];
    let ours = GgufFile::open(&path).unwrap();
    for (key, value) in ours.metadata() {
        let theirs = &meta[key];
        assert!(!theirs.is_null(), "gguf-py lacks key `{key}`");
        let want_type = match value {
            Value::Array(_) => "array",
            v => v.type_name(),
        };
        let their_type = theirs["type"].as_str().unwrap().to_lowercase();
        match value {
            Value::Array(a) if a.elem_type == value_type::ARRAY => {
                assert_eq!(their_type, "nested", "{key}");
                continue;
            }
            Value::Array(a) => {
                assert_eq!(their_type, "array", "{key}");
                let vals = theirs["values"].as_array().unwrap();
                assert_eq!(vals.len(), a.values.len(), "{key}");
                for (x, y) in a.values.iter().zip(vals) {
                    match x {
                        Value::String(s) => assert_eq!(y.as_str(), Some(s.as_str()), "{key}"),
                        v => assert_eq!(y.as_i64(), v.as_i64(), "{key}"),
                    }
                }
            }
            Value::String(s) => assert_eq!(theirs["value"].as_str(), Some(s.as_str()), "{key}"),
            Value::F32(f) => assert_eq!(theirs["value"].as_f64(), Some(*f as f64), "{key}"),
            Value::F64(f) => assert_eq!(theirs["value"].as_f64(), Some(*f), "{key}"),
            Value::Bool(b) => assert_eq!(theirs["value"].as_bool(), Some(*b), "{key}"),
            v => {
                let t = &theirs["value"];
                let same =
                    t.as_i64() == v.as_i64() && (t.as_u64() == v.as_u64() || v.as_u64().is_none());
                assert!(same, "{key}: ours {v:?}, gguf-py {t}");
            }
        }
        // gguf-py names the types UINT8, FLOAT32, ...: the same names, upper case.
        assert_eq!(their_type, want_type, "{key}");
    }
    let tensors = j["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), expected.len());
    for (name, values) in &expected {
        let (_, theirs) = read_npy(&out.join(format!("{name}.npy"))).unwrap();
        assert_eq!(
            &theirs, values,
            "{name}: gguf-py's dequantization differs from ours"
        );
        let t = tensors.iter().find(|t| t["name"] == name.as_str()).unwrap();
        let info = ours.tensor(name).unwrap();
        assert_eq!(t["type"], info.ty.name(), "{name}");
        assert_eq!(
            t["offset"].as_u64(),
            Some(ours.data_offset() + info.offset),
            "{name}"
        );
    }
}

#[test]
fn we_read_what_gguf_py_writes_and_quantize_like_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("theirs.gguf");
    let out = dir.path().join("arrays");
    common::run_py(
        "gguf_oracle.py",
        &["write", path.to_str().unwrap(), out.to_str().unwrap()],
    );
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(
        f.get("general.architecture").and_then(Value::as_str),
        Some("bitnet")
    );
    assert_eq!(f.get("test.u32"), Some(&Value::U32(7)));
    assert_eq!(f.get("test.i64"), Some(&Value::I64(-9)));
    assert_eq!(f.get("test.f64"), Some(&Value::F64(0.1)));
    assert_eq!(f.get("test.str").and_then(Value::as_str), Some("héllo"));
    assert_eq!(f.get("test.arr"), Some(&string_array(&["a", "bc"])));
    assert_eq!(f.get("test.bool"), Some(&Value::Bool(true)));
    let names = ["w.f32", "w.f16", "w.bf16", "w.q8_0", "w.tq1_0", "w.tq2_0"];
    assert_eq!(f.tensors().len(), names.len());
    for name in names {
        let t = f.tensor(name).unwrap_or_else(|| panic!("missing {name}"));
        let n = t.n_elements() as usize;
        let ours = dequantize(t.ty, f.tensor_data(t), n).unwrap();
        let (_, theirs) = read_npy(&out.join(format!("{name}.npy"))).unwrap();
        assert_eq!(ours.len(), theirs.len(), "{name}");
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{name}[{i}]: ours {a}, gguf-py {b}"
            );
        }
        let (_, input) = read_npy(&out.join(format!("{name}.in.npy"))).unwrap();
        let their_bytes = std::fs::read(out.join(format!("{name}.bin"))).unwrap();
        assert_eq!(f.tensor_data(t), &their_bytes[..], "{name}: file bytes");
        let our_bytes = quantize(t.ty, &input).unwrap();
        let first_diff = our_bytes.iter().zip(&their_bytes).position(|(a, b)| a != b);
        assert_eq!(
            first_diff, None,
            "{name}: our quantization differs from gguf-py's"
        );
        assert_eq!(our_bytes.len(), their_bytes.len(), "{name}");
    }
}
