//! Scatter-gather: a list of buffers mapped together, handed over together,
//! with one completion for the whole list.
//!
//! [`SgMapped`] holds one handle per buffer, all in the same state. Mapping
//! and every sync issue the work of each buffer and complete it with one
//! barrier (Linux's `dma_map_sg` loop followed by one
//! `arch_sync_dma_flush()`). The device sees the list as
//! [`segments`](SgMapped::segments): `(DMA address, length)` pairs no longer
//! than the device's maximum segment size and never crossing its segment
//! boundary, splitting a buffer where needed.

use alloc::vec::Vec;
use core::fmt;

use crate::api::device::{Device, DeviceConfig};
use crate::api::handle::Mapped;
use crate::backend::Backend;
use crate::base::addr::DmaAddr;
use crate::base::buffer::{CacheSafe, DmaBuffer, Transfer};
use crate::base::direction::{CpuOwned, CpuState, CpuWritable, DevOwned, Direction, Ownership};
use crate::base::error::{ForeignDeviceError, MapErrorKind, RangeError};

/// A scatter-gather list of buffers mapped for direction `D` on one device,
/// all owned by `S`.
///
/// # Example
///
/// ```
/// use dmacap::sim::SimPlatform;
///
/// let sim = SimPlatform::noncoherent(1 << 20);
/// let dev = sim.noncoherent_device();
/// let bufs = (0..16).map(|_| sim.memory().alloc_slice_aligned::<u8>(4096, 64).unwrap());
/// let sg = dev.map_sg::<dmacap::FromDevice, _, _>(bufs).unwrap();
/// assert_eq!(dev.stats().barriers(), 1);            // one for the whole list
/// assert_eq!(sg.segments().count(), 16);
/// // SAFETY: the simulated device was never started.
/// let sg = unsafe { sg.sync_for_cpu() };
/// assert_eq!(dev.stats().barriers(), 2);
/// let bufs = sg.unmap();
/// assert_eq!(bufs.len(), 16);
/// ```
#[must_use = "a mapped scatter-gather list: dropped while the device owns it, every buffer is \
              quarantined for good (never freed, counted in `Device::leaked`)"]
pub struct SgMapped<'d, D, S, Buf, B>
where
    D: Direction,
    S: Ownership,
    Buf: DmaBuffer,
    B: Backend,
{
    device: &'d Device<B>,
    entries: Vec<Mapped<'d, D, S, Buf, B>>,
}

/// A failed scatter-gather map: which buffer failed and why, and every
/// buffer of the list handed back, in order. Nothing stays mapped.
#[derive(thiserror::Error)]
#[error("scatter-gather map failed at buffer {index}: {kind}")]
pub struct SgMapError<Buf> {
    /// The position of the buffer that could not be mapped.
    pub index: usize,
    /// Why.
    pub kind: MapErrorKind,
    buffers: Vec<Buf>,
}

impl<Buf> SgMapError<Buf> {
    /// Every buffer of the list, in the order given.
    pub fn into_buffers(self) -> Vec<Buf> {
        self.buffers
    }
}

impl<Buf> fmt::Debug for SgMapError<Buf> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SgMapError")
            .field("index", &self.index)
            .field("kind", &self.kind)
            .field("buffers", &self.buffers.len())
            .finish()
    }
}

impl<B: Backend> Device<B> {
    /// Maps every buffer of `bufs` for direction `D` and hands the list to
    /// the device with one completion.
    ///
    /// If any buffer cannot be mapped, the ones already mapped are unmapped
    /// again and every buffer comes back in the error, in order.
    pub fn map_sg<D, Buf, I>(
        &self,
        bufs: I,
    ) -> Result<SgMapped<'_, D, DevOwned, Buf, B>, SgMapError<Buf>>
    where
        D: Direction,
        Buf: DmaBuffer,
        Buf::Target: Transfer<D> + CacheSafe<B::Granule>,
        I: IntoIterator<Item = Buf>,
    {
        let mut bufs = bufs.into_iter();
        let mut entries = Vec::with_capacity(bufs.size_hint().0);
        for buf in bufs.by_ref() {
            match Mapped::map_issue(self, buf) {
                Ok(h) => entries.push(h),
                Err(e) => {
                    let index = entries.len();
                    let (kind, failed) = e.into_parts();
                    let mut buffers = undo(self, entries);
                    buffers.push(failed);
                    buffers.extend(bufs);
                    return Err(SgMapError {
                        index,
                        kind,
                        buffers,
                    });
                }
            }
        }
        complete(self, !entries.is_empty());
        entries.iter().for_each(Mapped::granted);
        Ok(SgMapped {
            device: self,
            entries,
        })
    }
}

