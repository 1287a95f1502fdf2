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
//! KV head's keys (tile by tile of [`KEY_TILE`] positions, each tile head by head) and then their
//! values (head by head, position by position), and a range of heads reads each chunk's keys
//! front to back, then (after the softmax) each chunk's values, prefetching [`PREFETCH`] bytes
//! ahead. A decode step's attention streams the whole cache from memory: with
//! one 24 KiB allocation per head and 64 positions, and the compiler's own vectorisation of the
//! row arithmetic, it read a 700M-shaped model's 47 MB cache at 7-8 GB/s from memory where this
//! layout and [`crate::kernels::x86_attn`] read it at 9-10 (one core; a plain read gets 17).

use std::ops::Range;

use crate::ggml_math::{dot_lanes8, dot_lanes8_f16, dot_steps32, dot_steps32_f16};
use crate::kernels::scalar::{hadd8, hsum8};
#[cfg(target_arch = "x86_64")]
use crate::kernels::x86_attn::Elem as SimdElem;
use crate::kernels::Kernel;

/// What the x86 block kernels need of a cache element ([`crate::kernels::x86_attn::Elem`]);
/// nothing elsewhere.
#[cfg(not(target_arch = "x86_64"))]
trait SimdElem {}
#[cfg(not(target_arch = "x86_64"))]
impl SimdElem for f32 {}
#[cfg(not(target_arch = "x86_64"))]
impl SimdElem for u16 {}

/// Bytes per storage chunk at most (more only when a position takes more than 2 MiB /
/// [`MIN_CHUNK`]): long runs in address order for the attention's read. The cache grows a chunk at a time and never moves what it
/// holds: growing one contiguous vector copied the whole cache at every doubling, ~0.75 ms per
/// layer of a 700M-shaped model at 128 positions, with the other kernel threads waiting.
pub const CHUNK_BYTES: usize = 2 << 20;

/// The fewest positions a chunk holds.
pub const MIN_CHUNK: usize = 64;

/// Positions per tile of a chunk's keys ([`LayerCache`]): the keys lie tile by tile, and within a
/// tile KV head by KV head, so that the scores' pass, which reads a tile's heads in turn, reads
/// the chunk's keys front to back with no gap but in its last, partly filled tile. Laid out
/// head by head for the whole chunk, as the values are, each head's keys ended where its share
/// of the chunk was not yet filled, and a pass of one core over keys with such gaps read 27
/// GB/s where it read 34 without (Zen 4, 2026-12-07, 160 of 170 positions filled).
pub const KEY_TILE: usize = 32;

/// How far ahead of the row it reads the attention prefetches the cache (bytes) unless a plan says
/// otherwise ([`crate::kernels::plan::KernelPlan::attention_prefetch`], measured by the tuner).
/// On the 700M-shaped model with a 128-token prompt (Intel Xeon family 6 model 167, 2026-12-04),
/// 2 KiB decoded 2-4% faster than none at one and two threads; 4 KiB about the same.
pub const PREFETCH: usize = 2048;

/// The KV cache's element type, llama.cpp's `type_k` / `type_v` (both the same here): `F32`, or
/// `F16` (llama.cpp's default), which rounds every key and value to an IEEE half as it is stored
/// and halves the bytes a decode step reads. With `F16`, ggml also rounds each product's F32
/// operand to F16 (the query before the scores, the probabilities before the weighted sum) and
/// sums the tail of `ggml_vec_dot_f16` in f64; [`attend`] does the same.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum KvType {
    #[default]
    F32,
    F16,
}

impl KvType {
    /// Every type, by its label.
    pub const ALL: [KvType; 2] = [KvType::F32, KvType::F16];

    /// `"f32"` or `"f16"`, as scenarios, the command line and receipts spell it.
    pub fn label(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
        }
    }

    /// The type a label names (case-insensitive), if any.
    pub fn parse(s: &str) -> Option<KvType> {
        KvType::ALL
            .into_iter()
            .find(|t| t.label().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether this is the default, `F32` (scenarios and receipts leave it out then).
    pub fn is_f32(&self) -> bool {
        *self == KvType::F32
    }

    /// Bytes per cached value.
    pub fn bytes(self) -> usize {
        match self {
            KvType::F32 => 4,
            KvType::F16 => 2,
        }
    }
}

mod pages;
use pages::KvChunk;
pub use pages::{parse_kv_pages, KV_PAGES_VAR};

/// A layer's chunks, of one element type.
#[derive(Debug, Clone)]
enum Chunks {
    F32(Vec<KvChunk<f32>>),
    /// IEEE halves, as bits.
    F16(Vec<KvChunk<u16>>),
}

/// One layer's KV cache: every KV head's keys and values, position by position.
#[derive(Debug, Clone)]
pub struct LayerCache {
    n_kv: usize,
    hd: usize,
    len: usize,
    /// Positions per chunk.
    chunk: usize,
    /// New chunks in huge pages ([`KvChunk`]).
    huge: bool,
    /// Chunks of `chunk` positions, `p = pos % chunk`: key `(g, pos, d)` at row
    /// `t0·n_kv + g·len + p − t0` (its tile starting at `t0` = `p` rounded down to a multiple
    /// of [`KEY_TILE`], `len` = the tile's positions, `KEY_TILE` but in a chunk's last tile
    /// when it does not divide `chunk`), value at row `(n_kv + g)·chunk + p`; rows of `hd`
    /// elements. Each is in small pages unless
    /// `BITNET_KV_PAGES=huge` ([`KvChunk`]): in alternating benches on Intel family 6 model 167
    /// (700M, `--kernel avx512`, 2026-12-04) huge pages did not speed the attention's read (9.3
    /// GB/s either way timed alone) and a two-thread prefill now and then stalled (193 against
    /// 237 tok/s) where each new chunk's huge page was faulted in. On Zen 4 (2026-12-05, one
    /// thread, the `speed` example, three alternating pairs) huge pages from the pool decoded
    /// 62.7-65.4 tok/s against 58.9-60.6, but each process's first round, where the pages were
    /// faulted in, prefilled at 103-105 against 110-113 tok/s; so the default stays small.
    chunks: Chunks,
}

impl Default for LayerCache {
    fn default() -> LayerCache {
        LayerCache::with_chunk_positions(0, 0, 1)
    }
}

/// An element of a cache: `f32`, or `u16` holding an IEEE half (the two [`KvType`]s).
trait KvElem: bytemuck::Pod + Default + Send + Sync + 'static {
    /// The value as stored (rounded to nearest even for a half).
    fn store(v: f32) -> Self;
    /// [`KvElem::store`] of every value of `src` into `dst` (as long).
    fn store_all(src: &[f32], dst: &mut [Self]) {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = Self::store(v);
        }
    }
    /// The stored value, exactly, as f32.
    fn to_f32(self) -> f32;
    /// `p` as ggml multiplies it by a value of this type: unchanged for F32, rounded to F16 and
    /// widened back for F16 (the probabilities are converted to the cache's type).
    fn operand(p: f32) -> f32;
    /// The chunks, when the cache holds this type (else none).
    fn chunks(c: &Chunks) -> &[KvChunk<Self>];
    /// The chunks; the cache must hold this type.
    fn chunks_mut(c: &mut Chunks) -> &mut Vec<KvChunk<Self>>;
}

