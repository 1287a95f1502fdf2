//! Goldens as a new user meets them: a copied scenario with a new prompt has no golden (the run
//! fails and says how to bless), `harness bless` writes it, the next run passes; changing one
//! weight of the model fails the `golden` check with a diff naming the first changed point. The
//! golden files are insta snapshots: insta itself reads them.

use std::path::Path;

mod common;
use common::{harness, text};

#[test]
fn missing_golden_bless_pass_then_a_changed_weight_fails_naming_the_point() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    // A model file the user can edit, and a scenario copied from tiny with another prompt.
    let model = root.join("model.gguf");
    let out = harness(
        root,
        &[
            "gen-model",
            "--preset",
            "tiny",
            "-o",
            model.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let tiny = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/tiny.yaml"),
    )
    .unwrap();
    let mine = tiny
        .replace("  preset: tiny", "  path: ../model.gguf")
        .replace("[1, 17, 300, 42, 5, 99, 250, 7]", "[9, 99, 199, 299]")
        .replace("prefill_chunks: [1, 3]", "reference: none");
    std::fs::write(root.join("scenarios/mine.yaml"), mine).unwrap();

    let out = harness(root, &["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("missing golden `goldens/mine.snap`") && t.contains("harness bless mine"),
        "{t}"
    );
    assert!(root.join("goldens/mine.snap.new").exists());

    let out = harness(root, &["bless", "mine"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(root.join("goldens/mine.snap").exists());
    assert!(!root.join("goldens/mine.snap.new").exists());
    let out = harness(root, &["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // insta reads the snapshot: its body equals what the harness wrote.
    let body = std::fs::read_to_string(root.join("goldens/mine.snap")).unwrap();
    let body = bitnet_harness::golden::snapshot_body(&body).to_string();
    insta::with_settings!({ snapshot_path => root.join("goldens"), prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("mine", body);
    });

    // Change one ternary weight of blk.1.ffn_up: the first traced point it reaches is
    // blk.1.ffn_act of the prefill.
    let f = bitnet_engine::gguf::GgufFile::open(&model).unwrap();
    let t = f.tensor("blk.1.ffn_up.weight").unwrap();
    let at = (f.data_offset() + t.offset) as usize;
    drop(f);
    let mut bytes = std::fs::read(&model).unwrap();
    // The first 2-bit code of the first block: −1, 0, +1 are codes 0, 1, 2; move it by one.
    let code = bytes[at] & 3;
    bytes[at] = (bytes[at] & !3) | ((code + 1) % 3);
    std::fs::write(&model, bytes).unwrap();
    let out = harness(root, &["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("golden `goldens/mine.snap` differs, first at `input 0 | blk.1.ffn_act step 0`"),
        "{t}"
    );
    assert!(t.contains("harness bless mine"), "{t}");
}

/// A run that cannot write the candidate golden says so, and offers only `harness bless`
/// (`harness review` would find nothing pending).
#[test]
fn a_candidate_that_cannot_be_written_is_named_and_review_is_not_offered() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    std::fs::write(
        root.join("scenarios/s.yaml"),
        "description: x\nmodel:\n  preset: tiny\ninputs:\n  tokens:\n    - [1, 2, 3]\nreference: none\n",
    )
    .unwrap();
    // A directory where the candidate would go.
    std::fs::create_dir_all(root.join("goldens/s.snap.new")).unwrap();
    let out = common::harness(root, &["run"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("no candidate for `harness review`: cannot write `")
            && t.contains("accept it with `harness bless s`")
            && !t.contains("`harness bless s` or `harness review`"),
        "{t}"
    );
}
