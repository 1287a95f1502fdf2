//! `harness report`: render `report.html` again from a `report.json` (and add bench reports).

use std::path::PathBuf;

use anyhow::Result;
use bitnet_harness::report::{BenchEntry, Report};

use super::UsageError;

/// Arguments of `harness report`.
#[derive(clap::Args)]
pub struct Args {
    /// A `report.json` written by `harness run`.
    #[arg(default_value = "target/harness/report.json")]
    pub report: PathBuf,
    /// Where the HTML goes (default: `report.html` beside the JSON).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Bench reports (`harness bench --json FILE`) to show as well.
    #[arg(long)]
    pub bench: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let mut report = Report::read(&args.report).map_err(|e| UsageError(e.to_string()))?;
    for b in &args.bench {
        let value: serde_json::Value = bitnet_engine::files::read_limited(
            b,
            bitnet_engine::files::MAX_JSON_BYTES,
            "bench report",
        )
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            bitnet_harness::bounded::json(&bytes)
                .and_then(|()| serde_json::from_slice(&bytes))
                .map_err(|e| e.to_string())
        })
        .map_err(|e| UsageError(format!("`--bench {}`: {e}", b.display())))?;
        if let Err(e) = serde_json::from_value::<bitnet_harness::bench::BenchReport>(value.clone())
        {
            return Err(UsageError(format!(
                "`--bench {}` is not a `harness bench --json` report: {e}",
                b.display()
            ))
            .into());
        }
        report.benches.push(BenchEntry {
            source: b.display().to_string(),
            report: value,
        });
    }
    let out = args
        .output
        .unwrap_or_else(|| args.report.with_file_name("report.html"));
    let same = |a: &std::path::Path, b: &std::path::Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y);
    if let Some(input) = std::iter::once(&args.report)
        .chain(&args.bench)
        .find(|p| same(p, &out))
    {
        return Err(UsageError(format!(
            "`--output {}` is the input `{}`: the HTML would replace it; give another path",
            out.display(),
            input.display()
        ))
        .into());
    }
    if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    bitnet_engine::npy::write_atomic(&out, report.html().as_bytes())
        .map_err(|e| UsageError(format!("cannot write `{}`: {e}", out.display())))?;
    outln!("wrote {}", out.display());
    Ok(())
}
