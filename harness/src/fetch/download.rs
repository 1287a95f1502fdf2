//! Resumable, verified HTTP downloads of locked models. Bytes go to `<name>.gguf.part`, resumed
//! with `Range: bytes=N-` after an interruption or a killed run; the finished file is checked
//! against the lock's size and hashes before it is renamed into place, so `<name>.gguf` is only
//! ever a verified file. Progress reaches the caller through [`FetchEvent`]s.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{bad_file, model_file, part_file, verify_file, LockedModel, Mismatch, VerifyError};
use super::{EXIT_FAILED, EXIT_MISMATCH, EXIT_NETWORK};

/// Environment variable: default of `--retries`.
pub const ENV_RETRIES: &str = "BITNET_FETCH_RETRIES";
/// Environment variable: default of `--retry-delay-ms`.
pub const ENV_RETRY_DELAY_MS: &str = "BITNET_FETCH_RETRY_DELAY_MS";
/// Environment variable: default of `--timeout`, in seconds.
pub const ENV_TIMEOUT: &str = "BITNET_FETCH_TIMEOUT";

/// How a download behaves on a slow or failing network.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Failed attempts in a row before giving up (an attempt that received at least 1 MiB
    /// resets the count; connection errors, timeouts, 5xx, 408 and 429 are retried; other 4xx
    /// are not).
    pub retries: u32,
    /// The wait before the first retry; it doubles with each failure in a row, up to a minute.
    pub retry_delay: Duration,
    /// Connect timeout, and how long the server may send nothing (headers or body) before the
    /// attempt fails: a stalled server cannot hang the run.
    pub timeout: Duration,
    /// Redirects followed per request (Hugging Face redirects to a CDN).
    pub max_redirects: u32,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            retries: 5,
            retry_delay: Duration::from_millis(1000),
            timeout: Duration::from_secs(30),
            max_redirects: 10,
        }
    }
}

/// Attempts of one download at most, whatever progress they make (so it always ends).
const MAX_ATTEMPTS: u32 = 200;

/// Bytes an attempt must receive to reset the count of failures in a row: a server that sends
/// a little and stalls each time still runs out of retries.
const PROGRESS_RESETS: u64 = 1 << 20;

/// What a download tells its caller as it goes.
#[derive(Debug, Clone)]
pub enum FetchEvent<'a> {
    /// Hashing a present file against the lock.
    Verifying { name: &'a str, path: &'a Path },
    /// A response's body starts: `from` bytes are already on disk, `total` is the locked size.
    Receiving {
        name: &'a str,
        from: u64,
        total: u64,
    },
    /// Bytes on disk so far.
    Progress {
        name: &'a str,
        done: u64,
        total: u64,
    },
    /// The partial file is discarded and the download starts over from byte 0.
    Restarting { name: &'a str, reason: String },
    /// An attempt failed; the next one starts after `wait`.
    Retrying {
        name: &'a str,
        failure: u32,
        retries: u32,
        wait: Duration,
        error: String,
    },
}

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The file was present and matches the lock: nothing downloaded.
    UpToDate,
    /// Downloaded (resuming a partial file of `resumed_from` bytes left by an earlier run) in
    /// `attempts` requests, verified, renamed into place.
    Downloaded { resumed_from: u64, attempts: u32 },
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server answered a status that retrying will not change (404, 403, ...).
    #[error("model `{model}`: `{url}` answered HTTP {status}{}", hint(*status))]
    Http {
        model: String,
        url: String,
        status: u16,
    },
    /// Connection errors, timeouts or 5xx, retries exhausted (or a failure not worth retrying,
    /// such as too many redirects).
    #[error("model `{model}`: `{url}`: {message}")]
    Network {
        model: String,
        url: String,
        message: String,
    },
    /// The download (or the file already in place) is not what the lock says.
    #[error(transparent)]
    Mismatch(Box<Mismatch>),
    /// The server's file is not the locked one (its size differs), found before downloading it.
    #[error("model `{model}`: `{url}` serves {actual} bytes, `models.lock` expects {expected}: the server's file is not the locked one")]
    ServerSize {
        model: String,
        url: String,
        expected: u64,
        actual: u64,
    },
    /// The server sent more bytes than the lock's size.
    #[error("model `{model}`: `{url}` sent more than the {expected} bytes `models.lock` expects: the server's file is not the locked one")]
    TooLong {
        model: String,
        url: String,
        expected: u64,
    },
    /// A local file could not be read or written.
    #[error("`{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another `harness fetch-models` is downloading into the same directory.
    #[error("model `{model}`: another `harness fetch-models` is downloading into `{}`; run one at a time", dir.display())]
    Busy { model: String, dir: PathBuf },
}

