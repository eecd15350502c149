//! The typestate handle: a mapped buffer, its direction, and who owns it.
//!
//! ```text
//!                 map ──► Mapped<D, DevOwned> ──unsafe unmap──► Buf
//!                              │       ▲
//!   unsafe sync_for_cpu        │       │ sync_for_device
//!   unsafe sync_prefix_for_cpu ▼       │
//!             Mapped<D, CpuOwned> / Mapped<D, CpuOwnedPrefix> ──unmap──► Buf
//! ```
//!
//! Dropping a CPU-owned handle unmaps it and frees the buffer. Dropping a
//! device-owned handle frees nothing: the buffer is quarantined and counted
//! on the device ([`Device::leaked`]), because the device may still write
//! there. Nothing relies on a destructor running for soundness: forgetting a
//! handle leaks its buffer, which is safe.

use core::fmt;
use core::marker::PhantomData;
use core::mem::{ManuallyDrop, size_of};
use core::ptr::NonNull;

use crate::api::device::Device;
use crate::backend::{Backend, MapRequest, Mapping, PhysSlot, SyncRange};
use crate::base::addr::DmaAddr;
use crate::base::buffer::{CacheSafe, DmaBuffer, DmaTarget, Transfer, check_at_map};
use crate::base::direction::{
    CpuOwned, CpuOwnedPrefix, CpuState, CpuWritable, DevOwned, DeviceWritable, Direction,
    DmaDirection, Ownership,
};
use crate::base::error::{MapError, MapErrorKind, RangeError};
use crate::base::platform::{PhysLookup, Side};

/// A buffer mapped for DMA on the device `'d`, for transfers in direction
/// `D` ([`ToDevice`](crate::ToDevice), [`FromDevice`](crate::FromDevice),
/// [`Bidirectional`](crate::Bidirectional)), currently owned by `S`
/// ([`CpuOwned`], [`DevOwned`], [`CpuOwnedPrefix`]).
///
/// Read the type as a sentence: `Mapped<ToDevice, CpuOwned>` is a transmit
/// buffer the CPU is filling; `Mapped<FromDevice, DevOwned>` is a receive
/// buffer the device may be writing. A method that makes no sense in a state
/// does not exist in it:
///
/// | state | CPU view | CPU write | DMA address | to the other side | unmap |
/// |---|---|---|---|---|---|
/// | `DevOwned` | – | – | [`dma_addr`](Self::dma_addr) | `unsafe` [`sync_for_cpu`](Self::sync_for_cpu) | `unsafe` |
/// | `CpuOwned` | [`contents`](Self::contents) | if `D: CpuWritable` | – | [`sync_for_device`](Self::sync_for_device) | safe |
/// | `CpuOwnedPrefix` | the prefix | if `D: CpuWritable` | – | `sync_for_device` | safe |
///
/// # Invariants
///
/// - `ptr` and `keep` came from `Buf::into_raw_parts`, and the buffer has
///   not been rebuilt; `ptr` covers at least one byte.
/// - The mapping `(dma, phys, map_state)` was made by `device`'s backend for
///   exactly those bytes in direction `D`, and has not been unmapped.
/// - If `S` is a CPU state, the device has finished with the buffer and the
///   part of it the state exposes has been synced for the CPU; no other
///   reference to the memory exists except those borrowed from `self`.
/// - If `S` is `DevOwned`, the buffer was synced for the device and no CPU
///   reference to it exists.
#[must_use = "a mapped buffer: dropped while the device owns it, it is quarantined for good \
              (never freed, counted in `Device::leaked`); unmap it or keep it"]
pub struct Mapped<'d, D, S, Buf, B>
where
    D: Direction,
    S: Ownership,
    Buf: DmaBuffer,
    B: Backend,
{
    device: &'d Device<B>,
    ptr: NonNull<Buf::Target>,
    dma: DmaAddr,
    phys: B::Phys,
    map_state: ManuallyDrop<B::State>,
    keep: ManuallyDrop<Buf::Keep>,
    own: S,
    _owns: PhantomData<(fn() -> D, Buf)>,
}

// SAFETY: the handle owns the buffer (hence `Buf: Send`, its `Keep`, and
// the contents it hands out by `&mut` after the move: `Buf::Target: Send`),
// borrows the device (hence `B: Sync`), and owns the backend state
// (`Send + Sync` by the trait). The raw pointer is only dereferenced
// through `&self`/`&mut self` in CPU states.
unsafe impl<D, S, Buf, B> Send for Mapped<'_, D, S, Buf, B>
where
    D: Direction,
    S: Ownership,
    Buf: DmaBuffer + Send,
    Buf::Target: Send,
    Buf::Keep: Send,
    B: Backend + Sync,
{
}