/// Flushes once if anything was issued and the backend syncs at all.
fn complete<B: Backend>(device: &Device<B>, issued: bool) {
    if issued && !B::SYNC_IS_NOOP {
        device.backend().flush(device.context());
    }
}

/// Unmaps handles mapped (issued) but never handed to a device.
fn undo<'d, D: Direction, Buf: DmaBuffer, B: Backend>(
    device: &'d Device<B>,
    entries: Vec<Mapped<'d, D, DevOwned, Buf, B>>,
) -> Vec<Buf> {
    complete(device, !entries.is_empty());
    entries.iter().for_each(Mapped::granted);
    // SAFETY: no device was ever given these addresses.
    unsafe { unmap_all(device, entries) }
}

/// Issues the unmap of every handle, completes once, and returns the
/// buffers.
///
/// # Safety
///
/// The device has finished with every buffer.
unsafe fn unmap_all<'d, D: Direction, S: Ownership, Buf: DmaBuffer, B: Backend>(
    device: &'d Device<B>,
    entries: Vec<Mapped<'d, D, S, Buf, B>>,
) -> Vec<Buf> {
    // SAFETY: forwarded from the caller.
    let pending: Vec<_> = entries
        .into_iter()
        .map(|h| unsafe { h.issue_unmap() })
        .collect();
    if pending.iter().any(|p| p.needs_flush()) {
        device.backend().flush(device.context());
    }
    // SAFETY: completed just above (or nothing was issued).
    pending
        .into_iter()
        .map(|p| unsafe { p.into_buffer() })
        .collect()
}

impl<'d, D, S, Buf, B> SgMapped<'d, D, S, Buf, B>
where
    D: Direction,
    S: Ownership,
    Buf: DmaBuffer,
    B: Backend,
{
    /// Whether handing the list back to the CPU issues anything (see
    /// `Mapped::CPU_SYNC`).
    const CPU_SYNC: bool = Mapped::<'d, D, S, Buf, B>::CPU_SYNC;

    /// How many buffers the list holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total bytes mapped.
    pub fn byte_len(&self) -> usize {
        self.entries.iter().map(Mapped::byte_len).sum()
    }

    /// The handles, one per buffer.
    pub fn as_slice(&self) -> &[Mapped<'d, D, S, Buf, B>] {
        &self.entries
    }

    fn take(mut self) -> Vec<Mapped<'d, D, S, Buf, B>> {
        core::mem::take(&mut self.entries)
    }
}

