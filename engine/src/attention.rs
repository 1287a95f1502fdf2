//! One attention head against its KV cache, in ggml's order (the llama.cpp graph without flash
//! attention over an F32 cache): `kq = mul_mat(k, q)`, `soft_max_ext(kq, mask, scale)`,
//! `kqv = mul_mat(v, kq)`. See [`crate::ggml_math`] for the orders:
//!
//! - each score is the dot product of the key row and the query in `ggml_vec_dot_f32`'s order
//!   (the permuted query is not contiguous, so ggml declines tinyBLAS), except with a single query
//!   head and two or more tokens, where the query is contiguous and tinyBLAS takes the product;
//!   then times the scale;
//! - the softmax as `ggml_soft_max_f32` computes it ([`crate::ggml_math::softmax`]);
//! - each output element sums `v·p` over positions in tinyBLAS's order (8 lanes by position
//!   modulo 8) when the pass has two or more tokens and the head size divides by 4, else in
//!   `ggml_vec_dot_f32`'s (32 lanes by position modulo 32; the reference's rows are padded to a
//!   multiple of 256 positions, so no position falls in a tail). Masked and padded positions add
//!   `0·v`, which changes no sum, so only the positions `0..limit` are visited.
//!
//! The cache keeps keys and values as rows of `head_dim` per position, in chunks of [`CHUNK`]
//! positions that never move.

use crate::ggml_math::{dot_lanes8, dot_steps32};
use crate::kernels::scalar::{hadd8, hsum8};
use crate::kernels::Kernel;

/// Positions per storage chunk. The cache grows a chunk at a time and never moves what it holds:
/// growing one contiguous vector copied the whole cache at every doubling, ~0.75 ms per layer of a
/// 700M-shaped model at 128 positions, with the other kernel threads waiting.
pub const CHUNK: usize = 64;

/// One KV head's cache.
#[derive(Debug, Clone, Default)]
pub struct HeadCache {
    hd: usize,
    len: usize,
    /// Chunks of `CHUNK` rows: element `(pos, d)` of a chunk at `p·hd + d`, `p = pos % CHUNK`.
    k: Vec<Box<[f32]>>,
    /// Likewise.
    v: Vec<Box<[f32]>>,
}

impl HeadCache {
    pub fn new(hd: usize) -> HeadCache {
        HeadCache {
            hd,
            ..HeadCache::default()
        }
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append one position's key and value (`hd` each).
    pub fn push(&mut self, k: &[f32], v: &[f32]) {
        let hd = self.hd;
        assert!(k.len() == hd && v.len() == hd);
        let (c, p) = (self.len / CHUNK, self.len % CHUNK);
        if p == 0 {
            self.k.push(vec![0.0; CHUNK * hd].into_boxed_slice());
            self.v.push(vec![0.0; CHUNK * hd].into_boxed_slice());
        }
        self.k[c][p * hd..(p + 1) * hd].copy_from_slice(k);
        self.v[c][p * hd..(p + 1) * hd].copy_from_slice(v);
        if crate::planted::on("v_cache_f16") {
            for x in &mut self.v[c][p * hd..(p + 1) * hd] {
                *x = crate::quant::f16_to_f32(crate::quant::f32_to_f16(*x));
            }
        }
        self.len += 1;
    }

    /// Drop the positions from `len` on (no effect when fewer are cached): the tuner's timed
    /// attention passes append a position and take it back, so every pass sees the same cache.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
            let chunks = len.div_ceil(CHUNK);
            self.k.truncate(chunks);
            self.v.truncate(chunks);
        }
    }

    /// The key of position `pos`.
    pub fn key(&self, pos: usize) -> &[f32] {
        let p = pos % CHUNK;
        &self.k[pos / CHUNK][p * self.hd..(p + 1) * self.hd]
    }

    /// The value of position `pos`.
    pub fn value(&self, pos: usize) -> &[f32] {
        let p = pos % CHUNK;
        &self.v[pos / CHUNK][p * self.hd..(p + 1) * self.hd]
    }
}

/// Which of ggml's two summation orders each attention product takes (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnOrder {
    /// Scores in tinyBLAS's order (else `ggml_vec_dot_f32`'s).
    pub kq_lanes8: bool,
    /// Outputs in tinyBLAS's order (else `ggml_vec_dot_f32`'s).
    pub kqv_lanes8: bool,
}

impl AttnOrder {
    /// The orders ggml takes for a pass of `n_tok` tokens with `n_head` query heads of size `hd`.
    pub fn for_pass(n_tok: usize, n_head: usize, hd: usize) -> AttnOrder {
        AttnOrder {
            kq_lanes8: n_head == 1 && n_tok >= 2 && hd % 8 == 0,
            kqv_lanes8: n_tok >= 2 && hd % 4 == 0,
        }
    }
}

