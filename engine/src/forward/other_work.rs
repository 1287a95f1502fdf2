//! What a decode step runs besides the products, for [`crate::kernels::plan::tune`] to time per
//! variant: the plan's `other` variant runs attention, RoPE and the FFN's element-wise part, so it
//! is chosen by measurement like the products' variants.

use super::{attend_layer, ffn_elementwise, rope_neox_with, Session};
use crate::attention::LayerCache;
use crate::kernels::plan::OtherWork;
use crate::kernels::Kernel;
use crate::model::Config;

/// Bytes of KV cache the timed passes stream through: copies of one layer's cache taken in turn,
/// so keys and values come from memory as in a real decode (one layer's cache would sit in L2).
pub const STREAM_BYTES: usize = 64 << 20;

/// Cached positions the timed attention reads (a decode step a few hundred tokens in).
pub const POSITIONS: usize = 256;

/// One decode step's work outside the products, for one layer: RoPE of a query and key, the
/// attention of one token against `positions` cached ones, and SiLU·up (or ReLU²·up) over `n_ff`.
pub struct DecodeOther<'m> {
    config: &'m Config,
    /// Copies of one layer's cache, `positions` long, in small pages; and the same in huge
    /// pages, made when first asked for.
    layers: Vec<LayerCache>,
    layers_huge: Vec<LayerCache>,
    /// Whether calls read `layers_huge`.
    huge: bool,
    next: usize,
    positions: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
}

/// Deterministic values of order one.
fn pattern(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

impl<'m> Session<'m> {
    /// The work [`DecodeOther`] times, on this session's model shape.
    pub fn decode_other_work(&self) -> DecodeOther<'m> {
        let c = &self.model.config;
        let (hd, nh, nkv) = (c.head_dim, c.n_head, c.n_head_kv);
        let positions = POSITIONS;
        let layer_bytes = positions * nkv * hd * 2 * self.kv_type.bytes();
        let copies = (STREAM_BYTES / layer_bytes.max(1)).clamp(1, 64);
        let (keys, values) = (pattern(nkv * hd, 1), pattern(nkv * hd, 2));
        let mut layer = LayerCache::new_typed(nkv, hd, self.kv_type).with_huge_pages(false);
        for p in 0..positions {
            // Vary the keys by position so the scores are not all equal.
            let k: Vec<f32> = keys
                .iter()
                .map(|x| x * ((p % 7) as f32 - 3.0) / 3.0)
                .collect();
            layer.push(&k, &values);
        }
        DecodeOther {
            config: c,
            layers: vec![layer; copies],
            layers_huge: Vec::new(),
            huge: false,
            next: 0,
            positions,
            q: pattern(nh * hd, 3),
            k: pattern(nkv * hd, 4),
            v: pattern(nkv * hd, 5),
            gate: pattern(c.n_ff, 6),
            up: pattern(c.n_ff, 7),
        }
    }
}

impl OtherWork for DecodeOther<'_> {
    fn describe(&self) -> String {
        let c = self.config;
        format!(
            "attention of 1 token at {} positions ({} query heads, {} KV heads × {}), RoPE, {} FFN activations",
            self.positions, c.n_head, c.n_head_kv, c.head_dim, c.n_ff
        )
    }

    fn set_kv_huge(&mut self, huge: bool) -> bool {
        if huge && self.layers_huge.is_empty() {
            self.layers_huge = self
                .layers
                .iter()
                .map(|l| l.copy_with_huge_pages(true))
                .collect();
        }
        self.huge = huge;
        true
    }

    fn run(&mut self, kernel: Kernel, prefetch: Option<usize>, threads: usize) {
        let c = self.config;
        let layers = if self.huge {
            &mut self.layers_huge
        } else {
            &mut self.layers
        };
        let i = self.next % layers.len();
        self.next += 1;
        let (mut q, mut k) = (self.q.clone(), self.k.clone());
        rope_neox_with(
            kernel,
            [&mut q, &mut k],
            c.head_dim,
            c.n_rot,
            self.positions as f32,
            c.rope_base,
        );
        let cache = std::mem::take(&mut layers[i]);
        let prefetch = prefetch.unwrap_or(crate::attention::PREFETCH);
        let (mut cache, out) = attend_layer(
            c, cache, &q, &k, &self.v, 1, false, threads, kernel, prefetch,
        );
        // Take the appended position back: every pass reads the same number of positions.
        cache.truncate(self.positions);
        layers[i] = cache;
        let act = ffn_elementwise(c, kernel, threads, &self.gate, &self.up);
        std::hint::black_box((out, act));
    }
}

#[cfg(test)]
mod tests {
    use crate::forward::Session;
    use crate::gguf::{GgmlType, GgufFile};
    use crate::kernels::plan::{tune, KernelPlan, OtherWork, ProductKind};
    use crate::kernels::Kernel;
    use crate::model::Model;
    use crate::synth::{build, preset};
    use std::time::Duration;

