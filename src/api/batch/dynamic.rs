//! The dynamic batch: any number of like handles, one completion.

use alloc::vec::Vec;

use super::sealed::SettleItem;
use super::seen::Seen;
use super::{FlushOnTheIssuingThread, NotSend, PendingToCpu, Settle};
use crate::api::device::Device;
use crate::api::handle::{Mapped, PendingUnmap};
use crate::backend::Backend;
use crate::base::buffer::{CacheSafe, DmaBuffer, Transfer};
use crate::base::direction::{CpuState, DevOwned, Direction};
use crate::base::error::MapError;

/// A batch of like operations on handles of one type: every map or sync is
/// issued when the handle is added, and all are completed by one
/// [`flush`](Self::flush), which returns the handles (or, for unmaps, the
/// buffers) in their new state and in the order they were added.
///
/// What the batch holds is fixed by its type: `Mapped<D, DevOwned>` for
/// maps and `sync_for_device`, [`PendingToCpu`] for `sync_for_cpu` (still
/// device-owned until the flush returns it as `Mapped<D, CpuOwned>`),
/// [`PendingUnmap`] for unmaps.
///
/// # Example
///
/// ```
/// use dmacap::sim::SimPlatform;
///
/// let sim = SimPlatform::noncoherent(1 << 20);
/// let dev = sim.noncoherent_device();
/// let mut maps = dev.batch();
/// for _ in 0..8 {
///     let buf = sim.memory().alloc_slice_aligned::<u8>(256, 64).unwrap();
///     maps.map_from_device(buf).unwrap();
/// }
/// let rx = maps.flush(); // eight device-owned handles, one barrier
/// assert_eq!(rx.len(), 8);
/// assert_eq!(dev.stats().barriers(), 1);
///
/// let mut back = dev.batch();
/// for h in rx {
///     // SAFETY: the simulated device was never started.
///     unsafe { back.sync_for_cpu(h) };
/// }
/// let rx = back.flush();
/// assert_eq!(dev.stats().barriers(), 2);
/// # drop(rx);
/// ```
#[must_use = "a batch hands nothing over until `flush()`; dropped, it frees what it holds and counts it in `DeviceStats::unflushed`"]
pub struct Batch<'d, B: Backend, T: Settle> {
    device: &'d Device<B>,
    items: Vec<T>,
    _not_send: NotSend,
}

impl<B: Backend> Device<B> {
    /// An empty dynamic batch on this device.
    ///
    /// Prefer [`with_batch`](Self::with_batch), which cannot forget the
    /// flush. A batch held in a variable must be flushed (or given up with
    /// [`Batch::discard`]); dropped with items in it, it frees them,
    /// counts them in [`DeviceStats::unflushed`](crate::DeviceStats::unflushed)
    /// and, in debug builds, panics.
    pub fn batch<T: Settle>(&self) -> Batch<'_, B, T> {
        Batch {
            device: self,
            items: Vec::new(),
            _not_send: FlushOnTheIssuingThread::default(),
        }
    }

    /// Fills a batch in `fill` and flushes it when `fill` returns: the
    /// closure's end is the flush, so the flush cannot be forgotten. Returns
    /// the flushed handles (in the order they were added) and what `fill`
    /// returned.
    ///
    /// Whatever `fill` returns, an error from `?` included, the handles it
    /// added come back flushed: a refill that runs out of buffers halfway
    /// keeps the ones it mapped. The batch is only lent to `fill`; if
    /// `fill` panics, the batch drops as it unwinds (its items are torn
    /// down and counted in
    /// [`DeviceStats::unflushed`](crate::DeviceStats::unflushed)).
    ///
    /// # Example
    ///
    /// Refilling a receive ring from a pool that may run dry:
    ///
    /// ```
    /// use dmacap::sim::SimPlatform;
    ///
    /// let sim = SimPlatform::noncoherent(1 << 20);
    /// let dev = sim.noncoherent_device();
    /// let (rx, result) = dev.with_batch(|b| {
    ///     for _ in 0..4 {
    ///         let buf = sim.memory().alloc_slice_aligned::<u8>(2048, 64)?;
    ///         b.map_from_device(buf)?;
    ///     }
    ///     Ok::<_, Box<dyn std::error::Error>>(())
    /// });
    /// result.unwrap();
    /// assert_eq!(rx.len(), 4); // four device-owned handles
    /// assert_eq!(dev.stats().barriers(), 1); // one barrier for all four
    /// # drop(rx);
    /// ```
    pub fn with_batch<'d, T: Settle, R>(
        &'d self,
        fill: impl FnOnce(&mut Batch<'d, B, T>) -> R,
    ) -> (Vec<T::Output>, R) {
        let mut batch = self.batch();
        let result = fill(&mut batch);
        (batch.flush(), result)
    }
}

impl<'d, B: Backend, T: Settle> Batch<'d, B, T> {
    /// An empty batch with room for `n` handles without reallocating.
    pub fn with_capacity(device: &'d Device<B>, n: usize) -> Self {
        Self {
            device,
            items: Vec::with_capacity(n),
            _not_send: FlushOnTheIssuingThread::default(),
        }
    }

    /// How many handles the batch holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Room for `n` more handles without reallocating.
    pub fn reserve(&mut self, n: usize) {
        self.items.reserve(n);
    }

