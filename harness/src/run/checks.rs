//! The checks of a scenario that compare: against the goldens, the reference (parity,
//! generation, replay), the engine itself (chunking, variants, its own trace) and the
//! scenario's receipt requirements. Each returns a [`Verdict`].

use super::*;

impl Context {
    pub(super) fn check_tokenizer(&self, s: &LoadedScenario, runs: &Runs) -> Verdict {
        let n_tok = s.scenario.inputs.tokens.len();
        let mut notes = Vec::new();
        for (k, prompt) in s.scenario.inputs.prompts.iter().enumerate() {
            let engine = &runs.inputs[n_tok + k].tokens;
            let out = std::process::Command::new(&self.harness)
                .arg("ref-tokenize")
                .arg(&runs.model)
                .args(["--prompt", prompt])
                .output();
            let out = match out {
                Ok(o) if o.status.success() => o,
                Ok(o) => {
                    return Verdict::fail(format!(
                        "llama.cpp could not tokenize prompt {k}: {}",
                        String::from_utf8_lossy(&o.stderr)
                    ))
                }
                Err(e) => return Verdict::fail(format!("cannot run `harness ref-tokenize`: {e}")),
            };
            let reference: Vec<u32> = match serde_json::from_slice(&out.stdout) {
                Ok(v) => v,
                Err(e) => {
                    return Verdict::fail(format!("`harness ref-tokenize` printed no id list: {e}"))
                }
            };
            if &reference != engine {
                let at = engine
                    .iter()
                    .zip(&reference)
                    .position(|(a, b)| a != b)
                    .unwrap_or(engine.len().min(reference.len()));
                return Verdict::fail(format!(
                    "prompt {k} {prompt:?}: token ids differ at index {at}: engine {engine:?}, llama.cpp {reference:?}"
                ));
            }
            notes.push(format!("prompt {k}: {} ids equal", engine.len()));
        }
        Verdict::pass(notes.join("; "))
    }

    pub(super) fn check_golden(&self, s: &LoadedScenario, runs: &Runs) -> Verdict {
        let body = golden_body(runs);
        let goldens = self.root.join("goldens");
        // Where a candidate goes for `harness review`, or why none could be written (then only
        // `harness bless` accepts the change).
        let candidate = || -> (String, &'static str) {
            if !self.write_pending {
                return (String::new(), "`harness bless {}` or `harness review`");
            }
            match golden::write_pending(&goldens, &s.stem, &body) {
                Ok(p) => (
                    format!(" (candidate written to `{}`)", p.display()),
                    "`harness bless {}` or `harness review`",
                ),
                Err(e) => (
                    format!(
                        " (no candidate for `harness review`: cannot write `{}`: {e})",
                        golden::pending_path(&goldens, &s.stem).display()
                    ),
                    "`harness bless {}`",
                ),
            }
        };
        match golden::compare_golden(&goldens, &s.stem, &body) {
            Ok(GoldenOutcome::Match) => Verdict::pass(format!(
                "{} trace lines match `goldens/{}.snap`",
                body.lines().count(),
                s.stem
            )),
            Ok(GoldenOutcome::Missing) => {
                let (pending, how) = candidate();
                Verdict::fail(format!(
                    "missing golden `goldens/{}.snap`{pending}: review the trace and accept it with {}",
                    s.stem,
                    how.replace("{}", &crate::shell_word(&s.stem))
                ))
            }
            Ok(GoldenOutcome::Changed { first_point, diff }) => {
                let (pending, how) = candidate();
                let shown: Vec<String> = diff.iter().take(12).cloned().collect();
                let mut v = Verdict::fail(format!(
                    "golden `goldens/{}.snap` differs, first at `{first_point}` ({} lines changed){pending}:\n{}\nif the change is intended, accept it with {}",
                    s.stem,
                    diff.len(),
                    shown.join("\n"),
                    how.replace("{}", &crate::shell_word(&s.stem))
                ));
                v.divergence = Some(first_point);
                v
            }
            Err(e) => Verdict::fail(format!("cannot read `goldens/{}.snap`: {e}", s.stem)),
        }
    }

