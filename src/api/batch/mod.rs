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
//! handed to the device.
//!
//! # Forgetting the flush
//!
//! The shape that cannot forget it is the scoped one,
//! [`Device::with_batch`](crate::Device::with_batch): the closure fills
//! the batch, and its end is the flush. The batch is lent to the closure,
//! so it cannot outlive it, and whatever the closure returns (an error from
//! `?` included) the handles added so far come back flushed.
//!
//! A batch held in a variable is `#[must_use]`, which catches only a
//! discarded temporary. Since a hand-over to the device is granted only by
//! the flush, no device was ever given an address from an unflushed batch,
//! so dropping one with items in it is never unsound: it completes the
//! work issued, then unmaps every mapping and frees every buffer, leaking
//! nothing. But the driver has lost those handles (a receive ring refilled
//! that way is short of buffers), so the drop is made visible:
//!
//! - each item is counted on its device in
//!   [`DeviceStats::unflushed`](crate::DeviceStats::unflushed);
//! - in debug builds with `std`, the drop panics after tearing the items
//!   down (not while the thread is already panicking, so an unwinding
//!   flush or closure still only counts).
//!
//! Giving a batch up on purpose says so: `discard()` tears it down the
//! same way without counting or panicking, and a failed
//! [`FixedBatch::map`] (the `?` path) discards the batch it consumed. Only
//! if the completion itself unwinds are the items quarantined instead
//! (never freed, counted in
//! [`DeviceStats::leaked`](crate::DeviceStats::leaked)).
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

use crate::api::handle::{Mapped, PendingUnmap};
use crate::backend::Backend;
use crate::base::buffer::DmaBuffer;
use crate::base::direction::{CpuOwned, DevOwned, Direction};

/// Keeps a batch on the thread that issued its work (see the module docs):
/// the completion barrier waits only for the calling CPU's maintenance.
/// Named so that the compiler's note on a batch sent to another thread
/// says why.
#[derive(Clone, Copy, Default)]
pub(crate) struct FlushOnTheIssuingThread(core::marker::PhantomData<*const ()>);

type NotSend = FlushOnTheIssuingThread;

/// What a batch holds until its flush: a handle on its way to the device, a
/// handle on its way back to the CPU ([`PendingToCpu`]), or a buffer whose
/// unmap is pending ([`PendingUnmap`]). Sealed, and its methods are private
/// to dmacap: nothing outside a batch can complete or settle an item.
pub trait Settle: sealed::SettleItem {}

impl<T: sealed::SettleItem> Settle for T {}

mod sealed {
    /// The batch's view of an item. Public in a private module: it can be
    /// named in bounds but not implemented or called outside dmacap.
    pub trait SettleItem {
        /// What `flush` returns for it: the handle, or the unmapped buffer.
        type Output;

        /// Whether it issued work a flush must complete.
        fn needs_flush(&self) -> bool;

        /// The address of its device, to flush every device once.
        fn device_key(&self) -> *const ();

        /// Completes the work issued on its device.
        fn flush_device(&self);

        /// Counts it on its device as dropped inside an unflushed batch.
        fn count_unflushed(&self);

        /// After the flush of its device: the output.
        fn settle(self) -> Self::Output;

        /// Dropped unflushed, after the batch completed its work: nothing
        /// was handed to a device (a hand-over is granted only by the
        /// flush), so the mapping is torn down and the buffer freed.
        fn discard(self);
    }
}

/// A handle whose hand-back to the CPU ([`Mapped::sync_for_cpu`]) has been
/// issued in a batch but not completed. It is still device-owned: if it is
/// dropped, or the flush unwinds, the buffer is quarantined, never freed
/// under maintenance that has not completed. The batch's flush turns it
/// into `Mapped<D, CpuOwned>`.
#[must_use = "a handle on its way back to the CPU; dropped, its buffer is quarantined"]
pub struct PendingToCpu<'d, D: Direction, Buf: DmaBuffer, B: Backend>(
    Mapped<'d, D, DevOwned, Buf, B>,
);

