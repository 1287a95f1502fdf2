//! `harness inspect`: a GGUF file's metadata and tensor table; with `--check-arch`, the gate
//! mapper ([`bitnet_engine::arch::check`]): whether every tensor and key maps to the file's
//! architecture.

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
    /// Check that every tensor maps to a role of the file's architecture, every required tensor
    /// is present with its shape and a type the engine reads, and the metadata agrees with
    /// itself. Exit 0 when it maps, [`EXIT_UNMAPPED`] when it does not, [`EXIT_UNKNOWN_ARCH`]
    /// when the architecture is missing or unknown, 2 when the file is not readable GGUF.
    #[arg(long)]
    pub check_arch: bool,
}

/// Exit code of `--check-arch`: the file does not map to its architecture.
pub const EXIT_UNMAPPED: u8 = 30;
/// Exit code of `--check-arch`: the file names no architecture, or one the engine does not run.
pub const EXIT_UNKNOWN_ARCH: u8 = 31;

/// `println!` into the output buffer, which [`super::emit`] writes at the end (a closed pipe
/// ends it quietly: `harness inspect big.gguf | head -1`).
macro_rules! out {
    ($buf:expr) => {
        $buf.push('\n')
    };
    ($buf:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($buf, $($arg)*);
    }};
}

/// `--check-arch`: print the findings; the exit code.
fn check_arch(args: &Args, f: &GgufFile, out: &mut String) -> Result<u8> {
    let findings = bitnet_engine::arch::check(f);
    let arch = f
        .get("general.architecture")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let code = if findings.is_empty() {
        0
    } else if findings.iter().any(|x| x.code.starts_with("architecture-")) {
        EXIT_UNKNOWN_ARCH
    } else {
        EXIT_UNMAPPED
    };
    if args.json {
        let doc = serde_json::json!({
            "file": args.file, "architecture": arch, "maps": findings.is_empty(),
            "findings": findings,
        });
        out!(out, "{}", serde_json::to_string_pretty(&doc)?);
        return Ok(code);
    }
    if findings.is_empty() {
        out!(
            out,
            "{}: maps to `{arch}`: {} tensors, every one in a role, every required one present",
            args.file.display(),
            f.tensors().len()
        );
    } else {
        out!(
            out,
            "{}: does not map to `{arch}` ({} finding{}):",
            args.file.display(),
            findings.len(),
            if findings.len() == 1 { "" } else { "s" }
        );
        for x in &findings {
            out!(out, "  {x}");
        }
    }
    Ok(code)
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

/// The exit code: 0, or with `--check-arch` one of [`EXIT_UNMAPPED`], [`EXIT_UNKNOWN_ARCH`].
pub fn run(args: Args) -> Result<u8> {
    let mut out = String::new();
    let code = render(&args, &mut out)?;
    super::emit(&out)?;
    Ok(code)
}

fn render(args: &Args, out: &mut String) -> Result<u8> {
    let f = GgufFile::open(&args.file).map_err(|e| UsageError(e.to_string()))?;
    if args.check_arch {
        return check_arch(args, &f, out);
    }
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
        out!(out, "{}", serde_json::to_string_pretty(&doc)?);
        return Ok(0);
    }
    out!(
        out,
        "{}: GGUF v{}, {} metadata keys, {} tensors, alignment {}, data at byte {}",
        args.file.display(),
        f.version(),
        f.metadata().len(),
        f.tensors().len(),
        f.alignment(),
        f.data_offset()
    );
    out!(out);
    let kw = f
        .metadata()
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(3)
        .max(3);
    for (k, v) in f.metadata() {
        out!(out, "  {k:kw$}  {:8}  {}", v.type_name(), v.display_short());
    }
    out!(out);
    let nw = f
        .tensors()
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    out!(
        out,
        "  {:nw$}  {:6}  {:>20}  {:>12}  {:>12}",
        "name",
        "type",
        "shape",
        "bytes",
        "offset"
    );
    for t in f.tensors() {
        let shape = format!("{:?}", t.dims);
        out!(
            out,
            "  {:nw$}  {:6}  {:>20}  {:>12}  {:>12}",
            t.name,
            t.ty.name(),
            shape,
            t.n_bytes,
            f.data_offset() + t.offset
        );
    }
    let total: u64 = f.tensors().iter().map(|t| t.n_bytes).sum();
    out!(
        out,
        "\n  {} tensors, {:.2} MB of tensor data",
        f.tensors().len(),
        total as f64 / 1e6
    );
    Ok(0)
}
