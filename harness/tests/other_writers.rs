//! Files as other writers make them, each held to what llama.cpp does with it: where llama.cpp
//! loads the file, the engine runs it and matches llama.cpp's trace bit for bit; where llama.cpp
//! refuses it, the engine refuses it too, naming the key or tensor. Each file is the `tiny`
//! preset with one change; llama.cpp runs in `harness ref-trace`, a child process.

use std::path::Path;
use std::process::Command;

use bitnet_engine::gguf::{GgmlType, GgufWriter, Value};
use bitnet_engine::synth::{build, preset};

fn harness(args: &[&str], path: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `harness diff --exact R E`: whether E equals R bit for bit, and the report.
fn diff_exact(r: &Path, e: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["diff", "--exact"])
        .args([r, e])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn array(elem_type: u32, values: Vec<Value>) -> Value {
    Value::Array(bitnet_engine::gguf::Array { elem_type, values })
}

#[test]
fn the_engine_loads_what_llama_cpp_loads_and_refuses_what_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let spec = preset("tiny").unwrap();
    let n_layer = spec.n_layer as usize;
    type Change = Box<dyn Fn(&mut GgufWriter)>;
    // (what, change, whether llama.cpp loads it, what the engine's refusal names).
    let cases: Vec<(&str, Change, bool, &str)> = vec![
        (
            "context_length as a uint64",
            Box::new(|w| w.add_kv("bitnet.context_length", Value::U64(512))),
            false,
            "`bitnet.context_length` is uint64 512, expected a uint32",
        ),
        (
            "context_length absent",
            Box::new(|w| {
                w.remove_kv("bitnet.context_length");
            }),
            false,
            "missing metadata key `bitnet.context_length`",
        ),
        (
            "embedding_length as an int32",
            Box::new(|w| w.add_kv("bitnet.embedding_length", Value::I32(256))),
            false,
            "`bitnet.embedding_length` is int32 256, expected a uint32",
        ),
        (
            "file_type as an int32",
            Box::new(|w| w.add_kv("general.file_type", Value::I32(37))),
            false,
            "`general.file_type` is int32 37, expected a uint32",
        ),
        (
            "name as a uint32",
            Box::new(|w| w.add_kv("general.name", Value::U32(7))),
            false,
            "`general.name` is uint32 7, expected a string",
        ),
        (
            "feed_forward_length per layer (uint32)",
            Box::new(move |w| {
                let n = spec.n_ff;
                w.add_kv(
                    "bitnet.feed_forward_length",
                    array(4, vec![Value::U32(n); n_layer]),
                )
            }),
            true,
            "",
        ),
        (
            "head_count and head_count_kv per layer (int32)",
            Box::new(move |w| {
                let h = spec.n_head as i32;
                let kv = spec.n_head_kv.unwrap_or(spec.n_head) as i32;
                w.add_kv(
                    "bitnet.attention.head_count",
                    array(5, vec![Value::I32(h); n_layer]),
                );
                w.add_kv(
                    "bitnet.attention.head_count_kv",
                    array(5, vec![Value::I32(kv); n_layer]),
                )
            }),
            true,
            "",
        ),
        (
            "one projection kept in F16 in a mostly-TQ2_0 file",
            Box::new(move |w| {
                let n = spec.n_embd as usize;
                w.add_kv("general.file_type", Value::U32(37));
                w.remove_tensor("blk.0.attn_q.weight");
                let values: Vec<f32> = (0..n * n).map(|i| ((i * 7) % 3) as f32 - 1.0).collect();
                w.add_tensor(
                    "blk.0.attn_q.weight",
                    &[n as u64, n as u64],
                    GgmlType::F16,
                    bitnet_engine::quant::quantize(GgmlType::F16, &values).unwrap(),
                )
            }),
            true,
            "",
        ),
        (
            "an untied output matrix",
            Box::new(move |w| {
                let n = (spec.n_embd * spec.n_vocab) as usize;
                w.add_tensor(
                    "output.weight",
                    &[u64::from(spec.n_embd), u64::from(spec.n_vocab)],
                    GgmlType::F32,
                    vec![0u8; 4 * n],
                )
            }),
            false,
            "tensor `output.weight`: not a tensor of `bitnet`",
        ),
        (
            "a multi-token-prediction head declared",
            Box::new(|w| w.add_kv("bitnet.nextn_predict_layers", Value::U32(1))),
            false,
            "`bitnet.nextn_predict_layers` is uint32 1, expected 0",
        ),
        (
            // llama.cpp never scales under `none`, whatever the factor.
            "RoPE scaling `none` with a factor of 2",
            Box::new(|w| {
                w.add_kv("bitnet.rope.scaling.type", Value::String("none".into()));
                w.add_kv("bitnet.rope.scaling.factor", Value::F32(2.0))
            }),
            true,
            "",
        ),
        (
            "a tensor of no role",
            Box::new(|w| w.add_tensor("blk.0.extra.weight", &[8], GgmlType::F32, vec![0u8; 32])),
            false,
            "tensor `blk.0.extra.weight`: not a tensor of `bitnet`",
        ),
    ];
    for (what, change, llama_loads, refusal) in cases {
        let path = dir.path().join("m.gguf");
        let mut w = build(&spec).unwrap();
        change(&mut w);
        w.write(&path).unwrap();
        let (e, r) = (dir.path().join("e"), dir.path().join("r"));
        let _ = (std::fs::remove_dir_all(&e), std::fs::remove_dir_all(&r));
        let tokens = ["--tokens", "1,17,300,42", "-o"];
        let (ref_ok, ref_text) = harness(
            &[
                "ref-trace",
                tokens[0],
                tokens[1],
                tokens[2],
                r.to_str().unwrap(),
            ],
            &path,
        );
        assert_eq!(ref_ok, llama_loads, "{what}: llama.cpp: {ref_text}");
        let (eng_ok, eng_text) = harness(
            &[
                "trace",
                tokens[0],
                tokens[1],
                tokens[2],
                e.to_str().unwrap(),
            ],
            &path,
        );
        assert_eq!(eng_ok, llama_loads, "{what}: engine: {eng_text}");
        if llama_loads {
            let (same, report) = diff_exact(&r, &e);
            assert!(same, "{what}: {report}");
        } else {
            assert!(
                eng_text.contains(refusal) && eng_text.contains("m.gguf"),
                "{what}: {eng_text}"
            );
        }
    }
}

