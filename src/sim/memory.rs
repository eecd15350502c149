//! Simulated RAM: one block of host memory standing for a range of physical
//! addresses, an allocator over it, and raw physical access for devices.
//!
//! The RAM is coherent ([`SimMemory::with_base`]: the device reads and
//! writes the very bytes the CPU sees) or non-coherent
//! ([`SimMemory::noncoherent`]: the block is the CPU's cached view, and
//! the device reaches a separate copy of memory behind a simulated
//! write-back cache; see [`SimCache`](super::SimCache)).

use core::alloc::Layout;
use core::fmt;
use core::mem::{ManuallyDrop, align_of, size_of};
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::vec::Vec;

use zerocopy::FromZeros;

use crate::base::addr::PhysAddr;
use crate::base::buffer::{DmaBuffer, DmaTarget};
use crate::base::platform::{DeviceId, PhysLookup, Side};
use crate::sim::SimCache;
use crate::sim::cache::{CacheModel, LINE};
use crate::sync::{Mutex, MutexGuard};

/// Why a simulated allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SimAllocError {
    /// No free range is large enough.
    #[error("simulated RAM exhausted: no free range of {size} bytes aligned to {align}")]
    OutOfMemory {
        /// Bytes asked for.
        size: usize,
        /// Alignment asked for.
        align: usize,
    },
    /// The size overflows, or the alignment is not a power of two up to a
    /// page.
    #[error("invalid simulated allocation: {size} bytes aligned to {align}")]
    BadLayout {
        /// Bytes asked for.
        size: usize,
        /// Alignment asked for.
        align: usize,
    },
}

/// Why a device-side access to the simulated RAM was refused. Nothing was
/// read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PhysAccessError {
    /// The range is not (entirely) inside the simulated RAM.
    #[error("physical access of {len} bytes at {phys} is outside the simulated RAM")]
    OutsideRam {
        /// Start of the access.
        phys: PhysAddr,
        /// Its length.
        len: usize,
    },
    /// The range is RAM, but no mapping hands it to a device right now: the
    /// CPU owns it, or it is not mapped at all. On hardware this access
    /// would corrupt or leak memory the driver is using.
    #[error("physical access at {phys} touches memory no device owns")]
    NotDeviceOwned {
        /// The first byte not owned by a device.
        phys: PhysAddr,
    },
}

/// A range handed to one device, and the pointer (with the handle's own
/// provenance) through which that simulated device reaches it.
struct Grant {
    len: usize,
    ptr: NonNull<u8>,
    device: DeviceId,
}

/// The largest alignment an allocation may ask for: the RAM block itself is
/// page-aligned.
const RAM_ALIGN: usize = 4096;

/// Invariants: `base` points to `size` zero-initialised bytes allocated with
/// `layout`, freed only when the last `SimMemory` clone is dropped; `free`
/// holds disjoint, sorted, coalesced `(offset, len)` ranges inside it;
/// `granted` maps the offset of each range a handle has handed to its device
/// (and not taken back) to its length, the handle's pointer and the device;
/// the ranges are disjoint, and no CPU reference to those bytes exists (the promise of
/// [`PhysLookup::ownership_changed`]). `cache` is `Some` for non-coherent
/// RAM: then the block is the CPU's (cached) view, and the model holds
/// memory as the device sees it, `size` bytes indexed by offset, except in
/// `uncached` allocations, where the block is memory for CPU and device
/// alike. The simulator touches block bytes (beyond allocation) only with
/// the model's shadow lock held, or the grant table's for uncached ranges;
/// lock order: `granted`, then the shadow, then `uncached` (a leaf).
struct Ram {
    base: NonNull<u8>,
    size: usize,
    layout: Layout,
    phys_base: PhysAddr,
    free: Mutex<Vec<(usize, usize)>>,
    granted: Mutex<BTreeMap<usize, Grant>>,
    cache: Option<CacheModel>,
    /// Uncached allocations of non-coherent RAM: offset to length, and
    /// whether they were shared ([`DmaAllocator::make_visible`], the start
    /// of a coherent allocation's shared phase). A shared one has no line in
    /// the cache: the CPU's view *is* memory there, for every access.
    uncached: Mutex<BTreeMap<usize, (usize, bool)>>,
    /// Whether host memory outside the block has a physical identity
    /// ([`SimMemory::accept_host_memory`]).
    host: core::sync::atomic::AtomicBool,
}

// SAFETY: the RAM block is plain bytes; who may touch which part is decided
// by the allocator (under its mutex) and by the handles' ownership rules.
// The raw pointers in the grant table and in the cache model's pending
// invalidates are used only under their mutexes, within the promises their
// creators made (`ownership_changed`, `CacheMaintenance::invalidate`), from
// whichever thread.
unsafe impl Send for Ram {}
// SAFETY: as above.
unsafe impl Sync for Ram {}

impl Drop for Ram {
    fn drop(&mut self) {
        // SAFETY: allocated in `SimMemory::with_base` with this layout; no
        // buffer outlives the last clone (each holds one).
        unsafe { std::alloc::dealloc(self.base.as_ptr(), self.layout) }
    }
}

