//! `harness fetch-models` against a small HTTP server on 127.0.0.1 that this file starts (one per
//! test; it serves byte ranges and misbehaves on purpose by path), and scenarios naming a locked
//! model. Index:
//! - a full download is verified and renamed; a second run is "up to date" without a request;
//! - a transfer cut mid-body is retried and resumed with `Range: bytes=N-` (N checked); so is a
//!   `.part` file left by a killed run; a server ignoring the range restarts from byte 0;
//! - redirects are followed (and capped); 5xx are retried; a 404 fails at once; a body longer
//!   than the locked size is refused;
//! - a stalled server times out in seconds;
//! - a wrong hash is an error naming both hashes and renames nothing into place; a file already
//!   in place that does not match is left untouched;
//! - `--offline` reports present, missing and mismatched files without a request;
//! - lock errors name the line and the field; each failure class has its exit code;
//! - a scenario naming a locked model is skipped, with the fetch command, while the file is
//!   absent, runs once it is fetched, and fails when the file no longer matches the lock.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::Digest;

/// One request the server saw: its path and `Range` header.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    path: String,
    range: Option<String>,
}

/// A test HTTP server. Paths:
/// `/file` serves `data` (honouring `Range: bytes=N-`); `/drop` cuts its first response after
/// `cut` bytes of body; `/norange` ignores ranges (always 200, whole file); `/stall` sends 100
/// bytes of body and then nothing; `/nolength` sends no `Content-Length` (the body ends when the
/// connection closes); `/flaky` answers 503 twice; `/missing` 404; `/redir`
/// redirects to `/file`; `/loop` redirects to itself. Every connection is closed after one
/// response. Stops when dropped; a stalled response ends by itself after 20 s.
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(data: Vec<u8>, cut: usize) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let data = Arc::new(data);
        let (s, st) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (s, st, data) = (s.clone(), st.clone(), data.clone());
                std::thread::spawn(move || serve(conn, &s, &st, &data, cut));
            }
        });
        Server { addr, seen, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self, path: &str) -> Vec<Option<String>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .map(|s| s.range.clone())
            .collect()
    }

    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn serve(conn: TcpStream, seen: &Mutex<Vec<Seen>>, stop: &AtomicBool, data: &[u8], cut: usize) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let earlier = {
        let mut s = seen.lock().unwrap();
        let n = s.iter().filter(|x| x.path == path).count();
        s.push(Seen {
            path: path.clone(),
            range: range.clone(),
        });
        n
    };
    let mut out = conn;
    let simple = |out: &mut TcpStream, status: &str, extra: &str| {
        let body = status.as_bytes();
        let _ = write!(
            out,
            "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = out.write_all(body);
    };
    match path.as_str() {
        "/missing" => return simple(&mut out, "404 Not Found", ""),
        "/redir" => return simple(&mut out, "302 Found", "Location: /file\r\n"),
        "/loop" => return simple(&mut out, "302 Found", "Location: /loop\r\n"),
        "/flaky" if earlier < 2 => return simple(&mut out, "503 Service Unavailable", ""),
        _ => {}
    }
    let len = data.len();
    let mut start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    if path == "/norange" {
        start = 0;
    }
    if start >= len && start > 0 {
        let _ = write!(
            out,
            "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    }
    let head = if path == "/nolength" {
        // Close-delimited: no Content-Length.
        "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_string()
    } else if start > 0 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            len - 1,
            len - start
        )
    } else {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    let _ = out.write_all(head.as_bytes());
    let body = &data[start..];
    match path.as_str() {
        "/drop" if earlier == 0 => {
            let _ = out.write_all(&body[..cut.min(body.len())]);
        }
        "/stall" => {
            let _ = out.write_all(&body[..100.min(body.len())]);
            let _ = out.flush();
            let t = Instant::now();
            while !stop.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        _ => {
            let _ = out.write_all(body);
        }
    }
    let _ = out.flush();
    let _ = out.shutdown(std::net::Shutdown::Write);
}

/// Deterministic bytes, different per seed.
fn bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn sha256(data: &[u8]) -> String {
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A locked model: name, URL, and the bytes whose size and hashes the lock records.
fn entry(name: &str, url: &str, data: &[u8]) -> String {
    format!(
        "  - name: {name}\n    url: {url}\n    size: {}\n    sha256: {}\n    blake3: {}\n    license: MIT\n    architecture: bitnet\n",
        data.len(),
        sha256(data),
        blake3::hash(data).to_hex()
    )
}

fn write_lock(root: &Path, entries: &[String]) {
    std::fs::write(
        root.join("models.lock"),
        format!("version: 1\nmodels:\n{}", entries.concat()),
    )
    .unwrap();
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `harness ARGS` in `root`, with fast retries and a short timeout unless `args` set them.
fn harness(root: &Path, args: &[&str]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.current_dir(root).args(args);
    if args.first() == Some(&"fetch-models") {
        if !args.contains(&"--retry-delay-ms") {
            cmd.args(["--retry-delay-ms", "10"]);
        }
        if !args.contains(&"--timeout") {
            cmd.args(["--timeout", "5"]);
        }
    }
    let o = cmd.output().unwrap();
    Out {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn models(root: &Path) -> std::path::PathBuf {
    root.join("target/harness/models")
}

#[test]
fn a_full_download_is_verified_and_renamed_into_place() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = bytes(300_000, 1);
    let server = Server::start(data.clone(), 0);
    write_lock(root, &[entry("m", &server.url("/file"), &data)]);
    let o = harness(root, &["fetch-models"]);
    assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("m: downloaded and verified"),
        "{}",
        o.stdout
    );
    assert_eq!(std::fs::read(models(root).join("m.gguf")).unwrap(), data);
    assert!(!models(root).join("m.gguf.part").exists());
    // Plain progress lines on a non-terminal stderr.
    assert!(o.stderr.contains("m: receiving of"), "{}", o.stderr);

    let again = harness(root, &["fetch-models", "m"]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(again.stdout.contains("m: up to date"), "{}", again.stdout);
    assert_eq!(
        server.requests(),
        1,
        "an up-to-date file is not downloaded again"
    );
}

#[test]
fn an_interrupted_transfer_is_retried_and_resumed_with_a_range() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = bytes(250_000, 2);
    let server = Server::start(data.clone(), 100_000);
    write_lock(root, &[entry("m", &server.url("/drop"), &data)]);
    let o = harness(root, &["fetch-models"]);
    assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    assert_eq!(
        server.seen("/drop"),
        [None, Some("bytes=100000-".to_string())],
        "the second request resumes where the first was cut"
    );
    assert!(o.stderr.contains("attempt failed"), "{}", o.stderr);
    assert!(o.stdout.contains("in 2 requests"), "{}", o.stdout);
    assert_eq!(std::fs::read(models(root).join("m.gguf")).unwrap(), data);
}

#[test]
fn a_partial_file_left_by_a_killed_run_is_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = bytes(200_000, 3);
    let server = Server::start(data.clone(), 0);
    write_lock(root, &[entry("m", &server.url("/file"), &data)]);
    std::fs::create_dir_all(models(root)).unwrap();
    std::fs::write(models(root).join("m.gguf.part"), &data[..123_457]).unwrap();
    let o = harness(root, &["fetch-models", "m"]);
    assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    assert_eq!(server.seen("/file"), [Some("bytes=123457-".to_string())]);
    assert!(
        o.stdout.contains("resumed from byte 123457"),
        "{}",
        o.stdout
    );
    assert_eq!(std::fs::read(models(root).join("m.gguf")).unwrap(), data);
    assert!(!models(root).join("m.gguf.part").exists());
}

#[test]
fn a_server_ignoring_the_range_restarts_from_zero_and_gives_the_right_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = bytes(150_000, 4);
    let server = Server::start(data.clone(), 0);
    write_lock(root, &[entry("m", &server.url("/norange"), &data)]);
    std::fs::create_dir_all(models(root)).unwrap();
    // Garbage: appending the whole body to it would give a wrong file.
    std::fs::write(models(root).join("m.gguf.part"), bytes(50_000, 99)).unwrap();
    let o = harness(root, &["fetch-models"]);
    assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    assert_eq!(server.seen("/norange"), [Some("bytes=50000-".to_string())]);
    assert!(
        o.stderr.contains("starting over from byte 0"),
        "{}",
        o.stderr
    );
    assert_eq!(std::fs::read(models(root).join("m.gguf")).unwrap(), data);
}

#[test]
fn a_part_longer_than_the_server_file_gets_a_416_and_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = bytes(100_000, 5);
    // The lock says 120,000 bytes; the server has 100,000: a 120,000-byte lock entry whose
    // partial file already holds 110,000 bytes asks for a range past the server's end.
    let server = Server::start(data.clone(), 0);
    let mut locked = data.clone();
    locked.extend(bytes(20_000, 6));
    write_lock(root, &[entry("m", &server.url("/file"), &locked)]);
    std::fs::create_dir_all(models(root)).unwrap();
    std::fs::write(models(root).join("m.gguf.part"), &locked[..110_000]).unwrap();
    let o = harness(root, &["fetch-models"]);
    // After the 416 it starts over; the server's file is not the locked one (its size differs).
    assert_eq!(o.code, Some(5), "{}{}", o.stdout, o.stderr);
    assert_eq!(
        server.seen("/file"),
        [Some("bytes=110000-".to_string()), None]
    );
    assert!(o.stderr.contains("HTTP 416"), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("serves 100000 bytes, `models.lock` expects 120000"),
        "{}",
        o.stderr
    );
    assert!(!models(root).join("m.gguf").exists());
}

#[test]
fn a_body_longer_than_the_locked_size_is_cut_off_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = bytes(90_000, 20);
    let server = Server::start(data.clone(), 0);
    write_lock(
        root,
        &[entry("m", &server.url("/nolength"), &data[..80_000])],
    );
    let o = harness(root, &["fetch-models"]);
    assert_eq!(o.code, Some(5), "{}{}", o.stdout, o.stderr);
    assert!(
        o.stderr
            .contains("sent more than the 80000 bytes `models.lock` expects"),
        "{}",
        o.stderr
    );
    assert!(!models(root).join("m.gguf").exists());
}

