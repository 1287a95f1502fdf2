//! Matrix kernels: activation quantization, dot products and the threaded matrix-vector product,
//! with the kernel variant chosen in one place ([`Kernel`]).
//!
//! The scalar file is the specification. Threads split the output rows into contiguous ranges;
//! each output element is one dot product computed the same way whatever the split, so results
//! are bit-identical across thread counts.

pub mod cuda;
pub mod ggml_math;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod plan;
pub mod pool;
pub mod rows_out;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod x86;
#[cfg(target_arch = "x86_64")]
pub mod x86_i2s;
#[cfg(target_arch = "x86_64")]
pub mod x86_vnni256;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

pub use scalar::{quantize_i8s, quantize_q8k, BlockQ8K, QK_I2_S, QK_K};

use crate::gguf::GgmlType;
use crate::quant::{f16_to_f32, f32_to_f16};

/// A kernel variant. `auto` resolves to the fastest one this CPU runs; every variant computes
/// bit-identical results (the scalar kernels are the specification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 VNNI on 256-bit vectors (AVX-512 F/VL/VNNI) for the ternary products, the
    /// AVX2 kernels for the rest: for CPUs whose 512-bit operations are double-pumped (Zen 4).
    /// Its non-ternary products record `_avx2` kernel IDs, the code they run.
    Vnni256,
    /// x86-64 AVX-512 F/BW/VL/DQ with VNNI (`vpdpbusd`); CPUs with AVX-512 but no VNNI use AVX2.
    Avx512,
    /// aarch64 NEON (with the dot-product extension where present).
    Neon,
}

impl Kernel {
    pub const ALL: [Kernel; 5] = [
        Kernel::Scalar,
        Kernel::Avx2,
        Kernel::Vnni256,
        Kernel::Avx512,
        Kernel::Neon,
    ];

