//! The architecture layer beneath the handles: what Linux calls
//! `dma_map_ops`.
//!
//! A [`Backend`] turns a physical range into a DMA address and back into
//! nothing, and does whatever the hardware needs in between (cache
//! maintenance, bounce copies, IOMMU page tables). It differs from
//! `dma_map_ops` in three ways:
//!
//! 1. **It is handed everything.** Every call receives a [`Mapping`]: the
//!    CPU address, the length, the direction, the DMA address, the physical
//!    address (for backends that ask for it through [`Backend::Phys`]) and
//!    the backend's own per-mapping [`Backend::State`]. All of it travels in
//!    the handle, so no backend ever translates a DMA address back to a
//!    physical one (no `iommu_iova_to_phys` walk on unmap).
//! 2. **Issue, then complete.** `sync_for_device`, `sync_for_cpu`, `map` and
//!    `unmap` only *issue* their work; [`Backend::flush`] *completes* all
//!    work issued so far, with one barrier (`dsb sy`, `sfence`) or one IOTLB
//!    invalidation. dmacap calls `flush` once per single operation, and once
//!    per batch.
//! 3. **No-ops are declared, not discovered.** [`Backend::SYNC_IS_NOOP`],
//!    [`Backend::UNMAP_IS_NOOP`], and zero-sized [`Backend::State`] and
//!    [`Backend::Phys`] let a backend state at compile time that it needs
//!    nothing; the calls then compile to nothing and handles carry nothing
//!    extra (Linux's `dma_skip_sync` and `DEFINE_DMA_UNMAP_ADDR`, decided by
//!    the type instead of at run time).
//!
//! Writing a backend for a new platform means implementing [`Backend`]; its
//! `# Safety` section is the whole contract.

#[cfg(feature = "alloc")]
pub mod bounce;
pub mod compose;
pub mod direct;
#[cfg(feature = "alloc")]
pub mod iommu;
pub mod noncoherent;

use core::ptr::NonNull;

use crate::base::addr::{DmaAddr, PhysAddr};
use crate::base::context::{DeviceConfig, DeviceContext};
use crate::base::direction::DmaDirection;
use crate::base::error::MapErrorKind;
use crate::base::platform::{PhysLookup, Side};

mod sealed {
    pub trait Sealed {}
}

/// Whether a backend's handles carry the physical address: [`PhysAddr`] to
/// carry it, [`NoPhys`] (zero-sized) when the backend never needs it after
/// map. Sealed: these two are the choices.
pub trait PhysSlot: sealed::Sealed + Copy + Send + Sync + 'static {
    /// Keeps `phys`, or forgets it.
    fn keep(phys: PhysAddr) -> Self;

    /// The address kept, if any.
    fn get(self) -> Option<PhysAddr>;
}

impl sealed::Sealed for PhysAddr {}
impl PhysSlot for PhysAddr {
    #[inline(always)]
    fn keep(phys: PhysAddr) -> Self {
        phys
    }

    #[inline(always)]
    fn get(self) -> Option<PhysAddr> {
        Some(self)
    }
}

/// The physical address, not kept: for backends whose sync and unmap never
/// need it (a coherent device without IOMMU or bounce buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoPhys;

impl sealed::Sealed for NoPhys {}
impl PhysSlot for NoPhys {
    #[inline(always)]
    fn keep(_: PhysAddr) -> Self {
        NoPhys
    }

    #[inline(always)]
    fn get(self) -> Option<PhysAddr> {
        None
    }
}

