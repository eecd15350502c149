//! Batches: many hand-overs, one completion.
//!
//! Every operation on a handle *issues* per-buffer work (cache maintenance,
//! IOTLB invalidation) and *completes* it with a barrier. A batch issues the
//! work of every handle given to it and completes all of it with one
//! [`Backend::flush`], as Linux's arm64 DMA code does since its 2025
//! batched-sync series (`dma_map_sg` −64.6 %, `dma_unmap_sg` −66.6 % on a
//! Dimensity 9500).
//!
//! A batch owns the handles given to it, so none of them is reachable until
//! `flush()` has completed the work and returns them in their new state: a
//! buffer whose maintenance is still in flight cannot be read by the CPU or
//! handed to the device. A batch is `#[must_use]`; dropping a non-empty one
//! unflushed completes its work and then quarantines every handle it holds
//! (never unmapped, never freed, counted in
//! [`DeviceStats::leaked`](crate::DeviceStats::leaked)), as a dropped
//! device-owned handle is.
//!
//! Two shapes:
//!
//! - [`Batch`] (feature `alloc`): any number of handles of one type, in a
//!   `Vec`, all undergoing the same operation.
//! - [`FixedBatch`]: up to eight handles of any types and operations, in a
//!   tuple whose length is part of the batch's type; it allocates nothing.
//!   A command buffer `ToDevice` and a response buffer `FromDevice` travel
//!   together.
//!
//! If handles of several devices end up in one batch, `flush` completes the
//! work on every one of them.
//!
//! A batch is not `Send`: the barrier completes the maintenance *the calling
//! thread* issued (a `dsb sy` on arm64 waits for this CPU's cache
//! operations), so a batch must be flushed on the thread that filled it.
//! Handles coming out of a flush are `Send` again.

#[cfg(feature = "alloc")]
mod dynamic;
mod fixed;
mod seen;

#[cfg(feature = "alloc")]
pub use dynamic::Batch;
pub use fixed::{FixedBatch, Push, SettleAll};

use crate::backend::Backend;
use crate::buffer::DmaBuffer;
use crate::direction::{CpuOwned, DevOwned, Direction};
use crate::handle::{Mapped, PendingUnmap};

mod sealed {
    pub trait Sealed {}
}

/// Keeps a batch on the thread that issued its work (see the module docs).
type NotSend = core::marker::PhantomData<*const ()>;

/// What a batch holds until its flush: a handle in its new state, or a
/// buffer whose unmap is pending. Sealed.
pub trait Settle: sealed::Sealed {
    /// What `flush` returns for it: the handle, or the unmapped buffer.
    type Output;

    /// Whether it issued work a flush must complete.
    #[doc(hidden)]
    fn needs_flush(&self) -> bool;

    /// The address of its device, to flush every device once.
    #[doc(hidden)]
    fn device_key(&self) -> *const ();

    /// Completes the work issued on its device.
    #[doc(hidden)]
    fn flush_device(&self);

    /// After the flush: the output.
    #[doc(hidden)]
    fn settle(self) -> Self::Output;

    /// Dropped unflushed (after completion): quarantine and count.
    #[doc(hidden)]
    fn quarantine(self);
}

impl<D: Direction, Buf: DmaBuffer, B: Backend> sealed::Sealed for Mapped<'_, D, DevOwned, Buf, B> {}
impl<D: Direction, Buf: DmaBuffer, B: Backend> Settle for Mapped<'_, D, DevOwned, Buf, B> {
    type Output = Self;

    #[inline]
    fn needs_flush(&self) -> bool {
        !B::SYNC_IS_NOOP
    }

    fn device_key(&self) -> *const () {
        core::ptr::from_ref(self.device()).cast()
    }

    fn flush_device(&self) {
        self.device().backend().flush(self.device().context());
    }

    #[inline]
    fn settle(self) -> Self {
        self.granted();
        self
    }

    fn quarantine(self) {
        drop(self); // a device-owned handle's drop quarantines and counts
    }
}

impl<D: Direction, Buf: DmaBuffer, B: Backend> sealed::Sealed for Mapped<'_, D, CpuOwned, Buf, B> {}
impl<D: Direction, Buf: DmaBuffer, B: Backend> Settle for Mapped<'_, D, CpuOwned, Buf, B> {
    type Output = Self;

    #[inline]
    fn needs_flush(&self) -> bool {
        Self::CPU_SYNC
    }

    fn device_key(&self) -> *const () {
        core::ptr::from_ref(self.device()).cast()
    }

    fn flush_device(&self) {
        self.device().backend().flush(self.device().context());
    }

    #[inline]
    fn settle(self) -> Self {
        self
    }

    fn quarantine(self) {
        Mapped::quarantine(self);
    }
}

impl<Buf: DmaBuffer, B: Backend> sealed::Sealed for PendingUnmap<'_, Buf, B> {}
impl<Buf: DmaBuffer, B: Backend> Settle for PendingUnmap<'_, Buf, B> {
    type Output = Buf;

    #[inline]
    fn needs_flush(&self) -> bool {
        PendingUnmap::needs_flush(self)
    }

    fn device_key(&self) -> *const () {
        core::ptr::from_ref(self.device()).cast()
    }

    fn flush_device(&self) {
        self.device().backend().flush(self.device().context());
    }

    #[inline]
    fn settle(self) -> Buf {
        // SAFETY: `settle` is called only after the batch's flush completed
        // the work on this item's device.
        unsafe { self.into_buffer() }
    }

    fn quarantine(self) {
        drop(self); // a pending unmap's drop quarantines and counts
    }
}
