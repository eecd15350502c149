//! Batching on the real x86 non-coherent backend (target 3): `clwb` (or
//! `clflushopt`) to clean, `clflushopt` to invalidate, one `mfence` to
//! complete, over real heap memory.
//!
//! One cycle takes every buffer of a set of 64 through map (clean) →
//! `sync_for_cpu` (invalidate) → `sync_for_device` (clean) → unmap of the
//! device-owned handle (invalidate): four passes of line operations. Done
//! one buffer at a time that is four barriers per buffer; in a batch or a
//! scatter-gather list, four per cycle; the limit is the bare instruction
//! loop over the same lines with four fences.

use core::arch::asm;
use core::arch::x86_64::_mm_mfence;

use dmacap::arch::x86_64::{X86CacheOps, X86Flush};
use dmacap::backend::noncoherent::DirectNonCoherent;
use dmacap::batch::Batch;
use dmacap::buffer::LineAligned;
use dmacap::platform::IdentityMap;
use dmacap::{Device, DeviceConfig, DmaMask, FromDevice};

use crate::identity;

/// One 64-byte cache line of bytes.
#[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable, Clone, Copy)]
#[repr(C, align(64))]
pub struct Line(pub [u8; 64]);

// SAFETY: aligned to 64 and 64 bytes long.
unsafe impl LineAligned<typenum::U64> for Line {}

/// A buffer of whole lines.
pub type Buf = Box<[Line]>;

/// The real non-coherent backend on the identity platform.
pub type NcDev = Device<DirectNonCoherent<IdentityMap, X86CacheOps>>;

/// A non-coherent device with the best flush instructions of this CPU.
pub fn nc_device() -> NcDev {
    nc_device_with(X86CacheOps::detect())
}

/// A non-coherent device with the given instructions (`clflush` only, for
/// callgrind, which does not decode `clwb` and `clflushopt`).
pub fn nc_device_with(ops: X86CacheOps) -> NcDev {
    Device::new(
        DirectNonCoherent::new(identity(), ops),
        DeviceConfig::new().dma_mask(DmaMask::bits(64)),
    )
}

/// `n` buffers of `bytes` bytes (a multiple of 64) each.
pub fn buffers(n: usize, bytes: usize) -> Vec<Buf> {
    assert!(bytes.is_multiple_of(64));
    (0..n)
        .map(|_| vec![Line([0x5a; 64]); bytes / 64].into_boxed_slice())
        .collect()
}

/// Each buffer through the whole cycle on its own: four barriers each.
pub fn one_by_one(dev: &NcDev, bufs: &mut [Buf]) {
    for slot in bufs.iter_mut() {
        let b = core::mem::take(slot);
        let h = dev.map_from_device(b).expect("map");
        std::hint::black_box(h.dma_addr());
        // SAFETY: no device exists.
        let h = unsafe { h.sync_for_cpu() };
        let h = h.sync_for_device();
        // SAFETY: no device exists.
        *slot = unsafe { h.unmap() };
    }
}

/// Every step of the cycle in one dynamic batch: four barriers in all.
pub fn batched(dev: &NcDev, bufs: &mut Vec<Buf>) {
    let n = bufs.len();
    let mut maps = Batch::with_capacity(dev, n);
    for b in bufs.drain(..) {
        maps.map_from_device(b).expect("map");
    }
    let handles = maps.flush();
    let mut to_cpu = Batch::with_capacity(dev, n);
    for h in handles {
        std::hint::black_box(h.dma_addr());
        // SAFETY: no device exists.
        unsafe { to_cpu.sync_for_cpu(h) };
    }
    let mut to_dev = Batch::with_capacity(dev, n);
    for h in to_cpu.flush() {
        to_dev.sync_for_device(h);
    }
    let mut unmaps = Batch::with_capacity(dev, n);
    for h in to_dev.flush() {
        // SAFETY: no device exists.
        unsafe { unmaps.unmap_device_owned(h) };
    }
    bufs.extend(unmaps.flush());
}

/// The cycle as one scatter-gather list: four barriers in all.
pub fn scatter_gather(dev: &NcDev, bufs: &mut Vec<Buf>) {
    let sg = dev
        .map_sg::<FromDevice, _, _>(bufs.drain(..))
        .unwrap_or_else(|_| panic!("map_sg"));
    std::hint::black_box(sg.len());
    // SAFETY: no device exists.
    let sg = unsafe { sg.sync_for_cpu() };
    let sg = sg.sync_for_device();
    // SAFETY: no device exists.
    bufs.extend(unsafe { sg.unmap() });
}

/// The instructions of the raw loop: what [`X86CacheOps::detect`] picks.
#[derive(Debug, Clone, Copy)]
pub struct RawOps {
    /// The clean instruction.
    pub clean: X86Flush,
    /// The invalidate instruction.
    pub invalidate: X86Flush,
}

impl RawOps {
    /// The same instructions as the backend.
    pub fn detect() -> Self {
        let ops = X86CacheOps::detect();
        Self {
            clean: ops.clean_flavor(),
            invalidate: ops.invalidate_flavor(),
        }
    }
}

/// One flush instruction on the line at `p`.
///
/// # Safety
///
/// `p` points into mapped memory, and the CPU has the instruction.
#[inline(always)]
unsafe fn line_op(op: X86Flush, p: *const u8) {
    // SAFETY: `p` is mapped (caller), so the instruction does not fault; a
    // flush writes back and/or drops a line without changing any byte.
    // (`_mm_clwb` and `_mm_clflushopt` are not stable intrinsics, hence the
    // same one-instruction `asm!` as dmacap's backend.)
    unsafe {
        match op {
            X86Flush::Clwb => {
                asm!("clwb byte ptr [{0}]", in(reg) p, options(nostack, preserves_flags))
            }
            X86Flush::Clflushopt => {
                asm!("clflushopt byte ptr [{0}]", in(reg) p, options(nostack, preserves_flags))
            }
            X86Flush::Clflush => {
                asm!("clflush byte ptr [{0}]", in(reg) p, options(nostack, preserves_flags))
            }
        }
    }
}

/// One pass of `op` over every line of every buffer, then one `mfence`.
#[inline(always)]
fn pass(op: X86Flush, bufs: &[Buf]) {
    for b in bufs {
        for line in b.iter() {
            // SAFETY: the line is live heap memory; `op` came from CPUID
            // (`RawOps::detect`).
            unsafe { line_op(op, line.0.as_ptr()) };
        }
    }
    // A safe function since Rust 1.87 (SSE2 is part of x86_64), unsafe before.
    #[allow(unused_unsafe)]
    // SAFETY: `mfence` is part of SSE2, which every x86_64 CPU has.
    unsafe {
        _mm_mfence()
    };
}

/// The line-operation limit of one cycle: clean, invalidate, clean,
/// invalidate over every line, each pass completed by one fence.
pub fn raw_limit(ops: RawOps, bufs: &[Buf]) {
    pass(ops.clean, bufs);
    pass(ops.invalidate, bufs);
    pass(ops.clean, bufs);
    pass(ops.invalidate, bufs);
}
