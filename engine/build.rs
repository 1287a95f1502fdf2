//! Compiles the CUDA kernels' bodies (`src/kernels/cuda/bodies.cuh`) for this CPU as a small
//! static library, so their numerics are tested here without a GPU or a CUDA toolkit
//! (`src/kernels/cuda/host.rs`). Needs only a C compiler.

fn main() {
    let dir = "src/kernels/cuda";
    for f in ["bodies.cuh", "host_launch.h", "host.c"] {
        println!("cargo:rerun-if-changed={dir}/{f}");
    }
    cc::Build::new()
        .file(format!("{dir}/host.c"))
        .include(dir)
        .std("c11")
        // The kernels call `fmaf` exactly where the specification fuses; nothing else may be.
        .flag_if_supported("-ffp-contract=off")
        .flag_if_supported("-fno-fast-math")
        .opt_level(2)
        .warnings(true)
        .compile("bitnet_cuda_host");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("windows") {
        println!("cargo:rustc-link-lib=m");
    }
}
