//! The `harness` command line: parses arguments, runs one subcommand, maps errors to exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
enum Command {}

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
    match cli.command {}
}
