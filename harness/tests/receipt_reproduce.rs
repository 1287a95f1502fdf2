//! `harness verify-receipt --reproduce`: the receipt's scenario re-run on the engine side here
//! confirms the trace digest and the recorded throughput within a factor; a receipt whose digest
//! or tokens/s were forged consistently (so every other check passes) is refused with exit 22.

use std::path::Path;

use serde_json::Value;

mod common;
use common::{harness, text};

fn edit(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn reproduce_confirms_a_real_receipt_and_refuses_forged_figures() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    std::fs::write(
        root.join("scenarios/small.yaml"),
        "description: small\nmodel:\n  preset: tiny\ninputs:\n  tokens:\n    - [1, 2, 3, 4]\ngeneration:\n  steps: 3\ngolden: false\nreference: none\n",
    )
    .unwrap();
    let out = harness(root, &["run"]);
    assert!(out.status.success(), "{}", text(&out));
    let receipt = root.join("receipts/small.json");
    let good = std::fs::read(&receipt).unwrap();

    // The genuine receipt reproduces (a wide factor: the machine is shared and a tiny model's
    // decode takes milliseconds).
    let args = [
        "verify-receipt",
        "receipts/small.json",
        "--reproduce",
        "--tps-factor",
        "100",
    ];
    let out = harness(root, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("reproduced: trace digest"),
        "{}",
        text(&out)
    );

    // A digest that is not this scenario's: the plain gate (no goldens here) accepts it, the
    // reproduction does not.
    edit(&receipt, |v| {
        v["trace_digest"] = Value::from("ab".repeat(32))
    });
    let out = harness(root, &["verify-receipt", "receipts/small.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = harness(root, &args);
    assert_eq!(out.status.code(), Some(22), "{}", text(&out));
    assert!(
        text(&out).contains("the engine's trace here has digest"),
        "{}",
        text(&out)
    );

    // A decode rate inflated a thousandfold, in range for the plain gate.
    std::fs::write(&receipt, &good).unwrap();
    edit(&receipt, |v| {
        let tps = v["throughput"]["decode_tps"].as_f64().unwrap();
        v["throughput"]["decode_tps"] = Value::from(tps * 1000.0);
    });
    let out = harness(root, &["verify-receipt", "receipts/small.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = harness(root, &args);
    assert_eq!(out.status.code(), Some(22), "{}", text(&out));
    assert!(
        text(&out).contains("tokens/s recorded") && text(&out).contains("outside a factor of 100"),
        "{}",
        text(&out)
    );

    // A factor below 1 is a usage error.
    let out = harness(
        root,
        &[
            "verify-receipt",
            "receipts/small.json",
            "--reproduce",
            "--tps-factor",
            "0.5",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
