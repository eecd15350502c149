//! The platform hook that turns a CPU address into a physical address.
//!
//! dmacap asks it once per mapping, at map time, and keeps the answer in the
//! handle for every later sync and unmap. In a kernel it is a page-table
//! lookup (`virt_to_phys`, or a walk for vmalloc-like memory that is then
//! refused as non-contiguous); in identity-mapped firmware it is the
//! identity; on the simulated platform, the simulated RAM's own bookkeeping
//! (`sim::SimMemory`).

use core::ptr::NonNull;

use crate::base::addr::PhysAddr;

/// Translates CPU addresses of mappable memory to physical addresses.
///
/// # Safety
///
/// When [`phys_of`](Self::phys_of) returns `Some(p)` for `(cpu, len)`, the
/// implementation promises that the `len` bytes at `cpu` are backed by the
/// physically contiguous memory `[p, p + len)`, that `p + len` does not
/// overflow, and that this stays true while the memory is mapped (it is
/// pinned: not paged out, migrated or remapped). Return `None` for memory it
/// cannot vouch for (not contiguous, not pinned, not RAM).
pub unsafe trait PhysLookup {
    /// The physical address of the first byte of `len` bytes at `cpu`, or
    /// `None` when they are not contiguous, pinned RAM.
    fn phys_of(&self, cpu: NonNull<u8>, len: usize) -> Option<PhysAddr>;

    /// [`phys_of`](Self::phys_of) for bytes the caller knows to be part of
    /// one live Rust allocation, which never wraps around the address space
    /// (`cpu + len` fits in a `usize`). dmacap maps through this; a platform
    /// whose check in `phys_of` is only about that wrap (the identity) may
    /// skip it here. The default is `phys_of`.
    ///
    /// # Safety
    ///
    /// The caller promises that the `len` bytes at `cpu` lie inside one
    /// allocated object that is live for the duration of the call.
    #[inline(always)]
    unsafe fn phys_of_allocation(&self, cpu: NonNull<u8>, len: usize) -> Option<PhysAddr> {
        self.phys_of(cpu, len)
    }

    /// Told whenever memory a device reaches changes hands: the range the
    /// device works on (the buffer itself, or its bounce slot) and the
    /// device it is given to or taken back from. Real platforms ignore it
    /// (the default does nothing and compiles to nothing); a platform that
    /// runs the device in-process, like the simulator, uses it to let each
    /// device touch only its own live mappings, through the pointer given
    /// here.
    ///
    /// # Safety
    ///
    /// The caller promises the claim is true: for [`Side::Device`], no CPU
    /// reference to the `len` bytes at `cpu` exists and no CPU code reads or
    /// writes them from now until a later call with [`Side::Cpu`] for the
    /// same range and device, and `cpu` is valid for reads and writes of
    /// them in that time; for [`Side::Cpu`], the range was given to
    /// `device` by an earlier call and not taken back since. dmacap's
    /// handles make these calls at map, `sync_for_device`, `sync_for_cpu`
    /// and unmap, through [`Backend::hand_over`](crate::backend::Backend::hand_over).
    #[inline(always)]
    unsafe fn ownership_changed(&self, cpu: NonNull<u8>, len: usize, to: Side, device: DeviceId) {
        let _ = (cpu, len, to, device);
    }
}

/// Which device a mapping belongs to: unique for the life of the program
/// (a device made later never gets the id of one dropped earlier), so a
/// platform can keep each device to its own mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(u64);

impl DeviceId {
    /// A fresh id, never handed out before. Every [`Device`](crate::Device)
    /// takes one; tests of a platform hook may take their own.
    pub fn fresh() -> Self {
        // Not a loom-modelled atomic: ids only need to be distinct, and a
        // static cannot hold a loom type.
        static NEXT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);
        Self(NEXT.fetch_add(1, core::sync::atomic::Ordering::Relaxed))
    }

    /// The id as a number (for logs and fault records).
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

/// Which side a mapped range now belongs to; see
/// [`PhysLookup::ownership_changed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The device may access the range; the CPU holds no reference to it.
    Device,
    /// The CPU has taken the range back.
    Cpu,
}

// SAFETY: forwards to `P`, which keeps the promise.
unsafe impl<P: PhysLookup + ?Sized> PhysLookup for &P {
    #[inline]
    fn phys_of(&self, cpu: NonNull<u8>, len: usize) -> Option<PhysAddr> {
        (**self).phys_of(cpu, len)
    }

