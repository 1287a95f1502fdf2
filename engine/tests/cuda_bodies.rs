//! The CUDA backend without a GPU. Its kernels (`engine/src/kernels/cuda/bodies.cuh`) are compiled
//! for this CPU by the build script; here every one of them is held to the scalar specification
//! bit for bit on random shapes (proptest), and then the whole CUDA session, run on those host
//! copies (`Target::HostEmulation`: the same launches, buffers, KV cache and tracing as on a GPU),
//! is held to the CPU engine's trace on every fast preset, point by point.
//!
//! What this does not test: the launches on a GPU, device memory and the stream (`gpu.rs`), and
//! CUDA's own `expf` in SwiGLU's scalar tail. Those need a GPU (`harness/tests/cuda_backend.rs`).
//!
//! Index: conversions and quantizers; ternary and I2_S products (integer parts, then the float
//! finish); float products in both orders; embedding, RMSNorm, RoPE; attention; SwiGLU, ReLU²,
//! residual, scale; the bandwidth kernel; the host-emulated session against the CPU engine.

use bitnet_engine::attention::{attend, AttnOrder, LayerCache};
use bitnet_engine::cuda::{self, CudaSession, Target};
use bitnet_engine::forward::{self, RunOptions, Tracer};
use bitnet_engine::ggml_math;
use bitnet_engine::gguf::GgmlType;
use bitnet_engine::kernels::cuda::host;
use bitnet_engine::kernels::scalar::{self, BlockQ8K, F16Bytes, F32Bytes};
use bitnet_engine::kernels::Kernel;
use bitnet_engine::model::Model;
use bitnet_engine::quant::{f16_to_f32, f32_to_f16, quantize};
use bitnet_engine::trace::{read_trace, PointFilter};
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
    /// Uniform in [-1, 1].
    fn f(&mut self) -> f32 {
        (self.next() % 2_000_001) as f32 / 1_000_000.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f() * scale).collect()
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn block_bits(b: &BlockQ8K) -> (u32, Vec<i8>, Vec<i16>) {
    (b.d.to_bits(), b.qs.to_vec(), b.bsums.to_vec())
}

/// Activations that reach the quantizers' edges: `mode` 0 random, 1 a block of zeros, 2 values on
/// rounding ties after scaling, 3 one large value among tiny ones, 4 alternating extremes.
fn acts(n: usize, mode: u8, rng: &mut Rng) -> Vec<f32> {
    (0..n)
        .map(|i| match mode {
            1 if i < 256 => 0.0,
            2 => ((rng.next() % 255) as f32 - 127.0 + 0.5) / 127.0,
            3 if i % 256 == 9 => -5.0,
            3 => rng.f() * 1e-3,
            4 if i % 2 == 0 => -7.0,
            4 => 7.0,
            _ => rng.f() * 3.0,
        })
        .collect()
}

/// A ternary matrix of `rows × cols`: quantized ternary weights, or (`raw`) random bytes with
/// finite small scales (codes outside the quantizer's range included).
fn ternary_matrix(ty: GgmlType, rows: usize, cols: usize, raw: bool, rng: &mut Rng) -> Vec<u8> {
    if raw {
        let bs = ty.type_size();
        let mut b: Vec<u8> = (0..rows * cols / 256 * bs)
            .map(|_| rng.next() as u8)
            .collect();
        for blk in b.chunks_exact_mut(bs) {
            blk[bs - 2..].copy_from_slice(&f32_to_f16(rng.f() * 0.1).to_le_bytes());
        }
        return b;
    }
    let scale = 0.01 + rng.f().abs();
    let w: Vec<f32> = (0..rows * cols)
        .map(|_| ((rng.next() % 3) as f32 - 1.0) * scale)
        .collect();
    quantize(ty, &w).unwrap()
}

