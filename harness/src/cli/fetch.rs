//! `harness fetch-models`: download the models of `models.lock` (resumable, verified), or with
//! `--offline` only verify the files present. Exit codes: see `bitnet_harness::fetch`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use bitnet_harness::fetch::download::{self, FetchEvent, FetchOptions, Outcome};
use bitnet_harness::fetch::{self, LockedModel, VerifyError};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use super::UsageError;

/// Arguments of `harness fetch-models`.
#[derive(clap::Args)]
pub struct Args {
    /// Models to fetch, by their name in the lock; every locked model by default.
    pub names: Vec<String>,
    /// No network: verify the files present and report each model as present and verified,
    /// missing, or mismatched.
    #[arg(long)]
    pub offline: bool,
    /// The lock file.
    #[arg(long, default_value = "models.lock")]
    pub lock: PathBuf,
    /// Where the models go, as `<DIR>/<name>.gguf`.
    #[arg(long, default_value = fetch::MODELS_DIR)]
    pub dir: PathBuf,
    /// Failed attempts in a row before giving up [default: 5, or BITNET_FETCH_RETRIES].
    #[arg(long)]
    pub retries: Option<u32>,
    /// Wait before the first retry, doubling after each failure in a row [default: 1000, or
    /// BITNET_FETCH_RETRY_DELAY_MS].
    #[arg(long)]
    pub retry_delay_ms: Option<u64>,
    /// Seconds to connect, and that the server may send nothing before an attempt fails
    /// [default: 30, or BITNET_FETCH_TIMEOUT].
    #[arg(long)]
    pub timeout: Option<f64>,
}

/// An option's value: the flag, else the environment variable, else the default.
fn setting<T: std::str::FromStr>(flag: Option<T>, env: &str, default: T) -> Result<T> {
    if let Some(v) = flag {
        return Ok(v);
    }
    match std::env::var(env) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| {
            UsageError(format!(
                "environment variable `{env}` is `{v}`, expected a number"
            ))
            .into()
        }),
        _ => Ok(default),
    }
}

fn options(a: &Args) -> Result<FetchOptions> {
    let d = FetchOptions::default();
    let timeout = setting(a.timeout, download::ENV_TIMEOUT, d.timeout.as_secs_f64())?;
    if !(timeout.is_finite() && timeout > 0.0 && timeout <= 86_400.0) {
        return Err(UsageError(format!(
            "the timeout is {timeout} s, expected more than 0 and at most a day"
        ))
        .into());
    }
    Ok(FetchOptions {
        retries: setting(a.retries, download::ENV_RETRIES, d.retries)?,
        retry_delay: Duration::from_millis(setting(
            a.retry_delay_ms,
            download::ENV_RETRY_DELAY_MS,
            d.retry_delay.as_millis() as u64,
        )?),
        timeout: Duration::from_secs_f64(timeout),
        max_redirects: d.max_redirects,
    })
}

/// Returns the exit code.
pub fn run(a: Args) -> Result<u8> {
    let opts = options(&a)?;
    let lock = match fetch::load_lock(&a.lock) {
        Ok(l) => l,
        Err(e) => {
            errln!("error: {e}");
            return Ok(fetch::EXIT_LOCK);
        }
    };
    let mut models: Vec<&LockedModel> = Vec::new();
    for n in &a.names {
        let m = lock.get(n).ok_or_else(|| {
            let hint = bitnet_harness::scenario::did_you_mean(n, lock.names())
                .map(|m| format!("; did you mean `{m}`?"))
                .unwrap_or_default();
            UsageError(format!(
                "`{}` locks no model `{n}`; it locks: {}{hint}",
                a.lock.display(),
                lock.names().join(", ")
            ))
        })?;
        if !models.iter().any(|x| x.name == m.name) {
            models.push(m);
        }
    }
    if a.names.is_empty() {
        models = lock.models.iter().collect();
    }
    if a.offline {
        return Ok(verify_offline(&models, &a.dir));
    }
    let agent = download::agent(&opts);
    let mut code = fetch::EXIT_OK;
    for m in models {
        let mut reporter = Reporter::new();
        let result = download::fetch_model(&agent, m, &a.dir, &opts, &mut |e| reporter.on(e));
        reporter.finish();
        let dest = fetch::model_file(&a.dir, &m.name);
        match result {
            Ok(Outcome::UpToDate) => outln!("{}: up to date (`{}`)", m.name, dest.display()),
            Ok(Outcome::Downloaded {
                resumed_from,
                attempts,
            }) => outln!(
                "{}: downloaded and verified (`{}`, {} bytes{}{})",
                m.name,
                dest.display(),
                m.size,
                if resumed_from > 0 {
                    format!(", resumed from byte {resumed_from}")
                } else {
                    String::new()
                },
                if attempts > 1 {
                    format!(", in {attempts} requests")
                } else {
                    String::new()
                }
            ),
            Err(e) => {
                errln!("error: {e}");
                if code == fetch::EXIT_OK {
                    code = e.exit_code();
                }
            }
        }
    }
    Ok(code)
}

