//! The bodies of the fuzz targets (`fuzz_targets/`): one function per target, which the plain
//! tests also run over the seed corpora (`engine/tests/fuzz_cases/`, `harness/tests/fuzz_cases/`).
//! Run the targets with `bash ci/fuzz.sh`, or one of them for longer with
//! `cargo +nightly fuzz run gguf_reader` from this folder.

pub mod engine_bodies;
pub mod harness_bodies;
pub mod seeds;
