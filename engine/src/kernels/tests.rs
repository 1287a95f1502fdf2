//! Every available variant against the scalar specification, bit for bit: single dot products on
//! random and edge-case blocks, and whole threaded products on ragged shapes.

use super::*;
use crate::quant::f32_to_f16;
use crate::quant::quantize;
use proptest::prelude::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }
    fn f(&mut self) -> f32 {
        (self.next() % 2_000_001) as f32 / 1_000_000.0 - 1.0
    }
}

fn simd_variants() -> Vec<Kernel> {
    Kernel::available()
        .into_iter()
        .filter(|k| *k != Kernel::Scalar)
        .collect()
}

/// A ternary row: `mode` 0 random ternary, 1 all −1, 2 all 0, 3 all +1, 4 random bytes (codes
/// outside the quantizer's range included: the kernels must still agree).
fn ternary_row(ty: GgmlType, cols: usize, mode: u8, rng: &mut Rng) -> Vec<u8> {
    if mode == 4 {
        let mut b: Vec<u8> = (0..ty.row_bytes(cols as u64).unwrap())
            .map(|_| rng.next() as u8)
            .collect();
        // Keep the f16 scales finite and small.
        let bs = ty.type_size();
        for blk in b.chunks_exact_mut(bs) {
            let d = f32_to_f16(rng.f() * 0.1).to_le_bytes();
            blk[bs - 2..].copy_from_slice(&d);
        }
        return b;
    }
    quantize(ty, &ternary_weights(cols, mode, rng)).unwrap()
}

/// `n` ternary weights times one random scale: `mode` 1 all −1, 2 all 0, 3 all +1, else random.
fn ternary_weights(n: usize, mode: u8, rng: &mut Rng) -> Vec<f32> {
    let scale = 0.01 + rng.f().abs();
    (0..n)
        .map(|_| match mode {
            1 => -scale,
            2 => 0.0,
            3 => scale,
            _ => ((rng.next() % 3) as f32 - 1.0) * scale,
        })
        .collect()
}

/// An I2_S matrix of `rows × cols` (codes of every row, then the tensor's scale padded to 32):
/// `mode` as [`ternary_row`]'s (4: random code bytes, code 3 included).
fn i2_s_matrix(rows: usize, cols: usize, mode: u8, rng: &mut Rng) -> Vec<u8> {
    if mode == 4 {
        let mut b: Vec<u8> = (0..rows * cols / 4).map(|_| rng.next() as u8).collect();
        b.extend_from_slice(&(rng.f() * 0.1).to_le_bytes());
        b.extend_from_slice(&[0; 28]);
        return b;
    }
    quantize(GgmlType::I2_S, &ternary_weights(rows * cols, mode, rng)).unwrap()
}

fn acts(cols: usize, mode: u8, rng: &mut Rng) -> Vec<f32> {
    (0..cols)
        .map(|i| match mode {
            0 => rng.f() * 3.0,
            1 => 1.0,
            2 => -1.0,
            // Alternating extremes: quants of ±127/−128 everywhere.
            3 if i % 2 == 0 => -7.0,
            3 => 7.0,
            4 => 0.0,
            // A block with one large value and the rest tiny (rounding edge cases).
            _ => {
                if i % 256 == 7 {
                    -5.0
                } else {
                    rng.f() * 1e-3
                }
            }
        })
        .collect()
}

fn matmul_with(w: &Matrix, x: &[f32], n_tok: usize, threads: usize, kernel: Kernel) -> Vec<f32> {
    matmul_tuned(w, x, n_tok, threads, kernel, [None, None])
}

/// [`matmul_with`] with decode kernels prefetching `ahead` bytes ahead and `group` rows or
/// tokens per kernel call (`None`: their own).
fn matmul_tuned(
    w: &Matrix,
    x: &[f32],
    n_tok: usize,
    threads: usize,
    kernel: Kernel,
    [ahead, group]: [Option<usize>; 2],
) -> Vec<f32> {
    let mut out = vec![0f32; n_tok * w.rows];
    let log = KernelLog::default();
    let p = prepare(w.ty, x, n_tok, w.cols, threads, kernel, &log)
        .with_prefetch(ahead)
        .with_group(group);
    matmul_prepared(w, &p, &mut out, threads, &log);
    out
}

/// A row or token group: none chosen, one the variants offer, or one they do not (which runs
/// the variant's own).
fn group_choice() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![
        Just(None),
        prop::sample::select(GROUPS.to_vec()).prop_map(Some),
        prop::sample::select(FLOAT_ROWS.to_vec()).prop_map(Some),
        prop::sample::select(TQ2_AVX2_ROWS.to_vec()).prop_map(Some),
        (0usize..20).prop_map(Some),
    ]
}

