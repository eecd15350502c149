//! A simulated IOMMU: the hardware side of an
//! [`IommuDomain`](crate::backend::iommu::IommuDomain), with an IOTLB.
//!
//! A device access is translated the way the hardware does it: an IOTLB
//! hit is used as it is (even if the page table entry behind it has been
//! cleared since: that is the window lazy invalidation leaves open); a
//! miss walks the page table and caches the entry. A missing entry or a
//! missing permission is an IOMMU fault: it is logged
//! ([`SimIommu::faults`]) and the access fails before any byte moves.
//! Invalidations are queued when issued and take effect when
//! [`IommuHardware::sync`] completes them, as on hardware with a command
//! queue.

use std::collections::BTreeMap;
use std::vec::Vec;

use crate::api::device::{Device, DeviceConfig};
use crate::backend::compose::{Coherent, Composed, NoBounce, NonCoherent};
use crate::backend::iommu::{
    InvalidationMode, IommuDomain, IommuHardware, PAGE_SHIFT, PAGE_SIZE, Pte,
};
use crate::base::addr::{DmaAddr, PhysAddr};
use crate::sim::SimPlatform;
use crate::sim::cache::SimCache;
use crate::sim::device::{Access, BusTranslate, SimFault};
use crate::sim::memory::SimMemory;
use crate::sync::{AtomicUsize, Mutex, Ordering, lock};

pub use crate::backend::iommu::fault::{FaultReason, IommuFault};

/// An issued, not yet completed invalidation, in page frames.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Range { start: u64, end: u64 },
    All,
}

/// Cached translations: IOVA page frame → entry and insertion sequence.
#[derive(Debug, Default)]
struct Iotlb {
    entries: BTreeMap<u64, (Pte, u64)>,
    seq: u64,
}

impl Iotlb {
    fn insert(&mut self, pfn: u64, pte: Pte, capacity: usize) {
        if self.entries.len() >= capacity {
            // Evict the oldest entry.
            if let Some((&old, _)) = self.entries.iter().min_by_key(|(_, (_, s))| *s) {
                self.entries.remove(&old);
            }
        }
        self.seq += 1;
        self.entries.insert(pfn, (pte, self.seq));
    }

    fn apply(&mut self, p: Pending) {
        match p {
            Pending::All => self.entries.clear(),
            Pending::Range { start, end } => {
                let doomed: Vec<u64> = self.entries.range(start..end).map(|(&k, _)| k).collect();
                doomed.into_iter().for_each(|k| {
                    self.entries.remove(&k);
                });
            }
        }
    }
}

/// A simulated IOMMU with an IOTLB and a fault log. See the module docs.
///
/// # Example
///
/// ```
/// use dmacap::backend::iommu::InvalidationMode;
/// use dmacap::sim::{FaultReason, SimPlatform};
/// use dmacap::DeviceConfig;
///
/// let sim = SimPlatform::new(1 << 20);
/// let dev = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
/// let engine = sim.device(&dev);
/// let tx = dev.map_to_device(sim.memory().alloc_slice::<u8>(8).unwrap()).unwrap();
/// // The device may read a ToDevice buffer, never write it.
/// assert!(engine.write(tx.dma_addr(), b"x").is_err());
/// let iommu = dev.backend().translation().hardware();
/// assert_eq!(iommu.faults()[0].reason, FaultReason::Denied);
/// // SAFETY: the device is not running.
/// drop(unsafe { tx.unmap() });
/// ```
#[derive(Debug)]
pub struct SimIommu {
    iotlb: Mutex<Iotlb>,
    capacity: usize,
    pending: Mutex<Vec<Pending>>,
    faults: Mutex<Vec<IommuFault>>,
    hits: AtomicUsize,
    misses: AtomicUsize,
    stale_hits: AtomicUsize,
    syncs: AtomicUsize,
}

impl Default for SimIommu {
    fn default() -> Self {
        Self::new()
    }
}

impl SimIommu {
    /// IOTLB entries unless told otherwise.
    pub const DEFAULT_IOTLB_ENTRIES: usize = 64;