/// Attend query `q` to positions `0..limit` of `cache`: `p` receives the `limit` probabilities,
/// `o` the `hd` outputs; `acc` is scratch.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    kernel: Kernel,
    q: &[f32],
    cache: &HeadCache,
    limit: usize,
    scale: f32,
    order: AttnOrder,
    p: &mut [f32],
    o: &mut [f32],
    acc: &mut Vec<f32>,
) {
    assert!(limit <= cache.len && q.len() == cache.hd && p.len() >= limit && o.len() == cache.hd);
    #[cfg(target_arch = "x86_64")]
    if matches!(kernel, Kernel::Avx2 | Kernel::Vnni256 | Kernel::Avx512)
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
    {
        // SAFETY: AVX2 and FMA were detected; the body reads only within the slices (asserted
        // above).
        unsafe { attend_avx2(q, cache, limit, scale, order, p, o, acc) };
        return;
    }
    let _ = kernel;
    attend_body::<false>(q, cache, limit, scale, order, p, o, acc);
}

/// [`attend_body`] compiled for AVX2 + FMA (the same operations, so the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_avx2(
    q: &[f32],
    cache: &HeadCache,
    limit: usize,
    scale: f32,
    order: AttnOrder,
    p: &mut [f32],
    o: &mut [f32],
    acc: &mut Vec<f32>,
) {
    attend_body::<true>(q, cache, limit, scale, order, p, o, acc);
}

/// How many positions ahead the SIMD copy prefetches keys and values: the cache's rows come from
/// memory in a decode step, in chunks too short for the hardware prefetcher to ramp up on.
const PREFETCH_POSITIONS: usize = 32;