#[test]
fn redirects_are_followed_and_capped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = bytes(80_000, 7);
    let server = Server::start(data.clone(), 0);
    write_lock(
        root,
        &[
            entry("r", &server.url("/redir"), &data),
            entry("l", &server.url("/loop"), &data),
        ],
    );
    let o = harness(root, &["fetch-models", "r"]);
    assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    assert_eq!(std::fs::read(models(root).join("r.gguf")).unwrap(), data);
    assert_eq!(server.seen("/file").len(), 1);

    let o = harness(root, &["fetch-models", "l"]);
    assert_eq!(o.code, Some(4), "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("too many redirects"), "{}", o.stderr);
    let n = server.seen("/loop").len();
    assert!((2..=12).contains(&n), "{n} requests for a redirect loop");
    assert!(
        !models(root).join("l.gguf.part").exists(),
        "no empty partial file"
    );
}

#[test]
fn server_errors_are_retried_then_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = bytes(50_000, 8);
    let server = Server::start(data.clone(), 0);
    write_lock(root, &[entry("m", &server.url("/flaky"), &data)]);
    let o = harness(root, &["fetch-models"]);
    assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    assert_eq!(server.seen("/flaky").len(), 3);
    assert!(o.stderr.contains("HTTP 503"), "{}", o.stderr);
    assert_eq!(std::fs::read(models(root).join("m.gguf")).unwrap(), data);
}

