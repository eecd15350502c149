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
#[must_use = "a batch hands nothing over until `flush()`; dropped, it unmaps and frees what it holds"]
pub struct Batch<'d, B: Backend, T: Settle> {
    device: &'d Device<B>,
    items: Vec<T>,
    _not_send: NotSend,
}

impl<B: Backend> Device<B> {
    /// An empty dynamic batch on this device.
    pub fn batch<T: Settle>(&self) -> Batch<'_, B, T> {
        Batch {
            device: self,
            items: Vec::new(),
            _not_send: FlushOnTheIssuingThread::default(),
        }
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

    /// Completes the work of every handle with one barrier (one per device
    /// involved) and returns them in their new state, in order.
    #[must_use = "the handles come back here: dropped, device-owned ones are quarantined for good"]
    pub fn flush(mut self) -> Vec<T::Output> {
        // What is left behind is empty: dropping `self` then does nothing.
        let items = core::mem::take(&mut self.items);
        complete(&items);
        items.into_iter().map(SettleItem::settle).collect()
    }
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
        // `flush`. Complete what was issued, then unmap and free each. If
        // the completion unwinds, the items drop as what they are:
        // device-owned handles and pending unmaps quarantine themselves.
        let items = core::mem::take(&mut self.items);
        complete(&items);
        items.into_iter().for_each(SettleItem::discard);
    }
}

impl<B: Backend, T: Settle> core::fmt::Debug for Batch<'_, B, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Batch {{ handles: {} }}", self.items.len())
    }
}
