//! Reports of a `harness run`: the terminal summary table, `report.json`, JUnit XML and the
//! HTML report (`report.html`: per-layer plots of every comparison, the logits per position,
//! headroom, receipts and bench figures), each written atomically under `target/harness/`.
//! `harness report <report.json>` renders the HTML again from the JSON.
//!
//! `report.json` has its own schema (version 2): a row per trial with its verdict and, for the
//! checks that compare traces, the [`InputFigures`] of every input, whether the check passed or
//! failed.

mod figures;
pub mod html;
mod junit;
mod num;
pub mod svg;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use figures::{
    BeforeFigure, DivergenceFigure, HeadroomFigure, InputFigures, LogitFigures, MetricsFigure,
    PointFigure, StageCurve, StepFigures,
};
pub use junit::{strip_ansi, xml_escape};

use crate::run::{Status, Verdict};

/// The version of `report.json`'s layout.
pub const SCHEMA_VERSION: u32 = 2;

/// One row: a trial and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    pub scenario: String,
    pub check: String,
    pub verdict: RowVerdict,
}

impl Row {
    pub fn new(scenario: impl Into<String>, check: impl Into<String>, verdict: Verdict) -> Row {
        Row {
            scenario: scenario.into(),
            check: check.into(),
            verdict: verdict.into(),
        }
    }
}

/// A trial's [`Verdict`] as the report keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowVerdict {
    pub status: Status,
    /// One paragraph: what was checked, or what failed and how to fix it.
    pub message: String,
    /// The first divergence, for failed comparisons.
    #[serde(default)]
    pub divergence: Option<String>,
    /// The metric with the least headroom, for parity checks.
    #[serde(default)]
    pub worst: Option<HeadroomFigure>,
    /// Worst metrics per layer (of the input that failed, or the last one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_layer: Vec<LayerFigure>,
    pub seconds: f64,
    /// Per input: the comparison's figures (parity checks, pass or fail; failed chunking).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<InputFigures>,
}

impl From<Verdict> for RowVerdict {
    fn from(v: Verdict) -> Self {
        RowVerdict {
            status: v.status,
            message: v.message,
            divergence: v.divergence,
            worst: v.worst.as_ref().map(HeadroomFigure::from),
            per_layer: v
                .per_layer
                .iter()
                .map(|l| LayerFigure {
                    layer: l.layer,
                    min_cosine: l.min_cosine,
                    max_rel_l2: l.max_rel_l2,
                    max_abs: l.max_abs,
                    max_nmse: l.max_nmse,
                    violations: l.violations,
                })
                .collect(),
            seconds: v.seconds,
            figures: v.figures,
        }
    }
}

/// A row of the per-layer table ([`crate::compare::LayerRow`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerFigure {
    pub layer: Option<u32>,
    #[serde(with = "num")]
    pub min_cosine: f64,
    #[serde(with = "num")]
    pub max_rel_l2: f64,
    #[serde(with = "num")]
    pub max_abs: f64,
    #[serde(with = "num")]
    pub max_nmse: f64,
    pub violations: usize,
}

/// A bench report shown in the HTML report, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchEntry {
    /// The file it was read from, or `receipt <scenario>`.
    pub source: String,
    /// A [`crate::bench::BenchReport`] (kept as JSON: one that no longer parses is shown raw).
    pub report: serde_json::Value,
}

/// A scenario's reference runs: their wall time, charged to the reference, not to the checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceTime {
    pub scenario: String,
    /// The reference's name (`llama.cpp`, or the external command).
    pub reference: String,
    /// Wall time of all its runs in this scenario (every input), in seconds.
    #[serde(with = "num")]
    pub seconds: f64,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub schema_version: u32,
    pub rows: Vec<Row>,
    pub passed: usize,
    pub failed: usize,
    pub ignored: usize,
    pub seconds: f64,
    /// The receipts this run wrote ([`crate::receipt::Receipt`] as JSON).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receipts: Vec<serde_json::Value>,
    /// Bench reports found beside the report (`bench*.json`) or in receipts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub benches: Vec<BenchEntry>,
    /// The reference runs' times, per scenario (not in the rows' times).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<ReferenceTime>,
}

/// Errors reading a `report.json`.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is not a harness report: {source}")]
    Json {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("`{path}` has report schema version {found}; this harness reads version {SCHEMA_VERSION} (run `harness run` again)")]
    Version {
        path: std::path::PathBuf,
        found: u64,
    },
    #[error("`{path}` disagrees with itself: {what}")]
    Inconsistent {
        path: std::path::PathBuf,
        what: String,
    },
}

