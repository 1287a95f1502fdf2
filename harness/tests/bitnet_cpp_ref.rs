//! `ci/refs/bitnet-cpp-ref`, the wrapper that makes a user's bitnet.cpp build an external
//! reference (its tracer `ci/refs/bitnet_cpp_dump.cpp`, its converter
//! `ci/refs/bitnet_cpp_convert.py`), held to the protocol with a fake build and, where llama.cpp
//! is at hand, to `harness ref-trace` itself:
//!
//! - `protocol_round_trip_through_a_fake_build`: the wrapper run as the harness runs a reference
//!   (`run_command`) over a fake build whose `bin/bitnet-cpp-dump` records its arguments and
//!   writes a canned dump (one layer, bitnet.cpp's node names, a prompt in two chunks, a decode
//!   step): the tracer gets the protocol's arguments, and the trace directory holds every
//!   canonical point positions first (`attn_probs` transposed, trimmed and padded across chunks),
//!   records equal to the engine's `TraceRecord::summarize`, and passes `compare_trace_dirs`
//!   exactly against the same values written by the engine's `TraceWriter`;
//! - `points_filter_nudge_prefill_only_and_nan`: `--points`, `--nudge-embeddings`, `--generate 0`,
//!   a NaN value (counted, its `rms` null);
//! - `failures_say_what_is_missing`: a missing build directory, Python, headers, compiler or
//!   libraries, a tracer that fails (its message passed through), a truncated tensor file and an
//!   unfinished dump, each one line naming the problem and a non-zero exit;
//! - `dump_tool_compiles_against_llama_cpp_headers`: `bitnet_cpp_dump.cpp` against the llama.cpp
//!   headers `llama-cpp-sys-2` ships (upstream's API; bitnet.cpp's older one was checked by hand,
//!   see ci/refs/README.md);
//! - `dump_tool_linked_to_llama_cpp_equals_ref_trace`: the wrapper compiling the tracer against
//!   the static llama.cpp libraries `llama-cpp-sys-2` built, on the `tiny` preset, equals
//!   `harness ref-trace` bit for bit: one-shot, in ubatches, and with nudged embeddings.
//!
//! Tests that need Python with numpy and blake3 (the converter's) or a C++ compiler are skipped,
//! with the reason printed, where those are missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use bitnet_engine::npy::read_npy;
use bitnet_engine::trace::{read_trace, PointFilter, Stage, TracePoint, TraceRecord, TraceWriter};
use bitnet_harness::compare::{compare_trace_dirs, CompareSpec, LogitTolerance, Tolerance};
use bitnet_harness::reference::{run_command, run_reference, RefBuild, RefRequest};

#[path = "bitnet_cpp_ref/real_tracer.rs"]
mod real_tracer;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn wrapper() -> PathBuf {
    root().join("ci/refs/bitnet-cpp-ref")
}

