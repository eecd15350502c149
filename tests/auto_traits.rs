//! The auto traits of every public type, pinned (issue 7, point 6).
//!
//! A handle is `Sync` only if what `&handle` gives out may be shared, and
//! `Send` only if what it owns may move: the old `Mapped` was `Sync`
//! whenever its buffer type was, although `&Mapped` hands out
//! `&Buf::Target`, so a buffer whose contents are `[Cell<u8>]` raced. Each
//! line below says `Send`/`Sync` (compiles only if implemented) or
//! `!Send`/`!Sync` (compiles only if *not* implemented: two blanket
//! implementations of a local trait make an associated function ambiguous
//! exactly when the type implements the trait, the `static_assertions`
//! trick, written out here so that no crate is added).
//!
//! Everything here is checked at compile time; the one `#[test]` only makes
//! the file show up in test runs.

#![allow(dead_code)]

use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;

use dmacap::api::sg::{Segments, SgMapError, SgMapped};
use dmacap::arch::CacheRange;
use dmacap::backend::bounce::{Swiotlb, SwiotlbSlot};
use dmacap::backend::compose::{
    BounceSlot, Coherent as CoherentK, Composed, ComposedState, MapAttrs, NoBounce, NonCoherent,
};
use dmacap::backend::direct::{Direct, DirectCoherent, DmaWindow, DmaWindows, WindowError};
use dmacap::backend::iommu::{
    InvalidationMode, IommuDomain, IovaAlloc, IovaAllocator, IovaRange, LinkError, PageTable,
    PageTableError, Prot, Pte,
};
use dmacap::backend::noncoherent::DirectNonCoherent;
use dmacap::backend::{MapRequest, Mapping, MmioRequest, NoPhys, SyncRange};
use dmacap::batch::{Batch, FixedBatch, PendingToCpu};
use dmacap::buffer::{DmaPages, PagesKeep};
use dmacap::context::DeviceContext;
use dmacap::erased::{AnyMapped, ByDmaAddr};
use dmacap::handle::PendingUnmap;
use dmacap::platform::{DeviceId, IdentityMap, PhysLookup, Side};
use dmacap::sim::{
    Access, FaultReason, IommuFault, PhysAccessError, SimAllocError, SimBuffer, SimCache,
    SimDevice, SimFault, SimIommu, SimIommuBackend, SimMemory, SimPlatform,
};
use dmacap::typenum::U32;
use dmacap::width::{Reach, Zoned};
use dmacap::{
    AllocError, Bidirectional, Coherent, CoherentBox, CpuOwned, CpuOwnedPrefix, DevOwned, Device,
    DeviceConfig, DeviceStats, DmaAddr, DmaBuffer, DmaDirection, DmaMask, ForeignDeviceError,
    FromDevice, MapError, MapErrorKind, Mapped, MmioMapped, PhysAddr, RangeError, RawBuffer,
    ToDevice,
};

// ---------------------------------------------------------------------------
// The assertions.
// ---------------------------------------------------------------------------

const fn assert_send<T: ?Sized + Send>() {}
const fn assert_sync<T: ?Sized + Sync>() {}

/// `assert_not_impl!(T: Trait)` compiles only if `T` does not implement
/// `Trait`.
macro_rules! assert_not_impl {
    ($t:ty: $tr:path) => {
        const _: fn() = || {
            // Every type gets `some_item` through `()`; a type implementing
            // the trait gets it through `Invalid` too, and the call below
            // cannot pick one.
            trait AmbiguousIfImpl<A> {
                fn some_item() {}
            }
            impl<T: ?Sized> AmbiguousIfImpl<()> for T {}
            struct Invalid;
            impl<T: ?Sized + $tr> AmbiguousIfImpl<Invalid> for T {}
            let _ = <$t as AmbiguousIfImpl<_>>::some_item;
        };
    };
}

/// `auto!(T: Send, Sync)`, `auto!(T: Send, !Sync)`, ...: pins both.
macro_rules! auto {
    ($t:ty: Send, Sync) => {
        const _: () = assert_send::<$t>();
        const _: () = assert_sync::<$t>();
    };
    ($t:ty: Send, !Sync) => {
        const _: () = assert_send::<$t>();
        assert_not_impl!($t: Sync);
    };
    ($t:ty: !Send, Sync) => {
        assert_not_impl!($t: Send);
        const _: () = assert_sync::<$t>();
    };
    ($t:ty: !Send, !Sync) => {
        assert_not_impl!($t: Send);
        assert_not_impl!($t: Sync);
    };
}

