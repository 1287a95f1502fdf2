//! Ternary kernels on the 256-bit forms of AVX-512 VNNI (`vpdpbusd ymm`, AVX-512 VL), for CPUs
//! whose 512-bit operations are double-pumped (AVX-512 on AMD Zen 4): there a 512-bit vector
//! costs two 256-bit ones, so the full-width kernels' permuted and duplicated activations buy
//! nothing, while VNNI still replaces AVX2's `vpmaddubsw` + `vpmaddwd` pair with one instruction.
//!
//! A `vpdpbusd` on 32 code bytes and 32 activations adds bytes `4k..4k+4` into 32-bit lane `k`:
//! exactly the specification's lane of those elements ([`super::scalar`]), so the activations are
//! used in their own order and every result is the scalar kernel's, bit for bit (proptest in
//! `super::tests`). Decode takes rows in groups sharing each activation load; prefill takes
//! tokens in groups sharing each block's unpacked codes.
//!
//! Callers must have checked [`super::Kernel::Vnni256`]'s features; the functions are `unsafe`
//! for that reason only and read nothing outside the slices they are given (lengths asserted).

#![allow(clippy::missing_safety_doc)]
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::rows_out::RowsOut;
use super::scalar::BlockQ8K;
use super::x86::{accumulate_block, f16_scale, hsum8, lane_ysums, prefetch_ahead, tq1_0_codes};
use super::{Matrix, GROUPS, TQ2_CODES};
use crate::gguf::GgmlType;

const TQ2_BYTES: usize = 66;
const TQ1_BYTES: usize = 54;
/// How far ahead along the matrix the kernels prefetch (bytes): decode's rows are a few hundred
/// bytes, so this reaches several row groups ahead. A tuned plan may choose another distance for
/// decode.
pub(super) const PREFETCH: usize = 4096;
/// The fewest rows per decode call that take the masked-plane form of the TQ2_0 body (see
/// [`dot_body`]). With eight rows its one accumulator chain per row stays full; with
/// four each chain's latency shows. Scratch benchmark, 4096 × 1536 TQ2_0 grouped in huge pages,
/// one thread, best of 5 rounds (AMD EPYC family 25 model 17, Zen 4, 2026-12-05): eight rows
/// 57-64 µs against the shift-and-mask form's 67-80 at four rows and 80-84 at eight; the
/// masked form at four rows 75-86.
const HORNER_ROWS: usize = 8;
/// Rows per decode call: they share each activation vector. A tuned plan may choose another of
/// [`super::GROUPS`].
pub const DECODE_ROWS: usize = 4;
/// Tokens per prefill call: they share each block's unpacked codes. A tuned plan may choose
/// another of [`super::GROUPS`].
pub const PREFILL_TOKENS: usize = 4;
/// Tokens per prefill call on rows of `nb` blocks given the plan's group `t`: the largest of
/// [`GROUPS`] up to `t` whose activations (`nb` Q8_K blocks a token) fit
/// [`super::L1_ACTS_BUDGET`], else the smallest. Scratch benchmark (128 tokens, one thread, Zen
/// 4, 2026-12-06): 1536 × 4096 (16 blocks; eight tokens 37 KiB) 8.0-8.3 ms with four tokens
/// against 8.9 with eight; 4096 × 1536 (6 blocks) 8.1-8.2 ms with eight against 8.8 with four.
pub fn prefill_group(t: usize, nb: usize) -> usize {
    let token = nb * std::mem::size_of::<BlockQ8K>();
    GROUPS
        .into_iter()
        .rev()
        .find(|&g| g <= t && g * token <= super::L1_ACTS_BUDGET)
        .unwrap_or(GROUPS[0])
}

/// Rows per prefill tile: the tile's tokens' activations stay in L1 while its rows stream past.
const PREFILL_ROW_TILE: usize = 64;

/// The 8 code vectors of a TQ2_0 block (weights plus one, 0..=2), in the order of the Q8_K
/// activations they pair with: vector `4h + l` is shift `l` of bytes `32h..32h+32`, which holds
/// elements `128h + 32l ..+32`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn tq2_0_codes(x: *const u8) -> [__m256i; 8] {
    let m3 = _mm256_set1_epi8(3);
    let mut c = [_mm256_setzero_si256(); 8];
    for h in 0..2 {
        let q = _mm256_loadu_si256(x.add(32 * h) as *const __m256i);
        c[4 * h] = _mm256_and_si256(q, m3);
        c[4 * h + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 2), m3);
        c[4 * h + 2] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m3);
        c[4 * h + 3] = _mm256_and_si256(_mm256_srli_epi16(q, 6), m3);
    }
    c
}

