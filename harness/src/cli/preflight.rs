//! `harness preflight`: what this machine can run, before running anything: the CPU's features
//! and the engine's kernel variants it runs, the CUDA backend (driver, NVRTC, devices, whether the
//! `cuda` trials run here or why not), and how the linked llama.cpp was built. A table, or
//! `--json`. Always exits 0: it reports, it does not judge.

use std::collections::BTreeMap;

use anyhow::Result;
use bitnet_engine::cuda::{self, Detection};
use bitnet_engine::kernels::Kernel;
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Everything preflight reports (the `--json` form).
#[derive(Debug, Serialize)]
pub struct Preflight {
    pub target_arch: String,
    /// CPU features detected at run time.
    pub cpu_features: Vec<String>,
    /// Kernel variants this CPU runs, slowest first.
    pub kernel_variants: Vec<String>,
    /// The variant runs use (`BITNET_KERNEL`, else the fastest), or the error `BITNET_KERNEL` gives.
    pub kernel_default: Result<String, String>,
    pub cuda: Detection,
    /// `None` when the `cuda` trials run here; else why they are ignored.
    pub cuda_trials_ignored: Option<String>,
    /// Where model loads hold the weights (`BITNET_WEIGHT_PAGES`) and the kernel's THP mode.
    pub weight_pages: String,
    /// Build options of the llama.cpp linked into this binary.
    pub llama_cpp_build_flags: BTreeMap<String, String>,
}

/// What [`bitnet_engine::model::Model::load`] does with the weights here.
fn weight_pages() -> String {
    use bitnet_engine::model::WeightPages;
    let thp = bitnet_engine::gguf::thp_mode();
    match WeightPages::from_env() {
        Ok(WeightPages::Huge) if thp == "never" => {
            "copied, in small pages: transparent huge pages are off here (THP never)".into()
        }
        Ok(WeightPages::Huge) => format!(
            "copied into huge pages (THP {thp}); BITNET_WEIGHT_PAGES=file keeps the file's pages"
        ),
        Ok(WeightPages::File) => "the file's pages (BITNET_WEIGHT_PAGES=file)".into(),
        Err(e) => format!("none: {e}"),
    }
}

pub fn gather() -> Preflight {
    let root = std::env::current_dir().unwrap_or_default();
    Preflight {
        target_arch: std::env::consts::ARCH.into(),
        cpu_features: bitnet_harness::receipt::cpu_features(),
        kernel_variants: Kernel::available()
            .iter()
            .map(|k| k.suffix().to_string())
            .collect(),
        kernel_default: bitnet_engine::kernels::plan::KernelPlan::from_env()
            .map(|forced| forced.map_or(Kernel::best().suffix().to_string(), |(_, label)| label)),
        cuda: cuda::detect(),
        cuda_trials_ignored: bitnet_harness::run::cuda::ignore_reason(&root),
        weight_pages: weight_pages(),
        llama_cpp_build_flags: bitnet_harness::bench::build_flags(),
    }
}

fn either(r: &Result<String, String>) -> String {
    match r {
        Ok(v) => v.clone(),
        Err(e) => format!("none: {e}"),
    }
}

pub fn table(p: &Preflight) -> String {
    let mut rows: Vec<(String, String)> = vec![
        (
            "cpu".into(),
            format!("{}: {}", p.target_arch, p.cpu_features.join(", ")),
        ),
        (
            "kernel variants".into(),
            format!(
                "{} (runs use: {})",
                p.kernel_variants.join(", "),
                either(&p.kernel_default)
            ),
        ),
        ("weights".into(), p.weight_pages.clone()),
        (
            "cuda backend".into(),
            if p.cuda.built {
                "built (cudarc, libraries loaded at run time)".into()
            } else {
                "not built (engine without the `cuda` feature)".into()
            },
        ),
        ("cuda driver".into(), either(&p.cuda.driver_library)),
        (
            "driver version".into(),
            p.cuda
                .driver_version
                .clone()
                .unwrap_or_else(|| "none".into()),
        ),
        ("nvrtc".into(), either(&p.cuda.nvrtc_library)),
    ];
    match &p.cuda.devices {
        Ok(ds) if !ds.is_empty() => {
            for d in ds {
                rows.push((
                    format!("gpu {}", d.ordinal),
                    format!(
                        "{} (compute {}, {:.1} GiB, peak {:.0} GB/s)",
                        d.name,
                        d.compute_capability,
                        d.total_memory_bytes as f64 / (1u64 << 30) as f64,
                        d.peak_bandwidth_gbs
                    ),
                ));
            }
        }
        Ok(_) => rows.push(("gpus".into(), "none".into())),
        Err(e) => rows.push(("gpus".into(), format!("none: {e}"))),
    }
    rows.push((
        "cuda trials".into(),
        match &p.cuda_trials_ignored {
            None => "run here".into(),
            Some(why) => format!("ignored here: {why}"),
        },
    ));
    rows.push((
        "llama.cpp build".into(),
        p.llama_cpp_build_flags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
    ));
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<w$}  {v}\n"))
        .collect()
}

pub fn run(a: Args) -> Result<()> {
    let p = gather();
    if a.json {
        super::emit(&(serde_json::to_string_pretty(&p)? + "\n"))
    } else {
        super::emit(&table(&p))
    }
}
