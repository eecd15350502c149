//! Bouncing through a swiotlb pool (target 5), against copying the bytes in
//! and out of a same-sized buffer.
//!
//! The device is direct and coherent (so no cache maintenance is mixed into
//! the figure) and its bus has one window, exactly over the pool: every
//! other buffer lies outside every window, so the translation refuses it
//! with `NoDmaWindow` and the composition bounces it (reason
//! `Unreachable`), which is the path a device whose mask does not reach the
//! buffer takes. Map copies the buffer into a slot, and unmap of a
//! device-owned bidirectional handle copies it back and frees the slot.

use std::hint::black_box;

use dmacap::backend::bounce::Swiotlb;
use dmacap::backend::compose::{Coherent, Composed};
use dmacap::backend::direct::{Direct, DmaWindow, DmaWindows};
use dmacap::platform::IdentityMap;
use dmacap::{Device, DeviceConfig, DmaAddr, DmaBuffer, DmaMask, PhysAddr};

use crate::{identity, leaked_region};

/// The pool: 4 MiB (2048 slots).
pub const POOL_BYTES: usize = 4 << 20;

/// The backend: identity platform, direct translation through the pool's
/// window, coherent, bouncing through a pool of its own.
pub type BounceBackend = Composed<IdentityMap, Direct, Coherent, Swiotlb>;
/// A device on it.
pub type BounceDev = Device<BounceBackend>;

/// A device that can reach only its bounce pool, with a 64-bit mask; the
/// pool has one area per CPU (as Linux's default), at most `areas`.
pub fn bounce_device(areas: usize) -> BounceDev {
    let region = leaked_region(POOL_BYTES);
    let phys = region.as_ptr() as usize as u64;
    // SAFETY: `region` is a fresh heap allocation that is never freed and
    // that nothing else references (it is leaked here and only the pool
    // gets the pointer); on the identity platform it is physically
    // contiguous from its address, and no device exists to be given it.
    let pool = unsafe { Swiotlb::new(region, PhysAddr::new(phys), POOL_BYTES, areas) };
    let window = DmaWindows::single(DmaWindow {
        cpu_start: PhysAddr::new(phys),
        dma_start: DmaAddr::new(phys),
        size: POOL_BYTES as u64,
    });
    Device::new(
        Composed::from_parts(identity(), Direct::new(window), Coherent, pool),
        DeviceConfig::new().dma_mask(DmaMask::bits(64)),
    )
}

/// CPUs of this machine (the pool's default area count).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A page-aligned buffer of `len` bytes, never freed: the buffers bounced
/// here and their memcpy baseline start on a page boundary, so that no copy
/// meets this CPU's slow case of `rep movsb` (destination 8..16 bytes past
/// the source modulo 4096, see BENCHMARKS.md) by accident of `malloc`.
pub fn page_buffer(len: usize) -> &'static mut [u8] {
    let p = leaked_region(len);
    // SAFETY: a fresh, zeroed allocation of `len` bytes that is never freed
    // and is reached only through the slice returned.
    unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), len) }
}

/// One bounced map + unmap: the buffer is copied into a slot at map and
/// back at unmap (bidirectional, device-owned at unmap).
#[inline(always)]
pub fn bounce_cycle<Buf: DmaBuffer<Target = [u8]>>(dev: &BounceDev, buf: Buf) -> Buf {
    let h = match dev.map_bidirectional(buf) {
        Ok(h) => h,
        Err(e) => refused(e.kind()),
    };
    black_box(h.dma_addr());
    // SAFETY: no device exists.
    unsafe { h.unmap() }
}

#[cold]
#[inline(never)]
fn refused(kind: dmacap::MapErrorKind) -> ! {
    panic!("bounce map refused: {kind}")
}

/// The limit: the bytes copied into a same-sized buffer and back.
#[inline(always)]
pub fn memcpy_cycle(buf: &mut [u8], slot: &mut [u8]) {
    slot.copy_from_slice(buf);
    black_box(&mut *slot);
    buf.copy_from_slice(slot);
    black_box(&mut *buf);
}
