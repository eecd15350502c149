//! What can be mapped: owned memory with a stable address.
//!
//! A buffer is mapped by giving it away: [`DmaBuffer::into_raw_parts`] turns
//! it into a pointer (plus whatever its allocator needs) that the handle
//! keeps, and unmapping rebuilds it with [`DmaBuffer::from_raw_parts`]. While
//! mapped, nothing else can reach the memory, and if the handle is leaked the
//! memory is leaked with it, never freed under a device that may still write
//! it. That is why a stack borrow cannot be mapped: a `&'a mut [u8]` with a
//! shorter lifetime than `'static` does not implement [`DmaBuffer`], because
//! forgetting its handle would let the stack frame be reused while the device
//! still writes there.
//!
//! Element types are described with zerocopy's traits: see [`Transfer`].

use core::marker::PhantomData;
use core::mem::size_of;
use core::ptr::NonNull;

use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::base::direction::{Bidirectional, Direction, FromDevice, ToDevice};

mod sealed {
    pub trait Sealed {}
    impl<T> Sealed for T {}
    impl<T> Sealed for [T] {}
}

/// The shape of a buffer's contents: one `T`, or a slice `[T]`. Sealed.
pub trait DmaTarget: sealed::Sealed {
    /// The element type: `T` for both `T` and `[T]`.
    type Elem;

    /// The number of bytes behind `ptr` (for a slice, its length times the
    /// element size).
    fn byte_len(ptr: NonNull<Self>) -> usize;
}

impl<T> DmaTarget for T {
    type Elem = T;
    #[inline]
    fn byte_len(_: NonNull<Self>) -> usize {
        size_of::<T>()
    }
}

impl<T> DmaTarget for [T] {
    type Elem = T;
    #[inline]
    fn byte_len(ptr: NonNull<Self>) -> usize {
        // Cannot overflow: the slice exists in memory.
        ptr.len() * size_of::<T>()
    }
}

/// Contents that may travel in direction `D` (rule 4 and the threat model
/// of the design: a device may write any byte its mappings and the
/// hardware allow, and safe code never reads an invalid value because of
/// it):
///
/// - [`ToDevice`]: the device reads the bytes, so `T: IntoBytes` (no padding
///   bytes, which would leak uninitialised memory to the device), and also
///   `T: FromBytes`, because the buffer comes back to the CPU and a device
///   can write what it was given to read: on a plain bus nothing stops it,
///   and behind an IOMMU, which grants whole pages, a writable mapping of
///   the same device sharing the page does not (a `Box<bool>` mapped to a
///   device could come back holding `2`).
/// - [`FromDevice`]: the device writes arbitrary bytes the CPU then reads as
///   `T`, so `T: FromBytes` (every bit pattern is a valid `T`), and
///   `T: Immutable`, because a CPU write through a shared reference
///   (`Cell::set`) would be a CPU write into a buffer the CPU must not write;
/// - [`Bidirectional`] needs `IntoBytes + FromBytes`.
///
/// Implemented for every type that qualifies and sealed: it cannot be
/// implemented by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be transferred in direction `{D}`",
    label = "the device could write bytes that are not a valid `{Self}`, or read padding",
    note = "`ToDevice` needs `IntoBytes + FromBytes` (no padding to leak; and a device can write what \
            it was given to read); `FromDevice` needs `FromBytes + Immutable`; `Bidirectional` needs \
            `IntoBytes + FromBytes`"
)]
pub trait Transfer<D: Direction>: transfer::Sealed<D> {}

#[diagnostic::do_not_recommend]
impl<T: ?Sized + transfer::Sealed<D>, D: Direction> Transfer<D> for T {}

mod transfer {
    use super::*;

    /// The real rules; `Transfer` is implemented exactly where these are.
    pub trait Sealed<D> {}

    impl<T: ?Sized + IntoBytes + FromBytes> Sealed<ToDevice> for T {}
    impl<T: ?Sized + FromBytes + Immutable> Sealed<FromDevice> for T {}
    impl<T: ?Sized + IntoBytes + FromBytes> Sealed<Bidirectional> for T {}
}

