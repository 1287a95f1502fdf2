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
pub mod regions;
mod rows;
pub mod rows_out;
pub mod scalar;
pub mod tune;
#[cfg(target_arch = "x86_64")]
pub mod x86;
#[cfg(target_arch = "x86_64")]
pub mod x86_attn;
#[cfg(target_arch = "x86_64")]
pub mod x86_expf;
#[cfg(target_arch = "x86_64")]
pub mod x86_i2s;
#[cfg(target_arch = "x86_64")]
pub mod x86_norm;
#[cfg(target_arch = "x86_64")]
pub mod x86_q6k;
#[cfg(target_arch = "x86_64")]
pub mod x86_rows2;
#[cfg(target_arch = "x86_64")]
pub mod x86_tables;
#[cfg(target_arch = "x86_64")]
pub mod x86_vnni256;

use std::collections::BTreeSet;
use std::sync::Mutex;

pub use scalar::{quantize_i8s, quantize_q8k, BlockQ8K, QK_I2_S, QK_K};

use crate::gguf::GgmlType;
use crate::quant::{f16_to_f32, f32_to_f16_into};
use rows::compute_rows;
#[cfg(test)]
use rows::ternary_dot;

/// A kernel variant. `auto` resolves to the fastest one this CPU runs; every variant computes
/// bit-identical results (the scalar kernels are the specification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 VNNI on 256-bit vectors (AVX-512 F/VL/VNNI) for the ternary products (TQ2_0,
    /// TQ1_0, I2_S), the AVX2 kernels for the rest: for CPUs whose 512-bit operations are
    /// double-pumped (Zen 4).
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

    /// Whether this build has the variant's code (the x86 variants on x86-64, NEON on AArch64),
    /// whether or not this CPU can run it.
    pub fn compiled_for_this_arch(self) -> bool {
        match self {
            Kernel::Scalar => true,
            Kernel::Avx2 | Kernel::Vnni256 | Kernel::Avx512 => cfg!(target_arch = "x86_64"),
            Kernel::Neon => cfg!(target_arch = "aarch64"),
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
        match ty {
            // AVX2's SIMD kernel, compiled again for AVX-512 (VNNI256 runs AVX2's); NEON runs
            // the scalar one.
            GgmlType::Q6_K => matches!(self, Kernel::Scalar | Kernel::Avx2 | Kernel::Avx512),
            GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::I2_S => true,
            _ => self != Kernel::Vnni256,
        }
    }

    /// Whether this variant's decode kernels for `ty` weights prefetch at a distance a plan can
    /// choose (the x86 SIMD kernels, [`Kernel::Vnni256`]'s borrowed AVX2 ones included; the
    /// scalar and NEON ones leave it to the hardware).
    pub fn tunes_prefetch(self, ty: GgmlType) -> bool {
        matches!(self, Kernel::Avx2 | Kernel::Vnni256 | Kernel::Avx512)
            && matches!(
                ty,
                GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::I2_S | GgmlType::F16 | GgmlType::F32
            )
    }

    /// Whether this variant's attention prefetches the KV cache at a distance a plan can choose
    /// (the AVX2 attention, which the x86 SIMD variants run).
    pub fn tunes_attention_prefetch(self) -> bool {
        matches!(self, Kernel::Avx2 | Kernel::Vnni256 | Kernel::Avx512)
    }

    /// The row groups (decode, `prefill` false) and token groups (prefill) this variant's kernels
    /// for `ty` weights come in, when a plan can choose among them (empty: one fixed grouping).
    pub fn groups(self, ty: GgmlType, prefill: bool) -> &'static [usize] {
        match (self, ty) {
            (Kernel::Vnni256, GgmlType::TQ1_0 | GgmlType::TQ2_0) => &GROUPS,
            (Kernel::Avx2, GgmlType::TQ2_0) if !prefill => &TQ2_AVX2_ROWS,
            (Kernel::Avx2 | Kernel::Vnni256 | Kernel::Avx512, GgmlType::F16 | GgmlType::F32)
                if !prefill =>
            {
                &FLOAT_ROWS
            }
            (Kernel::Avx2, GgmlType::I2_S) if !prefill => &I2S_AVX2_ROWS,
            (Kernel::Vnni256, GgmlType::I2_S) if !prefill => &I2S_ROWS,
            _ => &[],
        }
    }

    /// The variant named by the environment variable `BITNET_KERNEL` (with any knobs it gives:
    /// [`plan::KernelPlan::from_env`]), else the best available.
    pub fn from_env() -> Result<Kernel, String> {
        Ok(plan::KernelPlan::from_env()?.map_or(Kernel::best(), |(p, _)| p.base))
    }
}

