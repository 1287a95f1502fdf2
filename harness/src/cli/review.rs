//! `harness review`: the pending goldens (`goldens/<scenario>.snap.new`, left by a failing
//! `golden` check outside CI), one at a time: the first changed points, then accept (`y`),
//! reject (`n`), skip (`s`) or quit (`q`), read as lines from standard input; or all at once with
//! `--accept-all` / `--reject-all`.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, Result};
use bitnet_harness::golden::{self, GoldenOutcome, Pending};

use super::UsageError;

/// Arguments of `harness review`.
#[derive(clap::Args)]
pub struct Args {
    /// Only the pending goldens of these scenarios (file stems); all when none is given.
    pub scenarios: Vec<String>,
    /// Where the goldens are (default: `goldens` here, else that of the project the current
    /// directory is in, as `harness bless` finds it).
    #[arg(long)]
    pub goldens: Option<PathBuf>,
    /// Accept every pending golden without asking.
    #[arg(long, conflicts_with = "reject_all")]
    pub accept_all: bool,
    /// Reject (delete) every pending golden without asking.
    #[arg(long)]
    pub reject_all: bool,
    /// Changed lines shown per golden.
    #[arg(long, default_value_t = 12)]
    pub lines: usize,
}

enum Answer {
    Accept,
    Reject,
    Skip,
    Quit,
}

/// Ask until the answer is one of y/n/s/q; `Quit` at the end of the input.
fn ask(input: &mut impl BufRead, shown: &str) -> Result<Answer> {
    loop {
        out!("accept `{shown}`? [y]es / [n]o, reject / [s]kip / [q]uit: ");
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            outln!();
            outln!("(end of input: the remaining goldens stay pending)");
            return Ok(Answer::Quit);
        }
        match line.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" | "a" | "accept" => return Ok(Answer::Accept),
            "n" | "no" | "r" | "reject" => return Ok(Answer::Reject),
            "s" | "skip" | "" => return Ok(Answer::Skip),
            "q" | "quit" => return Ok(Answer::Quit),
            other => outln!("`{other}` is not an answer: y, n, s or q"),
        }
    }
}

/// Print what accepting `p` would change; the golden's path as shown, and the body shown.
fn show(goldens: &std::path::Path, p: &Pending, lines: usize) -> Result<(String, String)> {
    let shown = golden::snapshot_path(goldens, &p.stem)
        .display()
        .to_string();
    let (body, outcome) = golden::review_pending(goldens, p).with_context(|| {
        format!(
            "reading `{}` or the golden it would replace, `{shown}` (a broken golden is rewritten by `harness bless {}`)",
            p.path.display(),
            bitnet_harness::shell_word(&p.stem)
        )
    })?;
    outln!();
    match outcome {
        GoldenOutcome::Match => {
            outln!("{}: identical to `{shown}`", p.path.display());
        }
        GoldenOutcome::Missing => {
            let n = body.lines().count();
            outln!("{}: a new golden `{shown}`, {n} lines:", p.path.display());
            for l in body.lines().take(lines) {
                outln!("  +{l}");
            }
            if n > lines {
                outln!("  … and {} more lines", n - lines);
            }
        }
        GoldenOutcome::Changed { first_point, diff } => {
            let added = diff.iter().filter(|l| l.starts_with('+')).count();
            let removed = diff.len() - added;
            outln!(
                "{}: changes `{shown}` ({added} lines new or changed, {removed} old lines), first at `{first_point}`:",
                p.path.display()
            );
            for l in diff.iter().take(lines) {
                outln!("  {l}");
            }
            if diff.len() > lines {
                outln!("  … and {} more", diff.len() - lines);
            }
        }
    }
    Ok((shown, body))
}

pub fn run(mut args: Args) -> Result<()> {
    let goldens = args.goldens.take().unwrap_or_else(|| {
        let here = PathBuf::from("goldens");
        if here.is_dir() {
            return here;
        }
        std::env::current_dir()
            .ok()
            .and_then(|d| bitnet_harness::scenario::enclosing_project(&d))
            .map_or(here, |p| p.join("goldens"))
    });
    if !goldens.is_dir() {
        return Err(UsageError(format!(
            "`{}` is not a directory of goldens: run inside the project, or give `--goldens`",
            goldens.display()
        ))
        .into());
    }
    let goldens = &goldens;
    let all =
        golden::pending(goldens).with_context(|| format!("listing `{}`", goldens.display()))?;
    for name in &args.scenarios {
        if !all.iter().any(|p| &p.stem == name) {
            let hint =
                bitnet_harness::scenario::did_you_mean(name, all.iter().map(|p| p.stem.as_str()))
                    .map(|m| format!("; did you mean `{m}`?"))
                    .unwrap_or_default();
            return Err(UsageError(format!(
                "no pending golden `{}`{hint}",
                golden::pending_path(goldens, name).display()
            ))
            .into());
        }
    }
    let todo: Vec<&Pending> = all
        .iter()
        .filter(|p| args.scenarios.is_empty() || args.scenarios.contains(&p.stem))
        .collect();
    if todo.is_empty() {
        outln!(
            "no pending goldens in `{}` (a failing `golden` check leaves `<scenario>.snap.new` there when `CI` is not set)",
            goldens.display()
        );
        return Ok(());
    }
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let (mut accepted, mut rejected, mut left, mut unreadable) = (0, 0, 0, 0);
    for (i, p) in todo.iter().enumerate() {
        // One pending golden that cannot be read does not stop the others; `--reject-all`
        // removes it like any other.
        let (shown, body) = match show(goldens, p, args.lines) {
            Ok(s) => s,
            Err(e) => {
                errln!("error: {e:#}");
                if args.reject_all {
                    golden::reject_pending(p)
                        .with_context(|| format!("removing `{}`", p.path.display()))?;
                    outln!("rejected: `{}` removed", p.path.display());
                    rejected += 1;
                } else {
                    errln!(
                        "  it stays pending: fix it, or remove it with `harness review --reject-all {}`",
                        bitnet_harness::shell_word(&p.stem)
                    );
                    unreadable += 1;
                }
                continue;
            }
        };
        let answer = if args.accept_all {
            Answer::Accept
        } else if args.reject_all {
            Answer::Reject
        } else {
            ask(&mut input, &shown)?
        };
        match answer {
            Answer::Accept => {
                let path = match golden::accept_pending(goldens, p, &body) {
                    Ok(path) => path,
                    Err(e) => {
                        errln!("error: accepting `{}`: {e}", p.path.display());
                        unreadable += 1;
                        continue;
                    }
                };
                outln!("accepted: `{}` written", path.display());
                accepted += 1;
            }
            Answer::Reject => {
                golden::reject_pending(p)
                    .with_context(|| format!("removing `{}`", p.path.display()))?;
                outln!("rejected: `{}` removed", p.path.display());
                rejected += 1;
            }
            Answer::Skip => {
                outln!("skipped: `{}` stays pending", p.path.display());
                left += 1;
            }
            Answer::Quit => {
                left += todo.len() - i;
                break;
            }
        }
    }
    outln!("\n{accepted} accepted, {rejected} rejected, {left} still pending");
    if unreadable > 0 {
        anyhow::bail!(
            "{} could not be reviewed (see above)",
            super::count(unreadable, "pending golden")
        );
    }
    Ok(())
}
