//! One attention head against its KV cache, with the engine's summation order: each score sums
//! its products `k·q` (f32) in f64 in index order, then scales; softmax subtracts the max,
//! exponentiates, sums in f64 in order and scales by the f32 inverse; each output element sums
//! `v·p` (f32) over positions in order in f64.
//!
//! Keys are stored in tiles of [`TILE`] positions, dimension-major inside a tile, so the scores
//! of a tile's positions advance together (one vector lane per position) with the same operations
//! in the same order per position as one position at a time. On x86-64 with AVX2 the same code
//! is compiled for AVX2 and chosen at run time; results are bit-identical either way (no fused
//! operations, no reassociation), which the tests check against a plain per-position loop.

/// Positions per key tile.
pub const TILE: usize = 8;

/// Positions per storage chunk (whole tiles). The cache grows a chunk at a time and never moves
/// what it holds: growing one contiguous vector copied the whole cache at every doubling, ~0.75 ms
/// per layer of a 700M-shaped model at 128 positions, with the other kernel threads waiting.
pub const CHUNK: usize = 8 * TILE;

/// One KV head's cache.
#[derive(Debug, Clone, Default)]
pub struct HeadCache {
    hd: usize,
    len: usize,
    /// Chunks of `CHUNK` positions, keys in tiles of `TILE`: element `(pos, d)` of a chunk at
    /// `(p/TILE)·TILE·hd + d·TILE + p%TILE`, `p = pos % CHUNK`.
    k: Vec<Box<[f32]>>,
    /// Chunks of `CHUNK` rows: element `(pos, d)` of a chunk at `p·hd + d`.
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
        let base = (p / TILE) * TILE * hd + p % TILE;
        let kc = &mut self.k[c];
        for (d, &x) in k.iter().enumerate() {
            kc[base + d * TILE] = x;
        }
        self.v[c][p * hd..(p + 1) * hd].copy_from_slice(v);
        self.len += 1;
    }

    /// The key of position `pos` (for tests and inspection).
    pub fn key(&self, pos: usize) -> Vec<f32> {
        let (c, p) = (pos / CHUNK, pos % CHUNK);
        let base = (p / TILE) * TILE * self.hd + p % TILE;
        (0..self.hd).map(|d| self.k[c][base + d * TILE]).collect()
    }

    /// The tile of keys holding positions `t·TILE..(t+1)·TILE`.
    fn key_tile(&self, t: usize) -> &[f32] {
        let per = CHUNK / TILE;
        let size = TILE * self.hd;
        &self.k[t / per][(t % per) * size..(t % per + 1) * size]
    }

    /// The value of position `pos`.
    fn value(&self, pos: usize) -> &[f32] {
        let p = pos % CHUNK;
        &self.v[pos / CHUNK][p * self.hd..(p + 1) * self.hd]
    }
}

/// Attend query `q` to positions `0..limit` of `cache`: `p` receives the `limit` probabilities,
/// `o` the `hd` outputs; `acc` is scratch.
pub fn attend(
    q: &[f32],
    cache: &HeadCache,
    limit: usize,
    scale: f32,
    p: &mut [f32],
    o: &mut [f32],
    acc: &mut Vec<f64>,
) {
    assert!(limit <= cache.len && q.len() == cache.hd && p.len() >= limit && o.len() == cache.hd);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F was detected; the body reads only within the slices (asserted above).
        unsafe { attend_avx512(q, cache, limit, scale, p, o, acc) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was detected; the body reads only within the slices (asserted above).
        unsafe { attend_avx2(q, cache, limit, scale, p, o, acc) };
        return;
    }
    attend_body(q, cache, limit, scale, p, o, acc);
}