/// Owned memory with a stable address that can be mapped for DMA.
///
/// # Safety
///
/// An implementation promises, for the pointer `p` returned by
/// [`into_raw_parts`](Self::into_raw_parts):
///
/// 1. `p` is non-null, aligned for `Target`, and valid for reads and writes
///    of [`DmaTarget::byte_len`]`(p)` bytes, which are initialised.
/// 2. Until `from_raw_parts(p, keep)` is called, nothing but the holder of
///    `p` accesses that memory, and the memory stays allocated at the same
///    address. If `from_raw_parts` is never called, it stays allocated
///    forever: dropping or forgetting `keep` must not free it. (This is what
///    excludes borrows shorter than `'static`.)
/// 3. `from_raw_parts(p, keep)` with the parts returned by one call of
///    `into_raw_parts` gives back the same buffer.
/// 4. Any bytes written to the memory in the meantime are valid for
///    `Target` when the buffer is rebuilt (guaranteed by dmacap's
///    [`Transfer`] bounds, which every map call requires).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be mapped for DMA: only owned memory with a stable address can be",
    label = "not an owned, stable buffer",
    note = "mappable: `Box<T>`, `Box<[T]>`, `&'static mut T` / `&'static mut [T]`, `sim::SimBuffer`, \
            and `RawBuffer` for memory you vouch for; a borrow of the stack, a shared `&'static` \
            (read-only data, kernel text) or a `Vec` (it may reallocate) is not"
)]
pub unsafe trait DmaBuffer: Sized {
    /// The contents: `T` or `[T]`.
    type Target: ?Sized + DmaTarget;

    /// What the buffer keeps besides its pointer while it is mapped, such as
    /// a handle to its allocator; `()` for `Box` and static references.
    type Keep;

    /// Gives the buffer up, returning its pointer and whatever else is
    /// needed to rebuild it.
    fn into_raw_parts(self) -> (NonNull<Self::Target>, Self::Keep);

    /// Rebuilds the buffer from the parts [`into_raw_parts`](Self::into_raw_parts)
    /// returned.
    ///
    /// # Safety
    ///
    /// `ptr` and `keep` must come from one call of `into_raw_parts` on this
    /// type, and must not have been used to rebuild a buffer before.
    unsafe fn from_raw_parts(ptr: NonNull<Self::Target>, keep: Self::Keep) -> Self;
}

// SAFETY: the pointer returned by `Box::into_raw` is non-null, aligned and
// valid for the value's bytes, which a `Box` always keeps initialised; the
// heap allocation never moves, and is freed only by `Box::from_raw`.
#[cfg(feature = "alloc")]
unsafe impl<T: ?Sized + DmaTarget> DmaBuffer for alloc::boxed::Box<T> {
    type Target = T;
    type Keep = ();

    #[inline]
    fn into_raw_parts(self) -> (NonNull<T>, ()) {
        // SAFETY: `Box::into_raw` never returns null.
        (
            unsafe { NonNull::new_unchecked(alloc::boxed::Box::into_raw(self)) },
            (),
        )
    }

    #[inline]
    unsafe fn from_raw_parts(ptr: NonNull<T>, (): ()) -> Self {
        // SAFETY: the caller passes the pointer `into_raw_parts` took from a
        // `Box` of this type, once.
        unsafe { alloc::boxed::Box::from_raw(ptr.as_ptr()) }
    }
}

// SAFETY: a `&'static mut` is non-null, aligned, initialised and exclusive;
// its memory is never freed, so leaking the pointer leaks nothing that could
// be reused.
unsafe impl<T: ?Sized + DmaTarget> DmaBuffer for &'static mut T {
    type Target = T;
    type Keep = ();

    #[inline]
    fn into_raw_parts(self) -> (NonNull<T>, ()) {
        (NonNull::from(self), ())
    }

    #[inline]
    unsafe fn from_raw_parts(ptr: NonNull<T>, (): ()) -> Self {
        // SAFETY: the pointer came from a `&'static mut T` that was given up,
        // so it is valid and exclusive for `'static`.
        unsafe { &mut *ptr.as_ptr() }
    }
}