fn hint(status: u16) -> &'static str {
    match status {
        404 => " (not found: is the lock's `url` right?)",
        401 | 403 => " (access denied: the file may need a login or accepted license)",
        416 => " (range not satisfiable)",
        _ => "",
    }
}

impl FetchError {
    /// The `harness fetch-models` exit code of this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            FetchError::Http { .. } | FetchError::Network { .. } => EXIT_NETWORK,
            FetchError::Mismatch(_)
            | FetchError::ServerSize { .. }
            | FetchError::TooLong { .. } => EXIT_MISMATCH,
            FetchError::Io { .. } | FetchError::Busy { .. } => EXIT_FAILED,
        }
    }
}

/// The HTTP agent for [`fetch_model`]: status codes are answers (not errors), redirects are
/// followed up to the cap, and every phase that waits on the server has a timeout.
pub fn agent(opts: &FetchOptions) -> ureq::Agent {
    let t = Some(opts.timeout);
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(opts.max_redirects)
        .timeout_connect(t)
        .timeout_recv_response(t)
        .timeout_per_read(t)
        .user_agent(concat!("bitnet-harness/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Fetch one locked model into `dir` (see the module doc): up to date when `<name>.gguf` is
/// present and verified; otherwise download (resuming `<name>.gguf.part`), verify, rename.
/// A present `<name>.gguf` that does not match the lock is reported and left untouched.
pub fn fetch_model(
    agent: &ureq::Agent,
    m: &LockedModel,
    dir: &Path,
    opts: &FetchOptions,
    events: &mut dyn FnMut(FetchEvent),
) -> Result<Outcome, FetchError> {
    let dest = model_file(dir, &m.name);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| FetchError::Io { path, source }
    };
    if dest.exists() {
        events(FetchEvent::Verifying {
            name: &m.name,
            path: &dest,
        });
        return match verify_file(&dest, m) {
            Ok(()) => Ok(Outcome::UpToDate),
            Err(VerifyError::Mismatch(mut mismatch)) => {
                mismatch.note =
                    "the file in place is left untouched: move it away (or delete it) to download the locked one".into();
                Err(FetchError::Mismatch(mismatch))
            }
            Err(VerifyError::Io(e)) => Err(io(&dest)(e)),
        };
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let _guard = lock_dir(dir, &m.name)?;
    let part = part_file(dir, &m.name);
    let result = download(agent, m, dir, &part, opts, events);
    if result.is_err() && std::fs::metadata(&part).is_ok_and(|p| p.len() == 0) {
        // Nothing to resume: leave no empty partial file behind.
        let _ = std::fs::remove_file(&part);
    }
    result
}

/// Download into `part` (resuming it), verify it, rename it to `<name>.gguf`.
fn download(
    agent: &ureq::Agent,
    m: &LockedModel,
    dir: &Path,
    part: &Path,
    opts: &FetchOptions,
    events: &mut dyn FnMut(FetchEvent),
) -> Result<Outcome, FetchError> {
    let dest = model_file(dir, &m.name);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| FetchError::Io { path, source }
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(part)
        .map_err(io(part))?;
    let mut have = file.metadata().map_err(io(part))?.len();
    if have > m.size {
        events(FetchEvent::Restarting {
            name: &m.name,
            reason: format!(
                "the partial file has {have} bytes, more than the locked {}",
                m.size
            ),
        });
        have = 0;
    }
    file.set_len(have).map_err(io(part))?;
    file.seek(std::io::SeekFrom::Start(have))
        .map_err(io(part))?;
    let resumed_from = have;
    let (mut failures, mut attempts) = (0u32, 0u32);
    while have < m.size {
        attempts += 1;
        let before = have;
        let result = attempt(agent, m, opts.timeout, &mut file, part, &mut have, events);
        let error = match result {
            Ok(()) if have >= m.size => break,
            Ok(()) => format!("the connection closed after {have} of {} bytes", m.size),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Restart(reason)) => {
                events(FetchEvent::Restarting {
                    name: &m.name,
                    reason,
                });
                file.set_len(0).map_err(io(part))?;
                file.rewind().map_err(io(part))?;
                have = 0;
                if attempts < MAX_ATTEMPTS {
                    continue;
                }
                "the server keeps answering ranges other than the one asked".into()
            }
            Err(Attempt::Retry(e)) => e,
        };
        failures = if have >= before + PROGRESS_RESETS {
            1
        } else {
            failures + 1
        };
        if failures > opts.retries || attempts >= MAX_ATTEMPTS {
            let kept = if have > 0 {
                format!(
                    "; {have} of {} bytes kept in `{}` for the next run to resume",
                    m.size,
                    part.display()
                )
            } else {
                String::new()
            };
            return Err(FetchError::Network {
                model: m.name.clone(),
                url: m.url.clone(),
                message: format!(
                    "{error} (gave up after {attempts} attempt{}{kept})",
                    if attempts == 1 { "" } else { "s" },
                ),
            });
        }
        let wait = backoff(opts.retry_delay, failures);
        events(FetchEvent::Retrying {
            name: &m.name,
            failure: failures,
            retries: opts.retries,
            wait,
            error,
        });
        std::thread::sleep(wait);
    }
    file.sync_all().map_err(io(part))?;
    drop(file);
    events(FetchEvent::Verifying {
        name: &m.name,
        path: part,
    });
    match verify_file(part, m) {
        Ok(()) => {}
        Err(VerifyError::Mismatch(mut mismatch)) => {
            // Never renamed into place, and not resumed either: kept aside for a look.
            let bad = bad_file(dir, &m.name);
            mismatch.note = match std::fs::rename(part, &bad) {
                Ok(()) => format!(
                    "the download is kept as `{}`, not renamed into place; the next run starts over",
                    bad.display()
                ),
                Err(e) => {
                    let _ = std::fs::remove_file(part);
                    format!("the download was removed (keeping it failed: {e})")
                }
            };
            return Err(FetchError::Mismatch(mismatch));
        }
        Err(VerifyError::Io(e)) => return Err(io(part)(e)),
    }
    std::fs::rename(part, &dest).map_err(io(&dest))?;
    if let Ok(d) = File::open(dir) {
        // The rename itself durable (best effort).
        let _ = d.sync_all();
    }
    Ok(Outcome::Downloaded {
        resumed_from,
        attempts,
    })
}

/// How one attempt failed.
enum Attempt {
    /// Worth another attempt (connection error, timeout, 5xx, a body cut short).
    Retry(String),
    /// Discard the partial file and start over (the server ignored or refused the range).
    Restart(String),
    /// Retrying will not help.
    Fatal(FetchError),
}

/// One request: ask for the bytes from `have` on and append them to `file`.
fn attempt(
    agent: &ureq::Agent,
    m: &LockedModel,
    timeout: Duration,
    file: &mut File,
    part: &Path,
    have: &mut u64,
    events: &mut dyn FnMut(FetchEvent),
) -> Result<(), Attempt> {
    let mut req = agent.get(&m.url);
    if *have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let mut resp = req.call().map_err(|e| classify(e, m, timeout))?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_length = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
    let server_size = |actual: u64| {
        Attempt::Fatal(FetchError::ServerSize {
            model: m.name.clone(),
            url: m.url.clone(),
            expected: m.size,
            actual,
        })
    };
    match status {
        206 => {
            let range = header("content-range").and_then(|v| parse_content_range(&v));
            match range {
                Some((start, _, total)) if start == *have => {
                    if let Some(total) = total.filter(|&t| t != m.size) {
                        return Err(server_size(total));
                    }
                }
                _ => {
                    return Err(Attempt::Restart(format!(
                        "asked for bytes from {have}, the server answered `Content-Range: {}`",
                        header("content-range").unwrap_or_default()
                    )))
                }
            }
        }
        200 => {
            if let Some(len) = content_length.filter(|&l| l != m.size) {
                return Err(server_size(len));
            }
            if *have > 0 {
                // The body is the whole file: empty the partial file and take it from byte 0.
                events(FetchEvent::Restarting {
                    name: &m.name,
                    reason: format!(
                        "the server ignored the range request (HTTP 200 to `Range: bytes={have}-`)"
                    ),
                });
                let io = |source| {
                    Attempt::Fatal(FetchError::Io {
                        path: part.to_owned(),
                        source,
                    })
                };
                file.set_len(0).map_err(io)?;
                file.rewind().map_err(io)?;
                *have = 0;
            }
        }
        416 if *have > 0 => {
            // The partial file does not fit the server's: start over.
            return Err(Attempt::Restart(format!(
                "the server cannot serve bytes from {have} (HTTP 416, `Content-Range: {}`)",
                header("content-range").unwrap_or_default()
            )));
        }
        408 | 429 | 500..=599 => {
            return Err(Attempt::Retry(format!("HTTP {status}")));
        }
        _ => {
            return Err(Attempt::Fatal(FetchError::Http {
                model: m.name.clone(),
                url: m.url.clone(),
                status,
            }))
        }
    }
    events(FetchEvent::Receiving {
        name: &m.name,
        from: *have,
        total: m.size,
    });
    let mut reader = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Attempt::Retry(describe_io(&e, timeout))),
        };
        if *have + n as u64 > m.size {
            return Err(Attempt::Fatal(FetchError::TooLong {
                model: m.name.clone(),
                url: m.url.clone(),
                expected: m.size,
            }));
        }
        file.write_all(&buf[..n]).map_err(|source| {
            Attempt::Fatal(FetchError::Io {
                path: part.to_owned(),
                source,
            })
        })?;
        *have += n as u64;
        events(FetchEvent::Progress {
            name: &m.name,
            done: *have,
            total: m.size,
        });
    }
}

