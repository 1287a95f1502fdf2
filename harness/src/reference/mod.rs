//! The C++ reference: llama.cpp run on the same model and tokens as the engine (DESIGN.md,
//! "reference (llama.cpp, in a subprocess)").
//!
//! [`run_reference`] starts `harness ref-trace` as a child process with a timeout; the child
//! ([`llama::run`]) loads the model with llama.cpp, runs the prompt and the greedy decode steps,
//! captures the trace points through llama.cpp's eval callback and writes the same files as
//! `harness trace`: `trace.jsonl`, `<point>.step<k>.npy`, `logits.npy`, `generated.json`.
//! A crash or `abort()` in llama.cpp fails that one run with the reference's last log lines.
//! An external command (`reference: { command: [...] }` in a scenario) is run the same way.

pub mod llama;
pub mod mapping;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bitnet_engine::trace::PointFilter;

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
}

/// Run `program args... <request args>` with a timeout, capturing its output.
pub fn run_command(
    program: &Path,
    pre_args: &[String],
    req: &RefRequest,
    timeout: Duration,
) -> Result<(), RefError> {
    let mut args = pre_args.to_vec();
    args.extend(req.args());
    run_child(program, &args, timeout)?;
    let trace = req.out.join("trace.jsonl");
    if trace.exists() {
        Ok(())
    } else {
        Err(RefError::Missing(trace))
    }
}

/// Run `program args...` in its own process group with a timeout (the group is killed when it
/// runs out); returns its standard output when it exits successfully.
pub fn run_child(program: &Path, args: &[String], timeout: Duration) -> Result<String, RefError> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(program)
        // Its own process group, so a timeout ends the reference and anything it started.
        .process_group(0)
        // Stream llama.cpp's log so its last lines survive an abort(); no gdb backtrace on abort.
        .env(llama::STREAM_LOG_ENV, "1")
        .env("GGML_NO_BACKTRACE", "1")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| RefError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() >= timeout => {
                // SAFETY: signalling the child's process group, which `process_group(0)` made.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let stdout = t_out.join().unwrap_or_default();
    let text = format!("{stdout}{}", t_err.join().unwrap_or_default());
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(25)..].join("\n");
    match status {
        None => Err(RefError::Timeout {
            seconds: timeout.as_secs(),
            tail,
        }),
        Some(s) if !s.success() => Err(RefError::Failed {
            status: s.to_string(),
            tail,
        }),
        Some(_) => Ok(stdout),
    }
}

/// Run llama.cpp on `req` in a child `harness ref-trace` process. `harness` is the path of the
/// harness binary (the running one, or `CARGO_BIN_EXE_harness` in tests).
pub fn run_reference(harness: &Path, req: &RefRequest, timeout: Duration) -> Result<(), RefError> {
    run_command(harness, &["ref-trace".to_string()], req, timeout)
}
