//! What a backend needs to know of a device: its limits ([`DeviceConfig`]),
//! its counters ([`DeviceStats`]) and its identity, together a
//! [`DeviceContext`]. It sits in the base layer so that backends can use it
//! without importing the typed API above them.

use crate::base::addr::DmaMask;
use crate::base::platform::DeviceId;
use crate::sync::{AtomicUsize, Mutation, Ordering, bump, mutated};

/// A device's addressing limits and trust, as a driver declares them at
/// probe time (Linux's `dma_set_mask`, `dma_set_max_seg_size`,
/// `dma_set_seg_boundary`, and the `untrusted` flag of external ports).
///
/// # Example
///
/// ```
/// use dmacap::{DeviceConfig, DmaMask};
/// let cfg = DeviceConfig::new().dma_mask(DmaMask::bits(32)).trusted(false);
/// assert_eq!(cfg.mask().max_addr(), 0xffff_ffff);
/// assert!(!cfg.is_trusted());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceConfig {
    mask: DmaMask,
    max_segment_size: usize,
    segment_boundary: u64,
    min_align_mask: u64,
    trusted: bool,
}

impl DeviceConfig {
    /// Linux's defaults: a 32-bit mask, 64 KiB segments that do not cross a
    /// 4 GiB boundary, and a trusted device.
    pub const fn new() -> Self {
        Self {
            mask: DmaMask::bits(32),
            max_segment_size: 64 * 1024,
            segment_boundary: 0xffff_ffff,
            min_align_mask: 0,
            trusted: true,
        }
    }

    /// Sets the highest address the device can generate.
    pub const fn dma_mask(mut self, mask: DmaMask) -> Self {
        self.mask = mask;
        self
    }

    /// Sets the longest scatter-gather segment the device accepts.
    pub const fn max_segment_size(mut self, bytes: usize) -> Self {
        self.max_segment_size = bytes;
        self
    }

    /// Sets the boundary no segment may cross, as a mask (`0xffff` for
    /// 64 KiB boundaries).
    pub const fn segment_boundary(mut self, mask: u64) -> Self {
        self.segment_boundary = mask;
        self
    }

    /// Sets the low address bits a bounce buffer must keep from the
    /// original (Linux's `dma_set_min_align_mask`; NVMe needs `0xfff`).
    pub const fn min_align_mask(mut self, mask: u64) -> Self {
        self.min_align_mask = mask;
        self
    }

    /// The low address bits a bounce buffer keeps from the original.
    pub const fn align_mask(&self) -> u64 {
        self.min_align_mask
    }

    /// Whether the device is trusted. An untrusted device (behind an
    /// external port) gets strict IOMMU invalidation and whole-granule
    /// bounce buffers, so it cannot read what shares a page with its buffer.
    pub const fn trusted(mut self, trusted: bool) -> Self {
        self.trusted = trusted;
        self
    }

    /// The device's DMA mask.
    pub const fn mask(&self) -> DmaMask {
        self.mask
    }

    /// The longest segment the device accepts, in bytes.
    pub const fn max_segment(&self) -> usize {
        self.max_segment_size
    }

    /// The boundary mask no segment may cross.
    pub const fn boundary_mask(&self) -> u64 {
        self.segment_boundary
    }

    /// Whether the device is trusted.
    pub const fn is_trusted(&self) -> bool {
        self.trusted
    }
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Counters kept per device. Backends add to the maintenance counters;
/// dmacap adds to the leak counters.
///
/// The per-line maintenance counters (`lines_cleaned`,
/// `lines_invalidated`) are published without a locked instruction (see
/// `bump`): exact when one thread hands a device's buffers over at a time,
/// approximate under concurrent hand-overs. The others (`barriers` and
/// `iotlb_invalidations`, after the barrier; `bounced`, whose copy dwarfs
/// an atomic add; the leak counters) are exact atomic adds.
#[derive(Debug)]
pub struct DeviceStats {
    leaked: AtomicUsize,
    leaked_bytes: AtomicUsize,
    unflushed: AtomicUsize,
    barriers: AtomicUsize,
    lines_cleaned: AtomicUsize,
    lines_invalidated: AtomicUsize,
    iotlb_invalidations: AtomicUsize,
    bounced: AtomicUsize,
    bounced_bytes: AtomicUsize,
}

impl DeviceStats {
    pub(crate) fn new() -> Self {
        Self {
            leaked: AtomicUsize::new(0),
            leaked_bytes: AtomicUsize::new(0),
            unflushed: AtomicUsize::new(0),
            barriers: AtomicUsize::new(0),
            lines_cleaned: AtomicUsize::new(0),
            lines_invalidated: AtomicUsize::new(0),
            iotlb_invalidations: AtomicUsize::new(0),
            bounced: AtomicUsize::new(0),
            bounced_bytes: AtomicUsize::new(0),
        }
    }