    /// Whether exactness applies against the reference that wrote `ref_dir`: `Err` names why not.
    pub(super) fn exactness(
        s: &LoadedScenario,
        ref_dir: &Path,
    ) -> Result<(bool, Option<String>), String> {
        let default_exact = s.scenario.exact.unwrap_or(matches!(
            s.scenario.reference,
            Reference::Named(NamedReference::LlamaCpp)
        ));
        let build_reason = match RefBuild::read(ref_dir)? {
            Some(b) => b.inexact_reason(),
            None => Some("the reference wrote no `build.json` saying how it was built".into()),
        };
        Ok((default_exact, build_reason))
    }

    /// Prefill in chunks, engine against the reference run with the same chunks (llama.cpp's
    /// `n_ubatch`), every point of the prefill and the decode steps after it, exactly where parity
    /// is exact; without a reference, [`check_chunking_engine_only`].
    pub(super) fn check_chunking(&self, s: &LoadedScenario, runs: &Runs) -> Verdict {
        let sc = &s.scenario;
        if sc.reference.is_none() {
            return check_chunking_engine_only(s, runs);
        }
        let (model, kernel) = (&*runs.loaded, runs.kernel);
        let filter = match PointFilter::new(&sc.trace.points) {
            Ok(f) => f,
            Err(e) => return Verdict::fail(e),
        };
        let tol = &sc.tolerances;
        let mut notes = Vec::new();
        for (i, input) in runs.inputs.iter().enumerate() {
            for &chunk in &sc.prefill_chunks {
                let size = if chunk == 0 {
                    input.tokens.len()
                } else {
                    chunk
                };
                if size >= input.tokens.len() {
                    notes.push(format!("input {i}: chunks of {size}: one prefill (parity)"));
                    continue;
                }
                let dir = self
                    .runs
                    .join(&s.stem)
                    .join(i.to_string())
                    .join(format!("chunks{size}"));
                let (eng, refd) = (dir.join("engine"), dir.join("reference"));
                if let Err(e) = engine_trace(
                    model,
                    &input.tokens,
                    sc,
                    Some(size),
                    kernel,
                    runs.plan.as_ref(),
                    &filter,
                    &eng,
                    None,
                    None,
                ) {
                    return Verdict::fail(format!("input {i}: chunks of {size}: {e}"));
                }
                let _ = std::fs::remove_dir_all(&refd);
                let req = RefRequest {
                    model: runs.model.clone(),
                    tokens: input.tokens.clone(),
                    generate: sc.generation.steps,
                    points: filter.clone(),
                    // One thread: llama.cpp's values do not depend on it, so this also holds the
                    // engine's threads against one, and many small ubatches do not pay ggml's
                    // spinning barriers on a busy machine.
                    threads: 1,
                    out: refd.clone(),
                    ubatch: Some(size),
                    nudge_embeddings: false,
                    kv_cache: sc.kv_cache,
                };
                if let Err(e) = self.run_scenario_reference(s, &req) {
                    return Verdict::fail(format!(
                        "input {i}: the reference with chunks of {size}: {e}"
                    ));
                }
                let (default_exact, build_reason) = match Self::exactness(s, &refd) {
                    Ok(x) => x,
                    Err(e) => return Verdict::fail(format!("input {i}: {e}")),
                };
                let tolerance = exact_tolerance(tol, default_exact, build_reason.is_none());
                let spec = CompareSpec {
                    tolerance: &tolerance,
                    logits: tol.logits,
                    generated_equal: true,
                };
                let c = match compare_trace_dirs(&eng, &refd, &spec) {
                    Ok(c) => c,
                    Err(e) => return Verdict::fail(format!("input {i}: chunks of {size}: {e}")),
                };
                if !c.passed() {
                    let mut v = Verdict::fail(format!(
                        "input {i}: prefill in chunks of {size} against the reference's: {}",
                        c.failure_summary()
                    ));
                    let n_inputs = runs.inputs.len();
                    v.divergence = c.first_divergence.as_ref().map(|d| {
                        let input = if n_inputs > 1 {
                            format!("input {i}, ")
                        } else {
                            String::new()
                        };
                        format!("{input}chunks of {size}: {d}")
                    });
                    v.per_layer = c.per_layer.clone();
                    v.figures = vec![crate::report::InputFigures::build(
                        format!("input {i}, chunks of {size}"),
                        i,
                        &c,
                        &spec,
                        &eng,
                        &refd,
                    )];
                    return v;
                }
                let exact = c.points.iter().filter(|p| p.exact).count();
                notes.push(format!(
                    "input {i}: chunks of {size}: {} points × positions, {exact} bit-exact",
                    c.points.len()
                ));
            }
        }
        Verdict::pass(notes.join("; "))
    }

