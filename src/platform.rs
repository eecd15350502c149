//! The platform hook that turns a CPU address into a physical address.
//!
//! dmacap asks it once per mapping, at map time, and keeps the answer in the
//! handle for every later sync and unmap. In a kernel it is a page-table
//! lookup (`virt_to_phys`, or a walk for vmalloc-like memory that is then
//! refused as non-contiguous); in identity-mapped firmware it is the
//! identity; on the simulated platform, the simulated RAM's own bookkeeping
//! (`sim::SimMemory`).

use core::ptr::NonNull;

use crate::addr::PhysAddr;

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

    /// Told whenever mapped memory changes hands. Real platforms ignore it
    /// (the default does nothing and compiles to nothing); a platform that
    /// runs the device in-process, like the simulator, uses it to let the
    /// device touch only memory it owns, through the handle's own pointer.
    ///
    /// # Safety
    ///
    /// The caller promises the claim is true: for [`Side::Device`], no CPU
    /// reference to the `len` bytes at `cpu` exists from now until a later
    /// call with [`Side::Cpu`] for the same range, and `cpu` is valid for
    /// reads and writes of them in that time; for [`Side::Cpu`], the range
    /// was given to the device by an earlier call. dmacap's handles make
    /// these calls at map, `sync_for_device`, `sync_for_cpu` and unmap.
    #[inline(always)]
    unsafe fn ownership_changed(&self, cpu: NonNull<u8>, len: usize, to: Side) {
        let _ = (cpu, len, to);
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
    unsafe fn ownership_changed(&self, cpu: NonNull<u8>, len: usize, to: Side) {
        // SAFETY: the caller's promise, passed on unchanged.
        unsafe { (**self).ownership_changed(cpu, len, to) }
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
    unsafe fn ownership_changed(&self, cpu: NonNull<u8>, len: usize, to: Side) {
        // SAFETY: the caller's promise, passed on unchanged.
        unsafe { (**self).ownership_changed(cpu, len, to) }
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
        let start = cpu.as_ptr() as usize as u64;
        start.checked_add(len as u64)?;
        Some(PhysAddr::new(start))
    }
}