/// The 8 exact lanes of one block: codes against the block's 256 activations, in order.
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512vnni,avx2")]
unsafe fn lanes(codes: &[__m256i; 8], y: &BlockQ8K) -> __m256i {
    let yp = y.qs.as_ptr();
    let mut s = _mm256_setzero_si256();
    for (i, c) in codes.iter().enumerate() {
        s = _mm256_dpbusd_epi32(s, *c, _mm256_loadu_si256(yp.add(32 * i) as *const __m256i));
    }
    s
}

/// The codes of block `b` of a ternary row of type `tq2` (TQ2_0) or not (TQ1_0), and its scale.
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn block_codes(row: &[u8], b: usize, tq2: bool) -> ([__m256i; 8], f32) {
    if tq2 {
        let x = row.as_ptr().add(b * TQ2_BYTES);
        (
            tq2_0_codes(x),
            f16_scale(std::slice::from_raw_parts(x.add(64), 2)),
        )
    } else {
        let x = &row[b * TQ1_BYTES..(b + 1) * TQ1_BYTES];
        (tq1_0_codes(x), f16_scale(&x[52..]))
    }
}

/// `R` rows of a ternary matrix (TQ2_0 when `tq2`, else TQ1_0) against one token's Q8_K blocks
/// `a` (decode): each activation vector is loaded once for the `R` rows. Each row's result is
/// exactly the one-row specification's.
#[target_feature(enable = "avx512f,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn ternary_dot_rows_vnni256<const R: usize>(
    rows: [&[u8]; R],
    a: &[BlockQ8K],
    tq2: bool,
    ahead: usize,
) -> [f32; R] {
    let bytes = if tq2 { TQ2_BYTES } else { TQ1_BYTES };
    for r in &rows {
        assert_eq!(r.len(), a.len() * bytes);
    }
    dot_rows_strided::<R>(rows.map(|r| r.as_ptr()), bytes, a, tq2, ahead)
}

/// `R` TQ2_0 rows stored as one group of the grouped copy ([`super::group_rows`] split after
/// [`TQ2_CODES`]: `group` holds the `R × a.len()` blocks' scales, block `b` of row `i` at
/// `(b·R + i)·2`, then their codes, at `2·R·a.len() + (b·R + i)·64`) against one token's Q8_K
/// blocks `a` (decode): the group is read front to back as one stream. Each row's result is
/// exactly the one-row specification's.
///
/// Scratch benchmark (one thread, AMD EPYC family 25 model 17, Zen 4, 2026-12-06; every
/// projection of the `700m` preset, 175 MB grouped by 8 in huge pages, in layer order, no
/// software prefetch, alternating with the plain interleave's eight-row body in 20 rounds, three
/// runs): best rounds 6.23-6.75 ms against 6.68-6.95 ms (26-28 GB/s against 25-26).
#[target_feature(enable = "avx512f,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn tq2_0_dot_group_vnni256<const R: usize>(
    group: &[u8],
    a: &[BlockQ8K],
    ahead: usize,
) -> [f32; R] {
    assert_eq!(group.len(), R * a.len() * TQ2_BYTES);
    let mut out = [0f32; R];
    group_body::<R>(group.as_ptr(), 0, a, ahead, &mut out);
    out
}

/// Consecutive whole groups of [`tq2_0_dot_group_vnni256`] in one call: `groups` holds
/// `out.len() / R` groups of `R × a.len()` blocks, group `k`'s rows go to `out[k·R..(k+1)·R]`,
/// each exactly what the one-group call gives. The loop's fixed costs are paid once, and one
/// group's final sums overlap the next group's loads (scratch benchmark, 4096 × 1536 TQ2_0
/// grouped by 8 in huge pages, one thread, Zen 4, 2026-12-06: 60.5-65.6 µs from memory against
/// 64.9-69.9 µs group by group, in three runs of four).
#[target_feature(enable = "avx512f,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn tq2_0_dot_groups_vnni256<const R: usize>(
    groups: &[u8],
    a: &[BlockQ8K],
    ahead: usize,
    out: &mut [f32],
) {
    let gb = R * a.len() * TQ2_BYTES;
    assert!(out.len() % R == 0 && groups.len() == out.len() / R * gb);
    group_body::<R>(groups.as_ptr(), gb, a, ahead, out)
}