// ---------------------------------------------------------------------------
// Test types: buffers and a platform whose parts are not `Sync`.
// ---------------------------------------------------------------------------

/// Cells in simulated RAM: the buffer is `Send + Sync` (nothing of it is
/// reachable through `&CellBuf`), its contents `[Cell<u8>]` are `Send` but
/// not `Sync`. The case of hole 6.
struct CellBuf(SimBuffer<[u8]>);

// SAFETY: a `SimBuffer<[u8]>` given up, seen as cells: `Cell<u8>` has the
// layout and bit validity of `u8`, so the pointer is valid, aligned and
// initialised for them and stays reserved by `SimBuffer`'s contract;
// rebuilding casts back and gives the same buffer.
unsafe impl DmaBuffer for CellBuf {
    type Target = [Cell<u8>];
    type Keep = SimMemory;

    fn into_raw_parts(self) -> (NonNull<[Cell<u8>]>, SimMemory) {
        let (ptr, keep) = self.0.into_raw_parts();
        (NonNull::slice_from_raw_parts(ptr.cast(), ptr.len()), keep)
    }

    unsafe fn from_raw_parts(ptr: NonNull<[Cell<u8>]>, keep: SimMemory) -> Self {
        let bytes = NonNull::slice_from_raw_parts(ptr.cast::<u8>(), ptr.len());
        // SAFETY: the parts of one `into_raw_parts` of a `SimBuffer`.
        Self(unsafe { SimBuffer::from_raw_parts(bytes, keep) })
    }
}

/// A byte that must stay on its thread (neither `Send` nor `Sync`), with
/// the layout of `u8`.
#[repr(transparent)]
struct ThreadByte(u8, PhantomData<*const ()>);

/// Bytes in simulated RAM seen as `ThreadByte`s: the buffer is `Send +
/// Sync`, its contents are neither.
struct ThreadBuf(SimBuffer<[u8]>);

// SAFETY: as for `CellBuf`: `ThreadByte` is a transparent `u8`.
unsafe impl DmaBuffer for ThreadBuf {
    type Target = [ThreadByte];
    type Keep = SimMemory;

    fn into_raw_parts(self) -> (NonNull<[ThreadByte]>, SimMemory) {
        let (ptr, keep) = self.0.into_raw_parts();
        (NonNull::slice_from_raw_parts(ptr.cast(), ptr.len()), keep)
    }

    unsafe fn from_raw_parts(ptr: NonNull<[ThreadByte]>, keep: SimMemory) -> Self {
        let bytes = NonNull::slice_from_raw_parts(ptr.cast::<u8>(), ptr.len());
        // SAFETY: the parts of one `into_raw_parts` of a `SimBuffer`.
        Self(unsafe { SimBuffer::from_raw_parts(bytes, keep) })
    }
}

/// A platform hook with interior mutability that is not `Sync` (it counts
/// look-ups in a `Cell`), so its backend and device are not `Sync`.
struct CellPlatform(Cell<u64>);

// SAFETY: it vouches for no memory at all (always `None`).
unsafe impl PhysLookup for CellPlatform {
    fn phys_of(&self, _: NonNull<u8>, _: usize) -> Option<PhysAddr> {
        self.0.set(self.0.get() + 1);
        None
    }
}

// ---------------------------------------------------------------------------
// Shorthands.
// ---------------------------------------------------------------------------

type Dc = DirectCoherent<SimMemory>;
type Nc = DirectNonCoherent<SimMemory, SimCache>;
type Bounced = Composed<SimMemory, Direct, CoherentK, Arc<Swiotlb>>;
type CellBackend = Composed<CellPlatform, Direct, CoherentK, NoBounce>;
type M<D, S, Buf, B = Dc> = Mapped<'static, D, S, Buf, B>;
type Sg<D, S, Buf, B = Dc> = SgMapped<'static, D, S, Buf, B>;
type Bytes = SimBuffer<[u8]>;

// ---------------------------------------------------------------------------
// The typed API.
// ---------------------------------------------------------------------------