#[test]
fn a_404_fails_at_once_naming_the_url_and_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = bytes(1000, 9);
    let server = Server::start(data.clone(), 0);
    let url = server.url("/missing");
    write_lock(root, &[entry("m", &url, &data)]);
    let o = harness(root, &["fetch-models", "--retries", "5"]);
    assert_eq!(o.code, Some(4), "{}{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains(&format!("`{url}` answered HTTP 404")),
        "{}",
        o.stderr
    );
    assert_eq!(server.requests(), 1, "no retry on a 404");
    assert!(!models(root).join("m.gguf").exists());
    assert!(!models(root).join("m.gguf.part").exists());
}

#[test]
fn a_stalled_server_times_out_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = bytes(100_000, 10);
    let server = Server::start(data.clone(), 0);
    write_lock(root, &[entry("m", &server.url("/stall"), &data)]);
    let t = Instant::now();
    let o = harness(root, &["fetch-models", "--timeout", "1", "--retries", "1"]);
    let took = t.elapsed();
    assert_eq!(o.code, Some(4), "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("timed out"), "{}", o.stderr);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // Two attempts; the second resumed after the 100 bytes the first one got.
    assert_eq!(
        server.seen("/stall"),
        [None, Some("bytes=100-".to_string())]
    );
    assert!(o.stderr.contains("kept in"), "{}", o.stderr);
    assert!(!models(root).join("m.gguf").exists());
}