// SAFETY: what `&Mapped` gives out is `&Buf::Target` (so the contents
// themselves must be `Sync`: `Buf: Sync` alone says nothing of a target
// such as `[Cell<u8>]`), `&Device<B>` (so `B: Sync`), `&B::State` (`Sync`
// by the trait) and nothing of `Buf` or `Keep` (required `Sync` anyway, so
// a later accessor cannot break this).
unsafe impl<D, S, Buf, B> Sync for Mapped<'_, D, S, Buf, B>
where
    D: Direction,
    S: Ownership,
    Buf: DmaBuffer + Sync,
    Buf::Target: Sync,
    Buf::Keep: Sync,
    B: Backend + Sync,
{
}

/// Gives a buffer back inside a map error.
///
/// # Safety
///
/// `ptr` and `keep` come from one `Buf::into_raw_parts` call and were not
/// used since.
#[cold]
unsafe fn refuse<Buf: DmaBuffer>(
    ptr: NonNull<Buf::Target>,
    keep: Buf::Keep,
    kind: MapErrorKind,
) -> MapError<Buf> {
    // SAFETY: forwarded from the caller.
    MapError::new(unsafe { Buf::from_raw_parts(ptr, keep) }, kind)
}

impl<'d, D, Buf, B> Mapped<'d, D, DevOwned, Buf, B>
where
    D: Direction,
    Buf: DmaBuffer,
    B: Backend,
{
    #[inline]
    pub(crate) fn map(device: &'d Device<B>, buf: Buf) -> Result<Self, MapError<Buf>>
    where
        Buf::Target: Transfer<D> + CacheSafe<B::Granule>,
    {
        let handle = Self::map_issue(device, buf)?;
        handle.complete_sync();
        handle.granted();
        Ok(handle)
    }

    /// Maps and issues the hand-over to the device without completing it.
    /// The caller must `flush` (unless `SYNC_IS_NOOP`) and then call
    /// [`granted`](Self::granted) before the DMA address reaches a device.
    #[inline]
    pub(crate) fn map_issue(device: &'d Device<B>, buf: Buf) -> Result<Self, MapError<Buf>>
    where
        Buf::Target: Transfer<D> + CacheSafe<B::Granule>,
    {
        // Also fails the build if a `LineAligned` promise is false.
        let check_granule = check_at_map::<Buf::Target, B::Granule>();
        Self::map_issue_with(device, buf, check_granule, false, 0)
    }

    /// [`map_issue`](Self::map_issue) with the cache-line check chosen by
    /// the caller (`check_granule`: check the address and length at run
    /// time), with `no_bounce` a refusal instead of a bounce, and
    /// `owned_len` the bytes from the buffer's start that are its alone (at
    /// least its length; `0` means just its length).
    #[inline]
    pub(crate) fn map_issue_with(
        device: &'d Device<B>,
        buf: Buf,
        check_granule: bool,
        no_bounce: bool,
        owned_len: usize,
    ) -> Result<Self, MapError<Buf>>
    where
        Buf::Target: Transfer<D>,
    {
        let (ptr, keep) = buf.into_raw_parts();
        let len = <Buf::Target as DmaTarget>::byte_len(ptr);
        let cpu = ptr.cast::<u8>();
        if len == 0 {
            // SAFETY: the parts were just taken and are given back once.
            return Err(unsafe { refuse(ptr, keep, MapErrorKind::ZeroLength) });
        }
        let granule = <B::Granule as typenum::Unsigned>::USIZE;
        let granule_ok = !check_granule
            || ((cpu.as_ptr() as usize).is_multiple_of(granule) && len.is_multiple_of(granule));
        // SAFETY: `ptr` and `len` describe the buffer just given up, one
        // live allocation (a `DmaBuffer`'s promise).
        let phys = unsafe { device.backend().platform().phys_of_allocation(cpu, len) };
        let Some(phys) = phys else {
            let kind = MapErrorKind::NoPhysAddr {
                cpu: cpu.as_ptr() as usize,
                len,
            };
            // SAFETY: as above.
            return Err(unsafe { refuse(ptr, keep, kind) });
        };
        // `PhysLookup` promises that `phys + len` does not overflow; the
        // backends' arithmetic relies on it (`MapRequest`'s invariant).
        debug_assert!(phys.last_of(len as u64).is_some());
        let req = MapRequest {
            cpu,
            phys,
            len,
            dir: D::VALUE,
            device: device.context(),
            granule_ok,
            owned_len: owned_len.max(len),
            no_bounce,
        };
        // SAFETY: the buffer was given up (`into_raw_parts`): its bytes are
        // valid, initialised, physically contiguous from `phys` (the
        // platform's promise), and only this handle reaches them until it
        // rebuilds the buffer, or never again if it is leaked.
        match unsafe { device.backend().map(&req) } {
            Ok((dma, map_state)) => Ok(Self {
                device,
                ptr,
                dma,
                phys: B::Phys::keep(phys),
                map_state: ManuallyDrop::new(map_state),
                keep: ManuallyDrop::new(keep),
                own: DevOwned,
                _owns: PhantomData,
            }),
            // SAFETY: as above; the backend holds nothing on error.
            Err(kind) => Err(unsafe { refuse(ptr, keep, kind) }),
        }
    }

    /// The address the device must use for this buffer. Only a device-owned
    /// handle has one: handing it out is handing the buffer over.
    #[inline]
    pub fn dma_addr(&self) -> DmaAddr {
        self.dma
    }

    /// Does not exist: a device-owned handle has no CPU view. Declared only
    /// so that the compiler's first error line names the state
    /// `contents()` needs and the call that gets there
    /// ([`CpuViewable`](crate::direction::CpuViewable) is implemented by no
    /// state).
    #[doc(hidden)]
    #[inline(always)]
    pub fn contents(&self) -> &Buf::Target
    where
        DevOwned: crate::base::direction::CpuViewable<D>,
    {
        <DevOwned as crate::base::direction::CpuViewable<D>>::absurd()
    }

    /// From now on the handle reaches its buffer through `ptr`, a pointer
    /// to the very same bytes with fresher provenance. For HALs whose
    /// caller hands the buffer back as a new pointer at completion
    /// (`virtio_drivers::Hal::unshare`), so that the CPU-side sync (an
    /// invalidate, a bounce copy back) writes through the pointer the
    /// caller vouches for now, not one it may have invalidated since.
    ///
    /// # Safety
    ///
    /// `ptr` has the address and the length of the handle's buffer and is
    /// valid for reads and writes of it, under the same conditions as
    /// [`DmaBuffer`]'s pointer, until the handle is given up.
    #[cfg(feature = "virtio")]
    #[inline]
    pub(crate) unsafe fn rebase(&mut self, ptr: NonNull<Buf::Target>) {
        debug_assert_eq!(ptr.cast::<u8>(), self.ptr.cast::<u8>());
        self.ptr = ptr;
    }

    /// Takes the buffer back from the device, making everything it wrote
    /// visible to the CPU.
    ///
    /// # Safety
    ///
    /// The caller promises that the device has finished every access to this
    /// buffer, and that this is ordered before the call: the driver has
    /// observed the device's completion for it (a descriptor's done bit read
    /// with acquire ordering, an interrupt status, a stopped engine), and no
    /// further access to the buffer's DMA address is queued or will be
    /// started until the handle is given back with
    /// [`sync_for_device`](Mapped::sync_for_device). Breaking this lets the
    /// device write memory that safe code is reading.
    #[inline]
    pub unsafe fn sync_for_cpu(self) -> Mapped<'d, D, CpuOwned, Buf, B> {
        // SAFETY: forwarded from the caller.
        unsafe { self.issue_to_cpu() };
        if Self::CPU_SYNC {
            // Still device-owned while the maintenance completes: if the
            // barrier unwinds, the handle is quarantined, never freed.
            self.device.backend().flush(self.device.context());
        }
        self.into_state(CpuOwned)
    }

    /// Takes the buffer back from the device and issues the CPU-side
    /// maintenance without completing it. The handle stays device-owned
    /// (so an unwinding flush quarantines it) until the caller has flushed
    /// and turned it CPU-owned with [`into_cpu_owned`](Self::into_cpu_owned).
    ///
    /// # Safety
    ///
    /// As for [`sync_for_cpu`](Self::sync_for_cpu); called at most once
    /// before `into_cpu_owned`, and the handle is not handed to a device or
    /// unmapped in between.
    #[inline]
    pub(crate) unsafe fn issue_to_cpu(&self) {
        let len = self.byte_len();
        // SAFETY: the device was given the buffer earlier (map or
        // sync_for_device) and the caller promises it is finished.
        unsafe { self.hand_over(Side::Cpu) };
        // SAFETY: the caller promises the device is finished; the handle is
        // device-owned, so no CPU reference exists.
        unsafe { self.issue_sync_for_cpu(SyncRange::whole(len)) };
    }

    /// The handle, CPU-owned, for a mapping no device was ever given (an
    /// allocation returned to the CPU first).
    ///
    /// # Safety
    ///
    /// [`granted`](Self::granted) was never called, and the map's
    /// maintenance has completed.
    #[inline(always)]
    pub(crate) unsafe fn into_cpu_owned_never_granted(self) -> Mapped<'d, D, CpuOwned, Buf, B> {
        self.into_state(CpuOwned)
    }

    /// The handle, CPU-owned, once [`issue_to_cpu`](Self::issue_to_cpu)'s
    /// maintenance has been completed by a flush on this thread.
    #[inline(always)]
    pub(crate) fn into_cpu_owned(self) -> Mapped<'d, D, CpuOwned, Buf, B> {
        self.into_state(CpuOwned)
    }

    /// Tells the platform that the device may now use the buffer: the last
    /// step of every hand-over to the device, after its maintenance
    /// completed.
    #[inline(always)]
    pub(crate) fn granted(&self) {
        // SAFETY: the handle is device-owned, so no CPU reference to the
        // buffer exists until it is synced back, and it keeps the pointer
        // valid.
        unsafe { self.hand_over(Side::Device) };
    }

    /// Tears down a mapping whose hand-over to the device was issued but
    /// never completed and granted (a batch dropped before its flush, after
    /// completing its work): no device was given the address, so there is
    /// nothing to take back from it. Unmaps, completes, and gives the
    /// buffer back.
    ///
    /// # Safety
    ///
    /// [`granted`](Self::granted) was never called for this handle, and any
    /// maintenance issued for it has been completed.
    pub(crate) unsafe fn unmap_never_granted(self) -> Buf {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped after; taken once.
        let map_state = unsafe { ManuallyDrop::take(&mut this.map_state) };
        let mut issued = false;
        if B::UNMAP_IS_NOOP {
            drop(map_state);
        } else {
            // SAFETY: the mapping is live and unmapped once; no device was
            // given its address (caller).
            unsafe { this.device.backend().unmap(&this.mapping(), map_state) };
            issued = true;
        }
        PendingUnmap {
            device: this.device,
            ptr: this.ptr,
            // SAFETY: taken once, as above.
            keep: ManuallyDrop::new(unsafe { ManuallyDrop::take(&mut this.keep) }),
            issued,
        }
        .finish()
    }

    /// Tears the mapping down and gives the buffer back, with everything
    /// the device wrote visible to the CPU.
    ///
    /// # Safety
    ///
    /// As for [`sync_for_cpu`](Self::sync_for_cpu): the device has finished
    /// with the buffer, observed by the driver, and will not touch its DMA
    /// address again.
    #[inline]
    pub unsafe fn unmap(self) -> Buf {
        // SAFETY: the caller promises the device is finished.
        unsafe { self.issue_unmap() }.finish()
    }
}

