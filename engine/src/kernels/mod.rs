//! Matrix kernels: activation quantization, dot products and the threaded matrix-vector product,
//! with the kernel variant chosen in one place ([`Kernel`]).
//!
//! The scalar file is the specification. Threads split the output rows into contiguous ranges;
//! each output element is one dot product computed the same way whatever the split, so results
//! are bit-identical across thread counts.

pub mod scalar;

use std::collections::BTreeSet;
use std::sync::Mutex;

pub use scalar::{quantize_q8k, BlockQ8K, QK_K};

use crate::gguf::GgmlType;
use crate::quant::f32_to_f16;

/// A kernel variant. Only the scalar specification exists so far; `auto` resolves to the best
/// available one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Scalar,
}

impl Kernel {
    /// The ISA suffix of kernel IDs (`tq2_0_q8k_dot_scalar`).
    pub fn suffix(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
        }
    }

    /// Every variant this CPU can run.
    pub fn available() -> Vec<Kernel> {
        vec![Kernel::Scalar]
    }

    /// Parse a name (`scalar`, `auto`); the error lists what is available here.
    pub fn parse(name: &str) -> Result<Kernel, String> {
        match name {
            "auto" | "scalar" => Ok(Kernel::Scalar),
            other => Err(format!(
                "unknown or unavailable kernel `{other}`; available here: auto, {}",
                Kernel::available()
                    .iter()
                    .map(|k| k.suffix())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// The variant named by the environment variable `BITNET_KERNEL`, else the best available.
    pub fn from_env() -> Result<Kernel, String> {
        match std::env::var("BITNET_KERNEL") {
            Ok(v) if !v.is_empty() => Kernel::parse(&v).map_err(|e| format!("BITNET_KERNEL: {e}")),
            _ => Ok(Kernel::Scalar),
        }
    }
}

/// Kernel IDs that actually executed, for receipts.
#[derive(Debug, Default)]
pub struct KernelLog(Mutex<BTreeSet<String>>);

impl KernelLog {
    pub fn record(&self, id: &str) {
        let mut set = self.0.lock().expect("kernel log lock");
        if !set.contains(id) {
            set.insert(id.to_string());
        }
    }

    pub fn ids(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("kernel log lock")
            .iter()
            .cloned()
            .collect()
    }
}

/// A weight matrix of `rows` output rows of `cols` inputs, in its file encoding.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    pub ty: GgmlType,
    pub data: &'a [u8],
    pub rows: usize,
    pub cols: usize,
}

impl Matrix<'_> {
    fn row(&self, r: usize) -> &[u8] {
        let rb = self
            .ty
            .row_bytes(self.cols as u64)
            .expect("validated at load") as usize;
        &self.data[r * rb..(r + 1) * rb]
    }
}

/// Activations prepared for one weight type (quantized once, used by every row).
enum Prepared {
    Q8K(Vec<Vec<BlockQ8K>>),
    F16(Vec<Vec<u16>>),
    F32,
}

/// `out[t][r] = Σ_c W[r][c] · x[t][c]` for `n_tok` tokens (`x` is `n_tok × cols`, `out` is
/// `n_tok × rows`), threaded over rows.
pub fn matmul(
    w: &Matrix,
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
    threads: usize,
    kernel: Kernel,
    log: &KernelLog,
) {
    let (rows, cols) = (w.rows, w.cols);
    debug_assert_eq!(x.len(), n_tok * cols);
    debug_assert_eq!(out.len(), n_tok * rows);
    let sfx = kernel.suffix();
    let prepared = match w.ty {
        GgmlType::TQ1_0 | GgmlType::TQ2_0 => {
            log.record(&format!("q8k_quantize_{sfx}"));
            Prepared::Q8K(
                x.chunks_exact(cols)
                    .map(|row| {
                        let mut q = Vec::with_capacity(cols / QK_K);
                        quantize_q8k(row, &mut q);
                        q
                    })
                    .collect(),
            )
        }
        // ggml converts the activations to the weights' vec_dot type, F16, before the dot.
        GgmlType::F16 => Prepared::F16(
            x.chunks_exact(cols)
                .map(|r| r.iter().map(|&v| f32_to_f16(v)).collect())
                .collect(),
        ),
        _ => Prepared::F32,
    };
    let id = match w.ty {
        GgmlType::TQ2_0 => format!("tq2_0_q8k_dot_{sfx}"),
        GgmlType::TQ1_0 => format!("tq1_0_q8k_dot_{sfx}"),
        GgmlType::F16 => format!("f16_f16_dot_{sfx}"),
        _ => format!("f32_f32_dot_{sfx}"),
    };
    log.record(&id);
    let dot = |r: usize, t: usize| -> f32 {
        let row = w.row(r);
        match (&prepared, w.ty) {
            (Prepared::Q8K(q), GgmlType::TQ2_0) => scalar::tq2_0_q8k_dot_scalar(row, &q[t]),
            (Prepared::Q8K(q), _) => scalar::tq1_0_q8k_dot_scalar(row, &q[t]),
            (Prepared::F16(h), _) => scalar::f16_f16_dot_scalar(row, &h[t]),
            (Prepared::F32, _) => scalar::f32_bytes_dot_scalar(row, &x[t * cols..(t + 1) * cols]),
        }
    };
    let threads = threads.clamp(1, rows.max(1));
    if threads == 1 {
        for t in 0..n_tok {
            for r in 0..rows {
                out[t * rows + r] = dot(r, t);
            }
        }
        return;
    }
    let chunk = rows.div_ceil(threads);
    let parts: Vec<(usize, Vec<f32>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let dot = &dot;
                s.spawn(move || {
                    let (r0, r1) = (i * chunk, ((i + 1) * chunk).min(rows));
                    let mut part = Vec::with_capacity((r1.saturating_sub(r0)) * n_tok);
                    for t in 0..n_tok {
                        for r in r0..r1 {
                            part.push(dot(r, t));
                        }
                    }
                    (r0, part)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("kernel thread"))
            .collect()
    });
    for (r0, part) in parts {
        let width = part.len().checked_div(n_tok).unwrap_or(0);
        for t in 0..n_tok {
            out[t * rows + r0..t * rows + r0 + width]
                .copy_from_slice(&part[t * width..(t + 1) * width]);
        }
    }
}
