//! Loading a scenario file: YAML parsed with line:col errors, then validated against the
//! bounds the schema states (and the model's vocabulary), with did-you-mean for misspellings.

use super::*;

/// A bad scenario: where, and what to change.
#[derive(Debug, thiserror::Error)]
pub struct ScenarioError {
    pub path: String,
    /// 1-based; 0 when the error has no place in the text (the file cannot be read).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.path, self.message),
            l => write!(f, "{}:{l}:{}: {}", self.path, self.column, self.message),
        }
    }
}

/// The canonical names a scenario may use in point globs, for "did you mean".
pub(super) fn field_names() -> &'static [&'static str] {
    &[
        "name",
        "description",
        "tags",
        "model",
        "inputs",
        "generation",
        "trace",
        "tolerances",
        "backends",
        "reference",
        "golden",
        "prefill_chunks",
        "threads",
        "force_threads",
        "kv_cache",
        "exact",
        "skip_unless",
        "receipt",
        "preset",
        "spec",
        "path",
        "sha256",
        "blake3",
        "locked",
        "tokens",
        "prompts",
        "steps",
        "greedy",
        "points",
        "default",
        "logits",
        "cosine_min",
        "rel_l2_max",
        "max_abs",
        "nmse_max",
        "kl_max",
        "kl_mean_max",
        "top1_agreement_min",
        "topk_overlap_min",
        "k",
        "files_exist",
        "env",
        "min_decode_tps",
        "kernels",
        "command",
        "n_embd",
        "n_layer",
        "n_head",
        "n_head_kv",
        "n_ff",
        "n_vocab",
        "n_ctx",
        "rope_base",
        "rms_eps",
        "ternary_type",
        "embedding_type",
        "scale_tensors",
        "embedding_std",
        "first_attn_scale",
        "residual_scale",
        "seed",
    ]
}

/// The closest candidate within a small edit distance.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(d, c)| *d > 0 && *d <= 2.max(c.len() / 4))
        .min()
        .map(|(_, c)| c)
}

/// Find the 1-based line and column of `needle` in the YAML text, outside comments: where it
/// stands as a key (`needle:` first on its line, or after `{`, `,` or `-`), else its first
/// mention (a value: a preset, a glob). A comment that names a field is not the field.
pub(super) fn locate(text: &str, needle: &str) -> (usize, usize) {
    // A needle may name fallbacks, one per line, tried in turn: a value written with YAML escapes
    // (`"blk.\u005b.q"`) is not found as parsed, and its section's key is nearer than line 1.
    let lines: Vec<&str> = text.lines().map(uncommented).collect();
    for needle in needle.split('\n') {
        let key = format!("{}:", needle.trim_end_matches(':'));
        let as_key = |line: &str| {
            line.match_indices(&key).map(|(i, _)| i).find(|&i| {
                let before = line[..i].trim_end();
                before.is_empty() || before.ends_with(['{', ',', '-'])
            })
        };
        let anywhere = |line: &str| line.find(needle);
        for find in [&as_key as &dyn Fn(&str) -> Option<usize>, &anywhere] {
            for (i, line) in lines.iter().enumerate() {
                if let Some(col) = find(line) {
                    return (i + 1, col + 1);
                }
            }
        }
    }
    (1, 1)
}

/// A line without its comment: from a `#` at its start or after whitespace, outside quotes.
pub(super) fn uncommented(line: &str) -> &str {
    let (mut quote, mut prev): (Option<char>, char) = (None, ' ');
    for (i, ch) in line.char_indices() {
        match (quote, ch) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(ch),
            (None, '#') if prev.is_whitespace() => return &line[..i],
            _ => {}
        }
        prev = ch;
    }
    line
}

