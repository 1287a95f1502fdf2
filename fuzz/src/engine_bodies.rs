//! What the engine's fuzz targets run, one function per target, on the fuzzer's bytes.
//!
//! Each returns `Err(message)` for input the engine refuses, which is fine: only a panic, an
//! abort or a hang is a finding. The same functions replay the seed corpora in
//! `engine/tests/fuzz_corpus.rs` (which includes this file by path), so every seed is checked,
//! with its expected error, on each `cargo test`.

use std::path::Path;

use bitnet_engine::forward::{self, Tracer};
use bitnet_engine::gguf::{string_array, GgufFile, GgufWriter};
use bitnet_engine::kernels::Kernel;
use bitnet_engine::model::Model;
use bitnet_engine::trace::{PointFilter, TracePoint};
use bitnet_engine::{arch, npy, quant, tokenizer, trace};

/// GGUF bytes: parse them, read every tensor's data, map the file to its architecture (the gate
/// mapper), load it as a model and, when it loads, run what `harness trace` runs.
pub fn gguf_reader(data: &[u8]) -> Result<(), String> {
    let model = load_gguf(read_gguf(data)?)?;
    trace_model(&model)
}

/// The reader's part of [`gguf_reader`]: parse, read and dequantize every tensor, run the gate
/// mapper (whose findings are data, never a panic).
pub fn read_gguf(data: &[u8]) -> Result<GgufFile, String> {
    let file = GgufFile::from_bytes(data.to_vec(), "fuzz.gguf").map_err(|e| e.to_string())?;
    for t in file.tensors() {
        let bytes = file.tensor_data(t);
        assert_eq!(bytes.len() as u64, t.n_bytes, "tensor `{}`", t.name);
        if t.n_elements() < 1 << 20 {
            let _ = quant::dequantize(t.ty, bytes, t.n_elements() as usize);
        }
    }
    for finding in arch::check(&file) {
        assert!(!finding.code.is_empty() && !finding.message.is_empty());
    }
    Ok(file)
}

/// The loader's part of [`gguf_reader`]: `Model::from_file`.
pub fn load_gguf(file: GgufFile) -> Result<Model, String> {
    Model::from_file(file).map_err(|e| e.to_string())
}

/// `harness trace` on a loaded model, in process: a prompt through the model's vocabulary (token
/// ids 1, 2, 3 without one), a prefill and two greedy steps with every trace point and its values
/// written, then the trace directory read back as the harness reads a reference's.
pub fn trace_model(model: &Model) -> Result<(), String> {
    let tokens = match &model.tokenizer {
        Some(t) => t.encode("Hello world, it's 42", true),
        None => vec![1, 2, 3],
    };
    if tokens.is_empty() {
        return Err("the prompt gives no tokens".into());
    }
    let dir = tempfile::tempdir().expect("a scratch directory");
    let mut tracer = Tracer::new(PointFilter::all(), dir.path(), true).expect("a trace directory");
    let out = forward::run(
        model,
        &tokens,
        3,
        None,
        2,
        Kernel::best(),
        Some(&mut tracer),
    )?;
    let n_vocab = model.config.n_vocab;
    assert_eq!(out.logits.len(), tokens.len() * n_vocab, "prefill logits");
    assert!(out.generated.iter().all(|&t| (t as usize) < n_vocab.max(1)));
    let path = tracer.finish().map_err(|e| e.to_string())?;
    read_trace_dir(&path, dir.path())
}

/// Read `trace.jsonl` and every value file it names, as the harness reads a trace directory;
/// a path of the scratch directory in a message is shown as `TRACE_DIR`.
fn read_trace_dir(trace_file: &Path, dir: &Path) -> Result<(), String> {
    let shown = dir.display().to_string();
    let hide = |e: String| e.replace(&shown, "TRACE_DIR");
    let records = trace::read_trace(trace_file).map_err(hide)?;
    for r in &records {
        let _ = TracePoint::parse(&r.name);
        if let Some(f) = &r.file {
            let (shape, values) = npy::read_npy(&dir.join(f)).map_err(|e| hide(e.to_string()))?;
            if shape != r.shape || values.len() != r.count {
                return Err(format!(
                    "`{f}` holds shape {shape:?}, its record says {:?} ({} values)",
                    r.shape, r.count
                ));
            }
        }
    }
    Ok(())
}

