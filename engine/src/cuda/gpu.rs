//! The GPU side of [`super::exec::Exec`], through cudarc: the driver library looked for before
//! cudarc touches it, the kernels compiled by NVRTC from [`crate::kernels::cuda::SOURCE`] (the
//! PTX cached on disk), device memory, copies and launches on the default stream.
//!
//! Untested on hardware in the session that wrote it: no GPU was available. The kernels'
//! numerics are tested on the CPU (`engine/tests/cuda_bodies.rs`), and the whole pass through the
//! same launch code on the host (`Target::HostEmulation`); what remains for a GPU is what this
//! file does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::PushKernelArg;
use cudarc::driver::{result as drv, sys, CudaContext, CudaFunction, CudaStream, LaunchConfig};

use super::exec::{Arg, Buf, Kern};
use super::{CudaError, Detection, DeviceInfo};
use crate::kernels::cuda::SOURCE;

/// NVRTC options that keep the GPU's float operations the specification's: no contraction of
/// `a·b + c` into FMA (the kernels call `fmaf` where the specification fuses), IEEE division and
/// square root, no flush to zero.
const NVRTC_OPTIONS: [&str; 4] = [
    "--fmad=false",
    "--prec-div=true",
    "--prec-sqrt=true",
    "--ftz=false",
];

fn driver_err(call: &str) -> impl Fn(drv::DriverError) -> CudaError + '_ {
    move |e| CudaError::Driver {
        call: call.to_string(),
        message: format!("{e:?}"),
    }
}

/// The driver library, loaded once and kept (cudarc loads it again by name and would panic
/// without it).
fn driver_library() -> Result<String, CudaError> {
    static DRIVER: OnceLock<Result<String, String>> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            let names: &[&str] = if cfg!(windows) {
                &["nvcuda.dll"]
            } else {
                &["libcuda.so.1", "libcuda.so"]
            };
            for name in names {
                // SAFETY: loading the NVIDIA driver library runs its initialisers, which have no
                // preconditions; the handle is kept for the process's life.
                if let Ok(lib) = unsafe { libloading::Library::new(*name) } {
                    std::mem::forget(lib);
                    return Ok(name.to_string());
                }
            }
            Err(names[0].to_string())
        })
        .clone()
        .map_err(CudaError::NoDriver)
}

/// Where NVRTC may be: `BITNET_NVRTC`, the library path, and the `nvidia-cuda-nvrtc-cu12`
/// wheel in a `.venv` of this directory or one above it.
fn nvrtc_candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("BITNET_NVRTC") {
        v.push(PathBuf::from(p));
    }
    for n in [
        "libnvrtc.so",
        "libnvrtc.so.12",
        "libnvrtc.so.11.2",
        "libnvrtc.so.11",
    ] {
        v.push(PathBuf::from(n));
    }
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            let lib = dir.join(".venv/lib");
            let Ok(entries) = std::fs::read_dir(&lib) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e
                    .path()
                    .join("site-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12");
                if p.is_file() {
                    v.push(p);
                }
            }
        }
    }
    v
}

/// NVRTC, loaded once and kept. A library found by path is loaded with `RTLD_GLOBAL`, so cudarc's
/// own load by name (`libnvrtc.so.12`) finds it already in the process.
fn nvrtc_library() -> Result<String, CudaError> {
    static NVRTC: OnceLock<Result<String, String>> = OnceLock::new();
    NVRTC
        .get_or_init(|| {
            for c in nvrtc_candidates() {
                #[cfg(unix)]
                // SAFETY: NVRTC's initialisers have no preconditions; the handle is kept.
                let lib = unsafe {
                    libloading::os::unix::Library::open(
                        Some(&c),
                        libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
                    )
                };
                #[cfg(not(unix))]
                // SAFETY: as above.
                let lib = unsafe { libloading::Library::new(&c) };
                if let Ok(lib) = lib {
                    std::mem::forget(lib);
                    return Ok(c.display().to_string());
                }
            }
            Err("libnvrtc.so.12".to_string())
        })
        .clone()
        .map_err(CudaError::NoNvrtc)
}

