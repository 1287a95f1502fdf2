//! llama.cpp in this process, through `llama-cpp-sys-2`: load the model, run the prompt and the
//! greedy decode steps, capture trace points through the eval callback. Only `harness ref-trace`
//! calls this, in a child process (see [`super::run_reference`]): an `abort()` inside C++ then
//! ends that child, not the harness.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::sync::Mutex;

use bitnet_engine::trace::{PointFilter, Stage, TracePoint, TraceRecord, TraceWriter};
use llama_cpp_sys_2 as ll;

use super::mapping::{canonical, NodeOp};
use super::RefRequest;
pub use super::{LlamaTiming, STREAM_LOG_ENV};

/// llama.cpp's log lines of this process, kept for error messages (printed only when streaming).
static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

extern "C" fn log_callback(_level: ll::ggml_log_level, text: *const c_char, _user: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string valid for the duration of the call.
    let s = unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned();
    // In a child started by the harness, stream the log to stderr as it comes, so the lines before
    // an abort() reach the parent (a buffer dies with the process).
    if std::env::var_os(STREAM_LOG_ENV).is_some() {
        use std::io::Write;
        let _ = std::io::stderr().write_all(s.as_bytes());
    }
    if let Ok(mut log) = LOG.lock() {
        if log.len() >= 4096 {
            log.drain(..2048);
        }
        log.push(s);
    }
}