/// The `R ≤ 8` F16 scales at `p` as f32 (lanes from `R` on unspecified).
#[inline]
#[target_feature(enable = "avx2,f16c")]
unsafe fn group_scales<const R: usize>(p: *const u8) -> __m256 {
    match R {
        8 => _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
        4 => _mm256_castps128_ps256(_mm_cvtph_ps(_mm_loadl_epi64(p as *const __m128i))),
        _ => {
            let mut h = [0u8; 16];
            h[..2 * R].copy_from_slice(std::slice::from_raw_parts(p, 2 * R));
            _mm256_cvtph_ps(_mm_loadu_si128(h.as_ptr() as *const __m128i))
        }
    }
}

/// The `out.len() / R` groups of the grouped copy from `base`, `gb` bytes apart (layout at
/// [`tq2_0_dot_group_vnni256`], in bounds: the callers check), against `a`; group `k`'s rows
/// into `out[k·R..(k+1)·R]`: the body of [`tq2_0_dot_group_vnni256`] (one group) and
/// [`tq2_0_dot_groups_vnni256`] (a thread's groups in one call; the group loop is here because
/// a body `#[inline]` and called once per group was not inlined).
///
/// Each code vector is masked in place per plane (`q & 3 << 2l`, its codes scaled by `4^l`) and
/// the planes are summed from the top down with a `>> 2` between (each divides a multiple of 4
/// exactly): with eight rows in one chain per row, with fewer in two (planes 3 and 2, planes 1
/// and 0, joined as `(s >> 4) + t`), so that the chains' latency stays covered (two chains at
/// four rows: about 60 against 67-74 µs for one, 4096 × 1536 streamed, Zen 4). The activations'
/// sums (the codes' offset of one) start the chains, pre-scaled, so the lanes end as the
/// specification's without a subtraction per row; the `R` scales of a block are converted and
/// multiplied by the block's activation scale in one vector.
#[target_feature(enable = "avx512f,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline(never)]
unsafe fn group_body<const R: usize>(
    base: *const u8,
    gb: usize,
    a: &[BlockQ8K],
    ahead: usize,
    out: &mut [f32],
) {
    const { assert!(R <= 8) };
    let masks = [3i8, 12, 48, -64].map(|m| _mm256_set1_epi8(m));
    let mut d = [0f32; 8];
    for (k, o) in out.chunks_exact_mut(R).enumerate() {
        let group = base.add(k * gb);
        let codes = group.add(2 * R * a.len());
        let mut acc = [_mm256_setzero_ps(); R];
        for (b, y) in a.iter().enumerate() {
            let x = codes.add(b * R * TQ2_CODES);
            prefetch_ahead(x, ahead, R);
            let dw = group_scales::<R>(group.add(2 * R * b));
            _mm256_storeu_ps(d.as_mut_ptr(), _mm256_mul_ps(dw, _mm256_set1_ps(y.d)));
            let ys = lane_ysums(y);
            let mut q = [[_mm256_setzero_si256(); 2]; R];
            for r in 0..R {
                for h in 0..2 {
                    q[r][h] = _mm256_loadu_si256(x.add(TQ2_CODES * r + 32 * h) as *const __m256i);
                }
                // Keeps the loads in address order: left to the compiler, they ran from the last
                // row down, and without software prefetch the stream ran at a quarter of its speed
                // (4096 × 1536, Zen 4: 238 against 56-63 µs).
                std::arch::asm!("", options(nostack, preserves_flags));
            }
            let plane = |r: usize, h: usize, l: usize| _mm256_and_si256(q[r][h], masks[l]);
            let yv = |h: usize, l: usize| {
                _mm256_loadu_si256(y.qs.as_ptr().add(128 * h + 32 * l) as *const __m256i)
            };
            let zero = _mm256_setzero_si256();
            let mut s;
            if R >= HORNER_ROWS {
                s = [_mm256_sub_epi32(zero, _mm256_slli_epi32::<6>(ys)); R];
                for l in (0..4).rev() {
                    for h in 0..2 {
                        let v = yv(h, l);
                        for r in 0..R {
                            s[r] = _mm256_dpbusd_epi32(s[r], plane(r, h, l), v);
                        }
                    }
                    if l > 0 {
                        for r in 0..R {
                            s[r] = _mm256_srai_epi32::<2>(s[r]);
                        }
                    }
                }
            } else {
                s = [zero; R];
                let mut t = [_mm256_sub_epi32(zero, _mm256_slli_epi32::<2>(ys)); R];
                for (ls, lt) in [(3, 1), (2, 0)] {
                    for h in 0..2 {
                        let v = yv(h, ls);
                        for r in 0..R {
                            s[r] = _mm256_dpbusd_epi32(s[r], plane(r, h, ls), v);
                        }
                        let v = yv(h, lt);
                        for r in 0..R {
                            t[r] = _mm256_dpbusd_epi32(t[r], plane(r, h, lt), v);
                        }
                    }
                    if ls == 3 {
                        for r in 0..R {
                            s[r] = _mm256_srai_epi32::<2>(s[r]);
                            t[r] = _mm256_srai_epi32::<2>(t[r]);
                        }
                    }
                }
                for r in 0..R {
                    s[r] = _mm256_add_epi32(_mm256_srai_epi32::<4>(s[r]), t[r]);
                }
            }
            if R >= 4 {
                // From four rows on, the scales are broadcast from `d` in memory (a load each,
                // folded into the multiply-add), not shuffled out of the register that computed
                // them: the shuffles compete with the products for the vector pipes. Passing `d`
                // to the empty `asm!` keeps the compiler from forwarding the store. Criterion,
                // 4096 × 1536 TQ2_0 grouped (L3), four alternating pairs (Zen 4, 2026-12-07):
                // eight rows 52.4-52.7 µs against 53.1-55.6, four rows 58.3-58.7 against
                // 58.4-60.3; two rows measured 2% slower this way, so they keep the shuffles.
                std::arch::asm!("/* {0} */", in(reg) d.as_mut_ptr(), options(nostack, preserves_flags));
                for r in 0..R {
                    let dr = _mm256_broadcast_ss(&*d.as_ptr().add(r));
                    acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[r]), dr, acc[r]);
                }
            } else {
                for r in 0..R {
                    acc[r] =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[r]), _mm256_set1_ps(d[r]), acc[r]);
                }
            }
        }
        for r in 0..R {
            o[r] = hsum8(acc[r]);
        }
    }
}

