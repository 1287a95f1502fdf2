//! `harness verify-receipt`: the CI gate on receipts. Exit codes: see `bitnet_harness::receipt`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use bitnet_harness::receipt::{parse_duration, verify_file, VerifyOptions, EXIT_MISSING, EXIT_OK};

use super::UsageError;

/// Arguments of `harness verify-receipt`.
#[derive(clap::Args)]
pub struct Args {
    /// Receipt files, or directories of them (`*.json` except `schema.json`).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Require kernels that ran on a GPU.
    #[arg(long)]
    pub require_gpu_kernels: bool,
    /// Smallest acceptable engine decode tokens/s.
    #[arg(long)]
    pub min_decode_tps: Option<f64>,
    /// Oldest acceptable receipt (`7d`, `12h`, `30m`).
    #[arg(long)]
    pub max_age: Option<String>,
    /// Compare trace digests with the goldens: the project's `goldens/` without a value, or the
    /// directory given.
    #[arg(long, num_args = 0..=1, value_name = "DIR")]
    pub against_goldens: Option<Option<PathBuf>>,
    /// The project the receipts' paths (`scenario_file`, `model`) are relative to. Default: found
    /// from each receipt's location (the parent of its `receipts/` directory, else the enclosing
    /// project), else the current directory.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Re-run each receipt's scenario on the engine side here and confirm its trace digest, and
    /// its recorded throughput within `--tps-factor` of the one measured here (exit 22 if not).
    #[arg(long)]
    pub reproduce: bool,
    /// With `--reproduce`: how far the recorded tokens/s may be from this machine's (either way).
    #[arg(long, default_value_t = 3.0)]
    pub tps_factor: f64,
    /// Require a receipt of every scenario of the project (`<root>/scenarios`) that runs on this
    /// machine: one skipped here (its model absent, `slow`, `skip_unless`) needs none (exit 23
    /// when one is missing, so deleting a failing scenario's receipt does not pass the gate).
    #[arg(long)]
    pub every_scenario: bool,
}

/// Returns the exit code.
pub fn run(args: Args) -> Result<u8> {
    if let Some(v) = args.min_decode_tps {
        if !(v.is_finite() && v > 0.0) {
            return Err(UsageError(format!(
                "--min-decode-tps is {v}, expected a positive number of tokens/s"
            ))
            .into());
        }
    }
    if let Some(Some(g)) = &args.against_goldens {
        if !g.is_dir() {
            return Err(UsageError(format!(
                "--against-goldens `{}` is not a directory of goldens",
                g.display()
            ))
            .into());
        }
    }
    let mut files = Vec::new();
    for p in &args.paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| UsageError(format!("cannot read `{}`: {e}", p.display())))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| {
                    f.extension().is_some_and(|x| x == "json")
                        && !f
                            .file_name()
                            .is_some_and(|n| n == "schema.json" || n == "perf-baseline.json")
                })
                .collect();
            v.sort();
            files.extend(v);
        } else if p.exists() {
            files.push(p.clone());
        } else {
            return Err(UsageError(format!("`{}` does not exist", p.display())).into());
        }
    }
    if files.is_empty() {
        return Err(UsageError(format!("no receipts in {:?}", args.paths)).into());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let opts = VerifyOptions {
        require_gpu_kernels: args.require_gpu_kernels,
        min_decode_tps: args.min_decode_tps,
        max_age_seconds: args
            .max_age
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(UsageError)?,
        goldens: None,
        base: PathBuf::new(),
        now,
    };
    let cwd = std::env::current_dir()?;
    if !(args.tps_factor.is_finite() && args.tps_factor >= 1.0) {
        return Err(UsageError(format!(
            "--tps-factor is {}, expected a number of at least 1",
            args.tps_factor
        ))
        .into());
    }
    let harness = std::env::current_exe()?;
    let mut first = EXIT_OK;
    if args.every_scenario {
        let root = args.root.clone().unwrap_or_else(|| {
            files
                .first()
                .and_then(|f| receipt_project(f))
                .unwrap_or_else(|| cwd.clone())
        });
        let have: std::collections::HashSet<String> = files
            .iter()
            .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect();
        let dir = root.join("scenarios");
        let paths = bitnet_harness::scenario::find_scenarios(std::slice::from_ref(&dir))
            .map_err(|e| UsageError(format!("--every-scenario: {e}")))?;
        for p in paths {
            let s = bitnet_harness::scenario::load_scenario(&p)
                .map_err(|e| UsageError(format!("--every-scenario: {e}")))?;
            if have.contains(&s.stem) || bitnet_harness::run::skip_reason(&s).is_some() {
                continue;
            }
            errln!(
                "error: scenario `{}` runs on this machine but has no receipt among {} (exit code {EXIT_MISSING})",
                s.stem,
                args.paths
                    .iter()
                    .map(|p| format!("`{}`", p.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if first == EXIT_OK {
                first = EXIT_MISSING;
            }
        }
    }
    for f in &files {
        let base = args
            .root
            .clone()
            .unwrap_or_else(|| receipt_project(f).unwrap_or_else(|| cwd.clone()));
        let opts = VerifyOptions {
            goldens: args
                .against_goldens
                .as_ref()
                .map(|g| g.clone().unwrap_or_else(|| base.join("goldens"))),
            base,
            ..opts.clone()
        };
        let checked = verify_file(f, &opts).and_then(|()| {
            if args.reproduce {
                bitnet_harness::run::reproduce_receipt(f, &opts.base, &harness, args.tps_factor)
                    .map(|line| outln!("{}: {line}", f.display()))
            } else {
                Ok(())
            }
        });
        match checked {
            Ok(()) => outln!("ok: {}", f.display()),
            Err(failure) => {
                errln!("error: {} (exit code {})", failure.message, failure.code);
                if first == EXIT_OK {
                    first = failure.code;
                }
            }
        }
    }
    Ok(first)
}

/// The project a receipt file belongs to: the parent of the `receipts` directory it lies in
/// (where `harness run` writes it), else the project enclosing its directory.
fn receipt_project(receipt: &Path) -> Option<PathBuf> {
    let dir = std::path::absolute(receipt).ok()?.parent()?.to_path_buf();
    if dir.file_name().is_some_and(|n| n == "receipts") {
        if let Some(root) = dir.parent() {
            return Some(root.to_path_buf());
        }
    }
    bitnet_harness::scenario::enclosing_project(&dir)
}
