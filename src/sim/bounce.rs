//! A bounce pool in simulated RAM.

use crate::backend::bounce::{SLOT_SIZE, Swiotlb};
use crate::base::buffer::DmaBuffer;
use crate::sim::memory::{SimAllocError, SimMemory};

/// The alignment of a simulated pool: a page, like Linux's.
const POOL_ALIGN: usize = 4096;

impl SimMemory {
    /// A [`Swiotlb`] of `bytes` (rounded down to whole 2 KiB slots) in this
    /// RAM, split into `areas` areas.
    ///
    /// No device reaches the pool as such: each bounced mapping hands its
    /// own slot region to its own device when the mapping is handed over
    /// (after the copy in and the clean) and takes it back before the CPU
    /// copies out or releases the slot ([`Backend::hand_over`]), so a
    /// simulated device reaches exactly its live bounce slots, and never
    /// while the CPU copies, zeroes or evicts them.
    ///
    /// [`Backend::hand_over`]: crate::backend::Backend::hand_over
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
    /// assert_eq!(ram.device_owned_bytes(), 0); // no slot is handed out yet
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
        // SAFETY: the `bytes` at `ptr` are valid for reads and writes
        // forever and belong to the pool alone (reserved from the allocator,
        // never rebuilt as a buffer), they are simulated RAM contiguous from
        // `phys` (a multiple of 4096), and simulated devices reach them.
        Ok(unsafe { Swiotlb::new(ptr, phys, bytes, areas) })
    }
}
