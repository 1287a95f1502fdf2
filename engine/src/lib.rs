//! `bitnet-engine`: a BitNet b1.58 (ternary-weight) inference engine.
//!
//! Data flow (see DESIGN.md): a GGUF file ([`gguf`]) — a user's or one generated from a seed
//! ([`synth`]) — is loaded as a [`model::Model`], run by [`forward`] with a KV cache over the
//! kernels of [`kernels`] (weight formats in [`quant`]), and every canonical intermediate tensor
//! can be captured as a trace record ([`trace`], values as [`npy`]).
//!
//! ```no_run
//! use bitnet_engine::{forward, kernels::Kernel, model::Model};
//! let model = Model::load(std::path::Path::new("tiny.gguf")).unwrap();
//! let out = forward::run(&model, &[1, 2, 3], 4, None, 2, Kernel::Scalar, None).unwrap();
//! println!("greedy tokens: {:?}", out.generated);
//! ```

pub mod arch;
pub mod attention;
pub mod cuda;
pub mod files;
pub mod forward;
pub use kernels::ggml_math;
pub mod gguf;
pub mod kernels;
pub mod model;
pub mod npy;
pub mod planted;
pub mod quant;
#[cfg(feature = "reference")]
pub mod reference;
pub mod synth;
pub mod tokenizer;
pub mod trace;
