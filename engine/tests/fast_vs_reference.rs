//! The fast path (packed ternary weights, int8 activations, scalar kernels) against the F32
//! reference path on candle-core (dequantized weights, textbook ops), at every trace point, on
//! the tiny preset, a GQA model, TQ1_0, TQ2_0 and I2_S, with and without `.scale` tensors.

use bitnet_engine::forward::{self, Tracer};
use bitnet_engine::kernels::Kernel;
use bitnet_engine::model::Model;
use bitnet_engine::npy::read_npy;
use bitnet_engine::reference::reference_forward;
use bitnet_engine::synth::{build, preset};
use bitnet_engine::trace::PointFilter;

#[test]
fn fast_path_matches_the_f32_reference_at_every_point() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = [1u32, 17, 300, 42, 5, 99, 250, 7, 11, 400];
    for name in [
        "tiny",
        "tiny-scales",
        "gqa",
        "tq1",
        "i2s",
        "f16",
        "mixed",
        "b158-tiny",
    ] {
        let path = dir.path().join(format!("{name}.gguf"));
        build(&preset(name).unwrap()).unwrap().write(&path).unwrap();
        let model = Model::load(&path).unwrap();
        let out = dir.path().join(name);
        let mut t = Tracer::new(PointFilter::all(), &out, true).unwrap();
        forward::run(&model, &tokens, 0, None, 2, Kernel::Scalar, Some(&mut t)).unwrap();
        t.finish().unwrap();
        let reference = reference_forward(&model, &tokens).unwrap();
        assert_eq!(reference.points.len(), 1 + 14 * model.config.n_layer + 2);
        let mut worst = (0f64, String::new());
        for (point, shape, want) in &reference.points {
            let (got_shape, got) =
                read_npy(&out.join(format!("{}.step0.npy", point.name()))).unwrap();
            assert_eq!(&got_shape, shape, "{name}: {}", point.name());
            let (mut d, mut n, mut dot, mut gg) = (0f64, 0f64, 0f64, 0f64);
            for (&a, &b) in want.iter().zip(&got) {
                d += (a as f64 - b as f64).powi(2);
                n += (a as f64).powi(2);
                dot += a as f64 * b as f64;
                gg += (b as f64).powi(2);
            }
            let rel = if n == 0.0 { d.sqrt() } else { (d / n).sqrt() };
            let cos = if n == 0.0 && gg == 0.0 {
                1.0
            } else {
                dot / (n.sqrt() * gg.sqrt())
            };
            // The fast path rounds every activation that meets a ternary matrix to int8 (Q8_K,
            // or one scale per token for I2_S):
            // measured rel L2 up to 4.0e-2 (blk.N.ffn_down, whose 512-wide input is rounded), 0
            // where no quantization happened yet (embeddings, attn_norm of layer 0).
            assert!(
                rel < 0.06 && cos > 0.998,
                "{name}: {} rel L2 {rel:.3e} cosine {cos:.6}",
                point.name()
            );
            if rel > worst.0 {
                worst = (rel, point.name());
            }
        }
        eprintln!("{name}: worst rel L2 {:.3e} at {}", worst.0, worst.1);
    }
}