fn driver_version() -> Result<String, CudaError> {
    let mut v = 0i32;
    // SAFETY: the driver library is loaded (callers check `driver_library` first).
    unsafe { sys::cuDriverGetVersion(&mut v) }
        .result()
        .map_err(driver_err("cuDriverGetVersion"))?;
    Ok(format!("{}.{}", v / 1000, (v % 1000) / 10))
}

fn nvrtc_version() -> Option<String> {
    nvrtc_library().ok()?;
    let (mut major, mut minor) = (0i32, 0i32);
    // SAFETY: NVRTC is loaded (checked above).
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    (r == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then(|| format!("{major}.{minor}"))
}

/// Initialise the driver (after finding its library) and describe device `ordinal`.
fn device_info(ordinal: usize) -> Result<DeviceInfo, CudaError> {
    driver_library()?;
    drv::init().map_err(|e| CudaError::NoDevice(format!("cuInit failed: {e:?}")))?;
    let count = drv::device::get_count()
        .map_err(|e| CudaError::NoDevice(format!("cuDeviceGetCount failed: {e:?}")))?;
    if ordinal >= count.max(0) as usize {
        return Err(CudaError::NoDevice(format!(
            "device {ordinal} asked for, {count} found"
        )));
    }
    let dev = drv::device::get(ordinal as i32).map_err(driver_err("cuDeviceGet"))?;
    let attr = |a: sys::CUdevice_attribute| -> i64 {
        // SAFETY: `dev` is a valid device of an initialised driver.
        unsafe { drv::device::get_attribute(dev, a) }.map_or(0, |v| v as i64)
    };
    use sys::CUdevice_attribute as A;
    let (major, minor) = (
        attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
        attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
    );
    let clock_khz = attr(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE) as f64;
    let bus_bits = attr(A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH) as f64;
    Ok(DeviceInfo {
        name: drv::device::get_name(dev).map_err(driver_err("cuDeviceGetName"))?,
        ordinal,
        compute_capability: format!("{major}.{minor}"),
        // SAFETY: as above.
        total_memory_bytes: unsafe { drv::device::total_mem(dev) }.map_or(0, |v| v as u64),
        driver_version: driver_version()?,
        nvrtc_version: nvrtc_version(),
        // DDR: two transfers per clock.
        peak_bandwidth_gbs: 2.0 * clock_khz * 1e3 * bus_bits / 8.0 / 1e9,
    })
}

/// See [`super::detect`].
pub(crate) fn detect() -> Detection {
    let driver = driver_library();
    let devices = driver.clone().and_then(|_| {
        drv::init().map_err(|e| CudaError::NoDevice(format!("cuInit failed: {e:?}")))?;
        let n = drv::device::get_count()
            .map_err(|e| CudaError::NoDevice(format!("cuDeviceGetCount failed: {e:?}")))?;
        (0..n.max(0) as usize).map(device_info).collect()
    });
    Detection {
        built: true,
        driver_library: driver.map_err(|e| e.to_string()),
        nvrtc_library: nvrtc_library().map_err(|e| e.to_string()),
        driver_version: driver_library().and_then(|_| driver_version()).ok(),
        devices: devices.map_err(|e| e.to_string()),
    }
}

/// The PTX file for this source, options and architecture under `cache`.
fn ptx_path(cache: &Path, arch: &str) -> PathBuf {
    let mut h = blake3::Hasher::new();
    h.update(SOURCE.as_bytes());
    for o in NVRTC_OPTIONS {
        h.update(o.as_bytes());
    }
    h.update(arch.as_bytes());
    let key = h.finalize().to_hex();
    cache.join(format!("bitnet-kernels-{arch}-{}.ptx", &key[..16]))
}

/// See [`super::probe`].
pub(crate) fn probe(ordinal: usize, cache: Option<&Path>) -> Result<DeviceInfo, CudaError> {
    let info = device_info(ordinal)?;
    let arch = arch_of(&info);
    let cached = cache.is_some_and(|c| ptx_path(c, &arch).is_file());
    if !cached {
        nvrtc_library()?;
    }
    Ok(info)
}

fn arch_of(info: &DeviceInfo) -> String {
    format!("compute_{}", info.compute_capability.replace('.', ""))
}

/// The kernels' PTX for `arch`: from the cache when there, else compiled by NVRTC (and cached).
fn ptx(cache: Option<&Path>, arch: &str) -> Result<cudarc::nvrtc::Ptx, CudaError> {
    if let Some(c) = cache {
        let path = ptx_path(c, arch);
        if let Ok(text) = std::fs::read_to_string(&path) {
            return Ok(cudarc::nvrtc::Ptx::from_src(text));
        }
    }
    nvrtc_library()?;
    let opts = cudarc::nvrtc::CompileOptions {
        fmad: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        ftz: Some(false),
        options: vec![format!("--gpu-architecture={arch}")],
        name: Some("bitnet_bodies.cu".into()),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(SOURCE, opts)
        .map_err(|e| CudaError::Compile(format!("{e:?}")))?;
    if let Some(c) = cache {
        let path = ptx_path(c, arch);
        let fail = |e: std::io::Error| CudaError::Cache {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(c).map_err(fail)?;
        crate::npy::write_atomic(&path, ptx.to_src().as_bytes()).map_err(fail)?;
    }
    Ok(ptx)
}

/// Freed device memory kept for reuse, by rounded size (a forward pass allocates the same sizes
/// every step).
pub(crate) struct Pool {
    ctx: Arc<CudaContext>,
    free: Mutex<HashMap<usize, Vec<u64>>>,
}

fn rounded(bytes: usize) -> usize {
    bytes.max(1).div_ceil(256) * 256
}

impl Pool {
    pub(crate) fn release(&self, addr: u64, bytes: usize) {
        if let Ok(mut f) = self.free.lock() {
            f.entry(rounded(bytes)).or_default().push(addr);
        }
    }

    fn take(&self, bytes: usize) -> Option<u64> {
        self.free.lock().ok()?.get_mut(&rounded(bytes))?.pop()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_err() {
            return;
        }
        if let Ok(f) = self.free.get_mut() {
            for addr in f.drain().flat_map(|(_, v)| v) {
                // SAFETY: allocated by `Gpu::alloc` with `cuMemAlloc`, released to the pool once
                // and freed once, here.
                let _ = unsafe { drv::free_sync(addr) };
            }
        }
    }
}

/// One GPU: its context, the default stream, the loaded kernels, a memory pool.
pub(crate) struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    funcs: Vec<CudaFunction>,
    pool: Arc<Pool>,
    pub(crate) info: DeviceInfo,
}

impl Gpu {
    /// A context on device `ordinal` with the kernels loaded.
    pub(crate) fn open(ordinal: usize, cache: Option<&Path>) -> Result<Gpu, CudaError> {
        let mut info = device_info(ordinal)?;
        let arch = arch_of(&info);
        let ptx = ptx(cache, &arch)?;
        info.nvrtc_version = nvrtc_version();
        let ctx = CudaContext::new(ordinal).map_err(driver_err("cuDevicePrimaryCtxRetain"))?;
        let module = ctx
            .load_module(ptx)
            .map_err(driver_err("cuModuleLoadData"))?;
        let funcs = Kern::ALL
            .iter()
            .map(|k| {
                module
                    .load_function(k.symbol())
                    .map_err(driver_err("cuModuleGetFunction"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Gpu {
            stream: ctx.default_stream(),
            pool: Arc::new(Pool {
                ctx: ctx.clone(),
                free: Mutex::new(HashMap::new()),
            }),
            ctx,
            funcs,
            info,
        })
    }

    fn bind(&self) -> Result<(), CudaError> {
        self.ctx
            .bind_to_thread()
            .map_err(driver_err("cuCtxSetCurrent"))
    }

    pub(crate) fn alloc(&self, bytes: usize) -> Result<Buf, CudaError> {
        self.bind()?;
        let addr = match self.pool.take(bytes) {
            Some(a) => a,
            // SAFETY: the context is current; the size is positive.
            None => {
                unsafe { drv::malloc_sync(rounded(bytes)) }.map_err(driver_err("cuMemAlloc"))?
            }
        };
        // SAFETY: `addr` holds `rounded(bytes)` bytes.
        unsafe { drv::memset_d8_sync(addr, 0, rounded(bytes)) }
            .map_err(driver_err("cuMemsetD8"))?;
        Ok(Buf::gpu(addr, bytes, self.pool.clone()))
    }

    pub(crate) fn write(&self, dst: u64, data: &[u8]) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: the caller checked `dst` has room for `data`.
        unsafe { drv::memcpy_htod_sync(dst, data) }.map_err(driver_err("cuMemcpyHtoD"))
    }

    pub(crate) fn read(&self, src: u64, out: &mut [u8]) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: the caller checked `src` holds `out.len()` bytes. A synchronous copy on the
        // legacy default stream waits for the kernels launched before it.
        unsafe { drv::memcpy_dtoh_sync(out, src) }.map_err(driver_err("cuMemcpyDtoH"))
    }

    pub(crate) fn copy(&self, dst: u64, src: u64, bytes: usize) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: the caller checked both ranges.
        unsafe { drv::memcpy_dtod_sync(dst, src, bytes) }.map_err(driver_err("cuMemcpyDtoD"))
    }

    pub(crate) fn launch(&self, k: Kern, n: u64, args: &[Arg]) -> Result<(), CudaError> {
        self.bind()?;
        let i = Kern::ALL
            .iter()
            .position(|x| *x == k)
            .expect("every kernel is loaded");
        let blocks = if k == Kern::ReadSum {
            // One partial sum per thread: the grid is the launch's, not the buffer's.
            READ_SUM_BLOCKS
        } else {
            n.div_ceil(THREADS as u64).min(1 << 20) as u32
        };
        let mut b = self.stream.launch_builder(&self.funcs[i]);
        b.arg(&n);
        for a in args {
            match a {
                Arg::P(v) | Arg::U(v) => b.arg(v),
                Arg::I(v) => b.arg(v),
                Arg::F(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments follow the kernel's C signature (`Exec::launch`'s contract), and
        // every pointer is a live device buffer with room for this launch.
        unsafe { b.launch(cfg) }.map_err(driver_err("cuLaunchKernel"))?;
        Ok(())
    }

    /// Wait for every launched kernel.
    pub(crate) fn synchronize(&self) -> Result<(), CudaError> {
        self.bind()?;
        self.ctx
            .synchronize()
            .map_err(driver_err("cuCtxSynchronize"))
    }
}

const THREADS: u32 = 256;
const READ_SUM_BLOCKS: u32 = 4096;

/// See [`super::measure_bandwidth`].
pub(crate) fn measure_bandwidth(
    ordinal: usize,
    cache: Option<&Path>,
    bytes: usize,
    passes: usize,
) -> Result<f64, CudaError> {
    let g = Gpu::open(ordinal, cache)?;
    let words = bytes / 8;
    let buf = g.alloc(words * 8)?;
    let partial = g.alloc(READ_SUM_BLOCKS as usize * THREADS as usize * 8)?;
    let run = || g.launch(Kern::ReadSum, words as u64, &[buf.p(), partial.p()]);
    run()?;
    g.synchronize()?;
    let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
    let mut rates = Vec::new();
    for _ in 0..passes.max(1) {
        let start = g
            .ctx
            .new_event(timing)
            .map_err(driver_err("cuEventCreate"))?;
        let end = g
            .ctx
            .new_event(timing)
            .map_err(driver_err("cuEventCreate"))?;
        start
            .record(&g.stream)
            .map_err(driver_err("cuEventRecord"))?;
        run()?;
        end.record(&g.stream).map_err(driver_err("cuEventRecord"))?;
        end.synchronize()
            .map_err(driver_err("cuEventSynchronize"))?;
        let ms = start
            .elapsed_ms(&end)
            .map_err(driver_err("cuEventElapsedTime"))?;
        rates.push((words * 8) as f64 / (ms as f64 / 1e3) / 1e9);
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}