    /// The engine on every kernel variant this CPU runs (scalar, AVX2, AVX-512, NEON), each
    /// against the default variant's trace: every record's hash and the greedy tokens equal.
    pub(super) fn check_variants(&self, s: &LoadedScenario, runs: &Runs) -> Verdict {
        let sc = &s.scenario;
        let model = &*runs.loaded;
        let filter = match PointFilter::new(&sc.trace.points) {
            Ok(f) => f,
            Err(e) => return Verdict::fail(e),
        };
        // Each kernel variant; and where the model has TQ1_0 weights, which the SIMD variants
        // run rewritten as TQ2_0, those variants again on their base-3 TQ1_0 kernels.
        let has_tq1 = model
            .layers
            .iter()
            .flat_map(|l| l.projections())
            .any(|p| p.info.ty == bitnet_engine::gguf::GgmlType::TQ1_0);
        // (kernel, TQ1_0 rewrite, threads): a run on several threads also runs on one, where
        // a fault in how rows are shared out between threads cannot happen.
        let mut variants: Vec<(Kernel, Option<bool>, Option<usize>)> = Kernel::available()
            .into_iter()
            .flat_map(|k| {
                let base3 = has_tq1 && forward::unpack_tq1_for(k);
                std::iter::once((k, None, None)).chain(base3.then_some((k, Some(false), None)))
            })
            .collect();
        if sc.threads > 1 {
            variants.push((runs.kernel, None, Some(1)));
        }
        let label =
            |k: Kernel, unpack: Option<bool>, threads: Option<usize>| match (unpack, threads) {
                (Some(false), _) => format!("{} (base-3 TQ1_0)", k.suffix()),
                (_, Some(1)) => format!("{} on 1 thread", k.suffix()),
                _ => k.suffix().to_string(),
            };
        for &(k, unpack, threads) in &variants {
            for (i, input) in runs.inputs.iter().enumerate() {
                let dir = self.runs.join(&s.stem).join(i.to_string()).join(
                    format!(
                        "variant-{k:?}{}{}",
                        if unpack.is_some() { "-base3" } else { "" },
                        if threads.is_some() { "-1thread" } else { "" }
                    )
                    .to_lowercase(),
                );
                let out = match engine_trace(
                    model,
                    &input.tokens,
                    sc,
                    None,
                    k,
                    None,
                    &filter,
                    &dir,
                    unpack,
                    threads,
                ) {
                    Ok(o) => o,
                    Err(e) => {
                        return Verdict::fail(format!(
                            "input {i}: {}: {e}",
                            label(k, unpack, threads)
                        ))
                    }
                };
                let records = match read_trace(&dir.join("trace.jsonl")) {
                    Ok(r) => r,
                    Err(e) => {
                        return Verdict::fail(format!(
                            "input {i}: {}: {e}",
                            label(k, unpack, threads)
                        ))
                    }
                };
                let diff =
                    input.records.iter().zip(&records).find(|(a, b)| {
                        (&a.name, a.step, &a.blake3) != (&b.name, b.step, &b.blake3)
                    });
                if let Some((a, b)) = diff {
                    // Where, element by element: the first divergence of the two traces.
                    let exact = |_: &str| crate::compare::Tolerance {
                        exact: Some(true),
                        ..Default::default()
                    };
                    let spec = CompareSpec {
                        tolerance: &exact,
                        logits: Default::default(),
                        generated_equal: true,
                    };
                    let at = compare_trace_dirs(&dir, &input.engine_dir, &spec)
                        .ok()
                        .and_then(|c| c.first_divergence);
                    let _ = std::fs::remove_dir_all(&dir);
                    let default = runs.plan.as_ref().map_or_else(
                        || runs.kernel.suffix().to_string(),
                        |p| {
                            let kinds: Vec<String> = p
                                .describe()
                                .iter()
                                .map(|(k, v)| format!("{k} {v}"))
                                .collect();
                            format!("the tuned plan: {}", kinds.join(", "))
                        },
                    );
                    let k = label(k, unpack, threads);
                    let (where_, divergence) = match &at {
                        Some(d) => (format!("first at {d}"), format!("{k} vs {default} at {d}")),
                        None => (
                            format!(
                                "at `{}` step {} (blake3 {} vs {})",
                                b.name, b.step, b.blake3, a.blake3
                            ),
                            format!("{k} vs {default} at `{}` step {}", b.name, b.step),
                        ),
                    };
                    let mut v = Verdict::fail(if threads.is_some() {
                        format!(
                            "input {i}: the default run ({default}) on {} threads and the {} kernels on 1 thread give different traces, {where_}; how rows are shared out between threads must change no bit, so the fault is in that split",
                            sc.threads,
                            runs.kernel.suffix()
                        )
                    } else {
                        format!(
                            "input {i}: the {k} kernels and the default run's ({default}) give different traces, {where_}; every variant must equal the scalar specification bit for bit, so the variant that differs from scalar is the one at fault"
                        )
                    });
                    v.divergence = Some(divergence);
                    return v;
                }
                let _ = std::fs::remove_dir_all(&dir);
                if records.len() != input.records.len() || out.generated != input.generated {
                    return Verdict::fail(format!(
                        "input {i}: kernel variant {} gives {} records and tokens {:?}; the default run {} and {:?}",
                        label(k, unpack, threads),
                        records.len(),
                        out.generated,
                        input.records.len(),
                        input.generated
                    ));
                }
            }
        }
        let unchecked: Vec<&str> = Kernel::ALL
            .into_iter()
            .filter(|k| !k.is_available() && k.compiled_for_this_arch())
            .map(Kernel::suffix)
            .collect();
        Verdict::pass(format!(
            "{} variants give the same trace bit for bit: {}{}",
            variants.len(),
            variants
                .iter()
                .map(|&(k, u, t)| label(k, u, t))
                .collect::<Vec<_>>()
                .join(", "),
            if unchecked.is_empty() {
                String::new()
            } else {
                format!(
                    " (not checked: {}, which this CPU cannot run)",
                    unchecked.join(", ")
                )
            }
        ))
    }

