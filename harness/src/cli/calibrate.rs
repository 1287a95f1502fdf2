//! `harness calibrate SCENARIO`: run the scenario's reference (llama.cpp, or its
//! `reference.command`) against itself under perturbations that should not matter (another
//! thread count, the prompt decoded in calls of 1 and 7 tokens, the input embeddings nudged by
//! one ulp) on every input (token lists, and text prompts tokenized as the run does), propose
//! tolerances from the spread (`blk.*.<stage>` globs where the layers agree), and check the
//! proposal against the engine the way `harness run`'s parity check would: a proposal that fails
//! its own scenario is named, point and all, and exits 1.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use bitnet_engine::trace::PointFilter;
use bitnet_harness::calibrate::calibrate_pairs;
use bitnet_harness::reference::{run_scenario_reference, RefRequest};
use bitnet_harness::run::{Check, Context, Status};
use bitnet_harness::scenario::load_scenario;

use super::UsageError;

/// Arguments of `harness calibrate`.
#[derive(clap::Args)]
pub struct Args {
    /// The scenario file.
    pub scenario: PathBuf,
    /// Proposed tolerance = worst spread × this factor (at least a floor of f32 rounding); a
    /// finite number of at least 1.
    #[arg(long, default_value_t = 10.0)]
    pub factor: f64,
}

pub fn run(args: Args) -> Result<()> {
    // Below 1 the reference would fail against itself; infinite or NaN, the proposal admits
    // anything (a `cosine_min` of −inf) or says nothing.
    if !(args.factor.is_finite() && args.factor >= 1.0) {
        return Err(UsageError(format!(
            "`--factor` is {}; expected a finite number of at least 1 (the proposed tolerances \
             are the reference's own spread times it)",
            args.factor
        ))
        .into());
    }
    let s = load_scenario(&args.scenario).map_err(|e| UsageError(e.to_string()))?;
    if s.scenario.reference.is_none() {
        return Err(UsageError(format!(
            "`{}` has `reference: none`: there is no reference to calibrate",
            args.scenario.display()
        ))
        .into());
    }
    let ref_name = match &s.scenario.reference {
        bitnet_harness::scenario::Reference::Command { command } => format!("`{}`", command[0]),
        _ => "llama.cpp".to_string(),
    };
    let root = bitnet_harness::scenario::project_root(&args.scenario);
    let harness = std::env::current_exe()?;
    let ctx = Context::new(
        &root,
        root.join("target/harness/calibrate-runs"),
        harness.clone(),
    );
    let model = ctx.model_path(&s).map_err(anyhow::Error::msg)?;
    // The engine's run gives every input's tokens (prompts tokenized as the run does) and is
    // what the proposal is checked against at the end.
    let cell = ctx.runs(&s).map_err(anyhow::Error::msg)?;
    let inputs: Vec<Vec<u32>> = match cell.get().expect("initialised") {
        Ok(runs) => runs.inputs.iter().map(|i| i.tokens.clone()).collect(),
        Err(e) => return Err(anyhow::anyhow!("the engine's run of `{}`: {e}", s.stem)),
    };
    let work = root.join("target/harness/calibrate").join(&s.stem);
    let _ = std::fs::remove_dir_all(&work);
    let threads = s.scenario.threads;
    let other_threads = if threads > 1 { 1 } else { 2 };
    let points = PointFilter::new(&s.scenario.trace.points).map_err(UsageError)?;
    let mut dirs = Vec::new();
    for (i, tokens) in inputs.iter().enumerate() {
        let variants: Vec<(String, usize, Option<usize>, bool)> = vec![
            ("baseline".into(), threads, None, false),
            (
                format!("threads={other_threads}"),
                other_threads,
                None,
                false,
            ),
            ("ubatch=1".into(), threads, Some(1), false),
            ("ubatch=7".into(), threads, Some(7), false),
            ("embedding+1ulp".into(), threads, None, true),
        ];
        let mut base = None;
        for (label, t, ubatch, nudge) in variants {
            let out = work
                .join(i.to_string())
                .join(label.replace(['=', '+'], "_"));
            let req = RefRequest {
                model: model.clone(),
                tokens: tokens.clone(),
                generate: s.scenario.generation.steps,
                points: points.clone(),
                threads: t,
                out: out.clone(),
                ubatch,
                nudge_embeddings: nudge,
                kv_cache: s.scenario.kv_cache,
            };
            outln!("input {i}: {ref_name}, {label}");
            run_scenario_reference(
                &s.scenario.reference,
                s.path.parent().unwrap_or(std::path::Path::new(".")),
                &harness,
                &req,
                Duration::from_secs(600),
            )?;
            match &base {
                None => base = Some(out),
                Some(b) => dirs.push((format!("input {i} {label}"), b.clone(), out)),
            }
        }
    }
    let pairs: Vec<(String, &std::path::Path, &std::path::Path)> = dirs
        .iter()
        .map(|(l, b, d)| (l.clone(), b.as_path(), d.as_path()))
        .collect();
    let cal = calibrate_pairs(&pairs, args.factor)?;
    outln!(
        "\n{ref_name} against itself, worst per point over {} perturbed runs:",
        pairs.len()
    );
    outln!(
        "  {:24} {:>12} {:>10} {:>10}  worst under",
        "point",
        "1 − cosine",
        "rel L2",
        "max |Δ|"
    );
    for sp in &cal.spread {
        outln!(
            "  {:24} {:>12.3e} {:>10.3e} {:>10.3e}  {}",
            sp.point,
            1.0 - sp.min_cosine,
            sp.max_rel_l2,
            sp.max_abs,
            sp.worst_perturbation
        );
    }
    if let Some(l) = &cal.logits {
        outln!(
            "  logits: KL max {:.3e}, KL mean {:.3e}, top-1 agreement {:.4}, top-k overlap {:.4}",
            l.kl_max,
            l.kl_mean,
            l.top1_agreement,
            l.topk_overlap
        );
    }
    for g in &cal.generation_unstable {
        outln!("  greedy generation is not stable here: {g}");
    }
    outln!(
        "\nproposed tolerances (spread × {}), for the scenario's `tolerances:`:",
        args.factor
    );
    outln!("tolerances:\n  points:");
    for (point, t) in &cal.proposed {
        outln!(
            "    {point}: {{ cosine_min: {}, rel_l2_max: {:.3e}, max_abs: {:.3e}, nmse_max: {:.3e} }}",
            t.cosine_min.unwrap_or(0.0),
            t.rel_l2_max.unwrap_or(0.0),
            t.max_abs.unwrap_or(0.0),
            t.nmse_max.unwrap_or(0.0)
        );
    }
    let lt = &cal.proposed_logits;
    outln!(
        "  logits: {{ kl_max: {:.3e}, kl_mean_max: {:.3e}, top1_agreement_min: {}, topk_overlap_min: {} }}",
        lt.kl_max.unwrap_or(0.0),
        lt.kl_mean_max.unwrap_or(0.0),
        lt.top1_agreement_min.unwrap_or(1.0),
        lt.topk_overlap_min.unwrap_or(1.0)
    );
    let json = serde_json::to_vec_pretty(&cal)?;
    let path = work.join("calibration.json");
    bitnet_engine::npy::write_atomic(&path, &json)?;
    outln!("\nwritten: {}", path.display());
    verify_proposal(&ctx, &s, &cal)
}