/// The status as the table writes it.
pub fn status_word(s: Status) -> &'static str {
    match s {
        Status::Pass => "pass",
        Status::Fail => "FAIL",
        Status::Ignored => "ignored",
    }
}

/// A failure message's summary for a table row: its first line, and when that line introduces
/// what follows (`...; its last output:`), the last line of that too (where a child's error
/// usually is). ANSI sequences removed; at most 200 characters.
pub fn first_line_of_failure(msg: &str) -> String {
    let msg = strip_ansi(msg);
    let mut lines = msg.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("").to_string();
    let line = match lines.next_back() {
        Some(last) if first.ends_with(':') => format!("{first} … {last}"),
        _ => first,
    };
    if line.chars().count() > 200 {
        let cut: String = line.chars().take(199).collect();
        format!("{cut}…")
    } else {
        line
    }
}

impl Report {
    pub fn new(rows: Vec<Row>, seconds: f64) -> Report {
        let count = |s: Status| rows.iter().filter(|r| r.verdict.status == s).count();
        Report {
            schema_version: SCHEMA_VERSION,
            passed: count(Status::Pass),
            failed: count(Status::Fail),
            ignored: count(Status::Ignored),
            rows,
            seconds,
            receipts: Vec::new(),
            benches: Vec::new(),
            references: Vec::new(),
        }
    }

    /// Read a `report.json`.
    pub fn read(path: &Path) -> Result<Report, ReportError> {
        let bytes = bitnet_engine::files::read_limited(
            path,
            bitnet_engine::files::MAX_REPORT_BYTES,
            "report",
        )
        .map_err(|source| ReportError::Io {
            path: path.to_owned(),
            source,
        })?;
        let json = |source| ReportError::Json {
            path: path.to_owned(),
            source,
        };
        let value: serde_json::Value = crate::bounded::json(&bytes)
            .and_then(|()| serde_json::from_slice(&bytes))
            .map_err(json)?;
        match value.get("schema_version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(SCHEMA_VERSION) => {}
            Some(found) => {
                return Err(ReportError::Version {
                    path: path.to_owned(),
                    found,
                })
            }
            None => {}
        }
        let report: Report = serde_json::from_value(value).map_err(json)?;
        report.check().map_err(|what| ReportError::Inconsistent {
            path: path.to_owned(),
            what,
        })?;
        Ok(report)
    }

    /// The totals are the rows' (the headline is rendered from them), and times are times.
    fn check(&self) -> Result<(), String> {
        let count = |s: Status| self.rows.iter().filter(|r| r.verdict.status == s).count();
        let rows = (
            count(Status::Pass),
            count(Status::Fail),
            count(Status::Ignored),
        );
        if (self.passed, self.failed, self.ignored) != rows {
            return Err(format!(
                "`passed`, `failed`, `ignored` are {}, {}, {}, but the rows hold {}, {}, {}",
                self.passed, self.failed, self.ignored, rows.0, rows.1, rows.2
            ));
        }
        let bad_time = |t: f64| !(t.is_finite() && t >= 0.0);
        if bad_time(self.seconds) {
            return Err(format!(
                "`seconds` is {}, expected a duration",
                self.seconds
            ));
        }
        if let Some((i, r)) = self
            .rows
            .iter()
            .enumerate()
            .find(|(_, r)| bad_time(r.verdict.seconds))
        {
            return Err(format!(
                "`rows[{i}].verdict.seconds` is {}, expected a duration",
                r.verdict.seconds
            ));
        }
        Ok(())
    }