/// Raw memory that the caller vouches for: the escape hatch for memory
/// dmacap cannot own, such as a region handed over by firmware or the
/// buffers a `virtio-drivers`-style `Hal::share` receives.
///
/// It maps through the ordinary safe path once built; the promise is made
/// once, in [`RawBuffer::new`].
pub struct RawBuffer {
    ptr: NonNull<[u8]>,
    _not_sync: PhantomData<*mut u8>,
}

impl RawBuffer {
    /// Wraps `len` bytes at `ptr`.
    ///
    /// # Safety
    ///
    /// The caller promises that, from this call until the `RawBuffer` is
    /// given back by an unmap (and forever if its handle is leaked):
    ///
    /// - `ptr` is valid for reads and writes of `ptr.len()` initialised bytes;
    /// - nothing else reads or writes that memory;
    /// - the memory is not freed or reused.
    pub unsafe fn new(ptr: NonNull<[u8]>) -> Self {
        Self {
            ptr,
            _not_sync: PhantomData,
        }
    }

    /// The memory this buffer stands for.
    pub fn as_ptr(&self) -> NonNull<[u8]> {
        self.ptr
    }

    /// Gives the memory back to the caller.
    pub fn into_inner(self) -> NonNull<[u8]> {
        self.ptr
    }
}

// SAFETY: the memory is plain bytes that the caller promised nobody else
// touches, so moving the promise to another thread is fine.
unsafe impl Send for RawBuffer {}

impl core::fmt::Debug for RawBuffer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "RawBuffer({:p}, {} bytes)",
            self.ptr.as_ptr(),
            self.ptr.len()
        )
    }
}

// SAFETY: `RawBuffer::new`'s contract is exactly this trait's conditions 1
// and 2 for byte contents; rebuilding returns the same pointer.
unsafe impl DmaBuffer for RawBuffer {
    type Target = [u8];
    type Keep = ();

    #[inline]
    fn into_raw_parts(self) -> (NonNull<[u8]>, ()) {
        (self.ptr, ())
    }

    #[inline]
    unsafe fn from_raw_parts(ptr: NonNull<[u8]>, (): ()) -> Self {
        Self {
            ptr,
            _not_sync: PhantomData,
        }
    }
}

/// A type that fills whole cache-line granules of `G` bytes: its alignment
/// is at least `G` and its size a multiple of `G`, so a value of it never
/// shares a cache line with other data on a backend of granule `G`.
///
/// Implement it for your descriptor types (`#[repr(C, align(64))]` and
/// padded to a multiple of 64 bytes with explicit reserved fields, so they
/// stay `IntoBytes`); dmacap also checks the claim at compile time whenever
/// the type is mapped.
///
/// ```
/// use dmacap::buffer::LineAligned;
/// use typenum::U64;
///
/// #[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)]
/// #[repr(C, align(64))]
/// struct RxDescriptor {
///     addr: u64,
///     len: u32,
///     flags: u32,
///     reserved: [u8; 48],
/// }
/// // SAFETY: aligned to 64 and 64 bytes long.
/// unsafe impl LineAligned<U64> for RxDescriptor {}
/// ```
///
/// # Safety
///
/// `align_of::<Self>() >= G::USIZE` and `size_of::<Self>() % G::USIZE == 0`.
pub unsafe trait LineAligned<G: typenum::Unsigned>: Sized {}

/// The compile-time re-check of a [`LineAligned`] promise. It lives outside
/// the trait so that an implementation cannot override it.
struct LineCheck<T, G>(core::marker::PhantomData<(T, G)>);

impl<T, G: typenum::Unsigned> LineCheck<T, G> {
    /// Evaluated at compile time wherever the type is mapped; fails the
    /// build if the promise is false.
    const CHECK: () = assert!(
        core::mem::align_of::<T>() >= G::USIZE
            && core::mem::size_of::<T>().is_multiple_of(G::USIZE),
        "LineAligned<G> implemented for a type that is not aligned to G or not a multiple of G in size"
    );
}