/// Kernel IDs that actually executed, for receipts, and the knobs products ran with where a plan
/// chose them (prefetch distances, row or token groups).
#[derive(Debug, Default)]
pub struct KernelLog {
    ids: Mutex<BTreeSet<String>>,
    prefetch: Mutex<BTreeSet<usize>>,
    groups: Mutex<BTreeSet<usize>>,
}

impl KernelLog {
    pub fn record(&self, id: &str) {
        let mut set = self.ids.lock().expect("kernel log lock");
        if !set.contains(id) {
            set.insert(id.to_string());
        }
    }

    pub fn ids(&self) -> Vec<String> {
        self.ids
            .lock()
            .expect("kernel log lock")
            .iter()
            .cloned()
            .collect()
    }

    /// The chosen row or token groups products ran with, smallest first.
    pub fn groups(&self) -> Vec<usize> {
        self.groups
            .lock()
            .expect("kernel log lock")
            .iter()
            .copied()
            .collect()
    }

    /// The chosen prefetch distances (bytes) decode products ran with, smallest first.
    pub fn prefetch_distances(&self) -> Vec<usize> {
        self.prefetch
            .lock()
            .expect("kernel log lock")
            .iter()
            .copied()
            .collect()
    }
}

/// Software prefetch distances (bytes ahead of the weights being read) [`plan::tune`] times for
/// each decode product kind and variant; 0 turns the kernels' prefetch off. The hardware
/// prefetchers differ between CPUs, so the distance is measured, not fixed.
pub const PREFETCH_DISTANCES: [usize; 5] = [0, 2048, 4096, 8192, 16384];

/// The row groups (decode) and token groups (prefill) the 256-bit VNNI kernels come in
/// ([`Kernel::groups`]): more rows or tokens per call share more loads but hold more registers,
/// and where that balance lies depends on the CPU (a double-pumped one may prefer other groups
/// than a full-width one), so [`plan::tune`] times each.
pub const GROUPS: [usize; 3] = [2, 4, 8];

/// The most bytes of activations a prefill call's group of tokens may hold: three quarters of a
/// 32 KiB L1 data cache (the smallest among the x86 CPUs with AVX-512 VNNI), so that the group's
/// activations stay in L1 while a tile of rows streams past. On rows of many blocks the kernels
/// take fewer tokens per call than the plan's group (measured on the model's `ffn_gate`, whose
/// rows are short); see `rows::pairs_per_call` and [`x86_vnni256::prefill_group`].
pub const L1_ACTS_BUDGET: usize = 24 << 10;

/// Rows per call of the x86 F16/F32 decode kernels (the tied F16 output head): four rows share
/// each activation load, two rows two, one row streams its weights alone. Which is faster
/// depends on the CPU (Zen 4, 700M output head: one row decoded 11% faster than four; Zen 1: one
/// or two rows, with the activations read as f32), so a plan chooses; four by default.
pub const FLOAT_ROWS: [usize; 3] = [1, 2, 4];

/// Rows per group of the table-lookup kernels' layouts (TQ2_0 and I2_S, [`x86_tables`]), the
/// grouped copy ([`Matrix::grouped`]) their decode reads.
pub const TABLE_ROWS: usize = 32;

/// The AVX2 TQ2_0 decode's row groupings a plan chooses between: 2, the two-row `vpmaddubsw`
/// kernel on the file's layout (its own), and [`TABLE_ROWS`], the table-lookup kernel on its
/// grouped copy. Both give the same bits.
pub const TQ2_AVX2_ROWS: [usize; 2] = [2, TABLE_ROWS];

