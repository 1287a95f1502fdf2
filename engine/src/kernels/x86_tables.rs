//! TQ2_0 × Q8_K and I2_S × int8 by table lookup (T-MAC's approach), AVX2, exact: 32 rows at a
//! time, with `vpshufb` lookups of sums of activations in place of `vpmaddubsw` products. TQ2_0
//! first; I2_S ([`i2_s_i8_dot_groups_tables_avx2`]) sums whole rows into one integer, so the
//! same lookups need no lane order there.
//!
//! ggml's AVX2 product keeps eight integer lanes per block (lane `l` sums the positions `4l` to
//! `4l + 3` of each of the block's eight 32-weight chunks), so this kernel builds, for each such
//! group of four consecutive activations, a 16-entry table of the sums of every subset of them,
//! and indexes it with four weights' bits. A code is `2·b1 + b0`: its two bit planes give two
//! 4-bit indices per row and group. The sums reach 4·128, past a byte, so each activation is
//! split into its low four bits (unsigned; a table entry at most 60, four groups' lookups summed
//! in 8 bits at most 240) and its high four (signed, −8..7; four groups' at least −128), and the
//! four 8-bit sums per row (two planes × two halves) meet in `vpmaddubsw` with weights 2, 1 and
//! 32, 16 (at most 6864 in 16 bits per four groups, 13728 per lane and block). Each row's lane
//! then takes the specification's block finish (`accumulate_block`: the activations' lane sums
//! subtracted, `fma` by `y.d · d_w`) and the rows their `hsum_float_8`: every result is the
//! scalar specification's, bit for bit.
//!
//! The weights are read from their own layout ([`tq2_0_table_layout`]): per group of 32 rows and
//! block, eight lanes × eight chunks of 32 index bytes (one per row, the `b1` plane's index in
//! the low nibble and the `b0` plane's in the high one), then the 32 rows' F16 scales: the
//! grouped copy ([`super::Matrix::grouped`], [`super::grouped_copy`]) that the AVX2 TQ2_0 decode
//! reads when its plan chose `rows 32` ([`super::TQ2_AVX2_ROWS`]); the tuner times it against the
//! two-row `vpmaddubsw` kernel ([`super::x86::tq2_0_q8k_dot_span_avx2`]). On a Zen 1 (one
//! thread, 2026-12-06) criterion's L3-resident products took 16-19% less time than with that
//! kernel, and the tuner's products streamed from memory (prefetching 2 KiB ahead) 213 against
//! 274 µs.
//!
//! Callers must have checked the CPU features (AVX2, FMA, F16C: [`super::Kernel::Avx2`]'s); the
//! functions are `unsafe` for that reason only, and read nothing outside the slices they are
//! given (lengths are asserted on entry).

#![allow(clippy::missing_safety_doc)]

use std::arch::x86_64::*;

use super::scalar::{hsum8, tq2_0_code, BlockQ8K, QK_I2_S, QK_K};
use super::x86::{prefetch_ahead, TQ2_BYTES};

pub use super::TABLE_ROWS;

/// Bytes of one group of 32 rows in the table layout, per block: 64 lanes × chunks of 32 index
/// bytes, then 32 F16 scales.
pub const TABLE_GROUP_BLOCK_BYTES: usize = 64 * TABLE_ROWS + 2 * TABLE_ROWS;

/// Bytes of the tables for one block of activations: 64 groups × (16 low-half sums, 16 high).
pub const TABLE_BYTES: usize = 64 * 32;

/// The vector slot of row `r` (0..32) of a group: the kernel widens its 8-bit sums with
/// `vpunpcklbw`/`vpunpckhbw`, which take slots 0-7 and 16-23 (then 8-15 and 24-31) to 16-bit
/// lanes in that order, so rows are stored where they come out in order.
fn slot_of_row(r: usize) -> usize {
    let (half, k) = (r / 16, r % 16);
    let (lane128, within) = (k / 8, k % 8);
    lane128 * 16 + half * 8 + within
}

/// The table layout of `rows` TQ2_0 rows of `cols` weights (`data` in the file's layout): each
/// whole group of 32 rows rewritten (`cols / 256 ·` [`TABLE_GROUP_BLOCK_BYTES`] bytes, as many as
/// the 32 rows take in the file, so group `k` starts at `k · 32 ·` row bytes), the last
/// `rows % 32` rows as they were.
pub fn tq2_0_table_layout(data: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let mut out = vec![0u8; data.len()];
    tq2_0_table_layout_into(data, rows, cols, &mut out);
    out
}

