//! `harness run` (the main job), `harness list`, `harness bless`, `harness schema`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use bitnet_harness::report::{ReferenceTime, Report, Row};
use bitnet_harness::run::{golden_body, trials, Context, Status, Trial};
use bitnet_harness::scenario::{
    enclosing_project, find_scenarios, load_scenario, project_root, LoadedScenario, MAX_THREADS,
};

use super::{count, ChecksFailed, UsageError};

/// Arguments of `harness list`, and the trials `harness run` runs.
#[derive(clap::Args)]
pub struct ListArgs {
    /// Scenario files or directories (default: the `scenarios` directory of the current
    /// directory, or of the project it is in).
    pub paths: Vec<PathBuf>,
    /// Only trials whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
}

/// Arguments of `harness run`.
#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub select: ListArgs,
    /// Scenarios run at once, 1 to 256 (default: cores / 2, at least 1).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Where reports go (default: `<root>/target/harness`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where receipts go, one `<scenario>.json` per scenario that ran (default: `<root>/receipts`).
    #[arg(long)]
    pub receipts: Option<PathBuf>,
    /// The project root, holding `goldens/`, `receipts/` and `target/harness/` (default: found
    /// from the first scenario's location, not the current directory; see the README).
    #[arg(long)]
    pub root: Option<PathBuf>,
}

/// The scenario paths to read: those given, else `<root>/scenarios` (`--root`), else
/// `scenarios` when the current directory holds one, else the `scenarios` of the project the
/// current directory is in.
fn scenario_paths(paths: &[PathBuf], root: Option<&Path>) -> Vec<PathBuf> {
    if !paths.is_empty() {
        return paths.to_vec();
    }
    let here = Path::new("scenarios");
    let dir = match root {
        Some(r) => r.join("scenarios"),
        None if here.is_dir() => here.to_owned(),
        None => std::env::current_dir()
            .ok()
            .and_then(|d| enclosing_project(&d))
            .map_or_else(|| here.to_owned(), |p| p.join("scenarios")),
    };
    vec![dir]
}

/// The project root: `--root`, else found from the first scenario path ([`project_root`]).
/// A `--root` that is not a directory is refused (the run would create it, and write there).
fn root_of(paths: &[PathBuf], root: Option<&Path>) -> Result<PathBuf> {
    match root {
        Some(r) if !r.is_dir() => Err(UsageError(format!(
            "--root `{}` is not a directory: name the project's directory (the one holding `scenarios/` and `goldens/`)",
            r.display()
        ))
        .into()),
        Some(r) => Ok(std::path::absolute(r).unwrap_or_else(|_| r.to_owned())),
        None => Ok(project_root(
            paths
                .first()
                .map_or(Path::new("scenarios"), |p| p.as_path()),
        )),
    }
}

fn load_all(paths: &[PathBuf]) -> Result<Vec<LoadedScenario>> {
    let files = find_scenarios(paths).map_err(UsageError)?;
    if files.is_empty() {
        return Err(UsageError(format!("no scenario files (*.yaml) in {paths:?}")).into());
    }
    // Every bad file is reported, not only the first: a directory is fixed in one round.
    let (mut loaded, mut errors) = (Vec::new(), Vec::new());
    for f in &files {
        match load_scenario(f) {
            Ok(s) => loaded.push(s),
            Err(e) => errors.push(e.to_string()),
        }
    }
    match errors.len() {
        0 => Ok(loaded),
        1 => Err(UsageError(errors.remove(0)).into()),
        n => {
            for e in &errors {
                errln!("error: {e}");
            }
            Err(UsageError(format!(
                "{n} of {} scenario files are invalid (each named above)",
                files.len()
            ))
            .into())
        }
    }
}

fn selected(args: &ListArgs, paths: &[PathBuf]) -> Result<Vec<Trial>> {
    let loaded = load_all(paths)?;
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
            "`--filter {f}` matches none of the {}; `harness list` names them (`scenarios::<file stem>::<check>`)",
            count(n, "trial")
        ))
        .into());
    }
    Ok(chosen)
}

