//! The IOMMU domain: one device's I/O address space, and the
//! [`Translation`] that maps buffers into it.

use core::fmt;

use crate::backend::compose::{MapAttrs, Translation};
use crate::backend::iommu::flushq::FlushQueues;
use crate::backend::iommu::format::IoPageTable;
use crate::backend::iommu::gather::{GatherLists, Gathered};
use crate::backend::iommu::iova::{IovaAlloc, IovaAllocator};
use crate::backend::iommu::pagetable::{PageTable, PageTableError, Prot};
use crate::backend::iommu::{
    IOVA_BITS, InvalidationMode, IommuHardware, PAGE_SHIFT, PAGE_SIZE, page_offset, pages_spanned,
};
use crate::base::addr::{DmaAddr, PhysAddr};
use crate::base::context::{DeviceConfig, DeviceContext};
use crate::base::direction::DmaDirection;
use crate::base::error::MapErrorKind;
use crate::sync::{AtomicUsize, Mutation, Mutex, Ordering, bump, lock, mutated};

/// One device's IOMMU domain: an IOVA allocator, an I/O page table in the
/// format `F`, and the hardware `H` whose IOTLB caches it.
///
/// `F` defaults to the software [`PageTable`] the simulator walks;
/// [`with_table`](Self::with_table) builds a domain over any other
/// [`IoPageTable`], such as [`ArmStage1`](crate::backend::iommu::ArmStage1)
/// for an SMMUv3.
///
/// As a [`Translation`]: map allocates an IOVA range for the pages the
/// buffer touches (below the device's mask), installs their entries with
/// the direction's permissions, and returns the IOVA plus the buffer's
/// offset in its first page. Unmap clears the entries and, in
/// [`InvalidationMode::Strict`], gathers the range; the flush that follows
/// issues one IOTLB invalidation over everything the thread gathered,
/// waits for it, and only then frees the IOVAs. In
/// [`InvalidationMode::Lazy`] the range goes to a flush queue instead, and
/// the flush after the unmap does nothing.
///
/// # Example
///
/// ```
/// use dmacap::backend::compose::{Coherent, Composed, NoBounce};
/// use dmacap::backend::iommu::{IommuDomain, InvalidationMode};
/// use dmacap::sim::{SimIommu, SimPlatform};
/// use dmacap::{Device, DeviceConfig};
///
/// let sim = SimPlatform::new(1 << 20);
/// let mem = sim.memory();
/// let domain = IommuDomain::new(SimIommu::new(), InvalidationMode::Strict);
/// let dev = Device::new(
///     Composed::from_parts(mem.clone(), domain, Coherent, NoBounce),
///     DeviceConfig::new(),
/// );
/// let nic = sim.device(&dev);
///
/// let buf = mem.alloc_slice::<u8>(4).unwrap();
/// let phys = mem.phys_of_buffer(&buf);
/// let rx = dev.map_from_device(buf).unwrap();
/// assert_ne!(rx.dma_addr().as_u64(), phys.as_u64()); // an IOVA, top-down below 4 GiB
/// assert_eq!(rx.dma_addr().as_u64() & 0xfff, phys.as_u64() & 0xfff);
/// nic.write(rx.dma_addr(), b"pong").unwrap();
/// // SAFETY: the simulated write returned.
/// let rx = unsafe { rx.sync_for_cpu() };
/// assert_eq!(rx.contents(), b"pong");
/// let _buf = rx.unmap(); // clears the entries, invalidates, frees the IOVA
/// assert_eq!(dev.stats().iotlb_invalidations(), 1);
/// ```
pub struct IommuDomain<H: IommuHardware, F: IoPageTable = PageTable> {
    // Dropped first (after `Drop::drop`): a hardware layer whose drop
    // detaches the context (clears the SMMU's STE or CD) runs before the
    // table is freed.
    hw: H,
    mode: InvalidationMode,
    iova: IovaAllocator,
    output_bits: u32,
    table: Mutex<F>,
    gather: GatherLists,
    fq: FlushQueues,
    invalidations: AtomicUsize,
    walks: AtomicUsize,
}

impl<H: IommuHardware> IommuDomain<H> {
    /// A domain with the software page table, over the whole 48-bit IOVA
    /// space except its first page (IOVA 0 is never handed out).
    pub fn new(hw: H, mode: InvalidationMode) -> Self {
        Self::with_aperture(
            hw,
            mode,
            DmaAddr::new(PAGE_SIZE),
            (1 << IOVA_BITS) - PAGE_SIZE,
        )
    }