/// Contents that can be mapped on a backend whose cache-line granule is `G`
/// without sharing a line with other data (the brief's "cacheline overlap"
/// misuse).
///
/// - On a backend with granule `U1` (coherent: nothing is maintained by
///   line), every type qualifies.
/// - Otherwise typed contents must be [`LineAligned<G>`], as one value or a
///   slice of them: a `Box<u32>` or a `Box<[u32]>` does not compile for a
///   non-coherent backend.
/// - Byte buffers (`[u8]`, `[u8; N]`) cannot carry alignment in their
///   type; dmacap checks their address and length at map time and refuses
///   one that shares a line ([`MapErrorKind::SharesCacheLine`](crate::MapErrorKind::SharesCacheLine)).
///
/// Implemented by dmacap for these cases only; the granules provided are
/// 16 to 256 bytes.
#[diagnostic::on_unimplemented(
    message = "`{Self}` could share a cache line with other data on this non-coherent backend",
    label = "typed contents below the backend's cache-line granule",
    note = "typed contents must implement `LineAligned<G>` for the backend's granule `G` \
            (a `#[repr(C, align(64))]` type padded to whole lines, say); \
            byte buffers (`[u8]`) are checked at map time instead"
)]
pub trait CacheSafe<G>: cache_safe::Sealed<G> {}

#[diagnostic::do_not_recommend]
impl<T: ?Sized + cache_safe::Sealed<G>, G> CacheSafe<G> for T {}

/// A cache-line granule a backend can declare: `U1` (nothing is
/// maintained by line) or a power of two from 16 to 256 bytes. Sealed.
///
/// Every granule accepts byte buffers (checked at map time), which is why
/// driver code generic over a backend maps a `[u8]` buffer with no bound
/// beyond `B: Backend`.
pub trait Granule:
    typenum::Unsigned + typenum::PowerOfTwo + cache_safe::Rules<[u8]> + Send + Sync + 'static
{
    /// One granule of bytes, aligned to it: [`Line64`] for `U64`, `u8` for
    /// `U1`. A `Box<[G::Line]>` ([`LineBuf`]) is a byte buffer whose type
    /// proves it owns whole cache lines, so it maps on a non-coherent
    /// backend of granule `G` with no run-time check and no bounce.
    type Line: FromBytes
        + IntoBytes
        + Immutable
        + zerocopy::KnownLayout
        + Copy
        + Send
        + Sync
        + 'static;
}

/// A byte buffer of whole cache-line granules `G`: see [`Granule::Line`]
/// and [`line_buf`]. Its bytes are `zerocopy::IntoBytes::as_bytes` of the
/// slice.
#[cfg(feature = "alloc")]
pub type LineBuf<G> = alloc::boxed::Box<[<G as Granule>::Line]>;

/// A zeroed [`LineBuf`] of at least `bytes` bytes (whole granules): a
/// network driver's MTU receive buffer for a non-coherent device.
///
/// ```
/// use dmacap::buffer::{Granule, line_buf};
/// use dmacap::typenum::U64;
/// use zerocopy::IntoBytes;
///
/// let frame = line_buf::<U64>(1500); // heap memory: 24 whole 64-byte lines
/// assert_eq!(frame.as_bytes().len(), 1536);
///
/// // The same type from the simulated RAM, whose memory has physical
/// // addresses: maps on a non-coherent device with no check and no bounce.
/// let sim = dmacap::sim::SimPlatform::noncoherent(1 << 16);
/// let dev = sim.noncoherent_device();
/// let rx = sim.memory().alloc_slice::<<U64 as Granule>::Line>(24).unwrap();
/// let rx = dev.map_from_device(rx).unwrap();
/// // SAFETY: no device runs.
/// let rx = unsafe { rx.sync_for_cpu() };
/// assert_eq!(rx.contents().as_bytes().len(), 1536);
/// ```
#[cfg(feature = "alloc")]
pub fn line_buf<G: Granule>(bytes: usize) -> LineBuf<G> {
    let lines = bytes.div_ceil(core::mem::size_of::<G::Line>().max(1));
    alloc::vec![<G::Line as zerocopy::FromZeros>::new_zeroed(); lines].into_boxed_slice()
}

