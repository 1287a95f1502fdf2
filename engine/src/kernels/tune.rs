//! The measurement behind a [`KernelPlan`]: every variant this CPU runs, timed on a model's own
//! matrices and on the rest of a decode step, the fastest kept per kind of product (with its
//! prefetch distance and row or token group where the variant takes them).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::plan::{KernelPlan, ProductKind};
use super::{
    grouped_copy, matmul_prepared, prepare, Kernel, KernelLog, Matrix, PreparedInput,
    PREFETCH_DISTANCES,
};

/// One variant's time on one kind of product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// `TQ2_0/decode`, ...
    pub kind: String,
    /// The matrix timed (`blk.0.ffn_up.weight`), rows × cols, and the tokens per call.
    pub matrix: String,
    pub tokens: usize,
    pub variant: String,
    /// The prefetch distance timed (bytes, 0: none), for decode kinds of variants that take
    /// one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<usize>,
    /// The rows (decode) or tokens (prefill) per kernel call timed, for variants that offer
    /// several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<usize>,
    /// Best of the repetitions, microseconds per call.
    pub micros: f64,
}

/// Bytes of weights a decode timing streams through: copies of the matrix, taken in turn, so the
/// weights come from memory as in a real decode (one matrix alone would sit in L2 and time the
/// kernels cache-hot, which ranks them differently from a decode bound by memory).
pub const DECODE_STREAM_BYTES: usize = 96 << 20;

/// `n` copies of `data` back to back in anonymous memory, advised for transparent huge pages when
/// `huge` (as [`crate::model::Model::load`] holds the weights by default), so that a decode
/// timing streams from the same kind of pages as a decode does. `None` when the memory cannot be
/// mapped: the timings then reuse the matrix itself.
fn stream_copies(data: &[u8], n: usize, huge: bool) -> Option<memmap2::MmapMut> {
    let mut buf = memmap2::MmapMut::map_anon(data.len().checked_mul(n)?.max(1)).ok()?;
    if huge {
        // Advice only: without THP the copies are in small pages, as the weights' copy is.
        let _ = buf.advise(memmap2::Advice::HugePage);
    }
    if !data.is_empty() {
        for c in buf.chunks_exact_mut(data.len()) {
            c.copy_from_slice(data);
        }
    }
    Some(buf)
}

/// The work outside the products that a plan's `other` variant runs (attention, RoPE, the FFN
/// activation), timed per variant like the products: [`crate::forward::DecodeOther`] on a
/// model's own shape.
pub trait OtherWork {
    /// What one call runs (shapes), for the timings' `matrix` field.
    fn describe(&self) -> String;
    /// One call with `kernel` (its attention prefetching `prefetch` bytes ahead; `None`: the
    /// default distance) on `threads` threads.
    fn run(&mut self, kernel: Kernel, prefetch: Option<usize>, threads: usize);
    /// Run the next calls on a KV cache in huge pages (`true`) or small ones; `false` when this
    /// work cannot (then the pages are not timed).
    fn set_kv_huge(&mut self, huge: bool) -> bool {
        let _ = huge;
        false
    }
}

/// The kind label of the timings of the rest of a decode step (the plan's `other`) on the KV
/// cache in small pages and in huge ones.
pub const KV_PAGES_KIND: &str = "other, KV cache pages";

/// The KV cache takes huge pages only when the attention on them timed at most this fraction
/// of its time on small pages: faulting huge pages in (with the kernel's compaction) is not in
/// the timing, and costs each new chunk more than small pages do.
pub const KV_HUGE_GAIN: f64 = 0.97;

/// The kind label of the `other` timings (the plan's base).
pub const OTHER_KIND: &str = "other";

/// The best time of `f` in seconds: called until `budget` has passed (at least `min_calls`
/// calls, at most 1000), so a busy moment on a shared machine does not decide.
fn best_time(budget: Duration, min_calls: usize, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    let mut fastest = f64::INFINITY;
    let mut calls = 0;
    while calls < min_calls || start.elapsed() < budget {
        let t = Instant::now();
        f(calls);
        fastest = fastest.min(t.elapsed().as_secs_f64());
        calls += 1;
        if calls >= 1000 {
            break;
        }
    }
    fastest
}

/// Rounds each candidate's `budget` is split into: every candidate is timed once per round, in
/// turn, so a busy spell of the shared machine (seconds long) lands on a few candidates in one
/// round rather than on one candidate's whole budget.
pub const ROUNDS: usize = 3;