impl<D, Buf, B> Mapped<'_, D, DevOwned, Buf, B>
where
    D: Direction,
    Buf: DmaBuffer,
    B: Backend,
{
    /// Checks that `len` bytes at `offset` lie inside the mapping.
    fn byte_range(&self, offset: usize, len: usize) -> Result<SyncRange, RangeError<()>> {
        let available = self.byte_len();
        match offset.checked_add(len) {
            Some(end) if end <= available && len > 0 => Ok(SyncRange { offset, len }),
            _ => Err(RangeError::new((), offset.saturating_add(len), available)),
        }
    }

    /// Reads `out.len()` bytes at byte `offset` of a mapping the device
    /// keeps owning: a ranged sync for the CPU (Linux's
    /// `dma_sync_single_range_for_cpu`) and a copy, with no reference into
    /// the buffer. For long-lived mappings such as a descriptor ring in
    /// streaming memory, where the device owns the rest while the CPU looks
    /// at one entry.
    ///
    /// The handle is taken and given back, so no other thread uses it
    /// meanwhile, and if the barrier unwinds the handle is dropped as what
    /// it is, device-owned: quarantined, never left live with maintenance
    /// still queued on it.
    ///
    /// # Errors
    ///
    /// A range that is empty or leaves the mapping is refused, and the
    /// handle handed back in the error.
    ///
    /// # Safety
    ///
    /// The device does not access the range from before the call (observed
    /// by the driver, as for [`sync_for_cpu`](Self::sync_for_cpu)) until it
    /// returns.
    pub unsafe fn read_range(self, offset: usize, out: &mut [u8]) -> Result<Self, RangeError<Self>>
    where
        <Buf::Target as DmaTarget>::Elem: zerocopy::IntoBytes,
    {
        let range = match self.byte_range(offset, out.len()) {
            Ok(r) => r,
            Err(e) => return Err(RangeError::new(self, e.requested, e.available)),
        };
        if Self::CPU_SYNC {
            // SAFETY: the mapping is live, the range inside it, the device
            // leaves it alone (caller) and no CPU reference to it exists.
            unsafe {
                self.device
                    .backend()
                    .sync_for_cpu(&self.mapping(), &self.map_state, range)
            };
            self.device.backend().flush(self.device.context());
        }
        // SAFETY: inside the buffer; its element type has no padding, so the
        // bytes are initialised; the device leaves them alone (caller) and
        // `out` is caller memory, not the buffer.
        unsafe {
            core::ptr::copy_nonoverlapping(
                self.ptr.cast::<u8>().as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        Ok(self)
    }

    /// Writes `data` at byte `offset` of a mapping the device keeps
    /// owning, and hands that range to the device: a copy and a ranged sync
    /// for the device (Linux's `dma_sync_single_range_for_device`).
    ///
    /// The handle is taken and given back, as for
    /// [`read_range`](Self::read_range).
    ///
    /// # Errors
    ///
    /// A range that is empty or leaves the mapping is refused, and so is one
    /// that does not start and end on the backend's cache-line granule (or
    /// the mapping's end): cleaning a partial line would write back the rest
    /// of it over what the device is writing there.
    ///
    /// # Safety
    ///
    /// As for [`read_range`](Self::read_range): the device does not access
    /// the range during the call.
    pub unsafe fn write_range(self, offset: usize, data: &[u8]) -> Result<Self, RangeError<Self>>
    where
        D: CpuWritable,
        <Buf::Target as DmaTarget>::Elem: zerocopy::FromBytes,
    {
        let range = match self.byte_range(offset, data.len()) {
            Ok(r) => r,
            Err(e) => return Err(RangeError::new(self, e.requested, e.available)),
        };
        let granule = <B::Granule as typenum::Unsigned>::USIZE;
        let end = range.end();
        if !offset.is_multiple_of(granule)
            || !(end.is_multiple_of(granule) || end == self.byte_len())
        {
            let available = self.byte_len();
            return Err(RangeError::new(self, end, available));
        }
        // SAFETY: inside the buffer; any bytes are a valid element
        // (`FromBytes`); the device leaves the range alone (caller) and
        // `data` is caller memory.
        unsafe {
            core::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.ptr.cast::<u8>().as_ptr().add(offset),
                data.len(),
            )
        };
        if !B::SYNC_IS_NOOP {
            // SAFETY: live mapping, range inside it, no CPU reference.
            unsafe {
                self.device
                    .backend()
                    .sync_for_device(&self.mapping(), &self.map_state, range)
            };
            self.device.backend().flush(self.device.context());
        }
        Ok(self)
    }
}

impl<'d, D, T, Buf, B> Mapped<'d, D, DevOwned, Buf, B>
where
    D: DeviceWritable,
    Buf: DmaBuffer<Target = [T]>,
    B: Backend,
{
    /// Takes only the first `len` elements back from the device: the
    /// receive path, where a packet is shorter than its buffer. Only that
    /// prefix is synced, and only that prefix is visible afterwards.
    ///
    /// A `len` longer than the buffer is refused and the handle given back
    /// still device-owned.
    ///
    /// # Safety
    ///
    /// As for [`sync_for_cpu`](Self::sync_for_cpu): the device has finished
    /// every access to the *whole* buffer, observed by the driver.
    pub unsafe fn sync_prefix_for_cpu(
        self,
        len: usize,
    ) -> Result<Mapped<'d, D, CpuOwnedPrefix, Buf, B>, RangeError<Self>> {
        let available = self.ptr.len();
        if len > available {
            return Err(RangeError::new(self, len, available));
        }
        // SAFETY: as in `sync_for_cpu`.
        unsafe { self.hand_over(Side::Cpu) };
        if len > 0 {
            let range = SyncRange {
                offset: 0,
                len: len * size_of::<T>(),
            };
            // SAFETY: the caller promises the device is finished; `range` is
            // inside the mapping (checked above) and no CPU reference exists.
            unsafe { self.issue_sync_for_cpu(range) };
            if Self::CPU_SYNC {
                self.device.backend().flush(self.device.context());
            }
        }
        Ok(self.into_state(CpuOwnedPrefix { len }))
    }
}

