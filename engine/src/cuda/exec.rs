//! Buffers and launches, on the GPU or on this CPU. A [`Buf`] is an address and a size: device
//! memory from cudarc, or host memory the kernels' host copies write through. A launch names a
//! [`Kern`] (the `bn_*` kernel of `bodies.cuh`), its work-item count and its arguments in the C
//! signature's order; the host path calls the C function, the GPU path launches the PTX one with
//! the same values.

use super::CudaError;
use crate::kernels::cuda::host::ffi;

/// The kernels of `bodies.cuh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kern {
    Q8kQuantize,
    I8sQuantize,
    TqMatmul,
    TqLanes,
    I2sMatmul,
    FloatMatmul,
    RoundF16,
    Embed,
    RmsScale,
    RmsApply,
    RopeNeox,
    AttnScores,
    AttnSoftmax,
    AttnKqv,
    Swiglu,
    Relu2Mul,
    Add,
    Scale,
    /// Launched only on a GPU (the bench's bandwidth measurement).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    ReadSum,
}

impl Kern {
    /// Every kernel, in the order the GPU side loads them.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) const ALL: [Kern; 19] = [
        Kern::Q8kQuantize,
        Kern::I8sQuantize,
        Kern::TqMatmul,
        Kern::TqLanes,
        Kern::I2sMatmul,
        Kern::FloatMatmul,
        Kern::RoundF16,
        Kern::Embed,
        Kern::RmsScale,
        Kern::RmsApply,
        Kern::RopeNeox,
        Kern::AttnScores,
        Kern::AttnSoftmax,
        Kern::AttnKqv,
        Kern::Swiglu,
        Kern::Relu2Mul,
        Kern::Add,
        Kern::Scale,
        Kern::ReadSum,
    ];

    /// The `extern "C"` name in `bodies.cuh`.
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Kern::Q8kQuantize => "bn_q8k_quantize",
            Kern::I8sQuantize => "bn_i8s_quantize",
            Kern::TqMatmul => "bn_tq_matmul",
            Kern::TqLanes => "bn_tq_lanes",
            Kern::I2sMatmul => "bn_i2s_matmul",
            Kern::FloatMatmul => "bn_float_matmul",
            Kern::RoundF16 => "bn_round_f16",
            Kern::Embed => "bn_embed",
            Kern::RmsScale => "bn_rms_scale",
            Kern::RmsApply => "bn_rms_apply",
            Kern::RopeNeox => "bn_rope_neox",
            Kern::AttnScores => "bn_attn_scores",
            Kern::AttnSoftmax => "bn_attn_softmax",
            Kern::AttnKqv => "bn_attn_kqv",
            Kern::Swiglu => "bn_swiglu",
            Kern::Relu2Mul => "bn_relu2_mul",
            Kern::Add => "bn_add",
            Kern::Scale => "bn_scale",
            Kern::ReadSum => "bn_read_sum",
        }
    }
}

/// A kernel argument after the work-item count: a buffer address (`P`, 0 for a null pointer), a
/// `bn_u64`, a `bn_i32` or a `float`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg {
    P(u64),
    U(u64),
    I(i32),
    F(f32),
}

/// Memory a kernel reads or writes.
pub(crate) struct Buf {
    /// Device address, or host address for the host copies.
    pub addr: u64,
    pub bytes: usize,
    mem: Mem,
}

enum Mem {
    /// A host allocation of this many `u64` words (8-byte aligned), freed on drop.
    HostOwned(usize),
    /// Host memory owned elsewhere (the model's weights), read only; the session keeps the
    /// model borrowed for as long as it holds the buffer.
    HostBorrowed,
    #[cfg(feature = "cuda")]
    Gpu(std::sync::Arc<super::gpu::Pool>),
}

impl Buf {
    /// A buffer's address `off` bytes in.
    pub(crate) fn at(&self, off: usize) -> Arg {
        assert!(
            off <= self.bytes,
            "offset {off} past a {}-byte buffer",
            self.bytes
        );
        Arg::P(self.addr + off as u64)
    }

    pub(crate) fn p(&self) -> Arg {
        Arg::P(self.addr)
    }

    #[cfg(feature = "cuda")]
    pub(crate) fn gpu(addr: u64, bytes: usize, pool: std::sync::Arc<super::gpu::Pool>) -> Buf {
        Buf {
            addr,
            bytes,
            mem: Mem::Gpu(pool),
        }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        match &self.mem {
            Mem::HostOwned(words) => {
                // SAFETY: made by `Exec::alloc` from a `Vec<u64>` of exactly `words` length and
                // capacity, forgotten there and freed only here.
                unsafe { drop(Vec::from_raw_parts(self.addr as *mut u64, *words, *words)) };
            }
            Mem::HostBorrowed => {}
            #[cfg(feature = "cuda")]
            Mem::Gpu(pool) => pool.release(self.addr, self.bytes),
        }
    }
}

