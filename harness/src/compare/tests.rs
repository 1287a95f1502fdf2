use super::*;
use bitnet_engine::trace::TraceWriter;

/// A fake two-layer trace of 3 positions, every point with values; `perturb` alters one
/// (point, step, position) by adding `delta` to its first element.
fn write_trace(dir: &Path, perturb: Option<(&str, u32, u32, f32)>, generated: &[u32]) {
    let mut w = TraceWriter::create(dir).unwrap();
    let n_embd = 4;
    for step in 0..2u32 {
        let positions = if step == 0 {
            [0, 3]
        } else {
            [2 + step, 3 + step]
        };
        let n_pos = (positions[1] - positions[0]) as usize;
        for p in TracePoint::all(2) {
            let name = p.name();
            let mut v: Vec<f32> = (0..n_pos * n_embd)
                .map(|i| ((i as f32 + 1.0) * 0.37 + step as f32).sin() + name.len() as f32 * 0.01)
                .collect();
            if let Some((pn, ps, pp, delta)) = perturb {
                if pn == name && ps == step && pp >= positions[0] && pp < positions[1] {
                    v[(pp - positions[0]) as usize * n_embd] += delta;
                }
            }
            let rec = TraceRecord::summarize(p, step, positions, vec![n_pos, n_embd], &v);
            w.write(rec, Some(&v)).unwrap();
        }
    }
    w.finish().unwrap();
    let logits: Vec<f32> = (0..3 * 8).map(|i| (i as f32 * 0.7).cos()).collect();
    bitnet_engine::npy::write_npy(&dir.join("logits.npy"), &[3, 8], &logits).unwrap();
    std::fs::write(
        dir.join("generated.json"),
        serde_json::to_string(generated).unwrap(),
    )
    .unwrap();
}

fn tight(_: &str) -> Tolerance {
    Tolerance {
        cosine_min: Some(0.9999),
        rel_l2_max: Some(1e-3),
        max_abs: None,
        nmse_max: None,
        exact: None,
    }
}

fn spec(tol: &dyn Fn(&str) -> Tolerance) -> CompareSpec<'_> {
    CompareSpec {
        tolerance: tol,
        logits: LogitTolerance {
            kl_max: Some(1e-6),
            top1_agreement_min: Some(1.0),
            ..Default::default()
        },
        generated_equal: true,
    }
}

#[test]
fn identical_traces_pass_with_infinite_headroom() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_trace(a.path(), None, &[1, 2]);
    write_trace(b.path(), None, &[1, 2]);
    let c = compare_trace_dirs(a.path(), b.path(), &spec(&tight)).unwrap();
    assert!(c.passed(), "{}", c.failure_summary());
    // 31 points × (3 prefill positions + 1 decode position).
    assert_eq!(c.points.len(), 31 * 4);
    assert!(c.headroom.iter().all(|h| h.factor.is_infinite()));
    assert_eq!(c.per_layer.len(), 4);
    assert_eq!(c.logits.unwrap().top1_agreement, 1.0);
}

#[test]
fn planted_divergence_is_named_at_its_step_position_layer_and_stage() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_trace(a.path(), Some(("blk.1.ffn_down", 0, 2, 0.5)), &[1, 2]);
    write_trace(b.path(), None, &[1, 2]);
    // A second, later perturbation must not be the one named.
    let c = compare_trace_dirs(a.path(), b.path(), &spec(&tight)).unwrap();
    assert!(!c.passed());
    let d = c.first_divergence.as_ref().unwrap();
    assert_eq!(
        (d.step, d.position, d.layer, d.stage),
        (0, 2, Some(1), Stage::FfnDown)
    );
    assert_eq!(d.name, "blk.1.ffn_down");
    // The points before it at the same position: blk.1.attn_out .. blk.1.ffn_sub_norm.
    assert_eq!(d.before.len(), 6);
    assert_eq!(d.before.last().unwrap().name, "blk.1.ffn_sub_norm");
    assert!(d
        .before
        .iter()
        .all(|p| p.violations.is_empty() && p.position == 2));
    assert_eq!(c.per_layer[2].layer, Some(1));
    assert_eq!(c.per_layer[2].violations, 1);
    assert!(
        c.failure_summary().contains("layer 1, stage ffn_down"),
        "{}",
        c.failure_summary()
    );
    let worst = c.worst_headroom().unwrap();
    assert!(worst.factor < 1.0 && worst.at.starts_with("blk.1.ffn_down step 0 position 2"));
}

#[test]
fn earlier_layer_wins_over_earlier_position() {
    // Execution order within a step is layer-major: blk.0 at position 2 runs before blk.1 at 0.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_trace(a.path(), Some(("blk.0.v", 0, 2, 1.0)), &[4]);
    write_trace(b.path(), Some(("blk.1.q", 0, 0, 1.0)), &[4]);
    let c = compare_trace_dirs(a.path(), b.path(), &spec(&tight)).unwrap();
    let d = c.first_divergence.unwrap();
    assert_eq!((d.layer, d.stage, d.position), (Some(0), Stage::V, 2));
}

