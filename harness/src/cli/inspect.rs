//! `harness inspect`: a GGUF file's metadata and tensor table.

use std::path::PathBuf;

use anyhow::Result;
use bitnet_engine::gguf::{GgufFile, Value};

use super::UsageError;

/// Arguments of `harness inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file.
    pub file: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

fn value_json(v: &Value) -> serde_json::Value {
    use serde_json::json;
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => json!(x),
        Value::F64(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(a) => serde_json::Value::Array(a.values.iter().map(value_json).collect()),
    }
}

pub fn run(args: Args) -> Result<()> {
    let f = GgufFile::open(&args.file).map_err(|e| UsageError(e.to_string()))?;
    if args.json {
        let meta: serde_json::Map<String, serde_json::Value> = f
            .metadata()
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    serde_json::json!({ "type": v.type_name(), "value": value_json(v) }),
                )
            })
            .collect();
        let tensors: Vec<serde_json::Value> = f
            .tensors()
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name, "type": t.ty.name(), "shape": t.dims,
                    "bytes": t.n_bytes, "offset": f.data_offset() + t.offset,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "file": args.file, "version": f.version(), "alignment": f.alignment(),
            "data_offset": f.data_offset(), "metadata": meta, "tensors": tensors,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{}: GGUF v{}, {} metadata keys, {} tensors, alignment {}, data at byte {}",
        args.file.display(),
        f.version(),
        f.metadata().len(),
        f.tensors().len(),
        f.alignment(),
        f.data_offset()
    );
    println!();
    let kw = f
        .metadata()
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(3)
        .max(3);
    for (k, v) in f.metadata() {
        println!("  {k:kw$}  {:8}  {}", v.type_name(), v.display_short());
    }
    println!();
    let nw = f
        .tensors()
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "  {:nw$}  {:6}  {:>20}  {:>12}  {:>12}",
        "name", "type", "shape", "bytes", "offset"
    );
    for t in f.tensors() {
        let shape = format!("{:?}", t.dims);
        println!(
            "  {:nw$}  {:6}  {:>20}  {:>12}  {:>12}",
            t.name,
            t.ty.name(),
            shape,
            t.n_bytes,
            f.data_offset() + t.offset
        );
    }
    let total: u64 = f.tensors().iter().map(|t| t.n_bytes).sum();
    println!(
        "\n  {} tensors, {:.2} MB of tensor data",
        f.tensors().len(),
        total as f64 / 1e6
    );
    Ok(())
}