    /// Handles dropped while the device owned them: their buffers are
    /// quarantined (never freed) because the device may still write there.
    pub fn leaked(&self) -> usize {
        self.leaked.load(Ordering::Relaxed)
    }

    /// Bytes held by quarantined buffers.
    pub fn leaked_bytes(&self) -> usize {
        self.leaked_bytes.load(Ordering::Relaxed)
    }

    /// Handles of this device that were dropped inside a batch nobody
    /// flushed (a batch that went out of scope, or was dropped, with items
    /// in it). No device was given their addresses (a hand-over is granted
    /// only by the flush), so their work was completed and their mappings
    /// torn down and buffers freed, but the driver lost them: a receive
    /// ring refilled through such a batch is short of those buffers. A
    /// batch given up on purpose (`Batch::discard`, `FixedBatch::discard`,
    /// a failed `FixedBatch::map`) is not counted.
    /// In debug builds with `std`, dropping a non-empty batch also panics
    /// (unless the thread is already panicking).
    pub fn unflushed(&self) -> usize {
        self.unflushed.load(Ordering::Relaxed)
    }

    /// Completion barriers issued (`dsb sy`, `sfence`) or IOTLB syncs.
    pub fn barriers(&self) -> usize {
        self.barriers.load(Ordering::Relaxed)
    }

    /// Cache lines cleaned (written back) for the device.
    pub fn lines_cleaned(&self) -> usize {
        self.lines_cleaned.load(Ordering::Relaxed)
    }

    /// Cache lines invalidated for the CPU.
    pub fn lines_invalidated(&self) -> usize {
        self.lines_invalidated.load(Ordering::Relaxed)
    }

    /// IOTLB invalidations issued (each covering every range gathered
    /// since the last).
    pub fn iotlb_invalidations(&self) -> usize {
        self.iotlb_invalidations.load(Ordering::Relaxed)
    }

    /// Mappings that were bounced.
    pub fn bounced(&self) -> usize {
        self.bounced.load(Ordering::Relaxed)
    }

    /// Bytes of the mappings that were bounced.
    pub fn bounced_bytes(&self) -> usize {
        self.bounced_bytes.load(Ordering::Relaxed)
    }

    /// Counts one IOTLB invalidation.
    #[inline]
    pub fn add_iotlb_invalidation(&self) {
        self.iotlb_invalidations.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one bounced mapping of `bytes`.
    #[inline]
    pub fn add_bounced(&self, bytes: usize) {
        // Exact: a bounce costs a copy anyway, and callers count on it.
        self.bounced.fetch_add(1, Ordering::Relaxed);
        self.bounced_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `n` completion barriers.
    #[inline]
    pub fn add_barriers(&self, n: usize) {
        self.barriers.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` cleaned lines.
    #[inline(always)]
    pub fn add_lines_cleaned(&self, n: usize) {
        // Zero (a coherent backend's every call) folds away: no store.
        if n != 0 {
            bump(&self.lines_cleaned, n);
        }
    }

    /// Counts `n` invalidated lines.
    #[inline(always)]
    pub fn add_lines_invalidated(&self, n: usize) {
        if n != 0 {
            bump(&self.lines_invalidated, n);
        }
    }

    /// Counts one handle dropped inside an unflushed batch (a cold path:
    /// an exact atomic add).
    pub(crate) fn record_unflushed(&self) {
        self.unflushed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_leak(&self, bytes: usize) {
        if mutated(Mutation::LeakCountLoadStore) {
            // The mutation: a load and a store (`bump`), not an atomic add.
            bump(&self.leaked, 1);
            bump(&self.leaked_bytes, bytes);
            return;
        }
        self.leaked.fetch_add(1, Ordering::Relaxed);
        self.leaked_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// What a backend sees of the device: its limits and its counters.
#[derive(Debug)]
pub struct DeviceContext {
    id: DeviceId,
    config: DeviceConfig,
    stats: DeviceStats,
}

impl DeviceContext {
    /// The context of a new device.
    pub(crate) fn new(id: DeviceId, config: DeviceConfig) -> Self {
        Self {
            id,
            config,
            stats: DeviceStats::new(),
        }
    }

    /// The device's identity, unique for the life of the program.
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// The device's limits.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// The device's counters.
    pub fn stats(&self) -> &DeviceStats {
        &self.stats
    }
}