/// Rows per call of the AVX2 and `vnni256` I2_S decode kernels: several rows share each
/// activation load and their block is prefetched as one stream, one row streams alone
/// ([`x86_i2s::i2_s_i8_rows_vnni256`]). On Zen 4 (one thread, 6912 × 2560 streamed in huge pages)
/// four rows took 130-136 µs against 175-187 for one; a plan chooses, four by default.
pub const I2S_ROWS: [usize; 3] = [1, 2, 4];

/// The AVX2 I2_S decode's row groupings a plan chooses between: [`I2S_ROWS`] (the `vpmaddubsw`
/// kernels on the file's layout) and [`TABLE_ROWS`], the table-lookup kernel on its grouped copy
/// ([`x86_tables::i2_s_i8_dot_groups_tables_avx2`]). All give the same integer sums.
pub const I2S_AVX2_ROWS: [usize; 4] = [1, 2, 4, TABLE_ROWS];

/// The largest prefetch distance a plan may name (a receipt's or a cache file's is read as
/// untrusted input).
pub const MAX_PREFETCH: usize = 1 << 20;

/// A weight matrix of `rows` output rows of `cols` inputs, in its file encoding.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    pub ty: GgmlType,
    pub data: &'a [u8],
    pub rows: usize,
    pub cols: usize,
    /// The same weights with rows in groups (`(g, bytes)`: [`group_rows`] of `data` by `g`,
    /// TQ2_0 blocks split after their [`TQ2_CODES`]), for the decode kernels that read a group's
    /// blocks as one stream; `None` for every other product. Kernels without a grouped form read
    /// `data`.
    pub grouped: Option<(usize, &'a [u8])>,
}

/// The bytes of a TQ2_0 block before its F16 scale (its 2-bit codes): what [`group_rows`] keeps
/// in a group's block area for the grouped copy ([`Matrix::grouped`]).
pub const TQ2_CODES: usize = 64;

/// `data` (`rows` rows of `row_bytes`, each of blocks of `block_bytes`) with each whole group of
/// `g` consecutive rows rewritten block-interleaved, each block split after its first `lead`
/// bytes: the group starts with the blocks' tails (block `b` of the group's row `i` at
/// `(b·g + i)·tail`, `tail = block_bytes − lead`), then their leads (at `nb·g·tail +
/// (b·g + i)·lead`, `nb` blocks a row). With `lead = block_bytes` a group is the plain
/// interleave. Groups keep their place (group `k` at `k·g·row_bytes`) and the last `rows % g`
/// rows stay as they were, so any range of whole groups is one contiguous run of bytes in both
/// layouts.
///
/// The grouped copy of TQ2_0 weights takes `lead = TQ2_CODES`: a group's scales first, then
/// its code blocks, so a decode kernel reading `g` rows at once reads one stream front to back,
/// the `g` scales of a block in one load and each 32 code bytes in one load that stays within a
/// cache line (when the copy starts 32-byte aligned and `g·nb` is a multiple of 16, which puts
/// every group's codes on 32-byte boundaries; in the plain interleave 7 of a group of eight's 16
/// loads a block cross a line). On Zen 4 (one thread, 4096 × 1536 TQ2_0 streamed from memory)
/// four rows took 66-72 µs in the plain interleave against 87-121 µs in the file's layout, where
/// four streams 396 bytes apart advanced together; see
/// [`x86_vnni256::tq2_0_dot_group_vnni256`] for the split layout's figures.
pub fn group_rows(
    data: &[u8],
    rows: usize,
    row_bytes: usize,
    [block_bytes, lead]: [usize; 2],
    g: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; data.len()];
    group_rows_into(data, rows, row_bytes, [block_bytes, lead], g, &mut out);
    out
}

