//! Issue 15's mutation campaign, as tests: mutated GGUF files through the `trace` path (in
//! process, and a sample through the `harness trace` binary), mutated scenarios through the
//! loader, mutated receipts through the gate. Each ends with 0 panics, 0 aborts (the test
//! process survives every case; the binary never dies of a signal or exits 101), 0 hangs (a
//! watchdog aborts the test, naming the case, when one runs past its bound) and, for receipts,
//! 0 accepted forgeries: a receipt whose checkable content changed is refused. The mutations
//! come from a fixed seed (`BITNET_CAMPAIGN_SEED=N` draws others, `BITNET_CAMPAIGN_SCALE=K` runs
//! K times as many); each test prints its tally (`--nocapture` shows it).
//!
//! The cases run through the functions the fuzz targets run (`fuzz/src/*_bodies.rs`, included
//! by path): `cargo fuzz` explores at random for longer, this explores the shapes issue 15 found.

#[allow(dead_code)]
#[path = "../../fuzz/src/engine_bodies.rs"]
mod engine_bodies;
#[allow(dead_code)]
#[path = "../../fuzz/src/harness_bodies.rs"]
mod harness_bodies;

#[path = "mutation_campaign/forgeries.rs"]
mod forgeries;
#[path = "mutation_campaign/gguf_mutations.rs"]
mod gguf_mutations;
use forgeries::{checkable_fields, checkable_forgery, unverifiable_change};
use gguf_mutations::{byte_mutation, semantic_mutation};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitnet_engine::gguf::GgufFile;
use bitnet_engine::synth::{self, ModelSpec};
use harness_bodies::ReceiptFixture;
use serde_json::Value as Json;

// ---------------------------------------------------------------------------------------------
// Shared: a seeded generator, a watchdog, a tally.

/// SplitMix64: small, seedable, the same everywhere.
struct Rng(u64);

impl Rng {
    fn new(stream: u64) -> Rng {
        let seed = std::env::var("BITNET_CAMPAIGN_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(15u64);
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ stream)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }
}

