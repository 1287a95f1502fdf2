//! Reports of a `harness run`: the terminal summary table, `report.json` and JUnit XML, written
//! atomically under `target/harness/`.

use std::path::Path;

use serde::Serialize;

use crate::run::{Status, Verdict};

/// One row: a trial and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub check: String,
    pub verdict: Verdict,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub rows: Vec<Row>,
    pub passed: usize,
    pub failed: usize,
    pub ignored: usize,
    pub seconds: f64,
}

impl Report {
    pub fn new(rows: Vec<Row>, seconds: f64) -> Report {
        let count = |s: Status| rows.iter().filter(|r| r.verdict.status == s).count();
        Report {
            schema_version: 1,
            passed: count(Status::Pass),
            failed: count(Status::Fail),
            ignored: count(Status::Ignored),
            rows,
            seconds,
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
            let v = &r.verdict;
            let status = match v.status {
                Status::Pass => "pass",
                Status::Fail => "FAIL",
                Status::Ignored => "ignored",
            };
            let detail = match (&v.divergence, &v.worst, v.status) {
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
                (None, None, Status::Fail) => v.message.lines().next().unwrap_or("").to_string(),
                (None, None, Status::Pass) => {
                    // The first input's note, shortened (e.g. "319 points × positions compared,
                    // 319 of them bit-exact").
                    let first = v.message.split("; ").next().unwrap_or("");
                    let first = match first.strip_prefix("input ") {
                        Some(rest) => rest.split_once(": ").map_or(first, |(_, r)| r),
                        None => first,
                    };
                    first.chars().take(90).collect()
                }
            };
            out.push_str(&format!(
                "{:w$}  {:10}  {:7}  {:>6.2}s  {}\n",
                r.scenario, r.check, status, v.seconds, detail
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
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let mut x = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"harness\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n<testsuite name=\"scenarios\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">\n",
            self.rows.len(), self.failed, self.ignored, self.seconds, self.rows.len(), self.failed, self.ignored
        );
        for r in &self.rows {
            x.push_str(&format!(
                "  <testcase classname=\"scenarios::{}\" name=\"{}\" time=\"{:.3}\">",
                esc(&r.scenario),
                esc(&r.check),
                r.verdict.seconds
            ));
            match r.verdict.status {
                Status::Pass => {}
                Status::Fail => x.push_str(&format!(
                    "<failure message=\"{}\">{}</failure>",
                    esc(r.verdict.message.lines().next().unwrap_or("")),
                    esc(&r.verdict.message)
                )),
                Status::Ignored => x.push_str(&format!(
                    "<skipped message=\"{}\"/>",
                    esc(&r.verdict.message)
                )),
            }
            x.push_str("</testcase>\n");
        }
        x.push_str("</testsuite>\n</testsuites>\n");
        x
    }

    /// Write `report.json` and `junit.xml` into `dir`, atomically.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        bitnet_engine::npy::write_atomic(&dir.join("report.json"), &json)?;
        bitnet_engine::npy::write_atomic(&dir.join("junit.xml"), self.junit().as_bytes())
    }
}
