//! The `harness` command line: parses arguments, runs one subcommand, maps errors to exit codes.

#[macro_use]
mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code: every check passed / the command succeeded.
const EXIT_OK: u8 = 0;
/// Exit code: a check failed.
const EXIT_FAILED: u8 = 1;
/// Exit code: bad input or usage.
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "harness",
    version,
    about = "BitNet engine test-and-benchmark harness"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: run every scenario's checks, print a summary, write reports.
    Run(cli::run::RunArgs),
    /// List the trials (scenario × check) without running them.
    List(cli::run::ListArgs),
    /// Accept the current engine traces as the goldens of the named scenarios (all by default).
    Bless(cli::run::BlessArgs),
    /// Review the pending goldens a failing run left (`goldens/*.snap.new`): the first changed
    /// points of each, then accept or reject (y/n/s/q); or `--accept-all` / `--reject-all`.
    Review(cli::review::Args),
    /// Render `report.html` again from a `report.json`.
    Report(cli::report::Args),
    /// Compare two trace directories as `parity` does (metrics, first divergence, per-layer
    /// table); exit 0 when B is within tolerance of A, 1 when not, 2 on bad input.
    Diff(cli::diff::Args),
    /// Print the JSON Schema of scenario files (`--receipt`: of receipts).
    Schema {
        #[arg(long)]
        receipt: bool,
    },
    /// llama.cpp's token ids of a text (JSON).
    RefTokenize(cli::ref_trace::TokenizeArgs),
    /// The engine's token ids of a text (JSON).
    Tokenize(cli::ref_trace::TokenizeArgs),
    /// Run llama.cpp against itself under harmless perturbations; propose tolerances.
    Calibrate(cli::calibrate::Args),
    /// Check receipts; a distinct exit code per failure class (see the README).
    VerifyReceipt(cli::verify::Args),
    /// Write a synthetic BitNet model (GGUF) from a spec or a preset.
    GenModel(cli::gen_model::Args),
    /// Show a GGUF file's metadata and tensors; `--check-arch` checks it maps to its
    /// architecture (exit 30 when not, 31 for an unknown architecture).
    Inspect(cli::inspect::Args),
    /// Run the engine on a model and tokens; write its trace directory.
    Trace {
        #[command(flatten)]
        args: cli::ref_trace::TraceArgs,
        /// Kernel variant (`auto`, `scalar`), optionally with knobs (`vnni256 rows 8 prefetch 0`);
        /// default from BITNET_KERNEL, else the best available.
        #[arg(long)]
        kernel: Option<String>,
    },
    /// Run llama.cpp (the reference) on a model and tokens; write its trace directory.
    RefTrace(cli::ref_trace::RefTraceArgs),
    /// Prefill and decode tokens/s of the engine and llama.cpp, side by side.
    Bench(cli::bench::Args),
    /// llama.cpp's timings for `bench` (run as a child process; prints one JSON line).
    #[command(hide = true)]
    RefBench(cli::bench::RefBenchArgs),
    /// Fail when a bench report's engine/llama.cpp ratios fall below the stored floors.
    PerfGate(cli::bench::GateArgs),
    /// Download the real models of `models.lock` (resumable, verified); `--offline` verifies.
    FetchModels(cli::fetch::Args),
    /// What this machine can run: CPU features, kernel variants, GPU, driver, NVRTC, llama.cpp
    /// build flags (a table, or `--json`).
    Preflight(cli::preflight::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // Read by every model load: a bad value is the command line's error, before any work
    // (preflight reports it instead, as it reports a bad `BITNET_KERNEL`).
    let reports_only = matches!(cli.command, Command::Preflight(_));
    if let (false, Err(e)) = (reports_only, bitnet_engine::model::WeightPages::from_env()) {
        errln!("error: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let result = match cli.command {
        Command::Run(a) => cli::run::run(a),
        Command::List(a) => cli::run::list(a),
        Command::Bless(a) => cli::run::bless(a),
        Command::Review(a) => cli::review::run(a),
        Command::Report(a) => cli::report::run(a),
        Command::Diff(a) => match cli::diff::run(a) {
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Command::Schema { receipt } => {
            if receipt {
                out!("{}", bitnet_harness::receipt::json_schema());
                Ok(())
            } else {
                cli::run::schema()
            }
        }
        Command::Calibrate(a) => cli::calibrate::run(a),
        Command::RefTokenize(a) => cli::ref_trace::ref_tokenize(a),
        Command::Tokenize(a) => cli::ref_trace::tokenize(a),
        Command::VerifyReceipt(a) => match cli::verify::run(a) {
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Command::GenModel(a) => cli::gen_model::run(a),
        Command::Inspect(a) => match cli::inspect::run(a) {
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Command::RefTrace(a) => cli::ref_trace::run(a),
        Command::Trace { args, kernel } => cli::trace::run(args, kernel),
        Command::Bench(a) => cli::bench::run(a),
        Command::RefBench(a) => cli::bench::ref_bench(a),
        Command::PerfGate(a) => cli::bench::perf_gate(a),
        Command::Preflight(a) => cli::preflight::run(a),
        Command::FetchModels(a) => match cli::fetch::run(a) {
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
    };
    match result {
        // The command's work is done, but its output did not reach standard output.
        Ok(()) if cli::stdout_failed() => ExitCode::from(EXIT_FAILED),
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) if e.downcast_ref::<cli::ChecksFailed>().is_some() => ExitCode::from(EXIT_FAILED),
        Err(e) => {
            // One line: the error and its causes.
            let mut msg = format!("error: {e}");
            for cause in e.chain().skip(1) {
                msg.push_str(&format!(": {cause}"));
            }
            errln!("{msg}");
            if e.downcast_ref::<cli::UsageError>().is_some() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::from(EXIT_FAILED)
            }
        }
    }
}