    /// A domain with the software page table whose IOVAs lie in
    /// `[base, base + size)`: a device's aperture, or a small space for
    /// tests.
    ///
    /// # Panics
    ///
    /// If `base` or `size` is not a multiple of 4096, `size` is zero, or
    /// the range runs past the 48-bit IOVA space.
    pub fn with_aperture(hw: H, mode: InvalidationMode, base: DmaAddr, size: u64) -> Self {
        IommuDomain::with_table_and_aperture(hw, mode, PageTable::new(), base, size)
    }
}

impl<H: IommuHardware, F: IoPageTable> IommuDomain<H, F> {
    /// A domain over `table` (an empty table of any format), covering the
    /// whole 48-bit IOVA space except its first page.
    ///
    /// # Panics
    ///
    /// If `table` has a page mapped.
    pub fn with_table(hw: H, mode: InvalidationMode, table: F) -> Self {
        Self::with_table_and_aperture(
            hw,
            mode,
            table,
            DmaAddr::new(PAGE_SIZE),
            (1 << IOVA_BITS) - PAGE_SIZE,
        )
    }

    /// A domain over `table` (empty) whose IOVAs lie in
    /// `[base, base + size)`.
    ///
    /// # Panics
    ///
    /// If `table` has a page mapped, `base` or `size` is not a multiple of
    /// 4096, `size` is zero, or the range runs past the 48-bit IOVA space.
    pub fn with_table_and_aperture(
        hw: H,
        mode: InvalidationMode,
        table: F,
        base: DmaAddr,
        size: u64,
    ) -> Self {
        // The IOVA allocator owns the whole aperture: a page mapped already
        // could be handed out again.
        assert!(
            !table.has_mappings(),
            "an IOMMU domain starts with an empty page table"
        );
        let b = base.as_u64();
        assert!(
            b.is_multiple_of(PAGE_SIZE) && size.is_multiple_of(PAGE_SIZE) && size > 0,
            "the IOVA aperture must be whole, non-empty pages"
        );
        let end = b
            .checked_add(size)
            .filter(|&e| e <= 1 << IOVA_BITS)
            .expect("the IOVA aperture must lie in the 48-bit IOVA space");
        let (queue_len, timeout_ms) = match mode {
            InvalidationMode::Lazy {
                queue_len,
                timeout_ms,
            } => (queue_len, timeout_ms),
            // Never used: strict mode queues nothing.
            InvalidationMode::Strict => (0, 0),
        };
        Self {
            hw,
            mode,
            // IOVA 0 is never handed out: many consumers read DMA address
            // 0 as failure (`virtio-drivers`' `dma_alloc`), and a live
            // mapping there would be lost. An aperture starting at 0 loses
            // its first page.
            iova: IovaAllocator::new((b >> PAGE_SHIFT).max(1), end >> PAGE_SHIFT),
            output_bits: table.output_bits(),
            table: Mutex::new(table),
            gather: GatherLists::new(),
            fq: FlushQueues::new(queue_len, timeout_ms),
            invalidations: AtomicUsize::new(0),
            walks: AtomicUsize::new(0),
        }
    }

    /// The hardware.
    pub fn hardware(&self) -> &H {
        &self.hw
    }

    /// The invalidation mode.
    pub fn mode(&self) -> InvalidationMode {
        self.mode
    }

    /// The IOVA allocator (free space, cache hits).
    pub fn iova(&self) -> &IovaAllocator {
        &self.iova
    }

    /// IOVA pages not allocated. Ranges unmapped in lazy mode count as
    /// allocated until a queue flush has invalidated them.
    pub fn free_pages(&self) -> u64 {
        self.iova.free_pages()
    }

    /// IOTLB invalidations this domain has completed (each followed by one
    /// hardware sync).
    pub fn invalidations(&self) -> usize {
        self.invalidations.load(Ordering::Relaxed)
    }

    /// Unmapped ranges waiting in the flush queues (lazy mode).
    pub fn queued(&self) -> usize {
        self.fq.len()
    }

    /// The hardware's page walk: the leaf entry translating `iova`. For
    /// hardware models and tests only; see [`IoPageTable::walk`].
    pub fn walk(&self, iova: DmaAddr) -> Option<F::Entry> {
        bump(&self.walks, 1);
        lock(&self.table).walk(iova)
    }

