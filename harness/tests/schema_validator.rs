//! `scenarios/schema.json` under a standard JSON Schema validator (Python's `jsonschema`,
//! Draft 2020-12 with its format checker): the schema is itself valid, every shipped scenario is
//! valid, and each bad scenario below is invalid there as `load_scenario` finds it invalid
//! (issue 16, friction 9). Skipped, with the reason, where `jsonschema` is not installed
//! (`ci/setup.sh` installs it into `.venv`).

use std::path::{Path, PathBuf};
use std::process::Command;

use bitnet_harness::scenario::{find_scenarios, json_schema, load_scenario};

const BAD: &[(&str, &str)] = &[
    ("preset and spec together", "model:\n  preset: tiny\n  spec: { n_layer: 1 }\ninputs:\n  tokens: [[1]]\n"),
    ("no model source", "model: {}\ninputs:\n  tokens: [[1]]\n"),
    ("unknown preset", "model:\n  preset: tinny\ninputs:\n  tokens: [[1]]\n"),
    ("no inputs", "model:\n  preset: tiny\ninputs:\n  tokens: []\n"),
    ("an empty token list", "model:\n  preset: tiny\ninputs:\n  tokens: [[1], []]\n"),
    ("a negative tolerance", "model:\n  preset: tiny\ninputs:\n  tokens: [[1]]\ntolerances:\n  default: { rel_l2_max: -1 }\n"),
    ("a negative point tolerance", "model:\n  preset: tiny\ninputs:\n  tokens: [[1]]\ntolerances:\n  points:\n    logits: { max_abs: -0.5 }\n"),
    ("top-1 agreement above 1", "model:\n  preset: tiny\ninputs:\n  tokens: [[1]]\ntolerances:\n  logits: { top1_agreement_min: 1.5 }\n"),
    ("n_embd not a multiple of 256", "model:\n  spec: { n_embd: 384 }\ninputs:\n  tokens: [[1]]\n"),
    ("zero threads", "model:\n  preset: tiny\ninputs:\n  tokens: [[1]]\nthreads: 0\n"),
    ("too many steps", "model:\n  preset: tiny\ninputs:\n  tokens: [[1]]\ngeneration: { steps: 5000 }\n"),
    ("a hash without a path", "model:\n  preset: tiny\n  sha256: 0000000000000000000000000000000000000000000000000000000000000000\ninputs:\n  tokens: [[1]]\n"),
    ("a short hash", "model:\n  path: m.gguf\n  blake3: abc\ninputs:\n  tokens: [[1]]\n"),
    ("an unknown field", "model:\n  preset: tiny\ninputs:\n  tokens: [[1]]\nthread: 2\n"),
    ("a token id above u32", "model:\n  preset: tiny\ninputs:\n  tokens: [[4294967296]]\n"),
];

const VALIDATE: &str = r#"
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
v = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
for path in sys.argv[2:]:
    errors = sorted(v.iter_errors(json.load(open(path))), key=lambda e: list(e.path))
    print(path, "ok" if not errors else "invalid: " + "; ".join(e.message for e in errors))
"#;

fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    std::env::var_os("BITNET_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"))
}

#[test]
fn a_standard_validator_accepts_the_shipped_scenarios_and_refuses_the_bad_ones() {
    let py = python();
    let has = Command::new(&py)
        .args(["-c", "import jsonschema"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        eprintln!(
            "skipped: `{}` cannot import `jsonschema` (run ci/setup.sh, or `.venv/bin/python -m pip install jsonschema`)",
            py.display()
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.json");
    std::fs::write(&schema, json_schema()).unwrap();
    // YAML to JSON here (serde_norway, as the harness reads it), so Python needs no YAML parser.
    let mut cases: Vec<(String, PathBuf, bool)> = Vec::new();
    let to_json = |name: &str, yaml: &str| {
        let v: serde_json::Value = serde_norway::from_str(yaml).unwrap();
        let p = dir.path().join(format!("{}.json", name.replace(' ', "_")));
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
        p
    };
    for f in find_scenarios(&[root.join("scenarios")]).unwrap() {
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        let json = to_json(&name, &std::fs::read_to_string(&f).unwrap());
        cases.push((name, json, true));
    }
    for (what, yaml) in BAD {
        // The harness refuses each too: the schema says what the parser says.
        let y = dir.path().join("bad.yaml");
        std::fs::write(&y, yaml).unwrap();
        assert!(
            load_scenario(&y).is_err(),
            "{what}: load_scenario accepts it"
        );
        cases.push((what.to_string(), to_json(what, yaml), false));
    }
    let out = Command::new(&py)
        .args(["-c", VALIDATE])
        .arg(&schema)
        .args(cases.iter().map(|(_, p, _)| p))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), cases.len(), "{stdout}");
    for ((what, _, valid), line) in cases.iter().zip(&lines) {
        let ok = line.ends_with(" ok");
        assert_eq!(ok, *valid, "{what}: {line}");
    }
}

#[test]
fn the_schema_names_presets_has_no_nonstandard_format_and_describes_every_tolerance() {
    let schema: serde_json::Value = serde_json::from_str(&json_schema()).unwrap();
    let defs = &schema["$defs"];
    let presets: Vec<&str> = defs["ModelSource"]["properties"]["preset"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(presets, bitnet_engine::synth::PRESETS);
    assert_eq!(defs["ModelSource"]["oneOf"].as_array().unwrap().len(), 4);
    assert_eq!(defs["ModelSpec"]["properties"]["n_embd"]["multipleOf"], 256);
    fn formats(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(o) => {
                if let Some(f) = o.get("format").and_then(|f| f.as_str()) {
                    out.push(f.to_string());
                }
                o.values().for_each(|v| formats(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| formats(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    formats(&schema, &mut found);
    assert!(found.is_empty(), "nonstandard formats: {found:?}");
    for def in ["Tolerances", "Tolerance", "LogitTolerance"] {
        for (field, p) in defs[def]["properties"].as_object().unwrap() {
            assert!(
                p["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{def}.{field} has no description"
            );
        }
    }
}
