//! End to end: forcing each kernel variant this CPU runs gives the same trace hashes as the
//! scalar specification at every point, step and position, on every preset shape (TQ2_0, TQ1_0,
//! I2_S, GQA, F16 and F32 outputs, `.scale` tensors), with prefill, decode and two threads, and TQ1_0
//! both on its base-3 kernels and rewritten as TQ2_0. So goldens hold whichever variant a CPU picks.

use bitnet_engine::forward::{run_with, RunOptions, Tracer};
use bitnet_engine::kernels::Kernel;
use bitnet_engine::model::Model;
use bitnet_engine::synth::{build, preset};
use bitnet_engine::trace::{read_trace, PointFilter};

fn hashes(
    model: &Model,
    tokens: &[u32],
    kernel: Kernel,
    unpack_tq1: Option<bool>,
    dir: &std::path::Path,
) -> Vec<String> {
    let mut t = Tracer::new(PointFilter::all(), dir, false).unwrap();
    let opts = RunOptions {
        generate: 4,
        chunk: None,
        threads: 2,
        kernel,
        nudge_embeddings: false,
        unpack_tq1,
        plan: None,
        kv_type: Default::default(),
    };
    let out = run_with(model, tokens, &opts, Some(&mut t)).unwrap();
    let path = t.finish().unwrap();
    let mut h: Vec<String> = read_trace(&path)
        .unwrap()
        .into_iter()
        .map(|r| format!("{} step {} {:?}: {}", r.name, r.step, r.positions, r.blake3))
        .collect();
    h.push(format!("generated {:?}", out.generated));
    h
}

#[test]
fn every_variant_gives_the_scalar_trace_hashes() {
    let available = Kernel::available();
    eprintln!("variants here: {available:?}");
    let dir = tempfile::tempdir().unwrap();
    for name in ["tiny", "tiny-scales", "gqa", "tq1", "i2s", "f16"] {
        let path = dir.path().join(format!("{name}.gguf"));
        build(&preset(name).unwrap()).unwrap().write(&path).unwrap();
        let model = Model::load(&path).unwrap();
        // Nine tokens: the AVX-512 prefill paths (pairs of tokens, four-token tiles) and the
        // two-row decode path all run.
        let tokens = [1u32, 17, 300, 42, 5, 99, 250, 7, 12];
        let want = hashes(
            &model,
            &tokens,
            Kernel::Scalar,
            Some(false),
            &dir.path().join(format!("{name}-s")),
        );
        // TQ1_0 runs both ways on every variant: on its base-3 kernels and rewritten as TQ2_0.
        let unpack = if name == "tq1" {
            vec![Some(false), Some(true)]
        } else {
            vec![None]
        };
        for k in available.iter().filter(|k| **k != Kernel::Scalar) {
            for &u in &unpack {
                let got = hashes(
                    &model,
                    &tokens,
                    *k,
                    u,
                    &dir.path().join(format!("{name}-{k:?}-{u:?}")),
                );
                assert_eq!(got.len(), want.len());
                if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
                    panic!(
                        "{name}, {k:?}, unpack_tq1 {u:?}: first difference\n  scalar: {}\n  {k:?}: {}",
                        want[i], got[i]
                    );
                }
            }
        }
    }
}

/// Every row and token grouping a plan can choose for TQ2_0 and I2_S products (the `vnni256`
/// groups; the AVX2 decodes' file-layout kernels and their table-lookup kernels on the model's
/// copy in that kernel's layout) gives the scalar logits bit for bit through prefill and decode
/// on one and two threads, and the table-lookup kernels record their own IDs.
#[test]
fn every_ternary_grouping_a_plan_chooses_gives_the_scalar_logits() {
    use bitnet_engine::forward::Session;
    use bitnet_engine::gguf::GgmlType;
    use bitnet_engine::kernels::plan::{KernelPlan, ProductKind};
    use bitnet_engine::kernels::TABLE_ROWS;
    let dir = tempfile::tempdir().unwrap();
    for (name, ty, table_id) in [
        ("tiny", GgmlType::TQ2_0, "tq2_0_q8k_dot_tables_avx2"),
        ("gqa", GgmlType::TQ2_0, "tq2_0_q8k_dot_tables_avx2"),
        ("i2s", GgmlType::I2_S, "i2_s_i8_dot_tables_avx2"),
    ] {
        let path = dir.path().join(format!("{name}.gguf"));
        build(&preset(name).unwrap()).unwrap().write(&path).unwrap();
        let model = Model::load(&path).unwrap();
        let tokens = [1u32, 17, 300, 42, 5, 99, 250, 7, 12];
        let run = |plan: KernelPlan, threads: usize| {
            let mut s = Session::new(&model, threads, plan.base);
            s.set_plan(plan);
            let mut logits = s.forward(&tokens, false, None).unwrap();
            for t in [7u32, 300, 2] {
                logits.extend(s.forward(&[t], false, None).unwrap());
            }
            (
                logits.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                s.kernels_used(),
            )
        };
        let (want, _) = run(KernelPlan::uniform(Kernel::Scalar), 1);
        let mut tables_ran = false;
        for (k, threads) in Kernel::available()
            .into_iter()
            .flat_map(|k| [(k, 1), (k, 2)])
        {
            for (n, prefill) in [(1, false), (9, true)] {
                for &g in k.groups(ty, prefill) {
                    let mut plan = KernelPlan::uniform(k);
                    plan.groups.insert(ProductKind::of(ty, n), g);
                    let (got, ids) = run(plan, threads);
                    assert!(
                        got == want,
                        "{name}: {k:?} with {g} per call (prefill {prefill}), {threads} threads"
                    );
                    let tables = ids.iter().any(|id| id == table_id);
                    assert_eq!(
                        tables,
                        k == Kernel::Avx2 && g == TABLE_ROWS && !prefill,
                        "{name}: {k:?} {g}: {ids:?}"
                    );
                    tables_ran |= tables;
                }
            }
        }
        assert_eq!(
            tables_ran,
            Kernel::available().contains(&Kernel::Avx2),
            "{name}: the table-lookup kernel ran wherever AVX2 does"
        );
    }
}

