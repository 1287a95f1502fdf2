//! Kernel benches: every variant this CPU runs, one thread, on the 700M-shaped matrices
//! (throughput in bytes of weights read, so criterion prints GB/s) for TQ2_0 (the `vnni256`
//! decode also on its grouped copies, `vnni256_grouped_G`, and the AVX2 table-lookup decode on
//! its layout, `avx2_grouped_32`), TQ1_0, I2_S and the F16 output, the
//! Q8_K and I8_S activation quantizers, a decode step's SwiGLU and softmax, and the forward pass
//! (prefill of 128 tokens, one decode step) on the tiny and 700M-shaped TQ2_0 models. Force a
//! variant elsewhere with `BITNET_KERNEL`; here each runs by name.
//! `cargo bench -p bitnet-engine --bench kernels [-- FILTER]`; for regressions
//! `-- --save-baseline main`, later `-- --baseline main`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use bitnet_engine::forward::Session;
use bitnet_engine::ggml_math;
use bitnet_engine::gguf::GgmlType;
use bitnet_engine::kernels::{
    grouped_copy, matmul, matmul_prepared, prepare, quantize_i8s, quantize_q8k, Kernel, KernelLog,
    Matrix, PreparedInput,
};
use bitnet_engine::model::Model;
use bitnet_engine::quant::{f32_to_f16, quantize};
use bitnet_engine::synth::{build, preset};

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn matrix_bytes(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    if ty == GgmlType::F16 {
        return (0..rows * cols)
            .flat_map(|_| f32_to_f16(rng.f() * 0.05).to_le_bytes())
            .collect();
    }
    let w: Vec<f32> = (0..rows * cols).map(|_| rng.f().round() * 0.02).collect();
    if ty == GgmlType::I2_S {
        // One scale for the whole tensor, after every row's codes.
        return quantize(ty, &w).unwrap();
    }
    w.chunks(cols)
        .flat_map(|r| quantize(ty, r).unwrap())
        .collect()
}

