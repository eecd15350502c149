//! The fixed batch: up to eight handles of any types, no allocation.

use super::sealed::SettleItem;
use super::seen::Seen;
use super::{FlushOnTheIssuingThread, NotSend, PendingToCpu, Settle};
use crate::api::device::Device;
use crate::api::handle::Mapped;
use crate::backend::Backend;
use crate::base::buffer::{CacheSafe, DmaBuffer, Transfer};
use crate::base::direction::{CpuState, DevOwned, Direction};
use crate::base::error::MapError;

/// A tuple of up to eight [`Settle`] items: what a [`FixedBatch`] holds.
/// Sealed, with methods private to dmacap; implemented for `()` and tuples
/// of one to eight items.
pub trait SettleAll: sealed::Tuple {}

impl<L: sealed::Tuple> SettleAll for L {}

/// Appending one more item to a tuple: `(A, B)` + `C` = `(A, B, C)`. Sealed;
/// a fixed batch holds at most eight items.
#[diagnostic::on_unimplemented(
    message = "a fixed batch holds at most eight hand-overs; this one is full",
    label = "a ninth item",
    note = "flush this batch and start another, or use the dynamic `Batch` (`dev.batch()`) \
            for any number of like handles"
)]
pub trait Push<T: Settle>: sealed::PushItem<T> {}

#[diagnostic::do_not_recommend]
impl<L: sealed::PushItem<T>, T: Settle> Push<T> for L {}

mod sealed {
    use super::super::seen::Seen;

    /// The fixed batch's view of its tuple.
    pub trait Tuple {
        /// The tuple of what each item becomes after the flush.
        type Output;

        /// Flushes every device the items need, once each.
        fn complete(&self, seen: &mut Seen<8>);

        /// After the flush: the outputs.
        fn settle_all(self) -> Self::Output;

        /// Dropped unflushed (after completion): unmap and free every item.
        fn discard_all(self);

        /// Counts every item on its device as dropped unflushed; returns
        /// how many there are.
        fn count_unflushed_all(&self) -> usize;
    }

    /// Appending `T` to the tuple.
    pub trait PushItem<T>: Tuple {
        /// The longer tuple.
        type Out: super::SettleAll;

        /// Appends `item`.
        fn push(self, item: T) -> Self::Out;
    }
}

use sealed::{PushItem, Tuple};

impl Tuple for () {
    type Output = ();
    fn complete(&self, _: &mut Seen<8>) {}
    fn settle_all(self) {}
    fn discard_all(self) {}
    fn count_unflushed_all(&self) -> usize {
        0
    }
}
impl<T: Settle> PushItem<T> for () {
    type Out = (T,);
    fn push(self, item: T) -> (T,) {
        (item,)
    }
}

macro_rules! tuples {
    ($( ($($name:ident),+) )+) => {$(
        impl<$($name: Settle),+> Tuple for ($($name,)+) {
            type Output = ($(<$name as SettleItem>::Output,)+);

            #[allow(non_snake_case)]
            fn complete(&self, seen: &mut Seen<8>) {
                let ($($name,)+) = self;
                $(seen.flush($name);)+
            }

            #[allow(non_snake_case)]
            fn settle_all(self) -> Self::Output {
                let ($($name,)+) = self;
                ($($name.settle(),)+)
            }

            #[allow(non_snake_case)]
            fn discard_all(self) {
                let ($($name,)+) = self;
                $($name.discard();)+
            }

            #[allow(non_snake_case)]
            fn count_unflushed_all(&self) -> usize {
                let ($($name,)+) = self;
                $($name.count_unflushed();)+
                [$(stringify!($name)),+].len()
            }
        }
    )+};
}

tuples! {
    (A)
    (A, B)
    (A, B, C)
    (A, B, C, D)
    (A, B, C, D, E)
    (A, B, C, D, E, F)
    (A, B, C, D, E, F, G)
    (A, B, C, D, E, F, G, H)
}

macro_rules! pushes {
    ($( ($($name:ident),+) )+) => {$(
        impl<$($name: Settle,)+ T: Settle> PushItem<T> for ($($name,)+) {
            type Out = ($($name,)+ T);

            #[allow(non_snake_case)]
            fn push(self, item: T) -> Self::Out {
                let ($($name,)+) = self;
                ($($name,)+ item)
            }
        }
    )+};
}

pushes! {
    (A)
    (A, B)
    (A, B, C)
    (A, B, C, D)
    (A, B, C, D, E)
    (A, B, C, D, E, F)
    (A, B, C, D, E, F, G)
}

