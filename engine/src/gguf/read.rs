//! The GGUF reader: header, metadata, tensor infos, then the memory-mapped data section.
//!
//! Every count and length read from the header is checked against the bytes that remain before
//! anything is allocated from it, so a hostile header cannot make the reader allocate more than
//! the file's own size.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::error::GgufError;
use super::types::GgmlType;
use super::value::{type_id, Array, Value};

/// Deepest array nesting accepted in metadata.
pub const MAX_NESTING: usize = 8;
/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Longest tensor name ggml accepts (`GGML_MAX_NAME` is 64 with the terminating NUL).
pub const MAX_NAME: usize = 63;
/// Alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// One tensor's header entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the row length (fastest-varying).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the data relative to the data section.
    pub offset: u64,
    /// Bytes of data.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Number of rows (`n_elements / dims[0]`).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

enum Backing {
    Mmap(memmap2::Mmap),
    /// A copy in anonymous memory; `true` when the huge-page advice was taken.
    Anon(memmap2::Mmap, bool),
    Bytes(Vec<u8>),
}

/// The kernel's transparent-huge-page mode (`always`, `madvise`, `never`), `unknown` when
/// `/sys/kernel/mm/transparent_hugepage/enabled` cannot be read.
pub fn thp_mode() -> String {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .ok()
        .and_then(|s| {
            let (_, rest) = s.split_once('[')?;
            Some(rest.split_once(']')?.0.to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) | Backing::Anon(m, _) => m,
            Backing::Bytes(b) => b,
        }
    }
}

/// An open GGUF file: parsed header and metadata, tensor data mapped from the file.
pub struct GgufFile {
    name: String,
    backing: Backing,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Open and validate `path`; tensor data stays memory-mapped.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_owned(),
            source,
        };
        let file = crate::files::open_regular(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let backing = if len == 0 {
            Backing::Bytes(Vec::new())
        } else {
            // SAFETY: the map is read-only; a file changed by another process while mapped is the
            // documented hazard of memory-mapped model files (llama.cpp maps them the same way).
            Backing::Mmap(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?)
        };
        Self::parse(backing, path.display().to_string())
    }

    /// Open and validate `path`, then hold its bytes in anonymous memory advised for transparent
    /// huge pages (2 MiB) instead of the file's 4 KiB page-cache pages. A decode step streams
    /// every weight once: with 4 KiB pages that is one TLB miss per 4 KiB and a hardware
    /// prefetcher that stops at each page's end (the 700M decode ran 14% faster from huge pages
    /// on the machine the README names). The copy costs the file's size in memory and one read
    /// of it; where the kernel grants no huge pages (THP `never`) the bytes still come from the
    /// copy, in small pages. [`GgufFile::pages`] says which.
    pub fn open_huge_pages(path: &Path) -> Result<GgufFile, GgufError> {
        let mut f = Self::open(path)?;
        if let Backing::Mmap(m) = &f.backing {
            let io = |source| GgufError::Io {
                path: path.to_owned(),
                source,
            };
            let mut a = memmap2::MmapMut::map_anon(m.len()).map_err(io)?;
            // Advice only: refused (no THP in this kernel), the copy is in small pages.
            let advised = a.advise(memmap2::Advice::HugePage).is_ok();
            a.copy_from_slice(m);
            f.backing = Backing::Anon(a.make_read_only().map_err(io)?, advised);
        }
        Ok(f)
    }

    /// Whether the tensor data is a copy advised for transparent huge pages (the kernel's THP
    /// mode decides whether it gets them): buffers meant to be read like the weights are
    /// advised the same way.
    pub fn huge_pages_advised(&self) -> bool {
        matches!(self.backing, Backing::Anon(_, true))
    }

    /// Where the tensor data lives: `file map` (the file's pages), `huge pages (THP <mode>)`
    /// (a copy advised for transparent huge pages, with the kernel's THP mode, which decides
    /// whether it gets them), `small pages` (a copy the kernel refused the advice for) or
    /// `memory` (parsed from bytes).
    pub fn pages(&self) -> String {
        match &self.backing {
            Backing::Mmap(_) => "file map".into(),
            Backing::Anon(_, true) => format!("huge pages (THP {})", thp_mode()),
            Backing::Anon(_, false) => "small pages".into(),
            Backing::Bytes(_) => "memory".into(),
        }
    }

    /// Parse an in-memory file (tests, fuzzing). `name` appears in errors.
    pub fn from_bytes(bytes: Vec<u8>, name: &str) -> Result<GgufFile, GgufError> {
        Self::parse(Backing::Bytes(bytes), name.to_string())
    }

    fn parse(backing: Backing, name: String) -> Result<GgufFile, GgufError> {
        let h = parse_header(backing.bytes(), &name)?;
        Ok(GgufFile {
            name,
            backing,
            version: h.version,
            alignment: h.alignment,
            data_offset: h.data_offset,
            key_index: h
                .metadata
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i))
                .collect(),
            metadata: h.metadata,
            tensor_index: h
                .tensors
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect(),
            tensors: h.tensors,
        })
    }

    /// The name used in errors (the path, for opened files).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte offset of the data section in the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// File size in bytes.
    pub fn len(&self) -> u64 {
        self.backing.bytes().len() as u64
    }

    /// Whether the file is empty (never true for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.backing.bytes().is_empty()
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// A tensor info by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor's bytes (validated in bounds when the file was parsed).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + t.offset) as usize;
        &self.backing.bytes()[start..start + t.n_bytes as usize]
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }
}

