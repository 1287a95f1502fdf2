//! The row loops of the products: for a range of output rows, each weight format and variant
//! calls its kernels (the row and token groupings they take) and writes the results through
//! [`RowsOut`]. Called by [`super::matmul_prepared_many`] on each thread's row chunks.

use super::*;

/// Rows per tile of the paired prefill kernel (see `compute_rows`).
#[cfg(target_arch = "x86_64")]
const PAIR_ROW_TILE: usize = 16;

/// Token pairs per AVX-512 prefill call for rows of `nb` blocks: four while their activations
/// (640 bytes a pair and block, [`x86::PairBlock`]) fit [`L1_ACTS_BUDGET`], else two, else one.
/// Scratch benchmark (128 tokens, one thread, Zen 4, 2026-12-06): 1536 × 4096 (16 blocks, four
/// pairs 40 KiB) 6.4-7.0 ms with two pairs against 9.5 with four and 9.5-9.8 with one;
/// 4096 × 1536 (6 blocks, 15 KiB) 6.6 ms with four against 7.2 with two and 6.9 with eight
/// (30 KiB).
#[cfg(target_arch = "x86_64")]
pub(super) fn pairs_per_call(nb: usize) -> usize {
    let pair = nb * std::mem::size_of::<x86::PairBlock>();
    [4, 2]
        .into_iter()
        .find(|p| p * pair <= L1_ACTS_BUDGET)
        .unwrap_or(1)
}

/// One thread's AVX-512 prefill over token pairs: rows `r0..r1` of `w` against `pairs`
/// ([`x86::pair_for_tq2_0_avx512`], `nb` blocks a pair).
#[cfg(target_arch = "x86_64")]
struct PairWork<'a> {
    w: &'a Matrix<'a>,
    pairs: &'a [x86::PairBlock],
    nb: usize,
    r0: usize,
    r1: usize,
}

#[cfg(target_arch = "x86_64")]
impl PairWork<'_> {
    /// `P` pairs per call over tiles of rows; returns the tokens done (a multiple of `2P`).
    ///
    /// # Safety
    /// The CPU must have AVX-512 VNNI (as [`x86::tq2_0_q8k_dot_pairs_avx512vnni`]).
    unsafe fn run<const P: usize>(&self, n_tok: usize, o: &mut rows_out::RowsOut) -> usize {
        let (w, nb) = (self.w, self.nb);
        let paired = n_tok / (2 * P) * (2 * P);
        let pair = |p: usize| &self.pairs[p * nb..(p + 1) * nb];
        let rb = w.row_bytes();
        let mut rt = self.r0;
        while rt < self.r1 {
            let re = (rt + PAIR_ROW_TILE).min(self.r1);
            for t in (0..paired).step_by(2 * P) {
                let ps: [&[x86::PairBlock]; P] = std::array::from_fn(|k| pair(t / 2 + k));
                for (r, row) in (rt..re).zip(w.data[rt * rb..re * rb].chunks_exact(rb)) {
                    let got = x86::tq2_0_q8k_dot_pairs_avx512vnni::<P>(row, ps);
                    for (k, g) in got.iter().enumerate() {
                        o.set(r, t + 2 * k, g[0]);
                        o.set(r, t + 2 * k + 1, g[1]);
                    }
                }
            }
            rt = re;
        }
        paired
    }
}

