//! `bitnet-engine`: a BitNet b1.58 (ternary-weight) inference engine.
//!
//! Data flow (see DESIGN.md): a GGUF file ([`gguf`]) — either a user's or one generated from a
//! seed ([`synth`]) — is loaded into a model, run by the forward pass with a KV cache, and every
//! canonical intermediate tensor can be captured as a trace record.

pub mod gguf;
pub mod npy;
pub mod quant;
pub mod synth;
pub mod trace;