impl<'d, D, S, Buf, B> Mapped<'d, D, S, Buf, B>
where
    D: Direction,
    S: CpuState,
    Buf: DmaBuffer,
    B: Backend,
{
    /// Hands the buffer to the device, making every CPU write visible to
    /// it. Any CPU view borrowed from the handle must have ended: the
    /// handle is consumed.
    #[inline]
    pub fn sync_for_device(self) -> Mapped<'d, D, DevOwned, Buf, B> {
        let handle = self.issue_to_device();
        handle.complete_sync();
        handle.granted();
        handle
    }

    /// Issues the hand-over to the device without completing it: the caller
    /// must `flush` and then call [`granted`](Mapped::granted) before the
    /// DMA address reaches a device.
    #[inline]
    pub(crate) fn issue_to_device(self) -> Mapped<'d, D, DevOwned, Buf, B> {
        // Device-owned before anything is issued: if the backend's hook
        // unwinds with a clean already queued, the handle is dropped as
        // device-owned and quarantined, never freed under the clean.
        let handle = self.into_state(DevOwned);
        if !B::SYNC_IS_NOOP {
            let m = handle.mapping();
            // SAFETY: the mapping is live and the whole range is inside it;
            // the CPU owned the buffer and every view borrowed from the
            // CPU-owned handle ended when it was moved here.
            unsafe {
                handle.device.backend().sync_for_device(
                    &m,
                    &handle.map_state,
                    SyncRange::whole(m.len),
                )
            };
        }
        handle
    }

    /// Tears the mapping down and gives the buffer back. Safe: the CPU
    /// already owns it.
    #[inline]
    pub fn unmap(self) -> Buf {
        // SAFETY: in a CPU state the device has finished with the buffer.
        unsafe { self.issue_unmap() }.finish()
    }
}