/// The body of [`ternary_dot_rows_vnni256`]: row `r`'s block `b` at `rows[r] + b·stride`
/// (`a.len()` blocks each, in bounds: the caller checks).
#[target_feature(enable = "avx512f,avx512vl,avx512vnni,avx2,fma,f16c")]
// Kept out of line: inlined into its row loop (the `tq2` branch, the group's registers and the
// loop's own) it decoded 30% slower on Intel family 6 model 167 (criterion, 4096 × 1536 TQ2_0:
// 106 µs inlined, 82 µs out of line).
#[inline(never)]
unsafe fn dot_rows_strided<const R: usize>(
    rows: [*const u8; R],
    stride: usize,
    a: &[BlockQ8K],
    tq2: bool,
    ahead: usize,
) -> [f32; R] {
    dot_body::<R>(|r, b| rows[r].add(b * stride), a, tq2, ahead)
}

/// `R` rows against `a`, row `r`'s block `b` at `at(r, b)`: the body of [`dot_rows_strided`]
/// (rows in the file's layout; the grouped copy has its own body, [`group_body`]).
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_body<const R: usize>(
    at: impl Fn(usize, usize) -> *const u8,
    a: &[BlockQ8K],
    tq2: bool,
    ahead: usize,
) -> [f32; R] {
    let m3 = _mm256_set1_epi8(3);
    // Plane `l`'s bits in place, for the masked-plane form.
    let masks = [3i8, 12, 48, -64].map(|m| _mm256_set1_epi8(m));
    let mut acc = [_mm256_setzero_ps(); R];
    for (b, y) in a.iter().enumerate() {
        let yp = y.qs.as_ptr();
        let mut s = [_mm256_setzero_si256(); R];
        let mut dw = [0f32; R];
        if tq2 && R >= HORNER_ROWS {
            // Each plane masked in place (`q & 3 << 2l`, so its codes come scaled by `4^l`),
            // from the top plane down: `s = (s >> 2) + planes l` keeps one accumulator per row,
            // and each `>> 2` divides a multiple of 4 exactly, so the lanes end as the plain
            // codes' sums. One `vpand` per 32 codes instead of a shift and a mask.
            let mut q = [[_mm256_setzero_si256(); 2]; R];
            for r in 0..R {
                let x = at(r, b);
                prefetch_ahead(x, ahead, 1);
                dw[r] = f16_scale(std::slice::from_raw_parts(x.add(64), 2));
                for h in 0..2 {
                    q[r][h] = _mm256_loadu_si256(x.add(32 * h) as *const __m256i);
                }
            }
            for l in (0..4).rev() {
                for h in 0..2 {
                    let v = _mm256_loadu_si256(yp.add(128 * h + 32 * l) as *const __m256i);
                    for r in 0..R {
                        s[r] = _mm256_dpbusd_epi32(s[r], _mm256_and_si256(q[r][h], masks[l]), v);
                    }
                }
                if l > 0 {
                    for r in 0..R {
                        s[r] = _mm256_srai_epi32::<2>(s[r]);
                    }
                }
            }
        } else if tq2 {
            // Codes formed next to their use (a shift and a mask), so R rows need R registers
            // of packed codes rather than 8R of unpacked ones.
            for r in 0..R {
                let x = at(r, b);
                prefetch_ahead(x, ahead, 1);
                dw[r] = f16_scale(std::slice::from_raw_parts(x.add(64), 2));
            }
            for h in 0..2 {
                let mut q = [_mm256_setzero_si256(); R];
                for r in 0..R {
                    q[r] = _mm256_loadu_si256(at(r, b).add(32 * h) as *const __m256i);
                }
                for l in 0..4 {
                    let v = _mm256_loadu_si256(yp.add(128 * h + 32 * l) as *const __m256i);
                    let sh = _mm_cvtsi32_si128(2 * l as i32);
                    for r in 0..R {
                        let c = _mm256_and_si256(_mm256_srl_epi16(q[r], sh), m3);
                        s[r] = _mm256_dpbusd_epi32(s[r], c, v);
                    }
                }
            }
        } else {
            for r in 0..R {
                let x = at(r, b);
                prefetch_ahead(x, ahead, 1);
                let (codes, d) = block_codes(std::slice::from_raw_parts(x, TQ1_BYTES), 0, false);
                dw[r] = d;
                s[r] = lanes(&codes, y);
            }
        }
        for r in 0..R {
            acc[r] = accumulate_block(acc[r], s[r], y, dw[r]);
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = hsum8(acc[r]);
    }
    out
}

/// One ternary row against `T` tokens' Q8_K blocks (prefill): each block's codes are unpacked
/// once for the `T` tokens. Each token's result is exactly the specification's.
#[target_feature(enable = "avx512f,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn ternary_dot_tokens_vnni256<const T: usize>(
    row: &[u8],
    acts: [&[BlockQ8K]; T],
    tq2: bool,
) -> [f32; T] {
    let bytes = if tq2 { TQ2_BYTES } else { TQ1_BYTES };
    let nb = row.len() / bytes;
    assert_eq!(row.len(), nb * bytes);
    for a in &acts {
        assert_eq!(a.len(), nb);
    }
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        _mm_prefetch(
            row.as_ptr().add(b * bytes).wrapping_add(PREFETCH) as *const i8,
            _MM_HINT_T0,
        );
        let (codes, dw) = block_codes(row, b, tq2);
        for t in 0..T {
            let y = &acts[t][b];
            acc[t] = accumulate_block(acc[t], lanes(&codes, y), y, dw);
        }
    }
    let mut out = [0f32; T];
    for t in 0..T {
        out[t] = hsum8(acc[t]);
    }
    out
}

