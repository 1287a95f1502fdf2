//! Longer-running companion of `engine/tests/gguf_bad_files.rs`: any bytes, no panic.
//! Run with `cargo +nightly fuzz run gguf_read` from `engine/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = bitnet_engine::gguf::GgufFile::from_bytes(data.to_vec(), "fuzz.gguf") {
        for t in f.tensors() {
            let bytes = f.tensor_data(t);
            assert_eq!(bytes.len() as u64, t.n_bytes);
            if t.n_elements() < 1 << 20 {
                let _ = bitnet_engine::quant::dequantize(t.ty, bytes, t.n_elements() as usize);
            }
        }
    }
});
