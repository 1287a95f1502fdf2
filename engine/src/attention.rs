//! Attention of one token's query heads against a layer's KV cache, in ggml's order (the
//! llama.cpp graph without flash attention over an F32 cache): `kq = mul_mat(k, q)`,
//! `soft_max_ext(kq, mask, scale)`, `kqv = mul_mat(v, kq)`. See [`crate::ggml_math`] for the
//! orders:
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
//! Every score, and every lane of every output element, is its own chain of operations, so the
//! work may visit them in any order without changing a bit. It visits the cache in address order:
//! a layer's cache is a list of chunks (up to [`CHUNK_BYTES`] each), each holding every
//! KV head's keys (head by head, position by position) and then their values, and a range of heads
//! reads each chunk's keys front to back, then (after the softmax) each chunk's values, prefetching
//! [`PREFETCH`] bytes ahead. A decode step's attention streams the whole cache from memory: with
//! one 24 KiB allocation per head and 64 positions, and the compiler's own vectorisation of the
//! row arithmetic, it read a 700M-shaped model's 47 MB cache at 7-8 GB/s from memory where this
//! layout and [`crate::kernels::x86_attn`] read it at 9-10 (one core; a plain read gets 17).

use std::ops::Range;

use crate::ggml_math::{dot_lanes8, dot_steps32};
use crate::kernels::scalar::{hadd8, hsum8};
use crate::kernels::Kernel;

/// Bytes per storage chunk at most (more only when a position takes more than 2 MiB /
/// [`MIN_CHUNK`]): long runs in address order for the attention's read. The cache grows a chunk at a time and never moves what it
/// holds: growing one contiguous vector copied the whole cache at every doubling, ~0.75 ms per
/// layer of a 700M-shaped model at 128 positions, with the other kernel threads waiting.
pub const CHUNK_BYTES: usize = 2 << 20;

/// The fewest positions a chunk holds.
pub const MIN_CHUNK: usize = 64;

/// How far ahead of the row it reads the attention prefetches the cache (bytes) unless a plan says
/// otherwise ([`crate::kernels::plan::KernelPlan::attention_prefetch`], measured by the tuner).
/// On the 700M-shaped model with a 128-token prompt (Intel Xeon family 6 model 167, 2026-12-04),
/// 2 KiB decoded 2-4% faster than none at one and two threads; 4 KiB about the same.
pub const PREFETCH: usize = 2048;

/// One layer's KV cache: every KV head's keys and values, position by position.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    n_kv: usize,
    hd: usize,
    len: usize,
    /// Positions per chunk.
    chunk: usize,
    /// Chunks of `chunk` positions: key `(g, pos, d)` at `(g·chunk + p)·hd + d`, value at
    /// `((n_kv + g)·chunk + p)·hd + d`, `p = pos % chunk`. Each is zeroed memory in small pages:
    /// in alternating benches (700M, `--kernel avx512`, 2026-12-04) huge pages did not speed the
    /// attention's read (9.3 GB/s either way timed alone) and a two-thread prefill now and then
    /// stalled (193 against 237 tok/s) where each new chunk's huge page was faulted in.
    chunks: Vec<Box<[f32]>>,
}

impl LayerCache {
    /// An empty cache of `n_kv` heads of `hd` values, in chunks of as many positions as fit in
    /// [`CHUNK_BYTES`] (or a multiple of it, to hold [`MIN_CHUNK`] positions).
    pub fn new(n_kv: usize, hd: usize) -> LayerCache {
        let per_position = (2 * n_kv * hd * std::mem::size_of::<f32>()).max(1);
        let bytes = (MIN_CHUNK * per_position).div_ceil(CHUNK_BYTES) * CHUNK_BYTES;
        LayerCache::with_chunk_positions(n_kv, hd, bytes / per_position)
    }

    /// An empty cache whose chunks hold `chunk` positions each (at least one): tests use short
    /// chunks to cross their boundaries.
    pub fn with_chunk_positions(n_kv: usize, hd: usize, chunk: usize) -> LayerCache {
        LayerCache {
            n_kv,
            hd,
            len: 0,
            chunk: chunk.max(1),
            chunks: Vec::new(),
        }
    }