    /// Page-table walks so far. Only the hardware walks (on an IOTLB miss
    /// of a device access): dmacap's own map, sync and unmap paths use the
    /// IOVA and physical address the handle carries, never a walk (a test
    /// counts it).
    pub fn walks(&self) -> usize {
        self.walks.load(Ordering::Relaxed)
    }

    /// Lazy mode: invalidates the IOTLB for every queued range, waits, and
    /// frees their IOVAs; counted as one IOTLB invalidation of `dev`. Does
    /// nothing if nothing is queued (always, in strict mode).
    pub fn flush_queue(&self, dev: &DeviceContext) {
        self.flush_queued(alloc::vec::Vec::new(), dev);
    }

    /// Lazy mode's timer (Linux: 10 ms): tells the domain it is `now_ms`
    /// on a clock of the caller's choosing, and flushes the queues if an
    /// entry has waited `timeout_ms` or more since the previous tick. Call
    /// it from a periodic timer; entries queued between ticks are stamped
    /// with the previous tick's time, so they never wait longer than
    /// `timeout_ms` plus one tick period.
    pub fn tick(&self, now_ms: u64, dev: &DeviceContext) {
        if self.mode.is_lazy() && self.fq.tick(now_ms) {
            self.flush_queue(dev);
        }
    }

    /// Invalidates everything queued plus `more` (whose entries are
    /// already cleared), waits, and frees them all.
    fn flush_queued(&self, mut more: alloc::vec::Vec<IovaAlloc>, dev: &DeviceContext) {
        more.extend(self.fq.drain());
        if more.is_empty() {
            return;
        }
        if mutated(Mutation::LazyFreeBeforeInvalidate) {
            // The mutation: freed first, invalidated after.
            for a in more.drain(..) {
                // SAFETY: none: this breaks `free`'s contract on purpose
                // (the loom models' mutation; never in a real build).
                unsafe { self.iova.free(a) };
            }
        }
        if !mutated(Mutation::LazyNoInvalidate) {
            self.hw.invalidate_all();
        }
        self.complete_invalidation(dev);
        for a in more {
            // SAFETY: allocated here; its entries were cleared before it
            // was queued, and the invalidation above, issued after that,
            // has completed.
            unsafe { self.iova.free(a) };
        }
    }

    /// The page table, for the two-step API.
    pub(crate) fn table(&self) -> &Mutex<F> {
        &self.table
    }

    /// Runs `f` on the page table, under the domain's lock: to read the
    /// format's configuration (the root table's physical address for an
    /// SMMU's context descriptor, say) or count its tables. `f` gets a
    /// shared reference: entries change only through mappings.
    pub fn with_page_table<R>(&self, f: impl FnOnce(&F) -> R) -> R {
        f(&lock(&self.table))
    }

    /// Waits for the invalidations issued and counts one.
    pub(crate) fn complete_invalidation(&self, dev: &DeviceContext) {
        self.hw.sync();
        self.invalidations.fetch_add(1, Ordering::Relaxed);
        dev.stats().add_iotlb_invalidation();
    }

    /// Invalidates a strict-mode gather's span, waits, frees its ranges.
    fn complete_gather(&self, g: Gathered, dev: &DeviceContext) {
        let (start, end) = g.span();
        let mut allocs = g.into_allocs();
        if mutated(Mutation::StrictFreeBeforeInvalidate) {
            // The mutation: freed first, invalidated after.
            for a in allocs.drain(..) {
                // SAFETY: none: this breaks `free`'s contract on purpose
                // (the loom models' mutation; never in a real build).
                unsafe { self.iova.free(a) };
            }
        }
        self.hw.invalidate_range(
            DmaAddr::new(start << PAGE_SHIFT),
            (end - start) << PAGE_SHIFT,
        );
        if mutated(Mutation::StrictIssueWithoutSync) {
            // The mutation: issued, counted, never waited for.
            self.invalidations.fetch_add(1, Ordering::Relaxed);
            dev.stats().add_iotlb_invalidation();
        } else {
            self.complete_invalidation(dev);
        }
        for a in allocs {
            // SAFETY: allocated here; its entries were cleared by `unmap`
            // and the invalidation of a span covering it has completed.
            unsafe { self.iova.free(a) };
        }
    }