fn scale() -> usize {
    std::env::var("BITNET_CAMPAIGN_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1usize)
        .max(1)
}

/// `BITNET_CAMPAIGN_CASE=N`: run case N alone (the GGUF campaign also writes its file to the
/// temporary directory), to reproduce a failure.
fn only_case() -> Option<usize> {
    std::env::var("BITNET_CAMPAIGN_CASE").ok()?.parse().ok()
}

/// Aborts the process, naming the case, when one case runs longer than its bound: a hang fails
/// the test instead of holding CI.
struct Watchdog {
    current: Arc<Mutex<Option<(String, Instant)>>>,
    stop: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(limit: Duration) -> Watchdog {
        let current: Arc<Mutex<Option<(String, Instant)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (current.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if let Some((label, t)) = c.lock().map(|g| g.clone()).unwrap_or_default() {
                    if t.elapsed() > limit {
                        eprintln!(
                            "HANG: `{label}` ran {:?}, past its bound {limit:?}",
                            t.elapsed()
                        );
                        std::process::abort();
                    }
                }
            }
        });
        Watchdog { current, stop }
    }

    /// Run one case, catching a panic: its result and how long it took. With
    /// `BITNET_CAMPAIGN_VERBOSE` set, each case is named before it runs.
    fn run<T>(&self, label: &str, f: impl FnOnce() -> T) -> (std::thread::Result<T>, Duration) {
        if std::env::var_os("BITNET_CAMPAIGN_VERBOSE").is_some() {
            eprintln!("{label}");
        }
        *self.current.lock().unwrap() = Some((label.to_string(), Instant::now()));
        let t = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        *self.current.lock().unwrap() = None;
        (r, t.elapsed())
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Outcomes by kind, the failures, the slowest case.
#[derive(Default)]
struct Tally {
    cases: usize,
    outcomes: BTreeMap<String, usize>,
    failures: Vec<String>,
    slowest: (Duration, String),
}

impl Tally {
    fn count(&mut self, outcome: &str) {
        *self.outcomes.entry(outcome.to_string()).or_default() += 1;
    }
    fn timed(&mut self, label: &str, took: Duration) {
        self.cases += 1;
        if took > self.slowest.0 {
            self.slowest = (took, label.to_string());
        }
    }
    fn fail(&mut self, what: String) {
        self.failures.push(what);
    }
    /// Print the tally and fail on any failure.
    fn finish(self, name: &str, at_least: usize) {
        println!(
            "{name}: {} cases in total; slowest {:.3} s ({})",
            self.cases,
            self.slowest.0.as_secs_f64(),
            self.slowest.1
        );
        for (k, v) in &self.outcomes {
            println!("  {v:>6}  {k}");
        }
        assert!(
            self.failures.is_empty(),
            "{name}: {} of {} cases failed:\n{}",
            self.failures.len(),
            self.cases,
            self.failures
                .iter()
                .take(40)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            self.cases >= at_least,
            "{name}: {} cases, expected {at_least}",
            self.cases
        );
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

// ---------------------------------------------------------------------------------------------
// GGUF files through `trace`.

/// Valid models to mutate: the fuzz seeds (8-wide F32 with and without a vocabulary, TQ2_0 with
/// `.scale` tensors, I2_S) and two more built here (TQ1_0, and `bitnet-b1.58` with LLaMA 3's
/// pre-tokenizer).
fn gguf_bases() -> Vec<(String, Vec<u8>)> {
    let dir = root().join("engine/tests/fuzz_cases/gguf_reader");
    let mut v: Vec<(String, Vec<u8>)> = ["valid_small_f32", "valid_small_bpe"]
        .iter()
        .chain(&["valid_synth_tq2_0_scales", "valid_synth_i2_s"])
        .map(|n| {
            let p = dir.join(format!("{n}.gguf"));
            (n.to_string(), std::fs::read(&p).unwrap())
        })
        .collect();
    let specs = [
        (
            "synth_tq1_0",
            ModelSpec {
                n_layer: 1,
                n_ff: 256,
                n_vocab: 16,
                n_head_kv: Some(2),
                ternary_type: synth::TernaryType::Tq1_0,
                embedding_type: synth::EmbeddingType::F16,
                tokenizer: synth::TokenizerKind::None,
                ..Default::default()
            },
        ),
        (
            "synth_b158_llama_bpe",
            ModelSpec {
                architecture: synth::ArchName::BitnetB158,
                n_layer: 1,
                n_ff: 256,
                n_vocab: 300,
                ternary_type: synth::TernaryType::I2s,
                embedding_type: synth::EmbeddingType::F16,
                pre_tokenizer: "llama-bpe".into(),
                ..Default::default()
            },
        ),
    ];
    for (name, spec) in specs {
        v.push((
            name.into(),
            synth::build(&spec).unwrap().to_bytes().unwrap(),
        ));
    }
    v
}

/// Issue 15: "3,200 mutated GGUFs through `inspect` gave no panic" — here ≥ 3,000 go through the
/// whole `trace` path: read, gate mapper, model load, and on what loads a prefill and two greedy
/// steps with every trace point written and read back. A sample also runs through the
/// `harness trace` binary, which must exit 0, 1 or 2 (never 101, never a signal).
#[test]
fn mutated_ggufs_through_trace() {
    let bases = gguf_bases();
    let parsed: Vec<GgufFile> = bases
        .iter()
        .map(|(n, b)| GgufFile::from_bytes(b.clone(), n).unwrap())
        .collect();
    for (n, b) in &bases {
        // Every base runs the whole path, so mutations start from files that trace.
        engine_bodies::gguf_reader(b).unwrap_or_else(|e| panic!("{n}: {e}"));
    }
    let mut rng = Rng::new(1);
    let dog = Watchdog::start(Duration::from_secs(60));
    let mut tally = Tally::default();
    let scratch = tempfile::tempdir().unwrap();
    let n_cases = 3200 * scale();
    let mut binary_runs = 0;
    for case in 0..n_cases {
        let b = rng.below(bases.len());
        let mut label = format!("case {case}: {}", bases[b].0);
        let mut bytes = bases[b].1.clone();
        let mut semantic = false;
        if rng.percent(60) {
            if let Some((m, l)) = semantic_mutation(&mut rng, &parsed[b]) {
                bytes = m;
                label += &format!(", {l}");
                semantic = true;
            }
        }
        let header = parsed[b].data_offset() as usize;
        if !semantic || rng.percent(40) {
            for _ in 0..1 + rng.below(3) {
                let l = byte_mutation(&mut rng, &mut bytes, header);
                label += &format!(", {l}");
            }
        }
        if let Some(only) = only_case() {
            if case != only {
                continue;
            }
            let path = std::env::temp_dir().join(format!("campaign-case-{case}.gguf"));
            std::fs::write(&path, &bytes).unwrap();
            eprintln!("{label}: written to {}", path.display());
        }
        let (result, took) = dog.run(&label, || {
            let file = match engine_bodies::read_gguf(&bytes) {
                Ok(f) => f,
                Err(_) => return "refused by the reader".to_string(),
            };
            let model = match engine_bodies::load_gguf(file) {
                Ok(m) => m,
                Err(_) => return "refused by the model loader".to_string(),
            };
            match engine_bodies::trace_model(&model) {
                Ok(()) => "loaded and traced".to_string(),
                Err(e) if e.contains("outside the vocabulary") => {
                    "loaded, prompt outside the vocabulary".to_string()
                }
                Err(e) => format!("loaded, run refused: {}", e.split(':').next().unwrap_or("")),
            }
        });
        tally.timed(&label, took);
        match result {
            Ok(outcome) => tally.count(&outcome),
            Err(p) => {
                tally.count("PANIC");
                tally.fail(format!("{label}: panicked: {}", panic_text(&*p)));
            }
        }
        // Every 25th file also through the binary, as a user runs it.
        if case % 25 == 0 {
            binary_runs += 1;
            let path = scratch.path().join(format!("m{case}.gguf"));
            std::fs::write(&path, &bytes).unwrap();
            let out_dir = scratch.path().join(format!("out{case}"));
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
                .arg("trace")
                .arg(&path)
                .args([
                    "--tokens",
                    "1,2,3",
                    "--generate",
                    "3",
                    "--threads",
                    "2",
                    "-o",
                ])
                .arg(&out_dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let t = Instant::now();
            let status = loop {
                if let Some(s) = child.try_wait().unwrap() {
                    break Some(s);
                }
                if t.elapsed() > Duration::from_secs(120) {
                    let _ = child.kill();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            let stderr = child
                .wait_with_output()
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default();
            match status.map(|s| s.code()) {
                Some(Some(c @ 0..=2)) => tally.count(&format!("`harness trace` exit {c}")),
                Some(code) => {
                    tally.count("`harness trace` crashed");
                    tally.fail(format!("{label}: `harness trace` ended {code:?}: {stderr}"));
                }
                None => tally.fail(format!("{label}: `harness trace` hung")),
            }
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_dir_all(&out_dir);
        }
    }
    println!("({binary_runs} of them also through `harness trace`)");
    tally.finish("mutated GGUF files through trace", 3000);
}

// ---------------------------------------------------------------------------------------------
// Scenarios through the loader.

/// Values that break a scenario field in every way YAML allows.
const HOSTILE_YAML: &[&str] = &[
    ".nan",
    ".inf",
    "-.inf",
    "-1",
    "0",
    "1e308",
    "9223372036854775807",
    "18446744073709551616",
    "\"\"",
    "[]",
    "{}",
    "null",
    "~",
    "true",
    "\"\\0\"",
    "&a x",
    "*a",
    "!!binary aGVsbG8=",
    "[[[[[[1]]]]]]",
    "'",
    "\"unterminated",
    "{ a: 1, a: 2 }",
    "- item",
    "[1, 2, 3",
    "0x10",
    "1_000",
    "2.5",
    "-0.0",
    "\"é😀\"",
    "[\"blk.*.q\", \"logits\"]",
    "{ command: [] }",
    "{ command: [sh, -c, \"exit 0\"] }",
];

/// Scenarios to mutate: the shipped ones, the fuzz seeds that load, the receipt fixture's.
fn scenario_bases() -> Vec<(String, String)> {
    let mut v = Vec::new();
    let shipped = bitnet_harness::scenario::find_scenarios(&[root().join("scenarios")]).unwrap();
    let seeds = root().join("harness/tests/fuzz_cases/scenario_parser");
    for p in shipped.into_iter().chain([
        seeds.join("valid_minimal.yaml"),
        seeds.join("valid_every_field.yaml"),
    ]) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        v.push((name, std::fs::read_to_string(&p).unwrap()));
    }
    v.push((
        "receipt fixture".into(),
        harness_bodies::FIXTURE_SCENARIO.into(),
    ));
    v
}

fn mutate_scenario(rng: &mut Rng, text: &str) -> (Vec<u8>, String) {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    let i = rng.below(lines.len());
    let label;
    match rng.below(10) {
        0 => {
            label = format!("delete line {}", i + 1);
            lines.remove(i);
        }
        1 => {
            label = format!("duplicate line {}", i + 1);
            lines.insert(i, lines[i].clone());
        }
        2 => {
            let j = rng.below(lines.len());
            label = format!("swap lines {} and {}", i + 1, j + 1);
            lines.swap(i, j);
        }
        3 => {
            if rng.percent(50) {
                label = format!("indent line {}", i + 1);
                lines[i].insert_str(0, "  ");
            } else {
                label = format!("dedent line {}", i + 1);
                lines[i] = lines[i].trim_start().to_string();
            }
        }
        4..=6 => {
            // Replace a value (after the first `: ` or `- `), or a flow item.
            let v = *rng.pick(HOSTILE_YAML);
            let l = &mut lines[i];
            if let Some(k) = l.find(": ") {
                l.truncate(k + 2);
                l.push_str(v);
            } else if let Some(k) = l.find("- ") {
                l.truncate(k + 2);
                l.push_str(v);
            } else {
                l.push_str(&format!(" {v}"));
            }
            label = format!("line {}: value `{v}`", i + 1);
        }
        7 => {
            let fields = [
                "threads",
                "force_threads",
                "steps",
                "points",
                "kl_max",
                "min_decode_tps",
                "prefill_chunks",
                "tokens",
                "prompts",
                "reference",
                "golden",
                "exact",
                "backends",
                "tolerances",
                "model",
                "path",
                "locked",
                "skip_unless",
                "k",
                "cosine_min",
                "descripton",
            ];
            let f = rng.pick(&fields);
            let v = rng.pick(HOSTILE_YAML);
            let indent = "  ".repeat(rng.below(3));
            label = format!("insert `{indent}{f}: {v}` at line {}", i + 1);
            lines.insert(i, format!("{indent}{f}: {v}"));
        }
        8 => {
            let depth = *rng.pick(&[63usize, 64, 65, 200, 5000]);
            let open = if rng.percent(50) { "[" } else { "{" };
            label = format!("nest {depth} `{open}` at line {}", i + 1);
            lines[i].push_str(&open.repeat(depth));
        }
        _ => {
            label = format!("comment naming a field at line {}", i + 1);
            lines.insert(i, "# steps: threads: points: 99999 [[[[".into());
        }
    }
    let mut bytes = (lines.join("\n") + "\n").into_bytes();
    let mut label = label;
    if rng.percent(15) {
        let k = rng.below(bytes.len());
        match rng.below(3) {
            0 => {
                bytes[k] ^= 1 + rng.below(255) as u8;
                label += &format!(", flip byte {k}");
            }
            1 => {
                bytes.truncate(k);
                label += &format!(", truncate to {k}");
            }
            _ => {
                bytes.insert(k, *rng.pick(&[b'\t', b'\0', b'\r', 0xff, b':', b'&', b'*']));
                label += &format!(", insert a byte at {k}");
            }
        }
    }
    (bytes, label)
}

/// Issue 15: "754 of 754 scenario errors carry file:line:col". Here ≥ 1,000 mutated scenarios go
/// through the loader: none panics or hangs, every error names a line and column (unless the
/// file is not text), and every scenario that loads keeps the schema's bounds.
#[test]
fn mutated_scenarios_through_the_loader() {
    let bases = scenario_bases();
    let mut rng = Rng::new(2);
    let dog = Watchdog::start(Duration::from_secs(20));
    let mut tally = Tally::default();
    for case in 0..1200 * scale() {
        let (name, text) = rng.pick(&bases);
        let mut bytes = text.clone().into_bytes();
        let mut label = format!("case {case}: {name}");
        for _ in 0..1 + rng.below(2) {
            let (b, l) = mutate_scenario(&mut rng, &String::from_utf8_lossy(&bytes));
            bytes = b;
            label += &format!(", {l}");
        }
        let (result, took) = dog.run(&label, || harness_bodies::scenario_parser(&bytes));
        tally.timed(&label, took);
        match result {
            Ok(Ok(())) => tally.count("loaded"),
            Ok(Err(e)) if e.starts_with("accepted out of bounds") => {
                tally.count("ACCEPTED OUT OF BOUNDS");
                tally.fail(format!("{label}: {e}"));
            }
            Ok(Err(e)) if e.contains("cannot read the file") => tally.count("refused: not text"),
            Ok(Err(_)) => tally.count("refused with file:line:col"),
            Err(p) => {
                tally.count("PANIC");
                tally.fail(format!("{label}: panicked: {}", panic_text(&*p)));
            }
        }
        if took > Duration::from_secs(2) {
            tally.fail(format!("{label}: took {took:?}"));
        }
    }
    tally.finish("mutated scenarios through the loader", 1000);
}

// ---------------------------------------------------------------------------------------------
// Receipts through the gate.

/// Issue 15: "of 650 mutated receipts, 152 that changed a meaningful field were accepted". Here
/// ≥ 500 mutated receipts go through the gate (`verify-receipt --against-goldens --max-age 30d`)
/// in a fixture: every forgery of a field it can check is refused, random byte damage never
/// panics and is never accepted with a checkable field changed, and the changes only
/// `--reproduce` can see are counted.
#[test]
fn mutated_receipts_through_the_gate() {
    let fx = ReceiptFixture::new(true);
    let valid = fx.valid_receipt();
    let valid_text = serde_json::to_string_pretty(&valid).unwrap();
    assert_eq!(
        fx.verify(valid_text.as_bytes()),
        Ok(()),
        "the fixture's receipt passes"
    );
    let want = checkable_fields(&valid);
    let required: Vec<String> = vec!["tq2_0_q8k_dot_avx2".into()];
    let mut rng = Rng::new(3);
    let dog = Watchdog::start(Duration::from_secs(20));
    let mut tally = Tally::default();
    let check = |label: &str, bytes: &[u8], must_refuse: bool, tally: &mut Tally| {
        let (result, took) = dog.run(label, || fx.verify(bytes));
        tally.timed(label, took);
        match result {
            Err(p) => {
                tally.count("PANIC");
                tally.fail(format!("{label}: panicked: {}", panic_text(&*p)));
            }
            Ok(Err((code, _))) => tally.count(&format!("refused, exit {code}")),
            Ok(Ok(())) if must_refuse => {
                tally.count("ACCEPTED FORGERY");
                tally.fail(format!("{label}: accepted"));
            }
            Ok(Ok(())) => {
                // Accepted: whatever changed must be invisible to the gate. (A commit of
                // `unknown`, a run outside a git checkout, is one such change.)
                let mut r: Json = serde_json::from_slice(bytes).expect("accepted JSON");
                if r["engine"]["git_commit"] == "unknown" {
                    r["engine"]["git_commit"] = valid["engine"]["git_commit"].clone();
                }
                let kernels: Vec<String> =
                    serde_json::from_value(r["kernels"].clone()).unwrap_or_default();
                if checkable_fields(&r) != want || !required.iter().all(|k| kernels.contains(k)) {
                    tally.count("ACCEPTED FORGERY");
                    tally.fail(format!("{label}: accepted with a checkable field changed"));
                } else {
                    tally.count("accepted: nothing checkable changed");
                }
            }
        }
        if took > Duration::from_secs(5) {
            tally.fail(format!("{label}: took {took:?}"));
        }
    };
    let s = scale();
    for case in 0..400 * s {
        let (label, r) = checkable_forgery(&mut rng, &fx);
        let label = format!("forgery {case}: {label}");
        check(&label, &serde_json::to_vec(&r).unwrap(), true, &mut tally);
    }
    let mut unverifiable = 0;
    for case in 0..40 * s {
        let (label, r) = unverifiable_change(&mut rng, &fx);
        let label = format!("unverifiable {case}: {label}");
        let before = tally.outcomes.clone();
        check(&label, &serde_json::to_vec(&r).unwrap(), false, &mut tally);
        if tally.outcomes.get("accepted: nothing checkable changed")
            != before.get("accepted: nothing checkable changed")
        {
            unverifiable += 1;
        }
    }
    for case in 0..300 * s {
        let mut bytes = valid_text.clone().into_bytes();
        let mut label = format!("bytes {case}:");
        for _ in 0..1 + rng.below(3) {
            let k = rng.below(bytes.len());
            match rng.below(4) {
                0 => {
                    let x = 1 + rng.below(255) as u8;
                    bytes[k] ^= x;
                    label += &format!(" flip {k}^{x:#04x}");
                }
                1 => {
                    bytes.remove(k);
                    label += &format!(" delete {k}");
                }
                2 => {
                    let b = *rng.pick(b"0123456789abcdef\"{}[],:-.eE \\\0\xff");
                    bytes.insert(k, b);
                    label += &format!(" insert {b:#04x} at {k}");
                }
                _ => {
                    bytes.truncate(k);
                    label += &format!(" truncate {k}");
                }
            }
        }
        check(&label, &bytes, false, &mut tally);
    }
    println!("({unverifiable} changes only `--reproduce` can see were accepted, as designed)");
    tally.finish("mutated receipts through the gate", 500);
}