    /// Positions per storage chunk.
    pub fn chunk_positions(&self) -> usize {
        self.chunk
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append one position: every KV head's key (`n_kv·hd` values, head by head) and value.
    pub fn push(&mut self, k: &[f32], v: &[f32]) {
        let (hd, nkv) = (self.hd, self.n_kv);
        assert!(k.len() == nkv * hd && v.len() == nkv * hd);
        let ch = self.chunk;
        let (c, p) = (self.len / ch, self.len % ch);
        if p == 0 {
            self.chunks
                .push(vec![0f32; 2 * nkv * ch * hd].into_boxed_slice());
        }
        let chunk = &mut self.chunks[c];
        for g in 0..nkv {
            let at = (g * ch + p) * hd;
            chunk[at..at + hd].copy_from_slice(&k[g * hd..(g + 1) * hd]);
            let at = ((nkv + g) * ch + p) * hd;
            let row = &mut chunk[at..at + hd];
            row.copy_from_slice(&v[g * hd..(g + 1) * hd]);
            if crate::planted::on("v_cache_f16") {
                for x in row {
                    *x = crate::quant::f16_to_f32(crate::quant::f32_to_f16(*x));
                }
            }
        }
        self.len += 1;
    }

    /// Drop the positions from `len` on (no effect when fewer are cached): the tuner's timed
    /// attention passes append a position and take it back, so every pass sees the same cache.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
            self.chunks.truncate(len.div_ceil(self.chunk));
        }
    }

    /// KV head `g`'s key at position `pos`.
    pub fn key(&self, g: usize, pos: usize) -> &[f32] {
        assert!(g < self.n_kv && pos < self.len);
        let ch = self.chunk;
        let at = (g * ch + pos % ch) * self.hd;
        &self.chunks[pos / ch][at..at + self.hd]
    }

    /// KV head `g`'s value at position `pos`.
    pub fn value(&self, g: usize, pos: usize) -> &[f32] {
        assert!(g < self.n_kv && pos < self.len);
        let ch = self.chunk;
        let at = ((self.n_kv + g) * ch + pos % ch) * self.hd;
        &self.chunks[pos / ch][at..at + self.hd]
    }

    /// KV head `g`'s keys (`value`: values) at positions `a..b`, which lie in one chunk, as one
    /// slice of `(b − a)·hd` values.
    fn rows(&self, g: usize, a: usize, b: usize, value: bool) -> &[f32] {
        let ch = self.chunk;
        assert!(g < self.n_kv && a <= b && b <= self.len);
        assert!(a == b || a / ch == (b - 1) / ch);
        let plane = if value { self.n_kv + g } else { g };
        let at = (plane * ch + a % ch) * self.hd;
        &self.chunks[a / ch][at..at + (b - a) * self.hd]
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

/// Output element `d` from its lane accumulators (lane `l` at `acc[l·hd + d]`): `hsum_float_8` of
/// 8 lanes, or `ggml_vec_dot_f32`'s reduction of 32 (`(l + l16) + (l8 + l24)`, then `hadd8`).
pub fn reduce_lane_sums(acc: &[f32], hd: usize, d: usize, lanes8: bool) -> f32 {
    let lane = |l: usize| acc[l * hd + d];
    if lanes8 {
        hsum8(std::array::from_fn(lane))
    } else {
        let r: [f32; 8] =
            std::array::from_fn(|l| (lane(l) + lane(16 + l)) + (lane(8 + l) + lane(24 + l)));
        hadd8(r)
    }
}

/// The query heads `heads` of one token attend to positions `0..limit` of `cache`; query head
/// `h` reads KV head `h / group`. `q` holds the heads' queries (`hd` each, in order); `p` receives
/// each head's `limit` probabilities (head `heads.start + r` at `p[r·limit..]`), `o` each head's
/// `hd` outputs; `acc` is scratch. The SIMD variants prefetch the cache `prefetch` bytes ahead of
/// the row they read (0: not at all); no distance changes a result.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    kernel: Kernel,
    q: &[f32],
    cache: &LayerCache,
    heads: Range<usize>,
    group: usize,
    limit: usize,
    scale: f32,
    order: AttnOrder,
    prefetch: usize,
    p: &mut [f32],
    o: &mut [f32],
    acc: &mut Vec<f32>,
) {
    let (hd, nh) = (cache.hd, heads.len());
    assert!(group >= 1 && heads.end.div_ceil(group) <= cache.n_kv);
    assert!(limit <= cache.len && q.len() == nh * hd && p.len() >= nh * limit);
    assert!(o.len() == nh * hd);
    #[cfg(target_arch = "x86_64")]
    if matches!(kernel, Kernel::Avx2 | Kernel::Vnni256 | Kernel::Avx512)
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
    {
        // SAFETY: AVX2 and FMA were detected; the body reads only within the slices (asserted
        // above, and by the cache's accessors).
        unsafe {
            attend_avx2(
                q, cache, heads, group, limit, scale, order, prefetch, p, o, acc,
            )
        };
        return;
    }
    let _ = kernel;
    attend_body::<false>(
        q, cache, heads, group, limit, scale, order, prefetch, p, o, acc,
    );
}

