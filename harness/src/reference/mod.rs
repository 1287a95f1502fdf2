//! The C++ reference: llama.cpp run on the same model and tokens as the engine (DESIGN.md,
//! "reference (llama.cpp, in a subprocess)").
//!
//! [`run_reference`] starts `harness ref-trace` as a child process with a timeout; the child
//! ([`llama::run`]) loads the model with llama.cpp, runs the prompt and the greedy decode steps,
//! captures the trace points through llama.cpp's eval callback and writes the same files as
//! `harness trace`: `trace.jsonl`, `<point>.step<k>.npy`, `logits.npy`, `generated.json`.
//! A crash or `abort()` in llama.cpp fails that one run with the reference's last log lines.
//! An external command (`reference: { command: [...] }` in a scenario) is run the same way.

// In-process llama.cpp (`harness ref-trace`, `ref-bench`). The library builds without it
// (`--no-default-features`) for the fuzz targets, which need the harness's parsers only.
#[cfg(feature = "llama")]
pub mod llama;
pub mod mapping;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bitnet_engine::trace::PointFilter;

/// Set by the harness on its `ref-trace` child: stream llama.cpp's log to stderr.
pub const STREAM_LOG_ENV: &str = "BITNET_REF_STREAM_LOG";

/// What `harness ref-bench` measures of llama.cpp: one prompt pass and greedy single-token
/// decode steps, timed around `llama_decode` (model loading and context creation excluded).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LlamaTiming {
    pub prefill_seconds: f64,
    pub prompt_tokens: usize,
    pub decode_seconds: f64,
    pub decode_calls: usize,
    /// The context settings used.
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_ubatch: u32,
    pub threads: usize,
    pub kv_type: String,
    pub flash_attn: bool,
}

/// The file in a reference's trace directory that says how the reference was built.
pub const BUILD_FILE: &str = "build.json";

/// How a reference was built: what decides whether the engine can equal it bit for bit. llama.cpp
/// (`harness ref-trace`) writes it; an external reference may.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RefBuild {
    /// `llama.cpp`, or an external reference's own name.
    pub implementation: String,
    /// The instruction sets its CPU code was compiled for (ggml's `ggml_cpu_has_*`, which report
    /// the build, not the machine): `avx2`, `fma`, `f16c`, `avx512`, `neon`, ...
    pub isa: Vec<String>,
    /// `target_arch` of the build (`x86_64`, `aarch64`).
    pub arch: String,
    /// llama.cpp's `llama_print_system_info()`.
    #[serde(default)]
    pub system_info: String,
}

impl RefBuild {
    /// The llama.cpp linked into this binary.
    #[cfg(feature = "llama")]
    pub fn this_llama() -> RefBuild {
        use llama_cpp_sys_2 as sys;
        // SAFETY: these ggml/llama functions only read compile-time flags and static strings.
        let (flags, info) = unsafe {
            let flags = [
                ("avx", sys::ggml_cpu_has_avx()),
                ("avx2", sys::ggml_cpu_has_avx2()),
                ("fma", sys::ggml_cpu_has_fma()),
                ("f16c", sys::ggml_cpu_has_f16c()),
                ("avx512", sys::ggml_cpu_has_avx512()),
                ("avx512_vnni", sys::ggml_cpu_has_avx512_vnni()),
                ("neon", sys::ggml_cpu_has_neon()),
            ];
            let p = sys::llama_print_system_info();
            let info = if p.is_null() {
                String::new()
            } else {
                std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
            };
            (flags, info)
        };
        RefBuild {
            implementation: "llama.cpp".into(),
            isa: flags
                .iter()
                .filter(|(_, on)| *on != 0)
                .map(|(n, _)| n.to_string())
                .collect(),
            arch: std::env::consts::ARCH.into(),
            system_info: info.trim().to_string(),
        }
    }

    /// Read `dir/build.json` (at most 64 KiB); `Ok(None)` when the reference wrote none.
    pub fn read(dir: &Path) -> Result<Option<RefBuild>, String> {
        let path = dir.join(BUILD_FILE);
        let file = match bitnet_engine::files::open_regular(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read `{}`: {e}", path.display())),
        };
        let mut text = String::new();
        file.take(64 << 10)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let parsed = crate::bounded::json(&text).and_then(|()| serde_json::from_str(&text));
        parsed.map(Some).map_err(|e| {
            format!(
                "`{}`: expected {{implementation, isa, arch, system_info}}: {e}",
                path.display()
            )
        })
    }

