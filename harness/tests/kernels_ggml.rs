//! The engine's kernels against ggml itself (the llama.cpp build the harness links, AVX2 as
//! pinned in `.cargo/config.toml`): ggml's Q8_K quantizer gives the engine's bytes, and ggml's
//! TQ1_0/TQ2_0/Q6_K dot products and F16 matrix products (tinyBLAS for row counts divisible by
//! 4, `ggml_vec_dot_f16` otherwise) give the engine's values bit for bit, for every kernel variant
//! this CPU runs; ggml's Q6_K quantizer and dequantizer give the engine's bytes and values. The
//! expected values are computed by ggml, not by the engine.

use std::ffi::c_void;

use bitnet_engine::gguf::GgmlType;
use bitnet_engine::kernels::{
    matmul, quantize_q8k, scalar, BlockQ8K, Kernel, KernelLog, Matrix, QK_K,
};
use bitnet_engine::quant::{f32_to_f16, quantize};
use llama_cpp_sys_2 as sys;

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

fn init() {
    // SAFETY: ggml_cpu_init only fills ggml's lookup tables; it is idempotent.
    unsafe { sys::ggml_cpu_init() };
}

fn traits(ty: sys::ggml_type) -> sys::ggml_type_traits_cpu {
    // SAFETY: ggml returns a pointer into its static table for every valid type.
    unsafe { *sys::ggml_get_type_traits_cpu(ty) }
}

fn ggml_q8k(x: &[f32]) -> Vec<BlockQ8K> {
    let from_float = traits(sys::GGML_TYPE_Q8_K)
        .from_float
        .expect("Q8_K from_float");
    let mut out = vec![BlockQ8K::default(); x.len() / QK_K];
    // SAFETY: block_q8_K is {float d; int8 qs[256]; int16 bsums[16]}, the layout of BlockQ8K
    // (asserted 292 bytes); `out` holds x.len()/256 of them.
    unsafe { from_float(x.as_ptr(), out.as_mut_ptr() as *mut c_void, x.len() as i64) };
    out
}

fn ggml_vec_dot(ty: sys::ggml_type, row: &[u8], a: &[BlockQ8K]) -> f32 {
    let vec_dot = traits(ty).vec_dot.expect("vec_dot");
    let mut s = 0f32;
    // SAFETY: `row` holds a.len() blocks of `ty`, `a` the matching Q8_K blocks.
    unsafe {
        vec_dot(
            (a.len() * QK_K) as i32,
            &mut s,
            0,
            row.as_ptr() as *const c_void,
            0,
            a.as_ptr() as *const c_void,
            0,
            1,
        )
    };
    s
}

fn activations(n: usize, rng: &mut Rng, kind: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match kind {
            0 => rng.f() * 2.0,
            // Values on rounding ties of the Q8_K scale (max 127 → scale 1).
            1 => {
                if i % 256 == 0 {
                    127.0
                } else {
                    (rng.next() % 255) as f32 / 2.0 - 63.5
                }
            }
            _ => rng.f() * 1e-4 + if i % 97 == 0 { -3.0 } else { 0.0 },
        })
        .collect()
}

#[test]
fn q8k_quantization_equals_ggml() {
    init();
    let mut rng = Rng(1);
    for kind in 0..3 {
        for _ in 0..50 {
            let x = activations(4 * QK_K, &mut rng, kind);
            let mut ours = Vec::new();
            quantize_q8k(&x, &mut ours);
            let theirs = ggml_q8k(&x);
            for (b, (o, t)) in ours.iter().zip(&theirs).enumerate() {
                assert_eq!(o.d.to_bits(), t.d.to_bits(), "kind {kind} block {b}: d");
                assert_eq!(o.qs, t.qs, "kind {kind} block {b}: qs");
                assert_eq!(o.bsums, t.bsums, "kind {kind} block {b}: bsums");
            }
        }
    }
    // The largest magnitude twice with opposite signs (ggml keeps the first), in either order,
    // and an all-zero block.
    for (a, b) in [(-3.0f32, 3.0f32), (3.0, -3.0), (0.0, 0.0)] {
        let mut x: Vec<f32> = (0..QK_K).map(|_| rng.f() * (a.abs() / 4.0)).collect();
        x[5] = a;
        x[200] = b;
        let mut ours = Vec::new();
        quantize_q8k(&x, &mut ours);
        let theirs = ggml_q8k(&x);
        assert_eq!(ours[0].d.to_bits(), theirs[0].d.to_bits(), "tie {a} {b}: d");
        assert_eq!(ours[0].qs, theirs[0].qs, "tie {a} {b}: qs");
        assert_eq!(ours[0].bsums, theirs[0].bsums, "tie {a} {b}: bsums");
    }
}