impl KvElem for f32 {
    #[inline(always)]
    fn store(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn operand(p: f32) -> f32 {
        p
    }
    fn chunks(c: &Chunks) -> &[KvChunk<f32>] {
        match c {
            Chunks::F32(v) => v,
            Chunks::F16(_) => &[],
        }
    }
    fn chunks_mut(c: &mut Chunks) -> &mut Vec<KvChunk<f32>> {
        match c {
            Chunks::F32(v) => v,
            Chunks::F16(_) => unreachable!("an F16 cache's chunks taken as F32"),
        }
    }
}

impl KvElem for u16 {
    #[inline(always)]
    fn store(v: f32) -> u16 {
        crate::quant::f32_to_f16(v)
    }
    fn store_all(src: &[f32], dst: &mut [u16]) {
        crate::quant::f32_to_f16_into(src, dst);
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        crate::quant::f16_to_f32(self)
    }
    #[inline(always)]
    fn operand(p: f32) -> f32 {
        crate::quant::f16_to_f32(crate::quant::f32_to_f16(p))
    }
    fn chunks(c: &Chunks) -> &[KvChunk<u16>] {
        match c {
            Chunks::F16(v) => v,
            Chunks::F32(_) => &[],
        }
    }
    fn chunks_mut(c: &mut Chunks) -> &mut Vec<KvChunk<u16>> {
        match c {
            Chunks::F16(v) => v,
            Chunks::F32(_) => unreachable!("an F32 cache's chunks taken as F16"),
        }
    }
}

impl LayerCache {
    /// An empty F32 cache of `n_kv` heads of `hd` values (see [`LayerCache::new_typed`]).
    pub fn new(n_kv: usize, hd: usize) -> LayerCache {
        LayerCache::new_typed(n_kv, hd, KvType::F32)
    }

    /// An empty cache of `n_kv` heads of `hd` values of type `ty`, in chunks of as many positions
    /// as fit in [`CHUNK_BYTES`] (or a multiple of it, to hold [`MIN_CHUNK`] positions).
    pub fn new_typed(n_kv: usize, hd: usize, ty: KvType) -> LayerCache {
        let per_position = (2 * n_kv * hd * ty.bytes()).max(1);
        let bytes = (MIN_CHUNK * per_position).div_ceil(CHUNK_BYTES) * CHUNK_BYTES;
        LayerCache::with_chunk_positions_typed(n_kv, hd, bytes / per_position, ty)
    }

    /// An empty F32 cache whose chunks hold `chunk` positions each (at least one): tests use
    /// short chunks to cross their boundaries.
    pub fn with_chunk_positions(n_kv: usize, hd: usize, chunk: usize) -> LayerCache {
        LayerCache::with_chunk_positions_typed(n_kv, hd, chunk, KvType::F32)
    }

    /// [`LayerCache::with_chunk_positions`] of type `ty`.
    pub fn with_chunk_positions_typed(
        n_kv: usize,
        hd: usize,
        chunk: usize,
        ty: KvType,
    ) -> LayerCache {
        LayerCache {
            n_kv,
            hd,
            len: 0,
            chunk: chunk.max(1),
            huge: pages::kv_huge_pages(),
            chunks: match ty {
                KvType::F32 => Chunks::F32(Vec::new()),
                KvType::F16 => Chunks::F16(Vec::new()),
            },
        }
    }

    /// This cache with its new chunks in huge pages (`true`) or small ones; the default is
    /// `BITNET_KV_PAGES` (`huge` or `small`, the default).
    pub fn with_huge_pages(mut self, huge: bool) -> LayerCache {
        self.huge = huge;
        self
    }

    /// A copy of this cache whose chunks, and new ones, are in huge pages (`true`) or small
    /// ones.
    pub fn copy_with_huge_pages(&self, huge: bool) -> LayerCache {
        let chunks = match &self.chunks {
            Chunks::F32(a) => Chunks::F32(a.iter().map(|x| x.copy_with(huge)).collect()),
            Chunks::F16(a) => Chunks::F16(a.iter().map(|x| x.copy_with(huge)).collect()),
        };
        LayerCache {
            chunks,
            huge,
            ..*self
        }
    }

