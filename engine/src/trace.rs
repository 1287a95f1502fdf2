//! Trace records: what the engine (and the reference) emit at each canonical trace point.
//!
//! Sits between the forward pass and the harness's comparison (see DESIGN.md, "Trace points").
//! One record per (trace point, decode step). Records stream as JSON lines into `trace.jsonl`;
//! the values of a point, when requested, go to `<name>.step<step>.npy` beside it.
//!
//! Layout convention: every traced tensor is stored row-major with the token positions as the
//! first axis, so a record covering `positions = [p0, p1)` has `shape[0] == p1 - p0`:
//!
//! | canonical | shape |
//! |---|---|
//! | `embeddings`, `blk.N.attn_norm`, `blk.N.kqv_out`, `blk.N.attn_sub_norm`, `blk.N.attn_out`, `blk.N.ffn_inp`, `blk.N.ffn_norm`, `blk.N.ffn_down`, `blk.N.out`, `output_norm` | `[n_pos, n_embd]` |
//! | `blk.N.q` | `[n_pos, n_head, head_dim]` (after RoPE) |
//! | `blk.N.k`, `blk.N.v` | `[n_pos, n_head_kv, head_dim]` (k after RoPE) |
//! | `blk.N.attn_probs` | `[n_pos, n_head, n_kv]`, `n_kv = p1` (every cached position, masked ones are 0) |
//! | `blk.N.ffn_act`, `blk.N.ffn_sub_norm` | `[n_pos, n_ff]` |
//! | `logits` | `[n_pos, n_vocab]` |

use serde::{Deserialize, Serialize};

/// Pipeline stages in execution order within a layer; `Embeddings` comes before every layer and
/// `OutputNorm`/`Logits` after the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Embeddings,
    AttnNorm,
    Q,
    K,
    V,
    AttnProbs,
    /// The attention output before its sub-norm (llama.cpp's `kqv_out`).
    KqvOut,
    AttnSubNorm,
    AttnOut,
    FfnInp,
    FfnNorm,
    FfnAct,
    FfnSubNorm,
    FfnDown,
    Out,
    OutputNorm,
    Logits,
}

impl Stage {
    /// Per-layer stages in execution order.
    pub const LAYER: [Stage; 14] = [
        Stage::AttnNorm,
        Stage::Q,
        Stage::K,
        Stage::V,
        Stage::AttnProbs,
        Stage::KqvOut,
        Stage::AttnSubNorm,
        Stage::AttnOut,
        Stage::FfnInp,
        Stage::FfnNorm,
        Stage::FfnAct,
        Stage::FfnSubNorm,
        Stage::FfnDown,
        Stage::Out,
    ];

    /// The suffix of the canonical name (`blk.N.<suffix>`) or the whole name for global points.
    pub fn suffix(self) -> &'static str {
        match self {
            Stage::Embeddings => "embeddings",
            Stage::AttnNorm => "attn_norm",
            Stage::Q => "q",
            Stage::K => "k",
            Stage::V => "v",
            Stage::AttnProbs => "attn_probs",
            Stage::KqvOut => "kqv_out",
            Stage::AttnSubNorm => "attn_sub_norm",
            Stage::AttnOut => "attn_out",
            Stage::FfnInp => "ffn_inp",
            Stage::FfnNorm => "ffn_norm",
            Stage::FfnAct => "ffn_act",
            Stage::FfnSubNorm => "ffn_sub_norm",
            Stage::FfnDown => "ffn_down",
            Stage::Out => "out",
            Stage::OutputNorm => "output_norm",
            Stage::Logits => "logits",
        }
    }

    /// Whether the stage belongs to a layer (`blk.N.*`).
    pub fn is_layer(self) -> bool {
        !matches!(self, Stage::Embeddings | Stage::OutputNorm | Stage::Logits)
    }
}

/// A trace point: a stage, and the layer for per-layer stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TracePoint {
    pub layer: Option<u32>,
    pub stage: Stage,
}

