//! The CUDA backend: the forward pass of [`crate::forward`] run by the kernels of
//! [`crate::kernels::cuda`] (`bodies.cuh`), compiled at run time by NVRTC and launched through
//! cudarc, with the KV cache and every activation on the device. A trace point's values are
//! copied back only when the tracer asks for that point.
//!
//! The same session also runs on this CPU ([`Target::HostEmulation`]): every launch calls the
//! kernels' host copies instead (one loop over the work items), so the whole pass — launch shapes,
//! buffer layouts, the KV cache, tracing — is tested without a GPU against the CPU engine, bit for
//! bit. Only the launches, device memory and the stream are then left to a GPU.
//!
//! cudarc is built with `dynamic-loading`: the engine builds without a CUDA toolkit, and loads
//! `libcuda` and NVRTC when a session starts. cudarc panics when a library is absent, so
//! [`detect`] looks for them first (`dlopen` through libloading) and every constructor returns a
//! [`CudaError`] saying what is missing. With the `cuda` feature off, the same API returns
//! [`CudaError::NotBuilt`].

mod exec;
#[cfg(feature = "cuda")]
mod gpu;
mod session;

pub use crate::kernels::cuda::KERNEL_IDS;
pub use session::{run_with, CudaSession, Proj as ProjName};

use std::path::PathBuf;

/// Why the CUDA backend cannot run here, or what failed in it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CudaError {
    #[error("this engine was built without the `cuda` feature")]
    NotBuilt,
    #[error("no CUDA driver: {0} not found")]
    NoDriver(String),
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    #[error(
        "no NVRTC library to compile the kernels: {0} not found (and no cached PTX); install \
         the CUDA toolkit's NVRTC or the `nvidia-cuda-nvrtc-cu12` wheel, and point \
         `BITNET_NVRTC` at its `libnvrtc.so.12` when it is not on the library path"
    )]
    NoNvrtc(String),
    #[error("NVRTC could not compile the kernels: {0}")]
    Compile(String),
    #[error("CUDA driver call `{call}` failed: {message}")]
    Driver { call: String, message: String },
    #[error("the CUDA backend does not run {0}")]
    Unsupported(String),
    #[error("{0}")]
    Input(String),
    #[error("PTX cache `{path}`: {message}")]
    Cache { path: String, message: String },
}

/// Where a [`CudaSession`] runs its kernels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The GPU of this ordinal, through cudarc; PTX cached in `ptx_cache` when given.
    Gpu {
        ordinal: usize,
        ptx_cache: Option<PathBuf>,
    },
    /// The kernels' host copies on this CPU (the same source, compiled by the build script): for
    /// tests of the pass without a GPU. Nothing here is a GPU result.
    HostEmulation,
}

/// The device a session runs on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeviceInfo {
    /// The GPU's name (`NVIDIA H200`), or `host emulation` for [`Target::HostEmulation`].
    pub name: String,
    pub ordinal: usize,
    /// `major.minor`.
    pub compute_capability: String,
    pub total_memory_bytes: u64,
    /// The driver's CUDA version (`cuDriverGetVersion`, e.g. `12.8`).
    pub driver_version: String,
    /// NVRTC's version, when it was loaded (a cached PTX needs none).
    pub nvrtc_version: Option<String>,
    /// Peak memory bandwidth from the memory clock and bus width, GB/s (0 when unknown).
    pub peak_bandwidth_gbs: f64,
}

impl DeviceInfo {
    pub(crate) fn host() -> DeviceInfo {
        DeviceInfo {
            name: "host emulation".into(),
            ordinal: 0,
            compute_capability: "none".into(),
            total_memory_bytes: 0,
            driver_version: "none".into(),
            nvrtc_version: None,
            peak_bandwidth_gbs: 0.0,
        }
    }
}

/// What this machine offers the CUDA backend (for `harness preflight`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Detection {
    /// Whether the engine was built with the `cuda` feature.
    pub built: bool,
    /// The driver library loaded (`libcuda.so.1`), or why none.
    pub driver_library: Result<String, String>,
    /// The NVRTC library loaded, or why none.
    pub nvrtc_library: Result<String, String>,
    /// The driver's CUDA version, when the driver loaded.
    pub driver_version: Option<String>,
    /// The devices found, or why none.
    pub devices: Result<Vec<DeviceInfo>, String>,
}

/// Look for the driver, NVRTC and the devices, without creating a context.
pub fn detect() -> Detection {
    #[cfg(feature = "cuda")]
    {
        gpu::detect()
    }
    #[cfg(not(feature = "cuda"))]
    {
        let why = CudaError::NotBuilt.to_string();
        Detection {
            built: false,
            driver_library: Err(why.clone()),
            nvrtc_library: Err(why.clone()),
            driver_version: None,
            devices: Err(why),
        }
    }
}

/// `Ok` with the device when a session on GPU `ordinal` can start here (driver, device, and
/// NVRTC or a cached PTX in `ptx_cache`); the error says what is missing. Creates no context.
pub fn probe(ordinal: usize, ptx_cache: Option<&std::path::Path>) -> Result<DeviceInfo, CudaError> {
    #[cfg(feature = "cuda")]
    {
        gpu::probe(ordinal, ptx_cache)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (ordinal, ptx_cache);
        Err(CudaError::NotBuilt)
    }
}

/// Measured device read bandwidth, GB/s: [`crate::kernels::cuda`]'s `bn_read_sum` over a
/// `bytes` buffer, median of `passes` timed launches (for `harness bench --backend cuda`).
pub fn measure_bandwidth(
    ordinal: usize,
    ptx_cache: Option<&std::path::Path>,
    bytes: usize,
    passes: usize,
) -> Result<f64, CudaError> {
    #[cfg(feature = "cuda")]
    {
        gpu::measure_bandwidth(ordinal, ptx_cache, bytes, passes)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (ordinal, ptx_cache, bytes, passes);
        Err(CudaError::NotBuilt)
    }
}