    /// The element type.
    pub fn kv_type(&self) -> KvType {
        match self.chunks {
            Chunks::F32(_) => KvType::F32,
            Chunks::F16(_) => KvType::F16,
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

    #[cfg(test)]
    fn chunk_count(&self) -> usize {
        match &self.chunks {
            Chunks::F32(v) => v.len(),
            Chunks::F16(v) => v.len(),
        }
    }

    /// Append one position: every KV head's key (`n_kv·hd` values, head by head) and value, each
    /// stored as the cache's type holds it (rounded to nearest even for F16, as ggml's copy into
    /// an F16 cache rounds).
    pub fn push(&mut self, k: &[f32], v: &[f32]) {
        match self.kv_type() {
            KvType::F32 => self.push_typed::<f32>(k, v),
            KvType::F16 => self.push_typed::<u16>(k, v),
        }
    }

    fn push_typed<E: KvElem>(&mut self, k: &[f32], v: &[f32]) {
        let (hd, nkv) = (self.hd, self.n_kv);
        assert!(k.len() == nkv * hd && v.len() == nkv * hd);
        let ch = self.chunk;
        let (c, p) = (self.len / ch, self.len % ch);
        let chunks = E::chunks_mut(&mut self.chunks);
        if p == 0 && chunks.len() == c {
            chunks.push(KvChunk::new(2 * nkv * ch * hd, self.huge));
        }
        let chunk = &mut chunks[c];
        let planted_f16 = crate::planted::on("v_cache_f16");
        for g in 0..nkv {
            let at = key_row(ch, nkv, g, p) * hd;
            E::store_all(&k[g * hd..(g + 1) * hd], &mut chunk[at..at + hd]);
            let at = ((nkv + g) * ch + p) * hd;
            let (src, dst) = (&v[g * hd..(g + 1) * hd], &mut chunk[at..at + hd]);
            if planted_f16 {
                // The planted bug rounds an F32 cache's values as an F16 cache would.
                for (o, &x) in dst.iter_mut().zip(src) {
                    *o = E::store(u16::operand(x));
                }
            } else {
                E::store_all(src, dst);
            }
        }
        self.len += 1;
    }

    /// Storage for `positions` positions in all, mapped and faulted in now ([`KvChunk::touch`]):
    /// the chunks the cache would add as it grows to that length, made ahead. Changes nothing
    /// the cache holds or reads.
    pub fn reserve(&mut self, positions: usize) {
        match self.kv_type() {
            KvType::F32 => self.reserve_typed::<f32>(positions),
            KvType::F16 => self.reserve_typed::<u16>(positions),
        }
    }

    fn reserve_typed<E: KvElem>(&mut self, positions: usize) {
        let (ch, len) = (self.chunk, 2 * self.n_kv * self.chunk * self.hd);
        let huge = self.huge;
        let chunks = E::chunks_mut(&mut self.chunks);
        while chunks.len() < positions.div_ceil(ch) {
            let mut c = KvChunk::new(len, huge);
            c.touch();
            chunks.push(c);
        }
    }

    /// Drop the positions from `len` on (no effect when fewer are cached): the tuner's timed
    /// attention passes append a position and take it back, so every pass sees the same cache.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
            let keep = len.div_ceil(self.chunk);
            match &mut self.chunks {
                Chunks::F32(v) => v.truncate(keep),
                Chunks::F16(v) => v.truncate(keep),
            }
        }
    }

    /// KV head `g`'s key at position `pos`, as f32 (exactly as stored).
    pub fn key(&self, g: usize, pos: usize) -> Vec<f32> {
        assert!(g < self.n_kv && pos < self.len);
        self.widened(g, pos, false)
    }

    /// KV head `g`'s value at position `pos`, as f32 (exactly as stored).
    pub fn value(&self, g: usize, pos: usize) -> Vec<f32> {
        assert!(g < self.n_kv && pos < self.len);
        self.widened(g, pos, true)
    }

    fn widened(&self, g: usize, pos: usize, value: bool) -> Vec<f32> {
        match self.kv_type() {
            KvType::F32 => self.rows::<f32>(g, pos, pos + 1, value).to_vec(),
            KvType::F16 => self
                .rows::<u16>(g, pos, pos + 1, value)
                .iter()
                .map(|&h| h.to_f32())
                .collect(),
        }
    }

    /// KV head `g`'s keys (`value`: values) at positions `a..b`, as one slice of `(b − a)·hd`
    /// elements (empty when the cache does not hold `E`). Values' positions lie in one chunk;
    /// keys' in one tile of one chunk ([`KEY_TILE`]).
    fn rows<E: KvElem>(&self, g: usize, a: usize, b: usize, value: bool) -> &[E] {
        let ch = self.chunk;
        assert!(g < self.n_kv && a <= b && b <= self.len);
        assert!(a == b || a / ch == (b - 1) / ch);
        let row = if value {
            (self.n_kv + g) * ch + a % ch
        } else {
            assert!(a == b || (a % ch) / KEY_TILE == ((b - 1) % ch) / KEY_TILE);
            key_row(ch, self.n_kv, g, a % ch)
        };
        let at = row * self.hd;
        match E::chunks(&self.chunks).get(a / ch) {
            Some(c) => &c[at..at + (b - a) * self.hd],
            None => &[],
        }
    }