#[test]
fn f16_conversions_every_half_and_random_floats() {
    // Every half value, through the embedding kernel (one row holding all 65536 of them).
    let all: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    let got = host::embed(&[0], &all, 65536, true);
    for (h, g) in (0..=u16::MAX).zip(&got) {
        let want = f16_to_f32(h);
        if want.is_nan() {
            assert!(g.is_nan(), "half {h:#06x}: {g}");
        } else {
            assert_eq!(g.to_bits(), want.to_bits(), "half {h:#06x}");
        }
    }
    // f32 → f16 → f32 on random bit patterns, subnormals, ties and overflow included.
    let mut rng = Rng(7);
    let mut xs: Vec<f32> = (0..200_000)
        .map(|_| f32::from_bits(rng.next() as u32))
        .filter(|x| !x.is_nan())
        .collect();
    xs.extend([
        0.0,
        -0.0,
        65504.0,
        65520.0,
        1e-8,
        5.96e-8,
        2.98e-8,
        f32::INFINITY,
        -f32::INFINITY,
    ]);
    xs.extend((0..5000).map(|i| f16_to_f32(i as u16 * 13) + f32::EPSILON * (i % 3) as f32));
    let got = host::round_f16(&xs);
    for (x, g) in xs.iter().zip(&got) {
        let want = f16_to_f32(f32_to_f16(*x));
        assert_eq!(g.to_bits(), want.to_bits(), "{x:e} ({:#010x})", x.to_bits());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn q8k_and_i8s_quantizers_equal_the_specification(
        seed in any::<u64>(), blocks in 1usize..5, tokens in 1usize..4, mode in 0u8..5
    ) {
        let mut rng = Rng(seed);
        let cols = blocks * 256;
        let x = acts(tokens * cols, mode, &mut rng);
        let got = host::q8k_quantize(&x);
        let mut want = Vec::new();
        let mut tmp = Vec::new();
        for t in 0..tokens {
            scalar::quantize_q8k(&x[t * cols..(t + 1) * cols], &mut tmp);
            want.extend_from_slice(&tmp);
        }
        prop_assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            prop_assert_eq!(block_bits(g), block_bits(w));
        }
        // I8_S: any width, one scale and sum per token.
        let icols = 128 * blocks;
        let xi = &x[..tokens * icols];
        let (q, s, sums) = host::i8s_quantize(xi, icols);
        for t in 0..tokens {
            let mut wq = vec![0i8; icols];
            let (ws, wsum) = scalar::quantize_i8s(&xi[t * icols..(t + 1) * icols], &mut wq);
            prop_assert_eq!(&q[t * icols..(t + 1) * icols], &wq[..]);
            prop_assert_eq!(s[t].to_bits(), ws.to_bits());
            prop_assert_eq!(sums[t], wsum);
        }
    }

    /// TQ2_0 and TQ1_0: the integer lanes equal the specification's definition exactly, and the
    /// finished products its `tq*_q8k_dot_scalar` bit for bit.
    #[test]
    fn ternary_products_integer_parts_and_finish(
        seed in any::<u64>(), blocks in 1usize..4, rows in 1usize..6, tokens in 1usize..4,
        tq1 in any::<bool>(), raw in any::<bool>(), mode in 0u8..5,
    ) {
        let mut rng = Rng(seed);
        let ty = if tq1 { GgmlType::TQ1_0 } else { GgmlType::TQ2_0 };
        let cols = blocks * 256;
        let w = ternary_matrix(ty, rows, cols, raw, &mut rng);
        let x = acts(tokens * cols, mode, &mut rng);
        let a = host::q8k_quantize(&x);
        let got = host::tq_matmul(&w, rows, &a, tq1);
        let rb = w.len() / rows;
        for t in 0..tokens {
            for r in 0..rows {
                let row = &w[r * rb..(r + 1) * rb];
                let at = &a[t * blocks..(t + 1) * blocks];
                let want = if tq1 {
                    scalar::tq1_0_q8k_dot_scalar(row, at)
                } else {
                    scalar::tq2_0_q8k_dot_scalar(row, at)
                };
                prop_assert_eq!(got[t * rows + r].to_bits(), want.to_bits(), "token {} row {}", t, r);
            }
        }
        let lanes = host::tq_lanes(&w, rows, &a, tq1);
        let code = if tq1 { scalar::tq1_0_code } else { scalar::tq2_0_code };
        let bs = ty.type_size();
        for t in 0..tokens {
            for r in 0..rows {
                for b in 0..blocks {
                    let xb = &w[(r * blocks + b) * bs..(r * blocks + b + 1) * bs];
                    let y = &a[t * blocks + b];
                    let mut want = [0i64; 8];
                    for e in 0..256 {
                        want[(e % 32) / 4] += code(xb, e) as i64 * y.qs[e] as i64;
                        want[e / 32] -= y.qs[e] as i64;
                    }
                    let i = ((t * rows + r) * blocks + b) * 8;
                    let got: Vec<i64> = lanes[i..i + 8].iter().map(|&v| v as i64).collect();
                    prop_assert_eq!(&got[..], &want[..]);
                }
            }
        }
    }

    /// I2_S: the exact `Σ code·q` and bitnet.cpp's float finish.
    #[test]
    fn i2s_products_integer_parts_and_finish(
        seed in any::<u64>(), groups in 1usize..5, rows in 1usize..6, tokens in 1usize..4, mode in 0u8..5,
    ) {
        let mut rng = Rng(seed);
        let cols = groups * 128;
        let w: Vec<u8> = (0..rows * cols / 4).map(|_| rng.next() as u8).collect();
        let w_scale = 0.01 + rng.f().abs();
        let x = acts(tokens * cols, mode, &mut rng);
        let (q, s, sums) = host::i8s_quantize(&x, cols);
        let (got, dots) = host::i2s_matmul(&w, rows, cols, w_scale, &q, &s, &sums);
        let rb = cols / 4;
        for t in 0..tokens {
            for r in 0..rows {
                let want_dot = scalar::i2_s_i8_dot_scalar(&w[r * rb..(r + 1) * rb], &q[t * cols..(t + 1) * cols]);
                prop_assert_eq!(dots[t * rows + r], want_dot);
                let want = scalar::i2_s_finish(want_dot, sums[t], s[t], w_scale);
                prop_assert_eq!(got[t * rows + r].to_bits(), want.to_bits());
            }
        }
    }

    /// F16 and F32 products in both of ggml's orders, ragged widths included.
    #[test]
    fn float_products_in_both_orders(
        seed in any::<u64>(), cols in 1usize..150, rows in 1usize..6, tokens in 1usize..4,
        f16 in any::<bool>(), lanes8 in any::<bool>(),
    ) {
        let mut rng = Rng(seed);
        let wv = rng.vec(rows * cols, 2.0);
        let w: Vec<u8> = if f16 {
            wv.iter().flat_map(|&v| f32_to_f16(v).to_le_bytes()).collect()
        } else {
            wv.iter().flat_map(|v| v.to_le_bytes()).collect()
        };
        let x = rng.vec(tokens * cols, 3.0);
        let a = if f16 { host::round_f16(&x) } else { x.clone() };
        let got = host::float_matmul(&w, rows, cols, f16, lanes8, &a);
        let es = if f16 { 2 } else { 4 };
        for t in 0..tokens {
            for r in 0..rows {
                let row = &w[r * cols * es..(r + 1) * cols * es];
                let at = &a[t * cols..(t + 1) * cols];
                let want = match (f16, lanes8) {
                    (true, true) => scalar::f16_dot_lanes8(&F16Bytes(row), at),
                    (true, false) => scalar::f16_dot_steps32(&F16Bytes(row), at, true),
                    (false, true) => scalar::f16_dot_lanes8(&F32Bytes(row), at),
                    (false, false) => scalar::f16_dot_steps32(&F32Bytes(row), at, false),
                };
                prop_assert_eq!(got[t * rows + r].to_bits(), want.to_bits());
            }
        }
    }

    /// Embedding rows, RMSNorm·weight and NEOX RoPE.
    #[test]
    fn embed_norm_rope(
        seed in any::<u64>(), e in 1usize..80, n in 1usize..5, f16 in any::<bool>(),
        heads in 1usize..4, half in 1usize..9, extra in 0usize..3, eps_exp in 1i32..7,
    ) {
        let mut rng = Rng(seed);
        let vocab = 7;
        let table = rng.vec(vocab * e, 1.5);
        let emb: Vec<u8> = if f16 {
            table.iter().flat_map(|&v| f32_to_f16(v).to_le_bytes()).collect()
        } else {
            table.iter().flat_map(|v| v.to_le_bytes()).collect()
        };
        let tokens: Vec<u32> = (0..n).map(|_| (rng.next() % vocab as u64) as u32).collect();
        let got = host::embed(&tokens, &emb, e, f16);
        for (t, &tok) in tokens.iter().enumerate() {
            for i in 0..e {
                let v = table[tok as usize * e + i];
                let want = if f16 { f16_to_f32(f32_to_f16(v)) } else { v };
                prop_assert_eq!(got[t * e + i].to_bits(), want.to_bits());
            }
        }
        let x = rng.vec(n * e, 4.0);
        let w = rng.vec(e, 1.0);
        let eps = 10f32.powi(-eps_exp);
        let mut want = vec![0f32; x.len()];
        forward::rms_norm(&x, &w, eps, &mut want);
        prop_assert_eq!(bits(&host::rms_norm(&x, &w, eps)), bits(&want));
        // RoPE: `n` tokens of `heads` heads of `hd = 2·half + extra` values, angles per token.
        let hd = 2 * half + extra;
        let mut q = rng.vec(n * heads * hd, 2.0);
        let cs: Vec<(f32, f32)> = (0..n * half).map(|i| ((i as f32 * 0.7).cos(), (i as f32 * 0.7).sin())).collect();
        let mut want = q.clone();
        for t in 0..n {
            ggml_math::rope_rotate(Kernel::Scalar, &mut want[t * heads * hd..(t + 1) * heads * hd], hd, &cs[t * half..(t + 1) * half], false);
        }
        host::rope_neox(&mut q, heads, hd, &cs, half);
        prop_assert_eq!(bits(&q), bits(&want));
    }

    /// Attention (scores, softmax, weighted sum of V) against `attention::attend` over the same
    /// cache, for a pass of `n` tokens after `p0` cached positions, with GQA and both orders.
    #[test]
    fn attention_equals_attend(
        seed in any::<u64>(), p0 in 0usize..40, n in 1usize..6, kv_heads in 1usize..3,
        group in 1usize..3, hd in 1usize..70, kq8 in any::<bool>(), kqv8 in any::<bool>(),
    ) {
        let mut rng = Rng(seed);
        let heads = kv_heads * group;
        let n_kv = p0 + n;
        // Position-major cache: position × kv head × hd.
        let kc = rng.vec(n_kv * kv_heads * hd, 3.0);
        let vc = rng.vec(n_kv * kv_heads * hd, 1.0);
        let q = rng.vec(n * heads * hd, 1.0);
        let scale = 1.0 / (hd as f32).sqrt();
        let shape = host::AttnShape {
            n_tok: n, p0, n_heads: heads, n_kv_heads: kv_heads, hd, scale,
            kq_lanes8: kq8, kqv_lanes8: kqv8,
        };
        let (out, probs) = host::attention(&q, &kc, &vc, shape);
        let order = AttnOrder { kq_lanes8: kq8, kqv_lanes8: kqv8 };
        let mut acc = Vec::new();
        let mut cache = LayerCache::new(kv_heads, hd);
        for pos in 0..n_kv {
            let at = pos * kv_heads * hd;
            cache.push(&kc[at..at + kv_heads * hd], &vc[at..at + kv_heads * hd]);
        }
        for hh in 0..heads {
            for i in 0..n {
                let limit = p0 + i + 1;
                let (mut p, mut o) = (vec![0f32; limit], vec![0f32; hd]);
                let qi = &q[(i * heads + hh) * hd..(i * heads + hh + 1) * hd];
                attend(Kernel::Scalar, qi, &cache, hh..hh + 1, group, limit, scale, order, 0, &mut p, &mut o, &mut acc);
                let prow = &probs[(i * heads + hh) * n_kv..(i * heads + hh + 1) * n_kv];
                prop_assert_eq!(bits(&prow[..limit]), bits(&p[..limit]), "probs token {} head {}", i, hh);
                prop_assert!(prow[limit..].iter().all(|&v| v == 0.0), "zero past the position");
                let orow = &out[(i * heads + hh) * hd..(i * heads + hh + 1) * hd];
                prop_assert_eq!(bits(orow), bits(&o), "output token {} head {}", i, hh);
            }
        }
    }

    /// SwiGLU (vector lanes inside whole groups of 8, libm's tail past them), ReLU²·up, the
    /// residual add and the scale.
    #[test]
    fn elementwise(seed in any::<u64>(), width in 1usize..40, rows in 1usize..4, s in -3f32..3.0) {
        let mut rng = Rng(seed);
        let gate = rng.vec(width * rows, 30.0);
        let up = rng.vec(width * rows, 2.0);
        let mut want = vec![0f32; gate.len()];
        ggml_math::swiglu(Kernel::Scalar, &gate, &up, &mut want, width, 0);
        prop_assert_eq!(bits(&host::swiglu(&gate, &up, width)), bits(&want));
        ggml_math::relu2_mul(&gate, &up, &mut want);
        prop_assert_eq!(bits(&host::relu2_mul(&gate, &up)), bits(&want));
        let mut x = gate.clone();
        host::add(&mut x, &up);
        let sum: Vec<f32> = gate.iter().zip(&up).map(|(a, b)| a + b).collect();
        prop_assert_eq!(bits(&x), bits(&sum));
        host::scale(&mut x, s);
        let scaled: Vec<f32> = sum.iter().map(|v| v * s).collect();
        prop_assert_eq!(bits(&x), bits(&scaled));
    }
}

