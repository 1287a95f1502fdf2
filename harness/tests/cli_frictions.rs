//! Smaller frictions of issue 16 (item 10): `list --help` offers only what `list` uses, and the
//! reference's run time is its own row, not charged to the first check that needs it.

use std::process::Command;

fn harness() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_harness"));
    c.env_remove("CI");
    c
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
    assert!(
        parity < 1.0 && row < 1.0,
        "parity {parity} s / {row} s should not include the reference's {reference} s:\n{stdout}"
    );
}
