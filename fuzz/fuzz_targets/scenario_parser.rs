//! Fuzz target `scenario_parser`: see `bitnet_fuzz::harness_bodies::scenario_parser`.
//! Refused input is fine; a panic, an abort or a hang is a finding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bitnet_fuzz::harness_bodies::scenario_parser(data);
});
