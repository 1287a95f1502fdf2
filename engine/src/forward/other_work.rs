//! What a decode step runs besides the products, for [`crate::kernels::plan::tune`] to time per
//! variant: the plan's `other` variant runs attention, RoPE and the FFN's element-wise part, so it
//! is chosen by measurement like the products' variants.

use super::{attend_layer, ffn_elementwise, rope_neox_with, Session};
use crate::attention::HeadCache;
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
    /// Copies of one layer's cache (per KV head), `positions` long.
    layers: Vec<Vec<HeadCache>>,
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
        let layer_bytes = positions * nkv * hd * 2 * std::mem::size_of::<f32>();
        let copies = (STREAM_BYTES / layer_bytes.max(1)).clamp(1, 64);
        let (keys, values) = (pattern(nkv * hd, 1), pattern(nkv * hd, 2));
        let layer: Vec<HeadCache> = (0..nkv)
            .map(|g| {
                let mut h = HeadCache::new(hd);
                for p in 0..positions {
                    let r = g * hd..(g + 1) * hd;
                    // Vary the keys by position so the scores are not all equal.
                    let k: Vec<f32> = keys[r.clone()]
                        .iter()
                        .map(|x| x * ((p % 7) as f32 - 3.0) / 3.0)
                        .collect();
                    h.push(&k, &values[r]);
                }
                h
            })
            .collect();
        DecodeOther {
            config: c,
            layers: vec![layer; copies],
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

    fn run(&mut self, kernel: Kernel, threads: usize) {
        let c = self.config;
        let i = self.next % self.layers.len();
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
        let caches = std::mem::take(&mut self.layers[i]);
        let (mut caches, out) = attend_layer(c, caches, &q, &k, &self.v, 1, false, threads, kernel);
        // Take the appended position back: every pass reads the same number of positions.
        for h in &mut caches {
            h.truncate(self.positions);
        }
        self.layers[i] = caches;
        let act = ffn_elementwise(c, kernel, threads, &self.gate, &self.up);
        std::hint::black_box((out, act));
    }
}
