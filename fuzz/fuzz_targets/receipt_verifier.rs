//! Fuzz target `receipt_verifier`: see `bitnet_fuzz::harness_bodies::receipt_verifier`.
//! Refused input is fine; a panic, an abort or a hang is a finding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bitnet_fuzz::harness_bodies::receipt_verifier(data);
});