    /// An IOMMU with a [`DEFAULT_IOTLB_ENTRIES`](Self::DEFAULT_IOTLB_ENTRIES)-entry
    /// IOTLB.
    pub fn new() -> Self {
        Self::with_iotlb_entries(Self::DEFAULT_IOTLB_ENTRIES)
    }

    /// An IOMMU whose IOTLB holds `entries` translations (at least one);
    /// the oldest is evicted first.
    pub fn with_iotlb_entries(entries: usize) -> Self {
        Self {
            iotlb: Mutex::new(Iotlb::default()),
            capacity: entries.max(1),
            pending: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            hits: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
            stale_hits: AtomicUsize::new(0),
            syncs: AtomicUsize::new(0),
        }
    }

    /// Every fault so far, oldest first.
    pub fn faults(&self) -> Vec<IommuFault> {
        lock(&self.faults).clone()
    }

    /// Empties the fault log and returns what it held.
    pub fn take_faults(&self) -> Vec<IommuFault> {
        core::mem::take(&mut *lock(&self.faults))
    }

    /// Translations cached now.
    pub fn iotlb_entries(&self) -> usize {
        lock(&self.iotlb).entries.len()
    }

    /// Accesses translated by a cached entry.
    pub fn iotlb_hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }

    /// Accesses that walked the page table.
    pub fn iotlb_misses(&self) -> usize {
        self.misses.load(Ordering::Relaxed)
    }

    /// Accesses translated by a cached entry that the page table no longer
    /// holds: the device reached memory that was unmapped, because its
    /// invalidation had not completed. Only lazy invalidation allows it.
    pub fn stale_hits(&self) -> usize {
        self.stale_hits.load(Ordering::Relaxed)
    }

    /// Syncs completed.
    pub fn syncs(&self) -> usize {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Translates a device access at `dma`, walking the page table with
    /// `walk` on an IOTLB miss.
    fn translate(
        &self,
        dma: DmaAddr,
        access: Access,
        walk: impl Fn(DmaAddr) -> Option<Pte>,
    ) -> Result<(PhysAddr, u64), SimFault> {
        let d = dma.as_u64();
        let pfn = d >> PAGE_SHIFT;
        let page = DmaAddr::new(pfn << PAGE_SHIFT);
        // The IOTLB stays locked through the walk and the fill, so a sync
        // cannot complete between them and leave a stale entry behind.
        let mut tlb = lock(&self.iotlb);
        let cached = tlb.entries.get(&pfn).map(|&(pte, _)| pte);
        let pte = match cached {
            Some(pte) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                if walk(page) != Some(pte) {
                    self.stale_hits.fetch_add(1, Ordering::Relaxed);
                }
                pte
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                match walk(page) {
                    Some(pte) => {
                        tlb.insert(pfn, pte, self.capacity);
                        pte
                    }
                    None => {
                        drop(tlb);
                        return Err(self.fault(dma, access, FaultReason::Untranslated));
                    }
                }
            }
        };
        drop(tlb);
        let allowed = match access {
            Access::Read => pte.can_read(),
            Access::Write => pte.can_write(),
        };
        if !allowed {
            return Err(self.fault(dma, access, FaultReason::Denied));
        }
        let off = d & (PAGE_SIZE - 1);
        Ok((PhysAddr::new(pte.phys().as_u64() + off), PAGE_SIZE - off))
    }

    /// Logs a fault and returns the device's view of it.
    fn fault(&self, iova: DmaAddr, access: Access, reason: FaultReason) -> SimFault {
        lock(&self.faults).push(IommuFault {
            iova,
            access,
            reason,
        });
        match reason {
            FaultReason::Untranslated => SimFault::Untranslated { dma: iova, access },
            FaultReason::Denied => SimFault::Denied { dma: iova, access },
        }
    }
}

