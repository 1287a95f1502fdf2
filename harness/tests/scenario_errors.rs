//! A table of scenario mistakes, each with the file:line:col and the message it must produce;
//! the checked-in JSON Schema is current; every shipped scenario names it.

use std::path::Path;

use bitnet_harness::scenario::{json_schema, load_scenario};

const GOOD: &str = "description: ok\nmodel:\n  preset: tiny\ninputs:\n  tokens:\n    - [1, 2, 3]\n";

fn error_of(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    match load_scenario(&path) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e
            .to_string()
            .replace(&path.display().to_string(), "bad.yaml"),
    }
}

#[test]
fn the_good_scenario_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("good.yaml");
    std::fs::write(&path, GOOD).unwrap();
    let s = load_scenario(&path).unwrap();
    assert_eq!(s.stem, "good");
    assert_eq!(s.scenario.threads, 2);
    assert!(s.scenario.golden);
    // More threads than cores only when forced.
    std::fs::write(&path, format!("{GOOD}threads: 256\nforce_threads: true\n")).unwrap();
    let s = load_scenario(&path).unwrap();
    assert_eq!((s.scenario.threads, s.scenario.force_threads), (256, true));
    // A byte-order mark (some editors write one) is not part of the YAML.
    std::fs::write(&path, format!("\u{feff}{GOOD}")).unwrap();
    assert_eq!(load_scenario(&path).unwrap().scenario.threads, 2);
    // A byte that is not UTF-8 is placed; the file has no `:0:0`.
    let mut bytes = GOOD.as_bytes().to_vec();
    bytes.extend_from_slice(b"# caf\xe9\n");
    std::fs::write(&path, bytes).unwrap();
    let e = load_scenario(&path).unwrap_err().to_string();
    let lines = GOOD.lines().count();
    assert!(
        e.ends_with(&format!(
            "good.yaml: cannot read the file: not UTF-8 text: the byte at line {}, column 6 is not UTF-8",
            lines + 1
        )),
        "{e}"
    );
}