    /// KV head `g`'s values at positions `0..limit` into `spans`, run by run (one per chunk:
    /// `(first position, rows)`), replacing what it held.
    fn value_spans<'a, E: KvElem>(
        &'a self,
        g: usize,
        limit: usize,
        spans: &mut Vec<(usize, &'a [E])>,
    ) {
        spans.clear();
        for c in 0..limit.div_ceil(self.chunk) {
            let pos = c * self.chunk..((c + 1) * self.chunk).min(limit);
            spans.push((pos.start, self.rows::<E>(g, pos.start, pos.end, true)));
        }
    }
}

/// The row of KV head `g`'s key at position `p` of a chunk of `chunk` positions and `n_kv`
/// heads (see [`LayerCache`]'s layout).
fn key_row(chunk: usize, n_kv: usize, g: usize, p: usize) -> usize {
    let t0 = p / KEY_TILE * KEY_TILE;
    let len = KEY_TILE.min(chunk - t0);
    t0 * n_kv + g * len + (p - t0)
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
    /// The orders ggml takes for a pass of `n_tok` tokens with `n_head` query heads of size `hd`
    /// over an F32 cache.
    pub fn for_pass(n_tok: usize, n_head: usize, hd: usize) -> AttnOrder {
        AttnOrder::for_cache(KvType::F32, n_tok, n_head, hd)
    }

    /// The orders ggml takes for a pass of `n_tok` tokens with `n_head` query heads of size `hd`
    /// over a cache of type `ty`. tinyBLAS (`llamafile_sgemm`) takes a product of two or more
    /// columns whose row count divides by 4 (its AVX2 form pads a ragged length with zeros), and
    /// only when its right operand is contiguous and of the type the left one pairs with: over an
    /// F32 cache the permuted query is contiguous only with one head; over an F16 cache ggml first
    /// converts the query to F16 into a contiguous buffer, which tinyBLAS then takes. The rows of
    /// the scores' product are the cache's positions (padded to 256), those of the outputs' the
    /// head size.
    pub fn for_cache(ty: KvType, n_tok: usize, n_head: usize, hd: usize) -> AttnOrder {
        AttnOrder {
            kq_lanes8: n_tok >= 2
                && match ty {
                    KvType::F32 => n_head == 1,
                    KvType::F16 => true,
                },
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
/// the row they read (0: not at all); no distance changes a result. Over an F16 cache the query
/// is rounded to F16 and each probability is rounded to F16 where it weights a value (the
/// probabilities `p` returns are the softmax's, unrounded, as ggml's `soft_max_ext` writes them).
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
    let a = Attend {
        cache,
        heads,
        group,
        limit,
        scale,
        order,
        prefetch,
    };
    match cache.kv_type() {
        KvType::F32 => a.run::<f32>(kernel, q, p, o, acc),
        KvType::F16 => {
            let mut q16 = vec![0u16; q.len()];
            u16::store_all(q, &mut q16);
            a.run::<u16>(kernel, &q16, p, o, acc)
        }
    }
}

/// One call's shape and settings (see [`attend`]).
struct Attend<'c> {
    cache: &'c LayerCache,
    heads: Range<usize>,
    group: usize,
    limit: usize,
    scale: f32,
    order: AttnOrder,
    prefetch: usize,
}

impl Attend<'_> {
    /// `q` already of the cache's type.
    fn run<E: RowOps>(
        &self,
        kernel: Kernel,
        q: &[E],
        p: &mut [f32],
        o: &mut [f32],
        acc: &mut Vec<f32>,
    ) {
        #[cfg(target_arch = "x86_64")]
        if matches!(kernel, Kernel::Avx2 | Kernel::Vnni256 | Kernel::Avx512)
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
        {
            // SAFETY: AVX2, FMA and F16C were detected; the body reads only within the slices
            // (asserted in `attend`, and by the cache's accessors).
            unsafe { self.run_avx2(q, p, o, acc) };
            return;
        }
        let _ = kernel;
        self.body::<false, E>(q, p, o, acc);
    }

    /// [`Attend::body`] compiled for AVX2 + FMA + F16C, with the row operations of
    /// [`crate::kernels::x86_attn`] (the same operations, so the same bits).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run_avx2<E: RowOps>(
        &self,
        q: &[E],
        p: &mut [f32],
        o: &mut [f32],
        acc: &mut Vec<f32>,
    ) {
        self.body::<true, E>(q, p, o, acc);
    }

    #[inline(always)]
    fn body<const SIMD: bool, E: RowOps>(
        &self,
        q: &[E],
        p: &mut [f32],
        o: &mut [f32],
        acc: &mut Vec<f32>,
    ) {
        let (cache, limit, order, prefetch) = (self.cache, self.limit, self.order, self.prefetch);
        let (hd, h0, nh) = (cache.hd, self.heads.start, self.heads.len());
        let heads = &self.heads;
        // Scores, each chunk's keys in address order.
        // Eight scores per call where the SIMD form has them (see `RowOps::dots8`): each head
        // takes the chunk's keys in blocks of eight, the rest one by one.
        let keys8 = SIMD && !order.kq_lanes8 && E::has_dots8(hd);
        visit(
            cache.chunk,
            KEY_TILE,
            limit,
            heads,
            self.group,
            |pos, g, hs| {
                let keys = cache.rows::<E>(g, pos.start, pos.end, false);
                if keys8 {
                    let whole = pos.len() / 8 * 8;
                    let mut out = [0f32; 8];
                    for h in hs.clone() {
                        let r = h - h0;
                        let qh = &q[r * hd..(r + 1) * hd];
                        for b in (0..whole).step_by(8) {
                            let rows = &keys[b * hd..(b + 8) * hd];
                            if prefetch > 0 && h == hs.start {
                                prefetch_span(rows, prefetch);
                            }
                            E::dots8(rows, qh, &mut out);
                            let at = r * limit + pos.start + b;
                            for (pi, oi) in p[at..at + 8].iter_mut().zip(out) {
                                *pi = oi * self.scale;
                            }
                        }
                        for j in pos.start + whole..pos.end {
                            let key = &keys[(j - pos.start) * hd..][..hd];
                            p[r * limit + j] = E::dot::<SIMD>(key, qh, false) * self.scale;
                        }
                    }
                    return;
                }
                for j in pos.clone() {
                    let key = &keys[(j - pos.start) * hd..][..hd];
                    if SIMD && prefetch > 0 {
                        prefetch_span(key, prefetch);
                    }
                    for h in hs.clone() {
                        let r = h - h0;
                        let dot = E::dot::<SIMD>(key, &q[r * hd..(r + 1) * hd], order.kq_lanes8);
                        p[r * limit + j] = dot * self.scale;
                    }
                }
            },
        );
        for r in 0..nh {
            let pr = &mut p[r * limit..(r + 1) * limit];
            #[cfg(target_arch = "x86_64")]
            if SIMD {
                // SAFETY: `SIMD` bodies run only inside `run_avx2`, after AVX2, FMA and F16C were
                // detected.
                unsafe { crate::ggml_math::softmax_fma(pr) };
            } else {
                crate::ggml_math::softmax_body(pr);
            }
            #[cfg(not(target_arch = "x86_64"))]
            crate::ggml_math::softmax_body(pr);
            if SIMD && crate::planted::on("simd_softmax_remainder") && limit % 8 != 0 {
                pr[limit - 1] = 0.0;
            }
        }
        // Lane accumulators: lane `j % L` of head `r`'s output element `d` at
        // `acc[(r·L + j % L)·hd + d]`.
        let lanes = if order.kqv_lanes8 { 8 } else { 32 };
        let shifted = crate::planted::on("kv_cache_value_offset");
        // The planted value-offset bug lives in the position-by-position form.
        if SIMD && !shifted && E::has_weighted_lanes(hd) {
            // Each lane's accumulators in registers over its positions (`RowOps::weighted_lanes`),
            // which writes every lane: no zeroing first.
            acc.resize(acc.len().max(nh * lanes * hd), 0.0);
            let kv = h0 / self.group..(heads.end - 1) / self.group + 1;
            let (mut spans, mut next) = (Vec::new(), Vec::new());
            cache.value_spans(kv.start, limit, &mut spans);
            for g in kv.clone() {
                // The next KV head's values, prefetched while the last query head of this one
                // reads its own (`x86_attn::Ahead`).
                next.clear();
                if g + 1 < kv.end {
                    cache.value_spans(g + 1, limit, &mut next);
                }
                let hs = (g * self.group).max(h0)..((g + 1) * self.group).min(heads.end);
                let last = hs.end - 1;
                for h in hs {
                    let r = h - h0;
                    E::weighted_lanes(
                        &spans,
                        &p[r * limit..(r + 1) * limit],
                        lanes,
                        &mut acc[r * lanes * hd..(r + 1) * lanes * hd],
                        prefetch,
                        if h == last { &next } else { &[] },
                    );
                }
                std::mem::swap(&mut spans, &mut next);
            }
        } else {
            // Position by position into zeroed lanes.
            acc.clear();
            acc.resize(nh * lanes * hd, 0.0);
            visit(
                cache.chunk,
                cache.chunk,
                limit,
                heads,
                self.group,
                |pos, g, hs| {
                    let values = cache.rows::<E>(g, pos.start, pos.end, true);
                    for j in pos.clone() {
                        let v = &values[(j - pos.start) * hd..][..hd];
                        if SIMD && prefetch > 0 {
                            prefetch_span(v, prefetch);
                        }
                        let v = if shifted && j > 0 {
                            cache.rows::<E>(g, j - 1, j, true)
                        } else {
                            v
                        };
                        for h in hs.clone() {
                            let r = h - h0;
                            let at = (r * lanes + j % lanes) * hd;
                            let pj = E::operand(p[r * limit + j]);
                            E::axpy::<SIMD>(&mut acc[at..at + hd], v, pj);
                        }
                    }
                },
            );
        }
        for r in 0..nh {
            reduce::<SIMD>(
                &acc[r * lanes * hd..(r + 1) * lanes * hd],
                order.kqv_lanes8,
                &mut o[r * hd..(r + 1) * hd],
            );
        }
    }
}