/// [`attend_body`] compiled for AVX2 + FMA, with the row operations of
/// [`crate::kernels::x86_attn`] (the same operations, so the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_avx2(
    q: &[f32],
    cache: &LayerCache,
    heads: Range<usize>,
    group: usize,
    limit: usize,
    scale: f32,
    order: AttnOrder,
    prefetch: usize,
    p: &mut [f32],
    o: &mut [f32],
    acc: &mut Vec<f32>,
) {
    attend_body::<true>(
        q, cache, heads, group, limit, scale, order, prefetch, p, o, acc,
    );
}

/// One score's dot product, in the order `lanes8` names.
#[inline(always)]
fn row_dot<const SIMD: bool>(key: &[f32], q: &[f32], lanes8: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if SIMD {
        use crate::kernels::x86_attn;
        // SAFETY: `SIMD` bodies run only inside `attend_avx2`, after AVX2 and FMA were detected.
        return unsafe {
            if lanes8 {
                x86_attn::dot_lanes8(key, q)
            } else {
                x86_attn::dot_steps32(key, q)
            }
        };
    }
    if lanes8 {
        dot_lanes8(key, q)
    } else {
        dot_steps32(key, q)
    }
}

/// `acc[d] = fma(v[d], p, acc[d])`.
#[inline(always)]
fn row_axpy<const SIMD: bool>(acc: &mut [f32], v: &[f32], p: f32) {
    #[cfg(target_arch = "x86_64")]
    if SIMD {
        // SAFETY: as in `row_dot`.
        unsafe { crate::kernels::x86_attn::axpy(acc, v, p) };
        return;
    }
    for (a, &x) in acc.iter_mut().zip(v) {
        *a = x.mul_add(p, *a);
    }
}

/// Every output element of one head from its lane accumulators.
#[inline(always)]
fn reduce<const SIMD: bool>(acc: &[f32], lanes8: bool, o: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if SIMD {
        // SAFETY: as in `row_dot`.
        unsafe { crate::kernels::x86_attn::reduce_lanes(acc, lanes8, o) };
        return;
    }
    let hd = o.len();
    for (d, od) in o.iter_mut().enumerate() {
        *od = reduce_lane_sums(acc, hd, d, lanes8);
    }
}

/// The chunks' position ranges below `limit`, and for each the KV heads `heads` reads with the
/// query heads of each.
fn visit(
    chunk: usize,
    limit: usize,
    heads: &Range<usize>,
    group: usize,
    mut f: impl FnMut(Range<usize>, usize, Range<usize>),
) {
    if heads.is_empty() {
        return;
    }
    let kv = heads.start / group..(heads.end - 1) / group + 1;
    for c in 0..limit.div_ceil(chunk) {
        let positions = c * chunk..((c + 1) * chunk).min(limit);
        for g in kv.clone() {
            let hs = (g * group).max(heads.start)..((g + 1) * group).min(heads.end);
            f(positions.clone(), g, hs);
        }
    }
}

