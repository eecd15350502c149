//! Direct mapping for a device that does not snoop the CPU's caches: every
//! hand-over is paired with cache maintenance, issued per buffer and
//! completed once per flush.
//!
//! The maintenance follows Linux's arm64 rules for every architecture:
//!
//! | hand-over | `ToDevice` | `FromDevice` | `Bidirectional` |
//! |---|---|---|---|
//! | map, `sync_for_device` | clean | clean | clean |
//! | `sync_for_cpu`, unmap of a device-owned handle | nothing | invalidate | invalidate |
//!
//! where invalidate cleans and invalidates the partial first and last lines
//! (see [`crate::arch`]). Which instructions do it is the [`CacheMaintenance`]
//! parameter: `arch::x86_64::X86CacheOps`, `arch::aarch64::Aarch64CacheOps`
//! (each compiled on its own architecture), or the simulated write-back
//! cache of the `sim` module.

use crate::addr::{DmaAddr, PhysAddr};
use crate::arch::{CacheMaintenance, CacheRange};
use crate::backend::direct::{DmaWindows, direct_map};
use crate::backend::{Backend, MapRequest, Mapping, SyncRange};
use crate::device::DeviceContext;
use crate::direction::DmaDirection;
use crate::error::MapErrorKind;
use crate::platform::PhysLookup;

/// The direct, non-coherent backend: DMA addresses through bus windows (as
/// [`DirectCoherent`](crate::backend::direct::DirectCoherent)), coherence by
/// cache maintenance `C`.
///
/// Handles carry the physical address (maintenance by physical address
/// needs it, and it is never looked up again) and no other state. Unmap
/// itself does nothing: the CPU-side invalidate it needs is the
/// `sync_for_cpu` the handle issues first.
#[derive(Debug, Clone)]
pub struct DirectNonCoherent<P, C> {
    platform: P,
    windows: DmaWindows,
    cache: C,
}

impl<P: PhysLookup, C: CacheMaintenance> DirectNonCoherent<P, C> {
    /// DMA addresses equal to physical addresses; coherence by `cache`.
    pub fn new(platform: P, cache: C) -> Self {
        Self::with_windows(platform, DmaWindows::identity(), cache)
    }

    /// DMA addresses through `windows`; coherence by `cache`.
    pub fn with_windows(platform: P, windows: DmaWindows, cache: C) -> Self {
        Self {
            platform,
            windows,
            cache,
        }
    }

    /// The bus windows.
    pub fn windows(&self) -> &DmaWindows {
        &self.windows
    }

    /// The cache maintenance.
    pub fn cache(&self) -> &C {
        &self.cache
    }

    /// The sub-range `range` of a mapping, as the cache sees it.
    #[inline]
    fn cache_range(cpu: core::ptr::NonNull<u8>, phys: PhysAddr, range: SyncRange) -> CacheRange {
        CacheRange::new(
            // SAFETY: `range` lies inside the mapping (the caller's
            // contract), so the offset stays inside the buffer.
            unsafe { cpu.add(range.offset) },
            PhysAddr::new(phys.as_u64() + range.offset as u64),
            range.len,
        )
    }
}

// SAFETY: (1) as for `DirectCoherent`: `direct_map` translates through the
// windows and checks the mask. (2) Map and `sync_for_device` clean every
// line of the range and `flush` completes it, so the device reads what the
// CPU wrote; `sync_for_cpu` of a device-writable direction invalidates every
// line (edge lines cleaned first, by `CacheMaintenance`'s contract) and
// `flush` completes it, so the CPU reads what the device wrote; the clean at
// map time leaves no dirty line to be written back over the device's data.
// (3) Nothing is declared a no-op but unmap, which has nothing to do beyond
// the CPU sync the handle issues. (4) Only the given ranges are maintained.
// (5) `complete` finishes the calling thread's operations.
unsafe impl<P: PhysLookup, C: CacheMaintenance> Backend for DirectNonCoherent<P, C> {
    type Platform = P;
    type Phys = PhysAddr;
    type State = ();
    type Granule = C::Granule;

    const COHERENT: bool = false;
    const SYNC_IS_NOOP: bool = false;
    const UNMAP_IS_NOOP: bool = true;

    #[inline]
    fn platform(&self) -> &P {
        &self.platform
    }

    fn map(&self, req: &MapRequest<'_>) -> Result<(DmaAddr, ()), MapErrorKind> {
        let dma = direct_map(&self.windows, req)?;
        let r = CacheRange::new(req.cpu, req.phys, req.len);
        // SAFETY: the request describes a live, non-empty buffer the caller
        // gave up (so it is mapped memory with this physical address); clean
        // changes no byte.
        let lines = unsafe { self.cache.clean(r) };
        req.device.stats().add_lines_cleaned(lines);
        Ok((dma, ()))
    }

    #[inline]
    unsafe fn sync_for_device(&self, m: &Mapping<'_, Self>, _: &(), range: SyncRange) {
        let r = Self::cache_range(m.cpu, m.phys, range);
        // SAFETY: `range` is inside a live mapping (caller), so it is mapped
        // memory with this physical address.
        let lines = unsafe { self.cache.clean(r) };
        m.device.stats().add_lines_cleaned(lines);
    }

    #[inline]
    unsafe fn sync_for_cpu(&self, m: &Mapping<'_, Self>, _: &(), range: SyncRange) {
        if m.dir == DmaDirection::ToDevice {
            return; // the device only read: the CPU's lines are current
        }
        let r = Self::cache_range(m.cpu, m.phys, range);
        // SAFETY: inside a live mapping; the device is finished and no CPU
        // reference exists (caller); the handle treats the bytes as written
        // by the device, which `Transfer<D>` made valid for any pattern.
        let lines = unsafe { self.cache.invalidate(r) };
        m.device.stats().add_lines_invalidated(lines);
    }

    #[inline(always)]
    unsafe fn unmap(&self, _: &Mapping<'_, Self>, (): ()) {}

    #[inline]
    fn flush(&self, device: &DeviceContext) {
        self.cache.complete();
        device.stats().add_barriers(1);
    }
}