#[test]
fn mistakes_name_file_line_column_and_the_fix() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "misspelt top-level field",
            "descripton: x\nmodel:\n  preset: tiny\ninputs:\n  tokens: [[1]]\n",
            &[
                "bad.yaml:1:1",
                "unknown field `descripton`",
                "did you mean `description`?",
            ],
        ),
        (
            "misspelt nested field",
            "model:\n  presett: tiny\ninputs:\n  tokens: [[1]]\n",
            &[
                "bad.yaml:2:3",
                "unknown field `presett`",
                "did you mean `preset`?",
            ],
        ),
        (
            "wrong type",
            &format!("{GOOD}threads: two\n"),
            &[
                "bad.yaml:7:10",
                "invalid type: string \"two\", expected a whole number (0 or more)",
            ],
        ),
        (
            "a negative count",
            &format!("{GOOD}generation:\n  steps: -1\n"),
            &["bad.yaml:8:10", "expected a whole number (0 or more)"],
        ),
        (
            "a word for a tolerance",
            &format!("{GOOD}tolerances:\n  default: {{ max_abs: small }}\n"),
            &["bad.yaml:", "expected a number"],
        ),
        (
            "missing model",
            "inputs:\n  tokens: [[1]]\n",
            &["bad.yaml:1:1", "missing field `model`"],
        ),
        (
            "two model sources",
            "model:\n  preset: tiny\n  path: m.gguf\ninputs:\n  tokens: [[1]]\n",
            &[
                "bad.yaml:1:1",
                "exactly one of `preset`, `spec`, `path` (found 2)",
            ],
        ),
        (
            "unknown preset",
            "model:\n  preset: tinny\ninputs:\n  tokens: [[1]]\n",
            &[
                "bad.yaml:2:11",
                "unknown preset `tinny`",
                "did you mean `tiny`?",
            ],
        ),
        (
            "misspelt trace point",
            &format!("{GOOD}trace:\n  points: [\"blk.*.atn_out\"]\n"),
            &[
                "bad.yaml:8:13",
                "matches no canonical trace point",
                "did you mean `blk.*.attn_out`?",
            ],
        ),
        (
            "a top-level key given twice",
            &format!("{GOOD}generation:\n  steps: 1\ngolden: false\ngeneration:\n  steps: 2\n"),
            &["bad.yaml:10:1", "the key `generation` appears twice"],
        ),
        (
            "a nested key given twice",
            "description: ok\nmodel:\n  preset: tiny\n  preset: gqa\ninputs:\n  tokens: [[1]]\n",
            &["bad.yaml:4:3", "the key `preset` appears twice"],
        ),
        (
            "a backend named twice",
            &format!("{GOOD}backends: [cpu, cpu]\n"),
            &["bad.yaml:7:1", "`backends[1]` names `cpu` again"],
        ),
        (
            // Written with a YAML escape, the glob is not in the text as parsed: its section is.
            "escaped bad glob",
            &format!("{GOOD}trace:\n  points: [\"blk.\\u005b.q\"]\n"),
            &["bad.yaml:8:3", "bad trace point glob `blk.[.q`"],
        ),
        (
            "escaped unknown tolerance point",
            &format!("{GOOD}tolerances:\n  points:\n    \"l\\x6Fgit\": {{ max_abs: 1.0 }}\n"),
            &["bad.yaml:8:3", "`logit` matches no canonical trace point"],
        ),
        (
            "no inputs",
            "model:\n  preset: tiny\ninputs: {}\n",
            &["bad.yaml:3:1", "needs at least one `tokens` list"],
        ),
        (
            "empty token list",
            "model:\n  preset: tiny\ninputs:\n  tokens: [[1], []]\n",
            &["bad.yaml:4:3", "`inputs.tokens[1]` is empty"],
        ),
        (
            "sampling instead of greedy",
            &format!("{GOOD}generation:\n  steps: 4\n  greedy: false\n"),
            &["bad.yaml:9:3", "only greedy generation"],
        ),
        (
            "bad sha256",
            "model:\n  path: m.gguf\n  sha256: xyz\ninputs:\n  tokens: [[1]]\n",
            &[
                "bad.yaml:3:3",
                "`sha256` must be 64 hex digits, found `xyz`",
            ],
        ),
        (
            "hash without a path",
            "model:\n  preset: tiny\n  blake3: abc\ninputs:\n  tokens: [[1]]\n",
            &["bad.yaml:1:1", "need `path`"],
        ),
        (
            "cosine out of range",
            &format!("{GOOD}tolerances:\n  default: {{ cosine_min: 2.0 }}\n"),
            &["bad.yaml:8:3", "`cosine_min` is 2"],
        ),
        (
            "tolerance for an unknown point",
            &format!("{GOOD}tolerances:\n  points:\n    logit: {{ max_abs: 1.0 }}\n"),
            &[
                "bad.yaml:9:5",
                "`logit` matches no canonical trace point",
                "did you mean `logits`?",
            ],
        ),
        (
            "unknown backend",
            &format!("{GOOD}backends: [tpu]\n"),
            &[
                "bad.yaml:7:12",
                "unknown variant `tpu`",
                "expected `cpu` or `cuda`",
            ],
        ),
        (
            "unknown reference",
            &format!("{GOOD}reference: llama\n"),
            &[
                "bad.yaml:7:12",
                "`reference` must be `llama.cpp`, `none` or",
            ],
        ),
        (
            "empty reference command",
            &format!("{GOOD}reference:\n  command: []\n"),
            &["bad.yaml:8:3", "needs a program"],
        ),
        (
            "invalid YAML",
            "model: {preset: tiny\ninputs:\n  tokens: [[1]]\n",
            &["bad.yaml:", "did not find expected"],
        ),
        (
            "zero threads",
            &format!("{GOOD}threads: 0\n"),
            &["bad.yaml:7:1", "`threads` is 0, expected 1 to 256"],
        ),
        (
            "more threads than this machine has cores",
            &format!("{GOOD}threads: 256\n"),
            &[
                "bad.yaml:7:1",
                "`threads` is 256, but this machine has",
                "set `force_threads: true`",
            ],
        ),
        (
            "bad model spec",
            "model:\n  spec: { n_embd: 100 }\ninputs:\n  tokens: [[1]]\n",
            &["bad.yaml:2:3", "`n_embd` is 100"],
        ),
        (
            "NaN logits bound (would disable the check)",
            &format!("{GOOD}tolerances:\n  logits: {{ kl_max: .nan }}\n"),
            &["bad.yaml:", "`kl_max` must be a non-negative number"],
        ),
        (
            "infinite logits bound (would disable the check)",
            &format!("{GOOD}tolerances:\n  logits: {{ kl_mean_max: .inf }}\n"),
            &[
                "bad.yaml:",
                "`kl_mean_max` is infinite: give a finite bound",
            ],
        ),
        (
            "infinite point bound (any output would pass)",
            &format!("{GOOD}tolerances:\n  points:\n    'blk.*.q': {{ rel_l2_max: .inf }}\n"),
            &["bad.yaml:", "`rel_l2_max` is infinite: give a finite bound"],
        ),
        (
            "negative decode floor",
            &format!("{GOOD}receipt:\n  min_decode_tps: -1\n"),
            &[
                "bad.yaml:",
                "`min_decode_tps` is -1, expected a finite positive number",
            ],
        ),
        (
            "NaN decode floor",
            &format!("{GOOD}receipt:\n  min_decode_tps: .nan\n"),
            &["bad.yaml:", "expected a finite positive number"],
        ),
        (
            "no trace points",
            &format!("{GOOD}trace:\n  points: []\n"),
            &["bad.yaml:", "`trace.points` is empty"],
        ),
        (
            "nesting 50,000 levels deep (slow to parse)",
            &format!("{GOOD}x: {}\n", "[".repeat(50_000)),
            &["bad.yaml:7:", "nested deeper than 64 levels"],
        ),
        (
            "a logits top-k wider than the preset's vocabulary",
            "model:\n  preset: tiny\ninputs:\n  tokens: [[1, 2]]\ntolerances:\n  logits:\n    k: 513\n",
            &[
                "bad.yaml:7:5",
                "`tolerances.logits.k` is 513, more than the model's vocabulary (`n_vocab` 512)",
            ],
        ),
        (
            "token id out of the preset's vocabulary (flow lists)",
            "model:\n  preset: tiny\ninputs:\n  tokens: [[1, 2], [3, 512]]\n",
            &[
                "bad.yaml:4:24",
                "token id `512` (`inputs.tokens[1][1]`) is outside the model's vocabulary",
                "`n_vocab` is 512, so ids run from 0 to 511",
            ],
        ),
        (
            "token id out of the preset's vocabulary (block lists, a comment with digits)",
            "model:\n  preset: tiny\ninputs:\n  tokens: # ids 7 8\n    - [1, 2]\n    - [3, 600]\n",
            &["bad.yaml:6:11", "token id `600` (`inputs.tokens[1][1]`)"],
        ),
        (
            "token id out of an inline spec's vocabulary",
            "model:\n  spec: { n_vocab: 300 }\ninputs:\n  tokens: [[299, 300]]\n",
            &["bad.yaml:4:18", "token id `300`", "`n_vocab` is 300"],
        ),
        (
            "a name with a control character",
            &format!("name: \"a\\u0000b\"\n{GOOD}"),
            &["bad.yaml:1:1", "`name` is \"a\\0b\", expected a label of 1 to 200 characters"],
        ),
        (
            "an empty prompt",
            "model:\n  preset: tiny\ninputs:\n  prompts: [\"hi\", \"\"]\n",
            &["bad.yaml:4:3", "`inputs.prompts[1]` is empty"],
        ),
        (
            "prompts without a vocabulary",
            "model:\n  spec: { tokenizer: none }\ninputs:\n  prompts: [\"hi\"]\n",
            &["bad.yaml:4:3", "the spec has `tokenizer: none`"],
        ),
        (
            "no backend",
            &format!("{GOOD}backends: []\n"),
            &["`backends` is empty"],
        ),
        (
            "an empty reference program",
            &format!("{GOOD}reference:\n  command: [\"\", x]\n"),
            &["`reference.command` starts with an empty program name"],
        ),
        (
            "an empty environment variable name",
            &format!("{GOOD}skip_unless:\n  env: [\"\"]\n"),
            &["`skip_unless.env` has \"\", expected an environment variable's name"],
        ),
        (
            "a kernel glob that does not compile",
            &format!("{GOOD}receipt:\n  kernels: [\"[\"]\n"),
            &["`receipt.kernels` entry `[` is not a valid glob"],
        ),
        (
            "prefill chunks that split nothing",
            "model:\n  preset: tiny\ninputs:\n  tokens: [[1, 2, 3]]\nprefill_chunks: [0, 3, 100000]\n",
            &["bad.yaml:5:1", "`prefill_chunks` [0, 3, 100000] splits nothing: the longest token list has 3 tokens"],
        ),
        (
            "a YAML tag",
            &format!("{GOOD}generation:\n  steps: !foo 2\n"),
            &["the tag `!foo` means nothing here"],
        ),
        (
            "a key given twice in a map (the last would win silently)",
            "model:\n  preset: tiny\ninputs:\n  tokens: [[1]]\ntolerances:\n  points:\n    logits: { rel_l2_max: 0.5 }\n    blk.*: { rel_l2_max: 0.1 }\n    logits: { rel_l2_max: 0.001 }\n",
            &[
                "bad.yaml:9:5",
                "tolerances.points: the key `logits` appears twice in one mapping",
            ],
        ),
        (
            "unbounded steps",
            &format!("{GOOD}generation:\n  steps: 9223372036854775807\n"),
            &["bad.yaml:", "at most 4096"],
        ),
    ];
    assert!(cases.len() >= 12);
    for (what, yaml, parts) in cases {
        let e = error_of(yaml);
        for p in *parts {
            assert!(e.contains(p), "{what}: `{e}` lacks `{p}`");
        }
        for rust in ["usize", "u32", "u64", "f64", "f32"] {
            assert!(
                !e.contains(&format!("expected {rust}")),
                "{what}: `{e}` says `{rust}`"
            );
        }
    }
}