/// The last `n` log lines llama.cpp wrote.
pub fn log_tail(n: usize) -> String {
    let log = LOG.lock().map(|l| l.clone()).unwrap_or_default();
    let text: String = log.concat();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Shapes needed to lay captured tensors out positions-first.
struct Dims {
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
}

/// A captured point: where it is, its positions-first shape, its values.
type Captured = (TracePoint, Vec<usize>, Vec<f32>);

/// State the eval callback fills during one `llama_decode`.
struct Capture {
    filter: PointFilter,
    dims: Dims,
    /// Positions of the current step.
    positions: [u32; 2],
    /// Captured values of the current step, last node wins.
    current: BTreeMap<(u32, u32, Stage), Captured>,
    error: Option<String>,
    /// The batch carries token ids (not embeddings): only then is the token-rows node computed.
    token_input: bool,
}

impl Capture {
    fn point_of(&self, t: &ll::ggml_tensor) -> Option<TracePoint> {
        // SAFETY: `name` is a NUL-terminated array inside the tensor struct.
        let name = unsafe { CStr::from_ptr(t.name.as_ptr()) }.to_str().ok()?;
        let op = match t.op {
            ll::GGML_OP_ROPE => NodeOp::Rope,
            ll::GGML_OP_SOFT_MAX => NodeOp::SoftMax,
            ll::GGML_OP_GET_ROWS if !t.src[0].is_null() && !t.src[1].is_null() => {
                // SAFETY: non-null sources of a graph node are valid tensors.
                let (w, ids) = unsafe {
                    (
                        CStr::from_ptr((*t.src[0]).name.as_ptr()),
                        CStr::from_ptr((*t.src[1]).name.as_ptr()),
                    )
                };
                // The token path's rows (`inp_tokens`), not the mixed-batch branch's, which
                // llama.cpp builds but does not compute for a plain token batch.
                if w.to_bytes() == b"token_embd.weight" && ids.to_bytes() == b"inp_tokens" {
                    NodeOp::TokenRows
                } else {
                    NodeOp::Other
                }
            }
            _ => NodeOp::Other,
        };
        if op == NodeOp::TokenRows && !self.token_input {
            return None;
        }
        let p = canonical(name, op)?;
        (t.type_ == ll::GGML_TYPE_F32 && self.filter.matches(&p.name())).then_some(p)
    }

    /// Lay out `data` (ggml order) positions-first, as engine/src/trace.rs documents.
    fn layout(
        &self,
        p: TracePoint,
        ne: [i64; 4],
        data: Vec<f32>,
    ) -> Result<(Vec<usize>, Vec<f32>), String> {
        let n_pos = (self.positions[1] - self.positions[0]) as usize;
        let d = &self.dims;
        let ne: Vec<usize> = ne.iter().map(|&x| x as usize).collect();
        let (shape, values) = match p.stage {
            Stage::Q => (vec![n_pos, d.n_head, d.head_dim], data),
            Stage::K | Stage::V => (vec![n_pos, d.n_head_kv, d.head_dim], data),
            Stage::AttnProbs => {
                // ggml: [n_kv (padded), n_pos, n_head]; keep the cached positions 0..p1.
                let (n_kv, keep) = (ne[0], self.positions[1] as usize);
                if keep > n_kv || ne[1] != n_pos || ne[2] != d.n_head {
                    return Err(format!(
                        "kq_soft_max has shape {ne:?}, expected [>={keep}, {n_pos}, {}]",
                        d.n_head
                    ));
                }
                let mut out = Vec::with_capacity(n_pos * d.n_head * keep);
                for t in 0..n_pos {
                    for h in 0..d.n_head {
                        let row = (h * n_pos + t) * n_kv;
                        out.extend_from_slice(&data[row..row + keep]);
                    }
                }
                (vec![n_pos, d.n_head, keep], out)
            }
            _ => (vec![n_pos, ne[0]], data),
        };
        if shape.iter().product::<usize>() != values.len() {
            return Err(format!(
                "`{}` holds {} values, expected shape {shape:?}",
                p.name(),
                values.len()
            ));
        }
        Ok((shape, values))
    }
}

extern "C" fn eval_callback(t: *mut ll::ggml_tensor, ask: bool, user: *mut c_void) -> bool {
    // SAFETY: `user` is the `Capture` passed in the context params; it outlives the context and
    // ggml calls this from the thread that called `llama_decode`.
    let cap = unsafe { &mut *(user as *mut Capture) };
    // SAFETY: ggml passes a valid tensor.
    let tensor = unsafe { &*t };
    let Some(point) = cap.point_of(tensor) else {
        return !ask;
    };
    if ask {
        return true;
    }
    // SAFETY: the tensor was just computed; ggml_nbytes reads only its header.
    let nbytes = unsafe { ll::ggml_nbytes(t) };
    let mut data = vec![0f32; nbytes / 4];
    // SAFETY: `data` holds `nbytes` bytes; the tensor's buffer is valid during the callback.
    unsafe { ll::ggml_backend_tensor_get(t, data.as_mut_ptr() as *mut c_void, 0, nbytes) };
    match cap.layout(point, tensor.ne, data) {
        Ok((shape, values)) => {
            cap.current
                .insert(point.order_key(), (point, shape, values));
        }
        Err(e) => cap.error = Some(e),
    }
    true
}

/// Run the request in this process; writes the trace directory.
/// Install the log sink, initialise llama.cpp and load `path` (only its vocabulary when
/// `vocab_only`), on the CPU; the error names the file and carries llama.cpp's last log lines.
fn load_model(path: &Path, vocab_only: bool) -> Result<*mut ll::llama_model, String> {
    // SAFETY: registering a plain function as the log sink (it only touches `LOG`), and
    // idempotent global initialisation.
    unsafe {
        ll::llama_log_set(Some(log_callback), std::ptr::null_mut());
        ll::llama_backend_init();
    }
    let c = CString::new(path.to_string_lossy().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: default parameters, then a NUL-terminated path.
    let model = unsafe {
        let mut mp = ll::llama_model_default_params();
        mp.n_gpu_layers = 0;
        mp.vocab_only = vocab_only;
        ll::llama_model_load_from_file(c.as_ptr(), mp)
    };
    if model.is_null() {
        return Err(format!(
            "llama.cpp could not load `{}`\nllama.cpp log (last lines):\n{}",
            path.display(),
            log_tail(20)
        ));
    }
    Ok(model)
}

/// ggml's type for a KV cache of type `ty`.
pub fn ggml_kv_type(ty: bitnet_engine::attention::KvType) -> ll::ggml_type {
    match ty {
        bitnet_engine::attention::KvType::F32 => ll::GGML_TYPE_F32,
        bitnet_engine::attention::KvType::F16 => ll::GGML_TYPE_F16,
    }
}

pub fn run(req: &RefRequest) -> Result<(), String> {
    let fail = |what: String| format!("{what}\nllama.cpp log (last lines):\n{}", log_tail(20));
    let model = load_model(&req.model, false)?;
    // SAFETY: `model` is non-null and stays alive until freed at the end.
    let (n_head, n_head_kv, n_embd, n_vocab) = unsafe {
        let vocab = ll::llama_model_get_vocab(model);
        (
            ll::llama_model_n_head(model) as usize,
            ll::llama_model_n_head_kv(model) as usize,
            ll::llama_model_n_embd(model) as usize,
            ll::llama_vocab_n_tokens(vocab) as usize,
        )
    };
    let result = run_model(
        req,
        model,
        Dims {
            n_head,
            n_head_kv,
            head_dim: n_embd / n_head.max(1),
        },
        n_vocab,
    );
    // SAFETY: freed once, after the context using it was freed in `run_model`.
    unsafe { ll::llama_model_free(model) };
    result.map_err(fail)
}

fn run_model(
    req: &RefRequest,
    model: *mut ll::llama_model,
    dims: Dims,
    n_vocab: usize,
) -> Result<(), String> {
    let tokens = &req.tokens;
    if tokens.is_empty() {
        return Err("no input tokens".into());
    }
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
        return Err(format!(
            "token id {bad} is outside the vocabulary (n_vocab {n_vocab})"
        ));
    }
    let n = tokens.len();
    let total = n + req.generate;
    let mut cap = Box::new(Capture {
        filter: req.points.clone(),
        dims,
        positions: [0, n as u32],
        current: BTreeMap::new(),
        error: None,
        token_input: !req.nudge_embeddings,
    });
    // SAFETY: default params; the callback's user data is `cap`, boxed so its address is stable
    // and dropped only after the context is freed.
    let ctx = unsafe {
        let mut cp = ll::llama_context_default_params();
        cp.n_ctx = total.next_multiple_of(256) as u32;
        cp.n_batch = n.max(1) as u32;
        cp.n_ubatch = n.max(1) as u32;
        cp.n_seq_max = 1;
        cp.n_threads = req.threads as i32;
        cp.n_threads_batch = req.threads as i32;
        cp.flash_attn_type = ll::LLAMA_FLASH_ATTN_TYPE_DISABLED;
        cp.type_k = ggml_kv_type(req.kv_cache);
        cp.type_v = ggml_kv_type(req.kv_cache);
        cp.cb_eval = Some(eval_callback);
        cp.cb_eval_user_data = &mut *cap as *mut Capture as *mut c_void;
        cp.no_perf = true;
        ll::llama_init_from_model(model, cp)
    };
    if ctx.is_null() {
        return Err("llama.cpp could not create a context".into());
    }
    let result = decode_all(req, ctx, &mut *cap as *mut Capture, n_vocab);
    // SAFETY: the context is freed once; `cap` is still alive here.
    unsafe { ll::llama_free(ctx) };
    result
}

/// Decode `tokens` (or their nudged embeddings) at positions `pos0..`, returning every
/// position's logits.
fn decode_batch(
    ctx: *mut ll::llama_context,
    tokens: &[u32],
    embd: Option<&[f32]>,
    n_embd: usize,
    pos0: usize,
    n_vocab: usize,
) -> Result<Vec<f32>, String> {
    let m = tokens.len();
    // SAFETY: a batch for `m` tokens (or `m` embedding rows of `n_embd`), one sequence; every
    // field written below is within it; it is freed on every path.
    unsafe {
        let batch =
            ll::llama_batch_init(m as i32, if embd.is_some() { n_embd as i32 } else { 0 }, 1);
        for (i, &t) in tokens.iter().enumerate() {
            match embd {
                Some(e) => std::ptr::copy_nonoverlapping(
                    e[i * n_embd..].as_ptr(),
                    batch.embd.add(i * n_embd),
                    n_embd,
                ),
                None => *batch.token.add(i) = t as i32,
            }
            *batch.pos.add(i) = (pos0 + i) as i32;
            *batch.n_seq_id.add(i) = 1;
            *(*batch.seq_id.add(i)) = 0;
            *batch.logits.add(i) = 1;
        }
        let mut b = batch;
        b.n_tokens = m as i32;
        let rc = ll::llama_decode(ctx, b);
        let mut out = Vec::with_capacity(m * n_vocab);
        if rc == 0 {
            for i in 0..m {
                let p = ll::llama_get_logits_ith(ctx, i as i32);
                if p.is_null() {
                    ll::llama_batch_free(batch);
                    return Err(format!(
                        "llama.cpp returned no logits for position {}",
                        pos0 + i
                    ));
                }
                out.extend_from_slice(std::slice::from_raw_parts(p, n_vocab));
            }
        }
        ll::llama_batch_free(batch);
        if rc != 0 {
            return Err(format!(
                "llama_decode failed with code {rc} at position {pos0}"
            ));
        }
        Ok(out)
    }
}

/// The input embeddings of `tokens`, each value nudged up by one f32 ulp (the perturbation the
/// engine's `nudge_embeddings` applies), read from the model file.
fn nudged_embeddings(model: &std::path::Path, tokens: &[u32]) -> Result<(usize, Vec<f32>), String> {
    let f = bitnet_engine::gguf::GgufFile::open(model).map_err(|e| e.to_string())?;
    let t = f
        .tensor("token_embd.weight")
        .ok_or("the model has no `token_embd.weight`")?;
    let n_embd = t.dims[0] as usize;
    let row_bytes = t.ty.row_bytes(n_embd as u64).ok_or("bad embedding row")? as usize;
    let data = f.tensor_data(t);
    let mut out = Vec::with_capacity(tokens.len() * n_embd);
    for &tok in tokens {
        let row = data
            .get(tok as usize * row_bytes..(tok as usize + 1) * row_bytes)
            .ok_or("token outside the embedding")?;
        let v = bitnet_engine::quant::dequantize(t.ty, row, n_embd).map_err(|e| e.to_string())?;
        out.extend(v.into_iter().map(bitnet_engine::forward::next_up));
    }
    Ok((n_embd, out))
}

/// Merge the captures of one step's chunks: rows concatenated along positions; attention rows
/// padded with zeros to the last chunk's (widest) set of cached positions.
fn merge_chunks(chunks: Vec<Captured>) -> Captured {
    let point = chunks[0].0;
    let (shape, values) = bitnet_engine::trace::merge_position_chunks(
        point.stage,
        chunks.into_iter().map(|(_, s, v)| (s, v)).collect(),
    );
    (point, shape, values)
}

/// `cap` is the `Capture` the eval callback writes through during `llama_decode`: it is held as a
/// raw pointer and borrowed only between decode calls, never across one (a `&mut` held across
/// the call would let the optimizer assume the callback's writes do not happen: a release build
/// then read an empty capture).
fn decode_all(
    req: &RefRequest,
    ctx: *mut ll::llama_context,
    cap: *mut Capture,
    n_vocab: usize,
) -> Result<(), String> {
    let n = req.tokens.len();
    let mut writer = TraceWriter::create(&req.out)
        .map_err(|e| format!("cannot write `{}`: {e}", req.out.display()))?;
    let mut prefill_logits = Vec::with_capacity(n * n_vocab);
    let mut generated: Vec<u32> = Vec::new();
    let mut pos0 = 0usize;
    let (mut prefill_seconds, mut decode_seconds) = (0f64, 0f64);
    let ubatch = req.ubatch.unwrap_or(n).max(1);
    for step in 0..req.generate.max(1) {
        let t0 = std::time::Instant::now();
        let step_tokens: Vec<u32> = if step == 0 {
            req.tokens.clone()
        } else {
            vec![*generated.last().expect("a token per step")]
        };
        let m = step_tokens.len();
        let mut acc: BTreeMap<(u32, u32, Stage), Vec<Captured>> = BTreeMap::new();
        let mut logits = Vec::with_capacity(m * n_vocab);
        for (ci, chunk) in step_tokens
            .chunks(if step == 0 { ubatch } else { 1 })
            .enumerate()
        {
            let c0 = pos0 + ci * ubatch;
            {
                // SAFETY: `cap` is valid for the whole run; no decode is running now.
                let cap = unsafe { &mut *cap };
                cap.positions = [c0 as u32, (c0 + chunk.len()) as u32];
                cap.current.clear();
            }
            let embd = if req.nudge_embeddings {
                Some(nudged_embeddings(&req.model, chunk)?)
            } else {
                None
            };
            let n_embd = embd.as_ref().map_or(0, |e| e.0);
            logits.extend(decode_batch(
                ctx,
                chunk,
                embd.as_ref().map(|e| e.1.as_slice()),
                n_embd,
                c0,
                n_vocab,
            )?);
            // SAFETY: as above; the decode call has returned.
            let cap = unsafe { &mut *std::hint::black_box(cap) };
            if let Some(e) = cap.error.take() {
                return Err(e);
            }
            for (k, v) in std::mem::take(&mut cap.current) {
                acc.entry(k).or_default().push(v);
            }
        }
        if step == 0 {
            prefill_seconds = t0.elapsed().as_secs_f64();
        } else {
            decode_seconds += t0.elapsed().as_secs_f64();
        }
        let positions = [pos0 as u32, (pos0 + m) as u32];
        for chunks in acc.into_values() {
            let (point, shape, values) = merge_chunks(chunks);
            let rec = TraceRecord::summarize(point, step as u32, positions, shape, &values);
            writer
                .write(rec, Some(&values))
                .map_err(|e| format!("writing the trace: {e}"))?;
        }
        if step == 0 {
            prefill_logits = logits.clone();
        }
        if req.generate > 0 {
            let last = &logits[(m - 1) * n_vocab..];
            generated.push(crate::compare::argmax(last) as u32);
        }
        pos0 += m;
    }
    let io = |e: std::io::Error| format!("writing `{}`: {e}", req.out.display());
    bitnet_engine::npy::write_npy(&req.out.join("logits.npy"), &[n, n_vocab], &prefill_logits)
        .map_err(io)?;
    let gen = serde_json::to_vec(&generated).expect("serialize ids");
    bitnet_engine::npy::write_atomic(&req.out.join("generated.json"), &gen).map_err(io)?;
    bitnet_engine::npy::write_atomic(
        &req.out.join(super::BUILD_FILE),
        serde_json::to_string(&super::RefBuild::this_llama())
            .expect("serialize build")
            .as_bytes(),
    )
    .map_err(io)?;
    let timing = serde_json::json!({
        "prefill_seconds": prefill_seconds,
        "decode_seconds": decode_seconds,
        "prefill_tokens": n,
        "decode_calls": req.generate.saturating_sub(1),
    });
    bitnet_engine::npy::write_atomic(&req.out.join("timing.json"), timing.to_string().as_bytes())
        .map_err(io)?;
    writer.finish().map_err(io)?;
    Ok(())
}

/// Whether `path` exists as a file (used to give a clearer error than llama.cpp's).
pub fn check_model(path: &Path) -> Result<(), String> {
    if path.is_file() {
        Ok(())
    } else {
        Err(format!("model file `{}` does not exist", path.display()))
    }
}

/// Write `out`: the metadata of the model at `path` (its tokenizer with it) and no tensors, with
/// `general.architecture` = `bitnet` and the architecture's own keys renamed to `bitnet.*`, so
/// llama.cpp loads its vocabulary whatever weights or architecture the model has.
pub fn vocab_copy(path: &Path, out: &Path) -> Result<(), String> {
    let f = bitnet_engine::gguf::GgufFile::open(path).map_err(|e| e.to_string())?;
    let arch = f
        .get("general.architecture")
        .and_then(bitnet_engine::gguf::Value::as_str)
        .unwrap_or("bitnet")
        .to_string();
    let prefix = format!("{arch}.");
    let mut w = bitnet_engine::gguf::GgufWriter::new();
    for (k, v) in f.metadata() {
        match k.strip_prefix(&prefix) {
            Some(rest) => w.add_kv(&format!("bitnet.{rest}"), v.clone()),
            None => w.add_kv(k, v.clone()),
        }
    }
    w.add_kv("general.architecture", "bitnet");
    w.write(out).map_err(|e| e.to_string())
}

/// Run `f` on llama.cpp's vocabulary of `model_path` (the model loaded vocabulary-only; one
/// llama.cpp cannot run, I2_S weights or bitnet.cpp's architecture, through a copy of its
/// metadata under the `bitnet` architecture, without tensors). A model without a vocabulary is
/// an error.
fn with_vocab<T>(
    model_path: &Path,
    f: impl FnOnce(*const ll::llama_vocab) -> Result<T, String>,
) -> Result<T, String> {
    let _vocab_dir;
    let model = if super::llama_cannot_run(model_path).is_some() {
        let dir =
            tempfile::tempdir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
        let copy = dir.path().join("vocab.gguf");
        vocab_copy(model_path, &copy)?;
        _vocab_dir = dir;
        load_model(&copy, true)?
    } else {
        load_model(model_path, true)?
    };
    // SAFETY: `model` is valid until freed below.
    let result = unsafe {
        let vocab = ll::llama_model_get_vocab(model);
        if ll::llama_vocab_type(vocab) == ll::LLAMA_VOCAB_TYPE_NONE {
            Err(format!(
                "`{}` has no vocabulary (`tokenizer.ggml.model = none`): give token ids",
                model_path.display()
            ))
        } else {
            f(vocab)
        }
    };
    // SAFETY: freed once.
    unsafe { ll::llama_model_free(model) };
    result
}

/// llama.cpp's token ids for `text` (`llama_tokenize` with `add_special`, special tokens not
/// parsed), loading only the vocabulary.
pub fn tokenize(model_path: &Path, text: &str) -> Result<Vec<u32>, String> {
    let fail = |what: String| format!("{what}\nllama.cpp log (last lines):\n{}", log_tail(20));
    with_vocab(model_path, |vocab| {
        let mut cap = text.len() + 8;
        loop {
            let mut buf = vec![0i32; cap];
            // SAFETY: `vocab` is valid for the call; the buffer holds `cap` ids; a negative
            // result is the size needed, and the call is repeated with that much room.
            let n = unsafe {
                ll::llama_tokenize(
                    vocab,
                    text.as_ptr() as *const c_char,
                    text.len() as i32,
                    buf.as_mut_ptr(),
                    cap as i32,
                    true,
                    false,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                break Ok(buf.into_iter().map(|t| t as u32).collect());
            }
            if (-n) as usize <= cap {
                break Err(fail("llama_tokenize failed".into()));
            }
            cap = (-n) as usize;
        }
    })
}

/// llama.cpp's bytes for each of `ids` (`llama_token_to_piece` without `special`, as text is
/// shown), loading only the vocabulary; ids past the vocabulary are refused.
pub fn detokenize(model_path: &Path, ids: &[u32]) -> Result<Vec<Vec<u8>>, String> {
    with_vocab(model_path, |vocab| {
        // SAFETY: `vocab` is valid for the call.
        let n_vocab = unsafe { ll::llama_vocab_n_tokens(vocab) };
        ids.iter()
            .map(|&id| {
                if i64::from(id) >= i64::from(n_vocab) {
                    return Err(format!("token {id} is past the vocabulary of {n_vocab}"));
                }
                let mut cap = 64usize;
                loop {
                    let mut buf = vec![0u8; cap];
                    // SAFETY: the buffer holds `cap` bytes; a negative result is the size
                    // needed, and the call is repeated with that much room.
                    let n = unsafe {
                        ll::llama_token_to_piece(
                            vocab,
                            id as i32,
                            buf.as_mut_ptr() as *mut c_char,
                            cap as i32,
                            0,
                            false,
                        )
                    };
                    if n >= 0 {
                        buf.truncate(n as usize);
                        break Ok(buf);
                    }
                    if (-n) as usize <= cap {
                        break Err("llama_token_to_piece failed".into());
                    }
                    cap = (-n) as usize;
                }
            })
            .collect()
    })
}

/// Time llama.cpp on `model`: the prompt in one batch (logits of the last position only), then
/// `decode` greedy steps of one token each, with `threads` threads. The context matches the
/// reference runs (a KV cache of type `kv`, flash attention off), so both sides do the same work.
pub fn bench(
    model_path: &Path,
    threads: usize,
    prompt: &[u32],
    decode: usize,
    kv: bitnet_engine::attention::KvType,
) -> Result<LlamaTiming, String> {
    let fail = |what: String| format!("{what}\nllama.cpp log (last lines):\n{}", log_tail(20));
    if prompt.is_empty() {
        return Err("no prompt tokens".into());
    }
    let model = load_model(model_path, false)?;
    let n = prompt.len();
    let n_ctx = (n + decode + 1).next_multiple_of(256) as u32;
    // SAFETY: `model` is valid until freed at the end; the context is freed before it; every
    // batch is created for the tokens written into it and freed after its decode.
    let result = unsafe {
        let vocab = ll::llama_model_get_vocab(model);
        let n_vocab = ll::llama_vocab_n_tokens(vocab) as usize;
        let mut cp = ll::llama_context_default_params();
        cp.n_ctx = n_ctx;
        cp.n_batch = n as u32;
        cp.n_ubatch = n as u32;
        cp.n_seq_max = 1;
        cp.n_threads = threads as i32;
        cp.n_threads_batch = threads as i32;
        cp.flash_attn_type = ll::LLAMA_FLASH_ATTN_TYPE_DISABLED;
        cp.type_k = ggml_kv_type(kv);
        cp.type_v = ggml_kv_type(kv);
        cp.no_perf = true;
        let ctx = ll::llama_init_from_model(model, cp);
        let r = if ctx.is_null() {
            Err("llama.cpp could not create a context".to_string())
        } else if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= n_vocab) {
            Err(format!(
                "token id {bad} is outside the vocabulary (n_vocab {n_vocab})"
            ))
        } else {
            let step = |tokens: &[u32], pos0: usize| -> Result<u32, String> {
                let m = tokens.len();
                let batch = ll::llama_batch_init(m as i32, 0, 1);
                for (i, &t) in tokens.iter().enumerate() {
                    *batch.token.add(i) = t as i32;
                    *batch.pos.add(i) = (pos0 + i) as i32;
                    *batch.n_seq_id.add(i) = 1;
                    *(*batch.seq_id.add(i)) = 0;
                    *batch.logits.add(i) = (i + 1 == m) as i8;
                }
                let mut b = batch;
                b.n_tokens = m as i32;
                let rc = ll::llama_decode(ctx, b);
                let next = if rc == 0 {
                    let p = ll::llama_get_logits_ith(ctx, (m - 1) as i32);
                    if p.is_null() {
                        Err("llama.cpp returned no logits".to_string())
                    } else {
                        let l = std::slice::from_raw_parts(p, n_vocab);
                        Ok(bitnet_engine::forward::argmax(l))
                    }
                } else {
                    Err(format!(
                        "llama_decode failed with code {rc} at position {pos0}"
                    ))
                };
                ll::llama_batch_free(batch);
                next
            };
            let t0 = std::time::Instant::now();
            match step(prompt, 0) {
                Err(e) => Err(e),
                Ok(mut tok) => {
                    let prefill_seconds = t0.elapsed().as_secs_f64();
                    let t1 = std::time::Instant::now();
                    let mut err = None;
                    for k in 0..decode {
                        match step(&[tok], n + k) {
                            Ok(t) => tok = t,
                            Err(e) => {
                                err = Some(e);
                                break;
                            }
                        }
                    }
                    match err {
                        Some(e) => Err(e),
                        None => Ok(LlamaTiming {
                            prefill_seconds,
                            prompt_tokens: n,
                            decode_seconds: t1.elapsed().as_secs_f64(),
                            decode_calls: decode,
                            n_ctx,
                            n_batch: n as u32,
                            n_ubatch: n as u32,
                            threads,
                            kv_type: kv.label().into(),
                            flash_attn: false,
                        }),
                    }
                }
            }
        };
        if !ctx.is_null() {
            ll::llama_free(ctx);
        }
        r
    };
    // SAFETY: freed once, after its context.
    unsafe { ll::llama_model_free(model) };
    result.map_err(fail)
}