    pub(super) fn check_replay(&self, s: &LoadedScenario, runs: &Runs) -> Verdict {
        let tol = &s.scenario.tolerances;
        let (model, kernel) = (&*runs.loaded, runs.kernel);
        let mut notes = Vec::new();
        for (i, input) in runs.inputs.iter().enumerate() {
            // The reference's run, and whether its build allows exactness at all.
            let (ref_dir, default_exact, build_reason) =
                match self.reference(s, runs, i).and_then(|d| {
                    let (x, why) = Self::exactness(s, &d)?;
                    Ok((d, x, why))
                }) {
                    Ok(r) => r,
                    Err(e) => return Verdict::fail(format!("input {i}: {e}")),
                };
            // Stages are held exactly wherever the end-to-end comparison is; otherwise to the
            // points' tolerances.
            let points = exact_tolerance(tol, default_exact, build_reason.is_none());
            let tolerance = |name: &str| match &tol.replay {
                Some(r) => crate::compare::Tolerance {
                    exact: Some(r.exact.unwrap_or(false) && build_reason.is_none()),
                    ..*r
                },
                None => points(name),
            };
            let r = match crate::replay::replay_with(
                model,
                &input.tokens,
                &ref_dir,
                s.scenario.threads,
                kernel,
                s.scenario.kv_cache,
                &tolerance,
            ) {
                Ok(r) => r,
                Err(e) => return Verdict::fail(format!("input {i}: {e}")),
            };
            if let Some(f) = r.first_failure() {
                let failed = r.stages.iter().filter(|s| !s.violations.is_empty()).count();
                let mut v = Verdict::fail(format!(
                    "input {i}: {failed} of {} replayed stages differ; the first: {f}",
                    r.stages.len()
                ));
                v.divergence = Some(format!("replay: {f}"));
                return v;
            }
            if r.stages.is_empty() {
                return Verdict::fail(format!(
                    "input {i}: nothing to replay: {} (replay feeds each stage the reference's input, so the inputs must be traced too; `trace.points: [\"*\"]` traces them all)",
                    r.skipped.join("; ")
                ));
            }
            let boundary: usize = r
                .stages
                .iter()
                .filter_map(|s| s.q8k.as_ref())
                .map(|q| q.boundary)
                .sum();
            let exact = r.stages.iter().filter(|s| s.exact).count();
            notes.push(format!(
                "input {i}: {} stages replayed, {exact} of them held to bit-exactness and equal, {boundary} int8 boundary flips ({}){}",
                r.stages.len(),
                {
                    let mut f: Vec<&str> = r
                        .stages
                        .iter()
                        .filter_map(|s| s.q8k.as_ref().map(|q| q.format))
                        .collect();
                    f.sort_unstable();
                    f.dedup();
                    if f.is_empty() { "no int8 products".to_string() } else { f.join(", ") + " activations checked" }
                },
                if r.skipped.is_empty() {
                    String::new()
                } else {
                    // The first dozen: a reference may trace thousands of steps it never fed.
                    let more = r.skipped.len().saturating_sub(12);
                    format!(
                        "; not replayed: {}{}",
                        r.skipped[..r.skipped.len().min(12)].join("; "),
                        if more > 0 { format!("; and {more} more") } else { String::new() }
                    )
                }
            ));
        }
        Verdict::pass(notes.join("; "))
    }

