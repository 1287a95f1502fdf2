//! `harness run` (the main job), `harness list`, `harness bless`, `harness schema`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use bitnet_harness::report::{Report, Row};
use bitnet_harness::run::{golden_body, trials, Context, Status, Trial};
use bitnet_harness::scenario::{find_scenarios, load_scenario, LoadedScenario};

use super::{ChecksFailed, UsageError};

/// Arguments of `harness run` and `harness list`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Scenario files or directories.
    #[arg(default_value = "scenarios")]
    pub paths: Vec<PathBuf>,
    /// Only trials whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Scenarios run at once (default: cores / 2, at least 1).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Where reports go.
    #[arg(long, default_value = "target/harness")]
    pub out: PathBuf,
    /// Where receipts go (one `<scenario>.json` per scenario that ran).
    #[arg(long, default_value = "receipts")]
    pub receipts: PathBuf,
}

fn load_all(paths: &[PathBuf]) -> Result<Vec<LoadedScenario>> {
    let files = find_scenarios(paths).map_err(UsageError)?;
    if files.is_empty() {
        return Err(UsageError(format!("no scenario files (*.yaml) in {paths:?}")).into());
    }
    files
        .iter()
        .map(|f| load_scenario(f).map_err(|e| UsageError(e.to_string()).into()))
        .collect()
}

fn selected(args: &RunArgs) -> Result<Vec<Trial>> {
    let loaded = load_all(&args.paths)?;
    let all = trials(&loaded);
    let n = all.len();
    let chosen: Vec<Trial> = all
        .into_iter()
        .filter(|t| {
            args.filter
                .as_ref()
                .is_none_or(|f| t.name().contains(f.as_str()))
        })
        .collect();
    // A filter that selects nothing is a mistake, not a pass (nextest: "no tests to run").
    if let (Some(f), true) = (&args.filter, chosen.is_empty()) {
        return Err(UsageError(format!(
            "`--filter {f}` matches none of the {n} trial{}; `harness list` names them (`scenarios::<file stem>::<check>`)",
            if n == 1 { "" } else { "s" }
        ))
        .into());
    }
    Ok(chosen)
}

pub fn list(args: RunArgs) -> Result<()> {
    for t in selected(&args)? {
        match &t.ignored {
            Some(reason) => println!("{}: test (ignored: {reason})", t.name()),
            None => println!("{}: test", t.name()),
        }
    }
    Ok(())
}

/// An exclusive lock on `target/harness/run.lock` for the whole run: a second `harness run` in the
/// same checkout would delete this one's run directories and overwrite its report. The lock is
/// `flock`, released by the kernel when the process ends however it ends; the file names the
/// holder for the second run's error.
struct RunLock(#[allow(dead_code)] std::fs::File);

fn lock_run_dir(dir: &Path) -> Result<RunLock> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(dir)?;
    let path = dir.join("run.lock");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    // SAFETY: flock on a descriptor this process owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = f.read_to_string(&mut holder);
        return Err(UsageError(format!(
            "another `harness run` holds `{}` ({}): one run at a time per checkout, as each clears the run directories and rewrites the report",
            path.display(),
            holder.trim()
        ))
        .into());
    }
    f.set_len(0)?;
    f.rewind()?;
    writeln!(
        f,
        "pid {}, started {}",
        std::process::id(),
        bitnet_harness::receipt::rfc3339(std::time::SystemTime::now())
    )?;
    Ok(RunLock(f))
}

