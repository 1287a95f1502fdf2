//! `verify-receipt`: the checks of one receipt file, each failure with its exit code (the
//! table in [`super`]'s documentation).

use super::*;

/// What `verify-receipt` checks beyond the receipt itself.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub require_gpu_kernels: bool,
    pub min_decode_tps: Option<f64>,
    pub max_age_seconds: Option<u64>,
    /// The goldens directory to compare trace digests against.
    pub goldens: Option<PathBuf>,
    /// Where relative paths in receipts (scenario and model files) are resolved.
    pub base: PathBuf,
    /// "Now", in seconds since the epoch.
    pub now: i64,
}

/// A failed check: the exit code of its class and the message.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

/// Check one receipt file.
pub fn verify_file(path: &Path, o: &VerifyOptions) -> Result<(), Failure> {
    let shown = path.display().to_string();
    let fail = |code: u8, message: String| Failure {
        code,
        message: format!("{shown}: {message}"),
    };
    let text = bitnet_engine::files::read_text_limited(
        path,
        bitnet_engine::files::MAX_JSON_BYTES,
        "receipt",
    )
    .map_err(|e| fail(EXIT_MALFORMED, format!("cannot read: {e}")))?;
    // The version first, so a future schema is named as such rather than as unknown fields.
    let raw: serde_json::Value = crate::bounded::json(&text)
        .and_then(|()| serde_json::from_str(&text))
        .map_err(|e| fail(EXIT_MALFORMED, format!("not JSON: {e}")))?;
    match raw.get("schema_version").and_then(|v| v.as_u64()) {
        Some(1) => {}
        Some(v) => {
            return Err(fail(
                EXIT_VERSION,
                format!("field `schema_version` is {v}, expected 1"),
            ))
        }
        None => {
            return Err(fail(
                EXIT_MALFORMED,
                "field `schema_version` is missing or not a number, expected 1".into(),
            ))
        }
    }
    let r: Receipt = serde_json::from_str(&text).map_err(|e| {
        fail(
            EXIT_MALFORMED,
            format!("does not match the receipt schema: {e}"),
        )
    })?;
    if r.compute_path != "real" {
        return Err(fail(
            EXIT_COMPUTE_PATH,
            format!(
                "field `compute_path` is `{}`, expected `real`",
                r.compute_path
            ),
        ));
    }
    if r.kernels.is_empty() {
        return Err(fail(
            EXIT_KERNELS,
            "field `kernels` is empty, expected the kernel IDs that executed".into(),
        ));
    }
    let mut listed = std::collections::BTreeSet::new();
    if let Some(twice) = r.kernels.iter().find(|k| !listed.insert(k.as_str())) {
        return Err(fail(
            EXIT_KERNELS,
            format!("field `kernels` lists `{twice}` twice, expected each kernel ID once"),
        ));
    }
    if let Some(bad) = r.kernels.iter().find(|k| !kernel_id_ok(k)) {
        return Err(fail(EXIT_KERNELS, format!("field `kernels` has `{bad}`, expected `<format>_<activation>_<op>_<isa>` with isa one of {}", ISAS.join(", "))));
    }
    if r.build.target_arch.is_empty() {
        return Err(fail(
            EXIT_PROVENANCE,
            "field `build.target_arch` is empty, expected the target (`x86_64`, `aarch64`)".into(),
        ));
    }
    // Kernels the engine can record, of an instruction set the recorded target and CPU have.
    let known = bitnet_engine::kernels::known_kernel_ids();
    for k in &r.kernels {
        if !known.contains(k) {
            return Err(fail(
                EXIT_KERNELS,
                format!("field `kernels` has `{k}`, which this engine has no kernel of"),
            ));
        }
        let isa = k.rsplit('_').next().unwrap_or("");
        let (arch_ok, feature) = match isa {
            // GPU kernels: the device is checked with `backend` below.
            "scalar" | "cuda" => (true, None),
            "avx2" => (r.build.target_arch == "x86_64", Some("avx2")),
            "avx512" => (r.build.target_arch == "x86_64", Some("avx512f")),
            "vnni256" => (r.build.target_arch == "x86_64", Some("avx512vnni")),
            "neon" => (r.build.target_arch == "aarch64", Some("neon")),
            _ => (false, None),
        };
        let has = feature.is_none_or(|f| r.build.cpu_features.iter().any(|c| c == f));
        if !arch_ok || !has {
            return Err(fail(
                EXIT_KERNELS,
                format!(
                    "field `kernels` has `{k}`, an {isa} kernel, but the build is {} with CPU features [{}]",
                    r.build.target_arch,
                    r.build.cpu_features.join(", ")
                ),
            ));
        }
    }
    let simd: std::collections::BTreeSet<&str> = r
        .kernels
        .iter()
        .filter_map(|k| k.rsplit('_').next())
        .filter(|isa| !matches!(*isa, "scalar" | "cuda"))
        .collect();
    // Without a plan one run uses one variant: the ISAs are those that variant records (the
    // `vnni256` variant runs AVX2's kernels for its non-ternary products). With a plan, those of
    // the variants it names.
    use bitnet_engine::kernels::Kernel;
    match &r.kernel_plan {
        None => {
            let one_variant = Kernel::ALL
                .iter()
                .any(|k| simd.iter().all(|isa| k.recorded_isas().contains(isa)));
            if !simd.is_empty() && !one_variant {
                return Err(fail(
                    EXIT_KERNELS,
                    format!(
                        "field `kernels` mixes the variants {simd:?}; one run uses one variant (and scalar helpers) unless `kernel_plan` names several"
                    ),
                ));
            }
        }
        Some(plan) => {
            let plan = bitnet_engine::kernels::plan::KernelPlan::parse_description(plan)
                .map_err(|e| fail(EXIT_KERNELS, format!("field `kernel_plan` {e}")))?;
            let allowed: std::collections::BTreeSet<&str> = plan
                .variants()
                .iter()
                .flat_map(|k| k.recorded_isas().iter().copied())
                .collect();
            if let Some(isa) = simd.iter().find(|isa| !allowed.contains(*isa)) {
                return Err(fail(
                    EXIT_KERNELS,
                    format!(
                        "field `kernels` has {isa} kernels, which no variant of `kernel_plan` runs"
                    ),
                ));
            }
        }
    }
    let gpu: Vec<&String> = r.kernels.iter().filter(|k| k.ends_with("_cuda")).collect();
    match r.backend.as_str() {
        "cpu" => {
            if let Some(k) = gpu.first() {
                return Err(fail(
                    EXIT_KERNELS,
                    format!("field `kernels` has the GPU kernel `{k}` but `backend` is `cpu`"),
                ));
            }
            if o.require_gpu_kernels {
                return Err(fail(EXIT_GPU_KERNELS, "GPU kernels are required (--require-gpu-kernels) but `kernels` has none and `backend` is `cpu`".into()));
            }
            // A CUDA check that passed makes the receipt `backend: cuda`, with its kernels and
            // GPU; a `cpu` receipt claiming one shows no GPU at all.
            if r.verdicts.get("cuda").map(String::as_str) == Some("pass") {
                return Err(fail(
                    EXIT_PROVENANCE,
                    "field `verdicts.cuda` is `pass` but `backend` is `cpu`: a CUDA check that passed records `backend: cuda`, its `_cuda` kernels and its `gpu`".into(),
                ));
            }
        }
        "cuda" => {
            if gpu.is_empty() {
                return Err(fail(
                    EXIT_GPU_KERNELS,
                    "field `backend` is `cuda` but `kernels` has no `_cuda` kernel".into(),
                ));
            }
            match &r.gpu {
                None => {
                    return Err(fail(
                        EXIT_PROVENANCE,
                        "field `backend` is `cuda` but the receipt has no `gpu` section (device, driver)".into(),
                    ))
                }
                Some(g) if g.device.is_empty() || g.device == HOST_EMULATION_DEVICE => {
                    return Err(fail(
                        EXIT_GPU_KERNELS,
                        format!("field `gpu.device` is `{}`: the `_cuda` kernels ran on the host emulation, not on a GPU", g.device),
                    ))
                }
                Some(_) => {}
            }
        }
        other => {
            return Err(fail(
                EXIT_PROVENANCE,
                format!("field `backend` is `{other}`, expected `cpu` or `cuda`"),
            ))
        }
    }
    // A bench section is held to what `harness bench` writes (the perf gate's own check: rates
    // that are their samples' statistics, ratios that are their medians'), and to this receipt's
    // model.
    if let Some(b) = &r.bench {
        crate::bench::check_report(b)
            .map_err(|e| fail(EXIT_THROUGHPUT, format!("field `bench`: {e}")))?;
        if b.model_blake3 != r.model_blake3 {
            return Err(fail(
                EXIT_MODEL_HASH,
                format!(
                    "field `bench.model_blake3` is `{}`, but the receipt's model is `{}`: the bench ran another model",
                    b.model_blake3, r.model_blake3
                ),
            ));
        }
    }
    let hex64 = bitnet_engine::trace::is_blake3_hex;
    if !hex64(&r.model_blake3) {
        return Err(fail(
            EXIT_MODEL_HASH,
            format!(
                "field `model_blake3` is `{}`, expected 64 hex digits",
                r.model_blake3
            ),
        ));
    }
    let model = o.base.join(&r.model);
    if r.model.is_empty() || !hashable_file(&model) {
        return Err(fail(
            EXIT_MODEL_HASH,
            format!(
                "field `model` is `{}`: `{}` is not a file (a non-empty regular file outside /proc and /sys), so `model_blake3` cannot be checked",
                r.model,
                model.display()
            ),
        ));
    }
    {
        let got = blake3_file(&model).map_err(|e| {
            fail(
                EXIT_MODEL_HASH,
                format!("cannot hash `{}`: {e}", model.display()),
            )
        })?;
        if got != r.model_blake3 {
            return Err(fail(
                EXIT_MODEL_HASH,
                format!(
                    "field `model_blake3` is {}, but `{}` hashes to {got}",
                    r.model_blake3,
                    model.display()
                ),
            ));
        }
    }
    if !hex64(&r.scenario_blake3) {
        return Err(fail(
            EXIT_SCENARIO_HASH,
            format!(
                "field `scenario_blake3` is `{}`, expected 64 hex digits",
                r.scenario_blake3
            ),
        ));
    }
    let scenario = o.base.join(&r.scenario_file);
    if r.scenario_file.is_empty() || !hashable_file(&scenario) {
        return Err(fail(
            EXIT_SCENARIO_HASH,
            format!(
                "field `scenario_file` is `{}`: `{}` is not a file (a non-empty regular file outside /proc and /sys), so `scenario_blake3` cannot be checked",
                r.scenario_file,
                scenario.display()
            ),
        ));
    }
    {
        let got = blake3_file(&scenario).map_err(|e| fail(EXIT_SCENARIO_HASH, e.to_string()))?;
        if got != r.scenario_blake3 {
            return Err(fail(
                EXIT_SCENARIO_HASH,
                format!(
                    "field `scenario_blake3` is {}, but `{}` hashes to {got}",
                    r.scenario_blake3,
                    scenario.display()
                ),
            ));
        }
    }
    if !hex64(&r.trace_digest) {
        return Err(fail(
            EXIT_TRACE_DIGEST,
            format!(
                "field `trace_digest` is `{}`, expected 64 hex digits",
                r.trace_digest
            ),
        ));
    }
    check_scenario_name(&r).map_err(|(c, m)| fail(c, m))?;
    if let Some(goldens) = &o.goldens {
        let g = crate::golden::snapshot_path(goldens, &r.scenario);
        let text = bitnet_engine::files::read_text_limited(
            &g,
            bitnet_engine::files::MAX_REPORT_BYTES,
            "golden",
        )
        .map_err(|e| {
            fail(
                EXIT_TRACE_DIGEST,
                format!("cannot read the golden `{}`: {e}", g.display()),
            )
        })?;
        let want = trace_digest(crate::golden::snapshot_body(&text));
        if want != r.trace_digest {
            return Err(fail(
                EXIT_TRACE_DIGEST,
                format!(
                    "field `trace_digest` is {}, the golden `{}` gives {want}",
                    r.trace_digest,
                    g.display()
                ),
            ));
        }
    }
    let t = &r.throughput;
    for (name, v) in [
        ("throughput.prefill_tps", Some(t.prefill_tps)),
        ("throughput.decode_tps", t.decode_tps),
        ("throughput.reference_prefill_tps", t.reference_prefill_tps),
        ("throughput.reference_decode_tps", t.reference_decode_tps),
    ] {
        if let Some(v) = v {
            if !(MIN_TPS..=MAX_TPS).contains(&v) {
                return Err(fail(
                    EXIT_THROUGHPUT,
                    format!("field `{name}` is {v}, expected tokens/s between {MIN_TPS} and {MAX_TPS:e}"),
                ));
            }
        }
    }
    if let Some(floor) = o.min_decode_tps {
        match t.decode_tps {
            Some(v) if v >= floor => {}
            Some(v) => {
                return Err(fail(
                    EXIT_THROUGHPUT,
                    format!("field `throughput.decode_tps` is {v:.1}, below the floor {floor}"),
                ))
            }
            None => {
                return Err(fail(
                    EXIT_THROUGHPUT,
                    format!("field `throughput.decode_tps` is absent, the floor is {floor}"),
                ))
            }
        }
    }
    let start = parse_rfc3339(&r.started_at).ok_or_else(|| {
        fail(
            EXIT_TIME,
            format!(
                "field `started_at` is `{}`, expected an RFC 3339 time like 2026-01-31T12:00:00Z",
                r.started_at
            ),
        )
    })?;
    if start < GGUF_EPOCH {
        return Err(fail(
            EXIT_TIME,
            format!(
                "field `started_at` {} predates the GGUF format (2023-08-21), expected the time the run started",
                r.started_at
            ),
        ));
    }
    // A run reads a model and writes a trace: it takes time, and not more than the cap.
    if !(r.duration_seconds.is_finite()
        && r.duration_seconds > 0.0
        && r.duration_seconds <= MAX_DURATION)
    {
        return Err(fail(
            EXIT_TIME,
            format!(
                "field `duration_seconds` is {}, expected more than 0 and at most {MAX_DURATION} seconds",
                r.duration_seconds
            ),
        ));
    }
    let end = start.saturating_add(r.duration_seconds.ceil() as i64);
    if end > o.now + 300 {
        return Err(fail(
            EXIT_TIME,
            format!(
                "field `started_at` {} plus the duration lies in the future",
                r.started_at
            ),
        ));
    }
    if let Some(max) = o.max_age_seconds {
        if o.now.saturating_sub(start) > i64::try_from(max).unwrap_or(i64::MAX) {
            return Err(fail(
                EXIT_TIME,
                format!(
                    "field `started_at` {} is older than the allowed age ({max} s)",
                    r.started_at
                ),
            ));
        }
    }
    if r.verdicts.is_empty() {
        return Err(fail(
            EXIT_VERDICT,
            "field `verdicts` is empty, expected every check's verdict".into(),
        ));
    }
    for (check, v) in &r.verdicts {
        match v.as_str() {
            "pass" => {}
            // A receipt is written only when the scenario ran (not skipped), and then only the
            // `cuda` check can be ignored: any other `ignored` hides a verdict.
            "ignored" if check == "cuda" => {}
            "ignored" => {
                return Err(fail(
                    EXIT_VERDICT,
                    format!("field `verdicts.{check}` is `ignored`, but the scenario ran: only `cuda` may be ignored in a receipt"),
                ))
            }
            "fail" => {
                return Err(fail(
                    EXIT_VERDICT,
                    format!("field `verdicts.{check}` is `fail`"),
                ))
            }
            other => {
                return Err(fail(
                    EXIT_VERDICT,
                    format!(
                    "field `verdicts.{check}` is `{other}`, expected `pass`, `fail` or `ignored`"
                ),
                ))
            }
        }
    }
    if r.engine.version.is_empty()
        || !(r.engine.git_commit == "unknown"
            || (r.engine.git_commit.len() == 40
                && r.engine.git_commit.bytes().all(|c| c.is_ascii_hexdigit())))
    {
        return Err(fail(
            EXIT_PROVENANCE,
            format!(
                "field `engine.git_commit` is `{}`, expected 40 hex digits or `unknown`",
                r.engine.git_commit
            ),
        ));
    }
    if !["release", "debug"].contains(&r.build.profile.as_str()) || r.build.target_arch.is_empty() {
        return Err(fail(
            EXIT_PROVENANCE,
            format!(
                "field `build.profile` is `{}`, expected `release` or `debug`",
                r.build.profile
            ),
        ));
    }
    if r.threads == 0 {
        return Err(fail(
            EXIT_PROVENANCE,
            "field `threads` is 0, expected at least 1".into(),
        ));
    }
    if r.engine.version != env!("CARGO_PKG_VERSION") {
        return Err(fail(
            EXIT_PROVENANCE,
            format!(
                "field `engine.version` is `{}`, this engine is {}",
                r.engine.version,
                env!("CARGO_PKG_VERSION")
            ),
        ));
    }
    // A commit must be one of this checkout's (when it is a git checkout).
    if r.engine.git_commit != "unknown" && git_state(&o.base).0 != "unknown" {
        let known = std::process::Command::new("git")
            .arg("-C")
            .arg(&o.base)
            .args(["cat-file", "-e"])
            .arg(format!("{}^{{commit}}", r.engine.git_commit))
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !known {
            return Err(fail(
                EXIT_PROVENANCE,
                format!(
                    "field `engine.git_commit` is {}, which is not a commit of `{}`",
                    r.engine.git_commit,
                    o.base.display()
                ),
            ));
        }
        // The run built that commit, so it cannot have started before the commit was made
        // (an hour's grace for clocks that disagree).
        if let Some(made) = commit_time(&o.base, &r.engine.git_commit) {
            if start < made - 3600 {
                return Err(fail(
                    EXIT_TIME,
                    format!(
                        "field `started_at` {} is before its commit {} was made ({})",
                        r.started_at,
                        r.engine.git_commit,
                        crate::receipt::rfc3339(
                            std::time::UNIX_EPOCH
                                + std::time::Duration::from_secs(made.max(0) as u64)
                        )
                    ),
                ));
            }
        }
    }
    // What the scenario file (present and hash-checked above) implies.
    let loaded = crate::scenario::load_scenario(&scenario).map_err(|e| {
        fail(
            EXIT_SCENARIO_HASH,
            format!("the scenario does not load: {e}"),
        )
    })?;
    let sc = &loaded.scenario;
    if r.threads != sc.threads {
        return Err(fail(
            EXIT_PROVENANCE,
            format!(
                "field `threads` is {}, the scenario runs {}",
                r.threads, sc.threads
            ),
        ));
    }
    if r.kv_cache != sc.kv_cache {
        return Err(fail(
            EXIT_PROVENANCE,
            format!(
                "field `kv_cache` is `{}`, the scenario's KV cache is `{}`",
                r.kv_cache.label(),
                sc.kv_cache.label()
            ),
        ));
    }
    if r.backend == "cuda" {
        if !sc.backends.contains(&crate::scenario::Backend::Cuda) {
            return Err(fail(
                EXIT_PROVENANCE,
                "field `backend` is `cuda` but the scenario's `backends` has no `cuda`".into(),
            ));
        }
        if r.verdicts.get("cuda").map(String::as_str) != Some("pass") {
            return Err(fail(
                EXIT_PROVENANCE,
                "field `backend` is `cuda` but `verdicts.cuda` is not `pass`".into(),
            ));
        }
    } else if r.gpu.is_some() {
        return Err(fail(
            EXIT_PROVENANCE,
            format!("field `gpu` is present but `backend` is `{}`", r.backend),
        ));
    }
    let implied: Vec<&str> = crate::run::checks_of(&loaded)
        .iter()
        .map(|c| c.name())
        .collect();
    // (`cuda: ignored` claims nothing, and a run where no GPU is may write it.)
    let extra = r
        .verdicts
        .iter()
        .find(|(k, v)| !(implied.contains(&k.as_str()) || (*k == "cuda" && *v == "ignored")))
        .map(|(k, _)| k);
    if let Some(extra) = extra {
        return Err(fail(
            EXIT_VERDICT,
            format!(
                "field `verdicts` has `{extra}`, which is not a check of the scenario (its checks: {})",
                implied.join(", ")
            ),
        ));
    }
    check_decode_presence(&r, sc.generation.steps).map_err(|(c, m)| fail(c, m))?;
    for check in crate::run::checks_of(&loaded) {
        if !r.verdicts.contains_key(check.name()) {
            return Err(fail(
                EXIT_VERDICT,
                format!(
                    "field `verdicts` lacks `{}`, a check the scenario implies",
                    check.name()
                ),
            ));
        }
    }
    for want in &sc.receipt.kernels {
        let m = globset::Glob::new(want)
            .map_err(|e| fail(EXIT_KERNELS, format!("the scenario's kernel `{want}`: {e}")))?
            .compile_matcher();
        if !r.kernels.iter().any(|k| m.is_match(k)) {
            return Err(fail(
                EXIT_KERNELS,
                format!("field `kernels` lacks `{want}`, which the scenario's `receipt.kernels` requires"),
            ));
        }
    }
    // The scenario's decode floor, which its `receipt` check held the same figure to.
    if let Some(floor) = sc.receipt.min_decode_tps {
        if !r.throughput.decode_tps.is_some_and(|v| v >= floor) {
            return Err(fail(
                EXIT_THROUGHPUT,
                format!(
                    "field `throughput.decode_tps` is {:?}, under the scenario's `receipt.min_decode_tps` {floor}",
                    r.throughput.decode_tps
                ),
            ));
        }
    }
    let ran_reference = matches!(r.verdicts.get("parity").map(String::as_str), Some("pass"));
    if ran_reference
        && (r.throughput.reference_prefill_tps.is_none()
            || (r.throughput.decode_tps.is_some() && r.throughput.reference_decode_tps.is_none()))
    {
        return Err(fail(
            EXIT_THROUGHPUT,
            "the reference ran (parity passed) but a reference tokens/s figure is null".into(),
        ));
    }
    Ok(())
}

