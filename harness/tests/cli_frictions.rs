//! Smaller frictions of issue 16 (item 10): `list --help` offers only what `list` uses, the
//! reference's run time is its own row (in the output, report.json and report.html), not charged
//! to the first check that needs it, and output into a closed pipe ends quietly for every command.

use std::process::Command;

fn harness() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_harness"));
    c.env_remove("CI");
    c
}

/// `harness gen-model --preset tiny -o m.gguf` in `d`.
fn tiny_model(d: &std::path::Path) {
    let out = harness()
        .args(["gen-model", "--preset", "tiny", "-o", "m.gguf"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn list_help_shows_only_the_options_list_uses() {
    let help = |cmd: &str| {
        let out = harness().args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (list, run) = (help("list"), help("run"));
    for opt in ["--jobs", "--out", "--receipts", "--root"] {
        assert!(!list.contains(opt), "list --help offers {opt}:\n{list}");
        assert!(run.contains(opt), "run --help lacks {opt}:\n{run}");
    }
    assert!(list.contains("--filter"), "{list}");
}

#[test]
fn the_reference_run_time_is_its_own_row() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scenarios")).unwrap();
    // llama.cpp behind a script that takes a second first: a slow reference.
    let script = dir.path().join("slow-ref");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nsleep 1\nexec '{}' ref-trace \"$@\"\n",
            env!("CARGO_BIN_EXE_harness")
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.path().join("scenarios/r.yaml"),
        "model:\n  preset: tiny\ninputs:\n  tokens: [[1, 17, 300]]\ngolden: false\nthreads: 1\nreference:\n  command: [../slow-ref]\n",
    )
    .unwrap();
    let out = harness()
        .args(["run", "--filter", "parity"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("scenarios::r: reference (`../slow-ref`) ... ran in "))
        .unwrap_or_else(|| panic!("no reference row:\n{stdout}"));
    let secs = |l: &str, after: &str| -> f64 {
        let rest = &l[l.find(after).unwrap() + after.len()..];
        rest.split(' ')
            .next()
            .unwrap()
            .trim_end_matches('s')
            .parse()
            .unwrap()
    };
    let reference = secs(line, "ran in ");
    assert!(
        stdout.contains("reference runs (not in the checks' times): r "),
        "{stdout}"
    );
    // The parity check's own time leaves the reference's run out.
    let check = stdout
        .lines()
        .find(|l| l.contains("scenarios::r::parity ... pass ("))
        .unwrap();
    let parity = secs(check, "pass (");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("target/harness/report.json")).unwrap(),
    )
    .unwrap();
    let row = report["rows"][0]["verdict"]["seconds"].as_f64().unwrap();
    assert!(reference >= 1.0, "{stdout}");
    // report.json and report.html carry the reference's row too.
    let refs = report["references"]
        .as_array()
        .expect("references in report.json");
    assert_eq!(refs.len(), 1, "{refs:?}");
    assert_eq!(refs[0]["scenario"], "r");
    assert_eq!(refs[0]["reference"], "`../slow-ref`");
    let json_secs = refs[0]["seconds"].as_f64().unwrap();
    assert!(
        (json_secs - reference).abs() < 0.01,
        "{json_secs} vs {reference}"
    );
    let html = std::fs::read_to_string(dir.path().join("target/harness/report.html")).unwrap();
    let table = &html[html
        .find("<table id=\"reference-times\">")
        .expect("reference table")..];
    assert!(
        table.contains("<td>`../slow-ref`</td>") && table.contains(&format!("{reference:.2} s")),
        "{table}"
    );
    assert!(
        parity < 1.0 && row < 1.0,
        "parity {parity} s / {row} s should not include the reference's {reference} s:\n{stdout}"
    );
}

/// Run `harness args` in `dir` with its standard output (and, with `close_stderr`, its standard
/// error) a pipe whose reader is gone before anything is written (`| head -0`).
fn into_closed_pipe(dir: &std::path::Path, args: &[&str], close_stderr: bool) -> (i32, String) {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = harness()
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    if close_stderr {
        drop(child.stderr.take());
    } else {
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
    }
    let status = child.wait().unwrap();
    (status.code().unwrap_or(-1), err)
}

#[test]
fn every_command_ends_quietly_into_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("scenarios")).unwrap();
    std::fs::write(
        d.join("scenarios/p.yaml"),
        "model:\n  preset: tiny\ninputs:\n  tokens: [[1, 17, 300]]\ngolden: false\nthreads: 1\n",
    )
    .unwrap();
    tiny_model(d);
    let commands: [&[&str]; 11] = [
        &["run", "--filter", "parity"],
        &["list"],
        &["schema"],
        &["schema", "--receipt"],
        &["preflight"],
        &["preflight", "--json"],
        &["gen-model", "--preset", "tiny", "-o", "n.gguf"],
        &["trace", "m.gguf", "--tokens", "1,17", "-o", "t"],
        &["tokenize", "m.gguf", "--prompt", "hello"],
        &["ref-tokenize", "m.gguf", "--prompt", "hello"],
        &["--help"],
    ];
    for args in commands {
        for close_stderr in [false, true] {
            let (code, err) = into_closed_pipe(d, args, close_stderr);
            assert!(!err.contains("panicked"), "{args:?}: {err}");
            assert_eq!(code, 0, "{args:?} (stderr closed: {close_stderr}): {err}");
        }
    }
    // The run still wrote its reports, its output having gone nowhere.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("target/harness/report.json")).unwrap())
            .unwrap();
    assert_eq!(report["passed"], 1, "{report}");
}

