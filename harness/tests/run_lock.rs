//! One `harness run` at a time per checkout: a second one fails at once, naming the holder,
//! instead of deleting the first one's run directories and overwriting its report.

use std::process::Command;
use std::time::Duration;

#[test]
fn a_second_run_in_the_same_checkout_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    // A reference that takes a few seconds (then fails), so the first run holds the lock.
    std::fs::write(
        root.join("scenarios/slow.yaml"),
        "description: slow\nmodel:\n  preset: tiny\ninputs:\n  tokens:\n    - [1, 2]\ngolden: false\nreference:\n  command: [sh, -c, \"sleep 4; exit 1\"]\n",
    )
    .unwrap();
    let harness = env!("CARGO_BIN_EXE_harness");
    let mut first = Command::new(harness)
        .current_dir(root)
        .args(["run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Until the first run has taken the lock (it writes its pid into the file).
    let lock = root.join("target/harness/run.lock");
    for _ in 0..200 {
        if std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("pid")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = Command::new(harness)
        .current_dir(root)
        .args(["run"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(
        err.contains("another `harness run` holds") && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
    // The first run goes on to its own verdict (its reference fails: exit 1).
    assert_eq!(first.wait().unwrap().code(), Some(1));
    // And the lock is free again.
    let third = Command::new(harness)
        .current_dir(root)
        .args(["run", "--filter", "engine"])
        .output()
        .unwrap();
    assert_eq!(
        third.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&third.stdout)
    );
}