/// [`tq2_0_table_layout`] into `out` (as long as `data`).
pub fn tq2_0_table_layout_into(data: &[u8], rows: usize, cols: usize, out: &mut [u8]) {
    assert_eq!(cols % QK_K, 0);
    assert_eq!(data.len(), out.len());
    let nb = cols / QK_K;
    let rb = nb * TQ2_BYTES;
    assert!(data.len() >= rows * rb);
    let groups = rows / TABLE_ROWS;
    let gb = nb * TABLE_GROUP_BLOCK_BYTES;
    debug_assert_eq!(gb, TABLE_ROWS * rb);
    out[groups * gb..].copy_from_slice(&data[groups * gb..]);
    for (g, o) in out[..groups * gb].chunks_exact_mut(gb).enumerate() {
        for r in 0..TABLE_ROWS {
            let s = slot_of_row(r);
            let row = &data[(g * TABLE_ROWS + r) * rb..][..rb];
            for b in 0..nb {
                let x = &row[b * TQ2_BYTES..][..TQ2_BYTES];
                let ob = &mut o[b * TABLE_GROUP_BLOCK_BYTES..][..TABLE_GROUP_BLOCK_BYTES];
                for l in 0..8 {
                    for c in 0..8 {
                        let (mut i1, mut i0) = (0u8, 0u8);
                        for i in 0..4 {
                            let q = tq2_0_code(&x[..64], 32 * c + 4 * l + i);
                            i1 |= ((q >> 1) & 1) << i;
                            i0 |= (q & 1) << i;
                        }
                        ob[(l * 8 + c) * TABLE_ROWS + s] = i1 | (i0 << 4);
                    }
                }
                ob[64 * TABLE_ROWS + 2 * r..][..2].copy_from_slice(&x[64..66]);
            }
        }
    }
}

/// Four consecutive groups' lookups for 32 rows, summed: the groups' index vectors from `idx`
/// on and their tables from `tab` on (32 bytes a group each, the low-half sums then the high),
/// both planes' lookups summed in 8 bits over the four groups (low halves at most 240, high at
/// least −128) and joined by `vpmaddubsw` into 16-bit sums: rows 0-15 (the low unpack), then
/// rows 16-31 (the high), in [`slot_of_row`]'s order, each at most 6096 and at least −6144.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn four_groups(idx: *const u8, tab: *const u8) -> [__m256i; 2] {
    let m15 = _mm256_set1_epi8(15);
    // `vpmaddubsw` weights: (2, 1) for the two planes' low halves (unsigned sums first), and
    // (32, 16) for their high halves (the weights first, as the unsigned operand).
    let w_lo = _mm256_set1_epi16(0x0102);
    let w_hi = _mm256_set1_epi16(0x1020);
    let z = _mm256_setzero_si256();
    let (mut p1lo, mut p1hi, mut p0lo, mut p0hi) = (z, z, z, z);
    for i in 0..4 {
        let v = _mm256_loadu_si256(idx.add(32 * i) as *const __m256i);
        let i1 = _mm256_and_si256(v, m15);
        let i0 = _mm256_and_si256(_mm256_srli_epi16(v, 4), m15);
        let tp = tab.add(32 * i);
        let tlo = _mm256_broadcastsi128_si256(_mm_loadu_si128(tp as *const __m128i));
        let thi = _mm256_broadcastsi128_si256(_mm_loadu_si128(tp.add(16) as *const __m128i));
        p1lo = _mm256_add_epi8(p1lo, _mm256_shuffle_epi8(tlo, i1));
        p1hi = _mm256_add_epi8(p1hi, _mm256_shuffle_epi8(thi, i1));
        p0lo = _mm256_add_epi8(p0lo, _mm256_shuffle_epi8(tlo, i0));
        p0hi = _mm256_add_epi8(p0hi, _mm256_shuffle_epi8(thi, i0));
    }
    [
        _mm256_add_epi16(
            _mm256_maddubs_epi16(_mm256_unpacklo_epi8(p1lo, p0lo), w_lo),
            _mm256_maddubs_epi16(w_hi, _mm256_unpacklo_epi8(p1hi, p0hi)),
        ),
        _mm256_add_epi16(
            _mm256_maddubs_epi16(_mm256_unpackhi_epi8(p1lo, p0lo), w_lo),
            _mm256_maddubs_epi16(w_hi, _mm256_unpackhi_epi8(p1hi, p0hi)),
        ),
    ]
}