#[test]
fn ternary_dot_products_equal_ggml_for_every_variant() {
    init();
    let mut rng = Rng(2);
    for (ty, gty) in [
        (GgmlType::TQ2_0, sys::GGML_TYPE_TQ2_0),
        (GgmlType::TQ1_0, sys::GGML_TYPE_TQ1_0),
    ] {
        for case in 0..300 {
            let blocks = 1 + case % 11;
            let n = blocks * QK_K;
            let scale = 0.001 + rng.f().abs();
            let w: Vec<f32> = (0..n)
                .map(|_| match case % 4 {
                    0 => -scale,
                    1 => scale,
                    _ => ((rng.next() % 3) as f32 - 1.0) * scale,
                })
                .collect();
            let row = quantize(ty, &w).unwrap();
            let matrix = Matrix {
                ty,
                data: &row,
                rows: 1,
                cols: n,
                grouped: None,
            };
            let x = activations(n, &mut rng, case % 3);
            let a = ggml_q8k(&x);
            let want_m = ggml_vec_dot(gty, &row, &a);
            let spec = match ty {
                GgmlType::TQ2_0 => scalar::tq2_0_q8k_dot_scalar(&row, &a),
                _ => scalar::tq1_0_q8k_dot_scalar(&row, &a),
            };
            assert_eq!(
                spec.to_bits(),
                want_m.to_bits(),
                "{ty} case {case}: scalar {spec} vs ggml {want_m}"
            );
            for k in Kernel::available() {
                let mut out = [0f32];
                matmul(&matrix, &x, 1, &mut out, 1, k, &KernelLog::default());
                assert_eq!(
                    out[0].to_bits(),
                    want_m.to_bits(),
                    "{ty} case {case} {k:?}: {} vs ggml {want_m}",
                    out[0]
                );
            }
        }
    }
}

/// `C = A·Bᵀ` through a ggml graph on the CPU (the path llama.cpp's `mul_mat` takes).
fn ggml_mul_mat(
    ty: sys::ggml_type,
    a: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    n_tok: usize,
    threads: i32,
) -> Vec<f32> {
    // SAFETY: a private ggml context sized for the three tensors and the graph; every pointer
    // comes from ggml and is used within the context's lifetime; data sizes match the shapes.
    unsafe {
        let ctx = sys::ggml_init(sys::ggml_init_params {
            mem_size: a.len() + (x.len() + rows * n_tok) * 4 + (64 << 20),
            mem_buffer: std::ptr::null_mut(),
            no_alloc: false,
        });
        assert!(!ctx.is_null());
        let ta = sys::ggml_new_tensor_2d(ctx, ty, cols as i64, rows as i64);
        std::ptr::copy_nonoverlapping(a.as_ptr(), sys::ggml_get_data(ta) as *mut u8, a.len());
        let tb = sys::ggml_new_tensor_2d(ctx, sys::GGML_TYPE_F32, cols as i64, n_tok as i64);
        std::ptr::copy_nonoverlapping(x.as_ptr(), sys::ggml_get_data_f32(tb), x.len());
        let tc = sys::ggml_mul_mat(ctx, ta, tb);
        let g = sys::ggml_new_graph(ctx);
        sys::ggml_build_forward_expand(g, tc);
        let status = sys::ggml_graph_compute_with_ctx(ctx, g, threads);
        assert_eq!(status, sys::GGML_STATUS_SUCCESS);
        let out = std::slice::from_raw_parts(sys::ggml_get_data_f32(tc), rows * n_tok).to_vec();
        sys::ggml_free(ctx);
        out
    }
}

fn ours(w: &Matrix, x: &[f32], n_tok: usize, threads: usize, k: Kernel) -> Vec<f32> {
    let mut out = vec![0f32; w.rows * n_tok];
    matmul(w, x, n_tok, &mut out, threads, k, &KernelLog::default());
    out
}