/// Prefetch every cache line of a cached row (a hint: no result changes).
#[inline(always)]
fn prefetch_row(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for i in (0..row.len()).step_by(16) {
        crate::kernels::x86::prefetch_line(row[i..].as_ptr());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_body<const SIMD: bool>(
    q: &[f32],
    cache: &HeadCache,
    limit: usize,
    scale: f32,
    order: AttnOrder,
    p: &mut [f32],
    o: &mut [f32],
    acc: &mut Vec<f32>,
) {
    let hd = cache.hd;
    for (j, pj) in p[..limit].iter_mut().enumerate() {
        if SIMD {
            if j + PREFETCH_POSITIONS < limit {
                prefetch_row(cache.key(j + PREFETCH_POSITIONS));
            }
            // The values' first rows, for the sum after the softmax.
            if j < PREFETCH_POSITIONS {
                prefetch_row(cache.value(j));
            }
        }
        let dot = if order.kq_lanes8 {
            dot_lanes8(cache.key(j), q)
        } else {
            dot_steps32(cache.key(j), q)
        };
        *pj = dot * scale;
    }
    crate::ggml_math::softmax_body(&mut p[..limit]);
    if SIMD && crate::planted::on("simd_softmax_remainder") && limit % 8 != 0 {
        p[limit - 1] = 0.0;
    }
    // Lane accumulators: lane `j % L` of output element `d` at `acc[(j % L)·hd + d]`.
    let lanes = if order.kqv_lanes8 { 8 } else { 32 };
    acc.clear();
    acc.resize(lanes * hd, 0.0);
    for (j, &pj) in p[..limit].iter().enumerate() {
        if SIMD && j + PREFETCH_POSITIONS < limit {
            prefetch_row(cache.value(j + PREFETCH_POSITIONS));
        }
        let a = &mut acc[(j % lanes) * hd..(j % lanes + 1) * hd];
        let jv = if crate::planted::on("kv_cache_value_offset") {
            j.saturating_sub(1)
        } else {
            j
        };
        for (ad, &v) in a.iter_mut().zip(cache.value(jv)) {
            *ad = v.mul_add(pj, *ad);
        }
    }
    for (d, od) in o.iter_mut().enumerate() {
        let lane = |l: usize| acc[l * hd + d];
        *od = if order.kqv_lanes8 {
            hsum8(std::array::from_fn(lane))
        } else {
            let r: [f32; 8] =
                std::array::from_fn(|l| (lane(l) + lane(16 + l)) + (lane(8 + l) + lane(24 + l)));
            hadd8(r)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ggml_math::{dot_lanes8, dot_steps32, softmax};
    use proptest::prelude::*;

    /// ggml's computation spelled out on its own shapes: the scores row and the value columns
    /// padded to a multiple of 256 positions (zero keys and values, scores masked to −∞), each
    /// product one dot over the whole padded length.
    fn reference(
        q: &[f32],
        ks: &[Vec<f32>],
        vs: &[Vec<f32>],
        limit: usize,
        scale: f32,
        order: AttnOrder,
    ) -> (Vec<f32>, Vec<f32>) {
        let n_kv = ks.len().div_ceil(256) * 256;
        let hd = q.len();
        let zero = vec![0f32; hd];
        let mut p: Vec<f32> = (0..n_kv)
            .map(|j| {
                let k = ks.get(j).unwrap_or(&zero);
                let dot = if order.kq_lanes8 {
                    dot_lanes8(k, q)
                } else {
                    dot_steps32(k, q)
                };
                let masked = if j < limit { 0.0 } else { f32::NEG_INFINITY };
                dot * scale + masked
            })
            .collect();
        softmax(Kernel::Scalar, &mut p);
        let o = (0..hd)
            .map(|d| {
                let col: Vec<f32> = (0..n_kv).map(|j| vs.get(j).map_or(0.0, |v| v[d])).collect();
                if order.kqv_lanes8 {
                    dot_lanes8(&col, &p)
                } else {
                    dot_steps32(&col, &p)
                }
            })
            .collect();
        p.truncate(limit);
        (p, o)
    }

    proptest! {
        #[test]
        fn attend_equals_ggml_on_padded_rows(
            seed in any::<u64>(), n in 1usize..150, hd in 1usize..70, limit_back in 0usize..5,
            kq8 in any::<bool>(), kqv8 in any::<bool>(),
        ) {
            let mut s = seed | 1;
            let mut f = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0 };
            let ks: Vec<Vec<f32>> = (0..n).map(|_| (0..hd).map(|_| f() * 3.0).collect()).collect();
            let vs: Vec<Vec<f32>> = (0..n).map(|_| (0..hd).map(|_| f()).collect()).collect();
            let q: Vec<f32> = (0..hd).map(|_| f()).collect();
            let mut c = HeadCache::new(hd);
            for (k, v) in ks.iter().zip(&vs) {
                c.push(k, v);
            }
            prop_assert_eq!(c.key(n - 1), &ks[n - 1][..]);
            prop_assert_eq!(c.value(n - 1), &vs[n - 1][..]);
            let limit = n.saturating_sub(limit_back).max(1);
            let order = AttnOrder { kq_lanes8: kq8, kqv_lanes8: kqv8 };
            let (wp, wo) = reference(&q, &ks, &vs, limit, 0.125, order);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let mut acc = Vec::new();
            for k in Kernel::available() {
                let (mut p, mut o) = (vec![0f32; n], vec![0f32; hd]);
                attend(k, &q, &c, limit, 0.125, order, &mut p, &mut o, &mut acc);
                prop_assert_eq!(bits(&p[..limit]), bits(&wp), "{:?}", k);
                prop_assert_eq!(bits(&o), bits(&wo), "{:?}", k);
            }
        }
    }

    #[test]
    fn truncating_drops_positions_and_later_pushes_reuse_their_places() {
        let row = |p: usize, x: f32| vec![p as f32 + x; 3];
        let mut c = HeadCache::new(3);
        for p in 0..CHUNK + 6 {
            c.push(&row(p, 0.0), &row(p, 0.5));
        }
        // Within a chunk, and at a chunk boundary.
        for keep in [CHUNK + 2, CHUNK, 5] {
            c.truncate(keep);
            assert_eq!(c.len(), keep);
            c.push(&row(keep, 100.0), &row(keep, 200.0));
            assert_eq!(c.len(), keep + 1);
            assert_eq!(c.key(keep), &row(keep, 100.0)[..]);
            assert_eq!(c.value(keep), &row(keep, 200.0)[..]);
            assert_eq!(c.key(keep - 1), &row(keep - 1, 0.0)[..]);
            assert_eq!(c.k.len(), (keep + 1).div_ceil(CHUNK));
        }
        // Truncating to more than is cached changes nothing.
        c.truncate(1000);
        assert_eq!(c.len(), 6);
    }

    #[test]
    fn orders_follow_ggml_dispatch() {
        // Decode: vec_dot for both products.
        assert_eq!(
            AttnOrder::for_pass(1, 8, 64),
            AttnOrder {
                kq_lanes8: false,
                kqv_lanes8: false
            }
        );
        // Prefill: tinyBLAS for kqv; kq only when the query is contiguous (one head).
        assert_eq!(
            AttnOrder::for_pass(5, 8, 64),
            AttnOrder {
                kq_lanes8: false,
                kqv_lanes8: true
            }
        );
        assert_eq!(
            AttnOrder::for_pass(5, 1, 64),
            AttnOrder {
                kq_lanes8: true,
                kqv_lanes8: true
            }
        );
        // tinyBLAS declines rows not divisible by 4 and lengths not divisible by 8.
        assert_eq!(
            AttnOrder::for_pass(5, 1, 66),
            AttnOrder {
                kq_lanes8: false,
                kqv_lanes8: false
            }
        );
    }
}