impl<'d, D, Buf, B> SgMapped<'d, D, DevOwned, Buf, B>
where
    D: Direction,
    Buf: DmaBuffer,
    B: Backend,
{
    /// The list as the device must be told it: `(DMA address, length)`
    /// segments, each at most the device's maximum segment size and none
    /// crossing its segment boundary.
    pub fn segments(&self) -> Segments<'_, 'd, D, Buf, B> {
        Segments {
            config: self.device.config(),
            entries: &self.entries,
            next: 0,
            offset: 0,
        }
    }

    /// Takes the whole list back from the device, with one completion.
    ///
    /// # Safety
    ///
    /// As for [`Mapped::sync_for_cpu`], for every buffer of the list.
    pub unsafe fn sync_for_cpu(self) -> SgMapped<'d, D, CpuOwned, Buf, B> {
        for h in &self.entries {
            // SAFETY: forwarded from the caller; each handle is issued once
            // and stays device-owned until the flush below has completed.
            unsafe { h.issue_to_cpu() };
        }
        // The list is still device-owned while the maintenance completes:
        // if the barrier unwinds, dropping it quarantines every buffer.
        complete(
            self.device,
            !self.entries.is_empty() && SgMapped::<'d, D, CpuOwned, Buf, B>::CPU_SYNC,
        );
        let device = self.device;
        let entries = self
            .take()
            .into_iter()
            .map(Mapped::into_cpu_owned)
            .collect();
        SgMapped { device, entries }
    }

    /// Takes the first `n` buffers back from the device, with one
    /// completion, and leaves the rest with it: the partial sync of a range
    /// of the list (a receive list the device filled only in part). A `n`
    /// past the end is refused and the list handed back.
    ///
    /// # Safety
    ///
    /// As for [`Mapped::sync_for_cpu`], for each of the first `n` buffers.
    #[allow(clippy::type_complexity)]
    pub unsafe fn sync_first_for_cpu(
        self,
        n: usize,
    ) -> Result<(SgMapped<'d, D, CpuOwned, Buf, B>, Self), RangeError<Self>> {
        if n > self.len() {
            let len = self.len();
            return Err(RangeError::new(self, n, len));
        }
        let device = self.device;
        let mut first = self.take();
        let rest = first.split_off(n);
        // SAFETY: forwarded from the caller.
        let first = unsafe {
            SgMapped {
                device,
                entries: first,
            }
            .sync_for_cpu()
        };
        Ok((
            first,
            SgMapped {
                device,
                entries: rest,
            },
        ))
    }

    /// Appends another device-owned list of the same device (after
    /// [`sync_first_for_cpu`](Self::sync_first_for_cpu) split one, say).
    ///
    /// A list of another device is refused and handed back in the error:
    /// this list's syncs and unmap complete on its own device only.
    pub fn append(&mut self, mut other: Self) -> Result<(), ForeignDeviceError<Self>> {
        if !core::ptr::eq(self.device, other.device) {
            let (list, offered) = (self.device.id(), other.device.id());
            return Err(ForeignDeviceError::new(other, list, offered));
        }
        self.entries.append(&mut other.entries);
        Ok(())
    }

    /// Unmaps the whole list with one completion and gives the buffers back.
    ///
    /// # Safety
    ///
    /// As for [`Mapped::unmap`] of a device-owned handle, for every buffer.
    pub unsafe fn unmap(self) -> Vec<Buf> {
        let device = self.device;
        // SAFETY: forwarded from the caller.
        unsafe { unmap_all(device, self.take()) }
    }
}

impl<'d, D, S, Buf, B> SgMapped<'d, D, S, Buf, B>
where
    D: Direction,
    S: CpuState,
    Buf: DmaBuffer,
    B: Backend,
{
    /// Hands the whole list to the device, with one completion.
    pub fn sync_for_device(self) -> SgMapped<'d, D, DevOwned, Buf, B> {
        let device = self.device;
        let entries: Vec<_> = self
            .take()
            .into_iter()
            .map(Mapped::issue_to_device)
            .collect();
        complete(device, !entries.is_empty());
        entries.iter().for_each(Mapped::granted);
        SgMapped { device, entries }
    }

    /// Unmaps the whole list with one completion and gives the buffers back.
    pub fn unmap(self) -> Vec<Buf> {
        let device = self.device;
        // SAFETY: in a CPU state the device has finished with every buffer.
        unsafe { unmap_all(device, self.take()) }
    }
}

impl<'d, D, Buf, B> SgMapped<'d, D, CpuOwned, Buf, B>
where
    D: Direction,
    Buf: DmaBuffer,
    B: Backend,
{
    /// The contents of buffer `i`, for writing (directions the CPU may
    /// write). The list hands out contents, never its handles: a handle
    /// cannot be swapped for another device's, so every completion the
    /// list issues is on its own device.
    pub fn contents_mut(&mut self, i: usize) -> Option<&mut Buf::Target>
    where
        D: CpuWritable,
    {
        self.entries.get_mut(i).map(|h| h.contents_mut())
    }

    /// The contents of every buffer, in order, for writing.
    pub fn iter_contents_mut(&mut self) -> impl Iterator<Item = &mut Buf::Target>
    where
        D: CpuWritable,
    {
        self.entries.iter_mut().map(|h| h.contents_mut())
    }

    /// The contents of buffer `i`, for reading.
    pub fn contents(&self, i: usize) -> Option<&Buf::Target> {
        self.entries.get(i).map(|h| h.contents())
    }

    /// The contents of every buffer, in order, for reading.
    pub fn iter_contents(&self) -> impl Iterator<Item = &Buf::Target> {
        self.entries.iter().map(|h| h.contents())
    }
}