/// Prefetch the cache lines `ahead` bytes past each line of `row` (a hint: never faults, whatever
/// the address, and changes no result). A chunk's rows lie back to back, so this keeps a fixed
/// distance ahead along the stream of keys or values.
#[inline(always)]
fn prefetch_span(row: &[f32], ahead: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let p = row.as_ptr().wrapping_add(ahead / 4);
        for i in (0..row.len()).step_by(16) {
            crate::kernels::x86::prefetch_line(p.wrapping_add(i));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (row, ahead);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_body<const SIMD: bool>(
    q: &[f32],
    cache: &LayerCache,
    heads: Range<usize>,
    group: usize,
    limit: usize,
    scale: f32,
    order: AttnOrder,
    prefetch: usize,
    p: &mut [f32],
    o: &mut [f32],
    acc: &mut Vec<f32>,
) {
    let (hd, h0, nh) = (cache.hd, heads.start, heads.len());
    // Scores, each chunk's keys in address order.
    visit(cache.chunk, limit, &heads, group, |pos, g, hs| {
        let keys = cache.rows(g, pos.start, pos.end, false);
        for j in pos.clone() {
            let key = &keys[(j - pos.start) * hd..][..hd];
            if SIMD && prefetch > 0 {
                prefetch_span(key, prefetch);
            }
            for h in hs.clone() {
                let r = h - h0;
                let dot = row_dot::<SIMD>(key, &q[r * hd..(r + 1) * hd], order.kq_lanes8);
                p[r * limit + j] = dot * scale;
            }
        }
    });
    for r in 0..nh {
        let pr = &mut p[r * limit..(r + 1) * limit];
        crate::ggml_math::softmax_body(pr);
        if SIMD && crate::planted::on("simd_softmax_remainder") && limit % 8 != 0 {
            pr[limit - 1] = 0.0;
        }
    }
    // Lane accumulators: lane `j % L` of head `r`'s output element `d` at
    // `acc[(r·L + j % L)·hd + d]`.
    let lanes = if order.kqv_lanes8 { 8 } else { 32 };
    acc.clear();
    acc.resize(nh * lanes * hd, 0.0);
    let shifted = crate::planted::on("kv_cache_value_offset");
    visit(cache.chunk, limit, &heads, group, |pos, g, hs| {
        let values = cache.rows(g, pos.start, pos.end, true);
        for j in pos.clone() {
            let v = &values[(j - pos.start) * hd..][..hd];
            if SIMD && prefetch > 0 {
                prefetch_span(v, prefetch);
            }
            let v = if shifted && j > 0 {
                cache.value(g, j - 1)
            } else {
                v
            };
            for h in hs.clone() {
                let r = h - h0;
                let at = (r * lanes + j % lanes) * hd;
                row_axpy::<SIMD>(&mut acc[at..at + hd], v, p[r * limit + j]);
            }
        }
    });
    for r in 0..nh {
        reduce::<SIMD>(
            &acc[r * lanes * hd..(r + 1) * lanes * hd],
            order.kqv_lanes8,
            &mut o[r * hd..(r + 1) * hd],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ggml_math::{dot_lanes8, dot_steps32, softmax};
    use proptest::prelude::*;

    /// ggml's computation spelled out on its own shapes, for one query head: the scores row and
    /// the value columns padded to a multiple of 256 positions (zero keys and values, scores
    /// masked to −∞), each product one dot over the whole padded length.
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

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    proptest! {
        /// Every range of query heads, on every variant, against the reference head by head,
        /// with several KV heads shared by groups of query heads and caches past a chunk.
        #[test]
        fn attend_equals_ggml_on_padded_rows(
            seed in any::<u64>(), n in 1usize..150, hd in 1usize..70, limit_back in 0usize..5,
            n_kv in 1usize..4, group in 1usize..4, first in 0usize..12, count in 1usize..12,
            chunk in 1usize..80, kq8 in any::<bool>(), kqv8 in any::<bool>(),
            prefetch in prop::sample::select(vec![0usize, 64, 2048]),
        ) {
            let mut s = seed | 1;
            let mut f = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0 };
            let nh = n_kv * group;
            let h0 = first % nh;
            let heads = h0..(h0 + count).min(nh);
            // Position-major rows: position × KV head × hd.
            let ks: Vec<Vec<f32>> = (0..n).map(|_| (0..n_kv * hd).map(|_| f() * 3.0).collect()).collect();
            let vs: Vec<Vec<f32>> = (0..n).map(|_| (0..n_kv * hd).map(|_| f()).collect()).collect();
            let q: Vec<f32> = (0..heads.len() * hd).map(|_| f()).collect();
            let mut c = LayerCache::with_chunk_positions(n_kv, hd, chunk);
            for (k, v) in ks.iter().zip(&vs) {
                c.push(k, v);
            }
            prop_assert_eq!(c.key(n_kv - 1, n - 1), &ks[n - 1][(n_kv - 1) * hd..]);
            prop_assert_eq!(c.value(0, n - 1), &vs[n - 1][..hd]);
            let limit = n.saturating_sub(limit_back).max(1);
            let order = AttnOrder { kq_lanes8: kq8, kqv_lanes8: kqv8 };
            // Scratch left over from other calls (NaN) must change nothing.
            let mut acc = vec![f32::NAN; 12 * 32 * 70];
            for k in Kernel::available() {
                let (mut p, mut o) = (vec![0f32; heads.len() * limit], vec![0f32; heads.len() * hd]);
                attend(k, &q, &c, heads.clone(), group, limit, 0.125, order, prefetch, &mut p, &mut o, &mut acc);
                for (r, h) in heads.clone().enumerate() {
                    let g = h / group;
                    let head = |rows: &[Vec<f32>]| -> Vec<Vec<f32>> {
                        rows.iter().map(|row| row[g * hd..(g + 1) * hd].to_vec()).collect()
                    };
                    let (wp, wo) = reference(&q[r * hd..(r + 1) * hd], &head(&ks), &head(&vs), limit, 0.125, order);
                    prop_assert_eq!(bits(&p[r * limit..(r + 1) * limit]), bits(&wp), "{:?} head {}", k, h);
                    prop_assert_eq!(bits(&o[r * hd..(r + 1) * hd]), bits(&wo), "{:?} head {}", k, h);
                }
            }
        }
    }

    #[test]
    fn positions_land_in_chunks_head_by_head() {
        // Hand-worked addresses: 2 KV heads of 3 values, chunks of 4 positions; position 5 is
        // chunk 1, row 1.
        let mut c = LayerCache::with_chunk_positions(2, 3, 4);
        for pos in 0..7 {
            let x = pos as f32;
            c.push(
                &[x, x, x, x + 0.5, x + 0.5, x + 0.5],
                &[-x, -x, -x, 9.0, 9.0, x],
            );
        }
        assert_eq!(c.chunks.len(), 2);
        let chunk = &c.chunks[1];
        let row = |at: usize| &chunk[at * 3..at * 3 + 3];
        // Keys: head 0's 4 rows, then head 1's; the values after both heads' keys.
        assert_eq!(row(1), &[5.0; 3]);
        assert_eq!(row(4 + 1), &[5.5; 3]);
        assert_eq!(row(8 + 1), &[-5.0; 3]);
        assert_eq!(row(12 + 1), &[9.0, 9.0, 5.0]);
        assert_eq!(c.key(1, 5), &[5.5; 3]);
        assert_eq!(c.value(1, 5), &[9.0, 9.0, 5.0]);
        assert_eq!(c.key(0, 3), &[3.0; 3]);
        assert_eq!(c.rows(0, 4, 6, true), &[-4.0, -4.0, -4.0, -5.0, -5.0, -5.0]);
    }

    #[test]
    fn heads_of_no_values_score_zero_at_every_position() {
        // A dot over no values is 0 (as ggml's mul_mat of rows of length 0): every score is 0
        // and the softmax spreads the weight evenly, whatever the buffer held before.
        let mut c = LayerCache::with_chunk_positions(1, 0, 2);
        for _ in 0..3 {
            c.push(&[], &[]);
        }
        for k in Kernel::available() {
            let mut p = vec![f32::NAN; 2 * 3];
            let (mut o, mut acc) = (Vec::new(), Vec::new());
            let order = AttnOrder {
                kq_lanes8: false,
                kqv_lanes8: true,
            };
            attend(
                k,
                &[],
                &c,
                0..2,
                2,
                3,
                0.125,
                order,
                0,
                &mut p,
                &mut o,
                &mut acc,
            );
            assert_eq!(p, vec![1.0 / 3.0; 6], "{k:?}");
        }
    }

    #[test]
    fn chunks_hold_what_fits_in_2_mib_and_at_least_the_fewest_positions() {
        // 700M-shaped: 16 KV heads of 96, 12 KiB a position: 170 positions in 2 MiB.
        let c = LayerCache::new(16, 96);
        assert_eq!(c.chunk_positions(), 170);
        // 64 positions of 64 KiB take two 2 MiB units.
        let c = LayerCache::new(64, 128);
        assert_eq!(c.chunk_positions(), 64);
        let mut c = LayerCache::new(1, 2);
        c.push(&[1.0, 2.0], &[3.0, 4.0]);
        assert_eq!(c.chunk_positions(), CHUNK_BYTES / 16);
        assert_eq!(c.chunks[0].len(), 4 * CHUNK_BYTES / 16);
    }

    #[test]
    fn truncating_drops_positions_and_later_pushes_reuse_their_places() {
        const C: usize = 4;
        let row = |p: usize, x: f32| vec![p as f32 + x; 3];
        let mut c = LayerCache::with_chunk_positions(1, 3, C);
        for p in 0..C + 3 {
            c.push(&row(p, 0.0), &row(p, 0.5));
        }
        // Within a chunk, and at a chunk boundary.
        for keep in [C + 2, C, 3] {
            c.truncate(keep);
            assert_eq!(c.len(), keep);
            c.push(&row(keep, 100.0), &row(keep, 200.0));
            assert_eq!(c.len(), keep + 1);
            assert_eq!(c.key(0, keep), &row(keep, 100.0)[..]);
            assert_eq!(c.value(0, keep), &row(keep, 200.0)[..]);
            assert_eq!(c.key(0, keep - 1), &row(keep - 1, 0.0)[..]);
            assert_eq!(c.chunks.len(), (keep + 1).div_ceil(C));
        }
        // Truncating to more than is cached changes nothing.
        c.truncate(1000);
        assert_eq!(c.len(), 4);
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
