//! One module per subcommand; `main.rs` parses arguments and maps errors to exit codes.
//!
//! Output goes through `outln!`, `out!` and `errln!`, never `println!`: a reader that went
//! away (`harness run | head -3`, `harness inspect m.gguf | head -1`) must not panic the command
//! halfway through its work. Output to a closed pipe is dropped and the command finishes (a run
//! still writes its reports); any other failure to write standard output is reported once on
//! standard error and makes the command exit 1.

use std::sync::atomic::{AtomicBool, Ordering};

/// `println!` that a closed pipe does not panic (see the module documentation).
macro_rules! outln {
    () => {
        $crate::cli::write_out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that a closed pipe does not panic.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!($($arg)*))
    };
}

/// `eprintln!` that a closed pipe does not panic (`harness run 2>&1 | head`).
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub mod bench;
pub mod calibrate;
pub mod diff;
pub mod fetch;
pub mod gen_model;
pub mod inspect;
pub mod preflight;
pub mod ref_trace;
pub mod report;
pub mod review;
pub mod run;
pub mod trace;
pub mod verify;

/// Standard output's reader went away: later output is dropped.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
/// Writing standard output failed otherwise (a full disk): the command exits 1.
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// `text` with the characters a terminal would act on shown instead: C0 controls other than
/// newline and tab (ESC starts a terminal's escape sequences), DEL, C1 controls and the bidi
/// overrides and isolates, each as `\u{..}`. What the harness prints quotes file names, YAML,
/// trace records and a reference's output, none of which may drive the user's terminal.
pub fn visible(text: &str) -> std::borrow::Cow<'_, str> {
    let acts = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    if !text.chars().any(acts) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if acts(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Write to standard output: dropped once the reader has gone; another error is reported once.
/// Terminal controls in the text are shown, not sent ([`visible`]).
pub fn write_out(args: std::fmt::Arguments) {
    use std::io::Write;
    if STDOUT_GONE.load(Ordering::Relaxed) || STDOUT_FAILED.load(Ordering::Relaxed) {
        return;
    }
    let text = args.to_string();
    let mut o = std::io::stdout().lock();
    let r = o
        .write_all(visible(&text).as_bytes())
        .and_then(|()| o.flush());
    match r {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_GONE.store(true, Ordering::Relaxed);
        }
        Err(e) => {
            if !STDOUT_FAILED.swap(true, Ordering::Relaxed) {
                write_err(format_args!(
                    "error: cannot write to standard output: {e}\n"
                ));
            }
        }
    }
}

/// Write to standard error; a failure has nowhere to be reported, so it is dropped. Terminal
/// controls are shown, not sent ([`visible`]).
pub fn write_err(args: std::fmt::Arguments) {
    use std::io::Write;
    let text = args.to_string();
    let _ = std::io::stderr()
        .lock()
        .write_all(visible(&text).as_bytes());
}

/// Whether writing standard output failed for a reason other than a closed pipe.
pub fn stdout_failed() -> bool {
    STDOUT_FAILED.load(Ordering::Relaxed)
}

/// Write `text` to standard output (see [`write_out`]); an error other than a closed pipe is
/// returned.
pub fn emit(text: &str) -> anyhow::Result<()> {
    write_out(format_args!("{text}"));
    if stdout_failed() {
        anyhow::bail!("cannot write to standard output");
    }
    Ok(())
}

/// `n` and the noun, plural unless `n` is 1: "1 scenario", "2 checks".
pub fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// An error that the CLI reports as bad input or usage (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Some checks failed (exit code 1); the report already says which.
#[derive(Debug)]
pub struct ChecksFailed;

impl std::fmt::Display for ChecksFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("some checks failed")
    }
}

impl std::error::Error for ChecksFailed {}

#[cfg(test)]
mod tests {
    use super::visible;

    #[test]
    fn terminal_controls_are_shown_not_sent() {
        assert_eq!(visible("plain\ttext\n"), "plain\ttext\n");
        assert_eq!(
            visible("a\u{1b}[2Jb\u{1b}]0;title\u{7}c\rd\u{0}e\u{9b}f\u{202e}g\u{7f}"),
            "a\\u{1b}[2Jb\\u{1b}]0;title\\u{7}c\\u{d}d\\u{0}e\\u{9b}f\\u{202e}g\\u{7f}"
        );
        assert_eq!(visible("日本語 🙂 é"), "日本語 🙂 é");
    }
}