#[test]
fn the_checked_in_schema_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let on_disk = std::fs::read_to_string(root.join("scenarios/schema.json")).unwrap_or_default();
    assert!(
        on_disk == json_schema(),
        "scenarios/schema.json is stale: regenerate it with `cargo run -p bitnet-harness --bin harness -- schema > scenarios/schema.json`"
    );
}

#[test]
fn every_shipped_scenario_names_the_schema_and_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let files = bitnet_harness::scenario::find_scenarios(&[root.join("scenarios")]).unwrap();
    assert!(files.len() >= 8);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=./schema.json\n"),
            "{} does not start with the $schema comment",
            f.display()
        );
        let s = load_scenario(&f).unwrap();
        assert!(
            text.lines().nth(1).is_some_and(|l| l.starts_with("# ")),
            "{}: say what it guards",
            f.display()
        );
        assert!(!s.scenario.description.is_empty());
    }
}

#[test]
fn token_ids_are_checked_against_a_gguf_files_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    let spec = bitnet_engine::synth::ModelSpec {
        n_vocab: 300,
        ..bitnet_engine::synth::preset("tiny").unwrap()
    };
    bitnet_engine::synth::generate(&spec, &dir.path().join("m.gguf"), &mut |_, _| {}).unwrap();
    let path = dir.path().join("bad.yaml");
    let yaml = "model:\n  path: m.gguf\ninputs:\n  tokens: [[1, 299], [300]]\n";
    std::fs::write(&path, yaml).unwrap();
    let e = load_scenario(&path).unwrap_err().to_string();
    assert!(
        e.contains(":4:23: token id `300` (`inputs.tokens[1][0]`)"),
        "{e}"
    );
    assert!(e.contains("`n_vocab` is 300"), "{e}");
    std::fs::write(&path, yaml.replace("[300]", "[299]")).unwrap();
    load_scenario(&path).unwrap();
}

