//! The JSON Schema of scenario files (`scenarios/schema.json`, `harness schema`): schemars'
//! derives, tightened so that editors and standard validators refuse what [`super::load_scenario`]
//! refuses.

use super::Scenario;

/// The JSON Schema of scenario files, as checked in at `scenarios/schema.json`.
pub fn json_schema() -> String {
    let mut schema = schemars::schema_for!(Scenario).to_value();
    tighten(&mut schema);
    // Back to a `Schema`, whose serializer puts `$schema`, `title`, `description` first.
    let schema = schemars::Schema::try_from(schema).expect("an object");
    serde_json::to_string_pretty(&schema).expect("schema serializes") + "\n"
}

/// Formats of JSON Schema 2020-12; schemars' `uint`, `uint32`, `double`... are not among them
/// (ajv's strict mode refuses them), so [`tighten`] drops every other.
const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

fn strip_formats(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            if o.get("format")
                .and_then(|f| f.as_str())
                .is_some_and(|f| !STANDARD_FORMATS.contains(&f))
            {
                o.remove("format");
            }
            o.values_mut().for_each(strip_formats);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_formats),
        _ => {}
    }
}

/// What the derives cannot say, said in the schema so that editors and standard validators
/// refuse what `load_scenario` refuses: one model source (`oneOf`), the preset names (`enum`),
/// bounds on tokens, tolerances and sizes, and no nonstandard `format`.
fn tighten(schema: &mut serde_json::Value) {
    use serde_json::json;
    strip_formats(schema);
    let defs = &mut schema["$defs"];
    let props = |defs: &mut serde_json::Value, def: &str| -> serde_json::Value {
        defs[def]["properties"].take()
    };

    let mut p = props(defs, "ModelSource");
    p["preset"] = json!({
        "description": p["preset"]["description"],
        "type": "string",
        "enum": bitnet_engine::synth::PRESETS,
    });
    p["spec"] = json!({ "description": p["spec"]["description"], "$ref": "#/$defs/ModelSpec" });
    for key in ["path", "locked", "sha256", "blake3"] {
        p[key]["type"] = json!("string");
        if let Some(o) = p[key].as_object_mut() {
            o.remove("default");
        }
    }
    for key in ["sha256", "blake3"] {
        p[key]["pattern"] = json!("^[0-9a-fA-F]{64}$");
    }
    defs["ModelSource"]["properties"] = p;
    defs["ModelSource"]["oneOf"] = json!([
        { "required": ["preset"] },
        { "required": ["spec"] },
        { "required": ["path"] },
        { "required": ["locked"] },
    ]);
    defs["ModelSource"]["dependentRequired"] = json!({ "sha256": ["path"], "blake3": ["path"] });

    let mut p = props(defs, "Inputs");
    p["tokens"]["items"]["minItems"] = json!(1);
    p["tokens"]["items"]["items"]["maximum"] = json!(u32::MAX);
    defs["Inputs"]["properties"] = p;
    defs["Inputs"]["anyOf"] = json!([
        { "required": ["tokens"], "properties": { "tokens": { "minItems": 1 } } },
        { "required": ["prompts"], "properties": { "prompts": { "minItems": 1 } } },
    ]);

    let mut p = props(defs, "Tolerance");
    p["cosine_min"]["minimum"] = json!(-1);
    p["cosine_min"]["maximum"] = json!(1);
    for key in ["rel_l2_max", "max_abs", "nmse_max"] {
        p[key]["minimum"] = json!(0);
    }
    defs["Tolerance"]["properties"] = p;

    let mut p = props(defs, "LogitTolerance");
    for key in ["kl_max", "kl_mean_max"] {
        p[key]["minimum"] = json!(0);
    }
    for key in ["top1_agreement_min", "topk_overlap_min"] {
        p[key]["minimum"] = json!(0);
        p[key]["maximum"] = json!(1);
    }
    p["k"]["minimum"] = json!(1);
    defs["LogitTolerance"]["properties"] = p;

    let mut p = props(defs, "ReceiptRequirements");
    p["min_decode_tps"]["exclusiveMinimum"] = json!(0);
    defs["ReceiptRequirements"]["properties"] = p;

    let mut p = props(defs, "ModelSpec");
    for key in ["n_embd", "n_ff"] {
        p[key]["multipleOf"] = json!(256);
        p[key]["minimum"] = json!(256);
    }
    for key in ["n_layer", "n_head", "n_vocab", "n_ctx"] {
        p[key]["minimum"] = json!(1);
    }
    p["n_head_kv"]["minimum"] = json!(1);
    defs["ModelSpec"]["properties"] = p;
}