    /// Hands an unmapped range (entries cleared) on to be invalidated and
    /// freed: gathered (strict) or queued (lazy, flushing a full queue).
    pub(crate) fn retire(&self, a: IovaAlloc, dev: &DeviceContext) {
        if !self.mode.is_lazy() {
            self.gather.add(a);
            return;
        }
        if let Err(a) = self.fq.push(a) {
            self.flush_queued(alloc::vec![a], dev);
        }
    }

    /// Refuses lazy invalidation for an untrusted device.
    pub(crate) fn check_trust(&self, cfg: &DeviceConfig) -> Result<(), MapErrorKind> {
        if self.mode.is_lazy() && !cfg.is_trusted() {
            return Err(MapErrorKind::LazyIommuUntrusted);
        }
        Ok(())
    }

    /// The first page frame past the device's reach (exclusive), from its
    /// mask: pages whose every byte the device can address.
    pub(crate) fn limit_pfn(cfg: &DeviceConfig) -> u64 {
        let max = cfg.mask().max_addr();
        match max.checked_sub(PAGE_SIZE - 1) {
            Some(m) => (m >> PAGE_SHIFT) + 1,
            None => 0,
        }
    }

    /// Allocates IOVA pages for `bytes` bytes reachable by `cfg`'s device.
    pub(crate) fn alloc_pages(
        &self,
        pages: u64,
        bytes: usize,
        cfg: &DeviceConfig,
    ) -> Result<IovaAlloc, MapErrorKind> {
        self.iova
            .alloc(pages, Self::limit_pfn(cfg))
            .ok_or(MapErrorKind::IovaExhausted { len: bytes })
    }

    /// Whether `len` bytes at `phys` fit the page table's physical output.
    fn phys_fits(&self, phys: PhysAddr, len: usize) -> bool {
        phys.as_u64()
            .checked_add(len as u64)
            .is_some_and(|end| end <= 1 << self.output_bits)
    }
}

// SAFETY: (1) `map` allocates a fresh IOVA range below the device's mask
// (the allocator hands a range to one holder at a time) and installs
// entries for exactly the pages holding `[phys, phys + len)`, with read
// only if the device reads in `dir` and write only if it writes; the device
// reaches those whole pages (at most the access `dir` allows). On error the
// IOVA is freed before returning and no entry was installed. In strict mode
// the entries are cleared by `unmap` and the IOTLB invalidation covering
// them has completed when the next `flush` on the same thread returns. In
// lazy mode stale IOTLB entries may outlive `flush` until the queue is
// flushed: that is only ever reached by a device that breaks `unmap`'s
// precondition (it has finished with the buffer), and it is refused for
// untrusted devices, whose misbehaviour is the threat. (2) (formerly `reaches`) is
// `false` exactly when `map` would fail for addressing reasons (the
// physical range beyond the table's 52-bit output). (3) `UNMAP_IS_NOOP` is
// `false`. (4) An IOVA is freed only after an invalidation issued after its
// entries were cleared has completed (gather flush or queue flush).
//
// For any format `F`, (1) rests on `IoPageTable`'s contract: the entries
// grant what `Prot::for_dma` asks (a format without write-only entries
// also grants reads to a `FromDevice` mapping: the device may read the
// buffer's old bytes, which changes no memory), and `map_pages` changes
// nothing on error.
unsafe impl<H: IommuHardware, F: IoPageTable> Translation for IommuDomain<H, F> {
    type State = ();
    const UNMAP_IS_NOOP: bool = false;

    #[inline(always)]
    fn granule(&self) -> usize {
        PAGE_SIZE as usize
    }

    unsafe fn map(
        &self,
        phys: PhysAddr,
        len: usize,
        dir: DmaDirection,
        attrs: MapAttrs,
        dev: &DeviceContext,
    ) -> Result<(DmaAddr, ()), MapErrorKind> {
        self.check_trust(dev.config())?;
        if !self.phys_fits(phys, len) {
            // The device cannot reach it through this domain: the
            // addressing refusal, which a composition with a pool bounces.
            return Err(MapErrorKind::NoDmaWindow { phys, len });
        }
        let p = phys.as_u64();
        let pages = pages_spanned(p, len as u64);
        let a = self.alloc_pages(pages, len, dev.config())?;
        let base = a.addr();
        let installed = lock(&self.table).map_pages(
            base,
            PhysAddr::new(p - page_offset(p)),
            pages,
            Prot::for_dma(dir, attrs),
        );
        if let Err(e) = installed {
            // SAFETY: just allocated; no entry was installed (the table
            // changes nothing on error), so no device can use it.
            unsafe { self.iova.free(a) };
            return Err(MapErrorKind::Backend(match e {
                PageTableError::NoMemory => "no memory for an IOMMU page table",
                _ => "the IOMMU page table refused the mapping",
            }));
        }
        Ok((DmaAddr::new(base.as_u64() + page_offset(p)), ()))
    }

