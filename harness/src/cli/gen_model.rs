//! `harness gen-model`: write a synthetic model from a spec file or a preset.

use std::path::{Path, PathBuf};

use anyhow::Result;
use bitnet_engine::synth::{self, ModelSpec};

use super::UsageError;

/// Arguments of `harness gen-model`.
#[derive(clap::Args)]
pub struct Args {
    /// A YAML file with a model spec (fields of `ModelSpec`).
    #[arg(long, conflicts_with = "preset", required_unless_present = "preset")]
    pub spec: Option<PathBuf>,
    /// A named preset: tiny, tiny-scales, gqa, tq1, f16, 700m.
    #[arg(long)]
    pub preset: Option<String>,
    /// Where to write the GGUF file.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Read a spec file; errors name the file, line and column.
pub fn load_spec(path: &Path) -> Result<ModelSpec> {
    let text = bitnet_engine::files::read_text_limited(
        path,
        bitnet_engine::files::MAX_TEXT_BYTES,
        "model spec",
    )
    .map_err(|e| UsageError(format!("cannot read `{}`: {e}", path.display())))?;
    // An empty file (or one of comments only) is a YAML null: almost surely a wrong path or an
    // unsaved file, not a request for the default model, which `{}` asks for explicitly.
    if matches!(
        serde_norway::from_str::<serde_norway::Value>(&text),
        Ok(serde_norway::Value::Null)
    ) {
        return Err(UsageError(format!(
            "{}: the spec is empty: give its fields (see `ModelSpec`), or `{{}}` for the default model",
            path.display()
        ))
        .into());
    }
    let parsed = bitnet_harness::bounded::yaml(&text).and_then(|()| serde_norway::from_str(&text));
    let spec: ModelSpec = parsed.map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        UsageError(format!("{}{at}: {e}", path.display()))
    })?;
    spec.validate()
        .map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
    Ok(spec)
}

/// Resolve a preset name; the error lists the presets.
pub fn preset(name: &str) -> Result<ModelSpec> {
    synth::preset(name).ok_or_else(|| {
        UsageError(format!(
            "unknown preset `{name}`; presets: {}",
            synth::PRESETS.join(", ")
        ))
        .into()
    })
}

pub fn run(args: Args) -> Result<()> {
    let spec = match (&args.spec, &args.preset) {
        (Some(p), _) => load_spec(p)?,
        (None, Some(name)) => preset(name)?,
        (None, None) => unreachable!("clap requires one"),
    };
    let bar = indicatif::ProgressBar::new(spec.weight_bytes());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("generating {}", args.output.display()));
    let start = std::time::Instant::now();
    synth::generate(&spec, &args.output, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .map_err(|e| match e {
        // A write error names the output file already.
        synth::SynthError::Write(_) => anyhow::Error::new(e),
        e => anyhow::Error::new(e).context(format!("generating `{}`", args.output.display())),
    })?;
    bar.finish_and_clear();
    let size = std::fs::metadata(&args.output)
        .map(|m| m.len())
        .unwrap_or(0);
    outln!(
        "wrote {} ({:.1} MB, {} layers, n_embd {}, {}) in {:.2} s",
        args.output.display(),
        size as f64 / 1e6,
        spec.n_layer,
        spec.n_embd,
        spec.ternary_type.ggml(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