    /// Why the engine cannot equal this reference bit for bit, or `None` when it can: the engine
    /// reproduces llama.cpp's x86-64 build with AVX2, FMA and F16C and without AVX-512 (the build
    /// `.cargo/config.toml` pins), whose vector widths fix the summation orders.
    pub fn inexact_reason(&self) -> Option<String> {
        if self.implementation != "llama.cpp" {
            return Some(format!(
                "the reference is `{}`, not llama.cpp",
                self.implementation
            ));
        }
        let has = |f: &str| self.isa.iter().any(|x| x == f);
        if self.arch != "x86_64" {
            return Some(format!(
                "the reference was built for {} ({}); the engine reproduces llama.cpp's x86-64 AVX2 build",
                self.arch,
                self.isa.join(", ")
            ));
        }
        if has("avx512") {
            return Some(format!(
                "the reference was built with AVX-512 ({}): ggml's softmax, SiLU and float products then sum 16 lanes, the engine reproduces the AVX2 build's 8",
                self.isa.join(", ")
            ));
        }
        if !(has("avx2") && has("fma") && has("f16c")) {
            return Some(format!(
                "the reference was built without AVX2+FMA+F16C ({}): ggml's vector code then sums in other orders",
                if self.isa.is_empty() { "no SIMD".to_string() } else { self.isa.join(", ") }
            ));
        }
        None
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RefRequest {
    pub model: PathBuf,
    pub tokens: Vec<u32>,
    /// Greedy tokens to generate (0: prefill only).
    pub generate: usize,
    pub points: PointFilter,
    pub threads: usize,
    /// The trace directory to write.
    pub out: PathBuf,
    /// Decode the prompt in calls of this many tokens (one call when `None`).
    pub ubatch: Option<usize>,
    /// Feed the input embeddings nudged up by one f32 ulp instead of token ids.
    pub nudge_embeddings: bool,
    /// The KV cache's type (llama.cpp's `type_k` and `type_v`).
    pub kv_cache: bitnet_engine::attention::KvType,
}

impl RefRequest {
    /// The command-line arguments of `harness ref-trace` (and of an external reference command)
    /// for this request.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            self.model.display().to_string(),
            "--tokens".into(),
            self.tokens
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(","),
            "--generate".into(),
            self.generate.to_string(),
            "--threads".into(),
            self.threads.to_string(),
        ];
        for p in self.points.patterns() {
            a.push("--points".into());
            a.push(p.clone());
        }
        if let Some(u) = self.ubatch {
            a.push("--ubatch".into());
            a.push(u.to_string());
        }
        if self.nudge_embeddings {
            a.push("--nudge-embeddings".into());
        }
        // Only when not the default, so an external reference that predates the option still
        // runs every F32 scenario.
        if self.kv_cache != bitnet_engine::attention::KvType::F32 {
            a.push("--kv-cache".into());
            a.push(self.kv_cache.label().into());
        }
        // The output directory comes last, so a wrapper script finds it as its last argument.
        a.push("-o".into());
        a.push(self.out.display().to_string());
        a
    }
}