    unsafe fn unmap(&self, dma: DmaAddr, len: usize, (): (), dev: &DeviceContext) {
        let d = dma.as_u64();
        let pages = pages_spanned(d, len as u64);
        let page = DmaAddr::new(d - page_offset(d));
        let queued_early = mutated(Mutation::LazyQueueBeforeClear) && self.mode.is_lazy();
        if queued_early {
            // The mutation: queued (and so flushable and freeable by any
            // thread) before its entries are cleared.
            self.retire(IovaAlloc::from_mapping(d >> PAGE_SHIFT, pages), dev);
        }
        let cleared = lock(&self.table).unmap_pages(page, pages);
        // Fewer entries than the handle says means the table and the
        // handles disagree about who owns which IOVA: freeing the range
        // could hand out one a device still uses. Checked in every build;
        // the panic leaves the IOVA allocated (never reused).
        assert_eq!(
            cleared, pages,
            "IOMMU unmap of {pages} pages at {page} cleared {cleared} entries"
        );
        if !queued_early {
            self.retire(IovaAlloc::from_mapping(d >> PAGE_SHIFT, pages), dev);
        }
    }

    fn flush(&self, dev: &DeviceContext) {
        self.gather.flush(|g| self.complete_gather(g, dev));
    }

    fn phys_limit(&self, _: &DeviceConfig) -> u64 {
        (1 << self.output_bits) - 1
    }
}

/// Page tables of domains dropped while a device could still walk them,
/// leaked instead of freed.
static LEAKED_TABLES: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

impl<H: IommuHardware, F: IoPageTable> IommuDomain<H, F> {
    /// How many domains, in this program so far, were dropped while some
    /// page was still mapped (a handle or an IOVA range forgotten with
    /// `mem::forget`, which is safe): their page tables were leaked, never
    /// freed, because the IOMMU may still walk them.
    pub fn leaked_page_tables() -> usize {
        LEAKED_TABLES.load(core::sync::atomic::Ordering::Relaxed)
    }
}

