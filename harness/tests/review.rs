//! `harness review`, the golden review flow every golden failure suggests: a run leaves
//! `goldens/<scenario>.snap.new`; `harness review` shows the first changed points and reads
//! y/n/s/q from standard input (here piped); `--accept-all` and `--reject-all` need no answer.
//! The messages name only commands that work (no `cargo insta review`: cargo-insta does not look
//! in `goldens/`).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
use common::text;

fn harness(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(dir)
        .args(args)
        .env_remove("CI")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn scenario(root: &Path, name: &str, steps: usize) {
    std::fs::write(
        root.join(format!("scenarios/{name}.yaml")),
        format!("description: x\nmodel:\n  preset: tiny\ninputs:\n  tokens:\n    - [1, 2, 3]\ngeneration:\n  steps: {steps}\nreference: none\n"),
    )
    .unwrap();
}

#[test]
fn review_accepts_rejects_skips_and_quits_as_answered() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    scenario(root, "one", 2);
    scenario(root, "two", 2);
    let g = root.join("goldens");

    // No golden yet: the run fails, leaves candidates, and names the review command.
    let out = harness(root, &["run"], "");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("`harness review`") && !t.contains("cargo insta"),
        "{t}"
    );
    assert!(g.join("one.snap.new").exists() && g.join("two.snap.new").exists());

    // Skip the first, then the input ends: both stay pending.
    let out = harness(root, &["review"], "s\n");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("a new golden `goldens/one.snap`"), "{t}");
    assert!(t.contains("+input 0 | embeddings step 0"), "{t}");
    assert!(
        t.contains("end of input") && t.contains("0 accepted, 0 rejected, 2 still pending"),
        "{t}"
    );
    assert!(g.join("one.snap.new").exists() && !g.join("one.snap").exists());

    // A wrong answer is asked again; accept the first, quit before the second.
    let out = harness(root, &["review"], "maybe\ny\nq\n");
    let t = text(&out);
    assert!(t.contains("`maybe` is not an answer"), "{t}");
    assert!(t.contains("1 accepted, 0 rejected, 1 still pending"), "{t}");
    assert!(g.join("one.snap").exists() && !g.join("one.snap.new").exists());
    assert!(g.join("two.snap.new").exists());

    // Accept the rest without asking; the run passes.
    let out = harness(root, &["review", "--accept-all"], "");
    assert!(text(&out).contains("1 accepted"), "{}", text(&out));
    let out = harness(root, &["run"], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = harness(root, &["review"], "");
    assert!(text(&out).contains("no pending goldens"), "{}", text(&out));

    // A change: the review shows the first changed point and the lines; reject it.
    scenario(root, "one", 3);
    scenario(root, "two", 3);
    let out = harness(root, &["run"], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let golden_before = std::fs::read_to_string(g.join("one.snap")).unwrap();
    let out = harness(root, &["review", "one", "--lines", "100"], "n\n");
    let t = text(&out);
    assert!(
        t.contains("changes `goldens/one.snap`")
            && t.contains("first at `input 0 | embeddings step 2`"),
        "{t}"
    );
    assert!(t.contains("+input 0 | blk.0.q step 2"), "{t}");
    assert!(!t.contains("-input 0 | blk.0.q step 1"), "{t}");
    assert!(
        t.contains("-input 0 | generated") && t.contains("+input 0 | generated"),
        "{t}"
    );
    assert!(t.contains("rejected"), "{t}");
    assert!(!g.join("one.snap.new").exists());
    assert_eq!(
        std::fs::read_to_string(g.join("one.snap")).unwrap(),
        golden_before
    );

    // Reject all; an unknown name is bad usage with a suggestion.
    let out = harness(root, &["review", "tow"], "");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("did you mean `two`?"), "{t}");
    let out = harness(root, &["review", "--reject-all"], "");
    assert!(text(&out).contains("1 rejected"), "{}", text(&out));
    assert!(!g.join("two.snap.new").exists());
    let out = harness(root, &["review", "--accept-all", "--reject-all"], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn the_readme_and_messages_suggest_no_review_command_that_finds_nothing() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["../README.md", "src/golden.rs", "src/run.rs"] {
        let text = std::fs::read_to_string(manifest.join(file)).unwrap();
        assert!(
            !text.contains("or `cargo insta review`") && !text.contains("# or: cargo insta review"),
            "{file} still suggests `cargo insta review`"
        );
    }
}

/// Only golden snapshots are reviewed and accepted: an empty file, plain text, or a link (which
/// would copy what it points at into `goldens/`) is refused naming the file and line, nothing is
/// written; a `goldens` directory that is not there is an error, not "nothing pending"; and a
/// malformed golden fails the `golden` check as malformed, not as a divergence.
#[test]
fn only_golden_snapshots_are_reviewed_and_a_malformed_golden_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let g = root.join("goldens");
    std::fs::create_dir_all(&g).unwrap();
    std::fs::write(root.join("secret.txt"), "not a golden\n").unwrap();
    let cases: Vec<(&str, &str)> = vec![
        ("", "its body is empty"),
        (
            "---\nsource: x\nexpression: a\n---\nhello world\n",
            "line 5: expected `input N | POINT step S",
        ),
        (
            "input 0 | embeddings step 0 | shape [1, 4] | rms 1.0e0 | blake3 00\n",
            "line 1: expected",
        ),
    ];
    for (text_, says) in &cases {
        std::fs::write(g.join("a.snap.new"), text_).unwrap();
        let out = harness(root, &["review", "--accept-all"], "");
        let t = text(&out);
        assert_ne!(out.status.code(), Some(0), "{says}: {t}");
        assert!(
            t.contains("a.snap.new` is not a golden snapshot") && t.contains(says),
            "{says}: {t}"
        );
        assert!(!g.join("a.snap").exists(), "{says}");
    }
    std::fs::remove_file(g.join("a.snap.new")).unwrap();
    std::os::unix::fs::symlink(root.join("secret.txt"), g.join("a.snap.new")).unwrap();
    let out = harness(root, &["review", "--accept-all"], "");
    let t = text(&out);
    assert_ne!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("it is a symbolic link"), "{t}");
    assert!(!g.join("a.snap").exists());
    std::fs::remove_file(g.join("a.snap.new")).unwrap();

    let out = harness(root, &["review", "--goldens", "nowhere"], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("`nowhere` is not a directory of goldens"));

    // A golden cut short to its header: the check says so.
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    scenario(root, "one", 0);
    std::fs::write(g.join("one.snap"), "---\nsource: x\nexpression: one\n---\n").unwrap();
    let out = harness(root, &["run"], "");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("one.snap` is not a golden snapshot: its body is empty"),
        "{t}"
    );
    assert!(!t.contains("diverges"), "{t}");
}