/// Why the reference did not produce a trace.
#[derive(Debug, thiserror::Error)]
pub enum RefError {
    #[error("cannot start the reference `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the reference timed out after {seconds} s; its last output:\n{tail}")]
    Timeout { seconds: u64, tail: String },
    #[error("the reference failed ({status}); its last output:\n{tail}")]
    Failed { status: String, tail: String },
    #[error("the reference exited successfully but wrote no `{0}`")]
    Missing(PathBuf),
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot {what} `{path}`: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Run `program args... <request args>` with a timeout, capturing its output.
pub fn run_command(
    program: &Path,
    pre_args: &[String],
    req: &RefRequest,
    timeout: Duration,
) -> Result<(), RefError> {
    // The reference writes into a fresh sibling directory, renamed into place only when it
    // succeeded: `req.out` is then whole (this run's files and nothing else) or absent, never a
    // half-written or stale mix.
    if let Some(parent) = req.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| RefError::Io {
            what: "create",
            path: parent.to_path_buf(),
            source,
        })?;
    }
    // Removed with whatever the reference left in it, unless it takes `req.out`'s place.
    let partial = bitnet_engine::npy::temp_dir_beside(&req.out).map_err(|source| RefError::Io {
        what: "create a directory beside",
        path: req.out.clone(),
        source,
    })?;
    let mut inner = req.clone();
    inner.out = partial.path().to_path_buf();
    let mut args = pre_args.to_vec();
    args.extend(inner.args());
    run_child(program, &args, timeout)?;
    if !partial.path().join("trace.jsonl").is_file() {
        return Err(RefError::Missing(req.out.join("trace.jsonl")));
    }
    let _ = std::fs::remove_dir_all(&req.out);
    std::fs::rename(partial.path(), &req.out).map_err(|source| RefError::Io {
        what: "move the trace into place at",
        path: req.out.clone(),
        source,
    })?;
    let _ = partial.keep();
    Ok(())
}

/// Most of a child's standard output kept (the result of `ref-tokenize` and friends); past it the
/// run fails.
pub const MAX_CHILD_STDOUT: usize = 16 << 20;
/// The end of a child's standard error (and of its output, for the failure message) kept.
pub const CHILD_LOG_TAIL: usize = 64 << 10;

/// The process groups of the children running now, so a signal to the harness ends them too.
static CHILD_GROUPS: [std::sync::atomic::AtomicI32; 64] =
    [const { std::sync::atomic::AtomicI32::new(0) }; 64];

extern "C" fn kill_children_and_exit(sig: libc::c_int) {
    for g in &CHILD_GROUPS {
        let pgid = g.load(std::sync::atomic::Ordering::SeqCst);
        if pgid > 0 {
            // SAFETY: kill is async-signal-safe; pgid is a child's process group.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(128 + sig) };
}

/// On SIGTERM, SIGINT or SIGHUP the harness kills its children's process groups, then exits.
fn install_signal_handlers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            // SAFETY: the handler only calls async-signal-safe functions.
            unsafe {
                libc::signal(
                    sig,
                    kill_children_and_exit as extern "C" fn(libc::c_int) as libc::sighandler_t,
                )
            };
        }
    });
}

/// A registered child process group, unregistered on drop.
struct GroupSlot(Option<usize>);

impl GroupSlot {
    fn register(pgid: i32) -> GroupSlot {
        use std::sync::atomic::Ordering;
        for (i, g) in CHILD_GROUPS.iter().enumerate() {
            if g.compare_exchange(0, pgid, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return GroupSlot(Some(i));
            }
        }
        GroupSlot(None)
    }
}

impl Drop for GroupSlot {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            CHILD_GROUPS[i].store(0, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Drain `r` on a thread: keep the first `head` bytes, and the last `tail` bytes of the rest;
/// report whether anything was dropped. The result arrives on the returned channel.
fn drain(
    mut r: impl Read + Send + 'static,
    head: usize,
    tail: usize,
    past_head: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
) -> std::sync::mpsc::Receiver<(Vec<u8>, Vec<u8>, bool)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut first, mut last, mut dropped) = (Vec::new(), Vec::new(), false);
        let mut buf = [0u8; 64 << 10];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut chunk = &buf[..n];
                    let room = head.saturating_sub(first.len());
                    let take = room.min(chunk.len());
                    first.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if !chunk.is_empty() {
                        // Past the cap: the run has failed; say so at once (`past_head`).
                        if let Some(flag) = &past_head {
                            flag.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                        last.extend_from_slice(chunk);
                        if last.len() > 2 * tail.max(1) {
                            let cut = last.len() - tail;
                            last.drain(..cut);
                            dropped = true;
                        }
                    }
                }
            }
        }
        if last.len() > tail {
            let cut = last.len() - tail;
            last.drain(..cut);
            dropped = true;
        }
        let _ = tx.send((first, last, dropped));
    });
    rx
}