/// The row operations of one cache element type, portable (`SIMD` false) or from
/// [`crate::kernels::x86_attn`] (`SIMD` true: only inside [`Attend::run_avx2`]).
trait RowOps: KvElem + SimdElem {
    /// Whether [`RowOps::dots8`] takes keys of `hd` values (x86 only).
    #[inline(always)]
    fn has_dots8(hd: usize) -> bool {
        #[cfg(target_arch = "x86_64")]
        return crate::kernels::x86_attn::dots8_fits(hd);
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = hd;
            false
        }
    }

    /// Eight scores in `ggml_vec_dot_f32`'s order (the one-key form's bits): the keys
    /// `keys[i·hd..]` (eight rows) against `q` (`hd` long, [`RowOps::has_dots8`]). Only inside
    /// [`Attend::run_avx2`].
    #[inline(always)]
    fn dots8(keys: &[Self], q: &[Self], out: &mut [f32; 8]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: called only from `SIMD` bodies, which run inside `run_avx2` after AVX2, FMA
        // and F16C were detected; the kernel checks the lengths.
        unsafe {
            crate::kernels::x86_attn::dots8_steps32(keys, q, out)
        };
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!(
            "no eight-key form here: {} {} {:?}",
            keys.len(),
            q.len(),
            out
        );
    }

    /// Whether [`RowOps::weighted_lanes`] takes heads of `hd` values (x86 only).
    #[inline(always)]
    fn has_weighted_lanes(hd: usize) -> bool {
        cfg!(target_arch = "x86_64") && hd % 8 == 0 && hd > 0
    }

    /// One head's lane accumulators with each lane in registers over its positions
    /// ([`crate::kernels::x86_attn::weighted_lanes`]): the bits the position-by-position
    /// [`RowOps::axpy`] into zeroed lanes leaves. Only inside [`Attend::run_avx2`].
    #[inline(always)]
    fn weighted_lanes(
        spans: &[(usize, &[Self])],
        p: &[f32],
        lanes: usize,
        acc: &mut [f32],
        prefetch: usize,
        next: &[(usize, &[Self])],
    ) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `dots8`.
        unsafe {
            crate::kernels::x86_attn::weighted_lanes(spans, p, lanes, acc, prefetch, next)
        };
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!(
            "no lane form here: {} {} {} {lanes} {} {prefetch}",
            spans.len(),
            next.len(),
            p.len(),
            acc.len()
        );
    }

    /// One score's dot product of a key and the query (of this type), in the order `lanes8`
    /// names.
    fn dot<const SIMD: bool>(key: &[Self], q: &[Self], lanes8: bool) -> f32;
    /// `acc[d] = fma(v[d], p, acc[d])`.
    fn axpy<const SIMD: bool>(acc: &mut [f32], v: &[Self], p: f32);
}