macro_rules! lines {
    ($($name:ident = $g:ty, $n:literal: [$($smaller:ty),*];)*) => {$(
        #[doc = concat!("One ", stringify!($n), "-byte cache-line granule of bytes, aligned to it.")]
        #[derive(FromBytes, IntoBytes, Immutable, zerocopy::KnownLayout, Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(C, align($n))]
        pub struct $name(pub [u8; $n]);

        // SAFETY: aligned to $n and $n bytes long, a multiple of every
        // smaller power of two.
        unsafe impl LineAligned<$g> for $name {}
        $(
            // SAFETY: as above.
            unsafe impl LineAligned<$smaller> for $name {}
        )*

        impl cache_safe::GranuleLine for $g {
            type Line = $name;
        }
    )*};
}

lines! {
    Line16 = typenum::U16, 16: [];
    Line32 = typenum::U32, 32: [typenum::U16];
    Line64 = typenum::U64, 64: [typenum::U16, typenum::U32];
    Line128 = typenum::U128, 128: [typenum::U16, typenum::U32, typenum::U64];
    Line256 = typenum::U256, 256: [typenum::U16, typenum::U32, typenum::U64, typenum::U128];
}

/// Whether contents of this type must have their address and length
/// checked at map time (byte buffers on a non-coherent backend), and the
/// compile-time check of a [`LineAligned`] promise; crate-private, so no
/// implementation can change either.
pub(crate) fn check_at_map<T: ?Sized + CacheSafe<G>, G>() -> bool {
    #[allow(clippy::let_unit_value)]
    let () = const { <T as cache_safe::Sealed<G>>::CHECK };
    <T as cache_safe::Sealed<G>>::CHECK_AT_MAP
}

mod cache_safe {
    use super::{Granule, LineAligned, LineCheck};
    use zerocopy;

    /// What `CacheSafe` asks, answered by the granule `Self` for contents
    /// `T`; implemented exactly for the cases the trait documents.
    pub trait Rules<T: ?Sized> {
        /// Whether the address and length must be checked at map time.
        const CHECK_AT_MAP: bool;
        /// Compile-time check of a [`LineAligned`] promise (unit otherwise).
        const CHECK: ();
    }

    /// `CacheSafe`'s seal: `T` is cache-safe for `G` where `G`'s rules say.
    pub trait Sealed<G> {
        /// Whether the address and length must be checked at map time.
        const CHECK_AT_MAP: bool;
        /// Compile-time check of a [`LineAligned`] promise (unit otherwise).
        const CHECK: ();
    }

    impl<T: ?Sized, G: Rules<T>> Sealed<G> for T {
        const CHECK_AT_MAP: bool = G::CHECK_AT_MAP;
        const CHECK: () = G::CHECK;
    }

    impl<T: ?Sized> Rules<T> for typenum::U1 {
        const CHECK_AT_MAP: bool = false;
        const CHECK: () = ();
    }
    impl Granule for typenum::U1 {
        type Line = u8;
    }

    /// The line type of each granule above `U1`, set by `lines!`.
    pub trait GranuleLine {
        type Line: zerocopy::FromBytes
            + zerocopy::IntoBytes
            + zerocopy::Immutable
            + zerocopy::KnownLayout
            + Copy
            + Send
            + Sync
            + 'static;
    }

    macro_rules! cache_safe_granules {
        ($($g:ty),*) => {$(
            impl<T: LineAligned<$g>> Rules<T> for $g {
                const CHECK_AT_MAP: bool = false;
                const CHECK: () = LineCheck::<T, $g>::CHECK;
            }
            impl<T: LineAligned<$g>> Rules<[T]> for $g {
                const CHECK_AT_MAP: bool = false;
                const CHECK: () = LineCheck::<T, $g>::CHECK;
            }
            impl Rules<[u8]> for $g {
                const CHECK_AT_MAP: bool = true;
                const CHECK: () = ();
            }
            impl<const N: usize> Rules<[u8; N]> for $g {
                const CHECK_AT_MAP: bool = true;
                const CHECK: () = ();
            }
            impl Granule for $g {
                type Line = <$g as GranuleLine>::Line;
            }
        )*};
    }

    cache_safe_granules!(
        typenum::U16,
        typenum::U32,
        typenum::U64,
        typenum::U128,
        typenum::U256
    );
}