#[test]
fn softmax_hand_cases() {
    // Masked (−∞) scores give exactly 0; one visible position gives exactly 1.
    let q = [1.0f32; 4];
    let kc = vec![0.5f32; 3 * 4];
    let vc: Vec<f32> = (0..12).map(|i| i as f32).collect();
    let shape = host::AttnShape {
        n_tok: 3,
        p0: 0,
        n_heads: 1,
        n_kv_heads: 1,
        hd: 4,
        scale: 0.5,
        kq_lanes8: false,
        kqv_lanes8: true,
    };
    let q3: Vec<f32> = q.iter().cycle().take(12).copied().collect();
    let (out, p) = host::attention(&q3, &kc, &vc, shape);
    assert_eq!(&p[..3], &[1.0, 0.0, 0.0]);
    assert_eq!(&out[..4], &[0.0, 1.0, 2.0, 3.0]);
    // Equal scores: equal probabilities summing to 1 within rounding.
    let third = &p[6..9];
    assert!(third.iter().all(|&v| v == third[0]));
    assert!((third.iter().sum::<f32>() - 1.0).abs() < 1e-6);
}

#[test]
fn read_sum_adds_every_word() {
    let buf: Vec<u64> = (0..100_003u64).map(|i| i * 0x9e37_79b9).collect();
    let want = buf.iter().fold(0u64, |a, &b| a.wrapping_add(b));
    assert_eq!(host::read_sum(&buf), want);
}