impl TracePoint {
    /// Canonical name as in DESIGN.md (`blk.3.attn_out`, `logits`).
    pub fn name(&self) -> String {
        match self.layer {
            Some(l) => format!("blk.{l}.{}", self.stage.suffix()),
            None => self.stage.suffix().to_string(),
        }
    }

    /// Parse a canonical name; `None` when it is not one.
    pub fn parse(name: &str) -> Option<TracePoint> {
        if let Some(rest) = name.strip_prefix("blk.") {
            let (layer, suffix) = rest.split_once('.')?;
            if layer.is_empty() || (layer.len() > 1 && layer.starts_with('0')) {
                return None;
            }
            let layer: u32 = layer.parse().ok()?;
            let stage = Stage::LAYER.into_iter().find(|s| s.suffix() == suffix)?;
            Some(TracePoint {
                layer: Some(layer),
                stage,
            })
        } else {
            let stage = [Stage::Embeddings, Stage::OutputNorm, Stage::Logits]
                .into_iter()
                .find(|s| s.suffix() == name)?;
            Some(TracePoint { layer: None, stage })
        }
    }

    /// Every point of a model with `n_layer` layers, in execution order.
    pub fn all(n_layer: u32) -> Vec<TracePoint> {
        let mut v = vec![TracePoint {
            layer: None,
            stage: Stage::Embeddings,
        }];
        for l in 0..n_layer {
            v.extend(Stage::LAYER.iter().map(|&stage| TracePoint {
                layer: Some(l),
                stage,
            }));
        }
        v.push(TracePoint {
            layer: None,
            stage: Stage::OutputNorm,
        });
        v.push(TracePoint {
            layer: None,
            stage: Stage::Logits,
        });
        v
    }

    /// Sort key in execution order: embeddings, then layers in order, then output.
    pub fn order_key(&self) -> (u32, u32, Stage) {
        match self.layer {
            Some(l) => (1, l, self.stage),
            None if self.stage == Stage::Embeddings => (0, 0, self.stage),
            None => (2, 0, self.stage),
        }
    }
}

/// One point's values over consecutive chunks of a prefill (`[n_i, ...]` each, in position order)
/// merged into one `[Σn_i, ...]` tensor. `attn_probs` rows, whose width is the positions cached so
/// far, are zero-padded to the last chunk's width, as a one-shot prefill leaves masked positions.
pub fn merge_position_chunks(
    stage: Stage,
    chunks: Vec<(Vec<usize>, Vec<f32>)>,
) -> (Vec<usize>, Vec<f32>) {
    let mut it = chunks.into_iter();
    let Some((mut shape, mut values)) = it.next() else {
        return (Vec::new(), Vec::new());
    };
    for (s, v) in it {
        if stage == Stage::AttnProbs && shape.len() == 3 && s.len() == 3 && s[2] > shape[2] {
            let (old_w, new_w) = (shape[2], s[2]);
            let mut padded = Vec::with_capacity(shape[0] * shape[1] * new_w);
            for row in values.chunks_exact(old_w.max(1)) {
                padded.extend_from_slice(row);
                padded.extend(std::iter::repeat_n(0.0, new_w - old_w));
            }
            values = padded;
            shape[2] = new_w;
        }
        shape[0] += s[0];
        values.extend_from_slice(&v);
    }
    (shape, values)
}

/// One JSON line of `trace.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRecord {
    /// Canonical name (`blk.0.attn_out`).
    pub name: String,
    /// Decode call: 0 = prefill (all prompt chunks together are step 0), k = k-th decode token.
    pub step: u32,
    /// Positions covered, half-open `[start, end)`.
    pub positions: [u32; 2],
    /// Layer, for per-layer points.
    pub layer: Option<u32>,
    /// Stage within the layer.
    pub stage: Stage,
    /// Row-major shape, positions first.
    pub shape: Vec<usize>,
    /// Always `f32`.
    pub dtype: String,
    /// blake3 of the values as f32 little-endian bytes, hex.
    pub blake3: String,
    /// Root mean square of the values (NaN/Inf included as they are). JSON has no NaN or
    /// infinity: such an rms is written as `null` and read back as NaN.
    #[serde(deserialize_with = "nan_from_null")]
    pub rms: f64,
    /// Number of elements.
    pub count: usize,
    /// Minimum over finite values (0 when none is finite).
    pub min: f32,
    /// Maximum over finite values (0 when none is finite).
    pub max: f32,
    pub nan: usize,
    pub inf: usize,
    /// File name of the values (`.npy`, beside `trace.jsonl`) when they were written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// Whether `s` is a blake3 digest as records, goldens and receipts write it: 64 hex digits.
