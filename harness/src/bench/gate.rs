//! The perf gate: a bench report's engine/llama.cpp ratios against the floors committed per
//! processor family in `receipts/perf-baseline.json` (or, for a report the engine ran alone,
//! its decode share of the bandwidth bound against the engine-only floors), and the rounds
//! whose spread is too wide to trust.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BenchReport, Rates, Stats, ThreadResult};

/// The perf gate's stored floors (`receipts/perf-baseline.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PerfBaseline {
    /// Always 1.
    pub schema_version: u32,
    /// Where the floors come from (the run they were measured in).
    pub note: String,
    /// A ratio passes when it is at least `min_ratio × (1 − noise_margin)`.
    pub noise_margin: f64,
    /// The conservative floors, for a CPU no entry of `cpus` matches.
    pub floors: Vec<Floor>,
    /// The conservative engine-only floors: for a report of a model llama.cpp cannot run (its
    /// `reference_unavailable` set), on a CPU whose entry has none of its own.
    #[serde(default)]
    pub engine_only_floors: Vec<ShareFloor>,
    /// Floors measured on a processor family: the first entry whose `cpu_match` is part of the
    /// report's `cpu_model` applies.
    #[serde(default)]
    pub cpus: Vec<CpuFloors>,
}

/// The floors of one processor family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CpuFloors {
    /// A substring of the CPU model (`Intel(R) Xeon(R) Processor (family 6, model 167)`).
    pub cpu_match: String,
    /// Where the floors come from (the machine, date and measured ratios).
    pub note: String,
    pub floors: Vec<Floor>,
    /// The family's engine-only floors (none: the conservative ones apply).
    #[serde(default)]
    pub engine_only_floors: Vec<ShareFloor>,
}

/// An engine-only floor: for a report the engine ran alone (no llama.cpp run to compare with),
/// its median decode rate's share of the weights-only bandwidth bound at a thread count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareFloor {
    pub threads: usize,
    /// A share passes when it is at least `min_share × (1 − noise_margin)`.
    pub min_share: f64,
}

/// A round set is noisy when its slowest and fastest rates differ by more than this factor: the
/// machine's other load moved them, and the median is not a figure to trust alone.
pub const NOISY_SPREAD: f64 = 1.5;

/// Which of a thread count's rates are noisy ([`NOISY_SPREAD`]), named (`engine decode`).
pub fn noisy(t: &ThreadResult) -> Vec<String> {
    let mut v = Vec::new();
    let mut check = |side: &str, phase: &str, s: &Stats| {
        if s.samples.len() > 1 && s.max > s.min * NOISY_SPREAD {
            v.push(format!(
                "{side} {phase} [{:.1}-{:.1}] spreads more than {NOISY_SPREAD}x",
                s.min, s.max
            ));
        }
    };
    check("engine", "prefill", &t.engine.prefill_tps);
    check("engine", "decode", &t.engine.decode_tps);
    if let Some(l) = &t.llama {
        check("llama.cpp", "prefill", &l.prefill_tps);
        check("llama.cpp", "decode", &l.decode_tps);
    }
    v
}

/// One floor: engine/llama.cpp ratio of a phase at a thread count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Floor {
    pub threads: usize,
    /// `prefill` or `decode`.
    pub phase: String,
    pub min_ratio: f64,
}

/// Read a JSON file into `T`, naming the file, line and column on error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = bitnet_engine::files::read_text_limited(
        path,
        bitnet_engine::files::MAX_JSON_BYTES,
        "JSON file",
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    crate::bounded::json(&text)
        .and_then(|()| serde_json::from_str(&text))
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[derive(Clone, Copy)]
enum Phase {
    Prefill,
    Decode,
}

impl Phase {
    fn median(self, r: &Rates) -> f64 {
        match self {
            Phase::Prefill => r.prefill_tps.median,
            Phase::Decode => r.decode_tps.median,
        }
    }
}