// ---- The host-emulated session against the CPU engine ------------------------------------------

fn trace_lines(dir: &std::path::Path, generated: &[u32]) -> Vec<String> {
    let mut v: Vec<String> = read_trace(&dir.join("trace.jsonl"))
        .unwrap()
        .into_iter()
        .map(|r| format!("{} step {} {:?}: {}", r.name, r.step, r.positions, r.blake3))
        .collect();
    v.push(format!("generated {generated:?}"));
    v
}

fn opts(generate: usize, chunk: Option<usize>) -> RunOptions {
    RunOptions {
        generate,
        chunk,
        threads: 2,
        kernel: Kernel::Scalar,
        nudge_embeddings: false,
        unpack_tq1: None,
        plan: None,
        kv_type: Default::default(),
    }
}

/// Every fast preset (TQ2_0, TQ1_0, I2_S, GQA, F16 and F32 outputs, `.scale` tensors, the ReLU²
/// architecture): the CUDA session on the host copies of its kernels gives the CPU engine's trace,
/// every point, step and position bit for bit, and the same greedy tokens; with the prefill in
/// chunks too. Also the integer-parts check the GPU trial runs, and the stage methods.
#[test]
fn host_emulated_session_equals_the_cpu_engine() {
    let dir = tempfile::tempdir().unwrap();
    let presets = [
        "tiny",
        "tiny-scales",
        "gqa",
        "tq1",
        "i2s",
        "f16",
        "mixed",
        "b158-tiny",
    ];
    for name in presets {
        let path = dir.path().join(format!("{name}.gguf"));
        bitnet_engine::synth::build(&bitnet_engine::synth::preset(name).unwrap())
            .unwrap()
            .write(&path)
            .unwrap();
        let model = Model::load(&path).unwrap();
        let tokens = [1u32, 17, 300, 42, 5, 99, 250, 7, 12];
        for chunk in [None, Some(4)] {
            let cpu_dir = dir.path().join(format!("{name}-{chunk:?}-cpu"));
            let mut t = Tracer::new(PointFilter::all(), &cpu_dir, false).unwrap();
            let cpu = forward::run_with(&model, &tokens, &opts(4, chunk), Some(&mut t)).unwrap();
            t.finish().unwrap();
            let gpu_dir = dir.path().join(format!("{name}-{chunk:?}-emulated"));
            let mut t = Tracer::new(PointFilter::all(), &gpu_dir, false).unwrap();
            let emu = cuda::run_with(
                &model,
                &tokens,
                &opts(4, chunk),
                &Target::HostEmulation,
                Some(&mut t),
            )
            .unwrap();
            t.finish().unwrap();
            let (a, b) = (
                trace_lines(&cpu_dir, &cpu.generated),
                trace_lines(&gpu_dir, &emu.generated),
            );
            assert_eq!(a.len(), b.len(), "{name} {chunk:?}: record count");
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x, y, "{name} chunk {chunk:?}: first difference");
            }
            assert_eq!(
                bits(&cpu.logits),
                bits(&emu.logits),
                "{name}: prefill logits"
            );
            assert!(
                emu.kernels.iter().all(|k| k.ends_with("_cuda")
                    && bitnet_engine::kernels::known_kernel_ids().contains(k)),
                "{name}: kernel IDs {:?}",
                emu.kernels
            );
        }
        // The integer parts the GPU trial compares, on the layer-0 input of three tokens.
        let s = CudaSession::new(&model, &Target::HostEmulation).unwrap();
        let cpu = forward::Session::new(&model, 1, Kernel::Scalar);
        let h = cpu.norm(&cpu.embed(&tokens[..3]), &model.layers[0].attn_norm);
        let note = s.check_integer_parts(0, &h, 3).unwrap();
        assert!(note.starts_with("layer 0:"), "{note}");
        // Stage methods on host values equal the CPU session's.
        assert_eq!(bits(&s.embed(&tokens).unwrap()), bits(&cpu.embed(&tokens)));
        let x = cpu.embed(&tokens);
        let w = &model.layers[0].attn_norm;
        assert_eq!(bits(&s.norm(&x, w).unwrap()), bits(&cpu.norm(&x, w)));
        let [q, k, v] = cpu.qkv(&model.layers[0], &h, 3, 0);
        let [gq, gk, gv] = s.qkv(0, &h, 3, 0).unwrap();
        assert_eq!(
            (bits(&gq), bits(&gk), bits(&gv)),
            (bits(&q), bits(&k), bits(&v))
        );
        assert_eq!(
            bits(&s.ffn_act(0, &h, 3).unwrap()),
            bits(&cpu.ffn_act(&model.layers[0], &h, 3))
        );
        assert_eq!(
            bits(&s.logits(&h, 3, true).unwrap()),
            bits(&cpu.logits(&h, 3, true))
        );
    }
}