/// A request to map one physically contiguous range.
///
/// `len` is never zero (dmacap refuses empty buffers first) and
/// `phys + len` does not overflow (the platform's [`PhysLookup`] promise),
/// so a backend adds to `phys` without checking.
#[derive(Debug)]
#[non_exhaustive]
pub struct MapRequest<'a> {
    /// The CPU address of the first byte.
    pub cpu: NonNull<u8>,
    /// The physical address of the first byte.
    pub phys: PhysAddr,
    /// The length in bytes, never zero.
    pub len: usize,
    /// The direction of the transfers.
    pub dir: DmaDirection,
    /// The device's limits and counters.
    pub device: &'a DeviceContext,
    /// `false` when the buffer is a byte buffer whose address or length is
    /// not a multiple of [`Backend::Granule`]: it would share a cache line
    /// with other data. A backend that cannot bounce it must refuse it
    /// with [`MapErrorKind::SharesCacheLine`].
    pub granule_ok: bool,
    /// Bytes from `cpu` that belong to this buffer alone, at least `len`:
    /// more when the buffer is an allocation that filled the rest of its
    /// last cache-line granule or IOMMU page, so no one else's data shares
    /// them and nothing needs bouncing to hide it.
    pub owned_len: usize,
    /// `true` when the mapping must not bounce (Linux's
    /// `DMA_ATTR_REQUIRE_COHERENT`): a buffer that would have to is refused
    /// with [`MapErrorKind::WouldBounce`].
    pub no_bounce: bool,
}

/// A request to map an MMIO or peer-to-peer range (Linux's
/// `DMA_ATTR_MMIO`): never touched by the CPU, never bounced, no cache
/// maintenance, non-cacheable in an IOMMU.
#[derive(Debug)]
#[non_exhaustive]
pub struct MmioRequest<'a> {
    /// The physical address of the range.
    pub phys: PhysAddr,
    /// Its length in bytes, never zero.
    pub len: usize,
    /// The direction of the transfers.
    pub dir: DmaDirection,
    /// The device's limits and counters.
    pub device: &'a DeviceContext,
}

/// Everything dmacap knows about a live mapping, handed to every sync and
/// unmap call. Built from the handle; nothing in it is looked up.
#[derive(Debug)]
#[non_exhaustive]
pub struct Mapping<'a, B: Backend + ?Sized> {
    /// The CPU address of the first byte.
    pub cpu: NonNull<u8>,
    /// The physical address, where the backend asked to keep it.
    pub phys: B::Phys,
    /// The DMA address [`Backend::map`] returned.
    pub dma: DmaAddr,
    /// The length in bytes, never zero.
    pub len: usize,
    /// The direction the mapping was made with.
    pub dir: DmaDirection,
    /// The device's limits and counters.
    pub device: &'a DeviceContext,
}

/// A byte range inside a mapping, for partial syncs: `offset + len` never
/// exceeds the mapping's length, and `len` is never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncRange {
    /// First byte, from the start of the mapping.
    pub offset: usize,
    /// Number of bytes.
    pub len: usize,
}

impl SyncRange {
    /// The whole of a mapping of `len` bytes.
    #[inline]
    pub const fn whole(len: usize) -> Self {
        Self { offset: 0, len }
    }

    /// One past the last byte.
    #[inline]
    pub const fn end(&self) -> usize {
        self.offset + self.len
    }
}

/// The architecture layer: how one kind of platform makes memory reachable
/// by a device and keeps the CPU's and the device's views of it consistent.
///
/// dmacap drives a backend through the handle types, which guarantee the
/// order of calls: `map`, then any number of `sync_for_cpu` /
/// `sync_for_device` alternating with the device's and the CPU's accesses,
/// then `unmap` at most once (never, if the handle was leaked while the
/// device owned it). Every call gets back exactly what `map` produced.
///
/// # Safety
///
/// An implementation promises:
///
/// 1. **Translation.** When `map` returns `Ok((dma, state))` for a request
///    of `len` bytes at `phys`, the device reaches exactly the memory
///    `[phys, phys + len)` through `[dma, dma + len)`, with the access the
///    direction allows, until `unmap` for that mapping has been issued and
///    `flush` has returned. `dma + len` does not overflow and lies within
///    the device's DMA mask.
/// 2. **Coherence.** After `map` or `sync_for_device` over a range and then
///    `flush`, the device observes every CPU write made to that range
///    before the call. After `sync_for_cpu` over a range and then `flush`,
///    the CPU observes every device write made to the range before the
///    call, and no later write-back of a stale CPU cache line or bounce
///    copy overwrites it. `unmap` does no CPU sync of its own: dmacap issues
///    `sync_for_cpu` first for whatever part of the buffer the CPU has not
///    taken back yet.
/// 3. **No-op declarations are true.** If [`SYNC_IS_NOOP`](Self::SYNC_IS_NOOP)
///    is `true`, skipping every `sync_*` call and the `flush` after `map`
///    still gives point 2. If [`UNMAP_IS_NOOP`](Self::UNMAP_IS_NOOP) is
///    `true`, skipping `unmap` and its `flush` leaks nothing and leaves the
///    device no access it should not have.
/// 4. **Memory access.** The backend touches the buffer's memory (at `cpu`)
///    only during `map`, `sync_*` and `unmap` calls, and only within the
///    range it was given. dmacap guarantees that no CPU reference to the
///    buffer exists during those calls.
/// 5. **Thread safety.** `flush` completes the work issued by the calling
///    thread; calls for different mappings may come from different threads
///    at once when the backend is `Sync`.
/// 6. **Hand-over names what the device reaches.** [`hand_over`](Self::hand_over)
///    reports exactly the memory the device can reach for the mapping (the
///    buffer, or its bounce slot region) to the platform, and the backend
///    touches that memory from the CPU only while the CPU side owns it
///    (between `Side::Cpu` and the next `Side::Device`).
pub unsafe trait Backend {
    /// How CPU addresses become physical addresses on this platform.
    type Platform: PhysLookup;