#[test]
fn f16_matrix_products_equal_ggml_mul_mat() {
    init();
    let mut rng = Rng(3);
    // Two or more tokens with row counts divisible by 4 go through tinyBLAS, other products
    // through ggml_vec_dot_f16; column counts with and without a tail.
    for (rows, cols) in [
        (64, 256),
        (66, 256),
        (12, 200),
        (30, 96),
        (8, 1536),
        (34, 1544),
    ] {
        let data: Vec<u8> = (0..rows * cols)
            .flat_map(|_| f32_to_f16(rng.f() * 0.5).to_le_bytes())
            .collect();
        let w = Matrix {
            ty: GgmlType::F16,
            data: &data,
            rows,
            cols,
            grouped: None,
        };
        for n_tok in [1, 3] {
            let x: Vec<f32> = (0..n_tok * cols).map(|_| rng.f() * 4.0).collect();
            let want = ggml_mul_mat(sys::GGML_TYPE_F16, &data, rows, cols, &x, n_tok, 2);
            for k in Kernel::available() {
                for threads in [1, 2] {
                    let got = ours(&w, &x, n_tok, threads, k);
                    for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(
                            g.to_bits(),
                            e.to_bits(),
                            "F16 {rows}x{cols}, {n_tok} tokens, {k:?}, {threads} threads: element {i}: {g} vs ggml {e}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn ternary_matrix_products_equal_ggml_mul_mat() {
    init();
    let mut rng = Rng(4);
    for (ty, gty) in [
        (GgmlType::TQ2_0, sys::GGML_TYPE_TQ2_0),
        (GgmlType::TQ1_0, sys::GGML_TYPE_TQ1_0),
    ] {
        for (rows, cols) in [(24, 512), (7, 1536)] {
            let w: Vec<f32> = (0..rows * cols)
                .map(|_| ((rng.next() % 3) as f32 - 1.0) * 0.02)
                .collect();
            let data: Vec<u8> = w
                .chunks(cols)
                .flat_map(|r| quantize(ty, r).unwrap())
                .collect();
            let m = Matrix {
                ty,
                data: &data,
                rows,
                cols,
                grouped: None,
            };
            for n_tok in [1, 5] {
                let x: Vec<f32> = (0..n_tok * cols).map(|_| rng.f()).collect();
                let want = ggml_mul_mat(gty, &data, rows, cols, &x, n_tok, 2);
                for k in Kernel::available() {
                    let got = ours(&m, &x, n_tok, 2, k);
                    let gb: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                    let wb: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(gb, wb, "{ty} {rows}x{cols} {n_tok} tokens {k:?}");
                }
            }
        }
    }
}

#[test]
fn f32_matrix_products_equal_ggml_mul_mat() {
    init();
    let mut rng = Rng(5);
    // Column counts divisible by 32 (ggml_vec_dot_f32 then has no tail; its tail mixes fused and
    // unfused adds by length) and, for tinyBLAS's two-token passes, a ragged one.
    for (rows, cols, toks) in [
        (64, 256, &[1, 3][..]),
        (66, 96, &[1, 2]),
        (12, 200, &[2, 5]),
    ] {
        let data: Vec<u8> = (0..rows * cols)
            .flat_map(|_| (rng.f() * 0.5).to_le_bytes())
            .collect();
        let w = Matrix {
            ty: GgmlType::F32,
            data: &data,
            rows,
            cols,
            grouped: None,
        };
        for &n_tok in toks {
            let x: Vec<f32> = (0..n_tok * cols).map(|_| rng.f() * 4.0).collect();
            let want = ggml_mul_mat(sys::GGML_TYPE_F32, &data, rows, cols, &x, n_tok, 2);
            for k in Kernel::available() {
                let got = ours(&w, &x, n_tok, 2, k);
                let gb: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                let wb: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
                assert_eq!(gb, wb, "F32 {rows}x{cols} {n_tok} tokens {k:?}");
            }
        }
    }
}

/// Weights for Q6_K rows: spreads of either sign, groups of 16 that are all zero or hold one
/// outlier, all-zero blocks and tiny magnitudes near ggml's `GROUP_MAX_EPS`.
fn q6_k_weights(n: usize, rng: &mut Rng, case: usize) -> Vec<f32> {
    let scale = [1.0f32, 0.02, 3e-3, 1e-14, 40.0][case % 5];
    (0..n)
        .map(|i| match (case / 5) % 4 {
            0 => rng.f() * scale,
            // Every other group of 16 all zero, the rest with an outlier at its 3rd element.
            1 if (i / 16) % 2 == 0 => 0.0,
            1 if i % 16 == 3 => -8.0 * scale,
            // The second block of two all zero.
            2 if (i / QK_K) % 2 == 1 => 0.0,
            // Values on multiples of a step, so quantization meets rounding ties.
            3 => ((rng.next() % 64) as f32 - 32.0) * scale / 32.0,
            _ => rng.f() * scale,
        })
        .collect()
}

/// ggml's own Q6_K quantizer (`ggml_quantize_chunk`, no importance matrix: the reference
/// quantizer `llama-quantize` runs then).
fn ggml_quantize(ty: sys::ggml_type, x: &[f32], rows: usize) -> Vec<u8> {
    let cols = x.len() / rows;
    // SAFETY: ggml_row_size is pure; the destination holds `rows` rows of `cols` elements of
    // `ty` and the source `rows × cols` floats.
    unsafe {
        let mut out = vec![0u8; sys::ggml_row_size(ty, cols as i64) * rows];
        sys::ggml_quantize_chunk(
            ty,
            x.as_ptr(),
            out.as_mut_ptr() as *mut c_void,
            0,
            rows as i64,
            cols as i64,
            std::ptr::null(),
        );
        out
    }
}

fn ggml_dequantize(ty: sys::ggml_type, data: &[u8], n: usize) -> Vec<f32> {
    // SAFETY: ggml's type table has `to_float` for every quantized type; `data` holds `n`
    // elements of `ty` and `out` `n` floats.
    unsafe {
        let to_float = (*sys::ggml_get_type_traits(ty)).to_float.expect("to_float");
        let mut out = vec![0f32; n];
        to_float(data.as_ptr() as *const c_void, out.as_mut_ptr(), n as i64);
        out
    }
}

#[test]
fn q6_k_quantization_dequantization_and_dot_products_equal_ggml() {
    init();
    let mut rng = Rng(6);
    for case in 0..200 {
        let blocks = 1 + case % 5;
        let n = blocks * QK_K;
        let w = q6_k_weights(n, &mut rng, case);
        let ours_q = quantize(GgmlType::Q6_K, &w).unwrap();
        let theirs_q = ggml_quantize(sys::GGML_TYPE_Q6_K, &w, 1);
        assert_eq!(
            ours_q, theirs_q,
            "case {case}: Q6_K bytes differ from ggml's"
        );
        let ours_d = bitnet_engine::quant::dequantize(GgmlType::Q6_K, &theirs_q, n).unwrap();
        let theirs_d = ggml_dequantize(sys::GGML_TYPE_Q6_K, &theirs_q, n);
        let (ob, tb): (Vec<u32>, Vec<u32>) = (
            ours_d.iter().map(|v| v.to_bits()).collect(),
            theirs_d.iter().map(|v| v.to_bits()).collect(),
        );
        assert_eq!(
            ob, tb,
            "case {case}: Q6_K dequantization differs from ggml's"
        );
        let x = activations(n, &mut rng, case % 3);
        let a = ggml_q8k(&x);
        let want = ggml_vec_dot(sys::GGML_TYPE_Q6_K, &theirs_q, &a);
        let spec = scalar::q6_k_q8k_dot_scalar(&theirs_q, &a);
        assert_eq!(
            spec.to_bits(),
            want.to_bits(),
            "case {case}: scalar {spec} vs ggml {want}"
        );
    }
}

#[test]
fn q6_k_matrix_products_equal_ggml_mul_mat() {
    init();
    let mut rng = Rng(7);
    for (rows, cols) in [(24, 512), (37, 256), (5, 1536)] {
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.f() * 0.3).collect();
        let data = ggml_quantize(sys::GGML_TYPE_Q6_K, &w, rows);
        let m = Matrix {
            ty: GgmlType::Q6_K,
            data: &data,
            rows,
            cols,
            grouped: None,
        };
        // ggml's vec_dot below 8 tokens, its tiled K-quant matmul from 8 on.
        for n_tok in [1, 5, 7, 8, 9, 16] {
            let x: Vec<f32> = (0..n_tok * cols).map(|_| rng.f() * 3.0).collect();
            let want = ggml_mul_mat(sys::GGML_TYPE_Q6_K, &data, rows, cols, &x, n_tok, 2);
            for k in Kernel::available() {
                for threads in [1, 2] {
                    let got = ours(&m, &x, n_tok, threads, k);
                    let gb: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                    let wb: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(
                        gb, wb,
                        "Q6_K {rows}x{cols} {n_tok} tokens {k:?} {threads} threads"
                    );
                }
            }
        }
    }
}