struct Header {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    file: &'a str,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.b.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                file: self.file.into(),
                offset: self.pos as u64,
                what: what(),
                needed: n,
                available: self.remaining(),
            });
        }
        let s = &self.b[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let at = self.pos as u64;
        let len = self.u64(what)?;
        if len > self.remaining() {
            return Err(GgufError::StringLength {
                file: self.file.into(),
                what: what(),
                len,
                offset: at,
                remaining: self.remaining(),
            });
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::Utf8 {
            file: self.file.into(),
            what: what(),
            offset: at,
        })
    }

    /// Check that `count` items of at least `min_size` bytes each can still follow.
    fn check_count(
        &self,
        what: &'static str,
        count: u64,
        min_size: u64,
        at: u64,
    ) -> Result<(), GgufError> {
        let max = self.remaining() / min_size.max(1);
        if count > max {
            return Err(GgufError::Count {
                file: self.file.into(),
                what,
                count,
                offset: at,
                max,
                remaining: self.remaining(),
            });
        }
        Ok(())
    }

    fn value(&mut self, key: &str, ty: u32, depth: usize, at: u64) -> Result<Value, GgufError> {
        use type_id::*;
        let w = || format!("the value of key `{key}`");
        Ok(match ty {
            U8 => Value::U8(self.take(1, &w)?[0]),
            I8 => Value::I8(self.take(1, &w)?[0] as i8),
            U16 => Value::U16(u16::from_le_bytes(self.take(2, &w)?.try_into().expect("2"))),
            I16 => Value::I16(i16::from_le_bytes(self.take(2, &w)?.try_into().expect("2"))),
            U32 => Value::U32(self.u32(&w)?),
            I32 => Value::I32(self.u32(&w)? as i32),
            F32 => Value::F32(f32::from_bits(self.u32(&w)?)),
            // As ggml's gguf.cpp and gguf-py: one byte, any nonzero value is true.
            BOOL => Value::Bool(self.take(1, &w)?[0] != 0),
            STRING => Value::String(self.string(&w)?),
            U64 => Value::U64(self.u64(&w)?),
            I64 => Value::I64(self.u64(&w)? as i64),
            F64 => Value::F64(f64::from_bits(self.u64(&w)?)),
            ARRAY => {
                if depth >= MAX_NESTING {
                    return Err(GgufError::Nesting {
                        file: self.file.into(),
                        key: key.into(),
                        offset: at,
                        max: MAX_NESTING,
                    });
                }
                let elem_at = self.pos as u64;
                let elem = self.u32(&w)?;
                let min = min_value_size(elem).ok_or_else(|| GgufError::ValueType {
                    file: self.file.into(),
                    key: format!("{key} (array element)"),
                    type_id: elem,
                    offset: elem_at,
                })?;
                let count_at = self.pos as u64;
                let count = self.u64(&w)?;
                self.check_count("array element", count, min, count_at)?;
                let mut values = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    values.push(self.value(key, elem, depth + 1, at)?);
                }
                Value::Array(Array::new(elem, values))
            }
            other => {
                return Err(GgufError::ValueType {
                    file: self.file.into(),
                    key: key.into(),
                    type_id: other,
                    offset: at,
                })
            }
        })
    }
}

