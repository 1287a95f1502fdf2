//! `harness calibrate` on a small scenario: llama.cpp against itself under every perturbation,
//! on token lists and text prompts, a spread table and proposed tolerances (globs per stage) no
//! tighter than the f32 floors, checked against the engine; a proposal the engine fails is named.

use std::process::Command;

#[test]
fn calibrate_proposes_tolerances_from_the_reference_spread() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    std::fs::write(
        root.join("scenarios/c.yaml"),
        "description: c\nmodel:\n  preset: tiny\ninputs:\n  tokens:\n    - [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]\n  prompts: [\"hello world\"]\ngeneration:\n  steps: 2\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(root)
        .args(["calibrate", "scenarios/c.yaml", "--factor", "8"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for label in ["threads=1", "ubatch=1", "ubatch=7", "embedding+1ulp"] {
        for input in [0, 1] {
            assert!(
                text.contains(&format!("input {input}: llama.cpp, {label}")),
                "input {input} (1: the prompt), {label}: {text}"
            );
        }
    }
    assert!(
        text.contains("checked: the engine's run of 2 inputs is within the proposed tolerances"),
        "{text}"
    );
    assert!(text.contains("proposed tolerances (spread × 8)"), "{text}");
    let cal: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("target/harness/calibrate/c/calibration.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        cal["proposed_per_point"].as_object().unwrap().len(),
        31,
        "every canonical point of the 2-layer model"
    );
    let proposed = cal["proposed"].as_object().unwrap();
    // One entry per stage (14 in a block) where the layers agree, plus the 3 points outside.
    assert!(proposed.len() < 31, "{proposed:?}");
    assert!(
        proposed.keys().filter(|k| k.starts_with("blk.*.")).count() >= 7,
        "{proposed:?}"
    );
    for p in ["embeddings", "output_norm", "logits"] {
        assert!(proposed.contains_key(p), "{p}: {proposed:?}");
    }
    for (point, t) in proposed {
        assert!(t["rel_l2_max"].as_f64().unwrap() >= 1e-6, "{point}");
        assert!(t["max_abs"].as_f64().unwrap() >= 1e-5, "{point}");
        assert!(t["cosine_min"].as_f64().unwrap() <= 1.0, "{point}");
    }
    // The spread itself is small: these perturbations should not matter.
    for sp in cal["spread"].as_array().unwrap() {
        assert!(sp["max_rel_l2"].as_f64().unwrap() < 0.05, "{sp}");
    }
}

#[test]
fn a_proposal_the_engine_fails_is_named_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    std::fs::write(
        root.join("scenarios/c.yaml"),
        "description: c\nmodel:\n  preset: tiny\ninputs:\n  tokens:\n    - [3, 1, 4, 1, 5]\n",
    )
    .unwrap();
    // A planted engine bug (test builds only): RoPE one position late, so `blk.0.q` differs
    // from llama.cpp's far beyond llama.cpp's own spread.
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(root)
        .args(["calibrate", "scenarios/c.yaml"])
        .env("BITNET_PLANT", "rope_position_plus_one")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the proposed tolerances fail this scenario's own parity check"),
        "{stderr}"
    );
    assert!(stderr.contains("blk.0.q"), "{stderr}");
}

#[test]
fn a_factor_that_is_not_a_finite_number_of_at_least_1_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    std::fs::write(
        root.join("scenarios/c.yaml"),
        "model:\n  preset: tiny\ninputs:\n  tokens:\n    - [3, 1, 4]\n",
    )
    .unwrap();
    // An infinite factor proposed `cosine_min: -inf` (any output passes); NaN and values below
    // 1 (the reference failing against itself) are as meaningless.
    for f in ["inf", "NaN", "-1", "0.5"] {
        let out = Command::new(env!("CARGO_BIN_EXE_harness"))
            .current_dir(root)
            .args(["calibrate", "scenarios/c.yaml", &format!("--factor={f}")])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{f}: {stderr}");
        assert!(
            stderr.contains("expected a finite number of at least 1"),
            "{f}: {stderr}"
        );
        assert!(!root.join("target/harness/calibrate").exists(), "{f}");
    }
}
