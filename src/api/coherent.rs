//! Coherent allocations (Linux's `dma_alloc_coherent`): memory the CPU and
//! a device share for its whole life, in two typed phases.
//!
//! ```text
//!   dev.alloc_coherent::<T>() ──► CoherentBox<T> ── share() ──► Coherent<T> ── unsafe free() ──► (gone)
//!                                  CPU only: &T / &mut T         shared: volatile, typed accesses
//!                                  no DMA address                 dma_addr(); dropped: quarantined
//! ```
//!
//! - [`CoherentBox`] is the CPU-only phase: the memory is allocated and
//!   zeroed, but not mapped and its DMA address withheld, so no device can
//!   reach it and safe code may hold ordinary references (`Deref`,
//!   `DerefMut`) to build a ring's initial contents.
//! - [`share`](CoherentBox::share) maps it (never bounced: a device that
//!   cannot reach it is an error) and hands it to the device for good.
//! - [`Coherent`] is the shared phase. No Rust reference into the memory
//!   exists any more: the device may write any byte at any time. The CPU
//!   reads and writes whole values or single fields, each one access
//!   through the platform's volatile accessors: [`dma_read!`](crate::dma_read)
//!   and [`dma_write!`](crate::dma_write) name a field by its path, checked
//!   at compile time by `core::mem::offset_of!` (which never goes through
//!   `Deref`), and the access is bounds- and alignment-checked. Reads need
//!   `FromBytes` (the device may have written anything), writes `IntoBytes`
//!   (no padding leaks to the device), and writes take `&mut self`, so CPU
//!   accesses never race each other.
//!
//! On a device that does not snoop the CPU's caches the platform maps the
//! memory uncached ([`DmaAllocator::alloc_dma`]'s `uncached`), so neither phase
//! needs cache maintenance; behind an IOMMU the allocation fills whole
//! IOMMU pages, so the device sees nothing else in them.
//!
//! ```
//! use dmacap::{dma_read, dma_write};
//! use dmacap::sim::SimPlatform;
//! use zerocopy::byteorder::little_endian::U16;
//!
//! #[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)]
//! #[repr(C)]
//! struct Ring { flags: U16, idx: U16, ring: [U16; 8] }
//!
//! let sim = SimPlatform::noncoherent(1 << 20);
//! let dev = sim.noncoherent_device();
//! let mut ring = dev.alloc_coherent::<Ring>().unwrap();
//! ring.flags = U16::new(1);                 // CPU phase: plain references
//! let mut ring = ring.share().unwrap();     // shared: no references any more
//! dma_write!(ring, Ring, idx, U16::new(3)); // one volatile, typed store
//! let engine = sim.device(&dev);
//! let mut idx = [0u8; 2];
//! engine.read(ring.dma_addr().checked_add(2).unwrap(), &mut idx).unwrap(); // uncached: no clean needed
//! assert_eq!(idx, [3, 0]);
//! engine.write(ring.dma_addr(), &[7, 0]).unwrap();
//! assert_eq!(dma_read!(ring, Ring, flags).get(), 7); // no invalidate needed
//! // SAFETY: the simulated device is not running.
//! unsafe { ring.free() };
//! ```

use core::fmt;
use core::marker::PhantomData;
use core::mem::{ManuallyDrop, align_of, size_of};
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use zerocopy::{FromBytes, FromZeros, IntoBytes};

use crate::api::device::Device;
use crate::backend::{Backend, MmioRequest};
use crate::base::addr::DmaAddr;
use crate::base::buffer::{DmaPages, DmaTarget};
use crate::base::direction::DmaDirection;
use crate::base::error::AllocError;
use crate::base::platform::{DmaAllocator, PhysLookup, Side};

/// The size and alignment of an allocation of `bytes` for `device`: whole
/// cache-line granules (so no line is shared with other data) and whole
/// access granules (IOMMU pages, so the device sees nothing else).
pub(crate) fn dma_layout<B: Backend>(
    device: &Device<B>,
    bytes: usize,
    align: usize,
) -> Result<(usize, usize), AllocError> {
    let line = <B::Granule as typenum::Unsigned>::USIZE;
    let unit = line.max(device.backend().access_granule());
    let size = bytes
        .checked_next_multiple_of(unit)
        .ok_or(AllocError::TooLarge {
            elems: bytes,
            elem_size: 1,
        })?;
    Ok((size, align.max(unit)))
}