/// The tables of `a`'s blocks into `t` (`a.len() ·` [`TABLE_BYTES`] bytes): for block `b`,
/// lane `l` and chunk `c`, at `((b·8 + l)·8 + c)·32`, the 16 sums of the low four bits of every
/// subset of the activations `32c + 4l + i` (subset `idx`: the `i` whose bit is set), then the
/// 16 sums of their high four bits (arithmetic shift, −8..7).
#[target_feature(enable = "avx2")]
pub unsafe fn build_tables_avx2(a: &[BlockQ8K], t: &mut [u8]) {
    assert_eq!(t.len(), a.len() * TABLE_BYTES);
    let masks = subset_masks();
    for (y, tb) in a.iter().zip(t.chunks_exact_mut(TABLE_BYTES)) {
        for l in 0..8 {
            for c in 0..8 {
                let base = 32 * c + 4 * l;
                let mut acc = _mm256_setzero_si256();
                for (i, m) in masks.iter().enumerate() {
                    let v = y.qs[base + i];
                    let p = _mm256_set_m128i(_mm_set1_epi8(v >> 4), _mm_set1_epi8(v & 15));
                    acc = _mm256_add_epi8(acc, _mm256_and_si256(p, *m));
                }
                let at = tb.as_mut_ptr().add((l * 8 + c) * 32) as *mut __m256i;
                _mm256_storeu_si256(at, acc);
            }
        }
    }
}

/// `out[r]` = the TQ2_0 row `r` × `a`, for the whole groups of 32 rows in `layout`
/// ([`tq2_0_table_layout`]) with the tables `t` of `a` ([`build_tables_avx2`]); `out.len()` is
/// 32 times the groups in `layout`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn tq2_0_q8k_dot_groups_tables_avx2(
    layout: &[u8],
    a: &[BlockQ8K],
    t: &[u8],
    ahead: usize,
    out: &mut [f32],
) {
    let nb = a.len();
    let gb = nb * TABLE_GROUP_BLOCK_BYTES;
    assert_eq!(t.len(), nb * TABLE_BYTES);
    assert_eq!(out.len() % TABLE_ROWS, 0);
    assert_eq!(layout.len(), out.len() / TABLE_ROWS * gb);
    for (g, outg) in out.chunks_exact_mut(TABLE_ROWS).enumerate() {
        // The 8 float lanes of the 32 rows: `acc[l][q]` holds lane `l` of rows `8q..8q + 8`.
        let mut acc = [[_mm256_setzero_ps(); 4]; 8];
        let o = layout.as_ptr().add(g * gb);
        for (b, y) in a.iter().enumerate() {
            let ob = o.add(b * TABLE_GROUP_BLOCK_BYTES);
            let tb = t.as_ptr().add(b * TABLE_BYTES);
            prefetch_ahead(ob.add(64 * TABLE_ROWS), ahead, 1);
            let yd = _mm256_set1_ps(y.d);
            // `y.d · d_w` for the 32 rows, eight at a time (the specification's product).
            let d: [__m256; 4] = std::array::from_fn(|q| {
                let h = _mm_loadu_si128(ob.add(64 * TABLE_ROWS + 16 * q) as *const __m128i);
                _mm256_mul_ps(yd, _mm256_cvtph_ps(h))
            });
            for (l, accl) in acc.iter_mut().enumerate() {
                // This lane's 256 index bytes, `ahead` bytes on (0: no software prefetch).
                prefetch_ahead(ob.add(l * 8 * TABLE_ROWS), ahead, 4);
                // The activations' lane sum, taken off in 16 bits before the widening: a lane's
                // two `four_groups` sums are at most 13728 in magnitude and the sum of 32 quants
                // at most 4096, so the difference fits (the same integers as in i32).
                let ysum = _mm256_set1_epi16(y.bsums[2 * l].wrapping_add(y.bsums[2 * l + 1]));
                let mut lane = [_mm256_setzero_si256(); 2];
                for half in 0..2 {
                    let gi = l * 8 + 4 * half;
                    let [lo, hi] = four_groups(ob.add(gi * TABLE_ROWS), tb.add(gi * 32));
                    lane[0] = _mm256_add_epi16(lane[0], lo);
                    lane[1] = _mm256_add_epi16(lane[1], hi);
                }
                for (h, v) in lane.iter().enumerate() {
                    let v = _mm256_sub_epi16(*v, ysum);
                    let eight = [
                        _mm256_cvtepi16_epi32(_mm256_castsi256_si128(v)),
                        _mm256_cvtepi16_epi32(_mm256_extracti128_si256(v, 1)),
                    ];
                    for (k, e) in eight.iter().enumerate() {
                        let q = 2 * h + k;
                        let f = _mm256_cvtepi32_ps(*e);
                        accl[q] = _mm256_fmadd_ps(f, d[q], accl[q]);
                    }
                }
            }
        }
        let mut lanes = [[0f32; TABLE_ROWS]; 8];
        for (l, accl) in acc.iter().enumerate() {
            for (q, v) in accl.iter().enumerate() {
                _mm256_storeu_ps(lanes[l].as_mut_ptr().add(8 * q), *v);
            }
        }
        for (r, o) in outg.iter_mut().enumerate() {
            *o = hsum8(std::array::from_fn(|l| lanes[l][r]));
        }
    }
}

