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