impl<D, Buf, B> Mapped<'_, D, CpuOwned, Buf, B>
where
    D: Direction,
    Buf: DmaBuffer,
    B: Backend,
{
    /// Does not exist: a CPU-owned handle has no DMA address. Declared
    /// only so that the compiler's first error line names the state
    /// `dma_addr()` needs and the call that gets there
    /// ([`DevAddressable`](crate::direction::DevAddressable) is implemented
    /// by no state).
    #[doc(hidden)]
    #[inline(always)]
    pub fn dma_addr(&self) -> DmaAddr
    where
        CpuOwned: crate::base::direction::DevAddressable<D>,
    {
        <CpuOwned as crate::base::direction::DevAddressable<D>>::absurd()
    }

    /// The buffer's contents, for reading. Exists in every direction.
    #[inline]
    pub fn contents(&self) -> &Buf::Target {
        // SAFETY: CPU-owned: the device is finished and the contents were
        // synced for the CPU; the bytes are valid `Target` (map required
        // `Transfer<D>`); the borrow is tied to `&self`.
        unsafe { self.ptr.as_ref() }
    }

    /// The buffer's contents, for writing. Only for directions in which the
    /// device reads what the CPU writes ([`ToDevice`](crate::ToDevice),
    /// [`Bidirectional`](crate::Bidirectional)).
    #[inline]
    pub fn contents_mut(&mut self) -> &mut Buf::Target
    where
        D: CpuWritable,
    {
        // SAFETY: as for `contents`, and `&mut self` makes the borrow
        // exclusive.
        unsafe { self.ptr.as_mut() }
    }
}