#[test]
fn a_wrong_hash_names_both_hashes_and_renames_nothing_into_place() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = bytes(60_000, 11);
    let other = bytes(60_000, 12);
    let server = Server::start(data.clone(), 0);
    // The lock holds another file's hashes (same size).
    write_lock(root, &[entry("m", &server.url("/file"), &other)]);
    let o = harness(root, &["fetch-models"]);
    assert_eq!(o.code, Some(5), "{}{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("model `m`: sha256 mismatch"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains(&format!("expected {}", sha256(&other))),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains(&format!("actual {}", sha256(&data))),
        "{}",
        o.stderr
    );
    assert!(
        !models(root).join("m.gguf").exists(),
        "never renamed into place"
    );
    assert!(
        !models(root).join("m.gguf.part").exists(),
        "not resumed either"
    );
    assert_eq!(
        std::fs::read(models(root).join("m.gguf.bad")).unwrap(),
        data
    );

    // A file already in place that does not match is reported and left untouched, unread by
    // the network.
    let mine = bytes(60_000, 13);
    std::fs::write(models(root).join("m.gguf"), &mine).unwrap();
    let before = server.requests();
    let o = harness(root, &["fetch-models"]);
    assert_eq!(o.code, Some(5), "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("left untouched"), "{}", o.stderr);
    assert_eq!(std::fs::read(models(root).join("m.gguf")).unwrap(), mine);
    assert_eq!(server.requests(), before);
}

#[test]
fn a_verified_file_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = bytes(40_000, 14);
    // The server now serves something else; the verified file stays and nothing is requested.
    let server = Server::start(bytes(40_000, 15), 0);
    write_lock(root, &[entry("m", &server.url("/file"), &data)]);
    std::fs::create_dir_all(models(root)).unwrap();
    std::fs::write(models(root).join("m.gguf"), &data).unwrap();
    let o = harness(root, &["fetch-models"]);
    assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("m: up to date"), "{}", o.stdout);
    assert_eq!(server.requests(), 0);
    assert_eq!(std::fs::read(models(root).join("m.gguf")).unwrap(), data);
}