/// serde's Rust type names (`expected usize`, `expected f64`) in words a scenario's author reads.
pub(super) fn humane_types(message: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected u64", "expected a whole number (0 or more)"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected a string", "expected text"),
    ];
    let mut m = message.to_string();
    for (from, to) in WORDS {
        if let Some(i) = m.rfind(from) {
            // Only a whole word: `expected u32` is not the start of `expected u32x`.
            let end = i + from.len();
            if !m[end..].starts_with(|c: char| c.is_ascii_alphanumeric()) {
                m.replace_range(i..end, to);
            }
        }
    }
    m
}

/// Deepest flow-collection nesting a scenario may use (the YAML parser's time grows with depth:
/// 50,000 levels took 10 s, even with an error on line 4).
pub const MAX_FLOW_DEPTH: usize = 64;

/// The line and column (1-based) where `[`/`{` nesting first passes `max`, outside quoted
/// strings and comments; `None` when it never does.
pub(super) fn too_deep(text: &str, max: usize) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    for (ln, line) in text.lines().enumerate() {
        let (mut quote, mut prev): (Option<char>, char) = (None, ' ');
        for (col, ch) in line.chars().enumerate() {
            match (quote, ch) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(ch),
                // A comment starts at `#` after whitespace (or at the start of the line).
                (None, '#') if prev.is_whitespace() => break,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > max {
                        return Some((ln + 1, col + 1));
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
            prev = ch;
        }
    }
    None
}