/// Output rows `r0..r1` for every token, written through `o`; decode kernels prefetch
/// `prefetch` bytes ahead and the kernels take `group` rows or tokens per call where the variant
/// offers that choice (`None`: each kernel's own).
#[allow(clippy::too_many_arguments)]
pub(super) fn compute_rows(
    w: &Matrix,
    prepared: &Prepared,
    n_tok: usize,
    kernel: Kernel,
    [prefetch, group]: [Option<usize>; 2],
    r0: usize,
    r1: usize,
    o: &mut rows_out::RowsOut,
) {
    let cols = w.cols;
    #[cfg(not(target_arch = "x86_64"))]
    let _ = group;
    match prepared {
        Prepared::Q8K {
            blocks,
            perm,
            #[cfg(target_arch = "x86_64")]
            pairs,
            #[cfg(target_arch = "x86_64")]
            dups,
            #[cfg(target_arch = "x86_64")]
            tables,
        } => {
            #[cfg(target_arch = "x86_64")]
            if kernel == Kernel::Vnni256 {
                // SAFETY: the Vnni256 features checked by `is_available` (`prepare` falls back
                // to scalar otherwise).
                unsafe { x86_vnni256::q8k_rows(w, blocks, n_tok, r0, r1, o, [prefetch, group]) };
                return;
            }
            let nb = cols / QK_K;
            // Decode: two rows per pass share each activation vector.
            #[cfg(target_arch = "x86_64")]
            if !dups.is_empty() {
                let ahead = prefetch.unwrap_or(x86::PREFETCH_ROWS2);
                // Spans of up to 64 rows, each against every token before the next, so that
                // a few tokens (`n_tok` < 4) re-read a span from cache and not from memory.
                let paired = r0..r0 + (r1 - r0) / 2 * 2;
                let rb = w.row_bytes();
                for s0 in paired.clone().step_by(64) {
                    let span = s0..(s0 + 64).min(paired.end);
                    for t in 0..n_tok {
                        let out = &mut o.token_rows(t)[span.start - r0..span.end - r0];
                        // SAFETY: AVX-512 VNNI/DQ checked by `is_available` (dups exist only then).
                        unsafe {
                            x86_rows2::ternary_q8k_dot_span_avx512vnni(
                                w.ty == GgmlType::TQ2_0,
                                &w.data[span.start * rb..span.end * rb],
                                &dups[t * nb..(t + 1) * nb],
                                ahead,
                                out,
                            )
                        };
                    }
                }
                let r = paired.end;
                for r in r..r1 {
                    for t in 0..n_tok {
                        let p = if perm.is_empty() {
                            &[][..]
                        } else {
                            &perm[t * nb..(t + 1) * nb]
                        };
                        let a = &blocks[t * nb..(t + 1) * nb];
                        let v = ternary_dot(w.ty, kernel, w.row(r), a, p, prefetch);
                        o.set(r, t, v);
                    }
                }
                return;
            }
            // AVX2 decode: two rows per pass over the thread's rows, one call per token.
            #[cfg(target_arch = "x86_64")]
            if kernel == Kernel::Avx2 && w.ty == GgmlType::TQ2_0 && n_tok < 4 {
                let ahead = prefetch.unwrap_or(x86::PREFETCH);
                let rb = w.row_bytes();
                // The table-lookup kernel on the whole groups of its layout within `r0..r1`
                // (where the plan chose it: the matrix comes with that copy, the activations
                // with their tables), the two-row kernel on the rows before and after them.
                let g = TABLE_ROWS;
                let layout = w.grouped.filter(|&(h, _)| h == g && !tables.is_empty());
                let (g0, g1) = match layout {
                    Some(_) if r1 / g * g > r0.div_ceil(g) * g => (r0.div_ceil(g) * g, r1 / g * g),
                    _ => (r1, r1),
                };
                let tb = nb * x86_tables::TABLE_BYTES;
                for t in 0..n_tok {
                    let a = &blocks[t * nb..(t + 1) * nb];
                    let out = o.token_rows(t);
                    for (s0, s1) in [(r0, g0), (g1, r1)] {
                        if s1 > s0 {
                            // SAFETY: AVX2, FMA and F16C checked by `is_available`.
                            unsafe {
                                x86::tq2_0_q8k_dot_span_avx2(
                                    &w.data[s0 * rb..s1 * rb],
                                    a,
                                    ahead,
                                    &mut out[s0 - r0..s1 - r0],
                                )
                            };
                        }
                    }
                    if let Some((_, data)) = layout.filter(|_| g1 > g0) {
                        // SAFETY: as above (the layout's groups are `g` rows of `rb` bytes).
                        unsafe {
                            x86_tables::tq2_0_q8k_dot_groups_tables_avx2(
                                &data[g0 * rb..g1 * rb],
                                a,
                                &tables[t * tb..(t + 1) * tb],
                                ahead,
                                &mut out[g0 - r0..g1 - r0],
                            )
                        };
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
            // Several tokens at once share each block's unpacked codes (prefill): up to eight
            // tokens (four pairs) per call, over tiles of rows so that those tokens' activations
            // stay in L1 while the rows stream past.
            #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
            let mut paired = 0;
            #[cfg(target_arch = "x86_64")]
            if !pairs.is_empty() {
                let pw = PairWork {
                    w,
                    pairs,
                    nb,
                    r0,
                    r1,
                };
                // SAFETY: AVX-512 VNNI checked by `is_available` (pairs exist only then).
                paired = unsafe {
                    match pairs_per_call(nb) {
                        4 => pw.run::<4>(n_tok, o),
                        2 => pw.run::<2>(n_tok, o),
                        _ => pw.run::<1>(n_tok, o),
                    }
                };
            }
            // AVX2 prefill: four tokens per call over tiles of rows, as the AVX-512 pairs above
            // (TQ1_0 reaches here rewritten as TQ2_0 unless `BITNET_TQ1_UNPACK=0`).
            #[cfg(target_arch = "x86_64")]
            if kernel == Kernel::Avx2 && w.ty == GgmlType::TQ2_0 && n_tok >= 4 {
                paired = n_tok / 4 * 4;
                let rb = w.row_bytes();
                let mut rt = r0;
                while rt < r1 {
                    let re = (rt + PAIR_ROW_TILE).min(r1);
                    for t in (0..paired).step_by(4) {
                        let ts = [acts(t), acts(t + 1), acts(t + 2), acts(t + 3)];
                        for (r, row) in (rt..re).zip(w.data[rt * rb..re * rb].chunks_exact(rb)) {
                            // SAFETY: AVX2, FMA and F16C checked by `is_available`.
                            let got = unsafe { x86::tq2_0_q8k_dot_tokens_avx2::<4>(row, ts) };
                            for (k, g) in got.iter().enumerate() {
                                o.set(r, t + k, *g);
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
                    let v = ternary_dot(w.ty, kernel, row, acts(t), perm_of(t), prefetch);
                    o.set(r, t, v);
                }
            }
        }
        Prepared::I8S {
            q,
            scales,
            sums,
            perm,
            tables,
        } => i2_s_rows(
            w,
            ([q, perm], tables),
            (scales, sums),
            n_tok,
            kernel,
            [prefetch, group],
            r0,
            r1,
            o,
        ),
        Prepared::KQuant { blocks } => {
            let nb = cols / QK_K;
            // ggml's order: `vec_dot` for a few tokens, its tiled matmul from 8 on.
            let tiled = n_tok >= scalar::Q6_K_TILED_MIN_TOKENS
                && !crate::planted::on("q6_k_vec_dot_order_for_many_tokens");
            #[cfg(target_arch = "x86_64")]
            if matches!(kernel, Kernel::Avx2 | Kernel::Vnni256 | Kernel::Avx512) {
                let rb = w.row_bytes();
                for t in 0..n_tok {
                    // SAFETY: every x86 SIMD variant's `is_available` includes AVX2 and FMA, and
                    // AVX-512's AVX-512 F/BW/VL (`prepare` falls back to scalar otherwise).
                    let (rows, a) = (&w.data[r0 * rb..r1 * rb], &blocks[t * nb..(t + 1) * nb]);
                    unsafe {
                        if kernel == Kernel::Avx512 {
                            x86_q6k::q6_k_q8k_rows_avx512(rows, a, tiled, o.token_rows(t))
                        } else {
                            x86_q6k::q6_k_q8k_rows_avx2(rows, a, tiled, o.token_rows(t))
                        }
                    };
                }
                return;
            }
            let dot = if tiled {
                scalar::q6_k_q8k_dot_tiled_scalar
            } else {
                scalar::q6_k_q8k_dot_scalar
            };
            for r in r0..r1 {
                for t in 0..n_tok {
                    o.set(r, t, dot(w.row(r), &blocks[t * nb..(t + 1) * nb]));
                }
            }
        }
        Prepared::Float { bytes, vals } => {
            float_rows(w, bytes, vals, n_tok, kernel, [prefetch, group], r0, r1, o);
        }
    }
}

/// I2_S rows `r0..r1`: the exact integer dot of each row and token (SIMD kernels take four
/// tokens per unpacked group), finished as [`scalar::i2_s_finish`]. With `tables` (the AVX2
/// table-lookup decode's, [`PreparedInput::with_group`]) and `w`'s copy in that layout, the
/// whole groups of [`TABLE_ROWS`] rows within `r0..r1` go to the table kernel and the rows
/// around them to the file-layout kernels.
#[allow(clippy::too_many_arguments)]
pub(super) fn i2_s_rows(
    w: &Matrix,
    ([q, perm], tables): ([&[i8]; 2], &[u8]),
    (scales, sums): (&[f32], &[i32]),
    n_tok: usize,
    kernel: Kernel,
    [prefetch, group]: [Option<usize>; 2],
    r0: usize,
    r1: usize,
    o: &mut rows_out::RowsOut,
) {
    let cols = w.cols;
    let w_scale = w.i2_s_scale();
    #[cfg(target_arch = "x86_64")]
    if let Some((_, data)) = w
        .grouped
        .filter(|&(h, _)| h == TABLE_ROWS && !tables.is_empty())
    {
        let g = TABLE_ROWS;
        let (g0, g1) = (r0.div_ceil(g) * g, r1 / g * g);
        if g1 > g0 {
            let ahead = prefetch.unwrap_or(x86_i2s::ROWS_PREFETCH);
            let (rb, tb) = (w.row_bytes(), cols / 4 * x86_tables::I2S_TABLE_BYTES);
            let mut dots = [0i32; 2 * TABLE_ROWS];
            for t in 0..n_tok {
                for s0 in (g0..g1).step_by(dots.len()) {
                    let s1 = (s0 + dots.len()).min(g1);
                    let d = &mut dots[..s1 - s0];
                    // SAFETY: AVX2 checked by `is_available` (the tables exist only under the
                    // AVX2 variant); the layout's groups are `g` rows of `rb` bytes.
                    unsafe {
                        x86_tables::i2_s_i8_dot_groups_tables_avx2(
                            &data[s0 * rb..s1 * rb],
                            &tables[t * tb..(t + 1) * tb],
                            ahead,
                            d,
                        )
                    };
                    for (r, &dr) in (s0..s1).zip(d.iter()) {
                        o.set(r, t, scalar::i2_s_finish(dr, sums[t], scales[t], w_scale));
                    }
                }
            }
            let rest = ([q, perm], &[][..]);
            for (s0, s1) in [(r0, g0), (g1, r1)] {
                if s1 > s0 {
                    let pg = [prefetch, group];
                    i2_s_rows(w, rest, (scales, sums), n_tok, kernel, pg, s0, s1, o);
                }
            }
            return;
        }
    }
    #[cfg(target_arch = "x86_64")]
    if n_tok == 1 && matches!(kernel, Kernel::Avx2 | Kernel::Vnni256) {
        let rows_per_call = group
            .filter(|g| I2S_ROWS.contains(g))
            .unwrap_or(x86_i2s::DECODE_ROWS);
        if rows_per_call > 1 {
            let ahead = prefetch.unwrap_or(x86_i2s::ROWS_PREFETCH);
            let rb = w.row_bytes();
            let mut dots = [0i32; 64];
            for s0 in (r0..r1).step_by(dots.len()) {
                let s1 = (s0 + dots.len()).min(r1);
                let (rows, d) = (&w.data[s0 * rb..s1 * rb], &mut dots[..s1 - s0]);
                // SAFETY: each variant runs only when `is_available` says the CPU has it.
                unsafe {
                    match (kernel, rows_per_call) {
                        (Kernel::Avx2, 2) => x86_i2s::i2_s_i8_rows_avx2::<2>(rows, rb, q, ahead, d),
                        (Kernel::Avx2, _) => x86_i2s::i2_s_i8_rows_avx2::<4>(rows, rb, q, ahead, d),
                        (_, 2) => x86_i2s::i2_s_i8_rows_vnni256::<2>(rows, rb, q, ahead, d),
                        _ => x86_i2s::i2_s_i8_rows_vnni256::<4>(rows, rb, q, ahead, d),
                    }
                }
                for (r, &dr) in (s0..s1).zip(d.iter()) {
                    o.set(r, 0, scalar::i2_s_finish(dr, sums[0], scales[0], w_scale));
                }
            }
            return;
        }
    }
    #[cfg(target_arch = "x86_64")]
    let ahead = prefetch.unwrap_or(x86_i2s::PREFETCH);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (prefetch, group);
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
            Kernel::Avx2 if n == 4 => unsafe {
                d = x86_i2s::i2_s_i8_dot_avx2::<4>(
                    row,
                    [act(t), act(t + 1), act(t + 2), act(t + 3)],
                    ahead,
                );
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe {
                d[0] = x86_i2s::i2_s_i8_dot_avx2::<1>(row, [act(t)], ahead)[0];
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni256 if n == 4 => unsafe {
                d = x86_i2s::i2_s_i8_dot_vnni256::<4>(
                    row,
                    [act(t), act(t + 1), act(t + 2), act(t + 3)],
                    ahead,
                );
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni256 => unsafe {
                d[0] = x86_i2s::i2_s_i8_dot_vnni256::<1>(row, [act(t)], ahead)[0];
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 if n == 4 => unsafe {
                d = x86_i2s::i2_s_i8_dot_avx512vnni::<4>(
                    row,
                    [pact(t), pact(t + 1), pact(t + 2), pact(t + 3)],
                    ahead,
                );
            },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe {
                d[0] = x86_i2s::i2_s_i8_dot_avx512vnni::<1>(row, [pact(t)], ahead)[0];
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
pub(super) fn ternary_dot(
    ty: GgmlType,
    kernel: Kernel,
    row: &[u8],
    a: &[BlockQ8K],
    perm: &[[i8; QK_K]],
    prefetch: Option<usize>,
) -> f32 {
    let tq2 = ty == GgmlType::TQ2_0;
    #[cfg(target_arch = "x86_64")]
    let ahead = prefetch.unwrap_or(x86::PREFETCH);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = prefetch;
    match kernel {
        // SAFETY: `matmul` runs a variant only when `is_available` says the CPU has it.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe {
            if tq2 {
                x86::tq2_0_q8k_dot_avx2(row, a, ahead)
            } else {
                x86::tq1_0_q8k_dot_avx2(row, a, ahead)
            }
        },
        #[cfg(target_arch = "x86_64")]
        Kernel::Vnni256 => unsafe {
            x86_vnni256::ternary_dot_rows_vnni256::<1>([row], a, tq2, ahead)[0]
        },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe {
            if tq2 {
                x86::tq2_0_q8k_dot_avx512vnni(row, a, perm, ahead)
            } else {
                x86::tq1_0_q8k_dot_avx512vnni(row, a, ahead)
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

/// Rows `r..r + R` of a float matrix against one token's activations `a` (f32; F16-rounded for
/// F16 weights), in tinyBLAS's order or `ggml_vec_dot_f16`'s.
///
/// # Safety
/// AVX2, FMA and F16C must be available.
#[cfg(target_arch = "x86_64")]
unsafe fn float_rows_x86<const R: usize>(
    w: &Matrix,
    r: usize,
    a: &[f32],
    tiny_blas: bool,
    f16: bool,
    prefetch: Option<usize>,
) -> [f32; R] {
    let rows: [&[u8]; R] = std::array::from_fn(|k| w.row(r + k));
    if tiny_blas {
        x86::float_lanes8_rows::<R>(rows, a, w.cols, f16, prefetch)
    } else {
        x86::float_steps32_rows::<R>(rows, a, w.cols, f16, prefetch)
    }
}

/// Float rows (F16 or F32 weights) `r0..r1`.
#[allow(clippy::too_many_arguments)]
pub(super) fn float_rows(
    w: &Matrix,
    bytes: &[u8],
    vals: &[f32],
    n_tok: usize,
    kernel: Kernel,
    [prefetch, group]: [Option<usize>; 2],
    r0: usize,
    r1: usize,
    o: &mut rows_out::RowsOut,
) {
    let (rows, cols) = (w.rows, w.cols);
    let f16 = w.ty == GgmlType::F16;
    #[cfg(not(target_arch = "x86_64"))]
    let _ = group;
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut r = r0;
    #[cfg(target_arch = "x86_64")]
    if matches!(kernel, Kernel::Avx2 | Kernel::Vnni256 | Kernel::Avx512) {
        if let Some(tiny_blas) = f16_simd_shape(rows, cols, n_tok) {
            // Rows per call: a plan's decode group, else four.
            let per = group
                .filter(|g| n_tok < plan::PREFILL_MIN_TOKENS && FLOAT_ROWS.contains(g))
                .unwrap_or(4);
            if per == 1 && n_tok == 1 && !tiny_blas {
                // One row a call: the row loop inside the kernel's own call.
                let rb = w.row_bytes();
                let out = o.token_span(0, r0, r1);
                // SAFETY: AVX2/FMA/F16C checked by `is_available` (both variants need them).
                unsafe {
                    x86::float_steps32_span(
                        &w.data[r0 * rb..r1 * rb],
                        &vals[..cols],
                        cols,
                        f16,
                        prefetch,
                        out,
                    )
                };
                return;
            }
            while r < r1 {
                // The plan's group where it fits, else single rows.
                let n = if r1 - r >= per { per } else { 1 };
                for t in 0..n_tok {
                    let a = &vals[t * cols..(t + 1) * cols];
                    // SAFETY: AVX2/FMA/F16C checked by `is_available` (both variants need them).
                    let got: [f32; 4] = unsafe {
                        match n {
                            4 => float_rows_x86::<4>(w, r, a, tiny_blas, f16, prefetch),
                            2 => {
                                let [v0, v1] =
                                    float_rows_x86::<2>(w, r, a, tiny_blas, f16, prefetch);
                                [v0, v1, 0.0, 0.0]
                            }
                            _ => {
                                let [v] = float_rows_x86::<1>(w, r, a, tiny_blas, f16, prefetch);
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
    let _ = (kernel, bytes, prefetch);
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