/// Bytes of the I2_S tables per four activations: 16 sums of the low four bits of every subset
/// of them, then 16 of their high four bits (−8..7).
pub const I2S_TABLE_BYTES: usize = 32;

/// Groups of four columns whose 8-bit lookups (four groups) and 16-bit sums (four of those) the
/// I2_S table kernel gathers before widening to i32: four groups' sums are at most 6096 and at
/// least −6144 in a 16-bit lane (`2·240 + 240 + 48·112`; `48·(−128)`), four of those ±24576.
const I2S_WIDEN: usize = 16;

/// The table layout of `rows` I2_S rows of `cols` weights (`data`: bitnet.cpp's x86 layout,
/// `cols / 4` bytes a row, then the tensor's scale and padding): each whole group of 32 rows
/// rewritten as, per four consecutive columns `4k..4k + 4`, 32 index bytes (one per row, at
/// [`slot_of_row`]; the codes' `b1` plane in the low nibble, bit `i` for column `4k + i`, the
/// `b0` plane in the high one), as many bytes as the rows take in the file (group `k` at
/// `k · 32 ·` row bytes); the rows after the last whole group, the scale and the padding kept
/// as they were.
pub fn i2_s_table_layout_into(data: &[u8], rows: usize, cols: usize, out: &mut [u8]) {
    assert_eq!(cols % QK_I2_S, 0);
    assert_eq!(data.len(), out.len());
    let rb = cols / 4;
    assert!(data.len() >= rows * rb);
    let gb = TABLE_ROWS * rb;
    let groups = rows / TABLE_ROWS;
    out[groups * gb..].copy_from_slice(&data[groups * gb..]);
    for (g, o) in out[..groups * gb].chunks_exact_mut(gb).enumerate() {
        for r in 0..TABLE_ROWS {
            let s = slot_of_row(r);
            let row = &data[(g * TABLE_ROWS + r) * rb..][..rb];
            // Group `G` of 128 columns is bytes `32G..32G + 32`: column `128G + 32l + j` in
            // byte `32G + j` at bits `6 − 2l`, so columns `4k..4k + 4` with `k = 32G + 8l + m`
            // are bytes `32G + 4m..32G + 4m + 4` at that shift.
            for (gg, bytes) in row.chunks_exact(32).enumerate() {
                for l in 0..4 {
                    let shift = 6 - 2 * l;
                    for m in 0..8 {
                        let (mut i1, mut i0) = (0u8, 0u8);
                        for i in 0..4 {
                            let c = (bytes[4 * m + i] >> shift) & 3;
                            i1 |= (c >> 1) << i;
                            i0 |= (c & 1) << i;
                        }
                        let k = 32 * gg + 8 * l + m;
                        o[k * TABLE_ROWS + s] = i1 | (i0 << 4);
                    }
                }
            }
        }
    }
}