fn kernels(c: &mut Criterion) {
    let mut rng = Rng(1);
    // ffn_up/gate (4096 × 1536), ffn_down (1536 × 4096) and the tied output (32002 × 1536).
    let shapes = [
        (GgmlType::TQ2_0, 4096, 1536),
        (GgmlType::TQ2_0, 1536, 4096),
        (GgmlType::TQ1_0, 4096, 1536),
        (GgmlType::I2_S, 4096, 1536),
        (GgmlType::I2_S, 1536, 4096),
        (GgmlType::F16, 32002, 1536),
    ];
    for (ty, rows, cols) in shapes {
        let data = matrix_bytes(ty, rows, cols, &mut rng);
        let w = Matrix {
            ty,
            data: &data,
            rows,
            cols,
            grouped: None,
        };
        let x: Vec<f32> = (0..cols).map(|_| rng.f()).collect();
        let mut out = vec![0f32; rows];
        let mut g = c.benchmark_group(format!("matvec_{ty}_{rows}x{cols}"));
        g.throughput(Throughput::Bytes(data.len() as u64));
        for k in Kernel::available() {
            g.bench_function(BenchmarkId::from_parameter(k.suffix()), |b| {
                b.iter(|| matmul(&w, &x, 1, &mut out, 1, k, &KernelLog::default()))
            });
            // The decode kernels that read the grouped copy, by each group they offer, on the
            // copy they read (as a model's decode does).
            for &group in k.groups(ty, false) {
                let Some(gr) = PreparedInput::grouped_rows_of(k, ty, 1, Some(group)) else {
                    continue;
                };
                let copy = grouped_copy(ty, &data, rows, cols, gr);
                let wg = Matrix {
                    grouped: Some((gr, &copy)),
                    ..w
                };
                let id = format!("{}_grouped_{gr}", k.suffix());
                g.bench_function(BenchmarkId::from_parameter(id), |b| {
                    b.iter(|| {
                        let log = KernelLog::default();
                        let p = prepare(ty, &x, 1, cols, 1, k, &log).with_group(Some(group));
                        matmul_prepared(&wg, &p, &mut out, 1, &log)
                    })
                });
            }
        }
        g.finish();
    }
    // Prefill-shaped products: 128 tokens against ffn_up.
    for ty in [GgmlType::TQ2_0, GgmlType::I2_S] {
        let data = matrix_bytes(ty, 4096, 1536, &mut rng);
        let w = Matrix {
            ty,
            data: &data,
            rows: 4096,
            cols: 1536,
            grouped: None,
        };
        let x: Vec<f32> = (0..128 * 1536).map(|_| rng.f()).collect();
        let mut out = vec![0f32; 128 * 4096];
        let mut g = c.benchmark_group(format!("matmul_{ty}_4096x1536_128tok"));
        g.throughput(Throughput::Elements(128));
        for k in Kernel::available() {
            g.bench_function(BenchmarkId::from_parameter(k.suffix()), |b| {
                b.iter(|| matmul(&w, &x, 128, &mut out, 1, k, &KernelLog::default()))
            });
        }
        g.finish();
    }

    let x: Vec<f32> = (0..4096).map(|_| rng.f()).collect();
    let mut q = Vec::new();
    let mut g = c.benchmark_group("q8k_quantize_4096");
    g.throughput(Throughput::Elements(4096));
    g.bench_function("scalar", |b| b.iter(|| quantize_q8k(&x, &mut q)));
    g.finish();
    // A decode product's whole activation preparation (quantizer, buffers, log), per variant.
    let mut g = c.benchmark_group("prepare_tq2_0_4096_1tok");
    g.throughput(Throughput::Elements(4096));
    let log = KernelLog::default();
    for k in Kernel::available() {
        g.bench_function(BenchmarkId::from_parameter(k.suffix()), |b| {
            b.iter(|| prepare(GgmlType::TQ2_0, &x, 1, 4096, 1, k, &log))
        });
    }
    g.finish();
    let mut q8 = vec![0i8; 4096];
    let mut g = c.benchmark_group("i8_s_quantize_4096");
    g.throughput(Throughput::Elements(4096));
    g.bench_function("scalar", |b| b.iter(|| quantize_i8s(&x, &mut q8)));
    g.finish();

    // A decode step's element-wise work on the 700M shape: SwiGLU over the FFN's 4096 elements,
    // and the attention's softmax of 16 heads over 193 positions (a 128-token prompt, 64 steps
    // in), by each variant this CPU runs.
    let gate: Vec<f32> = (0..4096).map(|_| 6.0 * rng.f()).collect();
    let up: Vec<f32> = (0..4096).map(|_| rng.f()).collect();
    let scores: Vec<f32> = (0..16 * 193).map(|_| 10.0 * rng.f()).collect();
    let mut out = vec![0f32; 4096];
    for (name, n) in [("swiglu_4096", 4096), ("softmax_16x193", 16 * 193)] {
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(n as u64));
        for k in Kernel::available() {
            g.bench_function(BenchmarkId::from_parameter(k.suffix()), |b| {
                if name == "swiglu_4096" {
                    b.iter(|| ggml_math::swiglu(k, &gate, &up, &mut out, 4096, 0))
                } else {
                    b.iter_batched_ref(
                        || scores.clone(),
                        |p| p.chunks_mut(193).for_each(|r| ggml_math::softmax(k, r)),
                        criterion::BatchSize::SmallInput,
                    )
                }
            });
        }
        g.finish();
    }
}

fn forward(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    for name in ["tiny", "700m"] {
        let path = dir.path().join(format!("{name}.gguf"));
        build(&preset(name).unwrap()).unwrap().write(&path).unwrap();
        let model = Model::load(&path).unwrap();
        let n_vocab = model.config.n_vocab as u32;
        let tokens: Vec<u32> = (0..128u32).map(|i| (i * 7919 + 3) % n_vocab).collect();
        let mut g = c.benchmark_group(format!("forward_{name}"));
        g.sample_size(10);
        for threads in [1, 2] {
            let k = Kernel::best();
            g.throughput(Throughput::Elements(128));
            g.bench_function(format!("prefill128_{}t", threads), |b| {
                b.iter(|| {
                    Session::new(&model, threads, k)
                        .forward(&tokens, false, None)
                        .unwrap()
                })
            });
            // One decode step after a 16-token prompt (the session is re-made outside the
            // timing so every step sees the same context length).
            g.throughput(Throughput::Elements(1));
            g.bench_function(format!("decode_{}t", threads), |b| {
                b.iter_batched(
                    || {
                        let mut s = Session::new(&model, threads, k);
                        s.forward(&tokens[..16], false, None).unwrap();
                        s
                    },
                    |mut s| s.forward(&tokens[16..17], false, None).unwrap(),
                    criterion::BatchSize::LargeInput,
                )
            });
        }
        g.finish();
    }
}

criterion_group!(benches, kernels, forward);
criterion_main!(benches);