#[test]
fn decode_step_divergence_and_generated_mismatch() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_trace(a.path(), Some(("blk.0.attn_probs", 1, 3, 0.2)), &[5, 6, 7]);
    write_trace(b.path(), None, &[5, 9, 7]);
    let c = compare_trace_dirs(a.path(), b.path(), &spec(&tight)).unwrap();
    let d = c.first_divergence.as_ref().unwrap();
    assert_eq!((d.step, d.position, d.stage), (1, 3, Stage::AttnProbs));
    assert_eq!(c.generated_mismatch, Some(1));
}

#[test]
fn decode_records_without_their_generated_ids_are_refused() {
    // Both traces hold decode step 1, which consumed generated id 0: a reference that wrote
    // no `generated.json`, or too few ids, has not said what it decoded.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_trace(a.path(), None, &[4]);
    write_trace(b.path(), None, &[4]);
    assert!(compare_trace_dirs(a.path(), b.path(), &spec(&tight))
        .unwrap()
        .passed());
    std::fs::write(b.path().join("generated.json"), "[]").unwrap();
    let err = compare_trace_dirs(a.path(), b.path(), &spec(&tight))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("generated.json") && err.contains("holds 0 ids") && err.contains("step 1"),
        "{err}"
    );
    std::fs::remove_file(b.path().join("generated.json")).unwrap();
    let err = compare_trace_dirs(a.path(), b.path(), &spec(&tight))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("generated.json") && err.contains("is missing"),
        "{err}"
    );
}

#[test]
fn records_without_values_fail_even_when_their_hashes_agree() {
    // A reference that writes a record's hash (copied from anywhere) but not its values has
    // shown nothing: values are compared, not hashes.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_trace(a.path(), None, &[4]);
    write_trace(b.path(), None, &[4]);
    let path = b.path().join("trace.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited: Vec<String> = text
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if v["name"] == "blk.1.q" && v["step"] == 0 {
                v.as_object_mut().unwrap().remove("file");
            }
            v.to_string()
        })
        .collect();
    std::fs::write(&path, edited.join("\n")).unwrap();
    let c = compare_trace_dirs(a.path(), b.path(), &spec(&tight)).unwrap();
    assert!(!c.passed());
    assert!(
        c.unmatched.iter().any(|u| u
            == "`blk.1.q` step 0: the reference record names no values file (`file`): values are compared, not hashes"),
        "{:?}",
        c.unmatched
    );
}

#[test]
fn missing_points_and_bad_files_are_reported() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_trace(a.path(), None, &[4]);
    write_trace(b.path(), None, &[4]);
    // Drop one record from the reference.
    let path = b.path().join("trace.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("\"blk.0.k\""))
        .collect();
    std::fs::write(&path, kept.join("\n")).unwrap();
    let c = compare_trace_dirs(a.path(), b.path(), &spec(&tight)).unwrap();
    assert!(!c.passed());
    assert!(c
        .unmatched
        .iter()
        .any(|u| u.contains("`blk.0.k` step 0 only in the engine")));

    std::fs::write(&path, "{not json\n").unwrap();
    let err = compare_trace_dirs(a.path(), b.path(), &spec(&tight))
        .unwrap_err()
        .to_string();
    assert!(err.contains("trace.jsonl:1: bad trace record"), "{err}");

    std::fs::write(b.path().join("generated.json"), "[1, \"x\"]").unwrap();
    write_trace(b.path(), None, &[4]);
    std::fs::write(b.path().join("generated.json"), "[1, \"x\"]").unwrap();
    let err = compare_trace_dirs(a.path(), b.path(), &spec(&tight))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("generated.json") && err.contains("array of token ids"),
        "{err}"
    );
}

#[test]
fn tolerance_overrides_merge_field_by_field() {
    let base = Tolerance {
        cosine_min: Some(0.99),
        rel_l2_max: Some(0.1),
        ..Default::default()
    };
    let over = Tolerance {
        rel_l2_max: Some(0.5),
        max_abs: Some(2.0),
        ..Default::default()
    };
    let m = base.merged(&over);
    assert_eq!(m.cosine_min, Some(0.99));
    assert_eq!(m.rel_l2_max, Some(0.5));
    assert_eq!(m.max_abs, Some(2.0));
    let metrics = Metrics {
        cosine: 0.98,
        rel_l2: 0.2,
        max_abs: 3.0,
        nmse: 0.04,
    };
    let v = m.violations(&metrics);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v[0].starts_with("cosine") && v[1].starts_with("max_abs"));
}

#[test]
fn a_failure_summary_lists_a_dozen_unmatched_records_and_counts_the_rest() {
    // 180,000 records no engine has made a 9 MB one-line message before.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_trace(a.path(), None, &[4]);
    write_trace(b.path(), None, &[4]);
    let mut c = compare_trace_dirs(a.path(), b.path(), &spec(&tight)).unwrap();
    c.unmatched = (0..180_000)
        .map(|i| format!("`blk.{i}.q` step 0 only in the reference's trace"))
        .collect();
    let s = c.failure_summary();
    assert!(
        s.starts_with("not comparable (180000): `blk.0.q` step 0 only in the reference's trace; ")
            && s.contains("`blk.11.q`")
            && !s.contains("`blk.12.q`")
            && s.ends_with("; and 179988 more"),
        "{s:.400}"
    );
}
