//! `harness calibrate` on a small scenario: llama.cpp against itself under every perturbation,
//! a spread table and proposed tolerances no tighter than the f32 floors.

use std::process::Command;

#[test]
fn calibrate_proposes_tolerances_from_the_reference_spread() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    std::fs::write(
        root.join("scenarios/c.yaml"),
        "description: c\nmodel:\n  preset: tiny\ninputs:\n  tokens:\n    - [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]\ngeneration:\n  steps: 2\n",
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
        assert!(
            text.contains(&format!("llama.cpp, {label}")),
            "{label}: {text}"
        );
    }
    assert!(text.contains("proposed tolerances (spread × 8)"), "{text}");
    let cal: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("target/harness/calibrate/c/calibration.json")).unwrap(),
    )
    .unwrap();
    let proposed = cal["proposed"].as_object().unwrap();
    assert_eq!(
        proposed.len(),
        31,
        "every canonical point of the 2-layer model"
    );
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
