//! The scenario trials: every `scenarios/*.yaml` × check is a test named
//! `scenarios::<file stem>::<check>` (libtest-mimic), so `cargo test scenarios` selects them all
//! and cargo-nextest runs and shards them. A trial that cannot run here is listed as ignored with
//! the reason, never passed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bitnet_harness::run::{trials, Context, Status};
use bitnet_harness::scenario::{find_scenarios, load_scenario};
use libtest_mimic::{Arguments, Failed, Trial};

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let dir = std::env::var_os("BITNET_SCENARIOS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("scenarios"));
    let files = match find_scenarios(&[dir]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut loaded = Vec::new();
    for f in files {
        match load_scenario(&f) {
            Ok(s) => loaded.push(s),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    // Each test process gets its own run directory: nextest runs trials in parallel processes.
    let runs = root
        .join("target/harness/test-runs")
        .join(std::process::id().to_string());
    let ctx = std::sync::Arc::new(Context::new(
        &root,
        runs.clone(),
        PathBuf::from(env!("CARGO_BIN_EXE_harness")),
    ));
    let list: Vec<Trial> = trials(&loaded)
        .into_iter()
        .map(|t| {
            let name = t.name();
            let ignored = t.ignored.clone();
            let ctx = ctx.clone();
            let trial = Trial::test(name, move || {
                let v = ctx.run_check(&t.scenario, t.check);
                match v.status {
                    Status::Pass => {
                        println!("{}", v.message);
                        Ok(())
                    }
                    // Forced with `--ignored`: a check that cannot run here must not pass.
                    Status::Ignored => Err(Failed::from(format!("cannot run here: {}", v.message))),
                    Status::Fail => Err(Failed::from(v.message)),
                }
            });
            match ignored {
                Some(reason) => {
                    if !args.list {
                        eprintln!("note: {} is ignored: {reason}", trial.name());
                    }
                    trial.with_ignored_flag(true)
                }
                None => trial,
            }
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, list);
    let _ = std::fs::remove_dir_all(&runs);
    conclusion.exit_code()
}