/// A plan that mixes variants per kind of product (each kind on another variant, as a tuned plan
/// may) gives the scalar logits bit for bit, and the session records each kind's kernel.
#[test]
fn a_mixed_plan_gives_the_scalar_logits_and_runs_each_kinds_variant() {
    use bitnet_engine::forward::Session;
    use bitnet_engine::gguf::GgmlType;
    use bitnet_engine::kernels::plan::{KernelPlan, ProductKind};
    let variants = Kernel::available();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f16.gguf");
    build(&preset("f16").unwrap())
        .unwrap()
        .write(&path)
        .unwrap();
    let model = Model::load(&path).unwrap();
    let tokens = [1u32, 17, 300, 42, 5, 99];
    let run = |plan: KernelPlan| {
        let mut s = Session::new(&model, 2, plan.base);
        s.set_plan(plan);
        let mut logits = s.forward(&tokens, false, None).unwrap();
        logits.extend(s.forward(&[7], false, None).unwrap());
        (logits, s.kernels_used())
    };
    let (want, _) = run(KernelPlan::uniform(Kernel::Scalar));
    // Decode products on the last variant, prefill on the first, the output matrix the other way.
    let (first, last) = (variants[0], *variants.last().unwrap());
    let mut plan = KernelPlan::uniform(first);
    for (ty, n, k) in [
        (GgmlType::TQ2_0, 1, last),
        (GgmlType::TQ2_0, 6, first),
        (GgmlType::F16, 1, first),
        (GgmlType::F16, 6, last),
    ] {
        plan.products.insert(ProductKind::of(ty, n), k);
    }
    let (got, ids) = run(plan);
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    for k in [first, last] {
        assert!(
            ids.iter()
                .any(|id| id.starts_with("tq2_0_q8k_dot_") && id.ends_with(k.suffix())),
            "{k:?}: {ids:?}"
        );
    }
}

/// The grouped copies a model makes for the decode kernels that read rows in groups hold every
/// TQ2_0 projection (and every TQ1_0 one rewritten as TQ2_0 before they were made) grouped as
/// `grouped_copy` says (the `vnni256` groups and the table-lookup layout), every I2_S one in the
/// table-lookup layout, and nothing for other weights or groups.
#[test]
fn a_models_grouped_copies_are_its_weights_grouped() {
    use bitnet_engine::gguf::GgmlType;
    use bitnet_engine::kernels::{grouped_copy, GROUPS, TABLE_ROWS};
    let dir = tempfile::tempdir().unwrap();
    for name in ["tiny", "tq1", "i2s"] {
        let path = dir.path().join(format!("{name}.gguf"));
        build(&preset(name).unwrap()).unwrap().write(&path).unwrap();
        let model = Model::load(&path).unwrap();
        let mut checked = 0;
        for layer in &model.layers {
            for p in layer.projections() {
                let m = match p.info.ty {
                    GgmlType::TQ1_0 => model.tq1_as_tq2(p),
                    _ => model.matrix(p),
                };
                for g in GROUPS.into_iter().chain([TABLE_ROWS]) {
                    let got = model.grouped_weights(p, g);
                    // The I2_S table-lookup layout is an x86 kernel's.
                    let grouped = m.ty == GgmlType::TQ2_0
                        || (m.ty == GgmlType::I2_S
                            && g == TABLE_ROWS
                            && cfg!(target_arch = "x86_64"));
                    if !grouped {
                        assert!(got.is_none(), "{name}: {} has no copy grouped by {g}", m.ty);
                        continue;
                    }
                    let want = grouped_copy(m.ty, m.data, m.rows, m.cols, g);
                    assert!(got == Some(&want[..]), "{name}: {} grouped by {g}", m.ty);
                    checked += 1;
                }
                assert!(model.grouped_weights(p, 3).is_none(), "3 is not a group");
            }
        }
        assert!(checked > 0, "{name}: no copies checked");
    }
}