    /// Whether handles carry the physical address: [`PhysAddr`], or
    /// [`NoPhys`] for backends that never need it after `map`.
    type Phys: PhysSlot;

    /// The backend's own per-mapping state, kept in the handle from `map`
    /// to `unmap` (an IOVA allocation, a bounce slot index). `()` when it
    /// needs none, so handles carry nothing extra.
    type State: Send + Sync;

    /// The smallest unit of memory the backend maintains or bounces: the
    /// CPU's DMA cache-line granule (Linux's `ARCH_DMA_MINALIGN`) for a
    /// non-coherent backend, `U1` when nothing is shared at line size.
    /// Typed buffers finer than this do not compile for the backend.
    type Granule: crate::base::buffer::Granule;

    /// Whether the device sees the CPU's caches (no maintenance needed).
    const COHERENT: bool;

    /// `true` if `sync_for_device`, `sync_for_cpu` and the completion of
    /// `map` do nothing, so that dmacap can skip the calls entirely.
    const SYNC_IS_NOOP: bool;

    /// `true` if `unmap` does nothing, so that dmacap can skip it.
    const UNMAP_IS_NOOP: bool;

    /// The platform hook asked for each buffer's physical address.
    fn platform(&self) -> &Self::Platform;

    /// Makes `[req.phys, req.phys + req.len)` reachable by the device and
    /// issues the maintenance that hands it to the device. dmacap calls
    /// [`flush`](Self::flush) afterwards unless `SYNC_IS_NOOP`, and then
    /// [`hand_over`](Self::hand_over) to [`Side::Device`].
    ///
    /// On error, nothing may have changed: no resource is held and no
    /// mapping exists.
    ///
    /// # Safety
    ///
    /// `req` describes memory given up by its owner: the `len` bytes at
    /// `req.cpu` are valid for reads and writes, physically contiguous from
    /// `req.phys`, initialised, and nothing else references them until the
    /// mapping is unmapped (forever if it never is).
    unsafe fn map(&self, req: &MapRequest<'_>) -> Result<(DmaAddr, Self::State), MapErrorKind>;

    /// Tells the platform ([`PhysLookup::ownership_changed`]) that the
    /// memory the device works on for this mapping changes hands: the
    /// buffer itself by default; a backend that gives the device other
    /// memory (a bounce slot) names that instead. dmacap calls it with
    /// [`Side::Device`] after every completed hand-over to the device, and
    /// with [`Side::Cpu`] before the CPU takes the mapping back.
    ///
    /// # Safety
    ///
    /// `m` and `state` describe a live mapping this backend made; the
    /// promise of [`PhysLookup::ownership_changed`] holds for the buffer.
    #[inline(always)]
    unsafe fn hand_over(&self, m: &Mapping<'_, Self>, state: &Self::State, to: Side) {
        let _ = state;
        // SAFETY: forwarded from the caller: the device works on the buffer
        // itself.
        unsafe {
            self.platform()
                .ownership_changed(m.cpu, m.len, to, m.device.id())
        }
    }

    /// Issues the maintenance that hands `range` of the mapping to the
    /// device.
    ///
    /// # Safety
    ///
    /// `m` and `state` describe a live mapping this backend made, `range`
    /// lies within it, and no CPU reference to that range exists.
    unsafe fn sync_for_device(&self, m: &Mapping<'_, Self>, state: &Self::State, range: SyncRange);

    /// Issues the maintenance that hands `range` of the mapping back to the
    /// CPU. dmacap never calls it for a `ToDevice` mapping (the device wrote
    /// nothing the CPU must fetch), nor completes a flush for one.
    ///
    /// # Safety
    ///
    /// As for [`sync_for_device`](Self::sync_for_device), and the device has
    /// finished accessing `range`.
    unsafe fn sync_for_cpu(&self, m: &Mapping<'_, Self>, state: &Self::State, range: SyncRange);

    /// Issues the tear-down of the mapping. Does no CPU sync (see point 2 of
    /// the trait's contract).
    ///
    /// # Safety
    ///
    /// `m` and `state` describe a live mapping this backend made, never
    /// unmapped before, and the device has finished accessing it.
    unsafe fn unmap(&self, m: &Mapping<'_, Self>, state: Self::State);

    /// Completes all maintenance and invalidation this thread has issued,
    /// with one barrier or one IOTLB invalidation, counted in
    /// `device.stats()`.
    fn flush(&self, device: &DeviceContext);

    /// Makes an MMIO range reachable by the device: no bounce, no
    /// maintenance, non-cacheable where the translation has attributes.
    /// The default refuses.
    ///
    /// # Safety
    ///
    /// The caller promises `[req.phys, req.phys + req.len)` is an MMIO or
    /// peer memory range the device may be given (a BAR of a peer device),
    /// never RAM that Rust code owns.
    unsafe fn map_mmio(
        &self,
        req: &MmioRequest<'_>,
    ) -> Result<(DmaAddr, Self::State), MapErrorKind> {
        let _ = req;
        Err(MapErrorKind::Backend(
            "this backend does not map MMIO ranges",
        ))
    }

    /// Makes a coherent allocation reachable by the device for reading and
    /// writing: never bounced, no cache maintenance (the memory is uncached
    /// for a device that does not snoop). The default refuses.
    ///
    /// # Safety
    ///
    /// `[req.phys, req.phys + req.len)` is a coherent allocation of the
    /// platform's [`DmaAllocator`](crate::platform::DmaAllocator), which the
    /// CPU accesses only through its shared accessors while it is mapped.
    unsafe fn map_coherent(
        &self,
        req: &MmioRequest<'_>,
    ) -> Result<(DmaAddr, Self::State), MapErrorKind> {
        let _ = req;
        Err(MapErrorKind::Backend(
            "this backend does not map coherent allocations",
        ))
    }

    /// Issues the removal of a coherent allocation's mapping;
    /// [`flush`](Self::flush) completes it.
    ///
    /// # Safety
    ///
    /// `dma`, `len`, `state` describe a live mapping `map_coherent` made,
    /// never unmapped, and the device has finished with it.
    unsafe fn unmap_coherent(
        &self,
        dma: DmaAddr,
        len: usize,
        state: Self::State,
        dev: &DeviceContext,
    ) {
        let _ = (dma, len, state, dev);
    }

    /// The highest physical address memory allocated for this device may
    /// use so that the device reaches it without bouncing: its DMA mask for
    /// direct translation, the whole output range behind an IOMMU.
    fn phys_limit(&self, cfg: &DeviceConfig) -> u64 {
        cfg.mask().max_addr()
    }

    /// The granule at which the translation gives a device access (the
    /// IOMMU page; `1` for direct translation): allocations for a device
    /// fill whole granules, so it sees nothing else in them.
    fn access_granule(&self) -> usize {
        1
    }

    /// Issues the removal of an MMIO mapping; [`flush`](Self::flush)
    /// completes it.
    ///
    /// # Safety
    ///
    /// `dma`, `len`, `state` describe a live mapping `map_mmio` made, never
    /// unmapped, and the device has finished with it.
    unsafe fn unmap_mmio(&self, dma: DmaAddr, len: usize, state: Self::State, dev: &DeviceContext) {
        let _ = (dma, len, state, dev);
    }
}