/// [`attend_body`] compiled for AVX-512 (the position tiles' f64 sums in 8-lane vectors; each
/// lane still sums its position in index order, so the bits are the portable body's).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn attend_avx512(
    q: &[f32],
    cache: &HeadCache,
    limit: usize,
    scale: f32,
    p: &mut [f32],
    o: &mut [f32],
    acc: &mut Vec<f64>,
) {
    attend_body(q, cache, limit, scale, p, o, acc);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn attend_avx2(
    q: &[f32],
    cache: &HeadCache,
    limit: usize,
    scale: f32,
    p: &mut [f32],
    o: &mut [f32],
    acc: &mut Vec<f64>,
) {
    attend_body(q, cache, limit, scale, p, o, acc);
}

#[inline(always)]
fn attend_body(
    q: &[f32],
    cache: &HeadCache,
    limit: usize,
    scale: f32,
    p: &mut [f32],
    o: &mut [f32],
    acc: &mut Vec<f64>,
) {
    let hd = cache.hd;
    // Scores, a tile of positions at a time (positions past `limit` in the last tile are
    // computed on the tile's padding and dropped).
    for t in 0..limit.div_ceil(TILE) {
        let tile = cache.key_tile(t);
        let mut s = [0f64; TILE];
        for (d, &qd) in q.iter().enumerate() {
            let kd = &tile[d * TILE..(d + 1) * TILE];
            for i in 0..TILE {
                s[i] += (kd[i] * qd) as f64;
            }
        }
        for (i, &si) in s.iter().enumerate() {
            let j = t * TILE + i;
            if j < limit {
                p[j] = (si as f32) * scale;
            }
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &pj in &p[..limit] {
        max = max.max(pj);
    }
    let mut sum = 0f64;
    for pj in &mut p[..limit] {
        *pj = (*pj - max).exp();
        sum += *pj as f64;
    }
    let inv = (1.0 / sum) as f32;
    for pj in &mut p[..limit] {
        *pj *= inv;
    }
    acc.clear();
    acc.resize(hd, 0.0);
    for (j, &pj) in p[..limit].iter().enumerate() {
        let vrow = cache.value(j);
        for (a, &v) in acc.iter_mut().zip(vrow) {
            *a += (v * pj) as f64;
        }
    }
    for (od, &a) in o.iter_mut().zip(acc.iter()) {
        *od = a as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain order, one position at a time, rows as they came.
    fn reference(q: &[f32], ks: &[Vec<f32>], vs: &[Vec<f32>], scale: f32) -> (Vec<f32>, Vec<f32>) {
        let mut p: Vec<f32> = ks
            .iter()
            .map(|k| {
                let mut s = 0f64;
                for (a, b) in k.iter().zip(q) {
                    s += (a * b) as f64;
                }
                (s as f32) * scale
            })
            .collect();
        let max = p.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0f64;
        for x in &mut p {
            *x = (*x - max).exp();
            sum += *x as f64;
        }
        let inv = (1.0 / sum) as f32;
        for x in &mut p {
            *x *= inv;
        }
        let o = (0..q.len())
            .map(|d| {
                let mut s = 0f64;
                for (j, v) in vs.iter().enumerate() {
                    s += (v[d] * p[j]) as f64;
                }
                s as f32
            })
            .collect();
        (p, o)
    }

    proptest! {
        #[test]
        fn tiles_give_the_plain_order_bit_for_bit(
            seed in any::<u64>(), n in 1usize..150, hd in 1usize..70, limit_back in 0usize..5
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
            prop_assert_eq!(c.key(n - 1), ks[n - 1].clone());
            let limit = n.saturating_sub(limit_back).max(1);
            let (wp, wo) = reference(&q, &ks[..limit], &vs[..limit], 0.125);
            let (mut p, mut o, mut acc) = (vec![0f32; n], vec![0f32; hd], Vec::new());
            attend(&q, &c, limit, 0.125, &mut p, &mut o, &mut acc);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&p[..limit]), bits(&wp));
            prop_assert_eq!(bits(&o), bits(&wo));
            // The portable body and every compiled copy this CPU runs give the same bits.
            let (mut p2, mut o2) = (vec![0f32; n], vec![0f32; hd]);
            attend_body(&q, &c, limit, 0.125, &mut p2, &mut o2, &mut acc);
            prop_assert_eq!(bits(&p2[..limit]), bits(&wp));
            prop_assert_eq!(bits(&o2), bits(&wo));
            #[cfg(target_arch = "x86_64")]
            {
                type Copy = unsafe fn(&[f32], &HeadCache, usize, f32, &mut [f32], &mut [f32], &mut Vec<f64>);
                let copies: [(bool, Copy); 2] = [
                    (std::is_x86_feature_detected!("avx2"), attend_avx2),
                    (std::is_x86_feature_detected!("avx512f"), attend_avx512),
                ];
                for (here, copy) in copies {
                    if here {
                        // SAFETY: the copy's features were detected on this CPU.
                        unsafe { copy(&q, &c, limit, 0.125, &mut p2, &mut o2, &mut acc) };
                        prop_assert_eq!(bits(&p2[..limit]), bits(&wp));
                        prop_assert_eq!(bits(&o2), bits(&wo));
                    }
                }
            }
        }
    }
}