/// `--offline`: one line per model; the exit code of the first model missing or mismatched.
fn verify_offline(models: &[&LockedModel], dir: &Path) -> u8 {
    let mut code = fetch::EXIT_OK;
    let mut fail = |c: u8| {
        if code == fetch::EXIT_OK {
            code = c;
        }
    };
    for m in models {
        let dest = fetch::model_file(dir, &m.name);
        if !dest.exists() {
            let part = fetch::part_file(dir, &m.name);
            let partial = std::fs::metadata(&part)
                .map(|p| {
                    format!(
                        "; a partial download of {} bytes is in `{}`",
                        p.len(),
                        part.display()
                    )
                })
                .unwrap_or_default();
            outln!(
                "{}: missing (`{}` is absent{partial}): run `{}`",
                m.name,
                dest.display(),
                fetch::fetch_command(&m.name)
            );
            fail(fetch::EXIT_MISSING);
            continue;
        }
        match fetch::verify_file(&dest, m) {
            Ok(()) => outln!("{}: present and verified (`{}`)", m.name, dest.display()),
            Err(VerifyError::Mismatch(mismatch)) => {
                outln!("{}: mismatched: {mismatch}", m.name);
                fail(fetch::EXIT_MISMATCH);
            }
            Err(VerifyError::Io(e)) => {
                outln!("{}: unreadable: `{}`: {e}", m.name, dest.display());
                fail(fetch::EXIT_FAILED);
            }
        }
    }
    code
}

/// Progress on stderr: a bar on a terminal, a line every few seconds otherwise (logs, CI).
struct Reporter {
    tty: bool,
    bar: Option<ProgressBar>,
    last_line: Option<Instant>,
}

/// Seconds between plain progress lines.
const LINE_EVERY: Duration = Duration::from_secs(5);

impl Reporter {
    fn new() -> Reporter {
        Reporter {
            tty: std::io::stderr().is_terminal(),
            bar: None,
            last_line: None,
        }
    }

    fn say(&self, line: String) {
        match &self.bar {
            Some(b) => b.println(line),
            None => errln!("{line}"),
        }
    }

    fn on(&mut self, e: FetchEvent) {
        match e {
            FetchEvent::Verifying { name, path } => {
                self.say(format!("{name}: verifying `{}`", path.display()))
            }
            FetchEvent::Receiving { name, from, total } => {
                if self.tty {
                    let bar = self.bar.get_or_insert_with(|| {
                        let b = ProgressBar::new(total);
                        b.set_style(
                            ProgressStyle::with_template(
                                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                            )
                            .expect("valid template")
                            .progress_chars("=> "),
                        );
                        b.set_message(name.to_owned());
                        b
                    });
                    bar.set_position(from);
                } else {
                    errln!(
                        "{name}: receiving{} of {}",
                        if from > 0 {
                            format!(" from byte {from}")
                        } else {
                            String::new()
                        },
                        HumanBytes(total)
                    );
                    self.last_line = Some(Instant::now());
                }
            }
            FetchEvent::Progress { name, done, total } => {
                if let Some(b) = &self.bar {
                    b.set_position(done);
                } else if self.last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY) {
                    errln!(
                        "{name}: {} of {} ({:.0}%)",
                        HumanBytes(done),
                        HumanBytes(total),
                        done as f64 * 100.0 / total.max(1) as f64
                    );
                    self.last_line = Some(Instant::now());
                }
            }
            FetchEvent::Restarting { name, reason } => {
                self.say(format!("{name}: starting over from byte 0: {reason}"))
            }
            FetchEvent::Retrying {
                name,
                failure,
                retries,
                wait,
                error,
            } => self.say(format!(
                "{name}: attempt failed: {error}; retry {failure} of {retries} in {:.1} s",
                wait.as_secs_f64()
            )),
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