    pub(super) fn check_parity(&self, s: &LoadedScenario, runs: &Runs, check: Check) -> Verdict {
        let tol = &s.scenario.tolerances;
        let mut worst: Option<Headroom> = None;
        let mut per_layer = Vec::new();
        let mut notes = Vec::new();
        let mut figures = Vec::new();
        for i in 0..runs.inputs.len() {
            // The reference's run, and whether its build allows exactness at all.
            let (ref_dir, default_exact, build_reason) =
                match self.reference(s, runs, i).and_then(|d| {
                    let (x, why) = Self::exactness(s, &d)?;
                    Ok((d, x, why))
                }) {
                    Ok(r) => r,
                    Err(e) => return Verdict::fail(format!("input {i}: {e}")),
                };
            let tolerance = exact_tolerance(tol, default_exact, build_reason.is_none());
            let spec = CompareSpec {
                tolerance: &tolerance,
                logits: tol.logits,
                generated_equal: true,
            };
            let c: Comparison =
                match compare_trace_dirs(&runs.inputs[i].engine_dir, &ref_dir, &spec) {
                    Ok(c) => c,
                    Err(e) => return Verdict::fail(format!("input {i}: {e}")),
                };
            let exact_points = c.points.iter().filter(|p| p.exact).count();
            let why_not: Vec<String> = build_reason
                .iter()
                .filter(|_| default_exact)
                .map(|r| format!("not exact: {r}; the tolerances apply"))
                .collect();
            if check == Check::Generation {
                if let Some(at) = c.generated_mismatch {
                    return Verdict::fail(format!(
                        "input {i}: generated tokens differ at index {at}: engine {:?}, reference {:?}",
                        c.engine_generated, c.reference_generated
                    ));
                }
                // The path `harness bench` and real use run: no tracer, last-position logits only.
                let fast = forward::generate_last_only(
                    &runs.loaded,
                    &runs.inputs[i].tokens,
                    s.scenario.generation.steps,
                    s.scenario.threads,
                    runs.kernel,
                );
                match fast {
                    Ok((tokens, _)) if tokens == c.engine_generated => {}
                    Ok((tokens, _)) => {
                        return Verdict::fail(format!(
                            "input {i}: generation without tracing, with last-position logits only, gives {tokens:?}; the traced run (equal to the reference's) gave {:?}",
                            c.engine_generated
                        ))
                    }
                    Err(e) => return Verdict::fail(format!("input {i}: untraced generation: {e}")),
                }
                notes.push(format!(
                    "input {i}: {} tokens equal (traced, untraced last-logits-only, reference)",
                    c.engine_generated.len()
                ));
                continue;
            }
            figures.push(crate::report::InputFigures::build(
                format!("input {i}"),
                i,
                &c,
                &spec,
                &runs.inputs[i].engine_dir,
                &ref_dir,
            ));
            if c.first_divergence.is_some()
                || !c.logit_violations.is_empty()
                || !c.unmatched.is_empty()
            {
                // With only some points traced, the first traced point that differs may lie
                // downstream of the stage at fault.
                let partial = if c.first_divergence.is_some()
                    && !s.scenario.trace.points.iter().any(|p| p == "*")
                {
                    format!(
                        "\n(this scenario traces only {}: an untraced stage before it may be where the runs part; `harness trace` and `harness ref-trace` with every point, then `harness diff`, name it)",
                        s.scenario.trace.points.join(", ")
                    )
                } else {
                    String::new()
                };
                let mut v = Verdict::fail(format!("input {i}: {}{partial}", c.failure_summary()));
                // The summary table's cell: which input, where several are compared.
                let n_inputs = runs.inputs.len();
                v.divergence = c.first_divergence.as_ref().map(|d| {
                    if n_inputs > 1 {
                        format!("input {i}, {d}")
                    } else {
                        d.to_string()
                    }
                });
                // Where the values agree and only records could not be compared, the table
                // shows the failure's first line, not a metric within its bound.
                if c.first_divergence.is_some() || !c.logit_violations.is_empty() {
                    v.worst = c.worst_headroom().cloned();
                }
                v.per_layer = c.per_layer.clone();
                v.figures = figures;
                return v;
            }
            // Bounds only matter where a point was not held to exactness.
            if exact_points < c.points.len() {
                if let Some(h) = c.worst_headroom() {
                    if worst.as_ref().is_none_or(|w| h.factor < w.factor) {
                        worst = Some(h.clone());
                    }
                }
            }
            notes.push(format!(
                "input {i}: {} points × positions compared, {exact_points} of them held to bit-exactness and equal{}",
                c.points.len(),
                if why_not.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", why_not.join("; "))
                }
            ));
            per_layer = c.per_layer.clone();
        }
        let mut v = Verdict::pass(notes.join("; "));
        v.worst = worst;
        v.per_layer = per_layer;
        v.figures = figures;
        v
    }
}