/// The grouped copy of `ty` weights (`rows` rows of `cols`, `data` as [`Matrix::data`]) that
/// the decode kernels reading `g` rows at a time stream ([`Matrix::grouped`]): for TQ2_0,
/// [`group_rows`] split after the codes for the `vnni256` groups ([`GROUPS`]), the table-lookup
/// layout for [`TABLE_ROWS`]; for I2_S, the table-lookup layout, its only grouped form (`g` must
/// be [`TABLE_ROWS`]). Either keeps group `k` at `k·g·` row bytes and the last `rows % g` rows
/// (and I2_S's trailing scale) as they were. Panics for another type or group.
pub fn grouped_copy(ty: GgmlType, data: &[u8], rows: usize, cols: usize, g: usize) -> Vec<u8> {
    let mut out = vec![0u8; data.len()];
    grouped_copy_into(ty, data, rows, cols, g, &mut out);
    out
}

/// [`grouped_copy`] into `out` (as long as `data`).
pub fn grouped_copy_into(
    ty: GgmlType,
    data: &[u8],
    rows: usize,
    cols: usize,
    g: usize,
    out: &mut [u8],
) {
    match ty {
        #[cfg(target_arch = "x86_64")]
        GgmlType::TQ2_0 if g == TABLE_ROWS => {
            x86_tables::tq2_0_table_layout_into(data, rows, cols, out)
        }
        #[cfg(target_arch = "x86_64")]
        GgmlType::I2_S if g == TABLE_ROWS => {
            x86_tables::i2_s_table_layout_into(data, rows, cols, out)
        }
        GgmlType::TQ2_0 => {
            let block = GgmlType::TQ2_0.type_size();
            let row_bytes = cols / QK_K * block;
            group_rows_into(data, rows, row_bytes, [block, TQ2_CODES], g, out);
        }
        _ => panic!("no grouped copy of {ty} weights by {g} rows"),
    }
}

