//! The KV cache's chunk storage: anonymous memory in small pages, or in huge pages kept in a
//! process-wide pool for reuse ([`KvChunk`]), as [`KV_PAGES_VAR`] or the kernel plan says.

use super::CHUNK_BYTES;

/// One chunk's storage: `len` elements of anonymous memory, zeroed when new. In huge pages (a
/// plan's `kv huge`, or `BITNET_KV_PAGES=huge` where no plan says), a chunk of at least half of
/// [`CHUNK_BYTES`] is mapped as whole 2 MiB runs advised for huge pages, and its mapping goes
/// back to a process-wide pool when the chunk is dropped, for the next cache's chunks (each huge page is faulted in once per process: with
/// the kernel's compaction that cost about 4 ms per page on Zen 4). A chunk from the pool holds
/// the old cache's bytes: a cache reads only the positions it has written.
pub(super) struct KvChunk<E> {
    map: Option<memmap2::MmapMut>,
    pub(super) len: usize,
    _elem: std::marker::PhantomData<E>,
}

/// The environment variable choosing the KV cache's pages: `small` (the default) or `huge`.
pub const KV_PAGES_VAR: &str = "BITNET_KV_PAGES";

/// A [`KV_PAGES_VAR`] value: `Some(true)` for `huge`, `Some(false)` for `small` or empty, `None`
/// for anything else ([`crate::model::Model::load`] refuses it, naming the variable).
pub fn parse_kv_pages(s: &str) -> Option<bool> {
    match s.trim() {
        "huge" => Some(true),
        "" | "small" => Some(false),
        _ => None,
    }
}

/// Whether chunks of at least half of [`CHUNK_BYTES`] take huge pages ([`KV_PAGES_VAR`]); read
/// once per process.
pub(super) fn kv_huge_pages() -> bool {
    static HUGE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HUGE
        .get_or_init(|| std::env::var(KV_PAGES_VAR).is_ok_and(|v| parse_kv_pages(&v) == Some(true)))
}

/// Mappings of dropped huge-page chunks, for reuse (at most [`POOL_MAX_BYTES`] in all).
static POOL: std::sync::Mutex<Vec<memmap2::MmapMut>> = std::sync::Mutex::new(Vec::new());
/// The most bytes of dropped chunks [`POOL`] keeps.
const POOL_MAX_BYTES: usize = 1 << 30;

/// Bytes of dropped chunks waiting in [`POOL`].
#[cfg(test)]
pub(super) fn pooled_bytes() -> usize {
    let pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    pool.iter().map(|m| m.len()).sum()
}

impl<E: bytemuck::Pod> KvChunk<E> {
    /// `len` elements, in huge pages when `huge` and they fill at least half of
    /// [`CHUNK_BYTES`].
    pub(super) fn new(len: usize, huge: bool) -> KvChunk<E> {
        let bytes = len * std::mem::size_of::<E>();
        let huge = huge && 2 * bytes >= CHUNK_BYTES;
        let mapped = if huge {
            bytes.next_multiple_of(CHUNK_BYTES)
        } else {
            bytes.max(1)
        };
        let pooled = if huge {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            pool.iter()
                .position(|m| m.len() == mapped)
                .map(|i| pool.swap_remove(i))
        } else {
            None
        };
        let map = pooled.unwrap_or_else(|| {
            // Mapping fails only when the memory is not there, as a vector's allocation would.
            let map = memmap2::MmapMut::map_anon(mapped)
                .unwrap_or_else(|e| panic!("cannot map {mapped} bytes for the KV cache: {e}"));
            if huge {
                // Advice only.
                let _ = map.advise(memmap2::Advice::HugePage);
            }
            map
        });
        KvChunk {
            map: Some(map),
            len,
            _elem: std::marker::PhantomData,
        }
    }

    /// Fault in every page of the mapping now (one write a 4 KiB page, of the byte already
    /// there): the kernel maps and zeroes each page here rather than at its first use.
    pub(super) fn touch(&mut self) {
        if let Some(m) = self.map.as_mut() {
            for i in (0..m.len()).step_by(4096) {
                // The byte's own value, opaque to the compiler, so the store stays.
                m[i] = std::hint::black_box(m[i]);
            }
        }
    }

    fn bytes(&self) -> &[u8] {
        let n = self.len * std::mem::size_of::<E>();
        self.map.as_ref().map_or(&[], |m| &m[..n])
    }
}

impl<E> Drop for KvChunk<E> {
    fn drop(&mut self) {
        let Some(map) = self.map.take() else {
            return;
        };
        // Only huge-page chunks are whole multiples of 2 MiB (see `new`).
        if map.len() % CHUNK_BYTES == 0 {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            if pool.iter().map(|m| m.len()).sum::<usize>() + map.len() <= POOL_MAX_BYTES {
                pool.push(map);
            }
        }
    }
}

impl<E: bytemuck::Pod> std::ops::Deref for KvChunk<E> {
    type Target = [E];
    fn deref(&self) -> &[E] {
        bytemuck::cast_slice(self.bytes())
    }
}

impl<E: bytemuck::Pod> std::ops::DerefMut for KvChunk<E> {
    fn deref_mut(&mut self) -> &mut [E] {
        let n = self.len * std::mem::size_of::<E>();
        match self.map.as_mut() {
            Some(m) => bytemuck::cast_slice_mut(&mut m[..n]),
            None => &mut [],
        }
    }
}

impl<E: bytemuck::Pod> KvChunk<E> {
    /// A copy of this chunk's elements, in huge pages when `huge` (as [`KvChunk::new`]).
    pub(super) fn copy_with(&self, huge: bool) -> KvChunk<E> {
        let mut c = KvChunk::new(self.len, huge);
        c.copy_from_slice(self);
        c
    }
}

impl<E: bytemuck::Pod> Clone for KvChunk<E> {
    fn clone(&self) -> KvChunk<E> {
        // Only huge-page chunks are whole multiples of 2 MiB (see `new`).
        let huge = self
            .map
            .as_ref()
            .is_some_and(|m| m.len() % CHUNK_BYTES == 0);
        self.copy_with(huge)
    }
}

impl<E> std::fmt::Debug for KvChunk<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KvChunk({} elements)", self.len)
    }
}