#[test]
fn a_failure_to_write_standard_output_is_an_error() {
    // /dev/full: every write fails with "No space left on device", which is not a closed pipe.
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("skipped: this machine has no /dev/full");
        return;
    };
    let out = harness().args(["schema"]).stdout(full).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("cannot write to standard output") && err.contains("No space left"),
        "{err}"
    );
}

/// Text from files (a model's metadata, a scenario's YAML) reaches the terminal with its control
/// characters shown, not sent: an ESC in a model's name cannot clear the user's screen.
#[test]
fn terminal_controls_in_files_are_shown_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.gguf");
    let mut w =
        bitnet_engine::synth::build(&bitnet_engine::synth::preset("tiny").unwrap()).unwrap();
    w.add_kv("general.name", "evil\u{1b}[2J\u{1b}]0;owned\u{7}name");
    w.write(&model).unwrap();
    let out = harness().arg("inspect").arg(&model).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    assert!(text.contains("evil\\u{1b}[2J"), "{text}");
    std::fs::create_dir_all(dir.path().join("scenarios")).unwrap();
    std::fs::write(
        dir.path().join("scenarios/s.yaml"),
        "description: x\nmodel:\n  preset: tiny\ninputs:\n  tokens: [[1]]\n\"bogus\\e[2J\": 1\n",
    )
    .unwrap();
    let out = harness()
        .current_dir(dir.path())
        .args(["list"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        !text.contains('\u{1b}') && text.contains("bogus\\u{1b}[2J"),
        "{text}"
    );
}

#[test]
fn two_scenario_files_of_one_stem_are_refused_and_one_file_named_twice_is_one() {
    // Trials, runs, goldens and receipts are keyed by the file stem: `a/same.yaml` and
    // `b/same.yaml` would share one run, the second judged on the first's.
    let dir = tempfile::tempdir().unwrap();
    for sub in ["a", "b"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        std::fs::write(
            dir.path().join(sub).join("same.yaml"),
            "model:\n  preset: tiny\ninputs:\n  tokens: [[1, 2, 3]]\ngolden: false\n",
        )
        .unwrap();
    }
    let out = harness()
        .args(["list", "a/same.yaml", "b/same.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`a/same.yaml` and `b/same.yaml` are both scenario `same`"),
        "{err}"
    );
    // The same file twice (also through another spelling of its path) lists its trials once.
    let listed = |args: &[&str]| {
        let out = harness()
            .arg("list")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        listed(&["a/same.yaml", "./a/same.yaml", "a/../a/same.yaml"]),
        listed(&["a/same.yaml"])
    );
}

#[test]
fn a_receipt_that_cannot_be_written_fails_the_run_and_long_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scenarios")).unwrap();
    std::fs::write(
        dir.path().join("scenarios/r.yaml"),
        "model:\n  preset: tiny\ninputs:\n  tokens: [[1, 2, 3]]\ngolden: false\nreference: none\nthreads: 1\n",
    )
    .unwrap();
    // A directory where the receipt goes: the checks pass, the proof cannot be written.
    std::fs::create_dir_all(dir.path().join("receipts/r.json/x")).unwrap();
    let out = harness()
        .args(["run", "--filter", "engine"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: cannot write the receipt of r")
            && err.contains("the receipts of r could not be written"),
        "{err}"
    );
    // A stem too long for the receipt's temporary file is refused when the scenarios are read.
    let long = "s".repeat(201);
    std::fs::write(
        dir.path().join(format!("scenarios/{long}.yaml")),
        "model:\n  preset: tiny\ninputs:\n  tokens: [[1, 2, 3]]\n",
    )
    .unwrap();
    let out = harness()
        .args(["list"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is 201 bytes") && err.contains("keep it to 200"),
        "{err}"
    );
}

#[test]
fn a_root_that_is_not_a_directory_is_refused_not_created() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scenarios")).unwrap();
    std::fs::write(
        dir.path().join("scenarios/r.yaml"),
        "model:\n  preset: tiny\ninputs:\n  tokens: [[1, 2, 3]]\ngolden: false\nreference: none\n",
    )
    .unwrap();
    let missing = dir.path().join("no/such/root");
    let out = harness()
        .args(["run", "scenarios/r.yaml", "--root"])
        .arg(&missing)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is not a directory"), "{err}");
    assert!(!missing.exists() && !dir.path().join("no").exists());
}

#[test]
fn the_kv_pages_setting_is_checked_and_both_values_trace_the_same_bits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_model(d);
    let trace = |pages: &str, to: &str| {
        harness()
            .args([
                "trace",
                "m.gguf",
                "--tokens",
                "1,17,300,42",
                "--generate",
                "3",
                "-o",
                to,
            ])
            .env("BITNET_KV_PAGES", pages)
            .current_dir(d)
            .output()
            .unwrap()
    };
    let bad = trace("enormous", "t0");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(
        err.contains("BITNET_KV_PAGES") && err.contains("enormous") && err.contains("`huge`"),
        "{err}"
    );
    let (small, huge) = (trace("small", "t1"), trace("huge", "t2"));
    assert!(
        small.status.success() && huge.status.success(),
        "{small:?} {huge:?}"
    );
    let logits = |t: &str| std::fs::read(d.join(t).join("logits.npy")).unwrap();
    assert_eq!(logits("t1"), logits("t2"));
}