#[test]
fn offline_reports_present_missing_and_mismatched_without_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (good, bad) = (bytes(5000, 16), bytes(5000, 17));
    let server = Server::start(good.clone(), 0);
    write_lock(
        root,
        &[
            entry("good", &server.url("/file"), &good),
            entry("absent", &server.url("/file"), &good),
            entry("bad", &server.url("/file"), &good),
        ],
    );
    std::fs::create_dir_all(models(root)).unwrap();
    std::fs::write(models(root).join("good.gguf"), &good).unwrap();
    std::fs::write(models(root).join("bad.gguf"), &bad).unwrap();
    std::fs::write(models(root).join("absent.gguf.part"), &good[..10]).unwrap();

    let o = harness(root, &["fetch-models", "--offline"]);
    // The first failing model in lock order decides: `absent` (6, missing).
    assert_eq!(o.code, Some(6), "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("good: present and verified"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("absent: missing"), "{}", o.stdout);
    assert!(
        o.stdout.contains("partial download of 10 bytes"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("`harness fetch-models absent`"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("bad: mismatched"), "{}", o.stdout);
    assert!(o.stdout.contains(&sha256(&bad)), "{}", o.stdout);

    assert_eq!(
        harness(root, &["fetch-models", "--offline", "good"]).code,
        Some(0)
    );
    assert_eq!(
        harness(root, &["fetch-models", "--offline", "bad"]).code,
        Some(5)
    );
    assert_eq!(server.requests(), 0, "offline means no network");
    assert_eq!(std::fs::read(models(root).join("bad.gguf")).unwrap(), bad);
}

#[test]
fn lock_errors_name_the_line_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = bytes(10, 18);
    let good = entry("m", "http://127.0.0.1:9/m", &data);
    let cases: &[(&str, String, &[&str])] = &[
        (
            "no hash",
            good.lines()
                .filter(|l| !l.contains("sha256") && !l.contains("blake3"))
                .map(|l| format!("{l}\n"))
                .collect(),
            &["models.lock:3:5", "expected `sha256` or `blake3`"],
        ),
        (
            "misspelt field",
            good.replace("license:", "licence:"),
            &[
                "models.lock:8:",
                "unknown field `licence`",
                "did you mean `license`?",
            ],
        ),
        (
            "bad hash",
            good.replace("sha256: ", "sha256: x"),
            &["models.lock:6:5", "`sha256` must be 64 hex digits"],
        ),
        (
            "missing size",
            good.lines()
                .filter(|l| !l.contains("size:"))
                .map(|l| format!("{l}\n"))
                .collect(),
            &["models.lock:3:", "missing field `size`"],
        ),
    ];
    for (what, body, parts) in cases {
        write_lock(root, std::slice::from_ref(body));
        let o = harness(root, &["fetch-models", "--offline"]);
        assert_eq!(o.code, Some(3), "{what}: {}{}", o.stdout, o.stderr);
        for p in *parts {
            assert!(o.stderr.contains(p), "{what}: `{}` lacks `{p}`", o.stderr);
        }
    }
    // No lock file at all.
    let o = harness(root, &["fetch-models", "--lock", "nowhere.lock"]);
    assert_eq!(o.code, Some(3), "{}", o.stderr);
    assert!(
        o.stderr.contains("nowhere.lock: cannot read the lock file"),
        "{}",
        o.stderr
    );
    // A name the lock lacks, and an unknown option: usage errors.
    write_lock(root, std::slice::from_ref(&good));
    let o = harness(root, &["fetch-models", "n"]);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(
        o.stderr.contains("locks no model `n`; it locks: m"),
        "{}",
        o.stderr
    );
    assert_eq!(harness(root, &["fetch-models", "--bogus"]).code, Some(2));
}

/// A scenario in `root/scenarios` naming the locked model `name`.
fn write_scenario(root: &Path, name: &str) {
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    std::fs::write(
        root.join("scenarios/real.yaml"),
        format!("description: a locked model\nmodel:\n  locked: {name}\ninputs:\n  tokens:\n    - [1, 2, 3]\ngeneration:\n  steps: 2\nreference: none\ngolden: false\n"),
    )
    .unwrap();
}

#[test]
fn a_scenario_naming_an_absent_locked_model_is_skipped_with_the_fetch_command() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Port 9 (discard): never contacted, as nothing is fetched here.
    write_lock(
        root,
        &[entry("bitnet-2b4t", "http://127.0.0.1:9/m", &bytes(10, 19))],
    );
    write_scenario(root, "bitnet-2b4t");
    let o = harness(root, &["list"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stdout.contains(
            "scenarios::real::engine: test (ignored: locked model `bitnet-2b4t` is not fetched"
        ),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("run `harness fetch-models bitnet-2b4t`"),
        "{}",
        o.stdout
    );
    // Ignored, not failed and not passed.
    let o = harness(root, &["run"]);
    assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("scenarios::real::engine ... ignored"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("harness fetch-models bitnet-2b4t"),
        "{}",
        o.stdout
    );

    // `locked` with another source is a scenario error naming the field.
    let text = std::fs::read_to_string(root.join("scenarios/real.yaml")).unwrap();
    std::fs::write(
        root.join("scenarios/real.yaml"),
        text.replace("  locked:", "  preset: tiny\n  locked:"),
    )
    .unwrap();
    let o = harness(root, &["list"]);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("real.yaml:4:3"), "{}", o.stderr);
    assert!(o.stderr.contains("drop `preset`"), "{}", o.stderr);

    // A name the lock lacks is a scenario error at the `locked` line.
    write_scenario(root, "bitnet-2b4");
    let o = harness(root, &["list"]);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("real.yaml:3:3"), "{}", o.stderr);
    assert!(
        o.stderr.contains("did you mean `bitnet-2b4t`?"),
        "{}",
        o.stderr
    );
}

#[test]
fn a_fetched_locked_model_runs_and_fails_once_it_no_longer_matches() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let gguf = root.join("tiny.gguf");
    let o = harness(
        root,
        &[
            "gen-model",
            "--preset",
            "tiny",
            "-o",
            gguf.to_str().unwrap(),
        ],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let data = std::fs::read(&gguf).unwrap();
    let server = Server::start(data.clone(), 0);
    write_lock(root, &[entry("tiny-real", &server.url("/file"), &data)]);
    write_scenario(root, "tiny-real");
    let o = harness(root, &["fetch-models", "tiny-real"]);
    assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    let o = harness(root, &["run"]);
    assert_eq!(o.code, Some(0), "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("scenarios::real::engine ... pass"),
        "{}",
        o.stdout
    );

    // One byte changed, same size: the engine check fails naming the lock's hash.
    let path = models(root).join("tiny-real.gguf");
    let mut changed = data.clone();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    std::fs::write(&path, &changed).unwrap();
    let o = harness(root, &["run"]);
    assert_eq!(o.code, Some(1), "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("scenarios::real::engine ... FAIL"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("sha256 mismatch"), "{}", o.stdout);
    assert!(
        o.stdout.contains("harness fetch-models tiny-real"),
        "{}",
        o.stdout
    );
}