/// Tokens/s a receipt may state: below is not a run, above is not this machine.
pub const MIN_TPS: f64 = 1e-3;
/// See [`MIN_TPS`].
pub const MAX_TPS: f64 = 1e8;
/// Longest run a receipt may state (one week).
pub const MAX_DURATION: f64 = 7.0 * 86400.0;

/// 2023-08-21T00:00:00Z, when llama.cpp introduced GGUF: no receipt of a GGUF model's run starts
/// before it.
pub const GGUF_EPOCH: i64 = 1_692_576_000;

/// The committer time of `commit` in the checkout at `base` (seconds since the epoch).
fn commit_time(base: &Path, commit: &str) -> Option<i64> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(base)
        .args(["show", "-s", "--format=%ct", commit])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    std::str::from_utf8(&out.stdout).ok()?.trim().parse().ok()
}

/// Whether the gate may hash `path`: a regular file that is not empty and not a kernel
/// pseudo-file. Files under `/proc` and `/sys` state a size of 0 (or one they do not hold) and
/// some read without end: `/proc/self/pagemap` named as a receipt's model held the gate for
/// minutes, reading hundreds of gigabytes.
pub fn hashable_file(path: &Path) -> bool {
    let pseudo =
        std::fs::canonicalize(path).is_ok_and(|p| p.starts_with("/proc") || p.starts_with("/sys"));
    !pseudo && std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0)
}