    /// `tiny` (TQ2_0 projections, F32 embedding) with layer 1's `ffn_down` stored as F16: a kind
    /// of product neither layer 0 nor the output matrix has.
    fn mixed_layers() -> Model {
        let spec = preset("tiny").unwrap();
        let (rows, cols) = (spec.n_embd as usize, spec.n_ff as usize);
        let mut w = build(&spec).unwrap();
        assert!(w.remove_tensor("blk.1.ffn_down.weight"));
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7) % 3) as f32 - 1.0)
            .collect();
        w.add_tensor(
            "blk.1.ffn_down.weight",
            &[cols as u64, rows as u64],
            GgmlType::F16,
            crate::quant::quantize(GgmlType::F16, &values).unwrap(),
        );
        let bytes = w.to_bytes().unwrap();
        Model::from_file(GgufFile::from_bytes(bytes, "mixed.gguf").unwrap()).unwrap()
    }

    #[test]
    fn every_kind_of_product_in_any_layer_is_tuned_and_the_other_work_keeps_its_shape() {
        let model = mixed_layers();
        let s = Session::new(&model, 1, Kernel::best());
        let types: Vec<GgmlType> = s
            .representative_matrices()
            .iter()
            .map(|(_, m)| m.ty)
            .collect();
        assert_eq!(model.embedding().ty, GgmlType::F32);
        assert!(types.contains(&GgmlType::F16), "{types:?}");
        assert!(types.contains(&GgmlType::TQ2_0), "{types:?}");
        let mut other = s.decode_other_work();
        let (plan, timings) = tune(
            &s.representative_matrices(),
            Some(&mut other),
            1,
            Duration::from_millis(1),
            false,
        );
        for ty in [GgmlType::F16, GgmlType::F32, GgmlType::TQ2_0] {
            for n in [1, 16] {
                assert!(
                    plan.products.contains_key(&ProductKind::of(ty, n)),
                    "{ty:?} × {n} not tuned: {plan:?}"
                );
            }
        }
        assert!(timings.iter().any(|t| t.kind == "other"));
        // Every timed pass read the same cache: the appended position was taken back each time.
        assert!(other.next >= 3 * Kernel::available().len());
        for layer in &other.layers {
            assert_eq!(layer.len(), super::POSITIONS);
        }
        assert!(other.describe().contains("256 positions"));
    }

    #[test]
    fn a_plan_s_knobs_reach_every_product_and_change_no_bit() {
        let model = mixed_layers();
        let tokens = [1u32, 5, 9, 2, 7];
        let run = |plan: Option<KernelPlan>| {
            let mut s = Session::new(&model, 2, Kernel::best());
            if let Some(p) = plan {
                s.set_plan(p);
            }
            // A prefill (5 tokens), then two decode steps.
            let mut logits = s.forward(&tokens, true, None).unwrap();
            for t in [3u32, 4] {
                logits.extend(s.forward(&[t], false, None).unwrap());
            }
            let bits: Vec<u32> = logits.iter().map(|v| v.to_bits()).collect();
            assert_eq!(
                s.attention_distances_used(),
                vec![s.plan.attention_distance()]
            );
            (bits, s.prefetch_distances_used(), s.groups_used())
        };
        let (want, none, no_groups) = run(None);
        assert!(
            none.is_empty() && no_groups.is_empty(),
            "{none:?} {no_groups:?}"
        );
        // The attention's distance: the default, then one a plan names (no bit changes).
        let mut plan = KernelPlan::uniform(Kernel::best());
        plan.attention_prefetch = Some(12_288);
        assert_eq!(plan.attention_distance(), 12_288);
        assert_eq!(run(Some(plan)).0, want);
        let mut plan = KernelPlan::uniform(Kernel::best());
        // An odd distance for the ternary projections, none for the F16 layer, and one for
        // the F32 output matrix (each kind of decode product the model has).
        for (ty, d) in [
            (GgmlType::TQ2_0, 12_345),
            (GgmlType::F16, 0),
            (GgmlType::F32, 4096),
        ] {
            let kind = ProductKind::of(ty, 1);
            plan.products.insert(kind, Kernel::best());
            plan.prefetch.insert(kind, d);
        }
        let (got, used, groups) = run(Some(plan.clone()));
        assert_eq!(got, want);
        assert_eq!(used, vec![0, 4096, 12_345]);
        assert!(groups.is_empty(), "{groups:?}");
        // The 256-bit VNNI variant's row and token groups (where this CPU runs it): 8 rows per
        // decode call, 2 tokens per prefill call.
        if Kernel::Vnni256.is_available() {
            for (n, g) in [(1, 8), (16, 2)] {
                let kind = ProductKind::of(GgmlType::TQ2_0, n);
                plan.products.insert(kind, Kernel::Vnni256);
                plan.groups.insert(kind, g);
            }
            let (got, used, groups) = run(Some(plan));
            assert_eq!(got, want);
            assert_eq!(used, vec![0, 4096, 12_345]);
            assert_eq!(groups, vec![2, 8]);
        } else {
            eprintln!("row and token groups skipped: this CPU has no AVX-512 VL VNNI");
        }
    }
}