pub fn is_blake3_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

/// An f64 that JSON wrote as `null` (serde_json's NaN and ±infinity) read as NaN.
fn nan_from_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl TraceRecord {
    /// Whether the record agrees with itself, as [`TraceRecord::summarize`] writes it: `f32`
    /// values, a 64-digit hash, positions in order, a shape that starts with their count and
    /// holds `count` elements, and the layer and stage its canonical name says.
    pub fn check(&self) -> Result<(), String> {
        if self.dtype != "f32" {
            return Err(format!("`dtype` is {:?}, expected \"f32\"", self.dtype));
        }
        if !is_blake3_hex(&self.blake3) {
            return Err(format!(
                "`blake3` is {:?}, expected 64 hex digits",
                self.blake3
            ));
        }
        let [start, end] = self.positions;
        if start > end {
            return Err(format!(
                "`positions` is [{start}, {end}], expected start ≤ end"
            ));
        }
        if self.shape.first() != Some(&((end - start) as usize)) {
            return Err(format!(
                "`shape` {:?} does not start with the {} positions [{start}, {end})",
                self.shape,
                end - start
            ));
        }
        let elements = self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if elements != Some(self.count) {
            return Err(format!(
                "`count` is {}, but `shape` {:?} holds {}",
                self.count,
                self.shape,
                elements.map_or("more than fits".into(), |n| n.to_string())
            ));
        }
        if let Some(p) = TracePoint::parse(&self.name) {
            if (p.layer, p.stage) != (self.layer, self.stage) {
                return Err(format!(
                    "`layer` {:?} and `stage` {:?} are not those of `{}` ({:?}, {:?})",
                    self.layer, self.stage, self.name, p.layer, p.stage
                ));
            }
        }
        Ok(())
    }

    /// Summarise `values` for a point at one step.
    pub fn summarize(
        point: TracePoint,
        step: u32,
        positions: [u32; 2],
        shape: Vec<usize>,
        values: &[f32],
    ) -> TraceRecord {
        let mut hasher = blake3::Hasher::new();
        // Hash in chunks to avoid a second copy of large tensors.
        let mut buf = [0u8; 4096];
        for chunk in values.chunks(1024) {
            for (i, v) in chunk.iter().enumerate() {
                buf[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
            }
            hasher.update(&buf[..chunk.len() * 4]);
        }
        let (mut sumsq, mut min, mut max, mut nan, mut inf) =
            (0f64, f32::INFINITY, f32::NEG_INFINITY, 0usize, 0usize);
        for &v in values {
            sumsq += (v as f64) * (v as f64);
            if v.is_nan() {
                nan += 1;
            } else if v.is_infinite() {
                inf += 1;
            } else {
                min = min.min(v);
                max = max.max(v);
            }
        }
        if min > max {
            (min, max) = (0.0, 0.0);
        }
        let rms = if values.is_empty() {
            0.0
        } else {
            (sumsq / values.len() as f64).sqrt()
        };
        TraceRecord {
            name: point.name(),
            step,
            positions,
            layer: point.layer,
            stage: point.stage,
            shape,
            dtype: "f32".into(),
            blake3: hasher.finalize().to_hex().to_string(),
            rms,
            count: values.len(),
            min,
            max,
            nan,
            inf,
            file: None,
        }
    }

    /// The file name used for this record's values.
    pub fn values_file_name(name: &str, step: u32) -> String {
        format!("{name}.step{step}.npy")
    }
}

/// Which trace points to capture: globs over canonical names (`blk.*.attn_out`, `logits`).
#[derive(Debug, Clone)]
pub struct PointFilter {
    set: globset::GlobSet,
    patterns: Vec<String>,
}

impl PointFilter {
    /// Build from glob patterns; an invalid glob is named in the error.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<PointFilter, String> {
        let mut b = globset::GlobSetBuilder::new();
        for p in patterns {
            let g = globset::GlobBuilder::new(p.as_ref())
                .literal_separator(false)
                .build()
                .map_err(|e| format!("bad trace point glob `{}`: {e}", p.as_ref()))?;
            b.add(g);
        }
        let set = b.build().map_err(|e| e.to_string())?;
        Ok(PointFilter {
            set,
            patterns: patterns.iter().map(|p| p.as_ref().to_string()).collect(),
        })
    }

    /// Every point.
    pub fn all() -> PointFilter {
        PointFilter::new(&["*"]).expect("valid glob")
    }

    /// Whether the canonical `name` is selected.
    pub fn matches(&self, name: &str) -> bool {
        self.set.is_match(name)
    }

    /// Patterns that select no point of a model with `n_layer` layers (likely typos).
    pub fn unmatched(&self, n_layer: u32) -> Vec<String> {
        let names: Vec<String> = TracePoint::all(n_layer).iter().map(|p| p.name()).collect();
        self.patterns
            .iter()
            .filter(|p| {
                let one = PointFilter::new(&[p.as_str()]).expect("already built");
                !names.iter().any(|n| one.matches(n))
            })
            .cloned()
            .collect()
    }

    /// The patterns as given.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

/// Streams trace records into `DIR/trace.jsonl` and, for points whose values are wanted, writes
/// `DIR/<name>.step<step>.npy`. The JSONL file is written to a temporary name and renamed by
/// [`TraceWriter::finish`], so a crashed run never leaves a half file under the final name.
pub struct TraceWriter {
    dir: std::path::PathBuf,
    /// `trace.jsonl` being written: a temporary file beside it, removed if never finished.
    out: std::io::BufWriter<tempfile::NamedTempFile>,
    records: usize,
    /// Value files go to a writer thread, so file creation overlaps the forward pass; its first
    /// error comes back from [`TraceWriter::finish`].
    values: Option<ValueWriter>,
}

struct ValueWriter {
    send: std::sync::mpsc::SyncSender<(std::path::PathBuf, Vec<u8>)>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl ValueWriter {
    fn start() -> std::io::Result<ValueWriter> {
        // Bounded, so a slow disk holds the forward pass back instead of buffering every value.
        let (send, recv) = std::sync::mpsc::sync_channel::<(std::path::PathBuf, Vec<u8>)>(64);
        let thread = std::thread::Builder::new()
            .name("bitnet-trace-values".into())
            .spawn(move || {
                let mut first = Ok(());
                for (path, bytes) in recv {
                    if first.is_ok() {
                        // Written in place: `trace.jsonl`, renamed into place last, is what
                        // makes a run's directory complete, so a value file of a crashed run is
                        // never referenced by a finished trace.
                        first = std::fs::write(&path, &bytes);
                    }
                }
                first
            })?;
        Ok(ValueWriter { send, thread })
    }

    fn finish(self) -> std::io::Result<()> {
        drop(self.send);
        self.thread
            .join()
            .map_err(|_| std::io::Error::other("the trace value writer panicked"))?
    }
}

impl TraceWriter {
    /// Create `dir` if needed and start `dir/trace.jsonl`.
    pub fn create(dir: &std::path::Path) -> std::io::Result<TraceWriter> {
        std::fs::create_dir_all(dir)?;
        let tmp = crate::npy::temp_beside(&dir.join("trace.jsonl"))?;
        let out = std::io::BufWriter::new(tmp);
        Ok(TraceWriter {
            dir: dir.to_owned(),
            out,
            records: 0,
            values: None,
        })
    }

    /// Append one record; with `values`, also write them as `.npy` and name the file in the record.
    pub fn write(
        &mut self,
        mut record: TraceRecord,
        values: Option<&[f32]>,
    ) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(values) = values {
            let file = TraceRecord::values_file_name(&record.name, record.step);
            let bytes = crate::npy::to_npy_bytes(&record.shape, values);
            if self.values.is_none() {
                self.values = Some(ValueWriter::start()?);
            }
            let path = self.dir.join(&file);
            let w = self.values.as_ref().expect("started above");
            if w.send.send((path, bytes)).is_err() {
                // The writer thread ended early: its error is the one to report.
                let w = self.values.take().expect("present");
                w.finish()?;
                return Err(std::io::Error::other("the trace value writer stopped"));
            }
            record.file = Some(file);
        }
        serde_json::to_writer(&mut self.out, &record)?;
        self.out.write_all(b"\n")?;
        self.records += 1;
        Ok(())
    }

    /// Number of records written so far.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether no record was written.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Flush and move the file to `dir/trace.jsonl` (a scratch file like the values: renamed into
    /// place, not synced; see [`crate::npy::write_scratch`]).
    pub fn finish(self) -> std::io::Result<std::path::PathBuf> {
        if let Some(w) = self.values {
            w.finish()?;
        }
        let tmp = self.out.into_inner().map_err(|e| e.into_error())?;
        let path = self.dir.join("trace.jsonl");
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(path)
    }
}

/// Largest `trace.jsonl` [`read_trace`] reads (64 MiB: a record is a few hundred bytes).
pub const MAX_TRACE_BYTES: u64 = 64 << 20;

/// Read `trace.jsonl`; an error names the file and line. The file is read only when it is a
/// regular file of at most [`MAX_TRACE_BYTES`], and each record's `file` must be a plain file name
/// inside the trace directory (no path separators, not `.` or `..`), since the directory may come
/// from an external reference.
pub fn read_trace(path: &std::path::Path) -> Result<Vec<TraceRecord>, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("cannot read `{}`: {e}", path.display());
    let file = crate::files::open_regular(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if meta.len() > MAX_TRACE_BYTES {
        return Err(format!(
            "`{}`: expected a regular file of at most {MAX_TRACE_BYTES} bytes",
            path.display()
        ));
    }
    let mut text = String::new();
    file.take(meta.len())
        .read_to_string(&mut text)
        .map_err(cannot)?;
    let mut seen = std::collections::HashMap::new();
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let r: TraceRecord = serde_json::from_str(l)
                .map_err(|e| format!("{}:{}: bad trace record: {e}", path.display(), i + 1))?;
            r.check()
                .map_err(|e| format!("{}:{}: `{}` step {}: {e}", path.display(), i + 1, r.name, r.step))?;
            if let Some(first) = seen.insert((r.name.clone(), r.step), i + 1) {
                return Err(format!(
                    "{}:{}: `{}` step {} again (first at line {first}): one record per point and step",
                    path.display(),
                    i + 1,
                    r.name,
                    r.step
                ));
            }
            if let Some(f) = &r.file {
                let plain =
                    !f.is_empty() && f != "." && f != ".." && !f.contains(['/', '\\', '\0']);
                if !plain {
                    return Err(format!(
                        "{}:{}: `file` is {f:?}; expected a file name inside the trace directory",
                        path.display(),
                        i + 1
                    ));
                }
            }
            Ok(r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_pointing_outside_their_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("trace.jsonl");
        let rec = TraceRecord::summarize(TracePoint::all(1)[0], 0, [0, 1], vec![1, 1], &[1.0]);
        for bad in ["/dev/zero", "../x.npy", "a/b.npy", "..", ""] {
            let mut r = rec.clone();
            r.file = Some(bad.into());
            std::fs::write(&p, serde_json::to_string(&r).unwrap()).unwrap();
            let e = read_trace(&p).unwrap_err();
            assert!(e.contains("expected a file name"), "{bad}: {e}");
        }
        let mut r = rec.clone();
        r.file = Some("embeddings.step0.npy".into());
        std::fs::write(&p, serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(read_trace(&p).unwrap(), vec![r]);
        assert!(read_trace(std::path::Path::new("/dev/zero")).is_err());
    }

    #[test]
    fn a_record_with_nan_values_round_trips_through_its_json_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("trace.jsonl");
        let rec = TraceRecord::summarize(
            TracePoint::all(1)[0],
            0,
            [0, 1],
            vec![1, 3],
            &[1.0, f32::NAN, f32::INFINITY],
        );
        assert!(rec.rms.is_nan());
        let line = serde_json::to_string(&rec).unwrap();
        assert!(line.contains("\"rms\":null"), "{line}");
        std::fs::write(&p, line).unwrap();
        let back = read_trace(&p).unwrap();
        assert!(back[0].rms.is_nan());
        assert_eq!((back[0].nan, back[0].inf, back[0].max), (1, 1, 1.0));
    }

    #[test]
    fn names_round_trip_in_execution_order() {
        let all = TracePoint::all(2);
        assert_eq!(all.len(), 1 + 2 * 14 + 2);
        assert_eq!(all[0].name(), "embeddings");
        assert_eq!(all[1].name(), "blk.0.attn_norm");
        assert_eq!(all[6].name(), "blk.0.kqv_out");
        assert_eq!(all[29].name(), "output_norm");
        for p in &all {
            assert_eq!(TracePoint::parse(&p.name()), Some(*p));
        }
        let mut sorted = all.clone();
        sorted.sort_by_key(|p| p.order_key());
        assert_eq!(sorted, all);
        assert_eq!(TracePoint::parse("blk.01.q"), None);
        assert_eq!(TracePoint::parse("blk.0.query"), None);
        assert_eq!(TracePoint::parse("logit"), None);
    }

    #[test]
    fn summary_hashes_le_bytes_and_counts_specials() {
        let v = [1.0f32, -2.0, f32::NAN, f32::INFINITY];
        let p = TracePoint {
            layer: None,
            stage: Stage::Logits,
        };
        let r = TraceRecord::summarize(p, 0, [0, 1], vec![1, 4], &v);
        let mut bytes = Vec::new();
        for x in v {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        assert_eq!(r.blake3, blake3::hash(&bytes).to_hex().to_string());
        assert_eq!((r.nan, r.inf, r.min, r.max, r.count), (1, 1, -2.0, 1.0, 4));
    }

    #[test]
    fn point_globs_select_canonical_names() {
        let f = PointFilter::new(&["blk.*.attn_out", "logits"]).unwrap();
        assert!(f.matches("blk.0.attn_out") && f.matches("blk.11.attn_out") && f.matches("logits"));
        assert!(!f.matches("blk.0.attn_outx") && !f.matches("output_norm"));
        assert_eq!(
            PointFilter::new(&["blk.*.atn_out", "logits"])
                .unwrap()
                .unmatched(2),
            vec!["blk.*.atn_out"]
        );
        assert!(PointFilter::new(&["blk.[0"])
            .unwrap_err()
            .contains("bad trace point glob `blk.[0`"));
    }

    #[test]
    fn writer_streams_records_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TraceWriter::create(dir.path()).unwrap();
        let p = TracePoint::parse("blk.1.q").unwrap();
        let v = [0.5f32; 8];
        w.write(
            TraceRecord::summarize(p, 2, [3, 4], vec![1, 2, 4], &v),
            Some(&v),
        )
        .unwrap();
        assert!(!dir.path().join("trace.jsonl").exists());
        let path = w.finish().unwrap();
        let recs = read_trace(&path).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].file.as_deref(), Some("blk.1.q.step2.npy"));
        let (shape, vals) = crate::npy::read_npy(&dir.path().join("blk.1.q.step2.npy")).unwrap();
        assert_eq!((shape, vals), (vec![1, 2, 4], v.to_vec()));
    }
}