/// [`group_rows`] into `out` (as long as `data`).
pub fn group_rows_into(
    data: &[u8],
    rows: usize,
    row_bytes: usize,
    [block_bytes, lead]: [usize; 2],
    g: usize,
    out: &mut [u8],
) {
    assert!(g > 0 && block_bytes > 0 && row_bytes % block_bytes == 0 && lead <= block_bytes);
    assert_eq!(data.len(), out.len());
    assert!(rows * row_bytes <= data.len());
    let nb = row_bytes / block_bytes;
    let tail = block_bytes - lead;
    let whole = rows / g * g;
    for k in 0..whole / g {
        let base = k * g * row_bytes;
        let leads = base + nb * g * tail;
        for i in 0..g {
            for b in 0..nb {
                let src = &data[base + i * row_bytes + b * block_bytes..][..block_bytes];
                let at = b * g + i;
                out[base + at * tail..][..tail].copy_from_slice(&src[lead..]);
                out[leads + at * lead..][..lead].copy_from_slice(&src[..lead]);
            }
        }
    }
    let rest = whole * row_bytes;
    out[rest..].copy_from_slice(&data[rest..]);
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
    /// `pairs` its two-token interleave for prefill, `dups` its two-row layout for decode,
    /// `tables` each token's tables for the AVX2 table-lookup decode ([`x86_tables`]) when the
    /// products read its layout ([`PreparedInput::with_group`]).
    Q8K {
        blocks: Vec<BlockQ8K>,
        perm: Vec<[i8; QK_K]>,
        #[cfg(target_arch = "x86_64")]
        pairs: Vec<x86::PairBlock>,
        #[cfg(target_arch = "x86_64")]
        dups: Vec<x86_rows2::DupBlock>,
        #[cfg(target_arch = "x86_64")]
        tables: Vec<u8>,
    },
    /// bitnet.cpp's per-token int8 activations for I2_S weights (`n_tok × cols`), each token's
    /// scale and quant sum; `perm` holds the AVX-512 kernel's rearrangement when it runs,
    /// `tables` each token's tables for the AVX2 table-lookup decode when the products read its
    /// layout.
    I8S {
        q: Vec<i8>,
        scales: Vec<f32>,
        sums: Vec<i32>,
        perm: Vec<i8>,
        tables: Vec<u8>,
    },
    /// `n_tok × nb` Q8_K blocks for K-quant weights (Q6_K), as its scalar and SIMD kernels read them.
    KQuant { blocks: Vec<BlockQ8K> },
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
    /// The prefetch distance of a decode product's kernels; `None`: each kernel's own.
    prefetch: Option<usize>,
    /// Rows (decode) or tokens (prefill) per kernel call, for variants that offer several
    /// ([`Kernel::groups`]); `None`: the variant's own.
    group: Option<usize>,
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
            log.record(q8k_quantize_id(kernel));
            let nb = cols / QK_K;
            let blocks = if threads.min(n_tok) <= 1 && cols % QK_K == 0 {
                // One thread's rows in one call, straight into the list: no block crosses a row,
                // so the blocks are the row-by-row ones.
                let mut blocks = Vec::new();
                quantize_q8k_with(kernel, x, &mut blocks);
                blocks
            } else {
                split_tokens(x, n_tok, cols, threads, &|rows, out| {
                    let mut q = Vec::with_capacity(nb);
                    for row in rows.chunks_exact(cols) {
                        quantize_q8k_with(kernel, row, &mut q);
                        out.extend_from_slice(&q);
                    }
                })
            };
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
                x86_rows2::dup_for_tq2_0_avx512(&blocks)
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
                #[cfg(target_arch = "x86_64")]
                tables: Vec::new(),
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
                tables: Vec::new(),
            }
        }
        // Q6_K's vec_dot type is Q8_K, as the ternary types'.
        GgmlType::Q6_K => {
            log.record(q8k_quantize_id(kernel));
            Prepared::KQuant {
                blocks: split_tokens(x, n_tok, cols, threads, &|rows, out| {
                    let mut q = Vec::with_capacity(cols / QK_K);
                    for row in rows.chunks_exact(cols) {
                        quantize_q8k_with(kernel, row, &mut q);
                        out.extend_from_slice(&q);
                    }
                }),
            }
        }
        // ggml converts the activations to the weights' vec_dot type, F16, before the dot.
        GgmlType::F16 => {
            let mut bits = vec![0u16; x.len()];
            f32_to_f16_into(x, &mut bits);
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
        prefetch: None,
        group: None,
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
    /// Decode products with these activations prefetch `ahead` bytes ahead of the weights they
    /// read (0: no software prefetch; `None`: each kernel's own distance). Prefill products keep
    /// their own (their time is in the arithmetic). Changes no result.
    pub fn with_prefetch(mut self, ahead: Option<usize>) -> PreparedInput {
        self.prefetch = ahead.map(|d| d.min(MAX_PREFETCH));
        self
    }

    /// Products with these activations run `group` rows (decode) or tokens (prefill) per kernel
    /// call where the variant offers that group ([`Kernel::groups`]; `None` or another group:
    /// its own). Changes no result.
    pub fn with_group(mut self, group: Option<usize>) -> PreparedInput {
        self.group = group;
        // The table-lookup decode's tables, once per product for every thread's rows.
        #[cfg(target_arch = "x86_64")]
        let reads = self.grouped_rows() == Some(TABLE_ROWS);
        #[cfg(target_arch = "x86_64")]
        match &mut self.prepared {
            Prepared::Q8K { blocks, tables, .. } => {
                tables.clear();
                if reads {
                    tables.resize(blocks.len() * x86_tables::TABLE_BYTES, 0);
                    // SAFETY: AVX2, checked by `prepare` (a kernel this CPU does not run falls
                    // back to scalar, which reads no tables).
                    unsafe { x86_tables::build_tables_avx2(blocks, tables) };
                }
            }
            Prepared::I8S { q, tables, .. } => {
                tables.clear();
                if reads {
                    tables.resize(q.len() / 4 * x86_tables::I2S_TABLE_BYTES, 0);
                    // SAFETY: as above. Each token's tables follow the previous token's, as its
                    // activations do (`cols` is a multiple of 128).
                    unsafe { x86_tables::build_i2_s_tables_avx2(q, tables) };
                }
            }
            _ => {}
        }
        self
    }

    /// Whether products with these activations read `w`'s copy in the table-lookup layout: the
    /// plan chose it ([`PreparedInput::grouped_rows`]) and `w` comes with it.
    fn reads_tables(&self, w: &Matrix) -> bool {
        self.grouped_rows() == Some(TABLE_ROWS) && w.grouped.is_some_and(|(g, _)| g == TABLE_ROWS)
    }

    /// The rows per group of the grouped copy ([`Matrix::grouped`]) the products with these
    /// activations read, when their kernel reads one: the `vnni256` decode kernels on TQ2_0
    /// weights, by the group the plan chose (or their own), and the AVX2 table-lookup decode on
    /// TQ2_0 and I2_S weights where the plan chose [`TABLE_ROWS`].
    pub fn grouped_rows(&self) -> Option<usize> {
        Self::grouped_rows_of(self.kernel, self.ty, self.n_tok, self.group)
    }

    /// [`PreparedInput::grouped_rows`] of activations prepared for `ty` weights and `n_tok`
    /// tokens under `kernel` with `group` rows per call.
    pub fn grouped_rows_of(
        kernel: Kernel,
        ty: GgmlType,
        n_tok: usize,
        group: Option<usize>,
    ) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if kernel == Kernel::Avx2
            && matches!(ty, GgmlType::TQ2_0 | GgmlType::I2_S)
            && n_tok < plan::PREFILL_MIN_TOKENS
            && group == Some(TABLE_ROWS)
        {
            return Some(TABLE_ROWS);
        }
        #[cfg(target_arch = "x86_64")]
        if kernel == Kernel::Vnni256 && ty == GgmlType::TQ2_0 && n_tok < plan::PREFILL_MIN_TOKENS {
            return Some(
                group
                    .filter(|g| GROUPS.contains(g))
                    .unwrap_or(x86_vnni256::DECODE_ROWS),
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (kernel, ty, n_tok, group);
        None
    }

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
    let prefetch = p.prefetch.filter(|_| n_tok < plan::PREFILL_MIN_TOKENS);
    if let Some(d) = prefetch {
        log.prefetch.lock().expect("kernel log lock").insert(d);
    }
    let group = p.group.filter(|g| {
        ws.first().is_some_and(|w| {
            kernel
                .groups(w.ty, n_tok >= plan::PREFILL_MIN_TOKENS)
                .contains(g)
        })
    });
    // The group the kernels take on these rows (fewer tokens than the plan's on long rows).
    #[cfg(target_arch = "x86_64")]
    let group = group.map(|g| match ws.first() {
        Some(w)
            if kernel == Kernel::Vnni256
                && n_tok >= plan::PREFILL_MIN_TOKENS
                && matches!(w.ty, GgmlType::TQ2_0 | GgmlType::TQ1_0) =>
        {
            x86_vnni256::prefill_group(g, w.cols / QK_K)
        }
        _ => g,
    });
    if let Some(g) = group {
        log.groups.lock().expect("kernel log lock").insert(g);
    }
    let threads = threads.max(1);
    // With several threads each matrix's rows go out in chunks, eight per thread, in one
    // contiguous region of chunks per thread ([`regions::Regions`]): each thread streams through
    // its own, and one slowed by the machine's other work is helped from its region's back,
    // instead of the others waiting for it at the end of every product. Chunks are multiples of
    // 16 rows so the kernels' row tiles stay whole (32 for the table-lookup layout's groups).
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
        let tables = p.reads_tables(w);
        for id in rows_kernel_ids(w, n_tok, kernel, tables) {
            log.record(&id);
        }
        if rows == 0 {
            continue;
        }
        let n = if threads == 1 { 1 } else { threads * 8 };
        // Whole groups of the table-lookup layout per chunk, where the kernel reads it.
        let unit = if tables { TABLE_ROWS } else { 16 };
        let chunk = rows.div_ceil(n).div_ceil(unit) * unit;
        for r0 in (0..rows).step_by(chunk) {
            chunks.push((i, r0, (r0 + chunk).min(rows)));
        }
    }
    let prepared = &p.prepared;
    let workers = threads.min(chunks.len()).max(1);
    let regions = regions::Regions::new(chunks.len(), workers);
    let shared: Vec<rows_out::SharedOut> = outs
        .iter_mut()
        .zip(ws)
        .map(|(out, w)| rows_out::SharedOut::new(out, w.rows, n_tok))
        .collect();
    pool::run(workers, &|t| {
        while let Some(c) = regions.take(t) {
            let Some(&(i, r0, r1)) = chunks.get(c) else {
                break;
            };
            // SAFETY: chunk `c` is handed out once (`Regions::take`), and a matrix's chunks do
            // not overlap.
            let mut o = unsafe { shared[i].rows(r0, r1) };
            compute_rows(
                &ws[i],
                prepared,
                n_tok,
                kernel,
                [prefetch, group],
                r0,
                r1,
                &mut o,
            );
        }
    });
}