/// A prefetch distance: none chosen, off, one the tuner tries, or any other (odd ones included:
/// the kernels must not care where the hint points).
fn prefetch_distance() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![
        Just(None),
        Just(Some(0)),
        prop::sample::select(PREFETCH_DISTANCES.to_vec()).prop_map(Some),
        (1usize..=MAX_PREFETCH).prop_map(Some),
    ]
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The x86 Q8_K quantizers against the specification, bit for bit (quants, sums, scale), on
    /// blocks of every activation mode and with special values planted: NaNs, one with a payload
    /// (never the largest), ±infinity, −0, subnormals, a repeated largest magnitude of either
    /// sign (the first wins), halves that round to even.
    #[test]
    fn q8k_quantizers_match_the_specification(
        seed in any::<u64>(), blocks in 1usize..5, amode in 0u8..6, specials in 0usize..6,
    ) {
        let mut rng = Rng(seed);
        let mut x = acts(blocks * QK_K, amode, &mut rng);
        let n = x.len();
        let picks = [
            f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 1e-40, -3.0, 3.0, 0.5, -2.5,
            f32::from_bits(0x7fc0_00ff),
        ];
        for k in 0..specials {
            let at = (rng.next() as usize) % n;
            x[at] = picks[(rng.next() as usize + k) % picks.len()];
        }
        let mut want = Vec::new();
        quantize_q8k(&x, &mut want);
        let key = |b: &[BlockQ8K]| -> Vec<(u32, Vec<i8>, Vec<i16>)> {
            b.iter().map(|y| (y.d.to_bits(), y.qs.to_vec(), y.bsums.to_vec())).collect()
        };
        #[cfg(target_arch = "x86_64")]
        for k in simd_variants() {
            let mut got = Vec::new();
            // SAFETY: each only where the CPU runs it.
            unsafe {
                match k {
                    Kernel::Avx2 | Kernel::Vnni256 => x86::quantize_q8k_avx2(&x, &mut got),
                    Kernel::Avx512 => x86::quantize_q8k_avx512(&x, &mut got),
                    _ => continue,
                }
            }
            prop_assert_eq!(key(&got), key(&want), "{:?}", k);
        }
    }

    #[test]
    fn ternary_dots_match_scalar(
        seed in any::<u64>(), blocks in 1usize..12, wmode in 0u8..5, amode in 0u8..4,
        tq1 in any::<bool>(), ahead in prefetch_distance()
    ) {
        let ty = if tq1 { GgmlType::TQ1_0 } else { GgmlType::TQ2_0 };
        let mut rng = Rng(seed);
        let cols = blocks * QK_K;
        let row = ternary_row(ty, cols, wmode, &mut rng);
        let mut a = Vec::new();
        quantize_q8k(&acts(cols, amode, &mut rng), &mut a);
        let want = if tq1 {
            scalar::tq1_0_q8k_dot_scalar(&row, &a)
        } else {
            scalar::tq2_0_q8k_dot_scalar(&row, &a)
        };
        #[cfg(target_arch = "x86_64")]
        let perm = x86::permute_for_tq2_0_avx512(&a);
        #[cfg(not(target_arch = "x86_64"))]
        let perm: Vec<[i8; QK_K]> = Vec::new();
        for k in simd_variants() {
            let p = if k == Kernel::Avx512 { &perm[..] } else { &[][..] };
            let got = ternary_dot(ty, k, &row, &a, p, ahead);
            prop_assert_eq!(got.to_bits(), want.to_bits(), "{:?} {} {} vs {}", k, ty, got, want);
        }
    }

    #[test]
    fn q6_k_dots_match_scalar(
        seed in any::<u64>(), blocks in 1usize..8, amode in 0u8..4, d_bits in 0u16..0x7c00
    ) {
        // Any bytes are a Q6_K block (every code and scale, −128 included); the F16 scale
        // finite, of either sign.
        let mut rng = Rng(seed);
        let mut row: Vec<u8> = (0..blocks * 210).map(|_| rng.next() as u8).collect();
        for b in 0..blocks {
            let d = d_bits ^ (((rng.next() & 1) as u16) << 15);
            row[210 * b + 208..210 * b + 210].copy_from_slice(&d.to_le_bytes());
        }
        let mut a = Vec::new();
        quantize_q8k(&acts(blocks * QK_K, amode, &mut rng), &mut a);
        let want = scalar::q6_k_q8k_dot_scalar(&row, &a);
        #[cfg(target_arch = "x86_64")]
        if Kernel::Avx2.is_available() {
            // SAFETY: AVX2 and FMA checked just above.
            let got = unsafe { x86_q6k::q6_k_q8k_dot_avx2(&row, &a) };
            prop_assert_eq!(got.to_bits(), want.to_bits(), "{} vs {}", got, want);
            let tiled = scalar::q6_k_q8k_dot_tiled_scalar(&row, &a);
            // SAFETY: as above.
            let got = unsafe { x86_q6k::q6_k_q8k_dot_tiled_avx2(&row, &a) };
            prop_assert_eq!(got.to_bits(), tiled.to_bits(), "tiled: {} vs {}", got, tiled);
        }
        let w = Matrix { ty: GgmlType::Q6_K, data: &row, rows: 1, cols: blocks * QK_K, grouped: None };
        let x: Vec<f32> = a.iter().flat_map(|b| b.qs.iter().map(move |&q| q as f32 * b.d)).collect();
        let scalar_out = matmul_with(&w, &x, 1, 1, Kernel::Scalar);
        for k in Kernel::available() {
            let got = matmul_with(&w, &x, 1, 1, k);
            prop_assert_eq!(got[0].to_bits(), scalar_out[0].to_bits(), "{:?}", k);
        }
    }

    #[test]
    fn tq1_0_rewritten_as_tq2_0_keeps_every_code_and_product(
        seed in any::<u64>(), blocks in 1usize..6, wmode in 0u8..5, amode in 0u8..6
    ) {
        let mut rng = Rng(seed);
        let cols = blocks * QK_K;
        let row = ternary_row(GgmlType::TQ1_0, cols, wmode, &mut rng);
        let tq2 = scalar::tq1_0_to_tq2_0(&row);
        prop_assert_eq!(tq2.len(), blocks * scalar::TQ2_0_BYTES);
        for b in 0..blocks {
            let (x, y) = (&row[54 * b..54 * b + 54], &tq2[66 * b..66 * b + 66]);
            for e in 0..QK_K {
                prop_assert_eq!(scalar::tq2_0_code(y, e), scalar::tq1_0_code(x, e), "element {}", e);
            }
            prop_assert_eq!(&y[64..], &x[52..]);
        }
        let mut a = Vec::new();
        quantize_q8k(&acts(cols, amode, &mut rng), &mut a);
        prop_assert_eq!(
            scalar::tq2_0_q8k_dot_scalar(&tq2, &a).to_bits(),
            scalar::tq1_0_q8k_dot_scalar(&row, &a).to_bits()
        );
    }

    #[test]
    fn i2_s_products_match_scalar(
        seed in any::<u64>(), rows in 1usize..6, groups in 1usize..40, n_tok in 1usize..10,
        wmode in 0u8..5, amode in 0u8..6, ahead in prefetch_distance()
    ) {
        let mut rng = Rng(seed);
        let cols = groups * QK_I2_S;
        let data = i2_s_matrix(rows, cols, wmode, &mut rng);
        let w = Matrix { ty: GgmlType::I2_S, data: &data, rows, cols, grouped: None };
        let x = acts(n_tok * cols, amode, &mut rng);
        let want = bits(&matmul_with(&w, &x, n_tok, 1, Kernel::Scalar));
        for k in simd_variants() {
            for group in [None, Some(1), Some(2), Some(4)] {
                let got = bits(&matmul_tuned(&w, &x, n_tok, 2, k, [ahead, group]));
                prop_assert_eq!(&got, &want, "{:?} prefetch {:?} rows {:?}", k, ahead, group);
            }
        }
    }

    #[test]
    fn whole_products_match_scalar_on_ragged_shapes(
        seed in any::<u64>(), rows in 1usize..23, blocks in 1usize..4, n_tok in 1usize..12,
        threads in 1usize..4, ty_i in 0usize..6, f16_cols in 1usize..100,
        ahead in prefetch_distance(), group in group_choice()
    ) {
        let ty = [
            GgmlType::TQ2_0, GgmlType::TQ1_0, GgmlType::F16, GgmlType::F32, GgmlType::I2_S,
            GgmlType::Q6_K,
        ][ty_i];
        let mut rng = Rng(seed);
        // Float matrices get ragged column counts too (tails of the 8- and 32-wide steps).
        let float = matches!(ty, GgmlType::F16 | GgmlType::F32);
        let cols = if float {
            f16_cols * 8 + (seed as usize % 3) * 4
        } else if ty == GgmlType::I2_S {
            (2 * blocks - 1 + (seed as usize % 2)) * QK_I2_S
        } else {
            blocks * QK_K
        };
        let data: Vec<u8> = if ty == GgmlType::F16 {
            (0..rows * cols).flat_map(|_| f32_to_f16(rng.f()).to_le_bytes()).collect()
        } else if ty == GgmlType::F32 {
            (0..rows * cols).flat_map(|_| rng.f().to_le_bytes()).collect()
        } else if ty == GgmlType::I2_S {
            i2_s_matrix(rows, cols, (rng.next() % 5) as u8, &mut rng)
        } else if ty == GgmlType::Q6_K {
            let vals: Vec<f32> = (0..rows * cols).map(|_| rng.f()).collect();
            crate::quant::quantize(ty, &vals).unwrap()
        } else {
            (0..rows).flat_map(|_| ternary_row(ty, cols, (rng.next() % 5) as u8, &mut rng)).collect()
        };
        let w = Matrix { ty, data: &data, rows, cols, grouped: None };
        let x = acts(n_tok * cols, 0, &mut rng);
        let want = bits(&matmul_with(&w, &x, n_tok, 1, Kernel::Scalar));
        for k in Kernel::available() {
            let got = bits(&matmul_tuned(&w, &x, n_tok, threads, k, [ahead, group]));
            prop_assert_eq!(&got, &want, "{:?} prefetch {:?} group {:?}", k, ahead, group);
            // With the grouped copy the kernel reads, where it reads one.
            if let Some(g) = PreparedInput::grouped_rows_of(k, ty, n_tok, group) {
                let copy = grouped_copy(ty, &data, rows, cols, g);
                let wg = Matrix { grouped: Some((g, &copy)), ..w };
                let got = bits(&matmul_tuned(&wg, &x, n_tok, threads, k, [ahead, group]));
                prop_assert_eq!(&got, &want, "{:?} grouped by {} prefetch {:?}", k, g, ahead);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Decode-sized products (1-3 tokens) over enough rows that a thread's range spans several
    /// of the two-row kernel's row spans, odd counts included.
    #[test]
    fn decode_products_over_many_rows_match_scalar(
        seed in any::<u64>(), rows in 60usize..300, n_tok in 1usize..4, tq1 in any::<bool>(),
        threads in 1usize..3
    ) {
        let ty = if tq1 { GgmlType::TQ1_0 } else { GgmlType::TQ2_0 };
        let mut rng = Rng(seed);
        let cols = 2 * QK_K;
        let data: Vec<u8> = (0..rows).flat_map(|_| ternary_row(ty, cols, (rng.next() % 5) as u8, &mut rng)).collect();
        let w = Matrix { ty, data: &data, rows, cols, grouped: None };
        let x = acts(n_tok * cols, 0, &mut rng);
        let want = bits(&matmul_with(&w, &x, n_tok, 1, Kernel::Scalar));
        for k in simd_variants() {
            prop_assert_eq!(&bits(&matmul_with(&w, &x, n_tok, threads, k)), &want, "{:?}", k);
            for g in GROUPS.into_iter().chain([TABLE_ROWS]) {
                let Some(g) = PreparedInput::grouped_rows_of(k, ty, n_tok, Some(g)) else {
                    continue;
                };
                let copy = grouped_copy(ty, &data, rows, cols, g);
                let wg = Matrix { grouped: Some((g, &copy)), ..w };
                let got = bits(&matmul_tuned(&wg, &x, n_tok, threads, k, [None, Some(g)]));
                prop_assert_eq!(&got, &want, "{:?} grouped by {}", k, g);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Decode-sized I2_S products (1-3 tokens) over enough rows for the table-lookup layout's
    /// groups of 32 to meet every kind of thread chunk (groups cut by a chunk's start or end,
    /// rows after the last group), with every row grouping a plan offers, on the file's layout
    /// and on the grouped copy where the grouping reads one.
    #[test]
    fn i2_s_decode_products_over_many_rows_match_scalar(
        seed in any::<u64>(), rows in 33usize..300, groups in 1usize..4, n_tok in 1usize..4,
        threads in 1usize..4, wmode in 0u8..5, ahead in prefetch_distance()
    ) {
        let mut rng = Rng(seed);
        let cols = groups * QK_I2_S;
        let data = i2_s_matrix(rows, cols, wmode, &mut rng);
        let w = Matrix { ty: GgmlType::I2_S, data: &data, rows, cols, grouped: None };
        let x = acts(n_tok * cols, 0, &mut rng);
        let want = bits(&matmul_with(&w, &x, n_tok, 1, Kernel::Scalar));
        for k in simd_variants() {
            for &g in k.groups(GgmlType::I2_S, false) {
                let got = bits(&matmul_tuned(&w, &x, n_tok, threads, k, [ahead, Some(g)]));
                prop_assert_eq!(&got, &want, "{:?} rows {}", k, g);
                let Some(h) = PreparedInput::grouped_rows_of(k, GgmlType::I2_S, n_tok, Some(g))
                else {
                    continue;
                };
                let copy = grouped_copy(GgmlType::I2_S, &data, rows, cols, h);
                let wg = Matrix { grouped: Some((h, &copy)), ..w };
                let got = bits(&matmul_tuned(&wg, &x, n_tok, threads, k, [ahead, Some(g)]));
                prop_assert_eq!(&got, &want, "{:?} grouped by {}", k, h);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The table-lookup TQ2_0 kernel (`x86_tables`) on its own layout, every row against the
    /// scalar specification: mixed row kinds (random bytes, so code 3, included) and every
    /// activation kind (the Q8_K extremes −128 and 127 among them).
    #[test]
    fn tq2_0_table_kernel_matches_scalar(
        seed in any::<u64>(), groups in 1usize..4, blocks in 1usize..6, amode in 0u8..6,
        ahead in prefetch_distance()
    ) {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")) {
            return Ok(());
        }
        let mut rng = Rng(seed);
        let (rows, cols) = (groups * x86_tables::TABLE_ROWS, blocks * QK_K);
        let ty = GgmlType::TQ2_0;
        let data: Vec<u8> = (0..rows)
            .flat_map(|_| ternary_row(ty, cols, (rng.next() % 5) as u8, &mut rng))
            .collect();
        let mut a = Vec::new();
        quantize_q8k(&acts(cols, amode, &mut rng), &mut a);
        let layout = x86_tables::tq2_0_table_layout(&data, rows, cols);
        let mut out = vec![0f32; rows];
        let mut tables = vec![0u8; a.len() * x86_tables::TABLE_BYTES];
        unsafe {
            x86_tables::build_tables_avx2(&a, &mut tables);
            x86_tables::tq2_0_q8k_dot_groups_tables_avx2(
                &layout, &a, &tables, ahead.unwrap_or(0), &mut out,
            )
        };
        let rb = data.len() / rows;
        for (r, got) in out.iter().enumerate() {
            let want = scalar::tq2_0_q8k_dot_scalar(&data[r * rb..(r + 1) * rb], &a);
            prop_assert_eq!(got.to_bits(), want.to_bits(), "row {}: {} vs {}", r, got, want);
        }
    }
}

#[cfg(target_arch = "x86_64")]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The table-lookup I2_S kernel (`x86_tables`) on its own layout, every row's integer sum
    /// against the scalar specification: rows of random bytes (code 3 included) or quantized
    /// ternary weights, activations of random bytes or the int8 extremes (−128, 127, both in
    /// turns), which the quantizer's range does not bound here.
    #[test]
    fn i2_s_table_kernel_matches_scalar(
        seed in any::<u64>(), groups in 1usize..4, blocks in 1usize..7, wmode in 0u8..5,
        amode in 0u8..4, ahead in prefetch_distance()
    ) {
        if !is_x86_feature_detected!("avx2") {
            return Ok(());
        }
        let mut rng = Rng(seed);
        let (rows, cols) = (groups * x86_tables::TABLE_ROWS, blocks * QK_I2_S);
        let data = i2_s_matrix(rows, cols, wmode, &mut rng);
        let q: Vec<i8> = (0..cols)
            .map(|i| match amode {
                0 => rng.next() as i8,
                1 => -128,
                2 => 127,
                _ => if i % 2 == 0 { -128 } else { 127 },
            })
            .collect();
        let mut layout = vec![0u8; data.len()];
        x86_tables::i2_s_table_layout_into(&data, rows, cols, &mut layout);
        let rb = cols / 4;
        prop_assert_eq!(&layout[rows * rb..], &data[rows * rb..], "the scale and padding kept");
        let mut tables = vec![0u8; cols / 4 * x86_tables::I2S_TABLE_BYTES];
        let mut out = vec![0i32; rows];
        unsafe {
            x86_tables::build_i2_s_tables_avx2(&q, &mut tables);
            x86_tables::i2_s_i8_dot_groups_tables_avx2(
                &layout[..rows * rb], &tables, ahead.unwrap_or(0), &mut out,
            )
        };
        for (r, got) in out.iter().enumerate() {
            let want = scalar::i2_s_i8_dot_scalar(&data[r * rb..(r + 1) * rb], &q);
            prop_assert_eq!(*got, want, "row {}", r);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Prefill-sized products on rows of many blocks, where the AVX-512 kernel takes fewer token
    /// pairs per call so that their activations stay in L1 (four pairs up to 9 blocks, two up to
    /// 19, then one), with token counts that leave every kind of rest.
    #[test]
    fn prefill_products_on_long_rows_match_scalar(
        seed in any::<u64>(), rows in 1usize..40,
        blocks in prop::sample::select(vec![6usize, 9, 10, 16, 19, 20, 27]),
        n_tok in 4usize..20, threads in 1usize..3
    ) {
        let ty = GgmlType::TQ2_0;
        let mut rng = Rng(seed);
        let cols = blocks * QK_K;
        let data: Vec<u8> = (0..rows).flat_map(|_| ternary_row(ty, cols, (rng.next() % 5) as u8, &mut rng)).collect();
        let w = Matrix { ty, data: &data, rows, cols, grouped: None };
        let x = acts(n_tok * cols, 0, &mut rng);
        let want = bits(&matmul_with(&w, &x, n_tok, 1, Kernel::Scalar));
        for k in simd_variants() {
            for group in [None, Some(2), Some(4), Some(8)] {
                let got = bits(&matmul_tuned(&w, &x, n_tok, threads, k, [None, group]));
                prop_assert_eq!(&got, &want, "{:?} tokens {:?}", k, group);
            }
        }
    }
}

/// The prefill groups on long rows, worked by hand: a Q8_K block is 292 bytes (`d`, 256 quants,
/// 16 sums of 16 bits) and an AVX-512 pair's block 640; the budget is 24 KiB (24 576 bytes).
#[cfg(target_arch = "x86_64")]
#[test]
fn prefill_groups_keep_their_activations_within_the_l1_budget() {
    use super::x86_vnni256::prefill_group;
    assert_eq!(std::mem::size_of::<BlockQ8K>(), 292);
    assert_eq!(std::mem::size_of::<super::x86::PairBlock>(), 640);
    // 8 × 6 × 292 = 14 016 fits; 8 × 16 × 292 = 37 376 does not, 4 × 16 × 292 = 18 688 does.
    assert_eq!(prefill_group(8, 6), 8);
    assert_eq!(prefill_group(8, 16), 4);
    assert_eq!(prefill_group(4, 6), 4);
    assert_eq!(prefill_group(2, 6), 2);
    // 4 × 27 × 292 = 31 536 does not fit, 2 × 27 × 292 = 15 768 does; past 42 blocks none
    // does, and the smallest group stays.
    assert_eq!(prefill_group(8, 27), 2);
    assert_eq!(prefill_group(8, 100), 2);
    // Pairs: 4 × 9 × 640 = 23 040 fits, 4 × 10 × 640 = 25 600 does not; 2 × 19 × 640 = 24 320
    // fits, 2 × 20 × 640 = 25 600 does not.
    assert_eq!(super::rows::pairs_per_call(9), 4);
    assert_eq!(super::rows::pairs_per_call(10), 2);
    assert_eq!(super::rows::pairs_per_call(19), 2);
    assert_eq!(super::rows::pairs_per_call(20), 1);
}

#[test]
fn grouped_rows_interleave_whole_groups_blockwise_and_keep_the_rest() {
    // 5 rows of 3 blocks of 2 bytes; row r's block b holds [10r + b, 100 + 10r + b].
    let (rows, nb, bb) = (5usize, 3usize, 2usize);
    let data: Vec<u8> = (0..rows)
        .flat_map(|r| (0..nb).flat_map(move |b| [(10 * r + b) as u8, (100 + 10 * r + b) as u8]))
        .collect();
    let got = group_rows(&data, rows, nb * bb, [bb, bb], 2);
    // Rows 0-1, then rows 2-3, each block-interleaved; row 4 as it was.
    let want: Vec<u8> = vec![
        0, 100, 10, 110, 1, 101, 11, 111, 2, 102, 12, 112, // rows 0 and 1
        20, 120, 30, 130, 21, 121, 31, 131, 22, 122, 32, 132, // rows 2 and 3
        40, 140, 41, 141, 42, 142, // row 4
    ];
    assert_eq!(got, want);
    // Split after each block's first byte: a group's tails (block by block, row by row), then
    // its leads in the same order.
    let got = group_rows(&data, rows, nb * bb, [bb, 1], 2);
    let want: Vec<u8> = vec![
        100, 110, 101, 111, 102, 112, 0, 10, 1, 11, 2, 12, // rows 0 and 1
        120, 130, 121, 131, 122, 132, 20, 30, 21, 31, 22, 32, // rows 2 and 3
        40, 140, 41, 141, 42, 142, // row 4
    ];
    assert_eq!(got, want);
    // A group of one row unsplit is the file's layout; a group wider than the matrix leaves it so.
    assert_eq!(group_rows(&data, rows, nb * bb, [bb, bb], 1), data);
    assert_eq!(group_rows(&data, rows, nb * bb, [bb, 1], 8), data);
}

#[test]
fn float_products_follow_the_specification_per_element() {
    // Two or more tokens with rows % 4 == 0 take tinyBLAS's order, other products
    // ggml_vec_dot_f16's: check the matmul picks them by comparing with the scalar functions.
    let mut rng = Rng(7);
    for (rows, n_tok) in [(4usize, 2usize), (4, 1), (6, 2)] {
        let cols = 96;
        let data: Vec<u8> = (0..rows * cols)
            .flat_map(|_| f32_to_f16(rng.f()).to_le_bytes())
            .collect();
        let w = Matrix {
            ty: GgmlType::F16,
            data: &data,
            rows,
            cols,
            grouped: None,
        };
        let x = acts(cols * n_tok, 0, &mut rng);
        let xr: Vec<f32> = x.iter().map(|&v| f16_to_f32(f32_to_f16(v))).collect();
        for k in Kernel::available() {
            let got = matmul_with(&w, &x, n_tok, 1, k);
            for r in 0..rows {
                let row = scalar::F16Bytes(&data[r * cols * 2..(r + 1) * cols * 2]);
                let a = &xr[..cols];
                let want = if rows % 4 == 0 && n_tok >= 2 {
                    scalar::f16_dot_lanes8(&row, a)
                } else {
                    scalar::f16_dot_steps32(&row, a, true)
                };
                let msg = format!("{k:?} rows {rows} n_tok {n_tok} row {r}");
                assert_eq!(got[r].to_bits(), want.to_bits(), "{msg}");
            }
        }
    }
}

#[test]
fn float_decode_products_on_every_row_group_follow_the_specification() {
    // Every rows-per-call a plan can choose for the F16/F32 decode, on row counts that leave
    // rows outside whole groups, at one to three threads, with and without a prefetch distance:
    // each output is the scalar specification's dot of its own row (ggml_vec_dot_f16's order
    // below two tokens, tinyBLAS's on multiples of four rows from two tokens on).
    let mut rng = Rng(11);
    for (ty, rows, cols, n_tok) in [
        (GgmlType::F16, 7usize, 96usize, 1usize),
        (GgmlType::F16, 13, 160, 1),
        (GgmlType::F16, 8, 64, 2),
        (GgmlType::F32, 9, 128, 1),
        (GgmlType::F32, 12, 40, 3),
    ] {
        let f16 = ty == GgmlType::F16;
        let data: Vec<u8> = (0..rows * cols)
            .flat_map(|_| {
                let v = rng.f() * 2.0;
                if f16 {
                    f32_to_f16(v).to_le_bytes().to_vec()
                } else {
                    v.to_le_bytes().to_vec()
                }
            })
            .collect();
        let w = Matrix {
            ty,
            data: &data,
            rows,
            cols,
            grouped: None,
        };
        let x = acts(cols * n_tok, 0, &mut rng);
        let es = if f16 { 2 } else { 4 };
        let want: Vec<u32> = (0..n_tok)
            .flat_map(|t| (0..rows).map(move |r| (t, r)))
            .map(|(t, r)| {
                let row = &data[r * cols * es..(r + 1) * cols * es];
                let a: Vec<f32> = x[t * cols..(t + 1) * cols]
                    .iter()
                    .map(|&v| if f16 { f16_to_f32(f32_to_f16(v)) } else { v })
                    .collect();
                let v = if rows % 4 == 0 && n_tok >= 2 {
                    if f16 {
                        scalar::f16_dot_lanes8(&scalar::F16Bytes(row), &a)
                    } else {
                        scalar::f16_dot_lanes8(&scalar::F32Bytes(row), &a)
                    }
                } else if f16 {
                    scalar::f16_dot_steps32(&scalar::F16Bytes(row), &a, true)
                } else {
                    scalar::f16_dot_steps32(&scalar::F32Bytes(row), &a, false)
                };
                v.to_bits()
            })
            .collect();
        for k in Kernel::available() {
            for group in FLOAT_ROWS.iter().map(|&g| Some(g)).chain([None]) {
                for threads in 1..=3 {
                    for ahead in [None, Some(0), Some(4096)] {
                        let got = bits(&matmul_tuned(&w, &x, n_tok, threads, k, [ahead, group]));
                        let msg = format!(
                            "{k:?} {ty} {rows}x{cols} n_tok {n_tok} rows {group:?} threads \
                             {threads} prefetch {ahead:?}"
                        );
                        assert_eq!(got, want, "{msg}");
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn trit_extraction_is_exact_for_every_byte() {
    for v in 0..=255u8 {
        let v1 = v.saturating_sub(1) as u32;
        let avg = |a: u32, b: u32| (a + b + 1) >> 1;
        let t = (avg(v1, avg(v1, 0)) >> 6) & 3;
        assert_eq!(t as u8, ((v as u16 * 3) >> 8) as u8, "byte {v}");
    }
}

#[test]
fn kernel_names_parse_and_unavailable_ones_are_refused() {
    assert_eq!(Kernel::parse("scalar"), Ok(Kernel::Scalar));
    assert_eq!(Kernel::parse("auto"), Ok(Kernel::best()));
    let e = Kernel::parse("sse9").unwrap_err();
    assert!(
        e.contains("unknown kernel `sse9`") && e.contains("available here"),
        "{e}"
    );
    for k in Kernel::ALL {
        assert_eq!(Kernel::parse(k.suffix()).is_ok(), k.is_available(), "{k:?}");
    }
}

#[test]
fn i8_s_quantization_hand_worked() {
    // max |x| = 2 (in f64): s = (f32)(127/2) = 63.5; 1.0·63.5 = 63.5 ties to even (64),
    // 0.5/63.5·63.5 rounds to 0.5 → 0 (even), 1.5/63.5·63.5 → 2; −2 → −127.
    let x = [-2.0f32, 1.0, 0.5 / 63.5, 1.5 / 63.5, 0.0, 2.0];
    let mut q = [0i8; 6];
    let (s, sum) = quantize_i8s(&x, &mut q);
    assert_eq!(s, 63.5);
    assert_eq!(q, [-127, 64, 0, 2, 0, 127]);
    assert_eq!(sum, -127 + 64 + 2 + 127);
    // All zeros: the floor 1e-5 gives s = (f32)(127e5), every quant 0.
    let (s, sum) = quantize_i8s(&[0.0; 4], &mut q[..4]);
    assert_eq!((s, sum), ((127.0f64 / 0.00001) as f32, 0));
    assert_eq!(q[..4], [0; 4]);
}

#[test]
fn i2_s_product_hand_worked() {
    // One group of 128: weights +1 at elements 0 and 33, −1 at 64 and 127, 0 elsewhere, scale 0.5;
    // activations 2.0 at 0, 33, 64, 127 and 1.0 at 5 (max 2 → s = 63.5: quants 127, and 64 at 5).
    let mut w = vec![0f32; 128];
    w[0] = 0.5;
    w[33] = 0.5;
    w[64] = -0.5;
    w[127] = -0.5;
    let data = quantize(GgmlType::I2_S, &w).unwrap();
    assert_eq!(data[0], 0b10_01_00_01, "byte 0: elements 0, 32, 64, 96");
    assert_eq!(data[31], 0b01_01_01_00, "byte 31: elements 31, 63, 95, 127");
    let mut x = vec![0f32; 128];
    for e in [0, 33, 64, 127] {
        x[e] = 2.0;
    }
    x[5] = 1.0;
    let m = Matrix {
        ty: GgmlType::I2_S,
        data: &data,
        rows: 1,
        cols: 128,
        grouped: None,
    };
    // Σ code·q = 2·127 + 2·127 + 0·127 + 0·127 + 1·64 = 572 and Σq = 4·127 + 64 = 572: the
    // product (572 − 572) / 63.5 · 0.5 is exactly 0.
    let got = matmul_with(&m, &x, 1, 1, Kernel::Scalar);
    assert_eq!(got, [0.0]);
    // With element 5's weight +1 as well: Σ(code−1)·q = 64 → 64 / 63.5 · 0.5.
    w[5] = 0.5;
    let data = quantize(GgmlType::I2_S, &w).unwrap();
    let m = Matrix { data: &data, ..m };
    for k in Kernel::available() {
        let got = matmul_with(&m, &x, 1, 1, k);
        assert_eq!(got, [64.0f32 / 63.5 * 0.5], "{k:?}");
    }
}

#[test]
fn i2_s_rows_of_millions_of_weights_at_the_extremes_stay_exact() {
    // The largest products the bytes allow (code 3, which a file may hold though no quantizer
    // writes it, and code 2, the largest valid one) against quants −128, or −128 and 127 in
    // turns, over 3·8192 + 5 groups of 128 (a row of 3.1M weights): a kernel whose lane
    // accumulators ran the whole row would wrap (code 3: 98304 a group in a lane), while the
    // true sums fit in i32. Expected: counted by hand, code × quant × count.
    let groups = 3 * 8192 + 5;
    let n = groups * QK_I2_S;
    let neg: Vec<i8> = vec![-128; n];
    let alt: Vec<i8> = (0..n)
        .map(|i| if i % 2 == 0 { -128 } else { 127 })
        .collect();
    let n = n as i64;
    for (byte, q, want) in [
        (0xffu8, &neg, -384 * n),
        (0b10_10_10_10, &neg, -256 * n),
        (0b10_10_10_10, &alt, -n),
    ] {
        let row = vec![byte; groups * 32];
        assert_eq!(scalar::i2_s_i8_dot_scalar(&row, q) as i64, want);
        #[cfg(target_arch = "x86_64")]
        for k in Kernel::available() {
            // SAFETY: each variant only where the CPU runs it.
            let got = unsafe {
                match k {
                    Kernel::Avx2 => x86_i2s::i2_s_i8_dot_avx2::<1>(&row, [q], 0)[0],
                    Kernel::Vnni256 => x86_i2s::i2_s_i8_dot_vnni256::<1>(&row, [q], 0)[0],
                    Kernel::Avx512 => {
                        let p = x86_i2s::permute_for_i2_s_avx512(q);
                        x86_i2s::i2_s_i8_dot_avx512vnni::<1>(&row, [&p], 0)[0]
                    }
                    _ => continue,
                }
            };
            assert_eq!(got as i64, want, "{k:?} byte {byte:#x}");
            // The several-row decode kernels: five copies of the row (a block and a rest).
            let rows = row.repeat(5);
            for r in I2S_ROWS {
                let mut out = [0i32; 5];
                // SAFETY: as above.
                unsafe {
                    match (k, r) {
                        (Kernel::Avx2, 2) => {
                            x86_i2s::i2_s_i8_rows_avx2::<2>(&rows, row.len(), q, 0, &mut out)
                        }
                        (Kernel::Avx2, 4) => {
                            x86_i2s::i2_s_i8_rows_avx2::<4>(&rows, row.len(), q, 0, &mut out)
                        }
                        (Kernel::Vnni256, 2) => {
                            x86_i2s::i2_s_i8_rows_vnni256::<2>(&rows, row.len(), q, 0, &mut out)
                        }
                        (Kernel::Vnni256, 4) => {
                            x86_i2s::i2_s_i8_rows_vnni256::<4>(&rows, row.len(), q, 0, &mut out)
                        }
                        _ => continue,
                    }
                }
                assert_eq!(
                    out.map(i64::from),
                    [want; 5],
                    "{k:?} rows {r} byte {byte:#x}"
                );
            }
        }
        // The table-lookup kernel: a group of 32 copies of the row in its layout.
        #[cfg(target_arch = "x86_64")]
        if Kernel::available().contains(&Kernel::Avx2) {
            let rows = row.repeat(TABLE_ROWS);
            let mut layout = vec![0u8; rows.len()];
            x86_tables::i2_s_table_layout_into(&rows, TABLE_ROWS, n as usize, &mut layout);
            let mut tables = vec![0u8; n as usize / 4 * x86_tables::I2S_TABLE_BYTES];
            let mut out = [0i32; TABLE_ROWS];
            // SAFETY: AVX2 checked above.
            unsafe {
                x86_tables::build_i2_s_tables_avx2(q, &mut tables);
                x86_tables::i2_s_i8_dot_groups_tables_avx2(&layout, &tables, 0, &mut out);
            }
            assert_eq!(
                out.map(i64::from),
                [want; TABLE_ROWS],
                "tables byte {byte:#x}"
            );
        }
    }
}

#[test]
fn tq1_0_rewritten_as_tq2_0_equals_quantizing_to_tq2_0() {
    // Both quantizers are checked against gguf-py elsewhere; for ternary weights the rewrite must
    // give the TQ2_0 quantizer's bytes exactly.
    let mut rng = Rng(7);
    for scale in [0.5f32, 0.02, 1.0] {
        let w: Vec<f32> = (0..4 * QK_K)
            .map(|_| ((rng.next() % 3) as f32 - 1.0) * scale)
            .collect();
        let tq1 = quantize(GgmlType::TQ1_0, &w).unwrap();
        let tq2 = quantize(GgmlType::TQ2_0, &w).unwrap();
        assert_eq!(scalar::tq1_0_to_tq2_0(&tq1), tq2, "scale {scale}");
    }
}

#[test]
fn q8k_scale_takes_the_first_value_of_the_largest_magnitude() {
    // -3 comes before +3: ggml's loop keeps -3, so the scale is -127/-3 and the quants of the
    // 0.5s are positive. NaNs are passed over.
    let mut x = vec![0.5f32; QK_K];
    x[2] = f32::NAN;
    x[5] = -3.0;
    x[9] = 3.0;
    let mut q = Vec::new();
    quantize_q8k(&x, &mut q);
    assert_eq!(q[0].qs[5], -127);
    assert_eq!(q[0].qs[9], 127);
    assert_eq!(q[0].qs[0], 21); // nearest(0.5 · 127/3 = 21.17)
    assert_eq!(q[0].d, 1.0 / (-127.0f32 / -3.0));
    // All zeros: a zero block.
    quantize_q8k(&[0.0; QK_K], &mut q);
    assert_eq!(q[0].d, 0.0);
    assert!(q[0].qs.iter().all(|&v| v == 0));
}

/// Quants past the range, from infinities and NaNs, as ggml's `nearest_int` and the `(int8_t)`
/// cast leave them, worked by hand. An infinite largest magnitude makes the scale −127/∞ = −0:
/// finite values round to 0, −0·∞ is the default NaN (mantissa 0x400000: quant 0), and a quiet
/// NaN keeps its payload through the product and the rounding (mantissa 0x400005: quant 5;
/// 0x4000ff: 255, capped at 127). A subnormal largest magnitude alone makes the scale −∞: its own
/// product is −∞ (mantissa 0: −2^22, whose low byte is 0) and the zeros' are NaN (0).
#[cfg(target_arch = "x86_64")]
#[test]
fn q8k_quantizers_keep_ggmls_bytes_past_the_range() {
    let mut inf = vec![0.0f32; QK_K];
    inf[3] = 2.0;
    inf[4] = f32::INFINITY;
    inf[5] = f32::from_bits(0x7fc0_0005);
    inf[6] = f32::from_bits(0x7fc0_00ff);
    inf[7] = -1.0;
    let mut tiny = vec![0.0f32; 2 * QK_K];
    tiny[QK_K + 7] = 1e-40;
    let mut want_inf = [0i8; QK_K];
    want_inf[5] = 5;
    want_inf[6] = 127;
    let check = |name: &str, q: &[BlockQ8K]| {
        assert_eq!(q.len(), 1, "{name}");
        assert_eq!(q[0].qs, want_inf, "{name}");
        assert_eq!(q[0].bsums[0], 132, "{name}");
        assert!(q[0].bsums[1..].iter().all(|&s| s == 0), "{name}");
        assert_eq!(q[0].d, f32::NEG_INFINITY, "{name}");
    };
    let check_tiny = |name: &str, q: &[BlockQ8K]| {
        assert_eq!(q.len(), 2, "{name}");
        for y in q {
            assert!(y.qs.iter().all(|&v| v == 0), "{name}");
            assert!(y.bsums.iter().all(|&v| v == 0), "{name}");
        }
        assert_eq!(q[0].d.to_bits(), 0, "{name}: an all-zero block");
        assert_eq!(q[1].d.to_bits(), (-0.0f32).to_bits(), "{name}: 1/−∞");
    };
    let mut q = Vec::new();
    quantize_q8k(&inf, &mut q);
    check("specification", &q);
    quantize_q8k(&tiny, &mut q);
    check_tiny("specification", &q);
    for k in simd_variants() {
        for (x, tiny_case) in [(&inf, false), (&tiny, true)] {
            // SAFETY: each only where the CPU runs it.
            unsafe {
                match k {
                    Kernel::Avx2 | Kernel::Vnni256 => x86::quantize_q8k_avx2(x, &mut q),
                    Kernel::Avx512 => x86::quantize_q8k_avx512(x, &mut q),
                    _ => continue,
                }
            }
            if tiny_case {
                check_tiny(k.suffix(), &q);
            } else {
                check(k.suffix(), &q);
            }
        }
    }
}

/// The 256-bit VNNI variant's decode row groups (2, 4 or 8 rows, then single rows) and prefill
/// token groups (2, 4 or 8 tokens over tiles of 64 rows, then single tokens), at and across every
/// boundary, with and without software prefetch.
#[test]
fn vnni256_row_and_token_groups_match_scalar_across_their_boundaries() {
    if !Kernel::Vnni256.is_available() {
        eprintln!("skipped: this CPU has no AVX-512 VL VNNI");
        return;
    }
    let mut rng = Rng(0x5eed_0256);
    for ty in [GgmlType::TQ2_0, GgmlType::TQ1_0] {
        for rows in [1usize, 3, 4, 5, 63, 64, 65, 130] {
            let cols = 2 * QK_K;
            let data: Vec<u8> = (0..rows)
                .flat_map(|_| ternary_row(ty, cols, (rng.next() % 5) as u8, &mut rng))
                .collect();
            let w = Matrix {
                ty,
                data: &data,
                rows,
                cols,
                grouped: None,
            };
            for n_tok in [1usize, 2, 3, 4, 5, 8, 9, 17] {
                let x = acts(n_tok * cols, (rng.next() % 4) as u8, &mut rng);
                let want = bits(&matmul_with(&w, &x, n_tok, 1, Kernel::Scalar));
                for threads in [1, 2] {
                    for group in [None, Some(2), Some(4), Some(8)] {
                        for ahead in [None, Some(0), Some(16384)] {
                            let got = bits(&matmul_tuned(
                                &w,
                                &x,
                                n_tok,
                                threads,
                                Kernel::Vnni256,
                                [ahead, group],
                            ));
                            assert_eq!(
                                got, want,
                                "{ty} rows {rows} tokens {n_tok} threads {threads} group \
                                 {group:?} prefetch {ahead:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// A product on the table-lookup layout records the kernels that ran: the table kernel where the
/// matrix has a whole group of 32 rows, the file-layout kernel where rows are left after the
/// groups (TQ2_0 and I2_S).
#[cfg(target_arch = "x86_64")]
#[test]
fn the_table_layouts_products_record_the_kernels_that_ran() {
    if !Kernel::available().contains(&Kernel::Avx2) {
        return;
    }
    let mut rng = Rng(7);
    for (ty, rows, want) in [
        (GgmlType::TQ2_0, 64, &["tq2_0_q8k_dot_tables_avx2"][..]),
        (
            GgmlType::TQ2_0,
            40,
            &["tq2_0_q8k_dot_avx2", "tq2_0_q8k_dot_tables_avx2"][..],
        ),
        (GgmlType::TQ2_0, 20, &["tq2_0_q8k_dot_avx2"][..]),
        (GgmlType::I2_S, 64, &["i2_s_i8_dot_tables_avx2"][..]),
        (
            GgmlType::I2_S,
            40,
            &["i2_s_i8_dot_avx2", "i2_s_i8_dot_tables_avx2"][..],
        ),
        (GgmlType::I2_S, 20, &["i2_s_i8_dot_avx2"][..]),
    ] {
        let cols = if ty == GgmlType::I2_S { QK_I2_S } else { QK_K };
        let data: Vec<u8> = if ty == GgmlType::I2_S {
            i2_s_matrix(rows, cols, 0, &mut rng)
        } else {
            (0..rows)
                .flat_map(|_| ternary_row(ty, cols, 0, &mut rng))
                .collect()
        };
        let copy = grouped_copy(ty, &data, rows, cols, TABLE_ROWS);
        let w = Matrix {
            ty,
            data: &data,
            rows,
            cols,
            grouped: Some((TABLE_ROWS, &copy)),
        };
        let x = acts(cols, 0, &mut rng);
        let log = KernelLog::default();
        let p = prepare(ty, &x, 1, cols, 2, Kernel::Avx2, &log).with_group(Some(TABLE_ROWS));
        let mut out = vec![0f32; rows];
        matmul_prepared(&w, &p, &mut out, 2, &log);
        let ids: Vec<String> = log
            .ids()
            .into_iter()
            .filter(|id| id.starts_with("tq2_0") || id.starts_with("i2_s_i8_dot"))
            .collect();
        assert_eq!(ids, want, "{ty} {rows} rows");
    }
}