/// Allocates `size` bytes aligned to `align` from `device`'s platform,
/// reachable by the device.
pub(crate) fn dma_alloc<B: Backend>(
    device: &Device<B>,
    size: usize,
    align: usize,
    uncached: bool,
) -> Result<NonNull<u8>, AllocError>
where
    B::Platform: DmaAllocator,
{
    dma_alloc_below(
        device,
        size,
        align,
        uncached,
        device.backend().phys_limit(device.config()),
    )
}

/// As [`dma_alloc`], with the last byte at or below `max_phys`.
pub(crate) fn dma_alloc_below<B: Backend>(
    device: &Device<B>,
    size: usize,
    align: usize,
    uncached: bool,
    max_phys: u64,
) -> Result<NonNull<u8>, AllocError>
where
    B::Platform: DmaAllocator,
{
    device
        .platform()
        .alloc_dma(size, align, max_phys, uncached)
        .ok_or(AllocError::OutOfMemory {
            size,
            align,
            max_phys,
        })
}

/// Contents a device may share with the CPU for good: the device may write
/// any byte at any time, so every bit pattern must be a valid value
/// (`FromBytes`); and the device reads every byte, so there must be no
/// padding (`IntoBytes`): a CPU-phase write of a padded value leaves its
/// padding uninitialised, which the device would read (a leak) and a field
/// read over it would return (undefined behaviour). Implemented for every
/// such type; sealed.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be shared with a device: it could write bytes that are not a valid `{Self}`, or read its padding",
    label = "not `FromBytes + IntoBytes`",
    note = "shared coherent memory needs contents for which every bit pattern is valid and that have no padding (zerocopy's `FromBytes + IntoBytes`)"
)]
pub trait SharedContents: shared::Sealed {}

#[diagnostic::do_not_recommend]
impl<T: ?Sized + shared::Sealed> SharedContents for T {}

/// Only for the compiler's message: a [`CoherentBox`] (the CPU-only phase)
/// has no DMA address. Implemented by no type, and no type can implement
/// it, so `CoherentBox::dma_addr` never compiles; its first error line
/// names the rule and the way out.
#[diagnostic::on_unimplemented(
    message = "a `CoherentBox` withholds its DMA address until `share`: call `let shared = boxed.share()?;` and take `shared.dma_addr()`",
    label = "CPU-only phase: no device may be given this allocation yet",
    note = "the CPU phase has safe `Deref`/`DerefMut`; the address exists only once the allocation is shared (`Coherent`), after which fields go through `dma_read!`/`dma_write!`"
)]
pub trait AddressAfterShare: never::Never {
    /// Never called: no type implements this trait.
    #[doc(hidden)]
    fn absurd<R>() -> R;
}

mod never {
    /// Implemented by no type: seals [`super::AddressAfterShare`] shut.
    pub trait Never {}
}

mod shared {
    pub trait Sealed {}
    impl<T: ?Sized + zerocopy::FromBytes + zerocopy::IntoBytes> Sealed for T {}
}

/// Allocates `len` zeroed `T`s for `device` as a [`DmaPages`] buffer, in
/// whole granules, with its last byte at or below `max_phys` (the device's
/// reach when `None`).
pub(crate) fn dma_pages<B: Backend, T: FromZeros>(
    device: &Device<B>,
    len: usize,
    max_phys: Option<u64>,
) -> Result<DmaPages<[T], B::Platform>, AllocError>
where
    B::Platform: DmaAllocator + Clone,
{
    let bytes = len
        .checked_mul(size_of::<T>())
        .ok_or(AllocError::TooLarge {
            elems: len,
            elem_size: size_of::<T>(),
        })?;
    if bytes == 0 {
        return Err(AllocError::ZeroSize);
    }
    let (size, align) = dma_layout(device, bytes, align_of::<T>())?;
    let ptr = match max_phys {
        Some(max_phys) => dma_alloc_below(device, size, align, false, max_phys)?,
        None => dma_alloc(device, size, align, false)?,
    };
    let slice = NonNull::slice_from_raw_parts(ptr.cast::<T>(), len);
    // SAFETY: `size` bytes aligned to `align` from one `alloc_dma` of this
    // platform, owned here, zeroed: a valid `[T]` (`FromZeros`).
    Ok(unsafe { DmaPages::from_alloc(slice, device.platform().clone(), size, align) })
}