/// Sort a failed request into retry or not.
fn classify(e: ureq::Error, m: &LockedModel, timeout: Duration) -> Attempt {
    let network = |message: String| {
        Attempt::Fatal(FetchError::Network {
            model: m.name.clone(),
            url: m.url.clone(),
            message,
        })
    };
    match e {
        ureq::Error::Timeout(t) => Attempt::Retry(timed_out(t, timeout)),
        ureq::Error::Io(e) => Attempt::Retry(describe_io(&e, timeout)),
        ureq::Error::HostNotFound => Attempt::Retry("host not found".into()),
        ureq::Error::ConnectionFailed => Attempt::Retry("connection failed".into()),
        ureq::Error::Protocol(e) => Attempt::Retry(format!("bad HTTP from the server: {e}")),
        ureq::Error::TooManyRedirects => network("too many redirects".into()),
        ureq::Error::BadUri(u) => network(format!("bad URL `{u}`")),
        other => network(other.to_string()),
    }
}

/// A timeout in words: which phase, and for how long.
fn timed_out(t: ureq::Timeout, timeout: Duration) -> String {
    let secs = timeout.as_secs_f64();
    match t {
        ureq::Timeout::Connect => format!("timed out connecting ({secs} s)"),
        t => format!("timed out: the server sent nothing for {secs} s ({t} timeout)"),
    }
}