    /// Completes the work of every handle with one barrier (one per device
    /// involved) and returns them in their new state, in order.
    #[must_use = "the handles come back here: dropped, device-owned ones are quarantined for good"]
    pub fn flush(mut self) -> Vec<T::Output> {
        // What is left behind is empty: dropping `self` then does nothing.
        let items = core::mem::take(&mut self.items);
        complete(&items);
        items.into_iter().map(SettleItem::settle).collect()
    }

    /// Gives the batch up on purpose: completes the work issued, then
    /// unmaps every mapping and frees every buffer (no device was given
    /// any of them: hand-overs are granted only by the flush). Unlike a
    /// drop, it is not counted in
    /// [`DeviceStats::unflushed`](crate::DeviceStats::unflushed) and never
    /// panics in debug builds. Handles on their way back to the CPU
    /// ([`PendingToCpu`]) are freed too: the caller already declared the
    /// device finished with them.
    pub fn discard(mut self) {
        tear_down(core::mem::take(&mut self.items));
    }
}

/// Completes the items' work, then unmaps and frees each. If the
/// completion unwinds, the items drop as what they are: device-owned
/// handles and pending unmaps quarantine themselves.
fn tear_down<T: Settle>(items: Vec<T>) {
    complete(&items);
    items.into_iter().for_each(SettleItem::discard);
}

/// Flushes every device the items need, once each.
fn complete<T: Settle>(items: &[T]) {
    let mut seen = Seen::<4>::new();
    for item in items {
        seen.flush(item);
    }
}

impl<'d, D, Buf, B> Batch<'d, B, Mapped<'d, D, DevOwned, Buf, B>>
where
    D: Direction,
    Buf: DmaBuffer,
    B: Backend,
{
    /// Maps `buf` for direction `D` into the batch. On error nothing is
    /// added and the buffer comes back.
    pub fn map(&mut self, buf: Buf) -> Result<(), MapError<Buf>>
    where
        Buf::Target: Transfer<D> + CacheSafe<B::Granule>,
    {
        self.items.push(Mapped::map_issue(self.device, buf)?);
        Ok(())
    }

    /// Issues the hand-over of a CPU-owned handle to the device.
    pub fn sync_for_device<S: CpuState>(&mut self, handle: Mapped<'d, D, S, Buf, B>) {
        self.items.push(handle.issue_to_device());
    }
}

impl<'d, Buf, B> Batch<'d, B, Mapped<'d, crate::ToDevice, DevOwned, Buf, B>>
where
    Buf: DmaBuffer,
    B: Backend,
{
    /// [`map`](Self::map) for `ToDevice`.
    pub fn map_to_device(&mut self, buf: Buf) -> Result<(), MapError<Buf>>
    where
        Buf::Target: Transfer<crate::ToDevice> + CacheSafe<B::Granule>,
    {
        self.map(buf)
    }
}

impl<'d, Buf, B> Batch<'d, B, Mapped<'d, crate::FromDevice, DevOwned, Buf, B>>
where
    Buf: DmaBuffer,
    B: Backend,
{
    /// [`map`](Self::map) for `FromDevice`.
    pub fn map_from_device(&mut self, buf: Buf) -> Result<(), MapError<Buf>>
    where
        Buf::Target: Transfer<crate::FromDevice> + CacheSafe<B::Granule>,
    {
        self.map(buf)
    }
}

impl<'d, D, Buf, B> Batch<'d, B, PendingToCpu<'d, D, Buf, B>>
where
    D: Direction,
    Buf: DmaBuffer,
    B: Backend,
{
    /// Issues taking a handle back from the device.
    ///
    /// # Safety
    ///
    /// As for [`Mapped::sync_for_cpu`]: the device has finished every
    /// access to the buffer, and the driver observed it.
    pub unsafe fn sync_for_cpu(&mut self, handle: Mapped<'d, D, DevOwned, Buf, B>) {
        // SAFETY: forwarded from the caller; the handle stays device-owned
        // and unreachable until the flush completes the maintenance.
        self.items.push(unsafe { PendingToCpu::issue(handle) });
    }
}

impl<'d, Buf, B> Batch<'d, B, PendingUnmap<'d, Buf, B>>
where
    Buf: DmaBuffer,
    B: Backend,
{
    /// Issues the unmap of a CPU-owned handle.
    pub fn unmap<D: Direction, S: CpuState>(&mut self, handle: Mapped<'d, D, S, Buf, B>) {
        // SAFETY: in a CPU state the device has finished with the buffer.
        self.items.push(unsafe { handle.issue_unmap() });
    }

    /// Issues the unmap of a device-owned handle.
    ///
    /// # Safety
    ///
    /// As for [`Mapped::unmap`] of a device-owned handle: the device has
    /// finished with the buffer, and the driver observed it.
    pub unsafe fn unmap_device_owned<D: Direction>(
        &mut self,
        handle: Mapped<'d, D, DevOwned, Buf, B>,
    ) {
        // SAFETY: forwarded from the caller.
        self.items.push(unsafe { handle.issue_unmap() });
    }
}

impl<B: Backend, T: Settle> Drop for Batch<'_, B, T> {
    fn drop(&mut self) {
        // No item was handed to a device: hand-overs are granted only by
        // `flush`. Count each on its device first (so that an unwinding
        // completion still shows), tear them down, then report.
        let items = core::mem::take(&mut self.items);
        if items.is_empty() {
            return;
        }
        let n = items.len();
        items.iter().for_each(SettleItem::count_unflushed);
        tear_down(items);
        super::unflushed_dropped("Batch", n);
    }
}

impl<B: Backend, T: Settle> core::fmt::Debug for Batch<'_, B, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Batch {{ handles: {} }}", self.items.len())
    }
}
