//! The harness's fuzz seed corpora (`tests/fuzz_cases/<target>/`: scenarios and receipts),
//! replayed through the very functions the fuzz targets run (`fuzz/src/harness_bodies.rs`,
//! included by path): each seed gives the result its `.expected` file states and none panics.
//! The seeds are issue 15's hostile inputs (`kl_max: .nan`, 2^63 steps, YAML nested 50,000 deep,
//! the forged receipts: tokens/s of 5e-324, a missing or device model, a duration of 1e19,
//! kernels switched or cut, a failing verdict dropped, an arbitrary commit, ...) and the valid
//! files the fuzzer starts from. Receipt seeds name the fixture's hashes as `@MODEL_BLAKE3@`,
//! `@SCENARIO_BLAKE3@`, `@TRACE_DIGEST@` and `@GIT_COMMIT@`.

#[allow(dead_code)]
#[path = "../../fuzz/src/harness_bodies.rs"]
mod bodies;
#[path = "../../fuzz/src/seeds.rs"]
mod seeds;

use std::path::{Path, PathBuf};

fn cases(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_cases")
        .join(target)
}

#[test]
fn scenario_parser_seeds() {
    assert!(seeds::replay(&cases("scenario_parser"), &bodies::scenario_parser) >= 25);
}

#[test]
fn receipt_verifier_seeds() {
    let fx = bodies::ReceiptFixture::new(true);
    let n = seeds::replay(&cases("receipt_verifier"), &|data| {
        bodies::receipt_verifier_in(&fx, data)
    });
    assert!(n >= 35);
}