#[test]
fn gpu_targets_say_what_is_missing() {
    // No GPU is assumed: on a machine without one, the constructor names what is absent instead
    // of panicking inside cudarc. (With a GPU and NVRTC present this test has nothing to say.)
    let d = cuda::detect();
    if d.devices.as_ref().is_ok_and(|v| !v.is_empty()) && d.nvrtc_library.is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    bitnet_engine::synth::build(&bitnet_engine::synth::preset("tiny").unwrap())
        .unwrap()
        .write(&path)
        .unwrap();
    let model = Model::load(&path).unwrap();
    let target = Target::Gpu {
        ordinal: 0,
        ptx_cache: None,
    };
    let err = CudaSession::new(&model, &target)
        .err()
        .expect("no GPU here");
    let msg = err.to_string();
    assert!(
        msg.contains("no CUDA") || msg.contains("NVRTC") || msg.contains("without the `cuda`"),
        "{msg}"
    );
    if d.driver_library.is_err() && d.built {
        assert_eq!(msg, "no CUDA driver: libcuda.so.1 not found");
    }
    let probe = cuda::probe(0, None).unwrap_err();
    assert_eq!(probe.to_string(), msg);
}

/// The same source compiles as CUDA device code, every kernel to a PTX entry, where a clang with
/// the NVPTX backend is installed (`apt-get install clang-14`; NVRTC itself needs a CUDA install,
/// which CI lacks). A stand-in for NVRTC's front end, not NVRTC: it catches C-only constructs
/// and shows the float operations the GPU gets (`fma.rn.f32` only where the source has `fmaf`).
#[test]
fn bodies_compile_as_cuda_with_clang_when_present() {
    let Some(clang) = ["clang-14", "clang"].into_iter().find(|c| {
        std::process::Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        eprintln!("note: no clang here; the CUDA-mode compile of bodies.cuh is not checked");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bodies.cuh"),
        bitnet_engine::kernels::cuda::SOURCE,
    )
    .unwrap();
    // What NVRTC provides built in: the qualifiers, launch indices, bit casts and math.
    let prelude = r#"
#define __device__ __attribute__((device))
#define __global__ __attribute__((global))
#define __forceinline__ __inline__ __attribute__((always_inline))
#include "__clang_cuda_builtin_vars.h"
static __device__ unsigned __float_as_uint(float f) { return __builtin_bit_cast(unsigned, f); }
static __device__ float __uint_as_float(unsigned u) { return __builtin_bit_cast(float, u); }
#define fmaf __builtin_fmaf
#define fabsf __builtin_fabsf
#define fabs __builtin_fabs
#define fmaxf __builtin_fmaxf
#define sqrtf __builtin_sqrtf
extern "C" __device__ float expf(float);
#include "bodies.cuh"
"#;
    std::fs::write(dir.path().join("k.cu"), prelude).unwrap();
    let out = std::process::Command::new(clang)
        .current_dir(dir.path())
        .args([
            "-x",
            "cuda",
            "--cuda-device-only",
            "--cuda-gpu-arch=sm_80",
            "-nocudainc",
            "-nocudalib",
            "-ffp-contract=off",
            "-D__CUDACC_RTC__",
            "-O2",
            "-S",
            "-o",
            "k.ptx",
            "k.cu",
        ])
        .output()
        .unwrap();
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("nvptx") {
        eprintln!("note: this clang has no NVPTX target; not checked");
        return;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ptx = std::fs::read_to_string(dir.path().join("k.ptx")).unwrap();
    let kernels = bitnet_engine::kernels::cuda::SOURCE
        .lines()
        .filter(|l| l.starts_with("BN_KERNEL "))
        .count();
    assert_eq!(
        ptx.matches(".entry ").count(),
        kernels,
        "one entry per kernel"
    );
    assert!(
        ptx.contains("div.rn.f32") && ptx.contains("sqrt.rn.f32"),
        "IEEE division and root"
    );
}