    #[inline(always)]
    unsafe fn phys_of_allocation(&self, cpu: NonNull<u8>, len: usize) -> Option<PhysAddr> {
        // SAFETY: the caller's promise, passed on unchanged.
        unsafe { (**self).phys_of_allocation(cpu, len) }
    }

    #[inline(always)]
    unsafe fn ownership_changed(&self, cpu: NonNull<u8>, len: usize, to: Side, device: DeviceId) {
        // SAFETY: the caller's promise, passed on unchanged.
        unsafe { (**self).ownership_changed(cpu, len, to, device) }
    }
}

// SAFETY: forwards to `P`, which keeps the promise.
#[cfg(feature = "alloc")]
unsafe impl<P: PhysLookup + ?Sized> PhysLookup for alloc::sync::Arc<P> {
    #[inline]
    fn phys_of(&self, cpu: NonNull<u8>, len: usize) -> Option<PhysAddr> {
        (**self).phys_of(cpu, len)
    }

    #[inline(always)]
    unsafe fn phys_of_allocation(&self, cpu: NonNull<u8>, len: usize) -> Option<PhysAddr> {
        // SAFETY: the caller's promise, passed on unchanged.
        unsafe { (**self).phys_of_allocation(cpu, len) }
    }

    #[inline(always)]
    unsafe fn ownership_changed(&self, cpu: NonNull<u8>, len: usize, to: Side, device: DeviceId) {
        // SAFETY: the caller's promise, passed on unchanged.
        unsafe { (**self).ownership_changed(cpu, len, to, device) }
    }
}

/// The platform where every CPU address equals its physical address:
/// identity-mapped firmware and bare-metal code without paging.
///
/// # Example
///
/// ```
/// use dmacap::platform::{IdentityMap, PhysLookup};
/// use core::ptr::NonNull;
///
/// // SAFETY: this example never lets a device use the address.
/// let id = unsafe { IdentityMap::new() };
/// let x = [0u8; 4];
/// let p = id.phys_of(NonNull::from(&x).cast(), 4).unwrap();
/// assert_eq!(p.as_u64(), x.as_ptr() as u64);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct IdentityMap {
    _private: (),
}

impl IdentityMap {
    /// The identity platform.
    ///
    /// # Safety
    ///
    /// The caller promises that the CPU runs with virtual addresses equal to
    /// physical addresses for all memory that will be mapped through it, and
    /// that such memory is never moved.
    pub const unsafe fn new() -> Self {
        Self { _private: () }
    }
}

// SAFETY: `IdentityMap::new`'s caller promised that virtual equals physical
// and that memory does not move; a range that would overflow is refused.
unsafe impl PhysLookup for IdentityMap {
    #[inline]
    fn phys_of(&self, cpu: NonNull<u8>, len: usize) -> Option<PhysAddr> {
        let start = PhysAddr::new(cpu.as_ptr() as usize as u64);
        // The same overflow check as the map's own (`last_of`), so the
        // compiler folds the two into one.
        start.last_of(len as u64)?;
        Some(start)
    }

    #[inline(always)]
    unsafe fn phys_of_allocation(&self, cpu: NonNull<u8>, len: usize) -> Option<PhysAddr> {
        // The caller promised one live allocation: `cpu + len` fits in a
        // `usize` (Rust allocations never wrap), so `p + len` cannot
        // overflow and there is nothing to check.
        let _ = len;
        Some(PhysAddr::new(cpu.as_ptr() as usize as u64))
    }
}