/// Whether a bench report agrees with itself, as `harness bench` writes it: each rate's median,
/// minimum and maximum are those of its samples (at most one per round, each finite and
/// positive), each ratio is the engine's median over llama.cpp's, each thread count appears
/// once. The gate reads the ratios, so a report edited to claim a better one is refused here
/// rather than passed.
pub fn check_report(r: &BenchReport) -> Result<(), String> {
    if r.schema_version != 1 {
        return Err(format!(
            "`schema_version` is {}, expected 1",
            r.schema_version
        ));
    }
    if r.rounds == 0 || r.prompt_tokens == 0 || r.decode_tokens == 0 {
        return Err(format!(
            "`rounds` {}, `prompt_tokens` {}, `decode_tokens` {}: each must be at least 1",
            r.rounds, r.prompt_tokens, r.decode_tokens
        ));
    }
    if r.results.is_empty() {
        return Err("`results` is empty: nothing was measured".into());
    }
    if r.weight_bytes_per_token == 0 {
        return Err("`weight_bytes_per_token` is 0, expected the model's weight bytes".into());
    }
    // Within the rounding of a figure written to three decimals. A truth that is not finite
    // (a positive rate or read so small that the quotient overflows) matches nothing: with
    // `inf` on both sides of the comparison any stored figure would pass.
    let close = |x: f64, truth: f64| {
        x.is_finite() && truth.is_finite() && (x - truth).abs() <= 5e-4 + 1e-3 * truth
    };
    let mut seen = std::collections::BTreeSet::new();
    for (i, t) in r.results.iter().enumerate() {
        let at = format!("`results[{i}]` ({} threads)", t.threads);
        if !seen.insert(t.threads) {
            return Err(format!("{at}: a second result for {} threads", t.threads));
        }
        let mut sides = vec![("engine", &t.engine)];
        if let Some(l) = &t.llama {
            sides.push(("llama", l));
        }
        for (side, rates) in sides {
            for (phase, s) in [
                ("prefill_tps", &rates.prefill_tps),
                ("decode_tps", &rates.decode_tps),
            ] {
                let field = format!("{at}: `{side}.{phase}`");
                if s.samples.is_empty() || s.samples.len() > r.rounds {
                    return Err(format!(
                        "{field} has {} samples, expected 1 to {} (one per round)",
                        s.samples.len(),
                        r.rounds
                    ));
                }
                if let Some(x) = s.samples.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
                    return Err(format!(
                        "{field} has the sample {x}, expected a positive rate"
                    ));
                }
                let truth = Stats::of(&s.samples);
                if (s.median, s.min, s.max) != (truth.median, truth.min, truth.max) {
                    return Err(format!(
                        "{field}: median {}, min {}, max {} are not its samples' ({}, {}, {})",
                        s.median, s.min, s.max, truth.median, truth.min, truth.max
                    ));
                }
            }
        }
        let ratios = [
            ("prefill_ratio", t.prefill_ratio, Phase::Prefill),
            ("decode_ratio", t.decode_ratio, Phase::Decode),
        ];
        for (name, stored, phase) in ratios {
            match (stored, &t.llama) {
                (None, None) => {}
                (Some(_), None) => {
                    return Err(format!("{at}: `{name}` is given without a llama.cpp run"))
                }
                (None, Some(_)) => {
                    return Err(format!("{at}: `{name}` is missing beside a llama.cpp run"))
                }
                (Some(x), Some(l)) => {
                    let (e, lm) = (phase.median(&t.engine), phase.median(l));
                    let truth = e / lm;
                    if !close(x, truth) {
                        return Err(format!(
                            "{at}: `{name}` is {x}, but the medians give {truth:.4} (engine {e} / llama.cpp {lm})"
                        ));
                    }
                }
            }
        }
        // The bound and the shares of it (the engine-only floors read the engine's share).
        if !(t.bandwidth_gbs.is_finite() && t.bandwidth_gbs > 0.0) {
            return Err(format!(
                "{at}: `bandwidth_gbs` is {}, expected a positive read rate",
                t.bandwidth_gbs
            ));
        }
        let bound = t.bandwidth_gbs * 1e9 / r.weight_bytes_per_token as f64;
        if !close(t.bound_decode_tps, bound) {
            return Err(format!(
                "{at}: `bound_decode_tps` is {}, but `bandwidth_gbs` over \
                 `weight_bytes_per_token` gives {bound:.4}",
                t.bound_decode_tps
            ));
        }
        let shares = [
            (
                "engine_share_of_bound",
                Some(t.engine_share_of_bound),
                Some(&t.engine),
            ),
            (
                "llama_share_of_bound",
                t.llama_share_of_bound,
                t.llama.as_ref(),
            ),
        ];
        for (name, stored, rates) in shares {
            match (stored, rates) {
                (None, None) => {}
                (Some(_), None) => {
                    return Err(format!("{at}: `{name}` is given without a llama.cpp run"))
                }
                (None, Some(_)) => {
                    return Err(format!("{at}: `{name}` is missing beside a llama.cpp run"))
                }
                (Some(x), Some(rates)) => {
                    let truth = rates.decode_tps.median / t.bound_decode_tps;
                    if !close(x, truth) {
                        return Err(format!(
                            "{at}: `{name}` is {x}, but the decode median over \
                             `bound_decode_tps` gives {truth:.4}"
                        ));
                    }
                }
            }
        }
    }
    if r.reference_unavailable.is_some() && r.results.iter().any(|t| t.llama.is_some()) {
        return Err("`reference_unavailable` is set, yet results hold llama.cpp runs".into());
    }
    Ok(())
}