impl<H: IommuHardware, F: IoPageTable> Drop for IommuDomain<H, F> {
    fn drop(&mut self) {
        // Deferred and gathered invalidations first: entries already
        // cleared may still sit in the IOTLB.
        self.hw.invalidate_all();
        self.hw.sync();
        let mut table = lock(&self.table);
        if table.has_mappings() && !mutated(Mutation::DomainDropFreesLiveTables) {
            // A mapping lives on (its handle was forgotten): the hardware
            // may walk these tables for as long as the device runs, so they
            // are never freed.
            table.leak();
            LEAKED_TABLES.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl<H: IommuHardware + fmt::Debug, F: IoPageTable> fmt::Debug for IommuDomain<H, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IommuDomain")
            .field("hw", &self.hw)
            .field("mode", &self.mode)
            .field("iova", &self.iova)
            .field("invalidations", &self.invalidations())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::*;
    use crate::api::device::Device;
    use crate::backend::compose::{Coherent, Composed, NoBounce};
    use crate::backend::iommu::testhw::{Op, Recorder};
    use crate::base::addr::DmaMask;
    use crate::sim::SimMemory;

    type Dev = Device<Composed<SimMemory, IommuDomain<Recorder>, Coherent, NoBounce>>;

    fn device(mode: InvalidationMode, cfg: DeviceConfig) -> Dev {
        let mem = SimMemory::with_base(PhysAddr::new(0x8000_0000), 1 << 16);
        let d = IommuDomain::new(Recorder::default(), mode);
        Device::new(Composed::from_parts(mem, d, Coherent, NoBounce), cfg)
    }

    fn map(dev: &Dev, phys: u64, len: usize, dir: DmaDirection) -> DmaAddr {
        let d = dev.backend().translation();
        // SAFETY: no device runs in these tests: the hardware is a recorder.
        unsafe { d.map(PhysAddr::new(phys), len, dir, MapAttrs::RAM, dev.context()) }
            .unwrap()
            .0
    }

    #[test]
    fn limit_from_mask() {
        let lim = |bits| {
            IommuDomain::<Recorder>::limit_pfn(&DeviceConfig::new().dma_mask(DmaMask::bits(bits)))
        };
        assert_eq!(lim(32), 1 << 20);
        assert_eq!(lim(12), 1);
        assert_eq!(lim(11), 0);
        assert_eq!(lim(64), 1 << 52);
    }

    #[test]
    fn strict_unmaps_are_gathered_into_one_invalidation() {
        let dev = device(InvalidationMode::Strict, DeviceConfig::new());
        let d = dev.backend().translation();
        let free0 = d.free_pages();
        let a = map(&dev, 0x8000_0010, 100, DmaDirection::ToDevice);
        let b = map(&dev, 0x8000_2000, 2 * 4096, DmaDirection::FromDevice);
        assert_eq!(a.as_u64() & 0xfff, 0x10);
        assert_eq!(a.as_u64() >> 12, (1 << 20) - 1, "top-down below 4 GiB");
        assert_eq!(d.walk(a).unwrap().phys(), PhysAddr::new(0x8000_0000));
        assert!(d.hardware().take().is_empty(), "maps invalidate nothing");
        // SAFETY: both live, unmapped once, no device.
        unsafe {
            d.unmap(a, 100, (), dev.context());
            d.unmap(b, 2 * 4096, (), dev.context());
        }
        assert!(d.hardware().take().is_empty(), "issued at the flush");
        assert_eq!(d.free_pages(), free0 - 3, "not freed before the flush");
        d.flush(dev.context());
        // b took two 2-aligned pages below a (leaving a hole between them):
        // one span covers both.
        let span = (b.as_u64(), 4 * 4096);
        assert_eq!(
            d.hardware().take(),
            [Op::Range(DmaAddr::new(span.0), span.1), Op::Sync]
        );
        assert_eq!(d.free_pages(), free0);
        assert_eq!(d.walk(a), None);
        d.flush(dev.context());
        assert!(
            d.hardware().take().is_empty(),
            "nothing gathered, nothing done"
        );
        assert_eq!(dev.stats().iotlb_invalidations(), 1);
        assert_eq!(d.invalidations(), 1);
    }

    #[test]
    fn lazy_unmaps_wait_for_the_queue() {
        let dev = device(InvalidationMode::LAZY, DeviceConfig::new());
        let d = dev.backend().translation();
        let free0 = d.free_pages();
        let a = map(&dev, 0x8000_0000, 4096, DmaDirection::Bidirectional);
        let pte = d.walk(a).unwrap();
        assert!(pte.can_read() && pte.can_write());
        // SAFETY: live, unmapped once, no device.
        unsafe { d.unmap(a, 4096, (), dev.context()) };
        d.flush(dev.context());
        assert!(d.hardware().take().is_empty());
        assert_eq!((d.queued(), d.free_pages()), (1, free0 - 1));
        d.flush_queue(dev.context());
        assert_eq!(d.hardware().take(), [Op::All, Op::Sync]);
        assert_eq!((d.queued(), d.free_pages()), (0, free0));
    }

    #[test]
    fn refusals_hold_nothing() {
        let lazy = device(InvalidationMode::LAZY, DeviceConfig::new().trusted(false));
        let d = lazy.backend().translation();
        let free0 = d.free_pages();
        // SAFETY: refused; and no device runs (the hardware is a recorder).
        let r = unsafe {
            d.map(
                PhysAddr::new(0x8000_0000),
                4096,
                DmaDirection::ToDevice,
                MapAttrs::RAM,
                lazy.context(),
            )
        };
        assert_eq!(r, Err(MapErrorKind::LazyIommuUntrusted));
        assert_eq!(d.free_pages(), free0);

        let dev = device(InvalidationMode::Strict, DeviceConfig::new());
        let d = dev.backend().translation();
        let far = PhysAddr::new((1 << 52) - 4096);
        assert!(d.phys_fits(far, 4096));
        assert!(!d.phys_fits(far, 4097));
        // SAFETY: as above.
        let r = unsafe {
            d.map(
                far,
                4097,
                DmaDirection::ToDevice,
                MapAttrs::RAM,
                dev.context(),
            )
        };
        // The addressing refusal, which a composition with a pool bounces.
        assert_eq!(
            r,
            Err(MapErrorKind::NoDmaWindow {
                phys: far,
                len: 4097
            })
        );
        assert_eq!(d.free_pages(), free0);
        assert_eq!(d.iova().cache_misses(), 0);
    }
}