impl RowOps for f32 {
    #[inline(always)]
    fn dot<const SIMD: bool>(key: &[f32], q: &[f32], lanes8: bool) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if SIMD {
            use crate::kernels::x86_attn;
            // SAFETY: `SIMD` bodies run only inside `run_avx2`, after AVX2, FMA and F16C were
            // detected.
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

    #[inline(always)]
    fn axpy<const SIMD: bool>(acc: &mut [f32], v: &[f32], p: f32) {
        #[cfg(target_arch = "x86_64")]
        if SIMD {
            // SAFETY: as in `dot`.
            unsafe { crate::kernels::x86_attn::axpy(acc, v, p) };
            return;
        }
        for (a, &x) in acc.iter_mut().zip(v) {
            *a = x.mul_add(p, *a);
        }
    }
}

impl RowOps for u16 {
    #[inline(always)]
    fn dot<const SIMD: bool>(key: &[u16], q: &[u16], lanes8: bool) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if SIMD {
            use crate::kernels::x86_attn;
            // SAFETY: as for f32.
            return unsafe {
                if lanes8 {
                    x86_attn::dot_lanes8_f16(key, q)
                } else {
                    x86_attn::dot_steps32_f16(key, q)
                }
            };
        }
        if lanes8 {
            dot_lanes8_f16(key, q)
        } else {
            dot_steps32_f16(key, q)
        }
    }

    #[inline(always)]
    fn axpy<const SIMD: bool>(acc: &mut [f32], v: &[u16], p: f32) {
        #[cfg(target_arch = "x86_64")]
        if SIMD {
            // SAFETY: as for f32.
            unsafe { crate::kernels::x86_attn::axpy_f16(acc, v, p) };
            return;
        }
        for (a, &x) in acc.iter_mut().zip(v) {
            *a = x.to_f32().mul_add(p, *a);
        }
    }
}

/// Every output element of one head from its lane accumulators.
#[inline(always)]
fn reduce<const SIMD: bool>(acc: &[f32], lanes8: bool, o: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if SIMD {
        // SAFETY: as in `RowOps::dot`.
        unsafe { crate::kernels::x86_attn::reduce_lanes(acc, lanes8, o) };
        return;
    }
    let hd = o.len();
    for (d, od) in o.iter_mut().enumerate() {
        *od = reduce_lane_sums(acc, hd, d, lanes8);
    }
}

/// The chunks' position ranges below `limit`, each cut into runs of `tile` positions from the
/// chunk's start (the last run of a chunk shorter when `tile` does not divide it), and for each
/// run the KV heads `heads` reads with the query heads of each: run by run, and within a run KV
/// head by KV head, which is address order for the keys ([`LayerCache`]'s tiles) with `tile` =
/// [`KEY_TILE`], and for the values with `tile` = the chunk.
fn visit(
    chunk: usize,
    tile: usize,
    limit: usize,
    heads: &Range<usize>,
    group: usize,
    mut f: impl FnMut(Range<usize>, usize, Range<usize>),
) {
    if heads.is_empty() {
        return;
    }
    let tile = tile.clamp(1, chunk.max(1));
    let kv = heads.start / group..(heads.end - 1) / group + 1;
    for c in 0..limit.div_ceil(chunk) {
        let end = ((c + 1) * chunk).min(limit);
        let mut start = c * chunk;
        while start < end {
            let positions = start..(start + tile).min(end);
            for g in kv.clone() {
                let hs = (g * group).max(heads.start)..((g + 1) * group).min(heads.end);
                f(positions.clone(), g, hs);
            }
            start = positions.end;
        }
    }
}