/// Files llama.cpp's CPU build aborts on (an assert) are refused before llama.cpp sees them,
/// saying why, where `harness ref-trace` used to die with llama.cpp's backtrace; the engine
/// runs them.
#[test]
fn files_llama_cpp_aborts_on_are_refused_before_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let spec = preset("tiny").unwrap();
    let path = dir.path().join("m.gguf");
    let mut w = build(&spec).unwrap();
    w.remove_tensor("output_norm.weight");
    let ones: Vec<f32> = vec![1.0; spec.n_embd as usize];
    w.add_tensor(
        "output_norm.weight",
        &[u64::from(spec.n_embd)],
        GgmlType::F16,
        bitnet_engine::quant::quantize(GgmlType::F16, &ones).unwrap(),
    );
    w.write(&path).unwrap();
    let r = dir.path().join("r");
    let (ok, text) = harness(
        &["ref-trace", "--tokens", "1,17", "-o", r.to_str().unwrap()],
        &path,
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("llama.cpp aborts on this file: `output_norm.weight` is F16")
            && !text.contains("ggml_abort"),
        "{text}"
    );
    let e = dir.path().join("e");
    let (ok, text) = harness(
        &["trace", "--tokens", "1,17", "-o", e.to_str().unwrap()],
        &path,
    );
    assert!(ok, "{text}");
}

/// Keys llama.cpp honours and the engine does not implement: llama.cpp runs the file and computes
/// something else (RoPE's cosines and sines scaled; attention to later positions), so the engine
/// refuses it naming the key rather than differ from the reference.
#[test]
fn files_llama_cpp_runs_otherwise_are_refused_by_the_engine_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let spec = preset("tiny").unwrap();
    type Change = Box<dyn Fn(&mut GgufWriter)>;
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "RoPE attention factor 0.5",
            Box::new(|w| w.add_kv("bitnet.rope.scaling.attn_factor", Value::F32(0.5))),
            "`bitnet.rope.scaling.attn_factor` is float32 0.5, expected 1",
        ),
        (
            "non-causal attention",
            Box::new(|w| w.add_kv("bitnet.attention.causal", Value::Bool(false))),
            "`bitnet.attention.causal` is bool false, expected true",
        ),
    ];
    for (what, change, refusal) in cases {
        let path = dir.path().join("m.gguf");
        let mut w = build(&spec).unwrap();
        change(&mut w);
        w.write(&path).unwrap();
        let (r, e) = (dir.path().join("r"), dir.path().join("e"));
        let _ = (std::fs::remove_dir_all(&r), std::fs::remove_dir_all(&e));
        let (ok, text) = harness(
            &["ref-trace", "--tokens", "1,17", "-o", r.to_str().unwrap()],
            &path,
        );
        assert!(ok, "{what}: llama.cpp: {text}");
        let (ok, text) = harness(
            &["trace", "--tokens", "1,17", "-o", e.to_str().unwrap()],
            &path,
        );
        assert!(!ok && text.contains(refusal), "{what}: engine: {text}");
    }
}

