//! A bounce pool in simulated RAM.

use crate::bounce::{SLOT_SIZE, Swiotlb};
use crate::buffer::DmaBuffer;
use crate::platform::{PhysLookup, Side};
use crate::sim::memory::{SimAllocError, SimMemory};

/// The alignment of a simulated pool: a page, like Linux's.
const POOL_ALIGN: usize = 4096;

impl SimMemory {
    /// A [`Swiotlb`] of `bytes` (rounded down to whole 2 KiB slots) in this
    /// RAM, split into `areas` areas, handed to devices for good: every
    /// simulated device may reach it (through its bus translation), as a
    /// real device reaches a real swiotlb.
    ///
    /// The pool comes from the allocator like any buffer, page-aligned, and
    /// is never freed: it and this RAM stay allocated for the rest of the
    /// program (a test that wants the pool below 4 GiB gives the RAM a low
    /// base and makes the pool first).
    ///
    /// ```
    /// use dmacap::PhysAddr;
    /// use dmacap::sim::SimMemory;
    ///
    /// let ram = SimMemory::with_base(PhysAddr::new(0x8000_0000), 1 << 20);
    /// let pool = ram.swiotlb(256 * 1024, 2).unwrap();
    /// assert_eq!(pool.total_slots(), 128);
    /// assert_eq!(pool.areas(), 1); // each area holds at least 128 slots
    /// assert_eq!(pool.phys(), PhysAddr::new(0x8000_0000));
    /// assert_eq!(ram.device_owned_bytes(), 256 * 1024);
    /// ```
    ///
    /// # Errors
    ///
    /// [`SimAllocError::BadLayout`] if `bytes` is less than one slot;
    /// [`SimAllocError::OutOfMemory`] if the RAM has no page-aligned free
    /// range that large.
    pub fn swiotlb(&self, bytes: usize, areas: usize) -> Result<Swiotlb, SimAllocError> {
        let bytes = bytes / SLOT_SIZE * SLOT_SIZE;
        if bytes == 0 {
            return Err(SimAllocError::BadLayout {
                size: bytes,
                align: POOL_ALIGN,
            });
        }
        let buffer = self.alloc_slice_aligned::<u8>(bytes, POOL_ALIGN)?;
        let phys = self.phys_of_buffer(&buffer);
        // Never rebuilt, and its RAM handle leaked: the reservation and the
        // RAM block outlive the pool, whatever happens to this `SimMemory`.
        let (ptr, keep) = buffer.into_raw_parts();
        core::mem::forget(keep);
        let ptr = ptr.cast::<u8>();
        // SAFETY: the pool's memory is never referenced by CPU Rust
        // references: the pool and the backend that uses it only copy into
        // and out of it through raw pointers, during their own calls; and
        // `ptr` stays valid for reads and writes of `bytes` forever (the
        // buffer was never rebuilt and the RAM is leaked). So no CPU
        // reference to it exists from now on, and granting it to devices
        // for good (no `Side::Cpu` call ever follows) keeps the promise.
        unsafe { self.ownership_changed(ptr, bytes, Side::Device) };
        // SAFETY: the `bytes` at `ptr` are valid for reads and writes
        // forever and belong to the pool alone (reserved from the allocator,
        // never rebuilt as a buffer), they are simulated RAM contiguous from
        // `phys` (a multiple of 4096), and simulated devices reach them.
        Ok(unsafe { Swiotlb::new(ptr, phys, bytes, areas) })
    }
}