/// A token list and its greedy steps must fit the model's context (the tiny preset's
/// `context_length` is 512): 509 + 3 fits exactly, 510 + 3 does not; a spec's `n_ctx` and a
/// GGUF file's `context_length` count the same way.
#[test]
fn a_prompt_and_its_steps_must_fit_the_models_context() {
    let ids = |n: usize| {
        (0..n)
            .map(|i| (i % 500).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let scenario = |model: &str, n: usize, steps: usize| {
        format!(
            "model:\n  {model}\ninputs:\n  tokens:\n    - [1, 2]\n    - [{}]\ngeneration:\n  steps: {steps}\n",
            ids(n)
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fits.yaml");
    std::fs::write(&path, scenario("preset: tiny", 509, 3)).unwrap();
    load_scenario(&path).unwrap();
    let e = error_of(&scenario("preset: tiny", 510, 3));
    assert!(
        e.starts_with("bad.yaml:6:8: `inputs.tokens[1]` has 510 tokens and `generation.steps` is 3: 513 positions, more than the model's context (`context_length` 512)"),
        "{e}"
    );
    let spec = "spec: { n_ctx: 16 }";
    std::fs::write(&path, scenario(spec, 10, 6)).unwrap();
    load_scenario(&path).unwrap();
    let e = error_of(&scenario(spec, 10, 7));
    assert!(
        e.contains("17 positions, more than the model's context (`context_length` 16)"),
        "{e}"
    );
    // A GGUF file's own `context_length`.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["gen-model", "--preset", "tiny", "--output"])
        .arg(dir.path().join("m.gguf"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, scenario("path: m.gguf", 600, 0)).unwrap();
    let e = load_scenario(&bad).unwrap_err().to_string();
    assert!(
        e.contains("600 positions, more than the model's context (`context_length` 512)"),
        "{e}"
    );
}

/// A text prompt's length is known only once tokenized: the run holds it to the context as the
/// loader holds token lists, and fails the engine check naming the prompt, instead of running
/// positions past `context_length`.
#[test]
fn a_text_prompt_past_the_context_fails_the_run_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("scenarios")).unwrap();
    let scenario = |prompt: &str| {
        format!(
            "model:\n  spec: {{ n_ctx: 16 }}\ninputs:\n  prompts: [{prompt:?}]\ngeneration:\n  steps: 2\nreference: none\n"
        )
    };
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
            .args(["run", "--filter", "engine", "--root"])
            .arg(d)
            .arg(d.join("scenarios"))
            .output()
            .unwrap()
    };
    // 360 bytes of varied text: far more than 14 tokens in a 512-token vocabulary.
    let long = "the quick brown fox jumps over a lazy dog; 0123456789 ".repeat(7);
    std::fs::write(d.join("scenarios/p.yaml"), scenario(&long)).unwrap();
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("p ") && l.contains(" engine ") && l.contains(" FAIL ")),
        "{text}"
    );
    assert!(
        text.contains("`inputs.prompts[0]` is ")
            && text.contains("`generation.steps` is 2: ")
            && text.contains("more than the model's context (`context_length` 16)"),
        "{text}"
    );
    std::fs::write(d.join("scenarios/p.yaml"), scenario("hi")).unwrap();
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