    /// The ISA suffix of kernel IDs (`tq2_0_q8k_dot_avx2`) and the name `BITNET_KERNEL` takes.
    pub fn suffix(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::Vnni256 => "vnni256",
            Kernel::Avx512 => "avx512",
            Kernel::Neon => "neon",
        }
    }

    /// Whether this CPU runs the variant.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni256 => {
                Kernel::Avx2.is_available()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                Kernel::Avx2.is_available()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512dq")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every variant this CPU can run, slowest (scalar) first.
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL
            .into_iter()
            .filter(|k| k.is_available())
            .collect()
    }

    /// The fastest variant this CPU runs.
    pub fn best() -> Kernel {
        *Kernel::available().last().unwrap_or(&Kernel::Scalar)
    }

    /// Parse a name (`auto`, `scalar`, `avx2`, `avx512`, `neon`); the error lists what is
    /// available here.
    pub fn parse(name: &str) -> Result<Kernel, String> {
        let list = || {
            Kernel::available()
                .iter()
                .map(|k| k.suffix())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if name == "auto" {
            return Ok(Kernel::best());
        }
        match Kernel::ALL.into_iter().find(|k| k.suffix() == name) {
            Some(k) if k.is_available() => Ok(k),
            Some(_) => Err(format!(
                "kernel `{name}` is not supported by this CPU; available here: auto, {}",
                list()
            )),
            None => Err(format!(
                "unknown kernel `{name}`; expected one of auto, scalar, avx2, vnni256, avx512, neon \
                 (available here: auto, {})",
                list()
            )),
        }
    }

    /// The ISA suffixes of the kernel IDs a run under this one variant records (besides
    /// `_scalar` helpers): its own, and for [`Kernel::Vnni256`] also `avx2`, whose kernels it
    /// runs for the non-ternary products.
    pub fn recorded_isas(self) -> &'static [&'static str] {
        match self {
            Kernel::Scalar => &[],
            Kernel::Avx2 => &["avx2"],
            Kernel::Vnni256 => &["vnni256", "avx2"],
            Kernel::Avx512 => &["avx512"],
            Kernel::Neon => &["neon"],
        }
    }

    /// Whether this variant has kernels of its own for products of `ty` weights (not another
    /// variant's): what tuning needs to time.
    pub fn has_own_kernels(self, ty: GgmlType) -> bool {
        self != Kernel::Vnni256 || matches!(ty, GgmlType::TQ1_0 | GgmlType::TQ2_0)
    }

    /// The variant named by the environment variable `BITNET_KERNEL`, else the best available.
    pub fn from_env() -> Result<Kernel, String> {
        match std::env::var("BITNET_KERNEL") {
            Ok(v) if !v.is_empty() => Kernel::parse(&v).map_err(|e| format!("BITNET_KERNEL: {e}")),
            _ => Ok(Kernel::best()),
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
    /// Bytes of one row (for I2_S, of its codes: the tensor's scale trails all rows). Called per
    /// row and token, so it divides rather than looking the type up.
    #[inline]
    fn row_bytes(&self) -> usize {
        if self.ty == GgmlType::I2_S {
            self.cols / 4
        } else {
            self.data.len() / self.rows.max(1)
        }
    }

    fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// An I2_S tensor's scale (the f32 after the codes of every row).
    fn i2_s_scale(&self) -> f32 {
        let at = self.rows * self.row_bytes();
        f32::from_le_bytes(self.data[at..at + 4].try_into().expect("4 bytes"))
    }
}

/// Activations prepared for one weight type (quantized once, used by every row).
enum Prepared {
    /// `n_tok × nb` blocks; `perm` holds the AVX-512 TQ2_0 rearrangement when that kernel runs,
    /// `pairs` its two-token interleave for prefill, `dups` its two-row layout for decode.
    Q8K {
        blocks: Vec<BlockQ8K>,
        perm: Vec<[i8; QK_K]>,
        #[cfg(target_arch = "x86_64")]
        pairs: Vec<x86::PairBlock>,
        #[cfg(target_arch = "x86_64")]
        dups: Vec<x86::DupBlock>,
    },
    /// bitnet.cpp's per-token int8 activations for I2_S weights (`n_tok × cols`), each token's
    /// scale and quant sum; `perm` holds the AVX-512 kernel's rearrangement when it runs.
    I8S {
        q: Vec<i8>,
        scales: Vec<f32>,
        sums: Vec<i32>,
        perm: Vec<i8>,
    },
    /// `n_tok × cols` activations in the weights' element type (`bytes`, little-endian) and as
    /// f32 (`vals`: F16-rounded for F16 weights).
    Float { bytes: Vec<u8>, vals: Vec<f32> },
}

/// Activations prepared once for every matrix of one weight type and width (the products that
/// share an input: q/k/v, gate/up).
pub struct PreparedInput {
    ty: GgmlType,
    cols: usize,
    n_tok: usize,
    kernel: Kernel,
    prepared: Prepared,
}

/// Prepare `x` (`n_tok × cols`) for products with weights of type `ty` under `kernel`: Q8_K
/// quantization for ternary weights (tokens split over `threads`), F16 rounding for F16 weights.
pub fn prepare(
    ty: GgmlType,
    x: &[f32],
    n_tok: usize,
    cols: usize,
    threads: usize,
    kernel: Kernel,
    log: &KernelLog,
) -> PreparedInput {
    assert_eq!(x.len(), n_tok * cols);
    let kernel = if kernel.is_available() {
        kernel
    } else {
        Kernel::Scalar
    };
    let prepared = match ty {
        GgmlType::TQ1_0 | GgmlType::TQ2_0 => {
            log.record("q8k_quantize_scalar");
            let nb = cols / QK_K;
            let blocks = split_tokens(x, n_tok, cols, threads, &|rows, out| {
                let mut q = Vec::with_capacity(nb);
                for row in rows.chunks_exact(cols) {
                    quantize_q8k(row, &mut q);
                    out.extend_from_slice(&q);
                }
            });
            #[cfg(target_arch = "x86_64")]
            let perm = if kernel == Kernel::Avx512 && ty == GgmlType::TQ2_0 {
                x86::permute_for_tq2_0_avx512(&blocks)
            } else {
                Vec::new()
            };
            #[cfg(target_arch = "x86_64")]
            let pairs = if kernel == Kernel::Avx512 && ty == GgmlType::TQ2_0 && n_tok >= 4 {
                x86::pair_for_tq2_0_avx512(&blocks, n_tok, nb)
            } else {
                Vec::new()
            };
            #[cfg(target_arch = "x86_64")]
            let dups = if kernel == Kernel::Avx512 && n_tok < 4 {
                x86::dup_for_tq2_0_avx512(&blocks)
            } else {
                Vec::new()
            };
            #[cfg(not(target_arch = "x86_64"))]
            let perm = Vec::new();
            Prepared::Q8K {
                blocks,
                perm,
                #[cfg(target_arch = "x86_64")]
                pairs,
                #[cfg(target_arch = "x86_64")]
                dups,
            }
        }
        GgmlType::I2_S => {
            log.record("i8_s_quantize_scalar");
            let tokens = split_tokens(x, n_tok, cols, threads, &|rows, out| {
                for row in rows.chunks_exact(cols) {
                    let mut q = vec![0i8; cols];
                    let (s, sum) = quantize_i8s(row, &mut q);
                    out.push((q, s, sum));
                }
            });
            let mut q = Vec::with_capacity(n_tok * cols);
            let (mut scales, mut sums) = (Vec::with_capacity(n_tok), Vec::with_capacity(n_tok));
            for (tq, s, sum) in tokens {
                q.extend_from_slice(&tq);
                scales.push(s);
                sums.push(sum);
            }
            #[cfg(target_arch = "x86_64")]
            let perm = if kernel == Kernel::Avx512 {
                q.chunks_exact(cols.max(1))
                    .flat_map(x86_i2s::permute_for_i2_s_avx512)
                    .collect()
            } else {
                Vec::new()
            };
            #[cfg(not(target_arch = "x86_64"))]
            let perm = Vec::new();
            Prepared::I8S {
                q,
                scales,
                sums,
                perm,
            }
        }
        // ggml converts the activations to the weights' vec_dot type, F16, before the dot.
        GgmlType::F16 => {
            let bits: Vec<u16> = x.iter().map(|&v| f32_to_f16(v)).collect();
            Prepared::Float {
                vals: bits.iter().map(|&h| f16_to_f32(h)).collect(),
                bytes: bits.iter().flat_map(|h| h.to_le_bytes()).collect(),
            }
        }
        _ => Prepared::Float {
            bytes: x.iter().flat_map(|v| v.to_le_bytes()).collect(),
            vals: x.to_vec(),
        },
    };
    PreparedInput {
        ty,
        cols,
        n_tok,
        kernel,
        prepared,
    }
}

/// `f(rows, out)` over contiguous ranges of the `n_tok` rows of `x` (`cols` wide) split over
/// `threads`, the outputs concatenated in token order. Each token is processed alone, so the
/// split changes nothing.
fn split_tokens<T: Send>(
    x: &[f32],
    n_tok: usize,
    cols: usize,
    threads: usize,
    f: &(dyn Fn(&[f32], &mut Vec<T>) + Sync),
) -> Vec<T> {
    let threads = threads.clamp(1, n_tok.max(1));
    let per = n_tok.div_ceil(threads);
    let parts: Vec<Mutex<Vec<T>>> = (0..threads).map(|_| Mutex::new(Vec::new())).collect();
    pool::run(threads, &|i| {
        let (t0, t1) = ((i * per).min(n_tok), ((i + 1) * per).min(n_tok));
        let mut out = Vec::new();
        f(&x[t0 * cols..t1 * cols], &mut out);
        *parts[i].lock().unwrap_or_else(|p| p.into_inner()) = out;
    });
    let mut all = Vec::new();
    for p in parts {
        all.extend(p.into_inner().unwrap_or_else(|p| p.into_inner()));
    }
    all
}

impl PreparedInput {
    /// Whether these activations serve products with `w` (same type and width).
    pub fn matches(&self, w: &Matrix) -> bool {
        self.ty == w.ty && self.cols == w.cols
    }
}

/// `out[t][r] = Σ_c W[r][c] · x[t][c]` for `n_tok` tokens (`x` is `n_tok × cols`, `out` is
/// `n_tok × rows`), threaded over contiguous ranges of rows. Each output element is computed the
/// same way whatever the thread count, tiling or variant.
pub fn matmul(
    w: &Matrix,
    x: &[f32],
    n_tok: usize,
    out: &mut [f32],
    threads: usize,
    kernel: Kernel,
    log: &KernelLog,
) {
    let p = prepare(w.ty, x, n_tok, w.cols, threads, kernel, log);
    matmul_prepared(w, &p, out, threads, log);
}

/// [`matmul`] with activations already prepared for `w`'s type and width.
pub fn matmul_prepared(
    w: &Matrix,
    p: &PreparedInput,
    out: &mut [f32],
    threads: usize,
    log: &KernelLog,
) {
    matmul_prepared_many(std::slice::from_ref(w), p, &mut [out], threads, log);
}

/// Products of several matrices with the same prepared activations (`outs[i]` receives
/// `ws[i]`'s, as [`matmul_prepared`] would): their rows go out to the threads from one queue, so
/// the threads meet once at the end instead of once per matrix. Each output element is computed
/// the same way whichever thread takes its row.
pub fn matmul_prepared_many(
    ws: &[Matrix],
    p: &PreparedInput,
    outs: &mut [&mut [f32]],
    threads: usize,
    log: &KernelLog,
) {
    assert_eq!(ws.len(), outs.len(), "one output per matrix");
    let (n_tok, kernel) = (p.n_tok, p.kernel);
    let threads = threads.max(1);
    // With several threads each matrix's rows go out in chunks, eight per thread, taken in turn:
    // a thread slowed by the machine's other work takes fewer, instead of the others waiting for
    // it at the end of every product. Chunks are multiples of 16 rows so the kernels' row tiles
    // stay whole.
    let mut chunks = Vec::new();
    for (i, (w, out)) in ws.iter().zip(outs.iter()).enumerate() {
        let (rows, cols) = (w.rows, w.cols);
        assert!(
            p.ty == w.ty && p.cols == cols,
            "activations prepared for {} × {}, matrix is {} × {cols}",
            p.ty,
            p.cols,
            w.ty
        );
        assert_eq!(out.len(), n_tok * rows);
        assert_eq!(
            Some(w.data.len() as u64),
            w.ty.data_bytes(cols as u64, (rows * cols) as u64),
            "matrix data is rows × row bytes (and I2_S's trailing scale)"
        );
        log.record(&rows_kernel_id(w, n_tok, kernel));
        if rows == 0 {
            continue;
        }
        let n = if threads == 1 { 1 } else { threads * 8 };
        let chunk = rows.div_ceil(n).div_ceil(16) * 16;
        for r0 in (0..rows).step_by(chunk) {
            chunks.push((i, r0, (r0 + chunk).min(rows)));
        }
    }
    let prepared = &p.prepared;
    let next = AtomicUsize::new(0);
    let shared: Vec<rows_out::SharedOut> = outs
        .iter_mut()
        .zip(ws)
        .map(|(out, w)| rows_out::SharedOut::new(out, w.rows, n_tok))
        .collect();
    pool::run(threads.min(chunks.len()).max(1), &|_| loop {
        let c = next.fetch_add(1, Ordering::Relaxed);
        let Some(&(i, r0, r1)) = chunks.get(c) else {
            break;
        };
        // SAFETY: chunk `c` is handed out once (`fetch_add`), and a matrix's chunks do not
        // overlap.
        let mut o = unsafe { shared[i].rows(r0, r1) };
        compute_rows(&ws[i], prepared, n_tok, kernel, r0, r1, &mut o);
    });
}

/// The kernel ID a product of `w` runs under `kernel` (float products fall back to the scalar
/// kernel when their shape has no SIMD path).
/// Every kernel ID the engine can record (what receipts may list).
pub fn known_kernel_ids() -> Vec<String> {
    let mut v: Vec<String> = [
        "q8k_quantize_scalar",
        "i8_s_quantize_scalar",
        "tq1_0_unpack_tq2_0_scalar",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for k in Kernel::ALL {
        for (p, ty) in [
            ("tq2_0_q8k_dot", GgmlType::TQ2_0),
            ("tq1_0_q8k_dot", GgmlType::TQ1_0),
            ("i2_s_i8_dot", GgmlType::I2_S),
            ("f16_f16_dot", GgmlType::F16),
            ("f32_f32_dot", GgmlType::F32),
        ] {
            if k.has_own_kernels(ty) {
                v.push(format!("{p}_{}", k.suffix()));
            }
        }
    }
    v.extend(cuda::KERNEL_IDS.iter().map(|s| s.to_string()));
    v
}

fn rows_kernel_id(w: &Matrix, n_tok: usize, kernel: Kernel) -> String {
    let float_simd = matches!(w.ty, GgmlType::F16 | GgmlType::F32)
        && f16_simd_shape(w.rows, w.cols, n_tok).is_some();
    // A variant without kernels of its own for this type runs AVX2's (see `Kernel::Vnni256`).
    let kernel = if kernel.has_own_kernels(w.ty) {
        kernel
    } else {
        Kernel::Avx2
    };
    let sfx = match w.ty {
        GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::I2_S => kernel.suffix(),
        _ if float_simd && kernel != Kernel::Scalar => kernel.suffix(),
        _ => "scalar",
    };
    match w.ty {
        GgmlType::TQ2_0 => format!("tq2_0_q8k_dot_{sfx}"),
        GgmlType::TQ1_0 => format!("tq1_0_q8k_dot_{sfx}"),
        GgmlType::I2_S => format!("i2_s_i8_dot_{sfx}"),
        GgmlType::F16 => format!("f16_f16_dot_{sfx}"),
        _ => format!("f32_f32_dot_{sfx}"),
    }
}

/// Whether the F16 SIMD kernels serve this shape, and in which order (`Some(true)`: tinyBLAS's).
fn f16_simd_shape(rows: usize, cols: usize, n_tok: usize) -> Option<bool> {
    if scalar::tiny_blas_order(rows, n_tok) {
        (cols % 8 == 0).then_some(true)
    } else {
        (cols % 32 == 0).then_some(false)
    }
}

/// Rows per tile of the paired prefill kernel (see `compute_rows`).
#[cfg(target_arch = "x86_64")]
const PAIR_ROW_TILE: usize = 16;

/// Output rows `r0..r1` for every token, written through `o`.
fn compute_rows(
    w: &Matrix,
    prepared: &Prepared,
    n_tok: usize,
    kernel: Kernel,
    r0: usize,
    r1: usize,
    o: &mut rows_out::RowsOut,
) {
    let cols = w.cols;
    match prepared {
        Prepared::Q8K {
            blocks,
            perm,
            #[cfg(target_arch = "x86_64")]
            pairs,
            #[cfg(target_arch = "x86_64")]
            dups,
        } => {
            #[cfg(target_arch = "x86_64")]
            if kernel == Kernel::Vnni256 {
                // SAFETY: the Vnni256 features checked by `is_available` (`prepare` falls back
                // to scalar otherwise).
                unsafe { x86_vnni256::q8k_rows(w, blocks, n_tok, r0, r1, o) };
                return;
            }
            let nb = cols / QK_K;
            // Decode: two rows per pass share each activation vector.
            #[cfg(target_arch = "x86_64")]
            if !dups.is_empty() {
                let mut r = r0;
                while r + 2 <= r1 {
                    for t in 0..n_tok {
                        // SAFETY: AVX-512 VNNI/DQ checked by `is_available` (dups exist only then).
                        let rows2 = [w.row(r), w.row(r + 1)];
                        let d = &dups[t * nb..(t + 1) * nb];
                        let got = unsafe {
                            if w.ty == GgmlType::TQ2_0 {
                                x86::tq2_0_q8k_dot_rows2_avx512vnni(rows2, d)
                            } else {
                                x86::tq1_0_q8k_dot_rows2_avx512vnni(rows2, d)
                            }
                        };
                        o.set(r, t, got[0]);
                        o.set(r + 1, t, got[1]);
                    }
                    r += 2;
                }
                for r in r..r1 {
                    for t in 0..n_tok {
                        let p = if perm.is_empty() {
                            &[][..]
                        } else {
                            &perm[t * nb..(t + 1) * nb]
                        };
                        let v =
                            ternary_dot(w.ty, kernel, w.row(r), &blocks[t * nb..(t + 1) * nb], p);
                        o.set(r, t, v);
                    }
                }
                return;
            }
            let acts = |t: usize| &blocks[t * nb..(t + 1) * nb];
            let perm_of = |t: usize| {
                if perm.is_empty() {
                    &[][..]
                } else {
                    &perm[t * nb..(t + 1) * nb]
                }
            };
            // Several tokens at once share each block's unpacked codes (prefill): eight tokens
            // (four pairs) per call, over tiles of rows so that those tokens' activations stay
            // in L1 while the rows stream past.
            #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
            let mut paired = 0;
            #[cfg(target_arch = "x86_64")]
            if !pairs.is_empty() {
                paired = n_tok / 8 * 8;
                let pair = |p: usize| &pairs[p * nb..(p + 1) * nb];
                let rb = w.row_bytes();
                let mut rt = r0;
                while rt < r1 {
                    let re = (rt + PAIR_ROW_TILE).min(r1);
                    for t in (0..paired).step_by(8) {
                        let p = t / 2;
                        let ps = [pair(p), pair(p + 1), pair(p + 2), pair(p + 3)];
                        for (r, row) in (rt..re).zip(w.data[rt * rb..re * rb].chunks_exact(rb)) {
                            // SAFETY: AVX-512 VNNI checked by `is_available` (pairs exist only
                            // then).
                            let got = unsafe { x86::tq2_0_q8k_dot_pairs_avx512vnni::<4>(row, ps) };
                            for (k, g) in got.iter().enumerate() {
                                o.set(r, t + 2 * k, g[0]);
                                o.set(r, t + 2 * k + 1, g[1]);
                            }
                        }
                    }
                    rt = re;
                }
            }
            for r in r0..r1 {
                let row = w.row(r);
                #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
                let mut t = paired;
                #[cfg(target_arch = "x86_64")]
                if kernel == Kernel::Avx512 && w.ty == GgmlType::TQ1_0 {
                    while t + 4 <= n_tok {
                        // SAFETY: AVX-512 VNNI checked by `is_available`.
                        let got = unsafe {
                            x86::tq1_0_q8k_dot_tokens_avx512vnni::<4>(
                                row,
                                [acts(t), acts(t + 1), acts(t + 2), acts(t + 3)],
                            )
                        };
                        for (k, g) in got.iter().enumerate() {
                            o.set(r, t + k, *g);
                        }
                        t += 4;
                    }
                }
                #[cfg(target_arch = "x86_64")]
                if kernel == Kernel::Avx512 && w.ty == GgmlType::TQ2_0 {
                    while t + 4 <= n_tok {
                        // SAFETY: AVX-512 VNNI checked by `is_available`.
                        let got = unsafe {
                            x86::tq2_0_q8k_dot_tokens_avx512vnni::<4>(
                                row,
                                [acts(t), acts(t + 1), acts(t + 2), acts(t + 3)],
                                [perm_of(t), perm_of(t + 1), perm_of(t + 2), perm_of(t + 3)],
                            )
                        };
                        for (k, g) in got.iter().enumerate() {
                            o.set(r, t + k, *g);
                        }
                        t += 4;
                    }
                }
                for t in t..n_tok {
                    o.set(r, t, ternary_dot(w.ty, kernel, row, acts(t), perm_of(t)));
                }
            }
        }
        Prepared::I8S {
            q,
            scales,
            sums,
            perm,
        } => i2_s_rows(w, q, scales, sums, perm, n_tok, kernel, r0, r1, o),
        Prepared::Float { bytes, vals } => {
            float_rows(w, bytes, vals, n_tok, kernel, r0, r1, o);
        }
    }
}

/// I2_S rows `r0..r1`: the exact integer dot of each row and token (SIMD kernels take four
/// tokens per unpacked group), finished as [`scalar::i2_s_finish`].
#[allow(clippy::too_many_arguments)]
fn i2_s_rows(
    w: &Matrix,
    q: &[i8],
    scales: &[f32],
    sums: &[i32],
    perm: &[i8],
    n_tok: usize,
    kernel: Kernel,
    r0: usize,
    r1: usize,
    o: &mut rows_out::RowsOut,
) {
    let cols = w.cols;
    let w_scale = w.i2_s_scale();
    let act = |t: usize| &q[t * cols..(t + 1) * cols];
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    let pact = |t: usize| &perm[t * cols..(t + 1) * cols];
    // `n` tokens (1 or 4) from `t` against one row, by the chosen variant.
    let dots = |row: &[u8], t: usize, n: usize| -> [i32; 4] {
        let mut d = [0i32; 4];
        match kernel {
            // SAFETY: each variant runs only when `is_available` says the CPU has it (the
            // AVX-512 activations, `perm`, exist only then).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::Vnni256 if n == 4 => unsafe {
                d = x86_i2s::i2_s_i8_dot_avx2::<4>(
                    row,
                    [act(t), act(t + 1), act(t + 2), act(t + 3)],
                );
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::Vnni256 => unsafe {
                d[0] = x86_i2s::i2_s_i8_dot_avx2::<1>(row, [act(t)])[0];
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 if n == 4 => unsafe {
                d = x86_i2s::i2_s_i8_dot_avx512vnni::<4>(
                    row,
                    [pact(t), pact(t + 1), pact(t + 2), pact(t + 3)],
                );
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe {
                d[0] = x86_i2s::i2_s_i8_dot_avx512vnni::<1>(row, [pact(t)])[0];
            },
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => {
                for (k, dk) in d.iter_mut().enumerate().take(n) {
                    // SAFETY: NEON checked by `is_available`.
                    *dk = unsafe { neon::i2_s_i8_dot_neon(row, act(t + k)) };
                }
            }
            _ => {
                for (k, dk) in d.iter_mut().enumerate().take(n) {
                    *dk = scalar::i2_s_i8_dot_scalar(row, act(t + k));
                }
            }
        }
        d
    };
    for r in r0..r1 {
        let row = w.row(r);
        let mut t = 0;
        while t < n_tok {
            let n = if n_tok - t >= 4 { 4 } else { 1 };
            let d = dots(row, t, n);
            for k in 0..n {
                o.set(
                    r,
                    t + k,
                    scalar::i2_s_finish(d[k], sums[t + k], scales[t + k], w_scale),
                );
            }
            t += n;
        }
    }
}

/// One ternary row against one token's Q8_K blocks.
#[inline]
fn ternary_dot(
    ty: GgmlType,
    kernel: Kernel,
    row: &[u8],
    a: &[BlockQ8K],
    perm: &[[i8; QK_K]],
) -> f32 {
    let tq2 = ty == GgmlType::TQ2_0;
    match kernel {
        // SAFETY: `matmul` runs a variant only when `is_available` says the CPU has it.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe {
            if tq2 {
                x86::tq2_0_q8k_dot_avx2(row, a)
            } else {
                x86::tq1_0_q8k_dot_avx2(row, a)
            }
        },
        #[cfg(target_arch = "x86_64")]
        Kernel::Vnni256 => unsafe { x86_vnni256::ternary_dot_rows_vnni256::<1>([row], a, tq2)[0] },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe {
            if tq2 {
                x86::tq2_0_q8k_dot_avx512vnni(row, a, perm)
            } else {
                x86::tq1_0_q8k_dot_avx512vnni(row, a)
            }
        },
        #[cfg(target_arch = "aarch64")]
        Kernel::Neon => unsafe {
            if tq2 {
                neon::tq2_0_q8k_dot_neon(row, a)
            } else {
                neon::tq1_0_q8k_dot_neon(row, a)
            }
        },
        _ => {
            let _ = perm;
            if tq2 {
                scalar::tq2_0_q8k_dot_scalar(row, a)
            } else {
                scalar::tq1_0_q8k_dot_scalar(row, a)
            }
        }
    }
}

/// Float rows (F16 or F32 weights) `r0..r1`.
#[allow(clippy::too_many_arguments)]
fn float_rows(
    w: &Matrix,
    bytes: &[u8],
    vals: &[f32],
    n_tok: usize,
    kernel: Kernel,
    r0: usize,
    r1: usize,
    o: &mut rows_out::RowsOut,
) {
    let (rows, cols) = (w.rows, w.cols);
    let f16 = w.ty == GgmlType::F16;
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut r = r0;
    #[cfg(target_arch = "x86_64")]
    if matches!(kernel, Kernel::Avx2 | Kernel::Vnni256 | Kernel::Avx512) {
        let es = if f16 { 2 } else { 4 };
        if let Some(tiny_blas) = f16_simd_shape(rows, cols, n_tok) {
            while r < r1 {
                let n = if r1 - r >= 4 { 4 } else { 1 };
                for t in 0..n_tok {
                    let a = &bytes[t * cols * es..(t + 1) * cols * es];
                    // SAFETY: AVX2/FMA/F16C checked by `is_available` (both variants need them).
                    let got: [f32; 4] = unsafe {
                        match (n, tiny_blas) {
                            (4, true) => x86::float_lanes8_rows::<4>(
                                [w.row(r), w.row(r + 1), w.row(r + 2), w.row(r + 3)],
                                a,
                                cols,
                                f16,
                            ),
                            (4, false) => x86::float_steps32_rows::<4>(
                                [w.row(r), w.row(r + 1), w.row(r + 2), w.row(r + 3)],
                                a,
                                cols,
                                f16,
                            ),
                            (_, true) => {
                                let [v] = x86::float_lanes8_rows::<1>([w.row(r)], a, cols, f16);
                                [v, 0.0, 0.0, 0.0]
                            }
                            (_, false) => {
                                let [v] = x86::float_steps32_rows::<1>([w.row(r)], a, cols, f16);
                                [v, 0.0, 0.0, 0.0]
                            }
                        }
                    };
                    for (k, v) in got.iter().enumerate().take(n) {
                        o.set(r + k, t, *v);
                    }
                }
                r += n;
            }
            return;
        }
    }
    #[cfg(target_arch = "aarch64")]
    if kernel == Kernel::Neon {
        if let Some(tiny_blas) = f16_simd_shape(rows, cols, n_tok) {
            let es = if f16 { 2 } else { 4 };
            for r in r0..r1 {
                for t in 0..n_tok {
                    let a = &bytes[t * cols * es..(t + 1) * cols * es];
                    // SAFETY: NEON checked by `is_available`.
                    let v = unsafe {
                        if tiny_blas {
                            neon::float_lanes8_neon(w.row(r), a, cols, f16)
                        } else {
                            neon::float_steps32_neon(w.row(r), a, cols, f16)
                        }
                    };
                    o.set(r, t, v);
                }
            }
            return;
        }
    }
    let _ = (kernel, bytes);
    for r in r..r1 {
        let row = w.row(r);
        for t in 0..n_tok {
            let a = &vals[t * cols..(t + 1) * cols];
            let v = if f16 {
                scalar::float_dot(&scalar::F16Bytes(row), a, rows, n_tok, true)
            } else {
                scalar::float_dot(&scalar::F32Bytes(row), a, rows, n_tok, false)
            };
            o.set(r, t, v);
        }
    }
}

#[cfg(test)]
mod tests;