/// Run `program args...` in its own process group with a timeout; returns its standard output
/// when it exits successfully. The reference is untrusted: its output is kept up to
/// [`MAX_CHILD_STDOUT`] (more fails the run) and the last [`CHILD_LOG_TAIL`] bytes of its errors;
/// its whole process group is killed on timeout, as soon as it exits (so a background child
/// holding its pipes cannot hold the harness), when the harness is signalled, and (through
/// `PR_SET_PDEATHSIG`) when the harness dies.
pub fn run_child(program: &Path, args: &[String], timeout: Duration) -> Result<String, RefError> {
    use std::os::unix::process::CommandExt;
    install_signal_handlers();
    let mut cmd = Command::new(program);
    cmd
        // Its own process group, so a timeout ends the reference and anything it started.
        .process_group(0)
        // Stream llama.cpp's log so its last lines survive an abort(); no gdb backtrace on abort.
        .env(STREAM_LOG_ENV, "1")
        .env("GGML_NO_BACKTRACE", "1")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    };
    let mut child = cmd.spawn().map_err(|source| RefError::Spawn {
        program: program.display().to_string(),
        source,
    })?;
    let pgid = child.id() as i32;
    let _slot = GroupSlot::register(pgid);
    let kill_group = || {
        // SAFETY: signalling the child's process group, which `process_group(0)` made.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    };
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    // Standard output past its cap fails the run: the child is stopped then, not at its end.
    let flooded = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let out = drain(
        child.stdout.take().expect("piped"),
        MAX_CHILD_STDOUT,
        CHILD_LOG_TAIL,
        Some(flooded.clone()),
    );
    let err = drain(child.stderr.take().expect("piped"), 0, CHILD_LOG_TAIL, None);
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if flooded.load(std::sync::atomic::Ordering::SeqCst) => {
                kill_group();
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) if start.elapsed() >= timeout => {
                kill_group();
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    // Whatever the child left running in its group goes with it.
    kill_group();
    let wait = Duration::from_secs(5);
    let (o_head, o_tail, o_dropped) = out.recv_timeout(wait).unwrap_or_default();
    let (_, e_tail, _) = err.recv_timeout(wait).unwrap_or_default();
    let stdout = String::from_utf8_lossy(&o_head).into_owned();
    let text = format!(
        "{}{}{}",
        String::from_utf8_lossy(&o_head[o_head.len().saturating_sub(CHILD_LOG_TAIL)..]),
        String::from_utf8_lossy(&o_tail),
        String::from_utf8_lossy(&e_tail)
    );
    // The last 25 lines, each cut to 400 characters: what a reference printed is quoted in
    // terminals and reports, and one line may be megabytes long.
    let lines: Vec<String> = text
        .lines()
        .map(|l| match l.char_indices().nth(400) {
            Some((at, _)) => format!("{}… ({} bytes)", &l[..at], l.len()),
            None => l.to_string(),
        })
        .collect();
    let tail = lines[lines.len().saturating_sub(25)..].join("\n");
    match status {
        None if flooded.load(std::sync::atomic::Ordering::SeqCst) => Err(RefError::Failed {
            status: format!(
                "printed more than {MAX_CHILD_STDOUT} bytes on standard output, and was stopped"
            ),
            tail,
        }),
        None => Err(RefError::Timeout {
            seconds: timeout.as_secs(),
            tail,
        }),
        Some(s) if !s.success() => Err(RefError::Failed {
            status: s.to_string(),
            tail,
        }),
        Some(_) if o_dropped || !o_tail.is_empty() => Err(RefError::Failed {
            status: format!("printed more than {MAX_CHILD_STDOUT} bytes on standard output"),
            tail,
        }),
        Some(_) => Ok(stdout),
    }
}

/// Run a scenario's reference on `req`: llama.cpp through `harness ref-trace` (after checking it
/// can run the model: upstream llama.cpp has neither bitnet.cpp's I2_S nor `bitnet-b1.58`), or
/// the scenario's `reference.command`, whose program, when it is a relative path with a `/`, is
/// taken from the scenario file's directory (so a scenario names `../ci/refs/numpy-ref` whatever
/// the working directory).
pub fn run_scenario_reference(
    reference: &crate::scenario::Reference,
    scenario_dir: &Path,
    harness: &Path,
    req: &RefRequest,
    timeout: Duration,
) -> Result<(), RefError> {
    use crate::scenario::Reference;
    match reference {
        Reference::Command { command } => {
            let program = Path::new(&command[0]);
            let program = if program.is_relative() && command[0].contains('/') {
                scenario_dir.join(program)
            } else {
                program.to_path_buf()
            };
            run_command(&program, &command[1..], req, timeout)
        }
        _ => {
            if let Some(why) = llama_cannot_run(&req.model) {
                return Err(RefError::Unsupported(format!(
                    "{why}; {SCENARIO_REFERENCE_HINT}"
                )));
            }
            run_command(harness, &["ref-trace".to_string()], req, timeout)
        }
    }
}

/// What a scenario whose model llama.cpp cannot run can do instead, appended to
/// [`llama_cannot_run`]'s reason where a scenario or `harness ref-trace` meets it (a bench report
/// records the reason alone: it times the engine without a reference).
pub const SCENARIO_REFERENCE_HINT: &str = "give the scenario a reference that can (`reference: { command: [../ci/refs/numpy-ref] }`, the numpy second implementation) or `reference: none`";

/// Why upstream llama.cpp cannot run the model at `path`, or `None` when it can (or the file
/// cannot be read here: llama.cpp then says why itself).
pub fn llama_cannot_run(path: &Path) -> Option<String> {
    let file = match bitnet_engine::gguf::GgufFile::open(path) {
        Ok(f) => f,
        // An alignment below 8 passes gguf's own check, then llama.cpp aborts on an assert.
        Err(e @ bitnet_engine::gguf::GgufError::Alignment { .. }) => {
            return Some(format!("llama.cpp aborts on this file: {e}"))
        }
        Err(_) => return None,
    };
    let arch = file
        .get("general.architecture")
        .and_then(bitnet_engine::gguf::Value::as_str)?
        .to_string();
    let known = bitnet_engine::model::Arch::from_name(&arch);
    if known.is_some_and(|a| !a.llama_cpp_runs()) {
        return Some(format!(
            "llama.cpp cannot run architecture `{arch}` (bitnet.cpp's ReLU² graph)"
        ));
    }
    let tensors = file.tensors();
    if let Some(i2s) = tensors
        .iter()
        .find(|t| t.ty == bitnet_engine::gguf::GgmlType::I2_S)
    {
        return Some(format!(
            "llama.cpp cannot read I2_S weights (type 36, bitnet.cpp's own; `{}` is one)",
            i2s.name
        ));
    }
    // Files llama.cpp's CPU build aborts on (an assert, not an error it returns): tensor data
    // off a 32-byte boundary of the file (its mapped buffers need it), and a norm weight or a
    // projection scale that is not F32 (its multiply takes F32 vectors only).
    if let Some(t) = tensors
        .iter()
        .find(|t| (file.data_offset() + t.offset) % 32 != 0)
    {
        return Some(format!(
            "llama.cpp aborts on this file: tensor `{}` starts at byte {} of it, not on a 32-byte boundary (`general.alignment` {})",
            t.name,
            file.data_offset() + t.offset,
            file.alignment()
        ));
    }
    // ggml's CPU RoPE: with `rope.dimension_count` 0 its loop over the unrotated channels steps
    // by n_rot − 2 and never ends; with an odd head size and only part of it rotated, it copies
    // those channels in pairs, one float past each row (into the next head, or another tensor).
    let u = |key: &str| {
        file.get(&format!("{arch}.{key}"))
            .and_then(bitnet_engine::gguf::Value::as_u64)
    };
    let head = match (u("embedding_length"), u("attention.head_count")) {
        (Some(e), Some(h)) if h > 0 && e % h == 0 => Some(e / h),
        _ => None,
    };
    match (u("rope.dimension_count"), head) {
        (Some(0), _) => {
            return Some(format!(
                "llama.cpp never finishes on this file: its CPU RoPE loops without end on `{arch}.rope.dimension_count` 0"
            ))
        }
        (Some(n_rot), Some(head)) if head % 2 == 1 && n_rot < head => {
            return Some(format!(
                "llama.cpp's CPU RoPE writes past each row on this file: the head size {head} is odd and `{arch}.rope.dimension_count` {n_rot} rotates only part of it, so its trace would not be its own computation"
            ))
        }
        _ => {}
    }
    if let Some(t) = tensors.iter().find(|t| {
        (t.name.ends_with("norm.weight") || t.name.ends_with(".scale"))
            && t.ty != bitnet_engine::gguf::GgmlType::F32
    }) {
        return Some(format!(
            "llama.cpp aborts on this file: `{}` is {}, and its CPU build multiplies by F32 norm weights and scales only",
            t.name, t.ty
        ));
    }
    None
}

/// Run llama.cpp on `req` in a child `harness ref-trace` process. `harness` is the path of the
/// harness binary (the running one, or `CARGO_BIN_EXE_harness` in tests).
pub fn run_reference(harness: &Path, req: &RefRequest, timeout: Duration) -> Result<(), RefError> {
    run_command(harness, &["ref-trace".to_string()], req, timeout)
}

#[cfg(test)]
mod tests {
    use super::RefBuild;

    fn build(implementation: &str, arch: &str, isa: &[&str]) -> RefBuild {
        RefBuild {
            implementation: implementation.into(),
            isa: isa.iter().map(|s| s.to_string()).collect(),
            arch: arch.into(),
            system_info: String::new(),
        }
    }

    /// Exactness needs llama.cpp's x86-64 AVX2 + FMA + F16C build without AVX-512; every other
    /// build says why not.
    #[test]
    fn the_builds_the_engine_cannot_equal_are_named() {
        let avx2 = ["avx", "avx2", "fma", "f16c"];
        assert_eq!(build("llama.cpp", "x86_64", &avx2).inexact_reason(), None);
        let why = |b: RefBuild| b.inexact_reason().unwrap_or_default();
        assert!(why(build(
            "llama.cpp",
            "x86_64",
            &["avx2", "fma", "f16c", "avx512"]
        ))
        .contains("built with AVX-512"));
        assert!(why(build("llama.cpp", "aarch64", &["neon"])).contains("built for aarch64"));
        assert!(why(build("llama.cpp", "x86_64", &["avx"])).contains("without AVX2+FMA+F16C"));
        assert!(why(build("llama.cpp", "x86_64", &[])).contains("no SIMD"));
        assert!(why(build("numpy_ref", "x86_64", &avx2)).contains("is `numpy_ref`, not llama.cpp"));
        // The llama.cpp linked here is the pinned x86-64 build: exact.
        #[cfg(all(target_arch = "x86_64", feature = "llama"))]
        assert_eq!(RefBuild::this_llama().inexact_reason(), None);
    }

    /// A scenario whose model llama.cpp cannot run is told the reason and what to write instead;
    /// `llama_cannot_run` itself gives the reason alone (what a bench report records).
    #[test]
    fn a_scenario_on_a_model_llama_cpp_cannot_run_is_told_what_to_write() {
        let d = tempfile::tempdir().unwrap();
        let model = d.path().join("i2s.gguf");
        let spec = bitnet_engine::synth::preset("i2s").unwrap();
        bitnet_engine::synth::build(&spec)
            .unwrap()
            .write(&model)
            .unwrap();
        let reason = super::llama_cannot_run(&model).unwrap();
        assert!(
            reason.starts_with("llama.cpp cannot read I2_S weights"),
            "{reason}"
        );
        assert!(!reason.contains("scenario"), "{reason}");
        let req = super::RefRequest {
            model: model.clone(),
            tokens: vec![1, 2],
            generate: 0,
            points: bitnet_engine::trace::PointFilter::all(),
            threads: 1,
            out: d.path().join("trace"),
            ubatch: None,
            nudge_embeddings: false,
            kv_cache: bitnet_engine::attention::KvType::F32,
        };
        // No process is started: the check comes first (this path names no harness binary).
        let err = super::run_scenario_reference(
            &crate::scenario::Reference::default(),
            d.path(),
            std::path::Path::new("/nonexistent/harness"),
            &req,
            std::time::Duration::from_secs(5),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, format!("{reason}; {}", super::SCENARIO_REFERENCE_HINT));
    }
}
