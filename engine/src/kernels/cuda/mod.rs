//! The CUDA backend's kernels: one source, [`SOURCE`] (`bodies.cuh`), compiled twice. NVRTC
//! compiles it for the GPU at run time (`crate::cuda`); the build script compiles it for this CPU
//! (`host_launch.h` maps the launch indices to a loop), and [`host`] calls those host copies, so
//! every kernel's numerics are tested here, bit for bit against the scalar specification
//! (`engine/tests/cuda_bodies.rs`), with no GPU and no CUDA toolkit. What only a GPU can check is
//! left: the launches, device memory and the stream.
//!
//! Each kernel computes its outputs exactly as the specification does (`scalar.rs`,
//! `ggml_math.rs`, `attention.rs`, `forward.rs`), one output (or row, block, token) per GPU
//! thread, with the same order of float operations; parallelism is only across outputs, so no
//! reduction is reordered. The one function that differs on the GPU is `expf` in SwiGLU's scalar
//! tail (see `bodies.cuh`).

pub mod host;

/// The kernels' source, as NVRTC compiles it.
pub const SOURCE: &str = include_str!("bodies.cuh");

/// The kernel IDs the CUDA backend records as its kernels execute (what receipts list).
pub const KERNEL_IDS: &[&str] = &[
    "q8k_quantize_cuda",
    "i8_s_quantize_cuda",
    "tq2_0_q8k_dot_cuda",
    "tq1_0_q8k_dot_cuda",
    "i2_s_i8_dot_cuda",
    "f16_f16_dot_cuda",
    "f32_f32_dot_cuda",
    "f32_f16_round_cuda",
    "embed_get_rows_cuda",
    "rms_norm_f32_cuda",
    "rope_neox_f32_cuda",
    "attn_scores_f32_cuda",
    "attn_softmax_f32_cuda",
    "attn_kqv_f32_cuda",
    "swiglu_f32_cuda",
    "relu2_mul_f32_cuda",
    "add_f32_cuda",
    "scale_f32_cuda",
    // The integer lanes of ternary products, launched only by the exactness check.
    "ternary_lanes_i32_cuda",
];
