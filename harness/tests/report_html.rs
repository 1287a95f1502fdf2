//! What a user sees after `harness run`:
//! - `report.html` of a passing run with figures (the engine with its V cache rounded to F16, a
//!   planted bug, within loose tolerances) and of a failing one (the same, held exact), opened in
//!   a real headless Chromium when one is installed: it loads without console errors, renders to
//!   a PNG, and holds the summary table, one SVG per plotted stage and the divergence mark;
//!   `harness report` renders the same page again from `report.json`;
//! - everything user-controlled (scenario names, paths in messages) escaped;
//! - `junit.xml` read by a strict XML parser although a reference printed ANSI colours and
//!   control characters, and the table row showing that reference's error, not "its last
//!   output:";
//! - a `--filter` that selects nothing: exit code 2, and no report overwritten.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bitnet_harness::report::Report;

mod common;
use common::text;

fn harness(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_harness"));
    c.current_dir(dir).args(args).env_remove("CI");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// The tiny preset with its V cache rounded to F16 (planted): every point from layer 0's
/// attention on differs from llama.cpp's by about 1e-3.
const PLANTED: &str = "description: the V cache rounded to F16 (planted)
model:
  preset: tiny
inputs:
  tokens:
    - [1, 17, 300, 42, 5, 99]
generation:
  steps: 3
golden: false
tolerances:
  default: { cosine_min: 0.99, rel_l2_max: 0.1, nmse_max: 0.01 }
  logits: { kl_max: 0.01, top1_agreement_min: 1.0 }
";

/// A bench of an I2_S model: the engine alone against the bandwidth bound (as JSON, the way
/// `harness bench --json` writes it; optional fields left out).
fn engine_only_bench() -> serde_json::Value {
    let stats = |v: f64| serde_json::json!({ "median": v, "min": v * 0.9, "max": v * 1.1, "samples": [v * 0.9, v, v * 1.1] });
    let results: Vec<serde_json::Value> = [1.0, 2.0]
        .iter()
        .map(|&t: &f64| {
            serde_json::json!({
                "threads": t as usize, "bandwidth_gbs": 10.0 * t, "bound_decode_tps": 25.0 * t,
                "engine": { "prefill_tps": stats(100.0 * t), "decode_tps": stats(20.0 * t) },
                "llama": null, "prefill_ratio": null, "decode_ratio": null,
                "engine_share_of_bound": 0.8, "llama_share_of_bound": null,
            })
        })
        .collect();
    let v = serde_json::json!({
        "schema_version": 1, "model": "models/<i2s>.gguf", "model_blake3": "ab".repeat(32),
        "weight_bytes_per_token": 400_000_000u64, "prompt_tokens": 128, "decode_tokens": 64,
        "rounds": 3, "engine_kernel": "avx2", "engine_kernels": ["i2s_q8_dot_avx2"],
        "reference": null, "reference_unavailable": "llama.cpp cannot run I2_S tensors",
        "cpu_features": ["avx2"], "cpu_model": "test CPU", "results": results,
        "started_at": "2026-01-01T00:00:00Z",
    });
    // It is a bench report this harness reads.
    serde_json::from_value::<bitnet_harness::bench::BenchReport>(v.clone()).unwrap();
    v
}

/// A Chromium to test with: `BITNET_CHROMIUM`, else the first on `PATH`.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BITNET_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in [
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Open `page` in headless Chromium: its DOM after loading, and a PNG screenshot in `png`.
/// Panics on a console error. `None` (with the reason printed) when no Chromium is installed.
fn open_in_chromium(page: &Path, png: &Path) -> Option<String> {
    let Some(bin) = chromium() else {
        eprintln!(
            "skipped the browser checks: no chromium on PATH (Debian: `apt-get install chromium`; or set BITNET_CHROMIUM)"
        );
        return None;
    };
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let run = |mode: &[&str]| {
        let out = Command::new(&bin)
            .args([
                "--headless",
                "--disable-gpu",
                "--no-sandbox",
                "--no-first-run",
                "--disable-extensions",
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=1280,2400",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(mode)
            .arg(&url)
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "chromium failed: {log}");
        for line in log.lines() {
            assert!(
                !(line.contains("CONSOLE") || line.contains("Uncaught")),
                "console message while loading {url}: {line}"
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = run(&["--dump-dom"]);
    run(&[&format!("--screenshot={}", png.display())]);
    let bytes = std::fs::read(png).expect("chromium wrote the screenshot");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    assert_eq!(width, 1280);
    assert!(bytes.len() > 20_000, "a blank page? {} bytes", bytes.len());
    Some(dom)
}

/// The page fetches nothing: no URL but the SVG namespace, no script.
fn assert_self_contained(html: &str) {
    let mut rest = html;
    while let Some(i) = rest.find("http") {
        assert!(
            rest[i..].starts_with("http://www.w3.org/2000/svg\""),
            "a URL in the page: {}",
            &rest[i..(i + 80).min(rest.len())]
        );
        rest = &rest[i + 4..];
    }
    for bad in ["<script", "<link", "<img", "@import", "url("] {
        assert!(!html.contains(bad), "the page has `{bad}`");
    }
}

#[test]
fn html_report_plots_every_stage_marks_the_divergence_and_loads_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    std::fs::write(
        root.join("scenarios/loose.yaml"),
        format!("{PLANTED}exact: false\n"),
    )
    .unwrap();
    // The same, held exact (the default against llama.cpp): fails at layer 0's `kqv_out`.
    std::fs::write(root.join("scenarios/held_exact.yaml"), PLANTED).unwrap();
    // An engine-only bench report beside the report (as `harness bench --json` writes it).
    std::fs::create_dir_all(root.join("target/harness")).unwrap();
    std::fs::write(
        root.join("target/harness/bench-engine-only.json"),
        serde_json::to_vec(&engine_only_bench()).unwrap(),
    )
    .unwrap();
    let plant = [("BITNET_PLANT", "v_cache_f16")];
    let out = harness(root, &["run", "--filter", "parity"], &plant);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("target/harness/report.html"), "{t}");

    let html_path = root.join("target/harness/report.html");
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_self_contained(&html);

    // The data: a passing parity check keeps its figures, per step, with non-zero curves.
    let report = Report::read(&root.join("target/harness/report.json")).unwrap();
    let row = |s: &str| {
        report
            .rows
            .iter()
            .find(|r| r.scenario == s && r.check == "parity")
            .unwrap_or_else(|| panic!("no parity row of {s}"))
    };
    let loose = &row("loose").verdict;
    assert_eq!(loose.status, bitnet_harness::run::Status::Pass);
    let figs = &loose.figures;
    assert_eq!(figs.len(), 1);
    assert_eq!(
        figs[0].steps.iter().map(|s| s.step).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let kqv = figs[0].steps[0]
        .stages
        .iter()
        .find(|c| c.stage == "kqv_out")
        .unwrap();
    assert!(kqv.points.iter().all(|p| p.rel_l2 > 0.0 && !p.exact));
    assert_eq!(kqv.points[0].tolerance.rel_l2_max, Some(0.1));
    let logits = figs[0].logits.as_ref().unwrap();
    assert_eq!(logits.kl.len(), 6);
    assert!(logits.kl_max > 0.0 && logits.kl_p50 <= logits.kl_p99);
    assert!(!figs[0].headroom.is_empty());
    let held = &row("held_exact").verdict;
    let d = held.figures[0].divergence.as_ref().unwrap();
    assert_eq!((d.step, d.layer, d.stage.as_str()), (0, Some(0), "kqv_out"));
    assert!(d.before.iter().any(|b| b.name == "blk.0.attn_probs"));
    // Every stage of every step with a difference is plotted, in both scenarios.
    let stages: usize = report
        .rows
        .iter()
        .flat_map(|r| &r.verdict.figures)
        .flat_map(|f| &f.steps)
        .filter(|s| {
            s.stages
                .iter()
                .flat_map(|c| &c.points)
                .any(|p| !p.is_zero())
        })
        .map(|s| s.stages.len())
        .sum();
    assert_eq!(stages, 2 * 3 * 14);
    assert_eq!(html.matches("<figure class=\"stage").count(), stages);
    assert_eq!(html.matches("<g class=\"divergence\">").count(), 1);
    // The bench: a table per thread count, decode bars against the bound, no llama.cpp side.
    assert_eq!(report.benches.len(), 1);
    assert!(html.contains("No llama.cpp run: llama.cpp cannot run I2_S tensors"));
    assert!(html.contains("models/&lt;i2s&gt;.gguf"));
    assert_eq!(html.matches("<g class=\"bound\">").count(), 2);
    assert!(html.contains("<figure class=\"bench-decode\">"));

    // Rendered again from the JSON: the same page.
    let again = root.join("again.html");
    let out = harness(
        root,
        &[
            "report",
            "target/harness/report.json",
            "-o",
            again.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let again = std::fs::read_to_string(&again).unwrap();
    if let Some(at) = again.bytes().zip(html.bytes()).position(|(a, b)| a != b) {
        let around = |s: &str| {
            String::from_utf8_lossy(&s.as_bytes()[at.saturating_sub(80)..(at + 80).min(s.len())])
                .into_owned()
        };
        panic!(
            "the page rendered again differs at byte {at}: {:?} vs {:?}",
            around(&again),
            around(&html)
        );
    }
    assert_eq!(again.len(), html.len());
    let out = harness(root, &["report", "missing.json"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // A report whose totals are not its rows' is refused, not rendered under a false headline.
    let mut v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("target/harness/report.json")).unwrap(),
    )
    .unwrap();
    let failed = v["failed"].as_u64().unwrap();
    assert!(failed >= 1, "{v}");
    v["failed"] = 0.into();
    v["passed"] = (v["passed"].as_u64().unwrap() + failed).into();
    std::fs::write(root.join("lie.json"), v.to_string()).unwrap();
    let out = harness(root, &["report", "lie.json", "-o", "lie.html"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("lie.json` disagrees with itself: `passed`, `failed`, `ignored` are"),
        "{}",
        text(&out)
    );
    assert!(!root.join("lie.html").exists());

    // In a browser: loads without console errors, renders, has the elements.
    let Some(dom) = open_in_chromium(&html_path, &root.join("report.png")) else {
        return;
    };
    assert!(dom.contains("id=\"summary-table\""), "no summary table");
    assert_eq!(
        dom.matches("<tr class=\"pass\"").count() + dom.matches("<tr class=\"fail\"").count(),
        2
    );
    assert_eq!(dom.matches("<figure class=\"stage").count(), stages);
    assert_eq!(dom.matches("<svg").count(), html.matches("<svg").count());
    assert!(dom.contains("<g class=\"divergence\">"));
    assert!(dom.contains("class=\"divergence-info\""));
    assert!(dom.contains("class=\"logits\""));
    assert!(dom.contains("class=\"headroom\""));
    assert!(dom.contains("class=\"receipt\""));
    assert!(dom.contains("<figure class=\"bench-decode\">"));
}

#[test]
fn user_text_is_escaped_and_junit_survives_a_reference_that_prints_colours() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    // A reference that fails with ANSI colours, a NUL, a backspace and markup in its output.
    let script = root.join("scenarios/bad_ref.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf 'loading <model> & \"more\"\\n' >&2\nprintf '\\033[1;31merror:\\033[0m bad \\000 nul \\010 <b>tensor</b>\\n' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let name = "evil<b>&'x";
    std::fs::write(
        root.join(format!("scenarios/{name}.yaml")),
        "description: x\nmodel:\n  preset: tiny\ninputs:\n  tokens:\n    - [1, 2, 3]\ngolden: false\nreference:\n  command: [./bad_ref.sh]\n",
    )
    .unwrap();
    // An absent model whose path holds markup: its checks are ignored with the path shown.
    std::fs::write(
        root.join("scenarios/absent.yaml"),
        "description: x\nmodel:\n  path: \"<img src=x onerror=alert(1)>.gguf\"\ninputs:\n  tokens:\n    - [1, 2]\n",
    )
    .unwrap();
    let out = harness(root, &["run"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    // The table row names the reference's error, not just "its last output:".
    let parity = t
        .lines()
        .find(|l| l.starts_with(name) && l.contains("parity"))
        .unwrap_or_else(|| panic!("no parity row: {t}"));
    assert!(parity.contains("error: bad"), "{parity}");
    assert!(!parity.contains('\u{1b}'), "{parity:?}");

    let xml = std::fs::read_to_string(root.join("target/harness/junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    let report = Report::read(&root.join("target/harness/report.json")).unwrap();
    assert_eq!(cases.len(), report.rows.len());
    let failure = cases
        .iter()
        .filter(|c| c.attribute("name") == Some("parity"))
        .find_map(|c| c.children().find(|n| n.has_tag_name("failure")))
        .expect("a failure element");
    assert_eq!(
        cases[0]
            .attribute("classname")
            .map(|c| c.starts_with("scenarios::")),
        Some(true)
    );
    let body = failure.text().unwrap();
    assert!(
        body.contains("error: bad \\u{0} nul \\u{8} <b>tensor</b>"),
        "{body:?}"
    );
    assert!(failure.attribute("message").unwrap().contains("error: bad"));
    assert!(doc
        .descendants()
        .any(|n| n.attribute("classname") == Some("scenarios::evil<b>&'x")));
    assert!(doc.descendants().any(|n| n.has_tag_name("skipped")));

    let html = std::fs::read_to_string(root.join("target/harness/report.html")).unwrap();
    assert_self_contained(&html);
    assert!(
        !html.contains("<b>") && !html.contains("<model>"),
        "markup passed through"
    );
    assert!(html.contains("evil&lt;b&gt;&amp;&#39;x"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(!html.contains('\u{1b}') && !html.contains('\u{0}'));
    if let Some(dom) = open_in_chromium(
        &root.join("target/harness/report.html"),
        &root.join("report.png"),
    ) {
        assert!(
            !dom.contains("<img") && !dom.contains("<b>"),
            "markup in the DOM"
        );
        assert!(dom.contains("id=\"summary-table\""));
    }
}

#[test]
fn a_filter_that_selects_nothing_is_bad_usage_and_keeps_the_reports() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("scenarios")).unwrap();
    std::fs::write(
        root.join("scenarios/one.yaml"),
        "description: x\nmodel:\n  preset: tiny\ninputs:\n  tokens:\n    - [1, 2, 3]\ngolden: false\nreference: none\n",
    )
    .unwrap();
    let out = harness(root, &["run"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let before = std::fs::read(root.join("target/harness/report.json")).unwrap();
    for cmd in ["run", "list"] {
        let out = harness(root, &[cmd, "--filter", "nomatch"], &[]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", text(&out));
        let t = text(&out);
        assert!(
            t.contains("`--filter nomatch` matches none of the 1 trial;")
                && t.contains("harness list"),
            "{t}"
        );
    }
    assert_eq!(
        std::fs::read(root.join("target/harness/report.json")).unwrap(),
        before
    );
}

/// `harness report` never replaces what it reads, nor a device or pipe named as its output.
#[test]
fn report_output_that_would_replace_an_input_or_a_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("report.json");
    let json = r#"{"schema_version":2,"rows":[],"passed":0,"failed":0,"ignored":0,"seconds":0.0}"#;
    std::fs::write(&input, json).unwrap();
    let run = |out: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
            .arg("report")
            .arg(&input)
            .arg("--output")
            .arg(out)
            .output()
            .unwrap()
    };
    let o = run(&input);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is the input"));
    assert_eq!(std::fs::read_to_string(&input).unwrap(), json);
    let fifo = dir.path().join("pipe");
    if std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success())
    {
        let o = run(&fifo);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("is a pipe"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let o = run(&dir.path().join("out.html"));
    assert!(o.status.success());
}