// `Mapped`: Send if the buffer, its contents and its `Keep` are Send and
// the device is shared (`B: Sync`); Sync if buffer, contents and `Keep` are
// Sync and `B: Sync`, in every state.
auto!(M<ToDevice, DevOwned, Bytes>: Send, Sync);
auto!(M<ToDevice, CpuOwned, Bytes>: Send, Sync);
auto!(M<FromDevice, CpuOwnedPrefix, Bytes>: Send, Sync);
auto!(M<Bidirectional, CpuOwned, Bytes, Nc>: Send, Sync);
auto!(M<FromDevice, DevOwned, Bytes, SimIommuBackend>: Send, Sync);
auto!(M<FromDevice, DevOwned, Bytes, Bounced>: Send, Sync);
auto!(M<ToDevice, CpuOwned, Box<[u8]>>: Send, Sync);
auto!(M<ToDevice, CpuOwned, Box<u64>>: Send, Sync);
auto!(M<ToDevice, CpuOwned, &'static mut [u8]>: Send, Sync);
// `RawBuffer` is `Send`, not `Sync`.
auto!(M<ToDevice, CpuOwned, RawBuffer>: Send, !Sync);
auto!(M<ToDevice, DevOwned, RawBuffer>: Send, !Sync);
// Hole 6: the buffer is `Sync`, its contents are not.
const _: () = assert_sync::<CellBuf>();
auto!(M<ToDevice, CpuOwned, CellBuf>: Send, !Sync);
auto!(M<ToDevice, DevOwned, CellBuf>: Send, !Sync);
auto!(M<Bidirectional, CpuOwned, Box<[Cell<u8>]>>: Send, !Sync);
auto!(M<ToDevice, CpuOwned, SimBuffer<[Cell<u8>]>>: Send, !Sync);
// Contents that may not leave their thread: neither, although the buffer
// type itself is both.
const _: () = assert_send::<ThreadBuf>();
const _: () = assert_sync::<ThreadBuf>();
auto!(M<ToDevice, CpuOwned, ThreadBuf>: !Send, !Sync);
auto!(M<ToDevice, CpuOwned, Box<[*const u8]>>: !Send, !Sync);
// A device that cannot be shared: its handles can go nowhere.
auto!(M<ToDevice, CpuOwned, Box<[u8]>, CellBackend>: !Send, !Sync);

// `SgMapped`: a device reference and a `Vec` of handles; follows `Mapped`.
auto!(Sg<FromDevice, DevOwned, Bytes>: Send, Sync);
auto!(Sg<FromDevice, CpuOwned, Bytes, Nc>: Send, Sync);
auto!(Sg<ToDevice, CpuOwned, CellBuf>: Send, !Sync);
auto!(Sg<ToDevice, CpuOwned, RawBuffer>: Send, !Sync);
auto!(Sg<ToDevice, CpuOwned, ThreadBuf>: !Send, !Sync);
auto!(Sg<ToDevice, CpuOwned, Box<[u8]>, CellBackend>: !Send, !Sync);
auto!(Segments<'static, 'static, FromDevice, Bytes, Dc>: Send, Sync);
auto!(Segments<'static, 'static, ToDevice, CellBuf, Dc>: !Send, !Sync);

// `MmioMapped`: a device reference and plain data.
auto!(MmioMapped<'static, ToDevice, Dc>: Send, Sync);
auto!(MmioMapped<'static, FromDevice, SimIommuBackend>: Send, Sync);
auto!(MmioMapped<'static, ToDevice, CellBackend>: !Send, !Sync);

// `PendingUnmap`: moves like the handle it came from; nothing is reachable
// through `&PendingUnmap`, and it is not `Sync` (raw pointer, no need).
auto!(PendingUnmap<'static, Bytes, Dc>: Send, !Sync);
auto!(PendingUnmap<'static, CellBuf, Dc>: Send, !Sync);
auto!(PendingUnmap<'static, ThreadBuf, Dc>: !Send, !Sync);
auto!(PendingUnmap<'static, Box<[u8]>, CellBackend>: !Send, !Sync);

// `PendingToCpu`: a device-owned handle inside a batch; follows `Mapped`.
auto!(PendingToCpu<'static, FromDevice, Bytes, Nc>: Send, Sync);
auto!(PendingToCpu<'static, ToDevice, CellBuf, Dc>: Send, !Sync);
auto!(PendingToCpu<'static, ToDevice, ThreadBuf, Dc>: !Send, !Sync);

// Batches stay on the thread that issued their work: neither.
auto!(Batch<'static, Nc, M<FromDevice, DevOwned, Bytes, Nc>>: !Send, !Sync);
auto!(Batch<'static, Nc, PendingToCpu<'static, FromDevice, Bytes, Nc>>: !Send, !Sync);
auto!(Batch<'static, Dc, PendingUnmap<'static, Bytes, Dc>>: !Send, !Sync);
auto!(FixedBatch<'static, Nc, ()>: !Send, !Sync);
auto!(FixedBatch<'static, Nc, (M<ToDevice, DevOwned, Bytes, Nc>,)>: !Send, !Sync);
auto!(
    FixedBatch<
        'static,
        Nc,
        (
            M<ToDevice, DevOwned, Bytes, Nc>,
            PendingToCpu<'static, FromDevice, Bytes, Nc>,
        ),
    >: !Send,
    !Sync
);

// Coherent allocations: follow their contents, and need a shared device.
auto!(CoherentBox<'static, [u8], Dc>: Send, Sync);
auto!(CoherentBox<'static, [Cell<u8>], Dc>: Send, !Sync);
auto!(Coherent<'static, [u32], SimIommuBackend>: Send, Sync);
auto!(Coherent<'static, [Cell<u8>], Dc>: Send, !Sync);
auto!(Coherent<'static, [ThreadByte], Dc>: !Send, !Sync);

// Later typed-API types: each follows what it holds.
auto!(AnyMapped<'static, DevOwned, Bytes, Dc>: Send, Sync);
auto!(AnyMapped<'static, CpuOwned, CellBuf, Dc>: Send, !Sync);
auto!(AnyMapped<'static, CpuOwned, ThreadBuf, Dc>: !Send, !Sync);
auto!(ByDmaAddr<M<FromDevice, DevOwned, Bytes>>: Send, Sync);
auto!(ByDmaAddr<M<ToDevice, DevOwned, RawBuffer>>: Send, !Sync);
auto!(Reach<'static, Dc, U32>: Send, Sync);
auto!(Reach<'static, CellBackend, U32>: !Send, !Sync);
auto!(Zoned<U32, u8, SimMemory>: Send, Sync);
auto!(Zoned<U32, Cell<u8>, SimMemory>: Send, !Sync);
auto!(DmaPages<[u8], SimMemory>: Send, Sync);
auto!(DmaPages<[Cell<u8>], SimMemory>: Send, !Sync);
auto!(DmaPages<[ThreadByte], SimMemory>: !Send, !Sync);
auto!(PagesKeep<SimMemory>: Send, Sync);

// `Device`: follows its backend; its context is atomics and plain data.
auto!(Device<Dc>: Send, Sync);
auto!(Device<Nc>: Send, Sync);
auto!(Device<SimIommuBackend>: Send, Sync);
auto!(Device<Bounced>: Send, Sync);
auto!(Device<CellBackend>: Send, !Sync);
auto!(DeviceStats: Send, Sync);
auto!(DeviceConfig: Send, Sync);
auto!(DeviceContext: Send, Sync);
auto!(DeviceId: Send, Sync);

// Markers and addresses.
auto!(ToDevice: Send, Sync);
auto!(FromDevice: Send, Sync);
auto!(Bidirectional: Send, Sync);
auto!(CpuOwned: Send, Sync);
auto!(DevOwned: Send, Sync);
auto!(CpuOwnedPrefix: Send, Sync);
auto!(DmaDirection: Send, Sync);
auto!(PhysAddr: Send, Sync);
auto!(DmaAddr: Send, Sync);
auto!(DmaMask: Send, Sync);
auto!(Side: Send, Sync);
auto!(IdentityMap: Send, Sync);

// Buffers.
auto!(RawBuffer: Send, !Sync);
auto!(Bytes: Send, Sync);
auto!(SimBuffer<u64>: Send, Sync);
auto!(SimBuffer<[Cell<u8>]>: Send, !Sync);
auto!(SimBuffer<[ThreadByte]>: !Send, !Sync);

// Errors: plain data, or they follow what they hand back.
auto!(MapErrorKind: Send, Sync);
auto!(AllocError: Send, Sync);
auto!(MapError<Bytes>: Send, Sync);
auto!(MapError<RawBuffer>: Send, !Sync);
auto!(MapError<ThreadBuf>: Send, Sync);
auto!(RangeError<M<FromDevice, DevOwned, Bytes>>: Send, Sync);
auto!(RangeError<M<FromDevice, DevOwned, CellBuf>>: Send, !Sync);
auto!(ForeignDeviceError<Sg<FromDevice, DevOwned, Bytes>>: Send, Sync);
auto!(ForeignDeviceError<Sg<ToDevice, DevOwned, RawBuffer>>: Send, !Sync);
auto!(SgMapError<Bytes>: Send, Sync);
auto!(SgMapError<RawBuffer>: Send, !Sync);
auto!(SimFault: Send, Sync);
auto!(PhysAccessError: Send, Sync);
auto!(SimAllocError: Send, Sync);
auto!(WindowError: Send, Sync);
auto!(PageTableError: Send, Sync);
auto!(LinkError: Send, Sync);

// ---------------------------------------------------------------------------
// Backends and their parts.
// ---------------------------------------------------------------------------

auto!(Dc: Send, Sync);
auto!(Nc: Send, Sync);
auto!(Bounced: Send, Sync);
auto!(SimIommuBackend: Send, Sync);
auto!(CellBackend: Send, !Sync);
auto!(Direct: Send, Sync);
auto!(DmaWindows: Send, Sync);
auto!(DmaWindow: Send, Sync);
auto!(CoherentK: Send, Sync);
auto!(NonCoherent<SimCache>: Send, Sync);
auto!(NoBounce: Send, Sync);
auto!(NoPhys: Send, Sync);
auto!(MapAttrs: Send, Sync);
auto!(SyncRange: Send, Sync);
auto!(ComposedState<(), Option<SwiotlbSlot>>: Send, Sync);
auto!(Swiotlb: Send, Sync);
auto!(SwiotlbSlot: Send, Sync);
auto!(IommuDomain<SimIommu>: Send, Sync);
auto!(IovaAllocator: Send, Sync);
auto!(IovaAlloc: Send, Sync);
auto!(IovaRange: Send, Sync);
auto!(PageTable: Send, Sync);
auto!(Pte: Send, Sync);
auto!(Prot: Send, Sync);
auto!(InvalidationMode: Send, Sync);
// Descriptors of memory handed to backend and cache code during one call:
// raw pointers, neither (nothing needs them elsewhere).
auto!(CacheRange: !Send, !Sync);
auto!(BounceSlot: !Send, !Sync);
auto!(MapRequest<'static>: !Send, !Sync);
auto!(Mapping<'static, Dc>: !Send, !Sync);
auto!(MmioRequest<'static>: Send, Sync);

#[cfg(target_arch = "x86_64")]
auto!(dmacap::arch::x86_64::X86CacheOps: Send, Sync);

// ---------------------------------------------------------------------------
// The simulator.
// ---------------------------------------------------------------------------

auto!(SimPlatform: Send, Sync);
auto!(SimMemory: Send, Sync);
auto!(SimCache: Send, Sync);
auto!(SimIommu: Send, Sync);
auto!(SimDevice<'static, Dc>: Send, Sync);
auto!(SimDevice<'static, SimIommuBackend>: Send, Sync);
auto!(Access: Send, Sync);
auto!(FaultReason: Send, Sync);
auto!(IommuFault: Send, Sync);

/// The assertions above are all checked when this file compiles; this test
/// only makes it visible in test runs, and checks at run time that the
/// test-only types behave as their `unsafe impl`s say.
#[test]
fn auto_traits_are_pinned_at_compile_time() {
    let sim = SimPlatform::new(1 << 16);
    let dev = sim.coherent_device();
    let tx = dev
        .map_to_device(CellBuf(sim.memory().alloc_slice::<u8>(4).unwrap()))
        .unwrap();
    let mut wire = [0u8; 4];
    sim.device(&dev).read(tx.dma_addr(), &mut wire).unwrap();
    assert_eq!(wire, [0; 4]);
    // SAFETY: the simulated read returned.
    let tx = unsafe { tx.sync_for_cpu() };
    tx.contents()[1].set(9);
    let back = tx.unmap();
    assert_eq!(&back.0[..], &[0, 9, 0, 0]);

    let platform = CellPlatform(Cell::new(0));
    assert_eq!(platform.phys_of(NonNull::dangling(), 1), None);
    assert_eq!(platform.0.get(), 1);
}
