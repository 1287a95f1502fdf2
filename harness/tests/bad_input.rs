//! Bad input is reported before anything runs, as one error per bad file with its
//! file:line:col, and exit code 2 (issue 16, friction 8).

use std::process::Command;

fn harness() -> Command {
    Command::new(env!("CARGO_BIN_EXE_harness"))
}

#[test]
fn an_out_of_vocabulary_token_is_one_usage_error_before_any_check_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scenarios")).unwrap();
    std::fs::write(
        dir.path().join("scenarios/oov.yaml"),
        "model:\n  preset: tiny\ninputs:\n  tokens: [[1, 9999]]\nreference: none\n",
    )
    .unwrap();
    let out = harness()
        .arg("run")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("scenarios/oov.yaml:4:16: token id `9999`"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stdout.contains("[1/"), "no check may run: {stdout}");
}

#[test]
fn every_bad_file_of_a_directory_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("scenarios");
    std::fs::create_dir(&s).unwrap();
    let good = "model:\n  preset: tiny\ninputs:\n  tokens: [[1, 2]]\n";
    std::fs::write(s.join("a_good.yaml"), good).unwrap();
    std::fs::write(s.join("b_typo.yaml"), format!("{good}thread: 1\n")).unwrap();
    std::fs::write(s.join("c_oov.yaml"), good.replace("2]]", "512]]")).unwrap();
    for cmd in ["list", "run"] {
        let out = harness()
            .args([cmd, "scenarios"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {stderr}");
        assert!(
            stderr.contains("b_typo.yaml:5:1: unknown field `thread`"),
            "{cmd}: {stderr}"
        );
        assert!(
            stderr.contains("c_oov.yaml:4:16: token id `512`"),
            "{cmd}: {stderr}"
        );
        assert!(
            stderr.contains("2 of 3 scenario files are invalid"),
            "{cmd}: {stderr}"
        );
        assert!(!dir.path().join("target/harness/report.json").exists());
    }
}