/// The bytes of a slice of plain values (f32, integers, `BlockQ8K`: no padding, any bits valid).
pub(crate) fn bytes_of<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: the callers pass types without padding bytes; the view covers exactly the slice.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// Where kernels run.
pub(crate) enum Exec {
    Host,
    #[cfg(feature = "cuda")]
    Gpu(super::gpu::Gpu),
}

impl Exec {
    /// `bytes` of zeroed memory.
    pub(crate) fn alloc(&self, bytes: usize) -> Result<Buf, CudaError> {
        match self {
            Exec::Host => {
                let words = bytes.div_ceil(8).max(1);
                let mut v = std::mem::ManuallyDrop::new(vec![0u64; words]);
                debug_assert_eq!(v.capacity(), words);
                Ok(Buf {
                    addr: v.as_mut_ptr() as u64,
                    bytes,
                    mem: Mem::HostOwned(words),
                })
            }
            #[cfg(feature = "cuda")]
            Exec::Gpu(g) => g.alloc(bytes),
        }
    }

    /// A buffer holding a copy of `data`.
    pub(crate) fn upload(&self, data: &[u8]) -> Result<Buf, CudaError> {
        let b = self.alloc(data.len())?;
        self.write(&b, 0, data)?;
        Ok(b)
    }

    /// `data` as a read-only buffer: on the host the bytes themselves (no copy), on the GPU a copy.
    ///
    /// # Safety
    /// On the host the buffer points into `data`: the caller keeps `data` alive and unchanged for
    /// as long as the buffer lives, and no kernel writes to it.
    pub(crate) unsafe fn borrow_or_upload(&self, data: &[u8]) -> Result<Buf, CudaError> {
        match self {
            Exec::Host => Ok(Buf {
                addr: data.as_ptr() as u64,
                bytes: data.len(),
                mem: Mem::HostBorrowed,
            }),
            #[cfg(feature = "cuda")]
            Exec::Gpu(_) => self.upload(data),
        }
    }