/// An I/O error while receiving, in words (a timeout says so).
fn describe_io(e: &std::io::Error, timeout: Duration) -> String {
    if let Some(ureq::Error::Timeout(t)) = e.get_ref().and_then(|x| x.downcast_ref()) {
        return timed_out(*t, timeout);
    }
    match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => format!(
            "timed out: the server sent nothing for {} s",
            timeout.as_secs_f64()
        ),
        std::io::ErrorKind::UnexpectedEof => "the connection closed before the body ended".into(),
        _ => e.to_string(),
    }
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`) → (START, END, TOTAL).
pub fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start.trim().parse().ok()?, end.trim().parse().ok()?, total))
}

/// The wait before retry `failure` (1-based): `base`, doubling, at most a minute.
pub fn backoff(base: Duration, failure: u32) -> Duration {
    let factor = 1u32 << failure.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(Duration::from_secs(60))
}

/// An exclusive lock on the models directory while this process downloads into it: two
/// fetches writing one partial file would corrupt it. `flock` on the directory itself, so no
/// lock file is left behind; released when the process ends, however it ends.
struct DirGuard(#[allow(dead_code)] File);

fn lock_dir(dir: &Path, name: &str) -> Result<DirGuard, FetchError> {
    use std::os::fd::AsRawFd;
    let f = File::open(dir).map_err(|source| FetchError::Io {
        path: dir.to_owned(),
        source,
    })?;
    // SAFETY: flock on a descriptor this process owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(FetchError::Busy {
            model: name.to_owned(),
            dir: dir.to_owned(),
        });
    }
    Ok(DirGuard(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, 199, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let b = Duration::from_millis(100);
        assert_eq!(backoff(b, 1), b);
        assert_eq!(backoff(b, 2), b * 2);
        assert_eq!(backoff(b, 4), b * 8);
        assert_eq!(backoff(b, 40), Duration::from_secs(60));
    }

    #[test]
    fn exit_codes_are_distinct_per_class() {
        let http = FetchError::Http {
            model: "m".into(),
            url: "u".into(),
            status: 404,
        };
        assert_eq!(http.exit_code(), EXIT_NETWORK);
        assert!(http.to_string().contains("HTTP 404"));
        let size = FetchError::ServerSize {
            model: "m".into(),
            url: "u".into(),
            expected: 1,
            actual: 2,
        };
        assert_eq!(size.exit_code(), EXIT_MISMATCH);
    }
}