/// The tolerance of each point: the scenario's, held to exactness where the scenario asks for it
/// (`exact`, by default against llama.cpp) and the reference's build allows it.
pub(super) fn exact_tolerance(
    tol: &crate::scenario::Tolerances,
    default_exact: bool,
    build_allows: bool,
) -> impl Fn(&str) -> crate::compare::Tolerance + '_ {
    move |name| {
        let mut t = tol.for_point(name);
        t.exact = Some(t.exact.unwrap_or(default_exact) && build_allows);
        t
    }
}

pub(super) fn check_engine(s: &LoadedScenario, runs: &Runs) -> Verdict {
    let mut n = 0;
    for (i, input) in runs.inputs.iter().enumerate() {
        for r in &input.records {
            n += 1;
            if r.nan > 0 || r.inf > 0 {
                return Verdict::fail(format!(
                    "input {i}: `{}` step {} has {} NaN and {} Inf values",
                    r.name, r.step, r.nan, r.inf
                ));
            }
            let n_pos = (r.positions[1] - r.positions[0]) as usize;
            if r.shape.first() != Some(&n_pos) || r.shape.iter().product::<usize>() != r.count {
                return Verdict::fail(format!(
                    "input {i}: `{}` step {} has shape {:?} for positions {:?}",
                    r.name, r.step, r.shape, r.positions
                ));
            }
        }
        let want = s.scenario.generation.steps;
        if input.generated.len() != want {
            return Verdict::fail(format!(
                "input {i}: generated {} tokens, expected {want}",
                input.generated.len()
            ));
        }
    }
    Verdict::pass(format!(
        "{} inputs, {n} trace records, finite and well shaped; kernels: {}",
        runs.inputs.len(),
        runs.kernels.join(", ")
    ))
}

pub(super) fn check_receipt_requirements(s: &LoadedScenario, runs: &Runs) -> Verdict {
    let req = &s.scenario.receipt;
    let mut notes = Vec::new();
    if let Some(floor) = req.min_decode_tps {
        if runs.decode_calls == 0 || runs.decode_seconds <= 0.0 {
            return Verdict::fail(format!("`receipt.min_decode_tps` is {floor} but the scenario makes no decode call (set `generation.steps` ≥ 2)"));
        }
        let tps = runs.decode_calls as f64 / runs.decode_seconds;
        if tps < floor {
            return Verdict::fail(format!(
                "engine decode {tps:.1} tokens/s is below `receipt.min_decode_tps` {floor}"
            ));
        }
        notes.push(format!("decode {tps:.1} tokens/s ≥ {floor}"));
    }
    for k in &req.kernels {
        // A glob (`tq2_0_q8k_dot_*`) asks for the product whatever variant the CPU picked.
        let matcher = match globset::Glob::new(k) {
            Ok(g) => g.compile_matcher(),
            Err(e) => return Verdict::fail(format!("`receipt.kernels` entry `{k}`: {e}")),
        };
        if !runs.kernels.iter().any(|ran| matcher.is_match(ran)) {
            return Verdict::fail(format!(
                "kernel `{k}` required by `receipt.kernels` did not run; ran: {}",
                runs.kernels.join(", ")
            ));
        }
    }
    if !req.kernels.is_empty() {
        notes.push(format!("kernels {} ran", req.kernels.join(", ")));
    }
    Verdict::pass(notes.join("; "))
}

