//! The I2_S product against an independent numpy transcription of bitnet.cpp's C code
//! (`tests/py/i2s_oracle.py`): the per-token int8 activation quantizer (quants, scale, sum) bit
//! for bit, and the finished products of every kernel variant this CPU runs, on random
//! activations and on rows built to hit rounding ties.

mod common;

use bitnet_engine::gguf::GgmlType;
use bitnet_engine::kernels::{matmul, quantize_i8s, Kernel, KernelLog, Matrix};
use bitnet_engine::npy::{read_npy, write_npy};
use bitnet_engine::quant::quantize;

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

#[test]
fn i8_s_quantizer_and_i2_s_products_equal_bitnet_cpp_transcribed_in_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x1257);
    for (case, (rows, cols)) in [(8usize, 256usize), (5, 384), (3, 1536)]
        .into_iter()
        .enumerate()
    {
        let n_tok = 6;
        let mut x: Vec<f32> = Vec::with_capacity(n_tok * cols);
        for t in 0..n_tok {
            for i in 0..cols {
                x.push(match t {
                    // Max 127 gives s = 1 exactly: every k + 0.5 is a rounding tie.
                    0 if i == 0 => 127.0,
                    0 => (rng.next() % 254) as f32 - 127.0 + 0.5,
                    1 => 0.0,
                    2 => rng.f() * 1e-7,
                    3 => rng.f() * 3.0 * if i % 64 == 0 { 40.0 } else { 1.0 },
                    _ => rng.f(),
                });
            }
        }
        let w: Vec<f32> = (0..rows * cols)
            .map(|_| ((rng.next() % 3) as f32 - 1.0) * 0.37)
            .collect();
        let data = quantize(GgmlType::I2_S, &w).unwrap();
        let (xp, wp, out) = (
            dir.path().join(format!("x{case}.npy")),
            dir.path().join(format!("w{case}.bin")),
            dir.path().join(format!("out{case}")),
        );
        write_npy(&xp, &[n_tok, cols], &x).unwrap();
        std::fs::write(&wp, &data).unwrap();
        common::run_py(
            "i2s_oracle.py",
            &[
                xp.to_str().unwrap(),
                wp.to_str().unwrap(),
                &rows.to_string(),
                out.to_str().unwrap(),
            ],
        );
        let (_, want_q) = read_npy(&out.join("q.npy")).unwrap();
        let (_, want_s) = read_npy(&out.join("scales.npy")).unwrap();
        let (_, want_sum) = read_npy(&out.join("sums.npy")).unwrap();
        let (_, want_y) = read_npy(&out.join("y.npy")).unwrap();
        for t in 0..n_tok {
            let mut q = vec![0i8; cols];
            let (s, sum) = quantize_i8s(&x[t * cols..(t + 1) * cols], &mut q);
            assert_eq!(
                s.to_bits(),
                want_s[t].to_bits(),
                "case {case} token {t}: scale"
            );
            assert_eq!(sum as f32, want_sum[t], "case {case} token {t}: sum");
            let got_q: Vec<f32> = q.iter().map(|&v| v as f32).collect();
            assert_eq!(
                got_q,
                want_q[t * cols..(t + 1) * cols],
                "case {case} token {t}: quants"
            );
        }
        let m = Matrix {
            ty: GgmlType::I2_S,
            data: &data,
            rows,
            cols,
            grouped: None,
        };
        for k in Kernel::available() {
            let mut y = vec![0f32; n_tok * rows];
            matmul(&m, &x, n_tok, &mut y, 2, k, &KernelLog::default());
            let got: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
            let want: Vec<u32> = want_y.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "case {case} {k:?}: products {y:?} vs {want_y:?}");
        }
    }
}