/// Simulated RAM with physical addresses. Cloning shares the same RAM.
///
/// Buffers allocated from it ([`SimBuffer`]) know their physical address,
/// and devices read and write it by physical address
/// ([`read_phys`](Self::read_phys), [`write_phys`](Self::write_phys)).
///
/// # Example
///
/// ```
/// use dmacap::PhysAddr;
/// use dmacap::sim::SimMemory;
///
/// let ram = SimMemory::with_base(PhysAddr::new(0x4000_0000), 1 << 16);
/// let mut b = ram.alloc_slice::<u8>(8).unwrap();
/// b[0] = 0xaa;
/// let phys = ram.phys_of_buffer(&b);
/// let mut out = [0u8; 1];
/// // No device owns the buffer, so a device-side read is refused.
/// let nic = dmacap::platform::DeviceId::fresh();
/// assert!(ram.read_phys(nic, phys, &mut out).is_err());
/// assert_eq!(phys.as_u64(), 0x4000_0000);
/// assert_eq!(ram.allocated_bytes(), 8);
/// drop(b);
/// assert_eq!(ram.allocated_bytes(), 0);
/// ```
#[derive(Clone)]
pub struct SimMemory {
    ram: Arc<Ram>,
}

impl fmt::Debug for SimMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimMemory")
            .field("phys_base", &self.ram.phys_base)
            .field("size", &self.ram.size)
            .field("coherent", &self.is_coherent())
            .field("allocated", &self.allocated_bytes())
            .finish()
    }
}

impl SimMemory {
    /// `size` bytes of coherent RAM at physical address `phys_base`: the
    /// device reads and writes exactly what the CPU sees.
    ///
    /// # Panics
    ///
    /// If `size` is zero, the range overflows, or the host cannot allocate
    /// it.
    pub fn with_base(phys_base: PhysAddr, size: usize) -> Self {
        Self::build(phys_base, size, None)
    }

    /// `size` bytes of RAM at physical address `phys_base`, behind a
    /// simulated write-back CPU cache with 64-byte lines that devices do
    /// not snoop. CPU references into its buffers see the cache; devices
    /// see memory; only [`SimCache`] maintenance (and
    /// [`evict_dirty`](Self::evict_dirty)) moves bytes between the two.
    ///
    /// ```
    /// use dmacap::PhysAddr;
    /// use dmacap::sim::SimMemory;
    ///
    /// let ram = SimMemory::noncoherent(PhysAddr::new(0x4000_0000), 1 << 12);
    /// assert!(!ram.is_coherent());
    /// assert!(ram.cache().is_some());
    /// assert!(SimMemory::with_base(PhysAddr::new(0), 64).cache().is_none());
    /// ```
    ///
    /// # Panics
    ///
    /// As for [`with_base`](Self::with_base), and if `phys_base` is not a
    /// multiple of the 64-byte line (CPU and physical addresses must agree
    /// on where lines start).
    pub fn noncoherent(phys_base: PhysAddr, size: usize) -> Self {
        assert!(
            phys_base.is_aligned(LINE as u64),
            "non-coherent simulated RAM must start on a 64-byte cache line"
        );
        Self::build(phys_base, size, Some(CacheModel::new(size)))
    }