/// Rows `r0..r1` of the ternary matrix `w` against `n_tok` tokens' Q8_K `blocks` (`n_tok × nb`,
/// token-major), into `o`: decode (fewer than [`super::plan::PREFILL_MIN_TOKENS`] tokens) by
/// groups of `group` rows (default [`DECODE_ROWS`]) prefetching `prefetch` bytes ahead (default
/// `PREFETCH`), prefill by groups of `group` tokens (default [`PREFILL_TOKENS`]) over row tiles.
/// A group not in [`GROUPS`] takes the default.
///
/// # Safety
/// The CPU must run [`super::Kernel::Vnni256`] (AVX2, FMA, F16C, AVX-512 F/VL/VNNI).
pub unsafe fn q8k_rows(
    w: &Matrix,
    blocks: &[BlockQ8K],
    n_tok: usize,
    r0: usize,
    r1: usize,
    o: &mut RowsOut,
    [prefetch, group]: [Option<usize>; 2],
) {
    let group = group.filter(|g| GROUPS.contains(g));
    if n_tok < super::plan::PREFILL_MIN_TOKENS {
        let ahead = prefetch.unwrap_or(PREFETCH);
        match group.unwrap_or(DECODE_ROWS) {
            2 => decode_rows::<2>(w, blocks, n_tok, r0, r1, o, ahead),
            8 => decode_rows::<8>(w, blocks, n_tok, r0, r1, o, ahead),
            _ => decode_rows::<4>(w, blocks, n_tok, r0, r1, o, ahead),
        }
    } else {
        match prefill_group(group.unwrap_or(PREFILL_TOKENS), w.cols / super::QK_K) {
            2 => prefill_rows::<2>(w, blocks, n_tok, r0, r1, o),
            8 => prefill_rows::<8>(w, blocks, n_tok, r0, r1, o),
            _ => prefill_rows::<4>(w, blocks, n_tok, r0, r1, o),
        }
    }
}