pub fn list(args: ListArgs) -> Result<()> {
    let paths = scenario_paths(&args.paths, None);
    for t in selected(&args, &paths)? {
        match &t.ignored {
            Some(reason) => outln!("{}: test (ignored: {reason})", t.name()),
            None => outln!("{}: test", t.name()),
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
    if let Some(j) = args.jobs {
        if j == 0 || j > MAX_THREADS {
            return Err(UsageError(format!("`--jobs` is {j}, expected 1 to {MAX_THREADS}")).into());
        }
    }
    let paths = scenario_paths(&args.select.paths, args.root.as_deref());
    let root = root_of(&paths, args.root.as_deref())?;
    let all = selected(&args.select, &paths)?;
    let out = args.out.unwrap_or_else(|| root.join("target/harness"));
    let receipts_dir = &args.receipts.unwrap_or_else(|| root.join("receipts"));
    // Where the run writes, checked before it runs (not after every check has).
    for (flag, dir) in [("--out", &out), ("--receipts", receipts_dir)] {
        std::fs::create_dir_all(dir).map_err(|e| {
            UsageError(format!(
                "`{flag}` `{}` cannot be a directory to write to: {e}",
                dir.display()
            ))
        })?;
    }
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
    outln!(
        "running {} of {} ({jobs} at a time)",
        count(total, "check"),
        count(groups.len(), "scenario")
    );
    let queue = Arc::new(Mutex::new(
        groups.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    let results = Arc::new(Mutex::new(Vec::new()));
    let receipts = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ref_times = Arc::new(Mutex::new(Vec::new()));
    // Scenarios whose receipt could not be written: the run's proof is missing, so it fails.
    let unwritten: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let (queue, results, ctx, done, receipts, ref_times, unwritten) = (
                queue.clone(),
                results.clone(),
                ctx.clone(),
                done.clone(),
                receipts.clone(),
                ref_times.clone(),
                unwritten.clone(),
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
                    outln!(
                        "[{n}/{total}] {} ... {status} ({:.2} s)",
                        t.name(),
                        v.seconds
                    );
                    verdicts.push((t.check, v.status));
                    let row = Row::new(t.scenario.stem.clone(), t.check.name(), v);
                    results.lock().expect("results").push(((gi, ti), row));
                }
                // The reference's runs on a row of their own, not in the first check's time.
                let ref_seconds = ctx.reference_seconds(&scenario.stem);
                if ref_seconds > 0.0 {
                    outln!(
                        "      scenarios::{}: reference ({}) ... ran in {ref_seconds:.2} s (not in the checks' times)",
                        scenario.stem,
                        reference_name(&scenario.scenario.reference)
                    );
                    ref_times.lock().expect("ref times").push((
                        gi,
                        ReferenceTime {
                            scenario: scenario.stem.clone(),
                            reference: reference_name(&scenario.scenario.reference),
                            seconds: ref_seconds,
                        },
                    ));
                }
                if let Some(r) =
                    ctx.receipt(&scenario, &verdicts, started, t0.elapsed().as_secs_f64())
                {
                    if let Err(e) = r.write(receipts_dir) {
                        errln!("error: cannot write the receipt of {}: {e}", scenario.stem);
                        unwritten
                            .lock()
                            .expect("unwritten")
                            .push(scenario.stem.clone());
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
    report.benches = bench_reports(&out);
    outln!();
    out!("{}", report.table());
    let mut ref_times: Vec<(usize, ReferenceTime)> = Arc::try_unwrap(ref_times)
        .expect("workers done")
        .into_inner()
        .expect("ref times");
    ref_times.sort_by_key(|(gi, _)| *gi);
    report.references = ref_times.into_iter().map(|(_, t)| t).collect();
    if !report.references.is_empty() {
        let each: Vec<String> = report
            .references
            .iter()
            .map(|t| format!("{} {:.2} s", t.scenario, t.seconds))
            .collect();
        outln!(
            "reference runs (not in the checks' times): {}",
            each.join(", ")
        );
    }
    for r in report
        .rows
        .iter()
        .filter(|r| r.verdict.status == Status::Fail)
    {
        outln!(
            "\n--- scenarios::{}::{} failed:\n{}",
            r.scenario,
            r.check,
            r.verdict.message
        );
    }
    report.write(&out)?;
    outln!(
        "reports: {}, {}, {}",
        out.join("report.json").display(),
        out.join("junit.xml").display(),
        out.join("report.html").display()
    );
    if report.failed > 0 {
        return Err(ChecksFailed.into());
    }
    let unwritten = unwritten.lock().expect("unwritten");
    if !unwritten.is_empty() {
        return Err(anyhow::anyhow!(
            "the checks passed, but the receipts of {} could not be written (each named above): the run has no proof",
            unwritten.join(", ")
        ));
    }
    Ok(())
}

/// How the progress lines name a scenario's reference.
fn reference_name(r: &bitnet_harness::scenario::Reference) -> String {
    match r {
        bitnet_harness::scenario::Reference::Command { command } => format!("`{}`", command[0]),
        _ => "llama.cpp".into(),
    }
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
            let bytes = bitnet_engine::files::read_limited(
                &p,
                bitnet_engine::files::MAX_JSON_BYTES,
                "bench report",
            )
            .ok()?;
            let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
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
    /// Where the scenarios are (default: `<root>/scenarios`).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The project root, holding `goldens/` (default: the current directory when it holds
    /// `scenarios/`, else the project it is in, so `bless` works from any directory inside it).
    #[arg(long)]
    pub root: Option<PathBuf>,
}

pub fn bless(args: BlessArgs) -> Result<()> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => scenario_paths(&[], args.root.as_deref()).remove(0),
    };
    let loaded = load_all(std::slice::from_ref(&dir))?;
    for name in &args.scenarios {
        if !loaded.iter().any(|s| &s.stem == name) {
            let names: Vec<&str> = loaded.iter().map(|s| s.stem.as_str()).collect();
            let hint = bitnet_harness::scenario::did_you_mean(name, names.iter().copied())
                .map(|m| format!("; did you mean `{m}`?"))
                .unwrap_or_default();
            return Err(
                UsageError(format!("no scenario `{name}` in `{}`{hint}", dir.display())).into(),
            );
        }
    }
    let root = root_of(std::slice::from_ref(&dir), args.root.as_deref())?;
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
            outln!("skipped {}: {reason}", s.stem);
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
        outln!(
            "blessed {} ({})",
            display(&path, &root),
            count(body.lines().count(), "line")
        );
    }
    Ok(())
}

fn display(p: &Path, root: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

pub fn schema() -> Result<()> {
    out!("{}", bitnet_harness::scenario::json_schema());
    Ok(())
}