    fn build(phys_base: PhysAddr, size: usize, cache: Option<CacheModel>) -> Self {
        assert!(size > 0, "simulated RAM needs at least one byte");
        assert!(
            phys_base.last_of(size as u64).is_some(),
            "simulated RAM runs past the end of the physical address space"
        );
        let layout = Layout::from_size_align(size, RAM_ALIGN).expect("simulated RAM layout");
        // SAFETY: `layout` has a non-zero size.
        let base = unsafe { std::alloc::alloc_zeroed(layout) };
        let base = NonNull::new(base).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Self {
            ram: Arc::new(Ram {
                base,
                size,
                layout,
                phys_base,
                free: Mutex::new(std::vec![(0, size)]),
                granted: Mutex::new(BTreeMap::new()),
                cache,
                uncached: Mutex::new(BTreeMap::new()),
                host: core::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Whether devices see what the CPU sees (RAM made by
    /// [`with_base`](Self::with_base)), rather than memory behind a
    /// simulated cache ([`noncoherent`](Self::noncoherent)).
    pub fn is_coherent(&self) -> bool {
        self.ram.cache.is_none()
    }

    /// The cache maintenance of non-coherent RAM, for a
    /// [`DirectNonCoherent`](crate::backend::noncoherent::DirectNonCoherent)
    /// backend; `None` for coherent RAM.
    pub fn cache(&self) -> Option<SimCache> {
        self.ram.cache.as_ref()?;
        Some(SimCache::new(self.clone()))
    }

    /// The cache model, for non-coherent RAM.
    pub(super) fn model(&self) -> Option<&CacheModel> {
        self.ram.cache.as_ref()
    }

    /// Evicts every dirty cache line of memory that is handed to a device
    /// now: writes the CPU's view of it back to memory, as a real cache may
    /// do at any moment. Returns the number of lines written back (always
    /// `0` for coherent RAM).
    ///
    /// Correct maintenance leaves no dirty line in device-owned memory (the
    /// clean at map and `sync_for_device` wrote them back), so this changes
    /// nothing; after a missing clean it overwrites what the device wrote
    /// with the CPU's stale data, which is what hardware does at random.
    /// Memory the CPU owns is left alone: its lines may be under live
    /// references.
    pub fn evict_dirty(&self) -> usize {
        let Some(model) = self.model() else {
            return 0;
        };
        let granted = self.ram.granted.lock().unwrap_or_else(|e| e.into_inner());
        let mut shadow = model.shadow();
        granted
            .iter()
            .filter(|&(&off, g)| !self.is_uncached(off, g.len))
            .map(|(&off, g)| {
                // SAFETY: the grant's pointer is valid for its `len` bytes,
                // which lie at `off` in the block, and no CPU reference to
                // them exists while they are granted (the promise of
                // `ownership_changed`); the grant table is locked, so none
                // is taken back meanwhile, and the shadow lock serialises
                // this with every other access the simulator makes.
                unsafe { shadow.evict(g.ptr, off, g.len) }
            })
            .sum()
    }

    /// The first physical address.
    pub fn phys_base(&self) -> PhysAddr {
        self.ram.phys_base
    }

    /// Where ordinary host memory appears once
    /// [`accept_host_memory`](Self::accept_host_memory) is called: 2^56,
    /// beyond every simulated bus window that a test sets up for its RAM,
    /// beyond a 32-bit or 48-bit mask, and beyond an IOMMU's 52-bit
    /// physical output.
    pub const HOST_PHYS_BASE: u64 = 1 << 56;

    /// The platform hook for ordinary host memory beside the simulated RAM
    /// (a stack or heap buffer): from now on, [`PhysLookup::phys_of`]
    /// gives such memory a physical identity in the *host window*,
    /// [`HOST_PHYS_BASE`](Self::HOST_PHYS_BASE) plus its host address,
    /// instead of refusing it.
    ///
    /// No simulated device reaches the host window (it is not RAM:
    /// [`SimFault::NotRam`](super::SimFault::NotRam)), like the private
    /// memory of a confidential guest. So a backend that translates it
    /// directly refuses it at map time (`NoDmaWindow` when the bus windows
    /// cover only the RAM, `BeyondMask` under a mask, `NoDmaWindow` behind
    /// an IOMMU, whose output stops at 2^52), and a backend with a bounce
    /// pool serves it by copying into a slot in the RAM, as swiotlb does.
    /// Without this hook such memory has no physical address at all and
    /// every backend refuses it with `NoPhysAddr`.
    ///
    /// It cannot be undone: mappings made meanwhile rely on the answer.
    ///
    /// ```
    /// use core::ptr::NonNull;
    /// use dmacap::platform::PhysLookup;
    /// use dmacap::sim::SimMemory;
    /// use dmacap::PhysAddr;
    ///
    /// let ram = SimMemory::with_base(PhysAddr::new(0x8000_0000), 1 << 16);
    /// let on_stack = [0u8; 16];
    /// let p = NonNull::from(&on_stack).cast::<u8>();
    /// assert_eq!(ram.phys_of(p, 16), None);
    /// ram.accept_host_memory();
    /// let phys = ram.phys_of(p, 16).unwrap();
    /// assert!(phys.as_u64() >= SimMemory::HOST_PHYS_BASE);
    /// assert!(!ram.contains(phys, 16)); // not RAM: no device reaches it
    /// ```
    pub fn accept_host_memory(&self) {
        self.ram
            .host
            .store(true, core::sync::atomic::Ordering::Relaxed);
    }

    /// Whether [`accept_host_memory`](Self::accept_host_memory) was called.
    pub fn accepts_host_memory(&self) -> bool {
        self.ram.host.load(core::sync::atomic::Ordering::Relaxed)
    }

    /// Whether `[off, off + len)` lies in one uncached allocation that was
    /// shared: memory no cache line holds.
    pub(super) fn is_uncached(&self, off: usize, len: usize) -> bool {
        let uncached = self.ram.uncached.lock().unwrap_or_else(|e| e.into_inner());
        uncached
            .range(..=off)
            .next_back()
            .is_some_and(|(&o, &(l, shared))| shared && off + len <= o + l)
    }

    /// The size in bytes.
    pub fn size(&self) -> usize {
        self.ram.size
    }

    fn free_list(&self) -> MutexGuard<'_, Vec<(usize, usize)>> {
        // A panic while holding the lock cannot leave the list inconsistent
        // (every update is a single assignment or insert), so poisoning is
        // ignored.
        self.ram.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes not allocated.
    pub fn free_bytes(&self) -> usize {
        self.free_list().iter().map(|&(_, len)| len).sum()
    }

    /// Bytes allocated and not yet freed (including quarantined buffers).
    pub fn allocated_bytes(&self) -> usize {
        self.ram.size - self.free_bytes()
    }

    /// Reserves `size` bytes aligned to `align`; returns the offset.
    fn reserve(&self, size: usize, align: usize) -> Result<usize, SimAllocError> {
        let bad = SimAllocError::BadLayout { size, align };
        if !align.is_power_of_two() || align > RAM_ALIGN {
            return Err(bad);
        }
        let mut free = self.free_list();
        for i in 0..free.len() {
            let (start, len) = free[i];
            let aligned = start.checked_next_multiple_of(align).ok_or(bad)?;
            let pad = aligned - start;
            if len < pad || len - pad < size {
                continue;
            }
            if crate::sync::mutated(crate::sync::Mutation::SimAllocChoiceUnlocked) {
                // The mutation: the lock is released between choosing the
                // range and taking it (the choice is not checked again).
                drop(free);
                free = self.free_list();
                if i >= free.len() {
                    free.push((start, len));
                }
            }
            let tail = len - pad - size;
            match (pad, tail) {
                (0, 0) => {
                    free.remove(i);
                }
                (0, _) => free[i] = (aligned + size, tail),
                (_, 0) => free[i] = (start, pad),
                (_, _) => {
                    free[i] = (start, pad);
                    free.insert(i + 1, (aligned + size, tail));
                }
            }
            return Ok(aligned);
        }
        Err(SimAllocError::OutOfMemory { size, align })
    }

    /// Returns `[offset, offset + size)` to the free list, coalescing.
    fn release(&self, offset: usize, size: usize) {
        let mut free = self.free_list();
        let i = free.partition_point(|&(s, _)| s < offset);
        // A double free would hand the same bytes out twice: checked in
        // every build.
        assert!(
            (i == 0 || free[i - 1].0 + free[i - 1].1 <= offset)
                && (i == free.len() || offset + size <= free[i].0),
            "simulated RAM at offset {offset:#x} ({size} bytes) freed twice"
        );
        free.insert(i, (offset, size));
        if i + 1 < free.len() && offset + size == free[i + 1].0 {
            free[i].1 += free[i + 1].1;
            free.remove(i + 1);
        }
        if i > 0 && free[i - 1].0 + free[i - 1].1 == offset {
            free[i - 1].1 += free[i].1;
            free.remove(i);
        }
    }

    /// Allocates `bytes` zeroed bytes aligned to `align` and returns a
    /// pointer to them (dangling but aligned when `bytes` is zero).
    fn alloc_raw(&self, bytes: usize, align: usize) -> Result<NonNull<u8>, SimAllocError> {
        if bytes == 0 {
            if !align.is_power_of_two() {
                return Err(SimAllocError::BadLayout { size: 0, align });
            }
            // An empty buffer owns no RAM; any aligned address will do.
            let dangling = core::ptr::without_provenance_mut::<u8>(align);
            return Ok(NonNull::new(dangling).expect("a power of two is not zero"));
        }
        let offset = self.reserve(bytes, align)?;
        // SAFETY: `offset + bytes <= size`, inside the RAM block.
        let ptr = unsafe { self.ram.base.add(offset) };
        // Freed memory may hold old bytes: hand out zeroes, as a fresh
        // allocation would (in memory and in the cache alike).
        let shadow = self.model().map(CacheModel::shadow);
        // SAFETY: the range was just reserved, so nothing else uses it.
        unsafe { ptr.write_bytes(0, bytes) };
        if let Some(mut shadow) = shadow {
            shadow.zero(offset, bytes);
        }
        Ok(ptr)
    }

    /// A zeroed `T`.
    pub fn alloc<T: FromZeros>(&self) -> Result<SimBuffer<T>, SimAllocError> {
        let ptr = self.alloc_raw(size_of::<T>(), align_of::<T>())?;
        Ok(SimBuffer {
            ptr: ptr.cast(),
            mem: self.clone(),
        })
    }

    /// A slice of `len` zeroed `T`s, aligned for `T`.
    pub fn alloc_slice<T: FromZeros>(&self, len: usize) -> Result<SimBuffer<[T]>, SimAllocError> {
        self.alloc_slice_aligned(len, align_of::<T>())
    }

    /// A slice of `len` zeroed `T`s whose first byte is aligned to `align`
    /// (at least `T`'s alignment, at most 4096).
    pub fn alloc_slice_aligned<T: FromZeros>(
        &self,
        len: usize,
        align: usize,
    ) -> Result<SimBuffer<[T]>, SimAllocError> {
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or(SimAllocError::BadLayout {
                size: usize::MAX,
                align,
            })?;
        let ptr = self.alloc_raw(bytes, align.max(align_of::<T>()))?;
        Ok(SimBuffer {
            ptr: NonNull::slice_from_raw_parts(ptr.cast::<T>(), len),
            mem: self.clone(),
        })
    }

    /// The physical address of a buffer allocated here.
    ///
    /// # Panics
    ///
    /// If the buffer is empty or belongs to another `SimMemory`.
    pub fn phys_of_buffer<T: ?Sized + DmaTarget>(&self, buf: &SimBuffer<T>) -> PhysAddr {
        let len = T::byte_len(buf.ptr);
        self.phys_of(buf.ptr.cast(), len)
            .expect("buffer is not a non-empty allocation of this simulated RAM")
    }

    /// The offset in the RAM block of `len` bytes at physical `phys`.
    fn offset_of(&self, phys: PhysAddr, len: usize) -> Option<usize> {
        let off = phys.as_u64().checked_sub(self.ram.phys_base.as_u64())?;
        let end = off.checked_add(len as u64)?;
        (end <= self.ram.size as u64).then_some(off as usize)
    }

    /// Whether `[phys, phys + len)` is entirely inside this RAM.
    pub fn contains(&self, phys: PhysAddr, len: usize) -> bool {
        self.offset_of(phys, len).is_some()
    }

    /// Bytes currently handed to devices (mapped and device-owned, or
    /// quarantined).
    pub fn device_owned_bytes(&self) -> usize {
        let granted = self.ram.granted.lock().unwrap_or_else(|e| e.into_inner());
        granted.values().map(|g| g.len).sum()
    }

    /// Runs `each(ptr, offset, len)` over the pieces of `[phys, phys + len)`,
    /// each reached through the pointer of the handle that granted it (and
    /// at `offset` in the block), once all pieces are known to be
    /// device-owned. The grant table stays locked throughout, so no handle
    /// can take a piece back in the middle.
    fn with_granted(
        &self,
        device: DeviceId,
        phys: PhysAddr,
        len: usize,
        mut each: impl FnMut(NonNull<u8>, usize, usize),
    ) -> Result<(), PhysAccessError> {
        let start = self
            .offset_of(phys, len)
            .ok_or(PhysAccessError::OutsideRam { phys, len })?;
        let granted = self.ram.granted.lock().unwrap_or_else(|e| e.into_inner());
        let mut pieces = Vec::new();
        let mut off = start;
        while off < start + len {
            let not_owned = PhysAccessError::NotDeviceOwned {
                phys: PhysAddr::new(self.ram.phys_base.as_u64() + off as u64),
            };
            let (&g_off, g) = granted.range(..=off).next_back().ok_or(not_owned)?;
            if off >= g_off + g.len || g.device != device {
                return Err(not_owned);
            }
            let n = (g_off + g.len - off).min(start + len - off);
            // SAFETY: `off - g_off < g.len`: inside the granted range, for
            // which the handle's pointer is valid.
            pieces.push((unsafe { g.ptr.add(off - g_off) }, off, n));
            off += n;
        }
        for (ptr, off, n) in pieces {
            each(ptr, off, n);
        }
        Ok(())
    }

    /// Whether `device` may access `[phys, phys + len)` now: `Ok` if every
    /// byte is RAM one of its live mappings hands to it.
    pub fn check_device_owned(
        &self,
        device: DeviceId,
        phys: PhysAddr,
        len: usize,
    ) -> Result<(), PhysAccessError> {
        self.with_granted(device, phys, len, |_, _, _| {})
    }

    /// Reads RAM at physical address `phys` as `device` does: only memory
    /// one of its live mappings has handed to it, and not through any CPU
    /// cache (for non-coherent RAM, memory behind the simulated cache).
    pub fn read_phys(
        &self,
        device: DeviceId,
        phys: PhysAddr,
        out: &mut [u8],
    ) -> Result<(), PhysAccessError> {
        let mut at = 0;
        if let Some(model) = self.model() {
            return self.with_granted(device, phys, out.len(), |src, off, n| {
                if self.is_uncached(off, n) {
                    // SAFETY: as in the coherent case below: granted, so
                    // valid and unreferenced; `out` is distinct.
                    unsafe {
                        core::ptr::copy_nonoverlapping(src.as_ptr(), out[at..].as_mut_ptr(), n)
                    };
                } else {
                    model.shadow().read_ram(off, &mut out[at..at + n]);
                }
                at += n;
            });
        }
        self.with_granted(device, phys, out.len(), |src, _, n| {
            // SAFETY: `src` is valid for `n` bytes (granted), and no CPU
            // reference to them exists while they are granted; `out` is a
            // distinct, caller-owned slice.
            unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), out[at..].as_mut_ptr(), n) };
            at += n;
        })
    }

    /// Reads RAM at `phys` as a *rogue* device does: whether or not any
    /// mapping handed it to a device. This is how a test shows what a device
    /// could see beyond its buffer (the rest of an IOMMU page, say).
    ///
    /// # Safety
    ///
    /// No `&mut` reference to any byte read is live, and no thread writes
    /// them during the call (the read is an ordinary Rust read of memory that
    /// safe code may own).
    pub unsafe fn read_phys_unchecked(
        &self,
        phys: PhysAddr,
        out: &mut [u8],
    ) -> Result<(), PhysAccessError> {
        let off = self
            .offset_of(phys, out.len())
            .ok_or(PhysAccessError::OutsideRam {
                phys,
                len: out.len(),
            })?;
        if let Some(model) = self.model() {
            model.shadow().read_ram(off, out);
            return Ok(());
        }
        // SAFETY: inside the RAM block (checked); no `&mut` to these bytes
        // is live and nobody writes them now (caller); `out` is distinct.
        unsafe {
            core::ptr::copy_nonoverlapping(
                self.ram.base.as_ptr().add(off),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        Ok(())
    }

    /// Writes RAM at physical address `phys` as `device` does: only memory
    /// one of its live mappings has handed to it (for non-coherent RAM,
    /// memory behind the simulated cache: the CPU sees it only after an
    /// invalidate).
    pub fn write_phys(
        &self,
        device: DeviceId,
        phys: PhysAddr,
        data: &[u8],
    ) -> Result<(), PhysAccessError> {
        let mut at = 0;
        if let Some(model) = self.model() {
            return self.with_granted(device, phys, data.len(), |dst, off, n| {
                if self.is_uncached(off, n) {
                    // SAFETY: as in the coherent case below.
                    unsafe { core::ptr::copy_nonoverlapping(data[at..].as_ptr(), dst.as_ptr(), n) };
                } else {
                    model.shadow().write_ram(off, &data[at..at + n]);
                }
                at += n;
            });
        }
        self.with_granted(device, phys, data.len(), |dst, _, n| {
            // SAFETY: as in `read_phys`; `data` is caller-owned and not
            // device-owned memory (which no reference can point to).
            unsafe { core::ptr::copy_nonoverlapping(data[at..].as_ptr(), dst.as_ptr(), n) };
            at += n;
        })
    }
}

// SAFETY: an address inside the RAM block maps to `phys_base` plus its
// offset, contiguously, for as long as the block lives (every buffer and
// every handle's `Keep` holds a clone, so it outlives its mappings); the
// whole range must lie inside the block. With the host-memory hook, any
// other range maps to the host window, contiguously (its host address plus
// a constant, refused if it would leave the window); host memory never
// moves while Rust owns it, and no simulated device can reach the window
// (it is not RAM), so the only use a backend can make of the answer is to
// refuse it or to bounce it.
unsafe impl PhysLookup for SimMemory {
    fn phys_of(&self, cpu: NonNull<u8>, len: usize) -> Option<PhysAddr> {
        match self.cpu_offset(cpu, len) {
            Some(off) => self.ram.phys_base.checked_add(off as u64),
            None if self.accepts_host_memory() => host_phys(cpu, len),
            None => None,
        }
    }

    unsafe fn ownership_changed(&self, cpu: NonNull<u8>, len: usize, to: Side, device: DeviceId) {
        let Some(off) = self.cpu_offset(cpu, len) else {
            return; // not this RAM's memory: no simulated device can reach it
        };
        let mut granted = self.ram.granted.lock().unwrap_or_else(|e| e.into_inner());
        // A grant that overlaps another, or a take-back that does not match
        // a grant, means a device could reach memory the CPU uses: checked
        // in every build, and refused before anything changes.
        match to {
            Side::Device => {
                let before = granted.range(..=off).next_back();
                let after = granted.range(off..).next();
                let overlaps = before.is_some_and(|(&o, g)| o + g.len > off)
                    || after.is_some_and(|(&o, _)| o < off + len);
                assert!(
                    !overlaps,
                    "simulated RAM at offset {off:#x} ({len} bytes) handed to a device twice"
                );
                granted.insert(
                    off,
                    Grant {
                        len,
                        ptr: cpu,
                        device,
                    },
                );
            }
            Side::Cpu => {
                let matches = granted
                    .get(&off)
                    .is_some_and(|g| g.len == len && g.device == device);
                assert!(
                    matches,
                    "simulated RAM at offset {off:#x} ({len} bytes) taken back from a device \
                     that was never handed it"
                );
                granted.remove(&off);
            }
        }
    }
}

impl SimMemory {
    /// The shared range holding `len` bytes at `ptr`, as `(offset, grant
    /// pointer for them)`, with the grant table locked so that no device
    /// access runs meanwhile.
    ///
    /// # Panics
    ///
    /// If the bytes are not inside one granted range: shared memory is
    /// accessed only while it is handed to a device.
    fn shared_access<R>(
        &self,
        ptr: NonNull<u8>,
        len: usize,
        f: impl FnOnce(Option<&CacheModel>, usize) -> R,
    ) -> R {
        let off = self
            .cpu_offset(ptr, len)
            .expect("shared access outside the simulated RAM");
        let granted = self.ram.granted.lock().unwrap_or_else(|e| e.into_inner());
        let inside = granted
            .range(..=off)
            .next_back()
            .is_some_and(|(&g, grant)| off + len <= g + grant.len);
        assert!(inside, "shared access to memory no device shares");
        // An uncached allocation has no cache line: the CPU's view is memory.
        let model = self.model().filter(|_| !self.is_uncached(off, len));
        let r = f(model, off);
        drop(granted);
        r
    }
}

// SAFETY: (1) `alloc` reserves a fresh range of the block from the
// allocator (exclusively the caller's until `free` releases it), zeroed in
// the CPU's view and in memory alike, contiguous from its physical address,
// and refused if its last byte lies above `max_phys`; alignment is at most a
// page, the block's own. (2) An uncached allocation of non-coherent RAM
// is recorded as such, and once shared (`make_visible`, which writes its
// lines back first) no cache line holds it: the CPU (through any pointer,
// the shared accessors or a driver's own, as `virtio-drivers` reads its
// rings), cache maintenance (ignored there) and devices all use the block,
// as with an uncached mapping; memory allocated cached is reached past the
// cache by the shared accessors; on coherent RAM the CPU and devices share
// the block. (3) `read_shared` and
// `write_shared` hold the grant table's lock, which every device access
// holds too, so they never race a device access. (4) `make_visible` writes
// back the range's dirty lines.
unsafe impl crate::base::platform::DmaAllocator for SimMemory {
    fn alloc_dma(
        &self,
        size: usize,
        align: usize,
        max_phys: u64,
        uncached: bool,
    ) -> Option<NonNull<u8>> {
        if size == 0 {
            return None;
        }
        let off = self.reserve(size, align).ok()?;
        let last = self.ram.phys_base.as_u64() + (off + size - 1) as u64;
        if last > max_phys {
            self.release(off, size);
            return None;
        }
        // SAFETY: `off + size <= size of the block`: reserved inside it.
        let ptr = unsafe { self.ram.base.add(off) };
        let shadow = self.model().map(CacheModel::shadow);
        // SAFETY: just reserved, so nothing else uses it.
        unsafe { ptr.write_bytes(0, size) };
        if let Some(mut shadow) = shadow {
            shadow.zero(off, size);
            if uncached {
                let mut u = self.ram.uncached.lock().unwrap_or_else(|e| e.into_inner());
                u.insert(off, (size, false));
            }
        }
        Some(ptr)
    }

    unsafe fn free_dma(&self, ptr: NonNull<u8>, size: usize, _align: usize) {
        let off = self
            .cpu_offset(ptr, size)
            .expect("freeing memory this simulated RAM did not allocate");
        self.ram
            .uncached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&off);
        self.release(off, size);
    }

    unsafe fn make_visible(&self, ptr: NonNull<u8>, len: usize) {
        let (Some(model), Some(off)) = (self.model(), self.cpu_offset(ptr, len)) else {
            return;
        };
        // SAFETY: the bytes are an allocation of this RAM that no reference
        // uses any more (caller), at `off` in the block.
        unsafe { model.shadow().evict(ptr, off, len) };
        // An uncached allocation is shared from now on: the CPU's view and
        // memory are one (written back just above, so they agree).
        let mut u = self.ram.uncached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((l, shared)) = u.get_mut(&off) {
            if len <= *l {
                *shared = true;
            }
        }
    }

    unsafe fn read_shared<T: zerocopy::FromBytes>(&self, src: NonNull<T>) -> T {
        let len = size_of::<T>();
        let mut out = core::mem::MaybeUninit::<T>::uninit();
        let dst = out.as_mut_ptr().cast::<u8>();
        self.shared_access(src.cast(), len, |model, off| match model {
            Some(model) => {
                // SAFETY: `dst` is a local of `len` bytes.
                let out = unsafe { core::slice::from_raw_parts_mut(dst, len) };
                model.shadow().read_ram(off, out);
            }
            // SAFETY: `src` is valid for `len` bytes (caller) and no device
            // access runs while the grant table is locked; `dst` is a local.
            None => unsafe { core::ptr::copy_nonoverlapping(src.as_ptr().cast::<u8>(), dst, len) },
        });
        // SAFETY: all `len` bytes were written, and every bit pattern is a
        // valid `T` (`FromBytes`).
        unsafe { out.assume_init() }
    }

    unsafe fn write_shared<T: zerocopy::IntoBytes>(&self, dst: NonNull<T>, value: T) {
        // SAFETY: a `T: IntoBytes` has no padding: all its bytes are
        // initialised; the slice lives no longer than `value`.
        let bytes = unsafe {
            core::slice::from_raw_parts(core::ptr::from_ref(&value).cast::<u8>(), size_of::<T>())
        };
        self.shared_access(dst.cast(), bytes.len(), |model, off| match model {
            Some(model) => model.shadow().write_ram(off, bytes),
            // SAFETY: `dst` is valid for the bytes (caller) and no device
            // access runs while the grant table is locked.
            None => unsafe {
                core::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    dst.as_ptr().cast::<u8>(),
                    bytes.len(),
                )
            },
        });
    }
}

impl SimMemory {
    /// The offset of `len` bytes at `cpu` in the RAM block, if they are all
    /// inside it.
    pub(super) fn cpu_offset(&self, cpu: NonNull<u8>, len: usize) -> Option<usize> {
        let base = self.ram.base.as_ptr() as usize;
        let off = (cpu.as_ptr() as usize).checked_sub(base)?;
        (off.checked_add(len)? <= self.ram.size).then_some(off)
    }
}

/// The host window's address of `len` bytes of host memory at `cpu`
/// ([`SimMemory::accept_host_memory`]), if the range fits in the window's
/// 2^56 bytes.
fn host_phys(cpu: NonNull<u8>, len: usize) -> Option<PhysAddr> {
    let addr = cpu.as_ptr() as usize as u64;
    let end = addr.checked_add(len as u64)?;
    (end <= SimMemory::HOST_PHYS_BASE).then(|| PhysAddr::new(SimMemory::HOST_PHYS_BASE + addr))
}

/// A buffer in simulated RAM: a `T` or `[T]` that knows its physical
/// address. Dereferences to its contents; dropping it frees the RAM.
///
/// # Invariants
///
/// `ptr` is aligned and points to `T::byte_len(ptr)` initialised bytes
/// reserved in `mem` for this buffer alone (or is dangling when that is
/// zero).
pub struct SimBuffer<T: ?Sized + DmaTarget> {
    ptr: NonNull<T>,
    mem: SimMemory,
}

// SAFETY: the buffer owns its contents like a `Box<T>` does.
unsafe impl<T: ?Sized + DmaTarget + Send> Send for SimBuffer<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + DmaTarget + Sync> Sync for SimBuffer<T> {}

impl<T: ?Sized + DmaTarget> SimBuffer<T> {
    /// The RAM it lives in.
    pub fn memory(&self) -> &SimMemory {
        &self.mem
    }
}

impl<T: ?Sized + DmaTarget> Deref for SimBuffer<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: by the invariant the pointer is valid, initialised and
        // owned by this buffer.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ?Sized + DmaTarget> DerefMut for SimBuffer<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`; `&mut self` makes it exclusive.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: ?Sized + DmaTarget> Drop for SimBuffer<T> {
    fn drop(&mut self) {
        let len = T::byte_len(self.ptr);
        if len > 0 {
            let off = self.ptr.as_ptr() as *mut u8 as usize - self.mem.ram.base.as_ptr() as usize;
            // The pointer lies in the block by the invariant. The contents
            // are zerocopy types with no destructor to run.
            self.mem.release(off, len);
        }
    }
}

impl<T: ?Sized + DmaTarget + fmt::Debug> fmt::Debug for SimBuffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

// SAFETY: (1) the pointer is aligned and valid for its bytes, which are
// initialised (zeroed at allocation). (2) The reservation is held until the
// buffer is rebuilt and dropped; `Keep` is the RAM handle, so forgetting it
// keeps the block alive and the reservation is never released. (3) The same
// pointer and RAM rebuild the same buffer.
unsafe impl<T: ?Sized + DmaTarget> DmaBuffer for SimBuffer<T> {
    type Target = T;
    type Keep = SimMemory;