/// ggml's CPU RoPE never ends on `rope.dimension_count` 0, and writes past each row for an odd
/// head size rotated in part: `ref-trace` refuses both before llama.cpp runs (it used to hang on
/// the first), and the engine refuses the first.
#[test]
fn files_llama_cpp_rope_mishandles_are_refused_before_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let spec = preset("tiny").unwrap();
    let path = dir.path().join("m.gguf");
    type Keys = &'static [(&'static str, u32)];
    let cases: [(&str, Keys, &str); 2] = [
        (
            "no rotated dimension",
            &[("bitnet.rope.dimension_count", 0)],
            "loops without end on `bitnet.rope.dimension_count` 0",
        ),
        (
            // Metadata only: llama.cpp is never reached, so the tensors need not agree.
            "an odd head size rotated in part",
            &[
                ("bitnet.embedding_length", 320),
                ("bitnet.attention.head_count", 64),
                ("bitnet.attention.head_count_kv", 64),
                ("bitnet.rope.dimension_count", 4),
            ],
            "the head size 5 is odd and `bitnet.rope.dimension_count` 4 rotates only part of it",
        ),
    ];
    for (what, keys, refusal) in cases {
        let mut w = build(&spec).unwrap();
        for (k, v) in keys {
            w.add_kv(k, Value::U32(*v));
        }
        w.write(&path).unwrap();
        let r = dir.path().join("r");
        let out = Command::new(env!("CARGO_BIN_EXE_harness"))
            .args(["ref-trace", "--tokens", "1,17", "-o"])
            .arg(&r)
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && text.contains(refusal),
            "{what}: {text}"
        );
    }
    let (ok, text) = harness(&["trace", "--tokens", "1,17", "-o", "/nonexistent/e"], &{
        let mut w = build(&spec).unwrap();
        w.add_kv("bitnet.rope.dimension_count", Value::U32(0));
        w.write(&path).unwrap();
        path.clone()
    });
    assert!(
        !ok && text.contains("`bitnet.rope.dimension_count` is 0, expected an even number from 2"),
        "{text}"
    );
}

/// What `llama-quantize` writes when it quantizes a BitNet model to TQ2_0 or TQ1_0: the
/// projections ternary, and the tied token embedding Q6_K (`llama_tensor_get_type`: the output
/// matrix's type, as `token_embd` is the output). The file comes from llama.cpp's own quantizer
/// (`llama_model_quantize`, the library behind the tool) run on the `tiny` preset written with
/// F32 projections; the engine runs it and matches llama.cpp's trace bit for bit.
#[test]
fn files_llama_quantize_writes_run_bit_for_bit() {
    use bitnet_engine::gguf::GgufFile;
    use llama_cpp_sys_2 as sys;
    let dir = tempfile::tempdir().unwrap();
    let spec = preset("tiny").unwrap();
    let synth = dir.path().join("synth.gguf");
    build(&spec).unwrap().write(&synth).unwrap();
    let file = GgufFile::open(&synth).unwrap();
    let mut w = build(&spec).unwrap();
    for t in file.tensors().iter().filter(|t| t.ty == GgmlType::TQ2_0) {
        let n = t.n_elements() as usize;
        let v = bitnet_engine::quant::dequantize(t.ty, file.tensor_data(t), n).unwrap();
        w.remove_tensor(&t.name);
        w.add_tensor(
            &t.name,
            &t.dims,
            GgmlType::F32,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        );
    }
    let f32_path = dir.path().join("f32.gguf");
    w.write(&f32_path).unwrap();
    for (ftype, ternary) in [
        (sys::LLAMA_FTYPE_MOSTLY_TQ2_0, GgmlType::TQ2_0),
        (sys::LLAMA_FTYPE_MOSTLY_TQ1_0, GgmlType::TQ1_0),
    ] {
        let path = dir.path().join(format!("{ternary}.gguf"));
        let cin = std::ffi::CString::new(f32_path.to_str().unwrap()).unwrap();
        let cout = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: the parameters are llama.cpp's defaults with the file type and thread count
        // set; both paths are NUL-terminated and outlive the call.
        let rc = unsafe {
            sys::llama_backend_init();
            let mut p = sys::llama_model_quantize_default_params();
            p.ftype = ftype;
            p.nthread = 2;
            sys::llama_model_quantize(cin.as_ptr(), cout.as_ptr(), &p)
        };
        assert_eq!(rc, 0, "llama_model_quantize to {ternary} failed");
        let q = GgufFile::open(&path).unwrap();
        assert_eq!(q.tensor("token_embd.weight").unwrap().ty, GgmlType::Q6_K);
        assert_eq!(q.tensor("blk.1.ffn_down.weight").unwrap().ty, ternary);
        let (e, r) = (dir.path().join("e"), dir.path().join("r"));
        let _ = (std::fs::remove_dir_all(&e), std::fs::remove_dir_all(&r));
        for (cmd, out) in [("ref-trace", &r), ("trace", &e)] {
            let (ok, text) = harness(
                &[
                    cmd,
                    "--tokens",
                    "1,17,300,42,511,0,9,250,77",
                    "-o",
                    out.to_str().unwrap(),
                ],
                &path,
            );
            assert!(ok, "{ternary}: {cmd}: {text}");
        }
        let (same, report) = diff_exact(&r, &e);
        assert!(same, "{ternary}: {report}");
    }
}