/// A coherent allocation in its CPU-only phase: allocated and zeroed, not
/// yet mapped, its DMA address withheld. Dereferences to its contents.
///
/// # Invariants
///
/// `ptr` points to `size` bytes aligned to `align` from one
/// [`DmaAllocator::alloc_dma`] of the device's platform (`size` covers the
/// contents and rounds them up to whole granules), holding a valid `T`; no
/// device can reach them; nothing else references them.
pub struct CoherentBox<'d, T: ?Sized + DmaTarget, B: Backend>
where
    B::Platform: DmaAllocator,
{
    device: &'d Device<B>,
    ptr: NonNull<T>,
    size: usize,
    align: usize,
    _owns: PhantomData<T>,
}

impl<B: Backend> Device<B>
where
    B::Platform: DmaAllocator,
{
    /// Allocates a zeroed `T` for coherent DMA, in its CPU-only phase.
    ///
    /// # Errors
    ///
    /// [`AllocError::ZeroSize`] for a zero-sized `T`;
    /// [`AllocError::OutOfMemory`] if the platform has no such memory the
    /// device reaches. Nothing is held on error.
    pub fn alloc_coherent<T: FromZeros>(&self) -> Result<CoherentBox<'_, T, B>, AllocError> {
        let bytes = size_of::<T>();
        if bytes == 0 {
            return Err(AllocError::ZeroSize);
        }
        let (size, align) = dma_layout(self, bytes, align_of::<T>())?;
        let ptr = dma_alloc(self, size, align, !B::COHERENT)?;
        Ok(CoherentBox {
            device: self,
            ptr: ptr.cast(),
            size,
            align,
            _owns: PhantomData,
        })
    }

    /// Allocates `len` zeroed `T`s for coherent DMA (a descriptor ring), in
    /// their CPU-only phase.
    ///
    /// # Errors
    ///
    /// As for [`alloc_coherent`](Self::alloc_coherent), and
    /// [`AllocError::TooLarge`] if the size overflows.
    pub fn alloc_coherent_slice<T: FromZeros>(
        &self,
        len: usize,
    ) -> Result<CoherentBox<'_, [T], B>, AllocError> {
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or(AllocError::TooLarge {
                elems: len,
                elem_size: size_of::<T>(),
            })?;
        if bytes == 0 {
            return Err(AllocError::ZeroSize);
        }
        let (size, align) = dma_layout(self, bytes, align_of::<T>())?;
        let ptr = dma_alloc(self, size, align, !B::COHERENT)?;
        Ok(CoherentBox {
            device: self,
            ptr: NonNull::slice_from_raw_parts(ptr.cast(), len),
            size,
            align,
            _owns: PhantomData,
        })
    }
}

impl<'d, T: ?Sized + DmaTarget, B: Backend> CoherentBox<'d, T, B>
where
    B::Platform: DmaAllocator,
{
    /// Ends the CPU-only phase: maps the memory for the device, read and
    /// write, never bounced, and hands it over for the rest of its life.
    /// Needs `T: FromBytes + IntoBytes` ([`SharedContents`]): the device may
    /// write any bytes from now on, and reads every byte.
    ///
    /// # Errors
    ///
    /// [`AllocError::Map`] if the backend cannot map it where it lies (it
    /// is never bounced); [`AllocError::NoPhysAddr`] if the platform cannot
    /// translate its own allocation. The memory is freed; nothing is held.
    pub fn share(self) -> Result<Coherent<'d, T, B>, AllocError>
    where
        T: SharedContents,
    {
        let device = self.device;
        let cpu = self.ptr.cast::<u8>();
        let platform = device.platform();
        // Until the map is asked for, the box itself holds the memory: an
        // error or an unwinding hook drops it, which frees it (nothing was
        // mapped). From the map on, an unwind leaks it instead.
        let phys = platform
            .phys_of(cpu, self.size)
            .ok_or(AllocError::NoPhysAddr)?;
        // SAFETY: the allocation is this box's, and from here on no
        // reference to it is used (the box is consumed).
        unsafe { platform.make_visible(cpu, self.size) };
        let this = ManuallyDrop::new(self);
        let req = MmioRequest {
            phys,
            len: this.size,
            dir: DmaDirection::Bidirectional,
            device: device.context(),
        };
        // SAFETY: a coherent allocation of the platform, accessed from now on
        // only through the shared accessors.
        match unsafe { device.backend().map_coherent(&req) } {
            Ok((dma, state)) => {
                // SAFETY: no reference to the memory exists from now on (the
                // box is consumed; `Coherent` never hands one out), and it
                // stays allocated until `free` takes it back first.
                unsafe { platform.ownership_changed(cpu, this.size, Side::Device, device.id()) };
                Ok(Coherent {
                    device,
                    ptr: this.ptr,
                    dma,
                    state: ManuallyDrop::new(state),
                    size: this.size,
                    align: this.align,
                    _owns: PhantomData,
                })
            }
            Err(kind) => {
                // SAFETY: the map failed and holds nothing; no device reaches
                // the memory, and `this` is not used again.
                unsafe { platform.free_dma(cpu, this.size, this.align) };
                Err(AllocError::Map(kind))
            }
        }
    }
}