// SAFETY: (1) an invalidation only queues; `sync` applies every queued one
// to the IOTLB under both locks (so a concurrent sync waits for it), and
// translations take that lock for the
// whole lookup, walk and fill, so after `sync` returns no translation uses
// or re-caches an entry it removed (a walk after the entries were cleared
// finds nothing). (2) `translate` uses only the IOTLB and the domain's
// walk, and checks the entry's read or write bit.
unsafe impl IommuHardware for SimIommu {
    fn invalidate_range(&self, iova: DmaAddr, len: u64) {
        let start = iova.as_u64() >> PAGE_SHIFT;
        let end = (iova.as_u64() + len).div_ceil(PAGE_SIZE);
        lock(&self.pending).push(Pending::Range { start, end });
    }

    fn invalidate_all(&self) {
        lock(&self.pending).push(Pending::All);
    }

    fn sync(&self) {
        // The queue stays locked until the IOTLB is updated, so a
        // concurrent sync cannot return while an invalidation issued
        // before it is still being applied by this one.
        let mut pending = lock(&self.pending);
        let mut tlb = lock(&self.iotlb);
        pending.drain(..).for_each(|p| tlb.apply(p));
        drop(tlb);
        drop(pending);
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }
}

impl BusTranslate for IommuDomain<SimIommu> {
    fn translate(&self, dma: DmaAddr, access: Access) -> Result<(PhysAddr, u64), SimFault> {
        self.hardware()
            .translate(dma, access, |iova| self.walk(iova))
    }
}

/// The backend of a coherent device behind a simulated IOMMU.
pub type SimIommuBackend = Composed<SimMemory, IommuDomain<SimIommu>, Coherent, NoBounce>;

/// The backend of a non-coherent device (cache maintenance on every
/// hand-over) behind a simulated IOMMU.
pub type SimNonCoherentIommuBackend =
    Composed<SimMemory, IommuDomain<SimIommu>, NonCoherent<SimCache>, NoBounce>;

impl SimPlatform {
    /// A coherent device behind its own simulated IOMMU domain (over the
    /// whole 48-bit IOVA space) with invalidation `mode` and limits
    /// `config`.
    pub fn iommu_device(
        &self,
        mode: InvalidationMode,
        config: DeviceConfig,
    ) -> Device<SimIommuBackend> {
        let domain = IommuDomain::new(SimIommu::new(), mode);
        Device::new(
            Composed::from_parts(self.memory().clone(), domain, Coherent, NoBounce),
            config,
        )
    }

    /// A non-coherent device behind its own simulated IOMMU domain (over
    /// the whole 48-bit IOVA space) with strict invalidation: every unmap
    /// completes its IOTLB invalidation before the IOVA is reused, and
    /// every hand-over is paired with [`SimCache`] maintenance.
    ///
    /// ```
    /// use dmacap::DeviceConfig;
    /// use dmacap::sim::SimPlatform;
    ///
    /// let sim = SimPlatform::noncoherent(1 << 20);
    /// let dev = sim.noncoherent_iommu_device(DeviceConfig::new());
    /// let mut tx = sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap();
    /// tx.fill(0x5a);
    /// let tx = dev.map_to_device(tx).unwrap();
    /// let mut got = [0u8; 64];
    /// sim.device(&dev).read(tx.dma_addr(), &mut got).unwrap();
    /// assert_eq!(got, [0x5a; 64]);
    /// // SAFETY: the simulated read returned: the device has finished.
    /// let _buf = unsafe { tx.unmap() };
    /// ```
    ///
    /// # Panics
    ///
    /// If the RAM is coherent (made by [`new`](Self::new) or
    /// [`with_base`](Self::with_base)), which has no cache to maintain.
    pub fn noncoherent_iommu_device(
        &self,
        config: DeviceConfig,
    ) -> Device<SimNonCoherentIommuBackend> {
        let cache = self.memory().cache().expect(
            "a non-coherent device needs non-coherent RAM: make the platform with \
             SimPlatform::noncoherent",
        );
        let domain = IommuDomain::new(SimIommu::new(), InvalidationMode::Strict);
        Device::new(
            Composed::from_parts(self.memory().clone(), domain, NonCoherent(cache), NoBounce),
            config,
        )
    }
}