/// Parse and validate a scenario file: one error, with file, line and column.
pub fn load_scenario(path: &Path) -> Result<LoadedScenario, ScenarioError> {
    let shown = path.display().to_string();
    let text = bitnet_engine::files::read_text_limited(
        path,
        bitnet_engine::files::MAX_TEXT_BYTES,
        "scenario",
    )
    .map_err(|e| ScenarioError {
        path: shown.clone(),
        line: 0,
        column: 0,
        message: format!("cannot read the file: {e}"),
    })?;
    if let Some((line, column)) = too_deep(&text, MAX_FLOW_DEPTH) {
        return Err(ScenarioError {
            path: shown,
            line,
            column,
            message: format!(
                "`[`/`{{` nested deeper than {MAX_FLOW_DEPTH} levels; a scenario needs a few"
            ),
        });
    }
    let parsed = crate::bounded::yaml(&text).and_then(|()| serde_norway::from_str(&text));
    let scenario: Scenario = parsed.map_err(|e| {
        let (mut line, mut column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        let mut message = e.to_string();
        // serde_norway appends " at line L column C"; the prefix already says where.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        message = humane_types(&message);
        if message.contains("untagged enum Reference") {
            // serde gives untagged enums no location: point at the value of `reference:`.
            message =
                "`reference` must be `llama.cpp`, `none` or `{ command: [program, args...] }`"
                    .into();
            let (l, c) = locate(&text, "reference:");
            (line, column) = (l, c + "reference: ".len());
        }
        // A repeated key is reported at its mapping's start: point at the repeat, the second
        // line from there holding the key at the first one's indentation.
        if let Some(k) = message
            .split("the key `")
            .nth(1)
            .and_then(|r| r.split("` appears twice").next())
        {
            let key = format!("{k}:");
            let mut found = text
                .lines()
                .enumerate()
                .skip(line.saturating_sub(1))
                .filter_map(|(i, l)| {
                    let l = uncommented(l);
                    let at = l.find(&key)?;
                    let before = l[..at].trim_end();
                    (before.is_empty() || before.ends_with(['{', ',', '-'])).then_some((i, at))
                });
            if let Some((_, first_col)) = found.next() {
                if let Some((i, col)) = found.find(|&(_, c)| c == first_col) {
                    (line, column) = (i + 1, col + 1);
                }
            }
        }
        if let Some(rest) = message.find("unknown field `").map(|i| &message[i + 15..]) {
            if let Some(word) = rest.split('`').next() {
                if let Some(m) = did_you_mean(word, field_names().iter().copied()) {
                    let hint = format!("; did you mean `{m}`?");
                    message.push_str(&hint);
                }
            }
        }
        ScenarioError {
            path: shown.clone(),
            line,
            column,
            message,
        }
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let err = |needle: &str, message: String| {
        let (line, column) = locate(&text, needle);
        ScenarioError {
            path: shown.clone(),
            line,
            column,
            message,
        }
    };
    validate(&scenario, path, &err)?;
    check_token_ids(&scenario, path, &text)?;
    check_context(&scenario, path, &text)?;
    check_meaning(&scenario, &stem, &err)?;
    Ok(LoadedScenario {
        path: path.to_owned(),
        stem,
        scenario,
        file_blake3: blake3::hash(text.as_bytes()).to_hex().to_string(),
    })
}

/// The vocabulary size of the scenario's model, where it is known without building the model: a
/// preset's or spec's `n_vocab`, or the token embedding's rows in the header of a GGUF file that
/// exists (`path`, or a fetched `locked` model). `None` otherwise; the run reports what is wrong.
pub fn model_vocab(m: &ModelSource, scenario: &Path) -> Option<u64> {
    if let Some(spec) = m.spec.as_ref() {
        return Some(u64::from(spec.n_vocab));
    }
    if let Some(p) = &m.preset {
        return bitnet_engine::synth::preset(p).map(|s| u64::from(s.n_vocab));
    }
    model_file(m, scenario)?
        .tensor("token_embd.weight")
        .and_then(|t| t.dims.get(1).copied())
}

/// The scenario's GGUF file (`path`, or a fetched `locked` model), opened when it exists and
/// reads as GGUF.
fn model_file(m: &ModelSource, scenario: &Path) -> Option<bitnet_engine::gguf::GgufFile> {
    let file = match (&m.path, &m.locked) {
        (Some(p), _) => scenario.parent().unwrap_or(Path::new(".")).join(p),
        (None, Some(name)) => crate::fetch::resolve_locked(scenario, name).ok()?.1,
        (None, None) => return None,
    };
    bitnet_engine::gguf::GgufFile::open(&file).ok()
}

/// The context length of the scenario's model (`context_length`), known the way
/// [`model_vocab`] knows the vocabulary: a preset's or spec's `n_ctx`, or the GGUF header's
/// `<architecture>.context_length` (none when the file lacks it: loading the model refuses that).
fn model_context(m: &ModelSource, scenario: &Path) -> Option<u64> {
    if let Some(spec) = m.spec.as_ref() {
        return Some(u64::from(spec.n_ctx));
    }
    if let Some(p) = &m.preset {
        return bitnet_engine::synth::preset(p).map(|s| u64::from(s.n_ctx));
    }
    bitnet_engine::model::context_length(&model_file(m, scenario)?)
}

/// Token lists that, with the greedy steps after them, do not fit the model's context: caught
/// when the scenario is read, at the list's first id (the run would size its activations and
/// both KV caches by them).
pub(super) fn check_context(s: &Scenario, path: &Path, text: &str) -> Result<(), ScenarioError> {
    let Some(n_ctx) = model_context(&s.model, path) else {
        return Ok(());
    };
    let steps = s.generation.steps as u64;
    let mut k = 0;
    for (i, list) in s.inputs.tokens.iter().enumerate() {
        let total = list.len() as u64 + steps;
        if total > n_ctx {
            return Err(token_error(path, text, k, format!(
                "`inputs.tokens[{i}]` has {} tokens and `generation.steps` is {steps}: {total} positions, more than the model's context (`context_length` {n_ctx})",
                list.len()
            )));
        }
        k += list.len();
    }
    Ok(())
}

/// Values that parse but cannot mean what they say: caught when the scenario is read, at their
/// line, instead of failing every check of the run (or passing one that tests nothing).
fn check_meaning(
    s: &Scenario,
    stem: &str,
    err: &dyn Fn(&str, String) -> ScenarioError,
) -> Result<(), ScenarioError> {
    if let Some(name) = &s.name {
        let text = !name.trim().is_empty()
            && name.chars().count() <= 200
            && !name.chars().any(char::is_control);
        if !text {
            return Err(err(
                "name",
                format!("`name` is {name:?}, expected a label of 1 to 200 characters without control characters (the scenario's trials, golden and receipt are named by its file, `{stem}`)"),
            ));
        }
    }
    if let Some(i) = s.inputs.prompts.iter().position(|p| p.is_empty()) {
        return Err(err(
            "prompts",
            format!("`inputs.prompts[{i}]` is empty: give some text"),
        ));
    }
    let no_vocab = s
        .model
        .spec
        .as_ref()
        .is_some_and(|m| m.tokenizer == bitnet_engine::synth::TokenizerKind::None);
    if no_vocab && !s.inputs.prompts.is_empty() {
        return Err(err(
            "prompts",
            "text prompts need a vocabulary, and the spec has `tokenizer: none`: give `inputs.tokens`".into(),
        ));
    }
    if s.backends.is_empty() {
        return Err(err(
            "backends",
            "`backends` is empty: name at least one (`[cpu]`, `[cpu, cuda]`)".into(),
        ));
    }
    if let Some((i, b)) = s
        .backends
        .iter()
        .enumerate()
        .find(|(i, b)| s.backends[..*i].contains(b))
    {
        return Err(err(
            "backends",
            format!(
                "`backends[{i}]` names `{}` again: name each backend once",
                match b {
                    super::Backend::Cpu => "cpu",
                    super::Backend::Cuda => "cuda",
                }
            ),
        ));
    }
    if let Reference::Command { command } = &s.reference {
        if command.first().is_some_and(|p| p.trim().is_empty()) {
            return Err(err(
                "command",
                "`reference.command` starts with an empty program name".into(),
            ));
        }
    }
    if let Some(v) = s
        .skip_unless
        .env
        .iter()
        .find(|v| v.is_empty() || v.contains(['=', '\0']))
    {
        return Err(err(
            "env",
            format!("`skip_unless.env` has {v:?}, expected an environment variable's name"),
        ));
    }
    for k in &s.receipt.kernels {
        if let Err(e) = globset::Glob::new(k) {
            return Err(err(
                "kernels",
                format!("`receipt.kernels` entry `{k}` is not a valid glob: {e}"),
            ));
        }
    }
    // Chunks at least as long as every token list (or 0, all at once) split nothing: the check
    // would compare the one-shot prefill with itself. (Text prompts' lengths are known only at
    // run time.)
    if s.inputs.prompts.is_empty() && !s.prefill_chunks.is_empty() {
        let longest = s.inputs.tokens.iter().map(Vec::len).max().unwrap_or(0);
        if s.prefill_chunks.iter().all(|&c| c == 0 || c >= longest) {
            return Err(err(
                "prefill_chunks",
                format!("`prefill_chunks` {:?} splits nothing: the longest token list has {longest} tokens, so give a chunk size below that", s.prefill_chunks),
            ));
        }
    }
    Ok(())
}

/// Token ids of `inputs.tokens` outside the model's vocabulary, caught when the scenario is read
/// (one error at the id's line and column) instead of by every check of the run; and a
/// `tolerances.logits.k` past the vocabulary.
pub(super) fn check_token_ids(s: &Scenario, path: &Path, text: &str) -> Result<(), ScenarioError> {
    let Some(n_vocab) = model_vocab(&s.model, path) else {
        return Ok(());
    };
    let mut k = 0;
    for (i, list) in s.inputs.tokens.iter().enumerate() {
        for (j, &t) in list.iter().enumerate() {
            if u64::from(t) >= n_vocab {
                return Err(token_error(path, text, k, format!(
                    "token id `{t}` (`inputs.tokens[{i}][{j}]`) is outside the model's vocabulary: `n_vocab` is {n_vocab}, so ids run from 0 to {}",
                    n_vocab - 1
                )));
            }
            k += 1;
        }
    }
    // A top-k wider than the vocabulary holds every id on both sides: it would always agree.
    let k = s.tolerances.logits.k;
    if k as u64 > n_vocab {
        let (line, column) = locate(text, "k:");
        return Err(ScenarioError {
            path: path.display().to_string(),
            line,
            column,
            message: format!(
                "`tolerances.logits.k` is {k}, more than the model's vocabulary (`n_vocab` {n_vocab}): its top-k would hold every id on both sides and always agree; expected 1 to {n_vocab}"
            ),
        });
    }
    Ok(())
}

/// An error at the `k`-th token id of `inputs.tokens` (0-based, over all lists).
fn token_error(path: &Path, text: &str, k: usize, message: String) -> ScenarioError {
    let (line, column) = locate_number(text, "tokens", k);
    ScenarioError {
        path: path.display().to_string(),
        line,
        column,
        message,
    }
}

/// The 1-based line and column of the `k`-th number (0-based) after the key `key:`, outside
/// comments: the `k`-th token id of `inputs.tokens` in either flow or block form. The key's own
/// position when it has fewer numbers after it.
pub(super) fn locate_number(text: &str, key: &str, k: usize) -> (usize, usize) {
    let (kl, kc) = locate(text, key);
    let mut seen = 0;
    for (ln, line) in text.lines().enumerate().skip(kl - 1) {
        let line = uncommented(line);
        let start = if ln + 1 == kl { kc - 1 + key.len() } else { 0 };
        let bytes = line.as_bytes();
        let mut i = start;
        while i < bytes.len() {
            let boundary =
                i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
            if bytes[i].is_ascii_digit() && boundary {
                if seen == k {
                    return (ln + 1, i + 1);
                }
                seen += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            } else {
                i += 1;
            }
        }
    }
    (kl, kc)
}

/// Most greedy steps a scenario may ask for (each is traced, run by the reference and compared).
pub const MAX_STEPS: usize = 4096;

/// Most threads a scenario or a command line may ask for (each is an OS thread of the engine's
/// pool, and of llama.cpp's).
pub const MAX_THREADS: usize = 256;

pub(super) fn validate(
    s: &Scenario,
    path: &Path,
    err: &dyn Fn(&str, String) -> ScenarioError,
) -> Result<(), ScenarioError> {
    let m = &s.model;
    let sources = [m.preset.is_some(), m.spec.is_some(), m.path.is_some()]
        .iter()
        .filter(|&&b| b)
        .count();
    if let Some(name) = &m.locked {
        if sources != 0 || m.sha256.is_some() || m.blake3.is_some() {
            return Err(err(
                "locked:",
                "`model.locked` names a model of `models.lock`, which holds its URL and hashes: drop `preset`, `spec`, `path`, `sha256` and `blake3`".into(),
            ));
        }
        crate::fetch::resolve_locked(path, name).map_err(|e| err("locked:", e))?;
    } else if sources != 1 {
        return Err(err(
            "model",
            format!("`model` needs exactly one of `preset`, `spec`, `path` (found {sources}), or `locked`: a model of `models.lock`"),
        ));
    }
    if let Some(p) = &m.preset {
        if bitnet_engine::synth::preset(p).is_none() {
            let hint = did_you_mean(p, bitnet_engine::synth::PRESETS.iter().copied())
                .map(|m| format!("; did you mean `{m}`?"))
                .unwrap_or_default();
            return Err(err(
                p,
                format!(
                    "unknown preset `{p}`; presets: {}{hint}",
                    bitnet_engine::synth::PRESETS.join(", ")
                ),
            ));
        }
    }
    if let Some(spec) = &m.spec {
        spec.validate().map_err(|e| err("spec", e.to_string()))?;
    }
    if (m.sha256.is_some() || m.blake3.is_some()) && m.path.is_none() {
        return Err(err(
            "model",
            "`sha256`/`blake3` check a file: they need `path`".into(),
        ));
    }
    for (key, v, len) in [("sha256", &m.sha256, 64), ("blake3", &m.blake3, 64)] {
        if let Some(h) = v {
            if h.len() != len || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(err(
                    key,
                    format!("`{key}` must be {len} hex digits, found `{h}`"),
                ));
            }
        }
    }
    if s.inputs.tokens.is_empty() && s.inputs.prompts.is_empty() {
        return Err(err(
            "inputs",
            "`inputs` needs at least one `tokens` list or `prompts` entry".into(),
        ));
    }
    if let Some(i) = s.inputs.tokens.iter().position(|t| t.is_empty()) {
        return Err(err(
            "tokens",
            format!("`inputs.tokens[{i}]` is empty: give at least one token id"),
        ));
    }
    if !s.generation.greedy {
        return Err(err(
            "greedy",
            "only greedy generation is supported (`greedy: true`): comparisons need determinism"
                .into(),
        ));
    }
    if s.threads == 0 || s.threads > MAX_THREADS {
        return Err(err(
            "threads",
            format!("`threads` is {}, expected 1 to {MAX_THREADS}", s.threads),
        ));
    }
    if !s.kv_cache.is_f32() && s.backends.contains(&super::Backend::Cuda) {
        return Err(err(
            "kv_cache",
            "`kv_cache: f16` runs on the CPU only (the CUDA backend keeps an F32 KV cache): drop `cuda` from `backends` or the `kv_cache` line".into(),
        ));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if s.threads > cores && !s.force_threads {
        return Err(err(
            "threads",
            format!(
                "`threads` is {}, but this machine has {cores} core{}; set `force_threads: true` to oversubscribe anyway",
                s.threads,
                if cores == 1 { "" } else { "s" }
            ),
        ));
    }
    let names: Vec<String> = TracePoint::all(64).iter().map(|p| p.name()).collect();
    let check_glob = |g: &str| -> Result<(), ScenarioError> {
        // The glob as written, else its section (an escaped glob is not found as parsed).
        let at = format!("{g}\npoints");
        let f = PointFilter::new(&[g]).map_err(|e| err(&at, e))?;
        if !names.iter().any(|n| f.matches(n)) {
            // Suggest against the layer-independent form (`blk.*.attn_out`).
            let generic: Vec<String> = TracePoint::all(1)
                .iter()
                .map(|p| p.name().replace("blk.0.", "blk.*."))
                .collect();
            let hint = did_you_mean(g, generic.iter().map(|s| s.as_str()))
                .map(|m| format!("; did you mean `{m}`?"))
                .unwrap_or_default();
            return Err(err(
                &at,
                format!("trace point `{g}` matches no canonical trace point{hint}"),
            ));
        }
        Ok(())
    };
    for g in &s.trace.points {
        check_glob(g)?;
    }
    for (g, t) in &s.tolerances.points {
        check_glob(g)?;
        check_tolerance(t, &|m| err(&format!("{g}\npoints"), m))?;
    }
    check_tolerance(&s.tolerances.default, &|m| err("default", m))?;
    if let Some(t) = &s.tolerances.replay {
        check_tolerance(t, &|m| err("replay", m))?;
    }
    let lt = &s.tolerances.logits;
    if lt.k == 0 {
        return Err(err("k:", "`tolerances.logits.k` must be at least 1".into()));
    }
    for (name, v) in [("kl_max", lt.kl_max), ("kl_mean_max", lt.kl_mean_max)] {
        if let Some(m) = v.and_then(|v| bound_error(name, v)) {
            return Err(err(name, m));
        }
    }
    if let Some(v) = s.receipt.min_decode_tps {
        if !(v.is_finite() && v > 0.0) {
            return Err(err(
                "min_decode_tps",
                format!("`min_decode_tps` is {v}, expected a finite positive number"),
            ));
        }
    }
    if s.trace.points.is_empty() {
        return Err(err(
            "points",
            "`trace.points` is empty: name at least one point (`[\"*\"]` traces them all)".into(),
        ));
    }
    if s.generation.steps > MAX_STEPS {
        return Err(err(
            "steps",
            format!(
                "`generation.steps` is {}, at most {MAX_STEPS} (every step is traced and compared)",
                s.generation.steps
            ),
        ));
    }
    for (name, v) in [
        ("top1_agreement_min", lt.top1_agreement_min),
        ("topk_overlap_min", lt.topk_overlap_min),
    ] {
        if v.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
            return Err(err(name, format!("`{name}` must be between 0 and 1")));
        }
    }
    if let Reference::Command { command } = &s.reference {
        if command.is_empty() {
            return Err(err("command", "`reference.command` needs a program".into()));
        }
    }
    if s.prefill_chunks.contains(&0) && s.prefill_chunks.len() == 1 {
        return Err(err(
            "prefill_chunks",
            "`prefill_chunks: [0]` compares a prefill with itself; add chunk sizes".into(),
        ));
    }
    Ok(())
}

pub(super) fn check_tolerance(
    t: &Tolerance,
    err: &dyn Fn(String) -> ScenarioError,
) -> Result<(), ScenarioError> {
    if let Some(c) = t.cosine_min {
        if !(-1.0..=1.0).contains(&c) {
            return Err(err(format!(
                "`cosine_min` is {c}, expected a value between -1 and 1"
            )));
        }
    }
    for (name, v) in [
        ("rel_l2_max", t.rel_l2_max),
        ("max_abs", t.max_abs),
        ("nmse_max", t.nmse_max),
    ] {
        if let Some(m) = v.and_then(|v| bound_error(name, v)) {
            return Err(err(m));
        }
    }
    Ok(())
}

/// What is wrong with an upper bound `v` of a tolerance field `name`, if anything: it must be a
/// number, not negative, and finite (an infinite bound admits any output, NaN included).
fn bound_error(name: &str, v: f64) -> Option<String> {
    if v.is_nan() || v < 0.0 {
        Some(format!("`{name}` must be a non-negative number"))
    } else if v.is_infinite() {
        Some(format!(
            "`{name}` is infinite: give a finite bound (an infinite one admits any output)"
        ))
    } else {
        None
    }
}

/// Every `*.yaml` under `paths` (files or directories), sorted; `schema.json` is not a scenario.
/// Longest scenario file stem, in bytes (a file name has 255; the receipt's temporary file adds 18).
pub const MAX_STEM_BYTES: usize = 200;

pub fn find_scenarios(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let entries =
                std::fs::read_dir(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))?;
            for e in entries.flatten() {
                let path = e.path();
                if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                    out.push(path);
                }
            }
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(format!("`{}` does not exist", p.display()));
        }
    }
    out.sort();
    // A file named twice is one scenario.
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())));
    // A scenario's run, trials, golden and receipt are all named by its file stem: two files of
    // one stem would share them, one judged on the other's run.
    let mut by_stem: std::collections::HashMap<String, &PathBuf> = std::collections::HashMap::new();
    for p in &out {
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Its receipt's temporary file (`.<stem>.json.XXXXXX.tmp`) must fit a file name.
        if stem.len() > MAX_STEM_BYTES {
            return Err(format!(
                "`{}`: the scenario's name (its file stem) is {} bytes; its receipt, golden and their temporary files are named after it: keep it to {MAX_STEM_BYTES}",
                p.display(),
                stem.len()
            ));
        }
        if let Some(first) = by_stem.insert(stem.clone(), p) {
            return Err(format!(
                "`{}` and `{}` are both scenario `{stem}`: a scenario's trials, golden and receipt are named by its file's stem, so one would be judged on the other's run; rename one",
                first.display(),
                p.display()
            ));
        }
    }
    Ok(out)
}