/// Hold the engine's run of every input to the reference's under the proposed tolerances, as
/// `harness run`'s parity check does with them in the scenario (`exact: false`, so the
/// tolerances apply); a failure names the input and point, and exits 1.
fn verify_proposal(
    ctx: &Context,
    s: &bitnet_harness::scenario::LoadedScenario,
    cal: &bitnet_harness::calibrate::Calibration,
) -> Result<()> {
    let mut proposed = s.clone();
    let sc = &mut proposed.scenario;
    sc.exact = Some(false);
    sc.tolerances.points = cal.proposed.clone();
    sc.tolerances.logits = cal.proposed_logits;
    let v = ctx.run_check(&proposed, Check::Parity);
    let n = ctx
        .runs(s)
        .ok()
        .and_then(|c| {
            c.get()
                .and_then(|r| r.as_ref().ok())
                .map(|r| r.inputs.len())
        })
        .unwrap_or(0);
    match v.status {
        Status::Fail => Err(anyhow::anyhow!(
            "the proposed tolerances fail this scenario's own parity check (the engine against the reference): {}; loosen that point's bound (`--factor`) or find why the engine differs there",
            v.message
        )),
        _ => {
            outln!(
                "checked: the engine's run of {} is within the proposed tolerances of the reference's",
                super::count(n, "input")
            );
            Ok(())
        }
    }
}