/// Memory allocated for DMA from a platform's [`DmaAllocator`]: whole
/// cache-line granules (and whole IOMMU pages behind an IOMMU), within the
/// device's reach, zeroed. What
/// [`Device::alloc_pages`](crate::Device::alloc_pages) maps; once unmapped,
/// an ordinary owned buffer that dereferences to its contents and gives its
/// memory back to the platform when dropped.
///
/// # Invariants
///
/// `ptr` points to `size` bytes aligned to `align` from one
/// `platform.alloc_dma`, holding a valid `T` in their first bytes, owned by
/// this value alone.
pub struct DmaPages<T: ?Sized + DmaTarget, P: crate::base::platform::DmaAllocator> {
    ptr: NonNull<T>,
    keep: PagesKeep<P>,
}

/// What a mapped [`DmaPages`] keeps besides its pointer: the platform to
/// give the memory back to, and the allocation's size and alignment.
/// Forgetting it frees nothing.
#[derive(Debug)]
pub struct PagesKeep<P> {
    platform: P,
    size: usize,
    align: usize,
}

impl<T: ?Sized + DmaTarget, P: crate::base::platform::DmaAllocator> DmaPages<T, P> {
    /// Wraps an allocation.
    ///
    /// # Safety
    ///
    /// `ptr` points to `size` bytes aligned to `align` from one
    /// `platform.alloc_dma` call, owned by the caller, holding a valid `T`.
    pub(crate) unsafe fn from_alloc(
        ptr: NonNull<T>,
        platform: P,
        size: usize,
        align: usize,
    ) -> Self {
        Self {
            ptr,
            keep: PagesKeep {
                platform,
                size,
                align,
            },
        }
    }

    /// Bytes allocated (the contents rounded up to whole granules).
    pub fn allocated_bytes(&self) -> usize {
        self.keep.size
    }
}

impl<T: ?Sized + DmaTarget, P: crate::base::platform::DmaAllocator> core::ops::Deref
    for DmaPages<T, P>
{
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a valid `T` owned by this value (invariant).
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ?Sized + DmaTarget, P: crate::base::platform::DmaAllocator> core::ops::DerefMut
    for DmaPages<T, P>
{
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`; `&mut self` makes it exclusive.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: ?Sized + DmaTarget, P: crate::base::platform::DmaAllocator> Drop for DmaPages<T, P> {
    fn drop(&mut self) {
        let k = &self.keep;
        // SAFETY: the allocation is this value's alone and unmapped (a mapped
        // one is held as raw parts, not as a `DmaPages`).
        unsafe { k.platform.free_dma(self.ptr.cast(), k.size, k.align) };
    }
}

impl<T: ?Sized + DmaTarget, P: crate::base::platform::DmaAllocator> core::fmt::Debug
    for DmaPages<T, P>
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "DmaPages {{ bytes: {} }}", self.keep.size)
    }
}

// SAFETY: owns its contents like a `Box<T>`; the platform handle moves with
// it (`P: Send`) and frees from whichever thread drops it.
unsafe impl<T: ?Sized + DmaTarget + Send, P: crate::base::platform::DmaAllocator + Send> Send
    for DmaPages<T, P>
{
}
// SAFETY: `&DmaPages` gives `&T` and nothing of the platform.
unsafe impl<T: ?Sized + DmaTarget + Sync, P: crate::base::platform::DmaAllocator + Sync> Sync
    for DmaPages<T, P>
{
}

// SAFETY: (1) the allocation is aligned, valid and initialised (zeroed by
// the platform, then a valid `T`). (2) Only the holder of the parts uses it;
// `Keep` frees nothing when dropped or forgotten (only a rebuilt `DmaPages`
// frees). (3) The same pointer and keep rebuild the same value.
unsafe impl<T: ?Sized + DmaTarget, P: crate::base::platform::DmaAllocator> DmaBuffer
    for DmaPages<T, P>
{
    type Target = T;
    type Keep = PagesKeep<P>;

    fn into_raw_parts(self) -> (NonNull<T>, PagesKeep<P>) {
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so `keep` is moved out once.
        (this.ptr, unsafe { core::ptr::read(&this.keep) })
    }

    unsafe fn from_raw_parts(ptr: NonNull<T>, keep: PagesKeep<P>) -> Self {
        Self { ptr, keep }
    }
}