impl<D, T, Buf, B> Mapped<'_, D, CpuOwnedPrefix, Buf, B>
where
    D: Direction,
    Buf: DmaBuffer<Target = [T]>,
    B: Backend,
{
    /// The synced prefix, for reading.
    #[inline]
    pub fn contents(&self) -> &[T] {
        // SAFETY: the first `own.len` elements (within the buffer, checked
        // when the prefix was synced) were synced for the CPU and hold valid
        // `T`s; the borrow is tied to `&self`.
        unsafe { core::slice::from_raw_parts(self.ptr.cast::<T>().as_ptr(), self.own.len) }
    }

    /// The synced prefix, for writing (only [`Bidirectional`](crate::Bidirectional)
    /// is both device- and CPU-writable).
    #[inline]
    pub fn contents_mut(&mut self) -> &mut [T]
    where
        D: CpuWritable,
    {
        // SAFETY: as for `contents`, and `&mut self` makes it exclusive.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.cast::<T>().as_ptr(), self.own.len) }
    }

    /// Does not exist: a CPU-owned handle has no DMA address (see
    /// [`DevAddressable`](crate::direction::DevAddressable)).
    #[doc(hidden)]
    #[inline(always)]
    pub fn dma_addr(&self) -> DmaAddr
    where
        CpuOwnedPrefix: crate::base::direction::DevAddressable<D>,
    {
        <CpuOwnedPrefix as crate::base::direction::DevAddressable<D>>::absurd()
    }

    /// How many elements were synced and are visible.
    #[inline]
    pub fn prefix_len(&self) -> usize {
        self.own.len
    }
}

