//! Fuzz target `tokenizer`: see `bitnet_fuzz::engine_bodies::tokenizer`. Refused input is fine; a panic,
//! an abort or a hang is a finding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = bitnet_fuzz::engine_bodies::tokenizer(data);
});