/// The best time in seconds of each of `n` candidates, timed in [`ROUNDS`] interleaved rounds of
/// `budget / ROUNDS` each (`time(i, round_budget)` times candidate `i` once): a candidate's time
/// is its best over the rounds.
fn interleaved_best(
    n: usize,
    budget: Duration,
    mut time: impl FnMut(usize, Duration) -> f64,
) -> Vec<f64> {
    let mut best = vec![f64::INFINITY; n];
    for _ in 0..ROUNDS {
        for (i, b) in best.iter_mut().enumerate() {
            *b = b.min(time(i, budget / ROUNDS as u32));
        }
    }
    best
}

/// Time every variant this CPU runs on each kind of product in `matrices` (a representative
/// matrix per weight type: `(name, matrix)`), and on `other` (the rest of a decode step), with
/// `threads` threads, and choose the fastest per kind; the fastest on `other` becomes the plan's
/// base (without `other`, [`Kernel::best`]). Decode products stream [`DECODE_STREAM_BYTES`] of
/// copies of the matrix (in memory advised for huge pages when `huge_pages`, as the weights are
/// held); prefill products reuse one (their time is in the arithmetic). A decode
/// kind is timed on each variant at every distance of [`PREFETCH_DISTANCES`] where the variant's
/// kernels prefetch ([`Kernel::tunes_prefetch`]), and on every row or token group the variant
/// offers ([`Kernel::groups`]); the plan keeps the fastest combination. Each (kind, variant,
/// group, distance) counts its best call over `budget`, spent in [`ROUNDS`] interleaved rounds
/// (see `interleaved_best`). Returns the plan and every timing.
pub fn tune(
    matrices: &[(String, Matrix<'_>)],
    other: Option<&mut dyn OtherWork>,
    threads: usize,
    budget: Duration,
    huge_pages: bool,
) -> (KernelPlan, Vec<Timing>) {
    let variants = Kernel::available();
    let mut plan = KernelPlan::uniform(Kernel::best());
    let mut timings = Vec::new();
    if let Some(work) = other {
        // Every variant, at every prefetch distance where its attention takes one.
        let candidates: Vec<(Kernel, Option<usize>)> = variants
            .iter()
            .flat_map(|&k| {
                let distances: Vec<Option<usize>> = if k.tunes_attention_prefetch() {
                    PREFETCH_DISTANCES.iter().map(|&d| Some(d)).collect()
                } else {
                    vec![None]
                };
                distances.into_iter().map(move |d| (k, d))
            })
            .collect();
        let times = interleaved_best(candidates.len(), budget, |i, b| {
            let (k, d) = candidates[i];
            best_time(b, 1, |_| work.run(k, d, threads))
        });
        let mut best: Option<(f64, Kernel, Option<usize>)> = None;
        for (&(k, d), &fastest) in candidates.iter().zip(&times) {
            timings.push(Timing {
                kind: OTHER_KIND.into(),
                matrix: work.describe(),
                tokens: 1,
                variant: k.suffix().into(),
                prefetch: d,
                group: None,
                micros: fastest * 1e6,
            });
            if best.is_none_or(|(b, _, _)| fastest < b) {
                best = Some((fastest, k, d));
            }
        }
        if let Some((_, k, d)) = best {
            plan.base = k;
            plan.attention_prefetch = d;
            // The KV cache's pages, with the chosen variant and distance.
            if work.set_kv_huge(false) {
                let times = interleaved_best(2, budget, |i, b| {
                    work.set_kv_huge(i == 1);
                    best_time(b, 1, |_| work.run(k, d, threads))
                });
                for (huge, t) in [(false, times[0]), (true, times[1])] {
                    timings.push(Timing {
                        kind: KV_PAGES_KIND.into(),
                        matrix: format!(
                            "{}, KV cache in {} pages",
                            work.describe(),
                            if huge { "huge" } else { "small" }
                        ),
                        tokens: 1,
                        variant: k.suffix().into(),
                        prefetch: d,
                        group: None,
                        micros: t * 1e6,
                    });
                }
                plan.kv_huge = Some(times[1] <= KV_HUGE_GAIN * times[0]);
                work.set_kv_huge(false);
            }
        }
    }
    for (name, m) in matrices {
        for tokens in [1, 16] {
            let kind = ProductKind::of(m.ty, tokens);
            // Deterministic activations of order one.
            let x: Vec<f32> = (0..tokens * m.cols)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
                .collect();
            let mut out = vec![0f32; tokens * m.rows];
            let stream = if kind.prefill {
                None
            } else {
                let n = (DECODE_STREAM_BYTES / m.data.len().max(1)).clamp(1, 512);
                stream_copies(m.data, n, huge_pages)
            };
            let copies: Vec<&[u8]> = match &stream {
                Some(buf) if !m.data.is_empty() => buf.chunks_exact(m.data.len()).collect(),
                _ => Vec::new(),
            };
            let mut best: Option<(f64, Kernel, Option<usize>, Option<usize>)> = None;
            let candidates = variants
                .iter()
                .filter(|k| k.has_own_kernels(m.ty))
                .flat_map(|&k| {
                    let distances: Vec<Option<usize>> = if !kind.prefill && k.tunes_prefetch(m.ty) {
                        PREFETCH_DISTANCES.iter().map(|&d| Some(d)).collect()
                    } else {
                        vec![None]
                    };
                    let offered = k.groups(m.ty, kind.prefill);
                    let groups: Vec<Option<usize>> = if offered.is_empty() {
                        vec![None]
                    } else {
                        offered.iter().map(|&g| Some(g)).collect()
                    };
                    groups
                        .into_iter()
                        .flat_map(move |g| distances.clone().into_iter().map(move |d| (k, g, d)))
                })
                .collect::<Vec<_>>();
            // Kernels that read rows grouped ([`Matrix::grouped`]) stream grouped copies, made
            // for each group some candidate reads.
            let mut gs: Vec<usize> = candidates
                .iter()
                .filter_map(|&(k, g, _)| PreparedInput::grouped_rows_of(k, m.ty, tokens, g))
                .collect();
            gs.sort_unstable();
            gs.dedup();
            if copies.is_empty() {
                gs.clear();
            }
            let grouped_streams: Vec<(usize, Option<memmap2::MmapMut>)> = gs
                .into_iter()
                .map(|g| {
                    let one = grouped_copy(m.ty, m.data, m.rows, m.cols, g);
                    (g, stream_copies(&one, copies.len(), huge_pages))
                })
                .collect();
            // Copies are taken in turn across every call, whichever candidate makes it.
            let mut next_copy = 0;
            let times = interleaved_best(candidates.len(), budget, |i, b| {
                let (k, group, distance) = candidates[i];
                let log = KernelLog::default();
                let t = best_time(b, 1, |_| {
                    let at = next_copy % copies.len().max(1);
                    next_copy += 1;
                    let p = prepare(m.ty, &x, tokens, m.cols, threads, k, &log)
                        .with_prefetch(distance)
                        .with_group(group);
                    let mut mat = match copies.get(at) {
                        Some(&data) => Matrix { data, ..*m },
                        None => *m,
                    };
                    let grouped = p.grouped_rows().and_then(|g| {
                        let (_, s) = grouped_streams.iter().find(|(h, _)| *h == g)?;
                        Some((g, s.as_ref()?.chunks_exact(m.data.len()).nth(at)?))
                    });
                    if grouped.is_some() {
                        mat.grouped = grouped;
                    }
                    matmul_prepared(&mat, &p, &mut out, threads, &log);
                });
                std::hint::black_box(&out);
                t
            });
            for (&(k, group, distance), &fastest) in candidates.iter().zip(&times) {
                timings.push(Timing {
                    kind: kind.label(),
                    matrix: format!("{name} ({} × {})", m.rows, m.cols),
                    tokens,
                    variant: k.suffix().into(),
                    prefetch: distance,
                    group,
                    micros: fastest * 1e6,
                });
                if best.is_none_or(|(b, ..)| fastest < b) {
                    best = Some((fastest, k, group, distance));
                }
            }
            if let Some((_, k, group, distance)) = best {
                plan.products.insert(kind, k);
                if let Some(d) = distance {
                    plan.prefetch.insert(kind, d);
                }
                if let Some(g) = group {
                    plan.groups.insert(kind, g);
                }
            }
        }
    }
    (plan, timings)
}

/// Interleaved rounds in which [`refine_on_steps`] times each candidate on decode steps.
pub const STEP_ROUNDS: usize = 5;

/// Each of `n` candidates timed once per round in [`STEP_ROUNDS`] interleaved rounds
/// (`time(i)`: seconds), its median round kept. The median and not the best: on a shared host
/// whose memory traffic from other tenants comes and goes over seconds, the best of three rounds
/// let one lucky round decide, and at two threads on Zen 4 (2026-12-07) it kept the `vnni256`
/// two-row TQ2_0 decode with a 4 KiB prefetch (7.50 against 7.96 ms a step for eight rows
/// without), which then decoded the 700M preset at 112-116 tok/s against 123-127 for eight rows
/// in alternating runs.
fn step_medians(n: usize, mut time: impl FnMut(usize) -> f64) -> Vec<f64> {
    let mut rounds = vec![Vec::with_capacity(STEP_ROUNDS); n];
    for _ in 0..STEP_ROUNDS {
        for (i, r) in rounds.iter_mut().enumerate() {
            r.push(time(i));
        }
    }
    rounds
        .into_iter()
        .map(|mut r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        })
        .collect()
}

/// The `kind` of [`refine_on_steps`]'s timings: the decode kind's label and this suffix.
pub const IN_STEPS: &str = " in decode steps";

/// A variant whose product alone took at most this many times the fastest's is timed again on
/// decode steps ([`refine_on_steps`]).
pub const STEP_VARIANT_SPAN: f64 = 1.5;

/// Decide again, on whole decode steps, the prefetch distance of every decode kind that `plan`
/// chose one for (`step(plan)`: seconds per decode step of the model under `plan`; `what` says
/// what a step timing runs, for the timings' `matrix`).
///
/// A product timed alone, even streaming from memory, can rank the distances differently from a
/// decode step, where each product starts cold at its own weights after other work: on an AMD
/// EPYC (Zen 3) at two threads the lone TQ2_0 product timed every distance within 1.5% and
/// [`tune`] kept "none", which ran the 700M decode at 57 tok/s against 72 with 2 KiB. Each kind's
/// distances are timed in [`STEP_ROUNDS`] interleaved rounds with the rest of the plan held
/// (median round each, [`step_medians`]), the kinds one after another, and the fastest is kept (on an exact tie, the
/// product's own pick).
///
/// Before the distances, each decode kind's variant is decided on decode steps the same way
/// when a second configuration [`tune`] timed for it (`products`: its timings) came within
/// [`STEP_VARIANT_SPAN`] of the fastest alone, a configuration being a variant, or for a
/// variant that groups rows each of its groups: each such configuration at every distance it
/// takes, and the fastest of those is kept (variant, group and distance together; such a kind's
/// distance is not timed again). On Zen 4 the AVX-512 two-row kernel timed 73 µs alone against
/// AVX2's 88, and decoded the 700M preset at 46 tok/s against AVX2's 50; and one tuning timed the
/// `vnni256` eight-row groups at 77 µs alone against 57 for four rows, where all 168 of the
/// 700M preset's projections in layer order ran 6.1-6.4 ms with eight rows against 6.5-7.0
/// with four (2026-12-06).
pub fn refine_on_steps(
    mut plan: KernelPlan,
    products: &[Timing],
    what: &str,
    mut step: impl FnMut(&KernelPlan) -> f64,
) -> (KernelPlan, Vec<Timing>) {
    let mut timings = Vec::new();
    let mut decided = Vec::new();
    let decode_kinds: Vec<ProductKind> = plan
        .products
        .keys()
        .filter(|k| !k.prefill)
        .copied()
        .collect();
    for kind in decode_kinds {
        let label = kind.label();
        // Each variant's (and, where it groups rows, each group's) fastest configuration alone,
        // fastest first.
        let mut each: Vec<&Timing> = Vec::new();
        for t in products.iter().filter(|t| t.kind == label) {
            match each
                .iter_mut()
                .find(|e| e.variant == t.variant && e.group == t.group)
            {
                Some(e) if e.micros <= t.micros => {}
                Some(e) => *e = t,
                None => each.push(t),
            }
        }
        each.sort_by(|a, b| a.micros.total_cmp(&b.micros));
        let Some(fastest_alone) = each.first().map(|t| t.micros) else {
            continue;
        };
        let close: Vec<&Timing> = each
            .iter()
            .filter(|t| t.micros <= fastest_alone * STEP_VARIANT_SPAN)
            .copied()
            .collect();
        if close.len() < 2 {
            continue;
        }
        // Each close variant and group, at every distance where it takes one (its own first):
        // the distance fastest alone can be the slowest in a step.
        let mut candidates: Vec<(Timing, KernelPlan)> = Vec::new();
        for t in close {
            let Ok(k) = Kernel::parse(&t.variant) else {
                continue;
            };
            let distances: Vec<Option<usize>> = match t.prefetch {
                Some(own) => std::iter::once(own)
                    .chain(PREFETCH_DISTANCES.iter().copied().filter(|&d| d != own))
                    .map(Some)
                    .collect(),
                None => vec![None],
            };
            for d in distances {
                let mut p = plan.clone();
                p.products.insert(kind, k);
                match t.group {
                    Some(g) => p.groups.insert(kind, g),
                    None => p.groups.remove(&kind),
                };
                match d {
                    Some(d) => p.prefetch.insert(kind, d),
                    None => p.prefetch.remove(&kind),
                };
                candidates.push((
                    Timing {
                        prefetch: d,
                        ..t.clone()
                    },
                    p,
                ));
            }
        }
        // Timings of variants this CPU cannot run (a cached file's, say) leave nothing to time.
        if candidates.is_empty() {
            continue;
        }
        let best = step_medians(candidates.len(), |i| step(&candidates[i].1));
        // Exact ties keep the fastest alone (the first).
        let mut fastest = 0;
        for (i, t) in best.iter().enumerate() {
            if *t < best[fastest] {
                fastest = i;
            }
        }
        for ((t, _), &s) in candidates.iter().zip(&best) {
            timings.push(Timing {
                kind: format!("{label}{IN_STEPS}"),
                matrix: what.to_string(),
                tokens: 1,
                variant: t.variant.clone(),
                prefetch: t.prefetch,
                group: t.group,
                micros: s * 1e6,
            });
        }
        plan = candidates.swap_remove(fastest).1;
        decided.push(kind);
    }
    // The other decode kinds' distances.
    let kinds: Vec<ProductKind> = plan
        .prefetch
        .keys()
        .filter(|k| !k.prefill && !decided.contains(k))
        .copied()
        .collect();
    for kind in kinds {
        let candidates: Vec<KernelPlan> = PREFETCH_DISTANCES
            .iter()
            .map(|&d| {
                let mut p = plan.clone();
                p.prefetch.insert(kind, d);
                p
            })
            .collect();
        let best = step_medians(candidates.len(), |i| step(&candidates[i]));
        // Exact ties keep the product's own pick.
        let mut fastest = PREFETCH_DISTANCES
            .iter()
            .position(|&d| plan.prefetch.get(&kind) == Some(&d))
            .unwrap_or(0);
        for (i, t) in best.iter().enumerate() {
            if *t < best[fastest] {
                fastest = i;
            }
        }
        plan.prefetch.insert(kind, PREFETCH_DISTANCES[fastest]);
        let variant = plan.products.get(&kind).copied().unwrap_or(plan.base);
        for (&d, &t) in PREFETCH_DISTANCES.iter().zip(&best) {
            timings.push(Timing {
                kind: format!("{}{IN_STEPS}", kind.label()),
                matrix: what.to_string(),
                tokens: 1,
                variant: variant.suffix().into(),
                prefetch: Some(d),
                group: plan.groups.get(&kind).copied(),
                micros: t * 1e6,
            });
        }
    }
    (plan, timings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgmlType;
    use std::collections::BTreeMap;

    /// Work whose time depends on the variant and the attention's prefetch distance: `fast`
    /// returns at once, every other spins.
    struct Spin {
        fast: (Kernel, Option<usize>),
        calls: BTreeMap<(&'static str, Option<usize>), usize>,
    }

    impl OtherWork for Spin {
        fn describe(&self) -> String {
            "spin".into()
        }
        fn run(&mut self, kernel: Kernel, prefetch: Option<usize>, threads: usize) {
            assert_eq!(threads, 2);
            *self.calls.entry((kernel.suffix(), prefetch)).or_default() += 1;
            if (kernel, prefetch) != self.fast {
                let t = Instant::now();
                while t.elapsed() < Duration::from_micros(300) {
                    std::hint::spin_loop();
                }
            }
        }
    }

    #[test]
    fn the_rest_of_a_step_is_timed_on_every_variant_and_distance_and_the_fastest_is_the_base() {
        // The slowest-looking candidate made fast: the first variant, or where the attention
        // prefetches, a SIMD variant at its second-longest distance (neither is what a plan that
        // ignored the measurement would keep).
        let available = Kernel::available();
        let fast = match available.iter().find(|k| k.tunes_attention_prefetch()) {
            Some(&k) => (k, Some(PREFETCH_DISTANCES[PREFETCH_DISTANCES.len() - 2])),
            None => (available[0], None),
        };
        let mut work = Spin {
            fast,
            calls: BTreeMap::new(),
        };
        let (plan, timings) = tune(&[], Some(&mut work), 2, Duration::from_millis(2), false);
        assert_eq!((plan.base, plan.attention_prefetch), fast);
        assert!(plan.products.is_empty());
        // Every variant, at every distance where its attention takes one.
        let want: Vec<(&str, Option<usize>)> = available
            .iter()
            .flat_map(|k| {
                if k.tunes_attention_prefetch() {
                    PREFETCH_DISTANCES
                        .iter()
                        .map(|&d| (k.suffix(), Some(d)))
                        .collect()
                } else {
                    vec![(k.suffix(), None)]
                }
            })
            .collect();
        let timed: Vec<(&str, Option<usize>)> = timings
            .iter()
            .map(|t| (t.variant.as_str(), t.prefetch))
            .collect();
        assert_eq!(timed, want);
        assert!(timings
            .iter()
            .all(|t| t.kind == OTHER_KIND && t.matrix == "spin" && t.tokens == 1));
        // At least three calls each, whatever the budget.
        assert!(work.calls.values().all(|&n| n >= 3), "{:?}", work.calls);
        assert_eq!(work.calls.len(), want.len());
        // Without the work, the base stays the best variant.
        let (plan, timings) = tune(&[], None, 1, Duration::from_millis(1), false);
        assert_eq!(plan.base, Kernel::best());
        assert_eq!(plan.attention_prefetch, None);
        assert!(timings.is_empty());
    }

    /// Work that runs in `huge_cost` (huge pages) or `small_cost` (small ones), whatever the
    /// variant.
    struct Pages {
        huge: bool,
        costs: [Duration; 2],
        calls: [usize; 2],
    }

    impl OtherWork for Pages {
        fn describe(&self) -> String {
            "pages".into()
        }
        fn run(&mut self, _: Kernel, _: Option<usize>, _: usize) {
            self.calls[usize::from(self.huge)] += 1;
            let t = Instant::now();
            while t.elapsed() < self.costs[usize::from(self.huge)] {
                std::hint::spin_loop();
            }
        }
        fn set_kv_huge(&mut self, huge: bool) -> bool {
            self.huge = huge;
            true
        }
    }

    #[test]
    fn the_kv_caches_pages_are_timed_and_huge_ones_taken_only_when_clearly_faster() {
        let us = Duration::from_micros;
        for (costs, want) in [
            ([us(400), us(100)], true),
            ([us(100), us(400)], false),
            // Equal: the first-touch cost of huge pages is not in the timing.
            ([us(200), us(200)], false),
        ] {
            let mut work = Pages {
                huge: false,
                costs,
                calls: [0, 0],
            };
            let (plan, timings) = tune(&[], Some(&mut work), 1, Duration::from_millis(3), false);
            assert_eq!(plan.kv_huge, Some(want), "{costs:?}");
            assert!(work.calls.iter().all(|&n| n >= 3), "{:?}", work.calls);
            let pages: Vec<&str> = timings
                .iter()
                .filter(|t| t.kind == KV_PAGES_KIND)
                .filter_map(|t| t.matrix.strip_prefix("pages, KV cache in "))
                .collect();
            assert_eq!(pages, ["small pages", "huge pages"]);
            assert!(!work.huge, "the work is left on small pages");
            assert!(plan.describe()["other"].ends_with(if want {
                " kv huge"
            } else {
                " kv small"
            }));
        }
        // Work that cannot choose (the variants' own timings only) leaves the pages unset.
        let mut spin = Spin {
            fast: (Kernel::Scalar, None),
            calls: BTreeMap::new(),
        };
        let (plan, _) = tune(&[], Some(&mut spin), 2, Duration::from_millis(1), false);
        assert_eq!(plan.kv_huge, None);
    }

    #[test]
    fn decode_steps_decide_each_decode_kinds_prefetch_distance() {
        let tq2 = ProductKind::of(GgmlType::TQ2_0, 1);
        let f16 = ProductKind::of(GgmlType::F16, 1);
        let pre = ProductKind::of(GgmlType::TQ2_0, 16);
        let mut plan = KernelPlan::uniform(Kernel::Scalar);
        plan.prefetch.insert(tq2, 0);
        plan.prefetch.insert(f16, 16384);
        plan.products.insert(pre, Kernel::Scalar);
        plan.attention_prefetch = Some(2048);
        // A step is fastest with TQ2_0 at 4096 and F16 at 8192, whatever the other's distance.
        let mut calls = 0;
        let (got, timings) = refine_on_steps(plan.clone(), &[], "steps", |p| {
            calls += 1;
            let mut t = 1.0;
            if p.prefetch[&tq2] != 4096 {
                t += 0.5;
            }
            if p.prefetch[&f16] != 8192 {
                t += 0.25;
            }
            t
        });
        assert_eq!(got.prefetch[&tq2], 4096);
        assert_eq!(got.prefetch[&f16], 8192);
        // Nothing else moves: the prefill kind, the base, the attention's distance.
        assert_eq!(got.products, plan.products);
        assert_eq!(got.base, plan.base);
        assert_eq!(got.attention_prefetch, Some(2048));
        // Every distance of both kinds, in every round.
        assert_eq!(calls, 2 * PREFETCH_DISTANCES.len() * STEP_ROUNDS);
        assert_eq!(timings.len(), 2 * PREFETCH_DISTANCES.len());
        let fastest_tq2 = timings
            .iter()
            .filter(|t| t.kind == format!("TQ2_0/decode{IN_STEPS}"))
            .min_by(|a, b| a.micros.total_cmp(&b.micros))
            .unwrap();
        assert_eq!(fastest_tq2.prefetch, Some(4096));
        assert_eq!(fastest_tq2.micros, 1e6 * 1.0);
        // Exact ties keep the product's own pick.
        let (same, _) = refine_on_steps(plan.clone(), &[], "steps", |_| 1.0);
        assert_eq!(same, plan);
        // A plan without decode distances is left alone, and nothing is timed.
        let bare = KernelPlan::uniform(Kernel::Scalar);
        let (same, timings) = refine_on_steps(bare.clone(), &[], "steps", |_| unreachable!());
        assert_eq!((same, timings.len()), (bare, 0));
    }

    #[test]
    fn decode_steps_keep_each_candidates_median_round_so_one_lucky_round_does_not_decide() {
        let tq2 = ProductKind::of(GgmlType::TQ2_0, 1);
        let mut plan = KernelPlan::uniform(Kernel::Scalar);
        plan.prefetch.insert(tq2, 0);
        // 4096: 1.0 a step but 0.1 in one round (a quiet spell); 8192: 0.9 in every round.
        let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
        let (got, timings) = refine_on_steps(plan, &[], "steps", |p| {
            let d = p.prefetch[&tq2];
            let round = seen.entry(d).or_default();
            *round += 1;
            match d {
                4096 if *round == 2 => 0.1,
                8192 => 0.9,
                _ => 1.0,
            }
        });
        assert_eq!(got.prefetch[&tq2], 8192);
        assert!(seen.values().all(|&r| r == STEP_ROUNDS), "{seen:?}");
        let at = |d: usize| {
            timings
                .iter()
                .find(|t| t.prefetch == Some(d))
                .unwrap()
                .micros
        };
        assert_eq!((at(4096), at(8192)), (1e6, 0.9e6));
    }

    #[test]
    fn decode_steps_decide_the_decode_variant_among_those_close_alone() {
        // The timings name the x86 variants, which only a CPU that runs them can time on steps;
        // elsewhere a kind whose close variants this CPU cannot run keeps its plan.
        let tq2 = ProductKind::of(GgmlType::TQ2_0, 1);
        if ![Kernel::Avx2, Kernel::Vnni256, Kernel::Avx512]
            .iter()
            .all(|k| k.is_available())
        {
            let mut plan = KernelPlan::uniform(Kernel::Scalar);
            plan.products.insert(tq2, Kernel::Avx512);
            let products: Vec<Timing> = [("avx512", 73.0), ("vnni256", 80.0)]
                .into_iter()
                .map(|(v, micros)| Timing {
                    kind: tq2.label(),
                    matrix: "m".into(),
                    tokens: 1,
                    variant: v.into(),
                    prefetch: Some(0),
                    group: None,
                    micros,
                })
                .collect();
            let runnable = products
                .iter()
                .filter(|t| Kernel::parse(&t.variant).is_ok())
                .count();
            let (got, timings) = refine_on_steps(plan.clone(), &products, "steps", |_| 1.0);
            if runnable == 0 {
                assert_eq!(got, plan);
                assert!(timings.iter().all(|t| !t.kind.starts_with("TQ2_0")));
            }
            eprintln!("skipped the rest: this CPU lacks AVX2, VNNI256 or AVX-512");
            return;
        }
        let timing =
            |variant: &str, group: Option<usize>, prefetch: Option<usize>, micros| Timing {
                kind: tq2.label(),
                matrix: "m".into(),
                tokens: 1,
                variant: variant.into(),
                prefetch,
                group,
                micros,
            };
        // Alone: avx512 fastest, avx2 and vnni256 (its best: 4 rows, 4096) within the span,
        // scalar far behind (never timed on steps).
        let products = vec![
            timing("avx512", None, Some(2048), 73.0),
            timing("avx512", None, Some(0), 74.0),
            timing("avx2", None, Some(0), 88.0),
            timing("avx2", None, Some(8192), 90.0),
            timing("vnni256", Some(2), Some(0), 95.0),
            timing("vnni256", Some(4), Some(4096), 87.0),
            timing("scalar", None, None, 9300.0),
        ];
        let mut plan = KernelPlan::uniform(Kernel::Scalar);
        plan.products.insert(tq2, Kernel::Avx512);
        plan.prefetch.insert(tq2, 2048);
        // On steps vnni256 is fastest, at any distance.
        let mut seen = BTreeMap::new();
        let (got, timings) = refine_on_steps(plan.clone(), &products, "steps", |p| {
            let k = p.products[&tq2];
            *seen.entry(k.suffix()).or_insert(0) += 1;
            if k == Kernel::Vnni256 {
                1.0
            } else {
                1.2
            }
        });
        assert_eq!(got.products[&tq2], Kernel::Vnni256);
        assert_eq!(got.groups.get(&tq2), Some(&4));
        // Every distance of vnni256 tied, so its own alone (4096, timed first) stays.
        assert_eq!(got.prefetch.get(&tq2), Some(&4096));
        // Each close variant (vnni256 in each of its two groups) at every distance in every
        // round, and the kind not again.
        assert_eq!(seen.get("scalar"), None);
        for (v, configurations) in [("avx512", 1), ("avx2", 1), ("vnni256", 2)] {
            assert_eq!(
                seen[v],
                configurations * PREFETCH_DISTANCES.len() * STEP_ROUNDS,
                "{v}"
            );
        }
        let firsts: Vec<(&str, Option<usize>)> = timings
            .iter()
            .filter(|t| t.kind == format!("TQ2_0/decode{IN_STEPS}"))
            .step_by(PREFETCH_DISTANCES.len())
            .map(|t| (t.variant.as_str(), t.prefetch))
            .collect();
        assert_eq!(
            firsts,
            [
                ("avx512", Some(2048)),
                ("vnni256", Some(4096)),
                ("avx2", Some(0)),
                ("vnni256", Some(0))
            ]
        );
        // A group slower alone but fastest on steps is kept, with its distance fastest there.
        let (got, _) = refine_on_steps(plan.clone(), &products, "steps", |p| {
            match (p.products[&tq2], p.groups.get(&tq2), p.prefetch.get(&tq2)) {
                (Kernel::Vnni256, Some(2), Some(8192)) => 0.8,
                (Kernel::Vnni256, Some(2), _) => 0.9,
                _ => 1.0,
            }
        });
        assert_eq!(got.products[&tq2], Kernel::Vnni256);
        assert_eq!(got.groups.get(&tq2), Some(&2));
        assert_eq!(got.prefetch.get(&tq2), Some(&8192));
        // A kind with one variant within the span keeps it without a step timing of variants.
        let (same, _) = refine_on_steps(plan.clone(), &products[..2], "steps", |_| 1.0);
        assert_eq!(same.products[&tq2], Kernel::Avx512);
    }

    #[test]
    fn candidates_are_timed_in_interleaved_rounds_so_a_busy_spell_does_not_decide() {
        // Every candidate once per round, in turn, each round with its share of the budget.
        let truth = [5.0, 3.0, 4.0];
        let mut calls = Vec::new();
        let times = interleaved_best(3, Duration::from_millis(30), |i, b| {
            assert_eq!(b, Duration::from_millis(10));
            calls.push(i);
            // A busy spell over the first four turns: all of the first round, and candidate 0's
            // second turn.
            if calls.len() <= 4 {
                100.0
            } else {
                truth[i]
            }
        });
        assert_eq!(calls, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
        // Timed back to back, the spell would have taken the fastest candidate's whole budget.
        assert_eq!(times, truth);
    }

    #[test]
    fn tune_times_every_available_variant_and_picks_one_of_them() {
        let rows = 64;
        let cols = 256;
        let data = crate::quant::quantize(GgmlType::TQ2_0, &vec![0.5f32; rows * cols]).unwrap();
        let m = Matrix {
            ty: GgmlType::TQ2_0,
            data: &data,
            rows,
            cols,
            grouped: None,
        };
        let (plan, timings) = tune(&[("w".into(), m)], None, 1, Duration::from_millis(1), true);
        assert!(timings
            .iter()
            .all(|t| t.micros > 0.0 && t.micros.is_finite()));
        type Timed<'a> = (&'a str, Option<usize>, Option<usize>);
        let timed = |kind: &str| -> Vec<Timed<'_>> {
            timings
                .iter()
                .filter(|t| t.kind == kind)
                .map(|t| (t.variant.as_str(), t.group, t.prefetch))
                .collect()
        };
        // Each variant on each group it offers (or its own grouping); decode also at every
        // distance where its kernels prefetch.
        let expected = |decode: bool| -> Vec<Timed<'static>> {
            let mut v = Vec::new();
            for k in Kernel::available() {
                let groups: Vec<Option<usize>> = match k.groups(GgmlType::TQ2_0, !decode) {
                    [] => vec![None],
                    gs => gs.iter().map(|&g| Some(g)).collect(),
                };
                let distances: Vec<Option<usize>> = if decode && k.tunes_prefetch(GgmlType::TQ2_0) {
                    PREFETCH_DISTANCES.iter().map(|&d| Some(d)).collect()
                } else {
                    vec![None]
                };
                for g in &groups {
                    for d in &distances {
                        v.push((k.suffix(), *g, *d));
                    }
                }
            }
            v
        };
        let (prefill, decode) = (timed("TQ2_0/prefill"), timed("TQ2_0/decode"));
        assert_eq!(prefill, expected(false));
        assert_eq!(decode, expected(true));
        assert_eq!(timings.len(), prefill.len() + decode.len());
        for prefill in [false, true] {
            let kind = ProductKind {
                weights: "TQ2_0",
                prefill,
            };
            let fastest = timings
                .iter()
                .filter(|t| t.kind == kind.label())
                .min_by(|a, b| a.micros.total_cmp(&b.micros))
                .unwrap();
            assert_eq!(plan.products[&kind].suffix(), fastest.variant);
            assert_eq!(plan.prefetch.get(&kind).copied(), fastest.prefetch);
            assert_eq!(plan.groups.get(&kind).copied(), fastest.group);
            assert_eq!(
                plan.prefetch(GgmlType::TQ2_0, if prefill { 16 } else { 1 }),
                fastest.prefetch
            );
        }
    }
}