    fn into_raw_parts(self) -> (NonNull<T>, SimMemory) {
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so `mem` is moved out once.
        (this.ptr, unsafe { core::ptr::read(&this.mem) })
    }

    unsafe fn from_raw_parts(ptr: NonNull<T>, mem: SimMemory) -> Self {
        Self { ptr, mem }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_reuses_and_coalesces() {
        let ram = SimMemory::with_base(PhysAddr::new(0x1000), 4096);
        let a = ram.alloc_slice::<u8>(1000).unwrap();
        let b = ram.alloc_slice::<u8>(1000).unwrap();
        let c = ram.alloc_slice::<u8>(1000).unwrap();
        assert_eq!(ram.allocated_bytes(), 3000);
        assert!(matches!(
            ram.alloc_slice::<u8>(2000),
            Err(SimAllocError::OutOfMemory { .. })
        ));
        drop(b);
        drop(a);
        // a and b coalesced: 2000 contiguous bytes are free again.
        let d = ram.alloc_slice::<u8>(2000).unwrap();
        assert_eq!(ram.phys_of_buffer(&d), PhysAddr::new(0x1000));
        drop(c);
        drop(d);
        assert_eq!(ram.free_bytes(), 4096);
    }

    #[test]
    fn alignment_and_zeroing() {
        let ram = SimMemory::with_base(PhysAddr::new(0), 8192);
        let mut a = ram.alloc_slice::<u8>(3).unwrap();
        a.copy_from_slice(&[1, 2, 3]);
        drop(a);
        let b = ram.alloc_slice_aligned::<u8>(3, 128).unwrap();
        assert!(ram.phys_of_buffer(&b).is_aligned(128));
        let c = ram.alloc_slice::<u8>(3).unwrap();
        assert_eq!(&*c, &[0, 0, 0]);
        assert!(ram.alloc_slice_aligned::<u8>(1, 3).is_err());
        assert!(ram.alloc_slice_aligned::<u8>(1, 8192).is_err());
    }

    #[test]
    fn physical_access_needs_ram_and_a_grant() {
        let dev = DeviceId::fresh();
        let other = DeviceId::fresh();
        let ram = SimMemory::with_base(PhysAddr::new(0x1000), 64);
        let mut a = ram.alloc_slice::<u8>(32).unwrap();
        let b = ram.alloc_slice::<u8>(32).unwrap();
        let not_owned = |p| {
            Err(PhysAccessError::NotDeviceOwned {
                phys: PhysAddr::new(p),
            })
        };
        assert_eq!(
            ram.write_phys(dev, PhysAddr::new(0x1000), &[1; 64]),
            not_owned(0x1000)
        );
        assert!(matches!(
            ram.write_phys(dev, PhysAddr::new(0x1001), &[1; 64]),
            Err(PhysAccessError::OutsideRam { .. })
        ));
        assert!(
            ram.read_phys(dev, PhysAddr::new(0xfff), &mut [0; 1])
                .is_err()
        );
        assert!(
            ram.read_phys(dev, PhysAddr::new(u64::MAX), &mut [0; 2])
                .is_err()
        );

        let a_ptr = NonNull::from(&mut *a).cast::<u8>();
        // SAFETY: `a` is not used again until handed back below.
        unsafe { ram.ownership_changed(a_ptr, 32, Side::Device, dev) };
        assert_eq!(ram.device_owned_bytes(), 32);
        // Another device has no mapping there.
        assert_eq!(
            ram.write_phys(other, PhysAddr::new(0x1000), &[7; 32]),
            not_owned(0x1000)
        );
        assert!(ram.write_phys(dev, PhysAddr::new(0x1000), &[7; 32]).is_ok());
        // Spilling into `b`, which no device owns, is refused whole.
        assert_eq!(
            ram.write_phys(dev, PhysAddr::new(0x1010), &[9; 32]),
            not_owned(0x1020)
        );
        // SAFETY: handed over above.
        unsafe { ram.ownership_changed(a_ptr, 32, Side::Cpu, dev) };
        assert_eq!(&a[..], &[7; 32]);
        assert_eq!(&b[..], &[0; 32]);
        assert_eq!(
            ram.read_phys(dev, PhysAddr::new(0x1000), &mut [0; 1]),
            not_owned(0x1000)
        );
    }
}