/// A batch of up to eight hand-overs of any kinds, held in a tuple whose
/// length is part of the type: no allocation, one completion.
///
/// Each method consumes the batch and returns a longer one; `flush` returns
/// the tuple of results in the order the handles were added.
///
/// # Example
///
/// A command buffer the device reads and a response buffer it writes,
/// handed over with one barrier:
///
/// ```
/// use dmacap::sim::SimPlatform;
///
/// let sim = SimPlatform::noncoherent(1 << 20);
/// let dev = sim.noncoherent_device();
/// let mut cmd = sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap();
/// cmd[0] = 0x12;
/// let resp = sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap();
///
/// let (cmd, resp) = dev
///     .fixed_batch()
///     .map_to_device(cmd).unwrap()
///     .map_from_device(resp).unwrap()
///     .flush();
/// assert_eq!(dev.stats().barriers(), 1);
///
/// let engine = sim.device(&dev);
/// let mut op = [0u8; 1];
/// engine.read(cmd.dma_addr(), &mut op).unwrap();
/// engine.write(resp.dma_addr(), &[op[0] + 1]).unwrap();
///
/// // SAFETY: the simulated device finished both transfers.
/// let (cmd, resp) = unsafe { dev.fixed_batch().unmap_device_owned(cmd).sync_for_cpu(resp) }.flush();
/// assert_eq!(resp.contents()[0], 0x13);
/// assert_eq!(cmd[0], 0x12);
/// ```
#[must_use = "a batch hands nothing over until `flush()`; dropped, it frees what it holds and counts it in `DeviceStats::unflushed`"]
pub struct FixedBatch<'d, B: Backend, L: SettleAll> {
    device: &'d Device<B>,
    items: Option<L>,
    _not_send: NotSend,
}

impl<B: Backend> Device<B> {
    /// An empty fixed batch on this device.
    pub fn fixed_batch(&self) -> FixedBatch<'_, B, ()> {
        FixedBatch {
            device: self,
            items: Some(()),
            _not_send: FlushOnTheIssuingThread::default(),
        }
    }
}

impl<'d, B: Backend, L: SettleAll> FixedBatch<'d, B, L> {
    fn take(&mut self) -> L {
        self.items
            .take()
            .expect("a fixed batch's items are taken once")
    }

    fn push<T: Settle>(mut self, item: T) -> FixedBatch<'d, B, L::Out>
    where
        L: Push<T>,
    {
        let items = self.take();
        FixedBatch {
            device: self.device,
            items: Some(items.push(item)),
            _not_send: FlushOnTheIssuingThread::default(),
        }
    }

    /// Maps `buf` for direction `D` into the batch.
    ///
    /// On error the buffer comes back inside the error and the batch is
    /// [discarded](Self::discard): nothing it held was handed to a device
    /// yet, so its mappings are unmapped and their buffers freed, nothing
    /// leaks, and nothing is counted as unflushed. That makes the batch
    /// work with `?`:
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let sim = dmacap::sim::SimPlatform::noncoherent(1 << 20);
    /// # let dev = sim.noncoherent_device();
    /// # let cmd = sim.memory().alloc_slice_aligned::<u8>(64, 64)?;
    /// # let resp = sim.memory().alloc_slice_aligned::<u8>(64, 64)?;
    /// let (cmd, resp) = dev.fixed_batch().map_to_device(cmd)?.map_from_device(resp)?.flush();
    /// # drop((cmd, resp));
    /// # Ok(()) }
    /// ```
    ///
    /// To keep the batch on error, use [`try_map`](Self::try_map).
    pub fn map<D: Direction, Buf: DmaBuffer>(
        self,
        buf: Buf,
    ) -> Result<FixedBatch<'d, B, L::Out>, MapError<Buf>>
    where
        Buf::Target: Transfer<D> + CacheSafe<B::Granule>,
        L: Push<Mapped<'d, D, DevOwned, Buf, B>>,
    {
        self.try_map(buf).map_err(|(batch, e)| {
            batch.discard();
            e
        })
    }

    /// Maps `buf` for direction `D` into the batch; on error the batch and
    /// the buffer both come back, unchanged.
    #[allow(clippy::type_complexity)]
    pub fn try_map<D: Direction, Buf: DmaBuffer>(
        self,
        buf: Buf,
    ) -> Result<FixedBatch<'d, B, L::Out>, (Self, MapError<Buf>)>
    where
        Buf::Target: Transfer<D> + CacheSafe<B::Granule>,
        L: Push<Mapped<'d, D, DevOwned, Buf, B>>,
    {
        match Mapped::map_issue(self.device, buf) {
            Ok(h) => Ok(self.push(h)),
            Err(e) => Err((self, e)),
        }
    }

    /// [`map`](Self::map) for `ToDevice`.
    pub fn map_to_device<Buf: DmaBuffer>(
        self,
        buf: Buf,
    ) -> Result<FixedBatch<'d, B, L::Out>, MapError<Buf>>
    where
        Buf::Target: Transfer<crate::ToDevice> + CacheSafe<B::Granule>,
        L: Push<Mapped<'d, crate::ToDevice, DevOwned, Buf, B>>,
    {
        self.map(buf)
    }