/// Whether a baseline can gate anything: floors to apply (the conservative set, and each CPU
/// entry's), each with a positive finite ratio, a thread count from 1 to 256, a known phase, and
/// no two for the same thread count and phase.
pub fn check_baseline(b: &PerfBaseline) -> Result<(), String> {
    if b.schema_version != 1 {
        return Err(format!(
            "`schema_version` is {}, expected 1",
            b.schema_version
        ));
    }
    if !(0.0..1.0).contains(&b.noise_margin) {
        return Err(format!(
            "`noise_margin` is {}, expected 0 to below 1",
            b.noise_margin
        ));
    }
    let sets = std::iter::once(("`floors`".to_owned(), &b.floors)).chain(
        b.cpus
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("`cpus[{i}].floors`"), &c.floors)),
    );
    for (i, c) in b.cpus.iter().enumerate() {
        if c.cpu_match.trim().is_empty() {
            return Err(format!(
                "`cpus[{i}].cpu_match` is empty: name the CPU model it applies to"
            ));
        }
    }
    for (name, floors) in sets {
        if floors.is_empty() {
            return Err(format!("{name} is empty: a gate needs at least one floor"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (j, f) in floors.iter().enumerate() {
            let at = format!("{name}[{j}]");
            if !(f.min_ratio.is_finite() && f.min_ratio > 0.0) {
                return Err(format!(
                    "{at}: `min_ratio` is {}, expected a positive ratio",
                    f.min_ratio
                ));
            }
            if f.threads == 0 || f.threads > crate::scenario::MAX_THREADS {
                return Err(format!(
                    "{at}: `threads` is {}, expected 1 to {}",
                    f.threads,
                    crate::scenario::MAX_THREADS
                ));
            }
            if f.phase != "prefill" && f.phase != "decode" {
                return Err(format!(
                    "{at}: `phase` is `{}`, expected `prefill` or `decode`",
                    f.phase
                ));
            }
            if !seen.insert((f.threads, f.phase.clone())) {
                return Err(format!(
                    "{at}: a second floor for {} at {} threads",
                    f.phase, f.threads
                ));
            }
        }
    }
    let share_sets = std::iter::once(("`engine_only_floors`".to_owned(), &b.engine_only_floors))
        .chain(b.cpus.iter().enumerate().map(|(i, c)| {
            (
                format!("`cpus[{i}].engine_only_floors`"),
                &c.engine_only_floors,
            )
        }));
    for (name, floors) in share_sets {
        let mut seen = std::collections::BTreeSet::new();
        for (j, f) in floors.iter().enumerate() {
            let at = format!("{name}[{j}]");
            if !(f.min_share.is_finite() && f.min_share > 0.0 && f.min_share <= 1.0) {
                return Err(format!(
                    "{at}: `min_share` is {}, expected a share of the bound above 0 and at most 1",
                    f.min_share
                ));
            }
            if f.threads == 0 || f.threads > crate::scenario::MAX_THREADS {
                return Err(format!(
                    "{at}: `threads` is {}, expected 1 to {}",
                    f.threads,
                    crate::scenario::MAX_THREADS
                ));
            }
            if !seen.insert(f.threads) {
                return Err(format!("{at}: a second floor for {} threads", f.threads));
            }
        }
    }
    Ok(())
}

/// Check a report against the floors: `Ok(lines)` when every floor holds, `Err(lines)` naming
/// each one that does not (and any floor the report has no measurement for). A baseline whose
/// `noise_margin` is outside `[0, 1)` holds nothing: `Err` at once, whichever floors would apply.
pub fn gate(base: &PerfBaseline, report: &BenchReport) -> Result<Vec<String>, Vec<String>> {
    if !(0.0..1.0).contains(&base.noise_margin) {
        return Err(vec![format!(
            "`noise_margin` is {}, expected 0 to below 1: no floor can be applied",
            base.noise_margin
        )]);
    }
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    let cpu = base
        .cpus
        .iter()
        .find(|c| !c.cpu_match.is_empty() && report.cpu_model.contains(&c.cpu_match));
    if let Some(why) = &report.reference_unavailable {
        return gate_engine_only(base, cpu, report, why);
    }
    let (floors, source) = match cpu {
        Some(c) => (&c.floors, format!("floors of `{}`", c.cpu_match)),
        None => (
            &base.floors,
            format!(
                "conservative floors (no entry for CPU `{}`)",
                if report.cpu_model.is_empty() {
                    "unknown"
                } else {
                    &report.cpu_model
                }
            ),
        ),
    };
    ok.push(format!("using the {source}"));
    bad.push(format!("using the {source}"));
    for f in floors {
        let Some(t) = report.results.iter().find(|t| t.threads == f.threads) else {
            bad.push(format!(
                "{} at {} thread(s): no measurement in the report",
                f.phase, f.threads
            ));
            continue;
        };
        let ratio = match f.phase.as_str() {
            "prefill" => t.prefill_ratio,
            "decode" => t.decode_ratio,
            other => {
                bad.push(format!(
                    "floor phase `{other}`: expected `prefill` or `decode`"
                ));
                continue;
            }
        };
        let Some(ratio) = ratio else {
            bad.push(format!(
                "{} at {} thread(s): the report has no llama.cpp run to compare with ({})",
                f.phase,
                f.threads,
                report
                    .reference_unavailable
                    .as_deref()
                    .unwrap_or("no reference")
            ));
            continue;
        };
        let limit = f.min_ratio * (1.0 - base.noise_margin);
        let line = format!(
            "{} at {} thread(s): engine/llama.cpp {ratio:.3}x, floor {:.3}x less {:.0}% = {limit:.3}x",
            f.phase,
            f.threads,
            f.min_ratio,
            100.0 * base.noise_margin
        );
        judge(t, line, ratio, limit, &mut ok, &mut bad);
    }
    verdict(ok, bad)
}

/// One floor's verdict: `line` (with the thread count's noisy rates named) goes to `ok` when
/// `value` is finite and at least `limit`, else to `bad`.
fn judge(
    t: &ThreadResult,
    line: String,
    value: f64,
    limit: f64,
    ok: &mut Vec<String>,
    bad: &mut Vec<String>,
) {
    let noise = noisy(t);
    let line = if noise.is_empty() {
        line
    } else {
        format!("{line} (noisy: {})", noise.join("; "))
    };
    if value.is_finite() && value >= limit {
        ok.push(line);
    } else {
        bad.push(line);
    }
}

/// The gate's result from its lines: both lists start with the line naming the floors, so `bad`
/// holding only that line means nothing failed.
fn verdict(ok: Vec<String>, bad: Vec<String>) -> Result<Vec<String>, Vec<String>> {
    if bad.len() == 1 {
        Ok(ok)
    } else {
        Err(bad)
    }
}

/// [`gate`] for a report the engine ran alone (`why`: its `reference_unavailable`): each
/// engine-only floor of the CPU's entry, or the conservative ones, against the engine's decode
/// share of the weights-only bound.
fn gate_engine_only(
    base: &PerfBaseline,
    cpu: Option<&CpuFloors>,
    report: &BenchReport,
    why: &str,
) -> Result<Vec<String>, Vec<String>> {
    let cpu_name = if report.cpu_model.is_empty() {
        "unknown"
    } else {
        &report.cpu_model
    };
    let (floors, source) = match cpu.filter(|c| !c.engine_only_floors.is_empty()) {
        Some(c) => (
            &c.engine_only_floors,
            format!("engine-only floors of `{}`", c.cpu_match),
        ),
        None => (
            &base.engine_only_floors,
            format!("conservative engine-only floors (no engine-only entry for CPU `{cpu_name}`)"),
        ),
    };
    let head = format!("using the {source}: the engine ran alone ({why})");
    if floors.is_empty() {
        return Err(vec![
            head,
            "the baseline has no engine-only floors to hold this report to: add \
             `engine_only_floors` (threads and `min_share`, a share of the bandwidth bound)"
                .to_string(),
        ]);
    }
    let (mut ok, mut bad) = (vec![head.clone()], vec![head]);
    for f in floors {
        let Some(t) = report.results.iter().find(|t| t.threads == f.threads) else {
            bad.push(format!(
                "decode at {} thread(s): no measurement in the report",
                f.threads
            ));
            continue;
        };
        let share = t.engine_share_of_bound;
        let limit = f.min_share * (1.0 - base.noise_margin);
        let line = format!(
            "decode at {} thread(s): engine alone at {:.1}% of the bandwidth bound ({:.1} of {:.1} \
             tok/s at {:.1} GB/s), floor {:.1}% less {:.0}% = {:.1}%",
            f.threads,
            100.0 * share,
            t.engine.decode_tps.median,
            t.bound_decode_tps,
            t.bandwidth_gbs,
            100.0 * f.min_share,
            100.0 * base.noise_margin,
            100.0 * limit
        );
        judge(t, line, share, limit, &mut ok, &mut bad);
    }
    verdict(ok, bad)
}