/// Smallest encoding of a value of type `ty`, `None` for an unknown type.
fn min_value_size(ty: u32) -> Option<u64> {
    use type_id::*;
    Some(match ty {
        U8 | I8 | BOOL => 1,
        U16 | I16 => 2,
        U32 | I32 | F32 => 4,
        U64 | I64 | F64 | STRING => 8,
        ARRAY => 12,
        _ => return None,
    })
}

fn parse_header(b: &[u8], file: &str) -> Result<Header, GgufError> {
    let mut c = Cursor { b, pos: 0, file };
    let magic = c.take(4, &|| "the magic `GGUF`".into())?;
    if magic != b"GGUF" {
        return Err(GgufError::BadMagic {
            file: file.into(),
            found: String::from_utf8_lossy(magic).into_owned(),
        });
    }
    let version = c.u32(&|| "the version".into())?;
    if version != 2 && version != 3 {
        return Err(GgufError::Version {
            file: file.into(),
            version,
        });
    }
    let n_tensors_at = c.pos as u64;
    let n_tensors = c.u64(&|| "the tensor count".into())?;
    let n_kv_at = c.pos as u64;
    let n_kv = c.u64(&|| "the metadata count".into())?;
    // A key-value pair is at least 8 (key length) + 1 (key) + 4 (type) + 1 bytes.
    c.check_count("metadata key-value", n_kv, 14, n_kv_at)?;

    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut seen = HashSet::new();
    for i in 0..n_kv {
        let at = c.pos as u64;
        let key = c.string(&|| format!("the key of metadata entry {i}"))?;
        if key.is_empty() {
            return Err(GgufError::EmptyKey {
                file: file.into(),
                offset: at,
            });
        }
        if !seen.insert(key.clone()) {
            return Err(GgufError::DuplicateKey {
                file: file.into(),
                key,
                offset: at,
            });
        }
        let ty_at = c.pos as u64;
        let ty = c.u32(&|| format!("the value type of key `{key}`"))?;
        let value = c.value(&key, ty, 0, ty_at)?;
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        // A power of two of at least 8, as ggml's loader needs (1 passes gguf's check, then
        // llama.cpp aborts on an assert).
        Some((_, Value::U32(a))) if *a >= 8 && a.is_power_of_two() => *a as u64,
        Some((_, v)) => {
            return Err(GgufError::Alignment {
                file: file.into(),
                found: format!("{} {}", v.type_name(), v.display_short()),
            })
        }
    };

    // A tensor info is at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
    c.check_count("tensor", n_tensors, 24, n_tensors_at)?;
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names = HashSet::new();
    for i in 0..n_tensors {
        let name = c.string(&|| format!("the name of tensor {i}"))?;
        let terr = |what: String| GgufError::Tensor {
            file: file.into(),
            tensor: name.clone(),
            what,
        };
        if name.len() > MAX_NAME {
            return Err(terr(format!(
                "name is {} bytes long, ggml allows at most {MAX_NAME}",
                name.len()
            )));
        }
        if name.contains('\0') {
            return Err(terr(
                "name holds a NUL byte (ggml names are C strings)".into(),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor {
                file: file.into(),
                tensor: name,
                index: i,
            });
        }
        let n_dims = c.u32(&|| format!("the dimension count of tensor `{name}`"))?;
        if n_dims > MAX_DIMS {
            return Err(terr(format!(
                "has {n_dims} dimensions, at most {MAX_DIMS} are allowed"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            let v = c.u64(&|| format!("dimension {d} of tensor `{name}`"))?;
            if v > i64::MAX as u64 {
                return Err(terr(format!("dimension {d} is {v}, beyond int64")));
            }
            dims.push(v);
        }
        let type_at = c.pos as u64;
        let type_id = c.u32(&|| format!("the type of tensor `{name}`"))?;
        let offset = c.u64(&|| format!("the data offset of tensor `{name}`"))?;
        let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownType {
            file: file.into(),
            tensor: name.clone(),
            type_id,
        })?;
        let _ = type_at;
        let n_elements = dims
            .iter()
            .try_fold(1u64, |a, &d| {
                a.checked_mul(d).filter(|&n| n <= i64::MAX as u64)
            })
            .ok_or_else(|| terr(format!("shape {dims:?} has more elements than int64 holds")))?;
        let row = dims.first().copied().unwrap_or(1);
        if row % ty.block_size() as u64 != 0 {
            return Err(terr(format!(
                "row length {row} is not a multiple of {}'s block size {}",
                ty.name(),
                ty.block_size()
            )));
        }
        let n_bytes = ty.data_bytes(row, n_elements).ok_or_else(|| {
            terr(format!(
                "shape {dims:?} of type {ty} overflows its byte size"
            ))
        })?;
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
            n_bytes,
        });
    }

    let header_end = c.pos as u64;
    let data_offset = header_end.div_ceil(alignment) * alignment;
    let file_len = b.len() as u64;
    if !tensors.is_empty() && data_offset > file_len {
        return Err(GgufError::Truncated {
            file: file.into(),
            offset: header_end,
            what: "the padding before the data section".into(),
            needed: data_offset - header_end,
            available: file_len - header_end,
        });
    }

    // Data: aligned, inside the file, no overlaps.
    let mut spans: Vec<(u64, u64, usize)> = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        if t.offset % alignment != 0 {
            return Err(GgufError::Misaligned {
                file: file.into(),
                tensor: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match (start, end) {
            (Some(s), Some(e)) if e <= file_len => spans.push((s, e, i)),
            _ => {
                return Err(GgufError::DataPastEnd {
                    file: file.into(),
                    tensor: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                })
            }
        }
    }
    spans.sort();
    for w in spans.windows(2) {
        let ((_, e0, i0), (s1, e1, i1)) = (w[0], w[1]);
        if s1 < e0 && s1 < e1 {
            return Err(GgufError::Overlap {
                file: file.into(),
                tensor: tensors[i1].name.clone(),
                other: tensors[i0].name.clone(),
                start: s1,
                end: e1,
            });
        }
    }

    // And each tensor's right after the previous one's, padded to the alignment: gguf's loader
    // refuses gaps and reordering.
    let mut expected = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        if t.offset != expected {
            // The mismatch is as often the previous tensor's size (a wrong dimension or type)
            // as this one's offset: name both.
            let before = match i.checked_sub(1).map(|j| &tensors[j]) {
                Some(p) => format!(
                    "the previous tensor, `{}` ({:?} of {:?}, {} bytes at offset {}), ends there",
                    p.name, p.dims, p.ty, p.n_bytes, p.offset
                ),
                None => "the first tensor's data starts there".into(),
            };
            return Err(GgufError::Tensor {
                file: file.into(),
                tensor: t.name.clone(),
                what: format!(
                    "data at offset {}, expected {expected}: {before}; each tensor's data must follow the previous one's, padded to the alignment {alignment}",
                    t.offset
                ),
            });
        }
        expected = t
            .n_bytes
            .div_ceil(alignment)
            .checked_mul(alignment)
            .and_then(|n| n.checked_add(expected))
            .unwrap_or(u64::MAX);
    }

    Ok(Header {
        version,
        alignment,
        data_offset,
        metadata,
        tensors,
    })
}