    /// The last column of a row in the summary table.
    pub fn detail(row: &Row) -> String {
        let v = &row.verdict;
        match (&v.divergence, &v.worst, v.status) {
            (Some(d), _, _) => format!("diverges at {d}"),
            (None, Some(h), _) => format!(
                "{} {:.3e} vs {:e} ({}) at {}",
                h.metric,
                h.worst,
                h.bound,
                if h.factor.is_infinite() {
                    "exact".to_string()
                } else {
                    format!("{:.1}x headroom", h.factor)
                },
                h.at
            ),
            (None, None, Status::Ignored) => v.message.clone(),
            (None, None, Status::Fail) => first_line_of_failure(&v.message),
            (None, None, Status::Pass) => {
                // The first input's note, shortened (e.g. "319 points × positions compared,
                // 319 of them held to bit-exactness and equal").
                let first = v.message.split("; ").next().unwrap_or("");
                let first = match first.strip_prefix("input ") {
                    Some(rest) => rest.split_once(": ").map_or(first, |(_, r)| r),
                    None => first,
                };
                first.chars().take(90).collect()
            }
        }
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let w = self
            .rows
            .iter()
            .map(|r| r.scenario.len())
            .max()
            .unwrap_or(8)
            .max(8);
        out.push_str(&format!(
            "{:w$}  {:10}  {:7}  {:>7}  {}\n",
            "scenario", "check", "verdict", "time", "worst metric / first divergence"
        ));
        for r in &self.rows {
            out.push_str(&format!(
                "{:w$}  {:10}  {:7}  {:>6.2}s  {}\n",
                r.scenario,
                r.check,
                status_word(r.verdict.status),
                r.verdict.seconds,
                Self::detail(r)
            ));
        }
        out.push_str(&format!(
            "\n{} passed, {} failed, {} ignored in {:.1} s\n",
            self.passed, self.failed, self.ignored, self.seconds
        ));
        out
    }

    /// JUnit XML, one testcase per trial.
    pub fn junit(&self) -> String {
        junit::junit(self)
    }

    /// The HTML report: one self-contained page.
    pub fn html(&self) -> String {
        html::render(self)
    }

    /// Write `report.json`, `junit.xml` and `report.html` into `dir`, each atomically.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        bitnet_engine::npy::write_atomic(&dir.join("report.json"), &json)?;
        bitnet_engine::npy::write_atomic(&dir.join("junit.xml"), self.junit().as_bytes())?;
        bitnet_engine::npy::write_atomic(&dir.join("report.html"), self.html().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(status: Status, message: &str) -> Verdict {
        let mut v = Verdict::ignored(message.into());
        v.status = status;
        v
    }

    #[test]
    fn a_failure_that_introduces_a_child_log_shows_its_last_line() {
        let msg = "input 0: the reference failed (exit status: 1); its last output:\n\u{1b}[1mllama_model_load\u{1b}[0m: loading\n\n\u{1b}[31merror: unknown model architecture: 'x'\u{1b}[0m\n";
        assert_eq!(
            first_line_of_failure(msg),
            "input 0: the reference failed (exit status: 1); its last output: … error: unknown model architecture: 'x'"
        );
        let r = Report::new(
            vec![Row::new("s", "parity", verdict(Status::Fail, msg))],
            1.0,
        );
        assert!(
            r.table().contains("unknown model architecture"),
            "{}",
            r.table()
        );
    }

    #[test]
    fn the_json_reads_back_with_non_finite_values() {
        let mut v = verdict(Status::Pass, "ok");
        v.worst = Some(crate::compare::Headroom {
            metric: "kl_max".into(),
            at: "logits".into(),
            worst: 0.0,
            bound: 1e-4,
            factor: f64::INFINITY,
        });
        let r = Report::new(vec![Row::new("s", "parity", v)], 1.0);
        let dir = tempfile::tempdir().unwrap();
        r.write(dir.path()).unwrap();
        let back = Report::read(&dir.path().join("report.json")).unwrap();
        assert_eq!(back, r);
        assert!(dir.path().join("report.html").exists());
        std::fs::write(dir.path().join("old.json"), r#"{"schema_version": 1}"#).unwrap();
        let e = Report::read(&dir.path().join("old.json")).unwrap_err();
        assert!(e.to_string().contains("schema version 1"), "{e}");
    }

    #[test]
    fn an_unknown_field_is_refused_by_name() {
        let r = Report::new(
            vec![Row::new("s", "parity", verdict(Status::Pass, "ok"))],
            1.0,
        );
        let dir = tempfile::tempdir().unwrap();
        r.write(dir.path()).unwrap();
        let good = std::fs::read_to_string(dir.path().join("report.json")).unwrap();
        for (what, from, to) in [
            ("forged", "\"rows\"", "\"forged\": true, \"rows\""),
            ("verified", "\"status\"", "\"verified\": 1, \"status\""),
        ] {
            assert!(good.contains(from), "{good}");
            let path = dir.path().join(format!("{what}.json"));
            std::fs::write(&path, good.replacen(from, to, 1)).unwrap();
            let e = Report::read(&path).unwrap_err().to_string();
            assert!(e.contains(&format!("unknown field `{what}`")), "{e}");
            assert!(e.contains(&format!("{what}.json")), "{e}");
        }
    }
}
