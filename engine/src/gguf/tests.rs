use super::*;

fn sample() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", "bitnet");
    w.add_kv("a.u8", Value::U8(7));
    w.add_kv("a.i8", Value::I8(-7));
    w.add_kv("a.u16", Value::U16(65535));
    w.add_kv("a.i16", Value::I16(-300));
    w.add_kv("a.u32", Value::U32(1 << 31));
    w.add_kv("a.i32", Value::I32(-5));
    w.add_kv("a.u64", Value::U64(u64::MAX));
    w.add_kv("a.i64", Value::I64(i64::MIN));
    w.add_kv("a.f32", Value::F32(1.5));
    w.add_kv("a.f64", Value::F64(-2.25));
    w.add_kv("a.bool", true);
    w.add_kv("a.strs", string_array(&["x", "", "ü"]));
    w.add_kv(
        "a.nested",
        Value::Array(Array::new(
            value_type::ARRAY,
            vec![i32_array(&[1, 2]), i32_array(&[])],
        )),
    );
    w.add_tensor(
        "t.f32",
        &[3, 2],
        GgmlType::F32,
        (0..24).map(|i| i as u8).collect(),
    );
    w.add_tensor("t.one", &[1], GgmlType::F32, vec![0, 0, 128, 63]);
    w
}

#[test]
fn write_then_read_round_trips_metadata_and_data() {
    let bytes = sample().to_bytes().unwrap();
    let f = GgufFile::from_bytes(bytes, "sample").unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.data_offset() % 32, 0);
    assert_eq!(f.metadata().len(), 14);
    assert_eq!(f.get("a.u64"), Some(&Value::U64(u64::MAX)));
    assert_eq!(f.get("a.i64").unwrap().as_i64(), Some(i64::MIN));
    assert_eq!(
        f.get("a.strs").unwrap().as_array().unwrap().values[2],
        Value::from("ü")
    );
    let nested = f.get("a.nested").unwrap().as_array().unwrap();
    assert_eq!(nested.values[1], i32_array(&[]));
    let t = f.tensor("t.f32").unwrap();
    assert_eq!((t.dims.clone(), t.offset, t.n_bytes), (vec![3, 2], 0, 24));
    assert_eq!(f.tensor_data(t), &(0..24).collect::<Vec<u8>>()[..]);
    // The second tensor starts at the next multiple of the alignment, as gguf.cpp expects.
    assert_eq!(f.tensor("t.one").unwrap().offset, 32);
    assert_eq!(f.tensor_data(f.tensor("t.one").unwrap()), &[0, 0, 128, 63]);
}

#[test]
fn writer_refuses_bad_tensors() {
    let mut w = GgufWriter::new();
    w.add_tensor("q", &[100], GgmlType::Q8_0, vec![0; 10]);
    assert!(w
        .to_bytes()
        .unwrap_err()
        .to_string()
        .contains("block size 32"));
    let mut w = GgufWriter::new();
    w.add_tensor("a", &[1], GgmlType::F32, vec![0; 4]);
    w.add_tensor("a", &[1], GgmlType::F32, vec![0; 4]);
    assert!(w
        .to_bytes()
        .unwrap_err()
        .to_string()
        .contains("duplicate tensor `a`"));
    let mut w = GgufWriter::new();
    w.add_tensor("a", &[2], GgmlType::F32, vec![0; 4]);
    assert!(w
        .to_bytes()
        .unwrap_err()
        .to_string()
        .contains("needs 8 bytes, got 4"));
}

#[test]
fn custom_alignment_is_honoured() {
    let mut w = sample();
    w.add_kv("general.alignment", Value::U32(64));
    let f = GgufFile::from_bytes(w.to_bytes().unwrap(), "x").unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.tensor("t.one").unwrap().offset, 64);
    assert_eq!(f.data_offset() % 64, 0);
}

#[test]
fn atomic_write_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.gguf");
    sample().write(&p).unwrap();
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.tensors().len(), 2);
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1);
}