impl<D, S, Buf, B> Drop for SgMapped<'_, D, S, Buf, B>
where
    D: Direction,
    S: Ownership,
    Buf: DmaBuffer,
    B: Backend,
{
    fn drop(&mut self) {
        let entries = core::mem::take(&mut self.entries);
        if S::DEVICE_OWNED {
            drop(entries); // each handle quarantines itself and is counted
        } else {
            // SAFETY: in a CPU state the device has finished with them.
            drop(unsafe { unmap_all(self.device, entries) });
        }
    }
}

impl<D, S, Buf, B> fmt::Debug for SgMapped<'_, D, S, Buf, B>
where
    D: Direction,
    S: Ownership,
    Buf: DmaBuffer,
    B: Backend,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SgMapped<{}, {}> {{ buffers: {}, bytes: {} }}",
            D::NAME,
            S::NAME,
            self.len(),
            self.byte_len()
        )
    }
}

/// The device's view of a scatter-gather list: `(DMA address, length)`
/// segments within its limits.
pub struct Segments<'a, 'd, D, Buf, B>
where
    D: Direction,
    Buf: DmaBuffer,
    B: Backend,
{
    config: &'a DeviceConfig,
    entries: &'a [Mapped<'d, D, DevOwned, Buf, B>],
    next: usize,
    offset: usize,
}

impl<D: Direction, Buf: DmaBuffer, B: Backend> fmt::Debug for Segments<'_, '_, D, Buf, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segments")
            .field("next", &self.next)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

/// The longest piece of `[start, start + len)` that starts at `start`, is
/// at most `max` bytes and does not cross a boundary of `mask`.
pub(crate) fn segment_len(start: u64, len: usize, max: usize, mask: u64) -> usize {
    let to_boundary = match (start | mask).checked_add(1) {
        Some(next) => usize::try_from(next - start).unwrap_or(usize::MAX),
        None => usize::MAX,
    };
    len.min(max.max(1)).min(to_boundary)
}

impl<D: Direction, Buf: DmaBuffer, B: Backend> Iterator for Segments<'_, '_, D, Buf, B> {
    type Item = (DmaAddr, usize);

    fn next(&mut self) -> Option<(DmaAddr, usize)> {
        let h = self.entries.get(self.next)?;
        let (dma, len) = (h.dma_addr(), h.byte_len());
        let start = dma.as_u64() + self.offset as u64;
        let n = segment_len(
            start,
            len - self.offset,
            self.config.max_segment(),
            self.config.boundary_mask(),
        );
        self.offset += n;
        if self.offset == len {
            self.next += 1;
            self.offset = 0;
        }
        Some((DmaAddr::new(start), n))
    }
}

#[cfg(test)]
mod tests {
    use super::segment_len;

    #[test]
    fn segments_respect_size_and_boundary() {
        // 64 KiB max, 4 GiB boundary (Linux's defaults).
        assert_eq!(
            segment_len(0x1000, 0x3_0000, 0x1_0000, 0xffff_ffff),
            0x1_0000
        );
        assert_eq!(
            segment_len(0xffff_f000, 0x2000, 0x1_0000, 0xffff_ffff),
            0x1000
        );
        // A 64 KiB boundary splits inside a small buffer.
        assert_eq!(segment_len(0x1_fff0, 0x20, 0x1_0000, 0xffff), 0x10);
        // No boundary at all.
        assert_eq!(segment_len(u64::MAX - 3, 4, 0x1_0000, u64::MAX), 4);
    }
}