/// The Python the wrapper would pick (`BITNET_PYTHON`, `.venv/bin/python`, `python3`) when it
/// has numpy and blake3; prints why not otherwise.
fn python(test: &str) -> Option<PathBuf> {
    let py = match std::env::var_os("BITNET_PYTHON") {
        Some(p) => PathBuf::from(p),
        None if root().join(".venv/bin/python").exists() => root().join(".venv/bin/python"),
        None => PathBuf::from("python3"),
    };
    match Command::new(&py)
        .args(["-c", "import numpy, blake3, sys; print(sys.executable)"])
        .output()
    {
        Ok(o) if o.status.success() => Some(PathBuf::from(
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )),
        Ok(o) => {
            eprintln!(
                "{test}: skipped: `{}` lacks numpy or blake3: {}",
                py.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
            None
        }
        Err(e) => {
            eprintln!("{test}: skipped: no Python at `{}`: {e}", py.display());
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fake build
// ---------------------------------------------------------------------------------------------

/// A stand-in for `bitnet-cpp-dump`: records its arguments in `argv.json` beside itself and
/// writes the dump a one-layer model would give (n_embd 4, 2 heads over 1 KV head of 2, n_ff 6,
/// n_vocab 5, a KV length padded to 8) under bitnet.cpp's node names, plus nodes the converter
/// must ignore (`Qcur` before RoPE, `norm-0`). Node `code`'s values at (step, chunk) are
/// `step·10000 + chunk·1000 + code·100 + i/4` in ggml order. `mode` (a file beside it): `ok`,
/// `nan` (`ffn_out-0` holds a NaN at step 0, chunk 0, index 1), `fail`, `truncate` (a tensor file
/// 4 bytes short), `nodone`.
const FAKE_DUMP: &str = r#"
import json, os, struct, sys

here = os.path.dirname(os.path.abspath(__file__))
mode = open(os.path.join(here, "mode")).read().strip()
argv = sys.argv[1:]
json.dump(argv, open(os.path.join(here, "argv.json"), "w"))
if mode == "fail":
    sys.stderr.write("llama_model_load: error loading model: tensor 'blk.0.attn_q.weight' is corrupt\n")
    sys.stderr.write("bitnet-cpp-dump: error: llama.cpp could not load the model\n")
    sys.exit(1)

def opt(name, default=None):
    return argv[argv.index(name) + 1] if name in argv else default

tokens = [int(t) for t in opt("--tokens").split(",")]
generate = int(opt("--generate", "0"))
ubatch = int(opt("--ubatch", "0")) or len(tokens)
nudge = "--nudge-embeddings" in argv
out = opt("--dump-dir")

N_KV = 8
NODES = [  # (name, op, ne of a call over m positions)
    ("inp_embd", "token_rows", lambda m: [4, m, 1, 1]),
    ("attn_norm-0", "other", lambda m: [4, m, 1, 1]),
    ("Qcur-0", "other", lambda m: [4, m, 1, 1]),
    ("Qcur-0", "rope", lambda m: [2, 2, m, 1]),
    ("Kcur-0", "rope", lambda m: [2, 1, m, 1]),
    ("Vcur-0", "other", lambda m: [2, m, 1, 1]),
    ("kq_soft_max_ext-0", "soft_max", lambda m: [N_KV, m, 2, 1]),
    ("kqv_out-0", "other", lambda m: [4, m, 1, 1]),
    ("attn_o_out-0", "other", lambda m: [4, m, 1, 1]),
    ("ffn_out-0", "other", lambda m: [6, m, 1, 1]),
    ("norm-0", "other", lambda m: [4, m, 1, 1]),
    ("l_out-0", "other", lambda m: [4, m, 1, 1]),
    ("result_output", "other", lambda m: [5, m, 1, 1]),
]
index = open(os.path.join(out, "dump.jsonl"), "w")
def line(rec):
    index.write(json.dumps(rec) + "\n")
serial = [0]
def values_file(values, short=False):
    name = "t%06d.f32" % serial[0]
    serial[0] += 1
    data = struct.pack("<%df" % len(values), *values)
    open(os.path.join(out, name), "wb").write(data[:-4] if short else data)
    return name

line({"kind": "header", "format": 1, "arch": "bitnet-b1.58", "n_vocab": 5, "n_embd": 4,
      "n_head": 2, "n_head_kv": 1, "n_layer": 1, "build_arch": "x86_64",
      "system_info": "AVX = 1 | AVX_VNNI = 0 | AVX2 = 1 | AVX512 = 0 | FMA = 1 | F16C = 1 | LLAMAFILE = 1 | ",
      "tokens": tokens, "generate": generate, "ubatch": ubatch, "threads": 2,
      "kv_cache": "K f32, V f16", "nudge_embeddings": nudge})
generated = [(4 - s) % 5 for s in range(generate)]
pos0 = 0
for step in range(max(generate, 1)):
    m_step = len(tokens) if step == 0 else 1
    size = ubatch if step == 0 else 1
    for chunk, c0 in enumerate(range(0, m_step, size)):
        m = min(size, m_step - c0)
        p0 = pos0 + c0
        where = {"step": step, "chunk": chunk, "positions": [p0, p0 + m]}
        for code, (name, op, ne) in enumerate(NODES):
            if op == "token_rows" and nudge:
                continue
            shape = ne(m)
            count = shape[0] * shape[1] * shape[2] * shape[3]
            values = [step * 10000 + chunk * 1000 + code * 100 + i / 4 for i in range(count)]
            if mode == "nan" and name == "ffn_out-0" and step == 0 and chunk == 0:
                values[1] = float("nan")
            short = mode == "truncate" and name == "Qcur-0" and op == "rope"
            line(dict(kind="tensor", name=name, op=op, ne=shape, file=values_file(values, short), **where))
        if step == 0:
            logits = [7 + chunk * 10 + i / 2 for i in range(m * 5)]
            line(dict(kind="logits", n_vocab=5, file=values_file(logits), **where))
    pos0 += m_step
if mode != "nodone":
    line({"kind": "done", "generated": generated, "prefill_seconds": 0.5, "decode_seconds": 0.25,
          "prefill_tokens": len(tokens), "decode_calls": max(generate - 1, 0)})
"#;

/// `dir/build` holding the fake tracer in `bin/`, run by `python`, in `mode`.
fn fake_build(dir: &Path, python: &Path, mode: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let build = dir.join("build");
    let bin = build.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let tool = bin.join("bitnet-cpp-dump");
    std::fs::write(&tool, format!("#!{}\n{FAKE_DUMP}", python.display())).unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(bin.join("mode"), mode).unwrap();
    build
}

fn request(out: &Path, tokens: &[u32], generate: usize, ubatch: Option<usize>) -> RefRequest {
    RefRequest {
        model: PathBuf::from("/models/model.gguf"),
        tokens: tokens.to_vec(),
        generate,
        points: PointFilter::all(),
        threads: 2,
        out: out.to_owned(),
        ubatch,
        nudge_embeddings: false,
        kv_cache: Default::default(),
    }
}

/// The arguments the fake tracer received.
fn tracer_argv(build: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(build.join("bin/argv.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The fake's values of node `code` over `count` elements at (step, chunk).
fn fake_values(code: u32, step: u32, chunk: u32, count: usize) -> Vec<f32> {
    (0..count)
        .map(|i| (step * 10000 + chunk * 1000 + code * 100) as f32 + i as f32 / 4.0)
        .collect()
}

/// One point at one step as the trace directory must hold it.
struct Want {
    point: TracePoint,
    step: u32,
    positions: [u32; 2],
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// Every point at every step, by (step, execution order).
type Expected = BTreeMap<(u32, (u32, u32, Stage)), Want>;

/// What the trace directory must hold for the fake's run over `n` prompt tokens in calls of
/// `ubatch` and `generate` steps: per (point, step), the positions, shape and values, laid out
/// as harness/src/reference/llama.rs lays out llama.cpp's nodes.
fn expected_points(n: usize, ubatch: usize, generate: usize, nudge: bool, nan: bool) -> Expected {
    // canonical name, fake node code, width of a position's row (ggml ne[0]·ne[1] per position)
    let plain: [(&str, u32, usize); 10] = [
        ("embeddings", 0, 4),
        ("blk.0.attn_norm", 1, 4),
        ("blk.0.q", 3, 4),
        ("blk.0.k", 4, 2),
        ("blk.0.v", 5, 2),
        ("blk.0.kqv_out", 7, 4),
        ("blk.0.attn_out", 8, 4),
        ("blk.0.ffn_act", 9, 6),
        ("blk.0.out", 11, 4),
        ("logits", 12, 5),
    ];
    let row_shape = |name: &str, width: usize| -> Vec<usize> {
        match name {
            "blk.0.q" => vec![2, 2],
            "blk.0.k" | "blk.0.v" => vec![1, 2],
            _ => vec![width],
        }
    };
    let mut out = BTreeMap::new();
    let mut pos0 = 0usize;
    for step in 0..generate.max(1) as u32 {
        let (m_step, size) = if step == 0 { (n, ubatch) } else { (1, 1) };
        let chunks: Vec<(u32, usize, usize)> = (0..m_step)
            .step_by(size)
            .enumerate()
            .map(|(c, c0)| (c as u32, pos0 + c0, size.min(m_step - c0)))
            .collect();
        let positions = [pos0 as u32, (pos0 + m_step) as u32];
        let mut put = |name: &str, shape: Vec<usize>, values: Vec<f32>| {
            let point = TracePoint::parse(name).unwrap();
            let want = Want {
                point,
                step,
                positions,
                shape,
                values,
            };
            out.insert((step, point.order_key()), want);
        };
        for (name, code, width) in plain {
            if name == "embeddings" && nudge {
                continue;
            }
            let mut values = Vec::new();
            for &(c, _, m) in &chunks {
                let mut v = fake_values(code, step, c, m * width);
                if nan && code == 9 && step == 0 && c == 0 {
                    v[1] = f32::NAN;
                }
                values.extend(v);
            }
            let mut shape = vec![m_step];
            shape.extend(row_shape(name, width));
            put(name, shape, values);
        }
        // attn_probs: ggml [8, m, 2] → [m, 2, p1], rows zero-padded to the step's last p1.
        let width = chunks.last().map(|&(_, p0, m)| p0 + m).unwrap();
        let mut probs = Vec::new();
        for &(c, p0, m) in &chunks {
            let raw = fake_values(6, step, c, 8 * m * 2);
            let keep = p0 + m;
            for t in 0..m {
                for h in 0..2 {
                    let row = (h * m + t) * 8;
                    probs.extend_from_slice(&raw[row..row + keep]);
                    probs.extend(std::iter::repeat_n(0.0, width - keep));
                }
            }
        }
        put("blk.0.attn_probs", vec![m_step, 2, width], probs);
        pos0 += m_step;
    }
    out
}

/// The prefill logits the fake writes, `[n, 5]`.
fn expected_logits(n: usize, ubatch: usize) -> Vec<f32> {
    let mut v = Vec::new();
    for (c, c0) in (0..n).step_by(ubatch).enumerate() {
        let m = ubatch.min(n - c0);
        v.extend((0..m * 5).map(|i| 7.0 + c as f32 * 10.0 + i as f32 / 2.0));
    }
    v
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

#[test]
fn protocol_round_trip_through_a_fake_build() {
    let test = "protocol_round_trip_through_a_fake_build";
    let Some(py) = python(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let build = fake_build(dir.path(), &py, "ok");
    let out = dir.path().join("out");
    let (tokens, generate, ubatch) = ([3u32, 1, 4], 2, 2);
    let req = request(&out, &tokens, generate, Some(ubatch));
    run_command(
        &wrapper(),
        &[build.display().to_string()],
        &req,
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // The tracer got the request, without the converter's `--points` and `-o`.
    let argv = tracer_argv(&build);
    let want = [
        "/models/model.gguf",
        "--tokens",
        "3,1,4",
        "--generate",
        "2",
        "--threads",
        "2",
        "--ubatch",
        "2",
        "--dump-dir",
    ];
    assert_eq!(argv[..want.len()], want, "{argv:?}");
    assert_eq!(argv.len(), want.len() + 1, "{argv:?}");

    // Every point at both steps, laid out and merged as llama.rs does, summarised as the engine
    // summarises; `Qcur` before RoPE and `norm-0` ignored.
    let expected = expected_points(tokens.len(), ubatch, generate, false, false);
    let records = read_trace(&out.join("trace.jsonl")).unwrap();
    let got: Vec<(u32, String)> = records.iter().map(|r| (r.step, r.name.clone())).collect();
    let want: Vec<(u32, String)> = expected
        .values()
        .map(|w| (w.step, w.point.name()))
        .collect();
    assert_eq!(got, want, "records in execution order");
    for rec in &records {
        let p = TracePoint::parse(&rec.name).unwrap();
        let w = &expected[&(rec.step, p.order_key())];
        let (npy_shape, npy) = read_npy(&out.join(rec.file.as_ref().unwrap())).unwrap();
        let label = format!("{} step {}", rec.name, rec.step);
        assert_eq!(npy_shape, w.shape, "{label}");
        assert!(
            same_bits(&npy, &w.values),
            "{label}: {npy:?}\nwant {:?}",
            w.values
        );
        let mut want = TraceRecord::summarize(p, rec.step, w.positions, w.shape.clone(), &w.values);
        want.file = rec.file.clone();
        assert!(
            (rec.rms - want.rms).abs() <= 4.0 * f64::EPSILON * want.rms,
            "{label}: rms {} vs {}",
            rec.rms,
            want.rms
        );
        want.rms = rec.rms;
        assert_eq!(rec, &want, "{label}");
    }
    let probs = &expected[&(
        0,
        TracePoint::parse("blk.0.attn_probs").unwrap().order_key(),
    )];
    assert_eq!(
        probs.shape,
        [3, 2, 3],
        "rows padded to the last chunk's width"
    );
    assert_eq!(
        probs.values[2], 0.0,
        "chunk 0 (positions 0..2) pads position 2 with 0"
    );

    // The rest of the directory.
    let (shape, logits) = read_npy(&out.join("logits.npy")).unwrap();
    assert_eq!(shape, [3, 5]);
    assert!(same_bits(&logits, &expected_logits(3, ubatch)));
    let generated: Vec<u32> =
        serde_json::from_str(&std::fs::read_to_string(out.join("generated.json")).unwrap())
            .unwrap();
    assert_eq!(generated, [4, 3]);
    let build_json = RefBuild::read(&out).unwrap().expect("build.json");
    assert_eq!(build_json.implementation, "bitnet.cpp");
    assert_eq!(build_json.isa, ["avx", "avx2", "f16c", "fma"]);
    assert_eq!(build_json.arch, "x86_64");
    assert!(build_json.system_info.ends_with("KV cache: K f32, V f16"));
    assert!(build_json.inexact_reason().unwrap().contains("bitnet.cpp"));
    let timing: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("timing.json")).unwrap()).unwrap();
    assert_eq!(timing["prefill_tokens"], 3);
    assert_eq!(timing["decode_calls"], 1);

    // The harness's comparison, against the same values written by the engine's writer: exact
    // at every point, step and position.
    let eng = dir.path().join("engine");
    let mut w = TraceWriter::create(&eng).unwrap();
    for p in expected.values() {
        let rec = TraceRecord::summarize(p.point, p.step, p.positions, p.shape.clone(), &p.values);
        w.write(rec, Some(&p.values)).unwrap();
    }
    w.finish().unwrap();
    bitnet_engine::npy::write_npy(
        &eng.join("logits.npy"),
        &[3, 5],
        &expected_logits(3, ubatch),
    )
    .unwrap();
    std::fs::write(eng.join("generated.json"), "[4,3]").unwrap();
    let exact = |_: &str| Tolerance {
        exact: Some(true),
        ..Tolerance::default()
    };
    let spec = CompareSpec {
        tolerance: &exact,
        logits: LogitTolerance {
            kl_max: Some(0.0),
            top1_agreement_min: Some(1.0),
            ..LogitTolerance::default()
        },
        generated_equal: true,
    };
    let c = compare_trace_dirs(&eng, &out, &spec).unwrap();
    assert!(c.passed(), "{}", c.failure_summary());
    assert!(c.unmatched.is_empty(), "{:?}", c.unmatched);
    // 11 points at 3 prompt positions and at 1 decode position.
    assert_eq!(c.points.len(), 11 * (3 + 1));
}

#[test]
fn points_filter_nudge_prefill_only_and_nan() {
    let test = "points_filter_nudge_prefill_only_and_nan";
    let Some(py) = python(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let build = fake_build(dir.path(), &py, "nan");
    let out = dir.path().join("out");
    let mut req = request(&out, &[2, 0, 1, 3], 0, None);
    req.points = PointFilter::new(&["blk.*.q", "blk.0.ffn_act", "logits", "embeddings"]).unwrap();
    req.nudge_embeddings = true;
    run_command(
        &wrapper(),
        &[build.display().to_string()],
        &req,
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let argv = tracer_argv(&build);
    assert!(argv.contains(&"--nudge-embeddings".to_string()), "{argv:?}");
    assert!(
        !argv.iter().any(|a| a == "--points" || a == "-o"),
        "{argv:?}"
    );
    assert!(!argv.contains(&"--ubatch".to_string()), "{argv:?}");

    // Only the selected points, of the one prefill step; no embeddings with nudged input (the
    // token rows are not a node then), as with llama.cpp. The records are read as JSON, not with
    // `read_trace`: a NaN makes `rms` null, which `TraceRecord` cannot hold (the engine's own
    // writer does the same).
    let expected = expected_points(4, 4, 0, true, true);
    let text = std::fs::read_to_string(out.join("trace.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = records
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["blk.0.q", "blk.0.ffn_act", "logits"]);
    for rec in &records {
        let name = rec["name"].as_str().unwrap();
        assert_eq!(rec["step"], 0, "{name}");
        assert_eq!(rec["positions"], serde_json::json!([0, 4]), "{name}");
        let p = TracePoint::parse(name).unwrap();
        let (npy_shape, npy) = read_npy(&out.join(rec["file"].as_str().unwrap())).unwrap();
        let w = &expected[&(0, p.order_key())];
        assert_eq!(npy_shape, w.shape, "{name}");
        assert!(same_bits(&npy, &w.values), "{name}");
        let want = TraceRecord::summarize(p, 0, w.positions, w.shape.clone(), &w.values);
        assert_eq!(rec["blake3"], want.blake3, "{name}");
        assert_eq!(rec["nan"], want.nan, "{name}");
    }
    assert_eq!(records[1]["nan"], 1, "the NaN is counted");
    assert!(records[1]["rms"].is_null());
    let files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".npy"))
        .collect();
    assert_eq!(files.len(), 4, "three points and logits.npy: {files:?}");
    assert_eq!(read_npy(&out.join("logits.npy")).unwrap().0, [4, 5]);
    assert_eq!(
        std::fs::read_to_string(out.join("generated.json")).unwrap(),
        "[]"
    );
}

/// Run the wrapper by hand with `env`; its exit status must be a failure, its standard error
/// returned.
fn run_failing(label: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(wrapper());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output { status, stderr, .. } = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    assert!(!status.success(), "{label}: exit {status}\n{stderr}");
    assert!(
        !stderr.contains("Traceback"),
        "{label}: a Python traceback:\n{stderr}"
    );
    stderr
}

/// The wrapper's own error lines.
fn errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("bitnet-cpp-ref: error:"))
        .collect()
}

#[test]
fn failures_say_what_is_missing() {
    let test = "failures_say_what_is_missing";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out").display().to_string();
    let proto = |build: &str| -> Vec<String> {
        [
            build,
            "m.gguf",
            "--tokens",
            "1,2,3",
            "--generate",
            "1",
            "--threads",
            "1",
            "-o",
            &out,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let check = |label: &str, build: &str, env: &[(&str, &str)], needle: &str| {
        let args = proto(build);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stderr = run_failing(label, &args, env);
        let errs = errors(&stderr);
        assert_eq!(errs.len(), 1, "{label}: one error line expected:\n{stderr}");
        assert!(
            errs[0].contains(needle),
            "{label}: `{needle}` not in:\n{stderr}"
        );
        assert!(
            !Path::new(&out).join("trace.jsonl").exists(),
            "{label}: a trace was written"
        );
        stderr
    };

    // Nothing needed but the wrapper.
    let missing = d.join("no-such-build").display().to_string();
    check("missing build", &missing, &[], "does not exist");
    check(
        "missing python",
        d.to_str().unwrap(),
        &[("BITNET_PYTHON", "/nonexistent/python3")],
        "no Python at `/nonexistent/python3`",
    );

    let Some(py) = python(test) else { return };
    let py_env = [("BITNET_PYTHON", py.to_str().unwrap())];

    // A checkout without llama.cpp's headers; with (empty) headers but no compiler, or no
    // libraries.
    let ck = d.join("checkout");
    std::fs::create_dir_all(ck.join("build")).unwrap();
    let ck_build = ck.join("build").display().to_string();
    check("no headers", &ck_build, &py_env, "llama.h not found");
    std::fs::create_dir_all(ck.join("3rdparty/llama.cpp/include")).unwrap();
    std::fs::create_dir_all(ck.join("3rdparty/llama.cpp/ggml/include")).unwrap();
    std::fs::write(ck.join("3rdparty/llama.cpp/include/llama.h"), "").unwrap();
    check("no ggml.h", &ck_build, &py_env, "ggml.h not found");
    std::fs::write(ck.join("3rdparty/llama.cpp/ggml/include/ggml.h"), "").unwrap();
    let cxx_missing = [py_env[0], ("CXX", "/nonexistent/c++")];
    check(
        "no compiler",
        &ck_build,
        &cxx_missing,
        "`/nonexistent/c++` (from CXX) is not found",
    );
    let cxx_true = [py_env[0], ("CXX", "true")];
    check(
        "no libraries",
        &ck_build,
        &cxx_true,
        "libllama (.so or .a) not found",
    );

    // The tracer fails: its own lines come through, then the wrapper's.
    let failing = fake_build(&d.join("fail"), &py, "fail");
    let stderr = check(
        "tracer fails",
        failing.to_str().unwrap(),
        &py_env,
        "the tracer",
    );
    assert!(
        stderr.contains("tensor 'blk.0.attn_q.weight' is corrupt")
            && stderr.contains("bitnet-cpp-dump: error: llama.cpp could not load the model"),
        "{stderr}"
    );

    // Malformed dumps: one line naming the file and tensor, no traceback.
    let short = fake_build(&d.join("short"), &py, "truncate");
    check(
        "truncated tensor file",
        short.to_str().unwrap(),
        &py_env,
        "(`Qcur-0`, step 0, chunk 0) holds 44 bytes, expected 48 (12 f32 values)",
    );
    let unfinished = fake_build(&d.join("nodone"), &py, "nodone");
    check(
        "no done record",
        unfinished.to_str().unwrap(),
        &py_env,
        "the dump is incomplete",
    );
}