/// The kernel ID of the Q8_K quantizer `kernel` (available here) runs.
fn q8k_quantize_id(kernel: Kernel) -> &'static str {
    match kernel {
        Kernel::Avx2 | Kernel::Vnni256 => "q8k_quantize_avx2",
        Kernel::Avx512 => "q8k_quantize_avx512",
        _ => "q8k_quantize_scalar",
    }
}

/// One row into Q8_K blocks by `kernel`'s quantizer (each the specification's bits).
fn quantize_q8k_with(kernel: Kernel, row: &[f32], out: &mut Vec<BlockQ8K>) {
    // SAFETY: `kernel` is available here (`prepare` fell back to scalar otherwise), and every
    // x86 SIMD variant includes AVX2, AVX-512's its AVX-512 F/BW/VL.
    #[cfg(target_arch = "x86_64")]
    match kernel {
        Kernel::Avx2 | Kernel::Vnni256 => return unsafe { x86::quantize_q8k_avx2(row, out) },
        Kernel::Avx512 => return unsafe { x86::quantize_q8k_avx512(row, out) },
        _ => {}
    }
    let _ = kernel;
    quantize_q8k(row, out);
}

/// The kernel ID a product of `w` runs under `kernel` (float products fall back to the scalar
/// kernel when their shape has no SIMD path).
/// Every kernel ID the engine can record (what receipts may list).
pub fn known_kernel_ids() -> Vec<String> {
    let mut v: Vec<String> = [
        "q8k_quantize_scalar",
        "q8k_quantize_avx2",
        "q8k_quantize_avx512",
        "i8_s_quantize_scalar",
        "tq1_0_unpack_tq2_0_scalar",
        "q6_k_q8k_dot_scalar",
        "q6_k_q8k_dot_avx2",
        "q6_k_q8k_dot_avx512",
        "tq2_0_q8k_dot_tables_avx2",
        "i2_s_i8_dot_tables_avx2",
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

/// The kernels a product of `w` runs: one, but for the AVX2 TQ2_0 and I2_S decodes on the
/// table-lookup layout (`tables`), which run the table kernel on the whole groups of 32 rows
/// (threads take whole groups) and their file-layout kernel on the rows after them.
fn rows_kernel_ids(w: &Matrix, n_tok: usize, kernel: Kernel, tables: bool) -> Vec<String> {
    let plain = rows_kernel_id(w, n_tok, kernel);
    if tables {
        let mut ids = Vec::new();
        if w.rows >= TABLE_ROWS {
            let id = match w.ty {
                GgmlType::I2_S => "i2_s_i8_dot_tables_avx2",
                _ => "tq2_0_q8k_dot_tables_avx2",
            };
            ids.push(id.to_string());
        }
        if w.rows % TABLE_ROWS != 0 {
            ids.push(plain);
        }
        return ids;
    }
    vec![plain]
}

fn rows_kernel_id(w: &Matrix, n_tok: usize, kernel: Kernel) -> String {
    if w.ty == GgmlType::Q6_K {
        let isa = match kernel {
            Kernel::Avx2 | Kernel::Vnni256 => "avx2",
            Kernel::Avx512 => "avx512",
            _ => "scalar",
        };
        return format!("q6_k_q8k_dot_{isa}");
    }
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

#[cfg(test)]
mod tests;