impl<'d, D, S, Buf, B> Mapped<'d, D, S, Buf, B>
where
    D: Direction,
    S: Ownership,
    Buf: DmaBuffer,
    B: Backend,
{
    /// The mapping's length in bytes.
    #[inline]
    pub fn byte_len(&self) -> usize {
        <Buf::Target as DmaTarget>::byte_len(self.ptr)
    }

    /// The mapping's direction, as a value.
    #[inline]
    pub const fn direction(&self) -> DmaDirection {
        D::VALUE
    }

    /// The device the buffer is mapped for.
    #[inline]
    pub fn device(&self) -> &'d Device<B> {
        self.device
    }

    /// The backend's per-mapping state.
    #[inline]
    pub fn backend_state(&self) -> &B::State {
        &self.map_state
    }

    /// What the backend is told about this mapping.
    #[inline]
    pub(crate) fn mapping(&self) -> Mapping<'d, B> {
        Mapping {
            cpu: self.ptr.cast(),
            phys: self.phys,
            dma: self.dma,
            len: self.byte_len(),
            dir: D::VALUE,
            device: self.device.context(),
        }
    }

    /// Whether handing this mapping back to the CPU does anything: not for
    /// a backend whose syncs are no-ops, and not for `ToDevice`, where the
    /// device wrote nothing the CPU must fetch (Linux's
    /// `arch_sync_dma_for_cpu` and swiotlb return at once for
    /// `DMA_TO_DEVICE`). Decided at compile time: a transmit completion
    /// costs no barrier.
    pub(crate) const CPU_SYNC: bool = !B::SYNC_IS_NOOP && D::VALUE.device_writes();

    /// Issues the CPU-side maintenance for `range` without completing it.
    ///
    /// # Safety
    ///
    /// The device has finished with `range`, which lies in the mapping, and
    /// no CPU reference to it exists.
    #[inline]
    pub(crate) unsafe fn issue_sync_for_cpu(&self, range: SyncRange) {
        if Self::CPU_SYNC {
            // SAFETY: forwarded from the caller; the mapping is live.
            unsafe {
                self.device
                    .backend()
                    .sync_for_cpu(&self.mapping(), &self.map_state, range)
            };
        }
    }

    /// Tells the platform which side owns the buffer now.
    ///
    /// # Safety
    ///
    /// As for [`PhysLookup::ownership_changed`](crate::base::platform::PhysLookup::ownership_changed):
    /// for `Side::Device` no CPU reference to the buffer exists until the
    /// next `Side::Cpu`; for `Side::Cpu` the buffer was handed to the device
    /// before.
    #[inline(always)]
    pub(crate) unsafe fn hand_over(&self, to: Side) {
        // SAFETY: forwarded from the caller; the mapping is live, and the
        // pointer is valid for the handle's bytes as long as the handle
        // lives (it owns the buffer).
        unsafe {
            self.device
                .backend()
                .hand_over(&self.mapping(), &self.map_state, to)
        };
    }

    /// Completes issued maintenance (a batch of one).
    #[inline]
    pub(crate) fn complete_sync(&self) {
        if !B::SYNC_IS_NOOP {
            self.device.backend().flush(self.device.context());
        }
    }

    /// The same mapping in another ownership state.
    #[inline]
    fn into_state<S2: Ownership>(self, own: S2) -> Mapped<'d, D, S2, Buf, B> {
        let this = ManuallyDrop::new(self);
        Mapped {
            device: this.device,
            ptr: this.ptr,
            dma: this.dma,
            phys: this.phys,
            // SAFETY: `this` is never dropped, so each of these is moved
            // exactly once, into the new handle.
            map_state: unsafe { core::ptr::read(&this.map_state) },
            // SAFETY: as above.
            keep: unsafe { core::ptr::read(&this.keep) },
            own,
            _owns: PhantomData,
        }
    }

    /// Syncs for the CPU whatever it has not taken back and issues the
    /// unmap, without completing either. The buffer comes back from
    /// [`PendingUnmap::finish`], which completes first if anything was
    /// issued, or from a batch's flush.
    ///
    /// # Safety
    ///
    /// The device has finished with the buffer.
    pub(crate) unsafe fn issue_unmap(self) -> PendingUnmap<'d, Buf, B> {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: called once, and `this` is never used or dropped after;
        // the device is finished (caller).
        unsafe { this.issue_tear_down() }
    }

    /// The body of [`issue_unmap`](Self::issue_unmap), also used by `Drop`.
    ///
    /// # Safety
    ///
    /// Called at most once per handle; afterwards the handle is neither used
    /// nor dropped (only its trivial fields may be). The device has finished
    /// with the buffer.
    unsafe fn issue_tear_down(&mut self) -> PendingUnmap<'d, Buf, B> {
        let len = self.byte_len();
        let elem = size_of::<<Buf::Target as DmaTarget>::Elem>();
        let mut issued = false;
        if S::DEVICE_OWNED {
            // SAFETY: the device owned the buffer and is finished (caller).
            unsafe { self.hand_over(Side::Cpu) };
        }
        if let Some(first) = self.own.cpu_stale_from() {
            let offset = first * elem;
            if Self::CPU_SYNC && offset < len {
                // SAFETY: the device is finished (caller); the range is the
                // part of the mapping the CPU has not seen, so no CPU
                // reference covers it.
                unsafe {
                    self.issue_sync_for_cpu(SyncRange {
                        offset,
                        len: len - offset,
                    })
                };
                issued = true;
            }
        }
        // SAFETY: called once (caller), so the state is taken once.
        let map_state = unsafe { ManuallyDrop::take(&mut self.map_state) };
        if B::UNMAP_IS_NOOP {
            drop(map_state);
        } else {
            // SAFETY: the mapping is live and unmapped once; the device is
            // finished (caller).
            unsafe { self.device.backend().unmap(&self.mapping(), map_state) };
            issued = true;
        }
        PendingUnmap {
            device: self.device,
            ptr: self.ptr,
            // SAFETY: called once (caller), so `keep` is taken once.
            keep: ManuallyDrop::new(unsafe { ManuallyDrop::take(&mut self.keep) }),
            issued,
        }
    }
}