/// Prefetch the cache lines `ahead` bytes past each line of `row` (a hint: never faults, whatever
/// the address, and changes no result). A chunk's rows lie back to back, so this keeps a fixed
/// distance ahead along the stream of keys or values.
#[inline(always)]
fn prefetch_span<E>(row: &[E], ahead: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let p = (row.as_ptr() as *const u8).wrapping_add(ahead);
        for i in (0..std::mem::size_of_val(row)).step_by(64) {
            crate::kernels::x86::prefetch_line(p.wrapping_add(i) as *const f32);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (row, ahead);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ggml_math::{dot_lanes8, dot_steps32, softmax};
    use proptest::prelude::*;

    /// ggml's computation spelled out on its own shapes, for one query head: the scores row and
    /// the value columns padded to a multiple of 256 positions (zero keys and values, scores
    /// masked to −∞), each product one dot over the whole padded length. Over an F16 cache
    /// (`ty`) the keys, values and query are rounded to halves first and the probabilities
    /// before the values' product, whose dots are `ggml_vec_dot_f16`'s or tinyBLAS's on halves.
    fn reference(
        ty: KvType,
        q: &[f32],
        ks: &[Vec<f32>],
        vs: &[Vec<f32>],
        limit: usize,
        scale: f32,
        order: AttnOrder,
    ) -> (Vec<f32>, Vec<f32>) {
        use crate::ggml_math::{dot_lanes8_f16, dot_steps32_f16};
        use crate::quant::f32_to_f16;
        let half = |x: &[f32]| -> Vec<u16> { x.iter().map(|&v| f32_to_f16(v)).collect() };
        let dot = |x: &[f32], y: &[f32], lanes8: bool| -> f32 {
            match (ty, lanes8) {
                (KvType::F32, true) => dot_lanes8(x, y),
                (KvType::F32, false) => dot_steps32(x, y),
                (KvType::F16, true) => dot_lanes8_f16(&half(x), &half(y)),
                (KvType::F16, false) => dot_steps32_f16(&half(x), &half(y)),
            }
        };
        let n_kv = ks.len().div_ceil(256) * 256;
        let hd = q.len();
        let zero = vec![0f32; hd];
        let mut p: Vec<f32> = (0..n_kv)
            .map(|j| {
                let k = ks.get(j).unwrap_or(&zero);
                let masked = if j < limit { 0.0 } else { f32::NEG_INFINITY };
                dot(k, q, order.kq_lanes8) * scale + masked
            })
            .collect();
        softmax(Kernel::Scalar, &mut p);
        let o = (0..hd)
            .map(|d| {
                let col: Vec<f32> = (0..n_kv).map(|j| vs.get(j).map_or(0.0, |v| v[d])).collect();
                dot(&col, &p, order.kqv_lanes8)
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
        /// with several KV heads shared by groups of query heads and caches past a chunk. Head
        /// sizes include the SIMD block forms' (eight keys a call for whole steps of 32 up to
        /// 128; lanes in registers for multiples of 8, in blocks of 12, 8, 4, 2 and 1 vectors).
        #[test]
        fn attend_equals_ggml_on_padded_rows(
            seed in any::<u64>(), n in 1usize..150,
            hd in prop_oneof![1usize..70, prop::sample::select(vec![32usize, 64, 96, 128, 136, 160, 200])],
            limit_back in 0usize..5,
            n_kv in 1usize..4, group in 1usize..4, first in 0usize..12, count in 1usize..12,
            chunk in 1usize..80, kq8 in any::<bool>(), kqv8 in any::<bool>(),
            prefetch in prop::sample::select(vec![0usize, 64, 2048]),
            ty in prop::sample::select(KvType::ALL.to_vec()),
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
            let mut c = LayerCache::with_chunk_positions_typed(n_kv, hd, chunk, ty);
            for (k, v) in ks.iter().zip(&vs) {
                c.push(k, v);
            }
            // What the cache holds, exactly: the values, or the values rounded to halves.
            let stored = |x: &[f32]| -> Vec<f32> {
                x.iter().map(|&v| if ty == KvType::F16 { u16::operand(v) } else { v }).collect()
            };
            prop_assert_eq!(c.key(n_kv - 1, n - 1), stored(&ks[n - 1][(n_kv - 1) * hd..]));
            prop_assert_eq!(c.value(0, n - 1), stored(&vs[n - 1][..hd]));
            let limit = n.saturating_sub(limit_back).max(1);
            let order = AttnOrder { kq_lanes8: kq8, kqv_lanes8: kqv8 };
            // Scratch left over from other calls (NaN) must change nothing.
            let mut acc = vec![f32::NAN; 12 * 32 * 200];
            for k in Kernel::available() {
                let (mut p, mut o) = (vec![0f32; heads.len() * limit], vec![0f32; heads.len() * hd]);
                attend(k, &q, &c, heads.clone(), group, limit, 0.125, order, prefetch, &mut p, &mut o, &mut acc);
                for (r, h) in heads.clone().enumerate() {
                    let g = h / group;
                    let head = |rows: &[Vec<f32>]| -> Vec<Vec<f32>> {
                        rows.iter().map(|row| row[g * hd..(g + 1) * hd].to_vec()).collect()
                    };
                    let (wp, wo) = reference(ty, &q[r * hd..(r + 1) * hd], &head(&ks), &head(&vs), limit, 0.125, order);
                    prop_assert_eq!(bits(&p[r * limit..(r + 1) * limit]), bits(&wp), "{:?} {:?} head {}", ty, k, h);
                    prop_assert_eq!(bits(&o[r * hd..(r + 1) * hd]), bits(&wo), "{:?} {:?} head {}", ty, k, h);
                }
            }
        }
    }

    #[test]
    fn caches_in_huge_pages_and_on_reused_chunks_attend_as_in_small_pages() {
        // Chunks of 2 MiB (16 KV heads of 64 F32 values: 256 positions), so the huge-page path
        // takes them; 300 positions span two. Then the huge cache is dropped and a new one takes
        // its chunks from the pool, old bytes and all, and holds fewer, other positions.
        let (n_kv, hd) = (16usize, 64usize);
        let mut s = 7u64;
        let mut f = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        let order = AttnOrder {
            kq_lanes8: false,
            kqv_lanes8: false,
        };
        let fill = |n: usize, huge: bool, f: &mut dyn FnMut() -> f32| {
            let rows: Vec<(Vec<f32>, Vec<f32>)> = (0..n)
                .map(|_| {
                    let k: Vec<f32> = (0..n_kv * hd).map(|_| f()).collect();
                    let v: Vec<f32> = (0..n_kv * hd).map(|_| f()).collect();
                    (k, v)
                })
                .collect();
            let mut small = LayerCache::new(n_kv, hd).with_huge_pages(false);
            let mut big = LayerCache::new(n_kv, hd).with_huge_pages(huge);
            for (k, v) in &rows {
                small.push(k, v);
                big.push(k, v);
            }
            (small, big)
        };
        let q: Vec<f32> = (0..n_kv * hd).map(|_| f()).collect();
        let run = |c: &LayerCache, k: Kernel| {
            let limit = c.len();
            let (mut p, mut o) = (vec![0f32; n_kv * limit], vec![0f32; n_kv * hd]);
            let mut acc = Vec::new();
            attend(
                k,
                &q,
                c,
                0..n_kv,
                1,
                limit,
                0.125,
                order,
                0,
                &mut p,
                &mut o,
                &mut acc,
            );
            (bits(&p), bits(&o))
        };
        let (small, big) = fill(300, true, &mut f);
        assert_eq!(big.chunk_count(), 2);
        for k in Kernel::available() {
            assert_eq!(run(&big, k), run(&small, k), "{k:?}, 300 positions");
        }
        let before = pages::pooled_bytes();
        drop(big);
        assert_eq!(
            pages::pooled_bytes(),
            before + 2 * CHUNK_BYTES,
            "both chunks pooled"
        );
        let (small, reused) = fill(100, true, &mut f);
        assert_eq!(
            pages::pooled_bytes(),
            before + CHUNK_BYTES,
            "one chunk taken back"
        );
        assert_eq!(reused.key(3, 99), small.key(3, 99));
        for k in Kernel::available() {
            assert_eq!(
                run(&reused, k),
                run(&small, k),
                "{k:?}, 100 positions on reused chunks"
            );
        }
    }

    #[test]
    fn reserved_chunks_fill_in_order_and_change_no_result() {
        // Chunks of 4 positions, 2 KV heads of 8 (the SIMD forms' sizes); the same rows into a
        // cache reserved ahead (for fewer, as many and more positions than pushed, before and
        // part way through the pushes) and into a plain one.
        let (n_kv, hd) = (2usize, 8usize);
        let mut s = 99u64;
        let mut f = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        let rows: Vec<(Vec<f32>, Vec<f32>)> = (0..13)
            .map(|_| {
                let k: Vec<f32> = (0..n_kv * hd).map(|_| f()).collect();
                let v: Vec<f32> = (0..n_kv * hd).map(|_| f()).collect();
                (k, v)
            })
            .collect();
        let q: Vec<f32> = (0..n_kv * hd).map(|_| f()).collect();
        let order = AttnOrder::for_pass(1, n_kv, hd);
        let run = |c: &LayerCache, k: Kernel, limit: usize| {
            let (mut p, mut o, mut acc) = (vec![0f32; n_kv * limit], vec![0f32; n_kv * hd], vec![]);
            attend(
                k,
                &q,
                c,
                0..n_kv,
                1,
                limit,
                0.25,
                order,
                0,
                &mut p,
                &mut o,
                &mut acc,
            );
            (bits(&p), bits(&o))
        };
        for ty in KvType::ALL {
            let mut plain = LayerCache::with_chunk_positions_typed(n_kv, hd, 4, ty);
            for (k, v) in &rows[..9] {
                plain.push(k, v);
            }
            for (ahead, at) in [(6usize, 0usize), (9, 0), (12, 0), (40, 0), (12, 5)] {
                let mut c = LayerCache::with_chunk_positions_typed(n_kv, hd, 4, ty);
                for (i, (k, v)) in rows[..9].iter().enumerate() {
                    if i == at {
                        c.reserve(ahead);
                    }
                    c.push(k, v);
                }
                // Reserved chunks, then grown ones: ceil(max(reserved, 9) / 4).
                assert_eq!(
                    c.chunk_count(),
                    ahead.max(9).div_ceil(4),
                    "{ty:?} {ahead} at {at}"
                );
                assert_eq!(c.len(), 9);
                assert_eq!(c.value(1, 8), plain.value(1, 8));
                for k in Kernel::available() {
                    assert_eq!(
                        run(&c, k, 9),
                        run(&plain, k, 9),
                        "{ty:?} {k:?} {ahead} at {at}"
                    );
                }
                // On past the reservation.
                let mut more = plain.clone();
                for (k, v) in &rows[9..] {
                    c.push(k, v);
                    more.push(k, v);
                }
                assert_eq!(c.chunk_count(), ahead.max(13).div_ceil(4));
                for k in Kernel::available() {
                    assert_eq!(
                        run(&c, k, 13),
                        run(&more, k, 13),
                        "{ty:?} {k:?} {ahead}, 13"
                    );
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
        assert_eq!(c.chunk_count(), 2);
        let chunk = &f32::chunks(&c.chunks)[1];
        let row = |at: usize| &chunk[at * 3..at * 3 + 3];
        // Keys: head 0's 4 rows, then head 1's; the values after both heads' keys.
        assert_eq!(row(1), &[5.0; 3]);
        assert_eq!(row(4 + 1), &[5.5; 3]);
        assert_eq!(row(8 + 1), &[-5.0; 3]);
        assert_eq!(row(12 + 1), &[9.0, 9.0, 5.0]);
        assert_eq!(c.key(1, 5), &[5.5; 3]);
        assert_eq!(c.value(1, 5), &[9.0, 9.0, 5.0]);
        assert_eq!(c.key(0, 3), &[3.0; 3]);
        assert_eq!(
            c.rows::<f32>(0, 4, 6, true),
            &[-4.0, -4.0, -4.0, -5.0, -5.0, -5.0]
        );
    }

    #[test]
    fn keys_lie_tile_by_tile_and_values_head_by_head() {
        // Hand-worked rows: 2 KV heads of 1 value, one chunk of 40 positions: the keys' first
        // tile holds positions 0..32 of head 0 (rows 0..32), then of head 1 (rows 32..64); the
        // last tile, 8 positions, head 0's (rows 64..72) then head 1's (72..80); the values head
        // by head after them (head 0 at rows 80..120, head 1 at 120..160).
        assert_eq!(KEY_TILE, 32);
        let mut c = LayerCache::with_chunk_positions(2, 1, 40);
        for pos in 0..40 {
            let x = pos as f32;
            c.push(&[x, 100.0 + x], &[-x, -100.0 - x]);
        }
        let chunk = &f32::chunks(&c.chunks)[0];
        assert_eq!(chunk.len(), 160);
        for pos in 0..40 {
            let x = pos as f32;
            let (k0, k1) = if pos < 32 {
                (pos, 32 + pos)
            } else {
                (64 + pos - 32, 72 + pos - 32)
            };
            assert_eq!((chunk[k0], chunk[k1]), (x, 100.0 + x), "keys at {pos}");
            assert_eq!((chunk[80 + pos], chunk[120 + pos]), (-x, -100.0 - x));
            assert_eq!(c.key(1, pos), &[100.0 + x]);
        }
        // A tile's run of one head is one slice.
        assert_eq!(c.rows::<f32>(1, 33, 36, false), &[133.0, 134.0, 135.0]);
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
        assert_eq!(f32::chunks(&c.chunks)[0].len(), 4 * CHUNK_BYTES / 16);
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
            assert_eq!(c.chunk_count(), (keep + 1).div_ceil(C));
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
        // tinyBLAS declines rows not divisible by 4 (the outputs' rows are the head size); its
        // AVX2 form takes any length, padding a ragged one with zeros (the scores' length is the
        // head size).
        assert_eq!(
            AttnOrder::for_pass(5, 1, 66),
            AttnOrder {
                kq_lanes8: true,
                kqv_lanes8: false
            }
        );
        // Over an F16 cache the query is converted into a contiguous buffer first, so tinyBLAS
        // takes the scores with any number of heads; decode stays with `ggml_vec_dot_f16`.
        assert_eq!(
            AttnOrder::for_cache(KvType::F16, 5, 8, 66),
            AttnOrder {
                kq_lanes8: true,
                kqv_lanes8: false
            }
        );
        assert_eq!(
            AttnOrder::for_cache(KvType::F16, 1, 8, 64),
            AttnOrder {
                kq_lanes8: false,
                kqv_lanes8: false
            }
        );
    }
}