/// `.npy` bytes: parsed as the harness parses a reference's value files; what parses holds as
/// many values as its shape says and survives a write and a second read unchanged.
pub fn npy_reader(data: &[u8]) -> Result<(), String> {
    let (shape, values) = npy::parse_npy(data)?;
    assert_eq!(shape.iter().product::<usize>(), values.len(), "{shape:?}");
    // A header of more than 64 KiB (thousands of dimensions) has no version 1.0 form.
    if shape.len() <= 64 {
        let (shape2, values2) =
            npy::parse_npy(&npy::to_npy_bytes(&shape, &values)).expect("what we write parses");
        assert_eq!(shape2, shape);
        assert!(values2
            .iter()
            .zip(&values)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
    Ok(())
}

/// `trace.jsonl` bytes, in a trace directory that also holds `ok.npy` (a 1 × 4 array) and
/// `zero.npy`, a link to `/dev/zero` (what a hostile reference could leave): the records are
/// read, and every value file a record names.
pub fn trace_reader(data: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let d = dir.path();
    npy::write_npy(&d.join("ok.npy"), &[1, 4], &[1.0, -2.0, 0.5, 0.0]).expect("ok.npy");
    #[cfg(unix)]
    std::os::unix::fs::symlink("/dev/zero", d.join("zero.npy")).expect("zero.npy");
    let path = d.join("trace.jsonl");
    std::fs::write(&path, data).expect("trace.jsonl");
    read_trace_dir(&path, d)
}

/// A vocabulary and a text, as lines:
///
/// ```text
/// line 1: the pre-tokenizer (`tokenizer.ggml.pre`: gpt-2, llama-bpe, ...)
/// line 2: the tokens, separated by tabs; a first token `+bytes` stands for the 256 byte tokens
/// line 3: the merges (`left right`), separated by tabs
/// rest:   the text to encode
/// ```
///
/// The vocabulary goes through a GGUF file and `Tokenizer::from_gguf` (which refuses, say, a
/// repeated token string, as llama.cpp does), then the text is encoded and decoded: every id is
/// in the vocabulary, and with every byte token present the text (encoded without special
/// tokens) comes back unchanged.
pub fn tokenizer(data: &[u8]) -> Result<(), String> {
    let input = String::from_utf8_lossy(data);
    let mut lines = input.splitn(4, '\n');
    let pre = lines.next().unwrap_or("");
    let token_line = lines.next().unwrap_or("");
    let merge_line = lines.next().unwrap_or("");
    let text = lines.next().unwrap_or("");
    let split = |l: &str| -> Vec<String> {
        l.split('\t')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    };
    let mut tokens = split(token_line);
    let all_bytes = tokens.first().is_some_and(|t| t == "+bytes");
    if all_bytes {
        tokens.splice(0..1, tokenizer::byte_chars().iter().map(|c| c.to_string()));
    }
    let mut w = GgufWriter::new();
    w.add_kv("tokenizer.ggml.model", "gpt2");
    w.add_kv("tokenizer.ggml.pre", pre);
    w.add_kv("tokenizer.ggml.tokens", string_array(&tokens));
    w.add_kv("tokenizer.ggml.merges", string_array(&split(merge_line)));
    let bytes = w.to_bytes().map_err(|e| e.to_string())?;
    let file = GgufFile::from_bytes(bytes, "fuzz.gguf").map_err(|e| e.to_string())?;
    let t = tokenizer::Tokenizer::from_gguf(&file)
        .map_err(|e| e.to_string())?
        .expect("a gpt2 vocabulary");
    let ids = t.encode(text, true);
    assert!(ids.iter().all(|&i| (i as usize) < t.len()), "{ids:?}");
    // The round trip without the BOS a vocabulary may add (llama.cpp's default id 11 is a byte
    // token here, which decodes as its byte). It holds when every merge's result is a token: a
    // symbol the vocabulary lacks loses its non-ASCII bytes, as in llama.cpp.
    let ids = t.encode(text, false);
    let back = t.decode(&ids);
    let merges_closed = split(merge_line).iter().all(|m| {
        let (l, r) = tokenizer::merge_pair(m);
        tokens.contains(&format!("{l}{r}"))
    });
    if all_bytes && merges_closed {
        assert_eq!(back, text, "{ids:?}");
    }
    Ok(())
}