pub fn run(args: RunArgs) -> Result<()> {
    let all = selected(&args)?;
    let root = std::env::current_dir()?;
    let _lock = lock_run_dir(&root.join("target/harness"))?;
    let harness = std::env::current_exe()?;
    let ctx = Arc::new(Context::new(
        &root,
        root.join("target/harness/runs"),
        harness,
    ));
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() / 2))
        .max(1);
    // Trials of one scenario run in order on one worker (they share its engine run).
    let mut groups: Vec<Vec<Trial>> = Vec::new();
    for t in all {
        match groups.last_mut() {
            Some(g) if g[0].scenario.stem == t.scenario.stem => g.push(t),
            _ => groups.push(vec![t]),
        }
    }
    let total: usize = groups.iter().map(|g| g.len()).sum();
    println!(
        "running {total} check{} of {} scenario{} ({jobs} at a time)",
        if total == 1 { "" } else { "s" },
        groups.len(),
        if groups.len() == 1 { "" } else { "s" }
    );
    let queue = Arc::new(Mutex::new(
        groups.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    let results = Arc::new(Mutex::new(Vec::new()));
    let receipts = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let receipts_dir = &args.receipts;
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let (queue, results, ctx, done, receipts) = (
                queue.clone(),
                results.clone(),
                ctx.clone(),
                done.clone(),
                receipts.clone(),
            );
            s.spawn(move || loop {
                let Some((gi, group)) = queue.lock().expect("queue").pop() else {
                    break;
                };
                let (started, t0) = (std::time::SystemTime::now(), Instant::now());
                let mut verdicts: Vec<(bitnet_harness::run::Check, Status)> = Vec::new();
                let scenario = group[0].scenario.clone();
                for (ti, t) in group.into_iter().enumerate() {
                    let v = ctx.run_check(&t.scenario, t.check);
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    let status = match v.status {
                        Status::Pass => "pass",
                        Status::Fail => "FAIL",
                        Status::Ignored => "ignored",
                    };
                    println!(
                        "[{n}/{total}] {} ... {status} ({:.2} s)",
                        t.name(),
                        v.seconds
                    );
                    verdicts.push((t.check, v.status));
                    let row = Row::new(t.scenario.stem.clone(), t.check.name(), v);
                    results.lock().expect("results").push(((gi, ti), row));
                }
                if let Some(r) =
                    ctx.receipt(&scenario, &verdicts, started, t0.elapsed().as_secs_f64())
                {
                    if let Err(e) = r.write(receipts_dir) {
                        eprintln!(
                            "warning: cannot write the receipt of {}: {e}",
                            scenario.stem
                        );
                    }
                    if let Ok(json) = serde_json::to_value(&r) {
                        receipts.lock().expect("receipts").push((gi, json));
                    }
                }
            });
        }
    });
    let mut rows = Arc::try_unwrap(results)
        .expect("workers done")
        .into_inner()
        .expect("results");
    rows.sort_by_key(|(k, _)| *k);
    let mut report = Report::new(
        rows.into_iter().map(|(_, r)| r).collect(),
        start.elapsed().as_secs_f64(),
    );
    let mut receipts = Arc::try_unwrap(receipts)
        .expect("workers done")
        .into_inner()
        .expect("receipts");
    receipts.sort_by_key(|(gi, _)| *gi);
    report.receipts = receipts.into_iter().map(|(_, r)| r).collect();
    report.benches = bench_reports(&args.out);
    println!();
    print!("{}", report.table());
    for r in report
        .rows
        .iter()
        .filter(|r| r.verdict.status == Status::Fail)
    {
        println!(
            "\n--- scenarios::{}::{} failed:\n{}",
            r.scenario, r.check, r.verdict.message
        );
    }
    report.write(&args.out)?;
    println!(
        "reports: {}, {}, {}",
        args.out.join("report.json").display(),
        args.out.join("junit.xml").display(),
        args.out.join("report.html").display()
    );
    if report.failed > 0 {
        return Err(ChecksFailed.into());
    }
    Ok(())
}

/// The bench reports beside the report (`<out>/bench*.json`, as `harness bench --json` writes
/// them), for the HTML report; files that are not bench reports are left out.
pub fn bench_reports(out: &Path) -> Vec<bitnet_harness::report::BenchEntry> {
    let Ok(dir) = std::fs::read_dir(out) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("bench"))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| {
            let value: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            value.get("results")?;
            Some(bitnet_harness::report::BenchEntry {
                source: p.display().to_string(),
                report: value,
            })
        })
        .collect()
}

/// Arguments of `harness bless`.
#[derive(clap::Args)]
pub struct BlessArgs {
    /// Scenario names (file stems); all when none is given.
    pub scenarios: Vec<String>,
    /// Where the scenarios are.
    #[arg(long, default_value = "scenarios")]
    pub dir: PathBuf,
}

pub fn bless(args: BlessArgs) -> Result<()> {
    let loaded = load_all(std::slice::from_ref(&args.dir))?;
    for name in &args.scenarios {
        if !loaded.iter().any(|s| &s.stem == name) {
            let names: Vec<&str> = loaded.iter().map(|s| s.stem.as_str()).collect();
            let hint = bitnet_harness::scenario::did_you_mean(name, names.iter().copied())
                .map(|m| format!("; did you mean `{m}`?"))
                .unwrap_or_default();
            return Err(UsageError(format!(
                "no scenario `{name}` in `{}`{hint}",
                args.dir.display()
            ))
            .into());
        }
    }
    let root = std::env::current_dir()?;
    let ctx = Context::new(
        &root,
        root.join("target/harness/runs"),
        std::env::current_exe()?,
    );
    let goldens = root.join("goldens");
    for s in loaded
        .iter()
        .filter(|s| args.scenarios.is_empty() || args.scenarios.contains(&s.stem))
    {
        if !s.scenario.golden {
            continue;
        }
        if let Some(reason) = bitnet_harness::run::skip_reason(s) {
            println!("skipped {}: {reason}", s.stem);
            continue;
        }
        let cell = ctx.runs(s).map_err(anyhow::Error::msg)?;
        let runs = cell
            .get()
            .expect("initialised")
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{}: {e}", s.stem))?;
        let body = golden_body(runs);
        let path = bitnet_harness::golden::write_golden(&goldens, &s.stem, &body)?;
        let _ = std::fs::remove_file(goldens.join(format!("{}.snap.new", s.stem)));
        println!(
            "blessed {} ({} lines)",
            display(&path, &root),
            body.lines().count()
        );
    }
    Ok(())
}

fn display(p: &Path, root: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

pub fn schema() -> Result<()> {
    print!("{}", bitnet_harness::scenario::json_schema());
    Ok(())
}