/// blake3 of a file's bytes (memory-mapped).
pub fn blake3_file(path: &Path) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_mmap(path)?;
    Ok(h.finalize().to_hex().to_string())
}

/// `scenario` is the scenario file's stem, as `harness run` writes it: the name its golden is kept
/// under, so a receipt cannot send `--against-goldens` to another scenario's golden, or a path.
fn check_scenario_name(r: &Receipt) -> Result<(), (u8, String)> {
    let stem = Path::new(&r.scenario_file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("");
    if r.scenario != stem {
        return Err((
            EXIT_SCENARIO_HASH,
            format!(
                "field `scenario` is `{}`, but `scenario_file` `{}` is the scenario `{stem}`",
                r.scenario, r.scenario_file
            ),
        ));
    }
    Ok(())
}

/// A run times decode calls exactly when the scenario generates two or more tokens (the first
/// comes from the prefill's logits): `decode_tps` is present then and absent with no steps.
fn check_decode_presence(r: &Receipt, steps: usize) -> Result<(), (u8, String)> {
    let t = &r.throughput;
    let fields = [
        ("decode_tps", t.decode_tps, true),
        (
            "reference_decode_tps",
            t.reference_decode_tps,
            t.reference_prefill_tps.is_some(),
        ),
    ];
    for (name, value, expected_with_steps) in fields {
        let wrong = match value {
            None => steps >= 2 && expected_with_steps,
            Some(_) => steps == 0,
        };
        if wrong {
            return Err((
                EXIT_THROUGHPUT,
                format!(
                    "field `throughput.{name}` is {}, but the scenario generates {steps} token(s)",
                    value.map_or("absent".to_string(), |v| v.to_string())
                ),
            ));
        }
    }
    Ok(())
}