/// Without a reference: each chunked prefill's logits against the one-shot prefill's, within the
/// logits tolerance (chunks of one token sum some products in another order, as llama.cpp does),
/// and bit for bit against the same chunks on the scalar kernels (the specification every variant
/// equals), so a kernel fault on the chunked path is caught exactly. A failure names the first
/// position at fault.
pub(super) fn check_chunking_engine_only(s: &LoadedScenario, runs: &Runs) -> Verdict {
    let (model, kernel) = (&*runs.loaded, runs.kernel);
    let n_vocab = model.config.n_vocab.max(1);
    let tol = s.scenario.tolerances.for_point("logits");
    let threads = s.scenario.threads;
    // The first position whose logits differ (bit for bit, or past the tolerance).
    let first_position = |a: &[f32], b: &[f32], within: &dyn Fn(&[f32], &[f32]) -> bool| {
        a.chunks(n_vocab)
            .zip(b.chunks(n_vocab))
            .position(|(x, y)| !within(x, y))
    };
    let bitwise = |x: &[f32], y: &[f32]| {
        x.len() == y.len()
            && x.iter()
                .zip(y)
                .all(|(p, q)| crate::compare::same_value(*p, *q))
    };
    let mut notes = Vec::new();
    for (i, input) in runs.inputs.iter().enumerate() {
        for &chunk in &s.scenario.prefill_chunks {
            let size = if chunk == 0 {
                input.tokens.len()
            } else {
                chunk
            };
            let run =
                |k: Kernel| forward::run(model, &input.tokens, 0, Some(size), threads, k, None);
            let out = match run(kernel) {
                Ok(o) => o,
                Err(e) => return Verdict::fail(e),
            };
            let m = crate::compare::tensor_metrics(&input.logits, &out.logits);
            let violations = tol.violations(&m);
            if !violations.is_empty() {
                let within = |x: &[f32], y: &[f32]| {
                    tol.violations(&crate::compare::tensor_metrics(x, y))
                        .is_empty()
                };
                let at = first_position(&input.logits, &out.logits, &within)
                    .map(|p| format!(", first at position {p}"))
                    .unwrap_or_default();
                let mut v = Verdict::fail(format!(
                    "input {i}: prefill in chunks of {size} differs from one prefill{at}: {}",
                    violations.join(", ")
                ));
                v.divergence = Some(format!("chunks of {size}, logits{at}"));
                return v;
            }
            if kernel != Kernel::Scalar {
                let spec = match run(Kernel::Scalar) {
                    Ok(o) => o,
                    Err(e) => return Verdict::fail(e),
                };
                if let Some(p) = first_position(&spec.logits, &out.logits, &bitwise) {
                    let row = |l: &[f32]| l.chunks(n_vocab).nth(p).map(<[f32]>::to_vec);
                    let (a, b) = (row(&spec.logits), row(&out.logits));
                    let element = a
                        .zip(b)
                        .and_then(|(a, b)| crate::compare::first_difference(&a, &b, &[a.len()]))
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default();
                    let mut v = Verdict::fail(format!(
                        "input {i}: prefill in chunks of {size} on the {} kernels differs from the scalar specification's at position {p}{element}",
                        kernel.suffix()
                    ));
                    v.divergence = Some(format!(
                        "chunks of {size}, {} vs scalar, logits at position {p}",
                        kernel.suffix()
                    ));
                    return v;
                }
            }
            let exact = input.logits == out.logits;
            notes.push(format!(
                "chunks of {size}: {}{}",
                if exact {
                    "bit-identical".to_string()
                } else {
                    format!("rel L2 {:.2e}", m.rel_l2)
                },
                if kernel == Kernel::Scalar {
                    ""
                } else {
                    ", equal to the scalar kernels' bit for bit"
                }
            ));
        }
    }
    Verdict::pass(notes.join("; "))
}