/// Allocates memory for DMA: the platform side of Linux's
/// `dma_alloc_coherent` and `dma_alloc_pages`. dmacap's allocations
/// ([`Device::alloc_coherent`](crate::Device::alloc_coherent),
/// [`Device::alloc_pages`](crate::Device::alloc_pages)) take their memory
/// here, map it through the device's backend, and give it back here.
///
/// Shared coherent memory is accessed by the CPU only through
/// [`read_shared`](Self::read_shared) and [`write_shared`](Self::write_shared),
/// never through a Rust reference: the device may write it at any time.
/// The defaults are single volatile accesses, right for real hardware; a
/// platform that runs the device in-process (the simulator) overrides them
/// to order the CPU's accesses with its device's.
///
/// # Safety
///
/// An implementation promises:
///
/// 1. [`alloc`](Self::alloc) returns `size` (non-zero) zeroed bytes,
///    aligned to `align`, valid for reads and writes, physically contiguous
///    as [`phys_of`](PhysLookup::phys_of) reports, whose last byte lies at
///    or below physical address `max_phys`, and which nothing else uses
///    until they are given back with [`free`](Self::free) (forever if never).
/// 2. With `uncached`, the memory is mapped so that the CPU's accesses
///    through `read_shared`/`write_shared` and a device's accesses see each
///    other without cache maintenance (uncached, or write-combining, on a
///    device that does not snoop).
/// 3. `read_shared` and `write_shared` perform the one access asked, and
///    are sound when the device accesses the memory at the same time.
/// 4. [`make_visible`](Self::make_visible) makes every CPU write made to the
///    range through ordinary references visible to devices.
pub unsafe trait DmaAllocator: PhysLookup {
    /// Allocates `size` bytes aligned to `align`, whose last byte lies at or
    /// below physical `max_phys`, uncached if asked; `None` if there is no
    /// such memory.
    fn alloc_dma(
        &self,
        size: usize,
        align: usize,
        max_phys: u64,
        uncached: bool,
    ) -> Option<NonNull<u8>>;

    /// Gives memory back.
    ///
    /// # Safety
    ///
    /// `ptr`, `size` and `align` are those of one earlier `alloc_dma`, no device
    /// can reach the memory any more, and nothing references it.
    unsafe fn free_dma(&self, ptr: NonNull<u8>, size: usize, align: usize);

    /// The end of the CPU-only phase of a coherent allocation: CPU writes
    /// made through references become visible to devices. Nothing to do for
    /// memory that is really uncached (the default).
    ///
    /// # Safety
    ///
    /// The `len` bytes at `ptr` belong to one allocation of this platform,
    /// and no reference to them is used from now on.
    #[inline(always)]
    unsafe fn make_visible(&self, ptr: NonNull<u8>, len: usize) {
        let _ = (ptr, len);
    }

    /// Reads the value at `src` in shared memory.
    ///
    /// # Safety
    ///
    /// `src` is aligned and lies inside an allocation of this platform that
    /// is shared with a device (handed over with
    /// [`PhysLookup::ownership_changed`]) and not freed.
    #[inline(always)]
    unsafe fn read_shared<T: zerocopy::FromBytes>(&self, src: NonNull<T>) -> T {
        // SAFETY: aligned and valid (caller); every bit pattern is a `T`.
        unsafe { src.as_ptr().read_volatile() }
    }

    /// Writes `value` at `dst` in shared memory.
    ///
    /// # Safety
    ///
    /// As for [`read_shared`](Self::read_shared).
    #[inline(always)]
    unsafe fn write_shared<T: zerocopy::IntoBytes>(&self, dst: NonNull<T>, value: T) {
        // SAFETY: aligned and valid (caller).
        unsafe { dst.as_ptr().write_volatile(value) }
    }
}

// SAFETY: forwards to `P`, which keeps the promise.
unsafe impl<P: DmaAllocator + ?Sized> DmaAllocator for &P {
    #[inline]
    fn alloc_dma(
        &self,
        size: usize,
        align: usize,
        max_phys: u64,
        uncached: bool,
    ) -> Option<NonNull<u8>> {
        (**self).alloc_dma(size, align, max_phys, uncached)
    }
    #[inline]
    unsafe fn free_dma(&self, ptr: NonNull<u8>, size: usize, align: usize) {
        // SAFETY: the caller's promise, passed on.
        unsafe { (**self).free_dma(ptr, size, align) }
    }
    #[inline(always)]
    unsafe fn make_visible(&self, ptr: NonNull<u8>, len: usize) {
        // SAFETY: the caller's promise, passed on.
        unsafe { (**self).make_visible(ptr, len) }
    }
    #[inline(always)]
    unsafe fn read_shared<T: zerocopy::FromBytes>(&self, src: NonNull<T>) -> T {
        // SAFETY: the caller's promise, passed on.
        unsafe { (**self).read_shared(src) }
    }
    #[inline(always)]
    unsafe fn write_shared<T: zerocopy::IntoBytes>(&self, dst: NonNull<T>, value: T) {
        // SAFETY: the caller's promise, passed on.
        unsafe { (**self).write_shared(dst, value) }
    }
}