/// The I2_S tables of one token's activations `q` into `t` (`8 · q.len()` bytes): for columns
/// `4k..4k + 4`, at `32k`, the 16 sums of the low four bits of every subset of them (subset
/// `idx`: the columns `4k + i` whose bit `i` is set), then the 16 sums of their high four bits
/// (arithmetic shift).
#[target_feature(enable = "avx2")]
pub unsafe fn build_i2_s_tables_avx2(q: &[i8], t: &mut [u8]) {
    assert_eq!(q.len() % 4, 0);
    assert_eq!(t.len(), q.len() / 4 * I2S_TABLE_BYTES);
    let masks = subset_masks();
    for (qk, tk) in q.chunks_exact(4).zip(t.chunks_exact_mut(I2S_TABLE_BYTES)) {
        let mut acc = _mm256_setzero_si256();
        for (&v, m) in qk.iter().zip(&masks) {
            let p = _mm256_set_m128i(_mm_set1_epi8(v >> 4), _mm_set1_epi8(v & 15));
            acc = _mm256_add_epi8(acc, _mm256_and_si256(p, *m));
        }
        _mm256_storeu_si256(tk.as_mut_ptr() as *mut __m256i, acc);
    }
}

/// Byte masks of the 16 subsets of four: in each 128-bit half, byte `idx` is all ones in mask
/// `i` when bit `i` of `idx` is set.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn subset_masks() -> [__m256i; 4] {
    std::array::from_fn(|i| {
        let m: [u8; 16] = std::array::from_fn(|idx| if (idx >> i) & 1 == 1 { 0xFF } else { 0 });
        let v = _mm_loadu_si128(m.as_ptr() as *const __m128i);
        _mm256_set_m128i(v, v)
    })
}

/// `out[r]` = `Σ code·q` of I2_S row `r` (exact, as [`super::scalar::i2_s_i8_dot_scalar`]) for
/// the whole groups of 32 rows in `layout` ([`i2_s_table_layout_into`]), with the tables `t` of
/// one token's activations ([`build_i2_s_tables_avx2`]); `out.len()` is 32 times the groups in
/// `layout`. Integer sums, so any order gives the same result: per four columns and 32 rows,
/// four `vpshufb` (two planes × two halves) summed in 8 bits over four column groups, joined by
/// `vpmaddubsw` with (2, 1) and (32, 16), summed in 16 bits over four of those, then in i32.
#[target_feature(enable = "avx2")]
pub unsafe fn i2_s_i8_dot_groups_tables_avx2(
    layout: &[u8],
    t: &[u8],
    ahead: usize,
    out: &mut [i32],
) {
    let nk = t.len() / I2S_TABLE_BYTES;
    assert_eq!(t.len() % I2S_TABLE_BYTES, 0);
    assert_eq!(nk % I2S_WIDEN, 0);
    let gb = nk * TABLE_ROWS;
    assert_eq!(out.len() % TABLE_ROWS, 0);
    assert_eq!(layout.len(), out.len() / TABLE_ROWS * gb);
    for (g, outg) in out.chunks_exact_mut(TABLE_ROWS).enumerate() {
        let o = layout.as_ptr().add(g * gb);
        // The rows' i32 sums are kept in `outg` (rows 0-7, 8-15, 16-23, 24-31), not in
        // registers: the lookups need all but a few of the sixteen.
        let acc = outg.as_mut_ptr() as *mut __m256i;
        for q in 0..4 {
            _mm256_storeu_si256(acc.add(q), _mm256_setzero_si256());
        }
        for k16 in (0..nk).step_by(I2S_WIDEN) {
            // This step's 512 index bytes, `ahead` bytes on (0: no software prefetch).
            prefetch_ahead(o.add(k16 * TABLE_ROWS), ahead, 8);
            let mut lane = [_mm256_setzero_si256(); 2];
            for k4 in (k16..k16 + I2S_WIDEN).step_by(4) {
                let [lo, hi] =
                    four_groups(o.add(k4 * TABLE_ROWS), t.as_ptr().add(k4 * I2S_TABLE_BYTES));
                lane[0] = _mm256_add_epi16(lane[0], lo);
                lane[1] = _mm256_add_epi16(lane[1], hi);
            }
            for (h, v) in lane.iter().enumerate() {
                let halves = [
                    _mm256_cvtepi16_epi32(_mm256_castsi256_si128(*v)),
                    _mm256_cvtepi16_epi32(_mm256_extracti128_si256(*v, 1)),
                ];
                for (j, e) in halves.iter().enumerate() {
                    let a = acc.add(2 * h + j);
                    _mm256_storeu_si256(a, _mm256_add_epi32(_mm256_loadu_si256(a), *e));
                }
            }
        }
    }
}