impl<T: ?Sized + DmaTarget, B: Backend> CoherentBox<'_, T, B>
where
    B::Platform: DmaAllocator,
{
    /// Bytes allocated (the contents rounded up to whole granules).
    pub fn allocated_bytes(&self) -> usize {
        self.size
    }

    /// Does not exist: a `CoherentBox` withholds its DMA address until
    /// [`share`](CoherentBox::share). Declared only so that the compiler's
    /// first error line says so ([`AddressAfterShare`] is implemented by
    /// no type).
    #[doc(hidden)]
    #[inline(always)]
    pub fn dma_addr(&self) -> DmaAddr
    where
        T: AddressAfterShare,
    {
        T::absurd()
    }
}

impl<T: ?Sized + DmaTarget, B: Backend> Deref for CoherentBox<'_, T, B>
where
    B::Platform: DmaAllocator,
{
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a valid `T` that only this box references (invariant).
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ?Sized + DmaTarget, B: Backend> DerefMut for CoherentBox<'_, T, B>
where
    B::Platform: DmaAllocator,
{
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`, and `&mut self` makes it exclusive.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: ?Sized + DmaTarget, B: Backend> Drop for CoherentBox<'_, T, B>
where
    B::Platform: DmaAllocator,
{
    fn drop(&mut self) {
        // SAFETY: never mapped, so no device reaches it; this is the last
        // use of the allocation.
        unsafe {
            self.device
                .platform()
                .free_dma(self.ptr.cast(), self.size, self.align)
        };
    }
}

// SAFETY: the box owns its contents like a `Box<T>` and borrows its device.
unsafe impl<T: ?Sized + DmaTarget + Send, B: Backend + Sync> Send for CoherentBox<'_, T, B> where
    B::Platform: DmaAllocator
{
}
// SAFETY: `&CoherentBox` gives `&T` and `&Device<B>` only.
unsafe impl<T: ?Sized + DmaTarget + Sync, B: Backend + Sync> Sync for CoherentBox<'_, T, B> where
    B::Platform: DmaAllocator
{
}

impl<T: ?Sized + DmaTarget, B: Backend> fmt::Debug for CoherentBox<'_, T, B>
where
    B::Platform: DmaAllocator,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CoherentBox {{ bytes: {} }}", self.size)
    }
}

/// A coherent allocation shared with its device for the rest of its life.
///
/// It hands out no reference into the memory: the CPU reads whole values
/// or fields ([`read`](Self::read), [`dma_read!`](crate::dma_read)), each
/// one volatile access, and writes them through `&mut self`
/// ([`write`](Self::write), [`dma_write!`](crate::dma_write)). Dropping it
/// quarantines the memory (the device may still use it), counted in
/// [`Device::leaked`]; [`free`](Self::free) gives it back once the device
/// has finished.
///
/// # Invariants
///
/// As for [`CoherentBox`], except that the memory is mapped for the device
/// (`dma`, `state`) and handed to it, and no Rust reference to it exists.
#[must_use = "a coherent allocation: dropped, it is quarantined for good (never freed)"]
pub struct Coherent<'d, T: ?Sized + DmaTarget, B: Backend>
where
    B::Platform: DmaAllocator,
{
    device: &'d Device<B>,
    ptr: NonNull<T>,
    dma: DmaAddr,
    state: ManuallyDrop<B::State>,
    size: usize,
    align: usize,
    _owns: PhantomData<T>,
}

impl<T: ?Sized + DmaTarget, B: Backend> Coherent<'_, T, B>
where
    B::Platform: DmaAllocator,
{
    /// The address the device uses for the first byte.
    #[inline]
    pub fn dma_addr(&self) -> DmaAddr {
        self.dma
    }

    /// The CPU address of the first byte, for a HAL whose driver accesses
    /// shared memory through raw pointers of its own (`virtio-drivers`'
    /// rings). dmacap itself never makes a reference from it.
    #[cfg(feature = "virtio")]
    #[inline]
    pub(crate) fn cpu_ptr(&self) -> NonNull<u8> {
        self.ptr.cast()
    }

    /// Bytes allocated and mapped (the contents rounded up to whole
    /// granules).
    #[inline]
    pub fn allocated_bytes(&self) -> usize {
        self.size
    }

    /// How many `T::Elem` the allocation holds: `1` for a single value, the
    /// length for a slice.
    #[inline]
    pub fn elems(&self) -> usize {
        match size_of::<T::Elem>() {
            0 => 0,
            n => T::byte_len(self.ptr) / n,
        }
    }

    /// The pointer to field `offset` of element `elem`, checked: inside the
    /// allocation's contents and aligned for `F`.
    ///
    /// # Panics
    ///
    /// If `elem` is past the end, or `F` at `offset` does not lie inside one
    /// element or is misaligned there.
    #[inline]
    fn field_ptr<F>(&self, elem: usize, offset: usize) -> NonNull<F> {
        let size = size_of::<T::Elem>();
        assert!(
            elem < self.elems()
                && offset
                    .checked_add(size_of::<F>())
                    .is_some_and(|e| e <= size),
            "field at element {elem}, offset {offset} is outside the coherent allocation"
        );
        // SAFETY: `elem * size + offset + size_of::<F>()` lies inside the
        // contents (checked above).
        let p = unsafe { self.ptr.cast::<u8>().add(elem * size + offset) };
        assert!(
            (p.as_ptr() as usize).is_multiple_of(align_of::<F>()),
            "field at offset {offset} is misaligned"
        );
        p.cast()
    }

    /// Reads field `F` at `offset` of element `elem`: one volatile access.
    /// Used by [`dma_read!`](crate::dma_read), which computes `offset` with
    /// `offset_of!` and `_field` from the same path; called directly, the
    /// position is checked at run time.
    ///
    /// # Panics
    ///
    /// If the field lies outside the element or is misaligned.
    #[inline]
    pub fn read_field<F: FromBytes>(
        &self,
        elem: usize,
        offset: usize,
        _field: fn(&T::Elem) -> &F,
    ) -> F {
        let p = self.field_ptr::<F>(elem, offset);
        // SAFETY: aligned, inside the shared allocation (checked), which is
        // handed to the device and not freed while `self` lives.
        unsafe { self.device.platform().read_shared(p) }
    }

    /// Writes `value` into field `F` at `offset` of element `elem`: one
    /// volatile access. Used by [`dma_write!`](crate::dma_write).
    ///
    /// # Panics
    ///
    /// As for [`read_field`](Self::read_field).
    #[inline]
    pub fn write_field<F: IntoBytes>(
        &mut self,
        elem: usize,
        offset: usize,
        _field: fn(&T::Elem) -> &F,
        value: F,
    ) {
        let p = self.field_ptr::<F>(elem, offset);
        // SAFETY: as in `read_field`; `&mut self` orders it after every
        // other CPU access through this handle.
        unsafe { self.device.platform().write_shared(p, value) }
    }

    /// Reads element `i` whole (the value, for a single `T`).
    ///
    /// # Panics
    ///
    /// If `i` is past the end.
    #[inline]
    pub fn read_elem(&self, i: usize) -> T::Elem
    where
        T::Elem: FromBytes,
    {
        self.read_field(i, 0, |e| e)
    }

    /// Writes element `i` whole.
    ///
    /// # Panics
    ///
    /// If `i` is past the end.
    #[inline]
    pub fn write_elem(&mut self, i: usize, value: T::Elem)
    where
        T::Elem: IntoBytes,
    {
        self.write_field(i, 0, |e| e, value)
    }

    /// Takes the memory back from the device and frees it.
    ///
    /// # Safety
    ///
    /// The device has finished every access to the allocation, observed by
    /// the driver, and none is queued (as for
    /// [`Mapped::sync_for_cpu`](crate::Mapped::sync_for_cpu)).
    pub unsafe fn free(self) {
        let mut this = ManuallyDrop::new(self);
        let device = this.device;
        let cpu = this.ptr.cast::<u8>();
        // SAFETY: handed to this device by `share`.
        unsafe {
            device
                .platform()
                .ownership_changed(cpu, this.size, Side::Cpu, device.id())
        };
        // SAFETY: taken once; `this` is not used again but for plain fields.
        let state = unsafe { ManuallyDrop::take(&mut this.state) };
        // SAFETY: the live mapping `share` made, unmapped once; the device is
        // finished (caller).
        unsafe {
            device
                .backend()
                .unmap_coherent(this.dma, this.size, state, device.context())
        };
        device.backend().flush(device.context());
        // SAFETY: unmapped and the invalidation completed: no device reaches
        // it; nothing references it.
        unsafe { device.platform().free_dma(cpu, this.size, this.align) };
    }
}

impl<T: DmaTarget<Elem = T> + FromBytes, B: Backend> Coherent<'_, T, B>
where
    B::Platform: DmaAllocator,
{
    /// Reads the whole value: one volatile access.
    #[inline]
    pub fn read(&self) -> T {
        self.read_field(0, 0, |t| t)
    }
}

impl<T: DmaTarget<Elem = T> + IntoBytes, B: Backend> Coherent<'_, T, B>
where
    B::Platform: DmaAllocator,
{
    /// Writes the whole value: one volatile access.
    #[inline]
    pub fn write(&mut self, value: T) {
        self.write_field(0, 0, |t| t, value)
    }
}

impl<T: ?Sized + DmaTarget, B: Backend> Drop for Coherent<'_, T, B>
where
    B::Platform: DmaAllocator,
{
    fn drop(&mut self) {
        // The device may still use it: never unmapped, never freed.
        self.device.stats().record_leak(self.size);
    }
}

// SAFETY: the handle owns the allocation (`T: Send`), borrows the device
// (`B: Sync`) and owns the backend state (`Send + Sync` by the trait).
unsafe impl<T: ?Sized + DmaTarget + Send, B: Backend + Sync> Send for Coherent<'_, T, B> where
    B::Platform: DmaAllocator
{
}
// SAFETY: `&Coherent` only reads values out by copy through the platform's
// shared accessors (sound against concurrent device writes, so against
// concurrent CPU reads too); writes need `&mut`.
unsafe impl<T: ?Sized + DmaTarget + Sync, B: Backend + Sync> Sync for Coherent<'_, T, B> where
    B::Platform: DmaAllocator
{
}

impl<T: ?Sized + DmaTarget, B: Backend> fmt::Debug for Coherent<'_, T, B>
where
    B::Platform: DmaAllocator,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Coherent {{ bytes: {}, dma: {:#x} }}",
            self.size,
            self.dma.as_u64()
        )
    }
}

/// Reads one field of a [`Coherent`] allocation: one volatile, typed
/// access, never a reference into shared memory.
///
/// `dma_read!(c, Type, path.to.field)` for a single value,
/// `dma_read!(c[i], Type, path.to.field)` for element `i` of a slice
/// (`Type` is the element type). The path is checked by
/// `core::mem::offset_of!`, which never goes through `Deref`; the field
/// type must be `FromBytes`.
#[macro_export]
macro_rules! dma_read {
    ($c:ident [$i:expr], $T:ty, $($f:ident).+) => {
        $c.read_field($i, ::core::mem::offset_of!($T, $($f).+), |t: &$T| &t.$($f).+)
    };
    ($c:expr, $T:ty, $($f:ident).+) => {
        $c.read_field(0, ::core::mem::offset_of!($T, $($f).+), |t: &$T| &t.$($f).+)
    };
}

/// Writes one field of a [`Coherent`] allocation: one volatile, typed
/// access through `&mut`, never a reference into shared memory.
///
/// `dma_write!(c, Type, path.to.field, value)`, or
/// `dma_write!(c[i], Type, path.to.field, value)` for element `i`. The
/// field type must be `IntoBytes`.
#[macro_export]
macro_rules! dma_write {
    ($c:ident [$i:expr], $T:ty, $($f:ident).+, $v:expr) => {
        $c.write_field($i, ::core::mem::offset_of!($T, $($f).+), |t: &$T| &t.$($f).+, $v)
    };
    ($c:expr, $T:ty, $($f:ident).+, $v:expr) => {
        $c.write_field(0, ::core::mem::offset_of!($T, $($f).+), |t: &$T| &t.$($f).+, $v)
    };
}