impl<D: Direction, Buf: DmaBuffer, B: Backend> core::fmt::Debug for PendingToCpu<'_, D, Buf, B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "PendingToCpu<{}> {{ bytes: {} }}",
            D::NAME,
            self.0.byte_len()
        )
    }
}

impl<'d, D: Direction, Buf: DmaBuffer, B: Backend> PendingToCpu<'d, D, Buf, B> {
    /// Issues the hand-back.
    ///
    /// # Safety
    ///
    /// As for [`Mapped::sync_for_cpu`].
    pub(crate) unsafe fn issue(handle: Mapped<'d, D, DevOwned, Buf, B>) -> Self {
        // SAFETY: forwarded from the caller; issued once, and the handle is
        // only ever turned CPU-owned (after the flush) or quarantined.
        unsafe { handle.issue_to_cpu() };
        Self(handle)
    }
}

impl<D: Direction, Buf: DmaBuffer, B: Backend> sealed::SettleItem
    for Mapped<'_, D, DevOwned, Buf, B>
{
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

    fn count_unflushed(&self) {
        self.device().stats().record_unflushed();
    }

    #[inline]
    fn settle(self) -> Self {
        self.granted();
        self
    }

    fn discard(self) {
        // SAFETY: never granted (only `settle` grants), and the batch
        // completed the work issued for it.
        drop(unsafe { self.unmap_never_granted() });
    }
}

impl<'d, D: Direction, Buf: DmaBuffer, B: Backend> sealed::SettleItem
    for PendingToCpu<'d, D, Buf, B>
{
    type Output = Mapped<'d, D, CpuOwned, Buf, B>;

    #[inline]
    fn needs_flush(&self) -> bool {
        Mapped::<'d, D, CpuOwned, Buf, B>::CPU_SYNC
    }

    fn device_key(&self) -> *const () {
        core::ptr::from_ref(self.0.device()).cast()
    }

    fn flush_device(&self) {
        self.0.device().backend().flush(self.0.device().context());
    }

    fn count_unflushed(&self) {
        self.0.device().stats().record_unflushed();
    }

    #[inline]
    fn settle(self) -> Self::Output {
        self.0.into_cpu_owned()
    }

    fn discard(self) {
        // The caller declared the device finished and the batch completed
        // the maintenance: CPU-owned, its drop unmaps and frees.
        drop(self.0.into_cpu_owned());
    }
}

impl<Buf: DmaBuffer, B: Backend> sealed::SettleItem for PendingUnmap<'_, Buf, B> {
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

    fn count_unflushed(&self) {
        self.device().stats().record_unflushed();
    }

    #[inline]
    fn settle(self) -> Buf {
        // SAFETY: `settle` is called only after the batch's flush completed
        // the work on this item's device.
        unsafe { self.into_buffer() }
    }

    fn discard(self) {
        // SAFETY: the batch completed the unmap's work on its device.
        drop(unsafe { self.into_buffer() });
    }
}

/// The debug assertion of a batch dropped with `n` items unflushed (see
/// the module docs), called after the items were torn down and counted, so
/// the panic loses nothing. Not while the thread is already panicking: a
/// panic in a destructor during unwinding aborts.
#[inline]
fn unflushed_dropped(kind: &str, n: usize) {
    #[cfg(all(debug_assertions, feature = "std"))]
    if !std::thread::panicking() {
        panic!(
            "a {kind} holding {n} handle(s) was dropped without `flush()`: their mappings were \
             torn down and their buffers freed, and the driver has lost them (counted in \
             `DeviceStats::unflushed`). Fill batches inside `dev.with_batch(|b| ...)`, whose \
             end is the flush, or call `flush()`; give one up on purpose with `discard()`"
        );
    }
    #[cfg(not(all(debug_assertions, feature = "std")))]
    let _ = (kind, n);
}