    /// [`map`](Self::map) for `FromDevice`.
    pub fn map_from_device<Buf: DmaBuffer>(
        self,
        buf: Buf,
    ) -> Result<FixedBatch<'d, B, L::Out>, MapError<Buf>>
    where
        Buf::Target: Transfer<crate::FromDevice> + CacheSafe<B::Granule>,
        L: Push<Mapped<'d, crate::FromDevice, DevOwned, Buf, B>>,
    {
        self.map(buf)
    }

    /// [`map`](Self::map) for `Bidirectional`.
    pub fn map_bidirectional<Buf: DmaBuffer>(
        self,
        buf: Buf,
    ) -> Result<FixedBatch<'d, B, L::Out>, MapError<Buf>>
    where
        Buf::Target: Transfer<crate::Bidirectional> + CacheSafe<B::Granule>,
        L: Push<Mapped<'d, crate::Bidirectional, DevOwned, Buf, B>>,
    {
        self.map(buf)
    }

    /// Issues the hand-over of a CPU-owned handle to the device.
    pub fn sync_for_device<D: Direction, S: CpuState, Buf: DmaBuffer>(
        self,
        handle: Mapped<'d, D, S, Buf, B>,
    ) -> FixedBatch<'d, B, L::Out>
    where
        L: Push<Mapped<'d, D, DevOwned, Buf, B>>,
    {
        self.push(handle.issue_to_device())
    }

    /// Issues taking a handle back from the device.
    ///
    /// # Safety
    ///
    /// As for [`Mapped::sync_for_cpu`]: the device has finished every
    /// access to the buffer, and the driver observed it.
    pub unsafe fn sync_for_cpu<D: Direction, Buf: DmaBuffer>(
        self,
        handle: Mapped<'d, D, DevOwned, Buf, B>,
    ) -> FixedBatch<'d, B, L::Out>
    where
        L: Push<PendingToCpu<'d, D, Buf, B>>,
    {
        // SAFETY: forwarded from the caller; the handle stays device-owned
        // and unreachable until the flush completes.
        self.push(unsafe { PendingToCpu::issue(handle) })
    }

    /// Issues the unmap of a CPU-owned handle.
    pub fn unmap<D: Direction, S: CpuState, Buf: DmaBuffer>(
        self,
        handle: Mapped<'d, D, S, Buf, B>,
    ) -> FixedBatch<'d, B, L::Out>
    where
        L: Push<crate::api::handle::PendingUnmap<'d, Buf, B>>,
    {
        // SAFETY: in a CPU state the device has finished with the buffer.
        self.push(unsafe { handle.issue_unmap() })
    }

    /// Issues the unmap of a device-owned handle.
    ///
    /// # Safety
    ///
    /// As for [`Mapped::unmap`] of a device-owned handle: the device has
    /// finished with the buffer, and the driver observed it.
    pub unsafe fn unmap_device_owned<D: Direction, Buf: DmaBuffer>(
        self,
        handle: Mapped<'d, D, DevOwned, Buf, B>,
    ) -> FixedBatch<'d, B, L::Out>
    where
        L: Push<crate::api::handle::PendingUnmap<'d, Buf, B>>,
    {
        // SAFETY: forwarded from the caller.
        self.push(unsafe { handle.issue_unmap() })
    }

    /// Completes the work of every handle with one barrier (one per device
    /// involved) and returns them in their new state, as a tuple in the
    /// order they were added.
    #[must_use = "the handles come back here: dropped, device-owned ones are quarantined for good"]
    pub fn flush(mut self) -> <L as Tuple>::Output {
        let items = self.take();
        items.complete(&mut Seen::new());
        items.settle_all()
    }

    /// Gives the batch up on purpose: completes the work issued, then
    /// unmaps every mapping and frees every buffer (no device was given
    /// any of them). Unlike a drop, it is not counted in
    /// [`DeviceStats::unflushed`](crate::DeviceStats::unflushed) and never
    /// panics in debug builds.
    pub fn discard(mut self) {
        tear_down(self.take());
    }
}

/// Completes the items' work, then unmaps and frees each; if the completion
/// unwinds, the items drop as what they are (device-owned ones quarantine).
fn tear_down<L: SettleAll>(items: L) {
    items.complete(&mut Seen::new());
    items.discard_all();
}

impl<B: Backend, L: SettleAll> Drop for FixedBatch<'_, B, L> {
    fn drop(&mut self) {
        // `None` after `flush`, `discard` or a push moved the items on.
        if let Some(items) = self.items.take() {
            let n = items.count_unflushed_all();
            tear_down(items);
            if n != 0 {
                super::unflushed_dropped("FixedBatch", n);
            }
        }
    }
}

impl<B: Backend, L: SettleAll> core::fmt::Debug for FixedBatch<'_, B, L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "FixedBatch<{}>", core::any::type_name::<L>())
    }
}