/// One pending golden that cannot be read does not stop the review: the others are handled,
/// `--reject-all` removes it too, and `--accept-all` leaves it pending and fails naming it.
#[test]
fn an_unreadable_pending_golden_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("goldens")).unwrap();
    let good = "input 0 | x step 0 | shape [1] | rms 1.00000e0 | blake3 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let put = || {
        std::fs::write(root.join("goldens/a.snap.new"), [0xffu8, 0, 1, 2, 0xfe]).unwrap();
        bitnet_harness::golden::write_pending(&root.join("goldens"), "b", good).unwrap();
    };
    put();
    let out = harness(root, &["review", "--accept-all"], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("goldens/a.snap.new") && t.contains("1 accepted"),
        "{t}"
    );
    assert!(root.join("goldens/b.snap").exists());
    assert!(root.join("goldens/a.snap.new").exists());
    put();
    let out = harness(root, &["review", "--reject-all"], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("2 rejected"), "{}", text(&out));
    assert!(!root.join("goldens/a.snap.new").exists() && !root.join("goldens/b.snap.new").exists());
}

/// Review finds the project's goldens from a directory inside it, as `bless` does.
#[test]
fn review_works_from_inside_the_project() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    let body = "input 0 | x step 0 | shape [1] | rms 1.00000e0 | blake3 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    bitnet_harness::golden::write_pending(&root.join("goldens"), "s", body).unwrap();
    let out = harness(&root.join("scenarios"), &["review", "--accept-all"], "");
    assert!(out.status.success(), "{}", text(&out));
    assert!(root.join("goldens/s.snap").exists(), "{}", text(&out));
}
