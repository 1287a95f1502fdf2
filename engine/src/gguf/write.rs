//! The GGUF v3 writer: metadata and tensor infos first, then each tensor's data, produced one at
//! a time so a large model is written in bounded memory. Layout as ggml's `gguf.cpp` expects:
//! tensors in order, each offset the running size of the data section, each padded to the
//! alignment, the data section itself aligned. The file appears atomically (temp file + rename).

use std::io::{BufWriter, Write};
use std::path::Path;

use super::error::GgufError;
use super::read::{DEFAULT_ALIGNMENT, MAX_DIMS, MAX_NAME};
use super::types::GgmlType;
use super::value::{type_id, Value};

type Producer = Box<dyn FnOnce() -> Vec<u8> + Send>;

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    n_bytes: u64,
    data: Producer,
}

/// Builds a GGUF v3 file.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Add (or replace) a metadata entry; file order is insertion order.
    pub fn add_kv(&mut self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    /// Remove a metadata entry; whether it was there.
    pub fn remove_kv(&mut self, key: &str) -> bool {
        let before = self.metadata.len();
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.len() != before
    }

    /// Remove a tensor; whether it was there.
    pub fn remove_tensor(&mut self, name: &str) -> bool {
        let before = self.tensors.len();
        self.tensors.retain(|t| t.name != name);
        self.tensors.len() != before
    }

    /// Add a tensor whose bytes are already encoded in `ty`'s layout.
    pub fn add_tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) {
        self.add_tensor_lazy(name, dims, ty, Box::new(move || data));
    }

    /// Add a tensor whose bytes are produced when the writer reaches it.
    pub fn add_tensor_lazy(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: Producer) {
        let n: u64 = dims.iter().product();
        let n_bytes = ty
            .data_bytes(dims.first().copied().unwrap_or(1), n)
            .unwrap_or(u64::MAX);
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            ty,
            n_bytes,
            data,
        });
    }

    fn alignment(&self) -> u64 {
        match self.metadata.iter().find(|(k, _)| k == "general.alignment") {
            Some((_, Value::U32(a))) => *a as u64,
            _ => DEFAULT_ALIGNMENT,
        }
    }

    fn validate(&self, path: &str) -> Result<(), GgufError> {
        let err = |what: String| GgufError::Write {
            path: path.to_string(),
            what,
        };
        match self.metadata.iter().find(|(k, _)| k == "general.alignment") {
            Some((_, Value::U32(a))) if *a != 0 && a.is_power_of_two() => {}
            Some(_) => {
                return Err(err(
                    "`general.alignment` must be a uint32 power of two".into()
                ))
            }
            None => {}
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.tensors {
            if t.name.is_empty() || t.name.len() > MAX_NAME {
                return Err(err(format!(
                    "tensor name `{}` must be 1..={MAX_NAME} bytes",
                    t.name
                )));
            }
            if !names.insert(&t.name) {
                return Err(err(format!("duplicate tensor `{}`", t.name)));
            }
            if t.dims.len() > MAX_DIMS as usize {
                return Err(err(format!(
                    "tensor `{}` has more than {MAX_DIMS} dimensions",
                    t.name
                )));
            }
            if t.n_bytes == u64::MAX {
                return Err(err(format!(
                    "tensor `{}`: shape {:?} does not fit {}'s block size {}",
                    t.name,
                    t.dims,
                    t.ty,
                    t.ty.block_size()
                )));
            }
        }
        Ok(())
    }

    /// Serialize to `out`, calling each tensor's producer in order and `progress(done, total)`
    /// with bytes of tensor data after each tensor.
    fn write_to(
        self,
        out: &mut dyn Write,
        path: &str,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), GgufError> {
        self.validate(path)?;
        let alignment = self.alignment();
        let io = |e: std::io::Error| GgufError::Write {
            path: path.to_string(),
            what: e.to_string(),
        };
        let mut pos: u64 = 0;
        let put = |out: &mut dyn Write, bytes: &[u8], pos: &mut u64| -> Result<(), GgufError> {
            out.write_all(bytes).map_err(io)?;
            *pos += bytes.len() as u64;
            Ok(())
        };
        let mut head = Vec::new();
        head.extend_from_slice(b"GGUF");
        head.extend_from_slice(&3u32.to_le_bytes());
        head.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_string(&mut head, k);
            head.extend_from_slice(&v.type_id().to_le_bytes());
            put_value(&mut head, v);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_string(&mut head, &t.name);
            head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ty.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offset += t.n_bytes.div_ceil(alignment) * alignment;
        }
        put(out, &head, &mut pos)?;
        let pad = |pos: u64| vec![0u8; (pos.div_ceil(alignment) * alignment - pos) as usize];
        if !self.tensors.is_empty() {
            put(out, &pad(pos), &mut pos)?;
        }
        let total: u64 = self.tensors.iter().map(|t| t.n_bytes).sum();
        let mut done = 0u64;
        for t in self.tensors {
            let bytes = (t.data)();
            if bytes.len() as u64 != t.n_bytes {
                return Err(GgufError::Write {
                    path: path.to_string(),
                    what: format!(
                        "tensor `{}` ({} {:?}) needs {} bytes, got {}",
                        t.name,
                        t.ty,
                        t.dims,
                        t.n_bytes,
                        bytes.len()
                    ),
                });
            }
            put(out, &bytes, &mut pos)?;
            put(out, &pad(pos), &mut pos)?;
            done += t.n_bytes;
            progress(done, total);
        }
        Ok(())
    }

    /// Serialize into memory.
    pub fn to_bytes(self) -> Result<Vec<u8>, GgufError> {
        let mut v = Vec::new();
        self.write_to(&mut v, "<memory>", &mut |_, _| {})?;
        Ok(v)
    }

    /// Write `path` atomically: a temporary file in the same folder, synced, then renamed.
    pub fn write(self, path: &Path) -> Result<(), GgufError> {
        self.write_with_progress(path, &mut |_, _| {})
    }

    /// [`GgufWriter::write`], reporting `progress(bytes_done, bytes_total)` of tensor data.
    pub fn write_with_progress(
        self,
        path: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), GgufError> {
        let shown = path.display().to_string();
        let io = |e: std::io::Error| GgufError::Write {
            path: shown.clone(),
            what: e.to_string(),
        };
        // A temporary file beside `path`, removed on any error; persisted (renamed) when whole.
        let tmp = crate::npy::temp_beside(path).map_err(io)?;
        let mut w = BufWriter::with_capacity(1 << 20, tmp);
        self.write_to(&mut w, &shown, progress)?;
        let tmp = w.into_inner().map_err(|e| io(e.into_error()))?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_string(out, s),
        Value::Array(a) => {
            out.extend_from_slice(&a.elem_type.to_le_bytes());
            out.extend_from_slice(&(a.values.len() as u64).to_le_bytes());
            for x in &a.values {
                debug_assert_eq!(x.type_id(), a.elem_type, "array elements share one type");
                put_value(out, x);
            }
        }
    }
}

/// An array of strings.
pub fn string_array<S: AsRef<str>>(items: &[S]) -> Value {
    Value::Array(super::value::Array::new(
        type_id::STRING,
        items
            .iter()
            .map(|s| Value::String(s.as_ref().to_string()))
            .collect(),
    ))
}

/// An array of i32.
pub fn i32_array(items: &[i32]) -> Value {
    Value::Array(super::value::Array::new(
        type_id::I32,
        items.iter().map(|&x| Value::I32(x)).collect(),
    ))
}

/// An array of f32.
pub fn f32_array(items: &[f32]) -> Value {
    Value::Array(super::value::Array::new(
        type_id::F32,
        items.iter().map(|&x| Value::F32(x)).collect(),
    ))
}
