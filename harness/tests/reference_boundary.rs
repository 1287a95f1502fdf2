//! The reference is untrusted: a child that floods its output, leaves a background process
//! holding its pipes, or outlives its timeout cannot take the harness down or hold it.

use std::path::Path;
use std::time::{Duration, Instant};

use bitnet_harness::reference::{run_child, RefError, MAX_CHILD_STDOUT};

fn sh(script: &str, timeout: Duration) -> Result<String, RefError> {
    run_child(
        Path::new("sh"),
        &["-c".to_string(), script.to_string()],
        timeout,
    )
}

#[test]
fn a_flood_on_stdout_fails_the_run_without_being_kept() {
    let n = MAX_CHILD_STDOUT + (1 << 20);
    let e = sh(
        &format!("head -c {n} /dev/zero | tr '\\0' x"),
        Duration::from_secs(60),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("printed more than"), "{e}");
    // Output under the cap is returned whole.
    let ok = sh("printf 'a\\nb\\n'", Duration::from_secs(60)).unwrap();
    assert_eq!(ok, "a\nb\n");
}

#[test]
fn an_endless_flood_is_stopped_at_the_cap_and_quoted_in_short() {
    // One line without end: stopped as soon as it passes the cap, not at the timeout, and the
    // error quotes a few hundred characters of it, not megabytes.
    let t = Instant::now();
    let e = sh("tr '\\0' x < /dev/zero", Duration::from_secs(300))
        .unwrap_err()
        .to_string();
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    assert!(
        e.contains("printed more than") && e.contains("was stopped"),
        "{e:.300}"
    );
    assert!(e.len() < 2000, "{} bytes: {e:.300}", e.len());
}

#[test]
fn a_background_child_holding_the_pipes_does_not_hold_the_harness() {
    // Exits 0 at once, leaving `sleep 30` with its stdout and stderr: the group is killed when the
    // reference exits, so the pipes close and the call returns long before the sleep would end.
    let t = Instant::now();
    let out = sh("sleep 30 & echo done", Duration::from_secs(120)).unwrap();
    assert_eq!(out, "done\n");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

#[test]
fn a_hanging_child_times_out_with_its_last_output() {
    let t = Instant::now();
    let e = sh("echo started >&2; sleep 30", Duration::from_secs(1)).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    match e {
        RefError::Timeout { tail, .. } => assert!(tail.contains("started"), "{tail}"),
        other => panic!("{other}"),
    }
}

/// A reference's trace directory is whole or absent: it writes into a sibling renamed into place
/// only on success, so a failed run leaves no half-written directory, and a new run leaves no
/// file of an earlier one.
#[test]
fn the_trace_directory_is_replaced_whole_or_not_at_all() {
    use bitnet_engine::trace::PointFilter;
    use bitnet_harness::reference::{run_command, RefRequest};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("reference");
    let req = RefRequest {
        model: dir.path().join("m.gguf"),
        tokens: vec![1, 2],
        generate: 0,
        points: PointFilter::all(),
        threads: 1,
        out: out.clone(),
        ubatch: None,
        nudge_embeddings: false,
        kv_cache: Default::default(),
    };
    // The output directory is the last argument.
    let run = |script: &str| {
        run_command(
            Path::new("sh"),
            &[
                "-c".into(),
                format!("eval d=\\${{$#}}; {script}"),
                "ref".into(),
            ],
            &req,
            Duration::from_secs(60),
        )
    };
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("stale.step3.npy"), b"old").unwrap();
    run(r#"mkdir -p "$d" && echo '{}' > "$d/trace.jsonl" && echo new > "$d/x.npy""#).unwrap();
    assert!(out.join("x.npy").is_file() && !out.join("stale.step3.npy").exists());
    // A failing run (after writing part of its files) leaves the last good directory as it was.
    let e = run(r#"mkdir -p "$d" && echo partial > "$d/trace.jsonl"; exit 3"#).unwrap_err();
    assert!(e.to_string().contains("failed"), "{e}");
    assert_eq!(std::fs::read_to_string(out.join("x.npy")).unwrap(), "new\n");
    // Nothing of the failed run is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A reference that exits 0 without a trace: missing, and no directory renamed into place.
    std::fs::remove_dir_all(&out).unwrap();
    let e = run(r#"mkdir -p "$d""#).unwrap_err();
    assert!(e.to_string().contains("wrote no"), "{e}");
    assert!(!out.exists());
}

/// Whether process `pid` has ended (gone, or a zombie nobody has reaped yet).
fn ended(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name in parentheses: `pid (comm) S ...`.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// `harness run` with an external reference whose process `body` (shell) records the pid of into
/// `$PID_FILE` and then hangs; the harness is sent `signal` once that pid is written. Returns the
/// pid and whether the process ended within 20 s of the harness's end.
fn reference_outlives_a_signalled_harness(body: &str, signal: i32) -> (i32, bool) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    let pid_file = root.join("ref.pid");
    let script = root.join("hang-ref");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nPID_FILE='{}'\n{body}\n", pid_file.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        root.join("scenarios/h.yaml"),
        "model:\n  preset: tiny\ninputs:\n  tokens: [[1, 17, 300]]\ngolden: false\nthreads: 1\nreference:\n  command: [../hang-ref]\n",
    )
    .unwrap();
    let mut harness = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(root)
        .args(["run", "--filter", "parity"])
        .env_remove("CI")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            break pid;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the reference never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: signalling the harness process this test started.
    unsafe { libc::kill(harness.id() as i32, signal) };
    harness.wait().unwrap();
    let t = Instant::now();
    while !ended(pid) && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let gone = ended(pid);
    if !gone {
        // SAFETY: clean up the stray reference this test made.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    (pid, gone)
}

#[test]
fn a_reference_does_not_outlive_a_harness_that_is_terminated_or_killed() {
    // SIGTERM: the harness kills each child's whole process group before it exits, so a
    // grandchild of the reference ends too.
    let (pid, gone) = reference_outlives_a_signalled_harness(
        "sleep 120 &\necho $! > \"$PID_FILE\"\nwait",
        libc::SIGTERM,
    );
    assert!(
        gone,
        "the reference's child (pid {pid}) outlived a harness ended by SIGTERM"
    );
    // SIGKILL: nothing runs in the harness; the kernel ends its direct child (PR_SET_PDEATHSIG).
    let (pid, gone) = reference_outlives_a_signalled_harness(
        "echo $$ > \"$PID_FILE\"\nexec sleep 120",
        libc::SIGKILL,
    );
    assert!(
        gone,
        "the reference (pid {pid}) outlived a harness ended by SIGKILL"
    );
}