/// Decode rows `r0..r1` by groups of `R` rows, then single rows.
#[target_feature(enable = "avx512f,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn decode_rows<const R: usize>(
    w: &Matrix,
    blocks: &[BlockQ8K],
    n_tok: usize,
    r0: usize,
    r1: usize,
    o: &mut RowsOut,
    ahead: usize,
) {
    let tq2 = w.ty == GgmlType::TQ2_0;
    debug_assert!(tq2 || w.ty == GgmlType::TQ1_0);
    let nb = w.cols / super::QK_K;
    let acts = |t: usize| &blocks[t * nb..(t + 1) * nb];
    let mut r = r0;
    // The grouped copy, where it is grouped by `R` and `r0` starts a group: its whole groups.
    if let Some((g, data)) = w.grouped.filter(|&(g, _)| tq2 && g == R && r0 % R == 0) {
        let gb = g * nb * TQ2_BYTES;
        let end = r0 + (r1.min(w.rows / g * g).saturating_sub(r0)) / g * g;
        if n_tok == 1 && end > r {
            // One token (decode): the whole groups in one call, straight into the output.
            let out = o.token_span(0, r, end);
            tq2_0_dot_groups_vnni256::<R>(&data[r / g * gb..end / g * gb], acts(0), ahead, out);
            r = end;
        }
        while r < end {
            let group = &data[r / g * gb..(r / g + 1) * gb];
            for t in 0..n_tok {
                let got = tq2_0_dot_group_vnni256::<R>(group, acts(t), ahead);
                for (k, v) in got.iter().enumerate() {
                    o.set(r + k, t, *v);
                }
            }
            r += R;
        }
    }
    while r + R <= r1 {
        let rows: [&[u8]; R] = std::array::from_fn(|k| w.row(r + k));
        for t in 0..n_tok {
            let got = ternary_dot_rows_vnni256::<R>(rows, acts(t), tq2, ahead);
            for (k, g) in got.iter().enumerate() {
                o.set(r + k, t, *g);
            }
        }
        r += R;
    }
    for r in r..r1 {
        for t in 0..n_tok {
            o.set(
                r,
                t,
                ternary_dot_rows_vnni256::<1>([w.row(r)], acts(t), tq2, ahead)[0],
            );
        }
    }
}

/// Prefill rows `r0..r1` by groups of `T` tokens over row tiles, then single tokens.
#[target_feature(enable = "avx512f,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn prefill_rows<const T: usize>(
    w: &Matrix,
    blocks: &[BlockQ8K],
    n_tok: usize,
    r0: usize,
    r1: usize,
    o: &mut RowsOut,
) {
    let tq2 = w.ty == GgmlType::TQ2_0;
    let nb = w.cols / super::QK_K;
    let acts = |t: usize| &blocks[t * nb..(t + 1) * nb];
    let grouped = n_tok / T * T;
    let mut rt = r0;
    while rt < r1 {
        let re = (rt + PREFILL_ROW_TILE).min(r1);
        for t in (0..grouped).step_by(T) {
            let ts: [&[BlockQ8K]; T] = std::array::from_fn(|k| acts(t + k));
            for r in rt..re {
                let got = ternary_dot_tokens_vnni256::<T>(w.row(r), ts, tq2);
                for (k, g) in got.iter().enumerate() {
                    o.set(r, t + k, *g);
                }
            }
        }
        for r in rt..re {
            for t in grouped..n_tok {
                o.set(
                    r,
                    t,
                    ternary_dot_tokens_vnni256::<1>(w.row(r), [acts(t)], tq2)[0],
                );
            }
        }
        rt = re;
    }
}
