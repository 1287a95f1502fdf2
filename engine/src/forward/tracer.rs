//! [`Tracer`]: what a forward pass records at its trace points, into a trace directory.

use super::*;

/// Trace capture for one run: which points, where to write.
pub struct Tracer {
    filter: PointFilter,
    writer: TraceWriter,
    /// Write the values (`.npy`) as well as the records.
    values: bool,
    step: u32,
    error: Option<std::io::Error>,
    /// While a prefill runs in chunks: each chunk's records, merged into one record per point
    /// when the prefill ends ([`Tracer::release`]).
    held: Option<Vec<HeldRecord>>,
}

/// A record held while a prefill runs in chunks: point, positions, shape, values.
type HeldRecord = (TracePoint, [u32; 2], Vec<usize>, Vec<f32>);

impl Tracer {
    pub fn new(filter: PointFilter, dir: &Path, values: bool) -> std::io::Result<Tracer> {
        Ok(Tracer {
            filter,
            writer: TraceWriter::create(dir)?,
            values,
            step: 0,
            error: None,
            held: None,
        })
    }

    /// Whether `point` is selected (and nothing failed): the CUDA backend copies a point's values
    /// back from the device only then.
    pub(crate) fn wants(&self, point: &TracePoint) -> bool {
        self.error.is_none() && self.filter.matches(&point.name())
    }

    /// The step the records that follow belong to.
    pub(crate) fn set_step(&mut self, step: u32) {
        self.step = step;
    }

    pub(crate) fn record(
        &mut self,
        point: TracePoint,
        positions: [u32; 2],
        shape: Vec<usize>,
        v: &[f32],
    ) {
        if self.error.is_some() || !self.filter.matches(&point.name()) {
            return;
        }
        if let Some(held) = self.held.as_mut() {
            held.push((point, positions, shape, v.to_vec()));
            return;
        }
        let rec = TraceRecord::summarize(point, self.step, positions, shape, v);
        if let Err(e) = self.writer.write(rec, self.values.then_some(v)) {
            self.error = Some(e);
        }
    }

    /// Hold the records of the forward calls that follow (the chunks of one prefill).
    pub(crate) fn hold(&mut self) {
        self.held = Some(Vec::new());
    }

    /// Write the held records, one per point: the chunks' positions merged in order
    /// ([`crate::trace::merge_position_chunks`]), as the reference writes a chunked prefill.
    pub(crate) fn release(&mut self) {
        let Some(held) = self.held.take() else { return };
        let mut order: Vec<TracePoint> = Vec::new();
        let mut by_point: std::collections::HashMap<TracePoint, Vec<_>> = Default::default();
        for (point, positions, shape, v) in held {
            if !by_point.contains_key(&point) {
                order.push(point);
            }
            by_point
                .entry(point)
                .or_default()
                .push((positions, shape, v));
        }
        for point in order {
            let chunks = by_point.remove(&point).unwrap_or_default();
            let start = chunks.first().map_or(0, |c| c.0[0]);
            let end = chunks.last().map_or(0, |c| c.0[1]);
            let (shape, values) = crate::trace::merge_position_chunks(
                point.stage,
                chunks.into_iter().map(|(_, s, v)| (s, v)).collect(),
            );
            self.record(point, [start, end], shape, &values);
        }
    }

    /// Finish the file; the first write error, if any, is returned here.
    pub fn finish(mut self) -> std::io::Result<std::path::PathBuf> {
        self.release();
        if let Some(e) = self.error {
            return Err(e);
        }
        self.writer.finish()
    }
}