    /// Write `data` into `dst` at byte `off`.
    pub(crate) fn write(&self, dst: &Buf, off: usize, data: &[u8]) -> Result<(), CudaError> {
        assert!(off + data.len() <= dst.bytes, "write past the buffer");
        match self {
            Exec::Host => {
                // SAFETY: in bounds (asserted); host buffers are plain memory no reference aliases.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        data.as_ptr(),
                        (dst.addr as *mut u8).add(off),
                        data.len(),
                    )
                };
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Exec::Gpu(g) => g.write(dst.addr + off as u64, data),
        }
    }

    /// Read `out.len()` bytes of `src` from byte `off` (waits for the kernels before it).
    pub(crate) fn read(&self, src: &Buf, off: usize, out: &mut [u8]) -> Result<(), CudaError> {
        assert!(off + out.len() <= src.bytes, "read past the buffer");
        match self {
            Exec::Host => {
                // SAFETY: in bounds (asserted).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        (src.addr as *const u8).add(off),
                        out.as_mut_ptr(),
                        out.len(),
                    )
                };
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Exec::Gpu(g) => g.read(src.addr + off as u64, out),
        }
    }

    /// `n` f32 values of `src` from element `at`.
    pub(crate) fn read_f32(&self, src: &Buf, at: usize, n: usize) -> Result<Vec<f32>, CudaError> {
        let mut v = vec![0f32; n];
        // SAFETY: f32 has no invalid bit patterns; the view covers exactly `v`.
        let bytes = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, n * 4) };
        self.read(src, at * 4, bytes)?;
        Ok(v)
    }

    /// Copy `bytes` from `src` at `src_off` to `dst` at `dst_off`.
    pub(crate) fn copy(
        &self,
        dst: &Buf,
        dst_off: usize,
        src: &Buf,
        src_off: usize,
        bytes: usize,
    ) -> Result<(), CudaError> {
        assert!(dst_off + bytes <= dst.bytes && src_off + bytes <= src.bytes);
        match self {
            Exec::Host => {
                // SAFETY: in bounds (asserted); `copy` allows overlap.
                unsafe {
                    std::ptr::copy(
                        (src.addr as *const u8).add(src_off),
                        (dst.addr as *mut u8).add(dst_off),
                        bytes,
                    )
                };
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Exec::Gpu(g) => g.copy(dst.addr + dst_off as u64, src.addr + src_off as u64, bytes),
        }
    }

    /// Run kernel `k` over `n` work items with `args` (the C signature after `n`).
    ///
    /// # Safety
    /// Every pointer argument is a live buffer's address (or 0 where the kernel allows null)
    /// with room for every element the kernel reads or writes for these `n` and scalars.
    pub(crate) unsafe fn launch(&self, k: Kern, n: u64, args: &[Arg]) -> Result<(), CudaError> {
        if n == 0 {
            return Ok(());
        }
        match self {
            Exec::Host => {
                host_launch(k, n, args);
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Exec::Gpu(g) => g.launch(k, n, args),
        }
    }
}

/// Call the host copy of `k`. Panics when an argument is not of the signature's kind (a bug in the
/// session, not an input error).
unsafe fn host_launch(k: Kern, n: u64, a: &[Arg]) {
    let bad = |i: usize, want: &str| -> ! {
        panic!(
            "kernel `{}` argument {i}: expected {want}, got {:?}",
            k.symbol(),
            a.get(i)
        )
    };
    let p = |i: usize| match a.get(i) {
        Some(Arg::P(v)) => *v,
        _ => bad(i, "a pointer"),
    };
    let u = |i: usize| match a.get(i) {
        Some(Arg::U(v)) => *v,
        _ => bad(i, "a u64"),
    };
    let int = |i: usize| match a.get(i) {
        Some(Arg::I(v)) => *v,
        _ => bad(i, "an i32"),
    };
    let f = |i: usize| match a.get(i) {
        Some(Arg::F(v)) => *v,
        _ => bad(i, "an f32"),
    };
    // SAFETY: the caller's contract (`Exec::launch`): every pointer is a live buffer large enough
    // for this launch.
    unsafe {
        match k {
            Kern::Q8kQuantize => ffi::bn_q8k_quantize(n, p(0) as _, p(1) as _),
            Kern::I8sQuantize => {
                ffi::bn_i8s_quantize(n, p(0) as _, u(1), p(2) as _, p(3) as _, p(4) as _)
            }
            Kern::TqMatmul => {
                ffi::bn_tq_matmul(n, p(0) as _, p(1) as _, u(2), u(3), int(4), p(5) as _)
            }
            Kern::TqLanes => {
                ffi::bn_tq_lanes(n, p(0) as _, p(1) as _, u(2), u(3), int(4), p(5) as _)
            }
            Kern::I2sMatmul => ffi::bn_i2s_matmul(
                n,
                p(0) as _,
                p(1) as _,
                p(2) as _,
                p(3) as _,
                u(4),
                u(5),
                f(6),
                p(7) as _,
                p(8) as _,
            ),
            Kern::FloatMatmul => ffi::bn_float_matmul(
                n,
                p(0) as _,
                p(1) as _,
                u(2),
                u(3),
                int(4),
                int(5),
                p(6) as _,
            ),
            Kern::RoundF16 => ffi::bn_round_f16(n, p(0) as _, p(1) as _),
            Kern::Embed => ffi::bn_embed(n, p(0) as _, p(1) as _, u(2), int(3), p(4) as _),
            Kern::RmsScale => ffi::bn_rms_scale(n, p(0) as _, u(1), f(2), p(3) as _),
            Kern::RmsApply => {
                ffi::bn_rms_apply(n, p(0) as _, p(1) as _, u(2), p(3) as _, p(4) as _)
            }
            Kern::RopeNeox => ffi::bn_rope_neox(n, p(0) as _, u(1), u(2), u(3), p(4) as _),
            Kern::AttnScores => ffi::bn_attn_scores(
                n,
                p(0) as _,
                p(1) as _,
                p(2) as _,
                u(3),
                u(4),
                u(5),
                u(6),
                u(7),
                f(8),
                int(9),
            ),
            Kern::AttnSoftmax => ffi::bn_attn_softmax(n, p(0) as _, u(1), u(2), u(3)),
            Kern::AttnKqv => ffi::bn_attn_kqv(
                n,
                p(0) as _,
                p(1) as _,
                p(2) as _,
                u(3),
                u(4),
                u(5),
                u(6),
                u(7),
                int(8),
            ),
            Kern::Swiglu => ffi::bn_swiglu(n, p(0) as _, p(1) as _, u(2), p(3) as _),
            Kern::Relu2Mul => ffi::bn_relu2_mul(n, p(0) as _, p(1) as _, p(2) as _),
            Kern::Add => ffi::bn_add(n, p(0) as _, p(1) as _),
            Kern::Scale => ffi::bn_scale(n, p(0) as _, f(1)),
            Kern::ReadSum => ffi::bn_read_sum(n, p(0) as _, p(1) as _),
        }
    }
}