/// A buffer whose unmap has been issued but not completed: held inside a
/// batch until its flush, after which it becomes the buffer again.
///
/// # Invariants
///
/// `ptr` and `keep` are the parts of a buffer whose mapping is being torn
/// down; `issued` says whether maintenance or invalidation is outstanding.
pub struct PendingUnmap<'d, Buf: DmaBuffer, B: Backend> {
    device: &'d Device<B>,
    ptr: NonNull<Buf::Target>,
    keep: ManuallyDrop<Buf::Keep>,
    issued: bool,
}

impl<'d, Buf: DmaBuffer, B: Backend> PendingUnmap<'d, Buf, B> {
    /// Whether a flush is needed before the buffer may be used.
    pub(crate) fn needs_flush(&self) -> bool {
        self.issued
    }

    /// The device whose backend must complete the unmap.
    pub(crate) fn device(&self) -> &'d Device<B> {
        self.device
    }

    /// Completes the unmap (a batch of one) and rebuilds the buffer.
    pub(crate) fn finish(self) -> Buf {
        if self.issued {
            self.device.backend().flush(self.device.context());
        }
        // SAFETY: completed just above.
        unsafe { self.into_buffer() }
    }

    /// Rebuilds the buffer.
    ///
    /// # Safety
    ///
    /// The unmap's work has been completed by a flush on this thread (or
    /// nothing was issued).
    pub(crate) unsafe fn into_buffer(self) -> Buf {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so the parts are taken once, and
        // they rebuild the buffer they came from.
        unsafe { Buf::from_raw_parts(this.ptr, ManuallyDrop::take(&mut this.keep)) }
    }

    /// The buffer's length in bytes.
    pub(crate) fn byte_len(&self) -> usize {
        <Buf::Target as DmaTarget>::byte_len(self.ptr)
    }
}

// SAFETY: as for `Mapped`: it owns the buffer's parts and borrows the device.
unsafe impl<Buf, B> Send for PendingUnmap<'_, Buf, B>
where
    Buf: DmaBuffer + Send,
    Buf::Target: Send,
    Buf::Keep: Send,
    B: Backend + Sync,
{
}

impl<Buf: DmaBuffer, B: Backend> Drop for PendingUnmap<'_, Buf, B> {
    fn drop(&mut self) {
        // Only reached when a batch is dropped unflushed (it completes its
        // maintenance first) or a panic unwinds: the unmap may not have
        // completed, so the buffer is quarantined, never freed.
        self.device.stats().record_leak(self.byte_len());
    }
}

impl<Buf: DmaBuffer, B: Backend> fmt::Debug for PendingUnmap<'_, Buf, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PendingUnmap {{ bytes: {} }}", self.byte_len())
    }
}

impl<D, S, Buf, B> Drop for Mapped<'_, D, S, Buf, B>
where
    D: Direction,
    S: Ownership,
    Buf: DmaBuffer,
    B: Backend,
{
    fn drop(&mut self) {
        if S::DEVICE_OWNED {
            // The device may still be writing: quarantine the buffer, the
            // backend state (an IOVA, a bounce slot) and `keep` by never
            // releasing them, and count it.
            self.device.stats().record_leak(self.byte_len());
        } else {
            // SAFETY: this is the last use of `self`; in a CPU state the
            // device is finished with the buffer.
            drop(unsafe { self.issue_tear_down() }.finish());
        }
    }
}

impl<D, S, Buf, B> fmt::Debug for Mapped<'_, D, S, Buf, B>
where
    D: Direction,
    S: Ownership,
    Buf: DmaBuffer,
    B: Backend,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Mapped<{}, {}> {{ bytes: {}",
            D::NAME,
            S::NAME,
            self.byte_len()
        )?;
        if let Some(prefix) = self.own.cpu_stale_from().filter(|_| !S::DEVICE_OWNED) {
            write!(f, ", visible: {prefix}")?;
        }
        if S::DEVICE_OWNED {
            write!(f, ", dma: {:#x}", self.dma.as_u64())?;
        }
        f.write_str(" }")
    }
}
