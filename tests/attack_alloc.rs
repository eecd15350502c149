//! An outside review of part 4 (allocations, ranged syncs, HAL shapes, the
//! batch drop path), written as attacks.
//!
//! Each test is one attack. Attacks the code withstands are kept as
//! passing regression tests (`held_*`), each with a doc comment saying what
//! was tried. Attacks that break a claim (safe code, plus the documented
//! `unsafe` steps used exactly as their `# Safety` sections allow, reaches
//! undefined behaviour, reads an invalid value or a reference to memory a
//! device may write, frees or reuses memory a device can still reach, or
//! leaks memory no device was ever given) are written to assert the
//! correct behaviour, so they FAILED on the code they found the problem in;
//! their doc comments say what went wrong and how it was seen (a failed
//! assertion natively, or Miri's report).
//!
//! The review started at commit 3118c82. Most of what it found there was
//! fixed in 97c8516 while it ran; those tests are `held_*` now, and their
//! doc comments keep what they showed at 3118c82 ("Was BROKEN at ...").
//! Where the fix changed the API so that the attack no longer compiles
//! (padded shared contents, ranged syncs through `&self`, a `Zoned` of one
//! granule mapped through a reach of another), the test pins the fix
//! instead. The two `fixed_*` tests failed at 330bb2c (a cache hook
//! unwinding inside a hand-over to the device freed the buffer with its
//! clean queued); the handle is now device-owned before the first clean is
//! issued.
//!
//! Run natively with `cargo test -p dmacap --test attack_alloc`, and under
//! Miri with `MIRIFLAGS=-Zmiri-ignore-leaks cargo +nightly miri test -p
//! dmacap --test attack_alloc` (with and without `-Zmiri-tree-borrows`).
//! Buffers are small and loops short under Miri.

use std::mem::size_of;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use dmacap::arch::{CacheMaintenance, CacheRange};
use dmacap::backend::bounce::Swiotlb;
use dmacap::backend::compose::{Coherent as CoherentCache, Composed, NoBounce, NonCoherent};
use dmacap::backend::direct::{DirectCoherent, DmaWindow, DmaWindows};
use dmacap::backend::iommu::{InvalidationMode, IommuDomain};
use dmacap::backend::noncoherent::DirectNonCoherent;
use dmacap::erased::ByDmaAddr;
use dmacap::platform::{DeviceId, DmaAllocator, PhysLookup, Side};
use dmacap::sim::{SimCache, SimDevice, SimIommu, SimMemory, SimPlatform};
use dmacap::typenum::U32;
use dmacap::{
    AllocError, Bidirectional, Device, DeviceConfig, DmaAddr, DmaDirection, DmaMask, FromDevice,
    MapErrorKind, PhysAddr, ToDevice,
};
use dmacap::{dma_read, dma_write};
use zerocopy::byteorder::little_endian::{U16, U32 as LeU32};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

const PAGE: usize = 4096;
/// Simulated RAM of most tests: small, so that Miri runs quickly.
const RAM: usize = 256 * 1024;

fn at(dma: DmaAddr, off: usize) -> DmaAddr {
    dma.checked_add(off as u64).unwrap()
}

/// Iterations of the racing loops: short under Miri.
const fn rounds(native: usize) -> usize {
    if cfg!(miri) { 8 } else { native }
}

// ===========================================================================
// A platform whose hooks panic on demand.
// ===========================================================================

/// Which hook panics, and on which call from now: `0` never, `n` on the
/// `n`-th call.
#[derive(Default)]
struct Plan {
    phys_of: AtomicUsize,
    alloc: AtomicUsize,
    make_visible: AtomicUsize,
    grant: AtomicUsize,
}

/// Panics if `counter` was armed and this is the call it names.
fn trip(counter: &AtomicUsize, hook: &str) {
    let prev = counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .unwrap_or(0);
    if prev == 1 {
        panic!("the platform's {hook} hook failed (armed by the test)");
    }
}

/// `SimMemory` behind hooks that panic when the test arms them. Every
/// panic happens *before* the call is forwarded, so the simulated RAM never
/// sees a half-done operation: the most favourable failure there is.
#[derive(Clone)]
struct Hooked {
    mem: SimMemory,
    plan: Arc<Plan>,
}

impl Hooked {
    fn new(mem: &SimMemory) -> Self {
        Self {
            mem: mem.clone(),
            plan: Arc::default(),
        }
    }
}

// SAFETY: forwards to `SimMemory`, which keeps the promises; an armed hook
// unwinds before forwarding and so promises nothing.
unsafe impl PhysLookup for Hooked {
    fn phys_of(&self, cpu: NonNull<u8>, len: usize) -> Option<PhysAddr> {
        trip(&self.plan.phys_of, "phys_of");
        self.mem.phys_of(cpu, len)
    }

    unsafe fn ownership_changed(&self, cpu: NonNull<u8>, len: usize, to: Side, device: DeviceId) {
        if to == Side::Device {
            trip(&self.plan.grant, "ownership_changed(Device)");
        }
        // SAFETY: the caller's promise, passed on.
        unsafe { self.mem.ownership_changed(cpu, len, to, device) }
    }
}

// SAFETY: forwards to `SimMemory`, which keeps the promises; an armed hook
// unwinds before forwarding and so promises nothing.
unsafe impl DmaAllocator for Hooked {
    fn alloc_dma(
        &self,
        size: usize,
        align: usize,
        max_phys: u64,
        uncached: bool,
    ) -> Option<NonNull<u8>> {
        trip(&self.plan.alloc, "alloc_dma");
        self.mem.alloc_dma(size, align, max_phys, uncached)
    }

    unsafe fn free_dma(&self, ptr: NonNull<u8>, size: usize, align: usize) {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.mem.free_dma(ptr, size, align) }
    }

    unsafe fn make_visible(&self, ptr: NonNull<u8>, len: usize) {
        trip(&self.plan.make_visible, "make_visible");
        // SAFETY: the caller's promise, passed on.
        unsafe { self.mem.make_visible(ptr, len) }
    }

    unsafe fn read_shared<T: FromBytes>(&self, src: NonNull<T>) -> T {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.mem.read_shared(src) }
    }

    unsafe fn write_shared<T: IntoBytes>(&self, dst: NonNull<T>, value: T) {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.mem.write_shared(dst, value) }
    }
}

/// The simulated cache, whose barrier panics once when armed, before
/// completing anything (the operations stay queued for this thread).
struct PanickyCache {
    inner: SimCache,
    armed: Arc<AtomicBool>,
}

// SAFETY: forwards to `SimCache`; an armed `complete` unwinds without
// returning, so it promises nothing, and the operations stay queued.
unsafe impl CacheMaintenance for PanickyCache {
    type Granule = <SimCache as CacheMaintenance>::Granule;

    fn line_size(&self) -> usize {
        self.inner.line_size()
    }

    unsafe fn clean(&self, r: CacheRange) -> usize {
        // SAFETY: forwarded with the caller's promises.
        unsafe { self.inner.clean(r) }
    }

    unsafe fn invalidate(&self, r: CacheRange) -> usize {
        // SAFETY: forwarded with the caller's promises.
        unsafe { self.inner.invalidate(r) }
    }

    fn complete(&self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("the completion barrier failed (armed by the test)");
        }
        self.inner.complete();
    }
}

// ===========================================================================
// Coherent allocations.
// ===========================================================================

/// A virtqueue-like ring header with a nested struct.
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Debug, Clone, Copy)]
#[repr(C)]
struct Inner {
    lo: U16,
    hi: U16,
}

#[derive(FromBytes, IntoBytes, Immutable, KnownLayout, Debug, Clone, Copy)]
#[repr(C)]
struct Ring {
    flags: U16,
    idx: U16,
    inner: Inner,
    ring: [U16; 4],
}

/// Attack: a device thread writes a shared `Coherent` ring without pause
/// while the CPU reads it field by field (and whole) from another thread,
/// and stores to one of the fields the device stores to, on coherent and on
/// non-coherent RAM. Miri must
/// report no data race and no aliasing violation, and every value the CPU
/// reads must be one the device or the CPU wrote.
///
/// Held: CPU accesses go through `read_shared`/`write_shared`, which the
/// simulator runs under the grant lock every device access takes.
#[test]
fn held_device_writes_shared_coherent_while_cpu_reads_on_another_thread() {
    for coherent in [true, false] {
        let sim = if coherent {
            SimPlatform::new(RAM)
        } else {
            SimPlatform::noncoherent(RAM)
        };
        // A device declared coherent on coherent RAM, non-coherent otherwise.
        if coherent {
            let dev = sim.coherent_device();
            race_ring(&sim, &dev);
        } else {
            let dev = sim.noncoherent_device();
            race_ring(&sim, &dev);
        }
    }
}

fn race_ring<B>(sim: &SimPlatform, dev: &Device<B>)
where
    B: dmacap::backend::Backend<Platform = SimMemory> + dmacap::sim::BusTranslate + Sync,
{
    let mut ring = dev.alloc_coherent::<Ring>().unwrap();
    ring.flags = U16::new(0x1111);
    let mut ring = ring.share().unwrap();
    let engine = sim.device(dev);
    let dma = ring.dma_addr();
    let n = rounds(2000);
    let go = Barrier::new(2);
    std::thread::scope(|s| {
        let engine = &engine;
        let go = &go;
        s.spawn(move || {
            go.wait();
            for i in 0..n {
                let v = (i % 2) as u8 + 1;
                // flags, idx and the nested field, as the device would.
                engine.write(dma, &[v, v, v, v]).unwrap();
                engine.write(at(dma, 4), &[v; 4]).unwrap();
            }
        });
        go.wait();
        for i in 0..n {
            let idx = dma_read!(ring, Ring, idx).get();
            assert!([0, 0x0101, 0x0202].contains(&idx), "idx {idx:#x}");
            let lo = dma_read!(ring, Ring, inner.lo).get();
            assert!([0, 0x0101, 0x0202].contains(&lo), "lo {lo:#x}");
            let whole = ring.read();
            assert!([0, 0x0101, 0x0202].contains(&whole.inner.hi.get()));
            // CPU stores to a field the device is storing to as well.
            dma_write!(ring, Ring, flags, U16::new(0x0303 * (i as u16 % 2)));
            let f = dma_read!(ring, Ring, flags).get();
            assert!([0, 0x0101, 0x0202, 0x0303].contains(&f), "flags {f:#x}");
        }
    });
    // And a CPU write after the race reaches the device.
    dma_write!(ring, Ring, ring, [U16::new(9); 4]);
    let mut seen = [0u8; 8];
    engine.read(at(dma, 8), &mut seen).unwrap();
    assert_eq!(seen, [9, 0, 9, 0, 9, 0, 9, 0]);
    // SAFETY: the device thread has been joined.
    unsafe { ring.free() };
    assert_eq!(sim.memory().device_owned_bytes(), 0);
    assert_eq!(dev.leaked(), 0);
}

static SOME_U32: LeU32 = LeU32::ZERO;
static SOME_U16: U16 = U16::ZERO;

/// Attack: call `read_field`/`write_field` directly with hostile
/// arguments: an offset past the element, one that overflows with the
/// field's size, a misaligned offset, an element past the end, a field
/// type larger than the element, and closures that have nothing to do
/// with the offset (the `_field` argument is ignored). Each must panic
/// before touching memory, and a lying closure with an in-bounds offset
/// may only read or write bytes of the allocation.
///
/// Held: `field_ptr` checks bounds (with `checked_add`) and alignment of
/// the final address; the closure only fixes the type `F`, and any `F`
/// that is `FromBytes`/`IntoBytes` at any in-bounds, aligned offset of a
/// `FromBytes` element is sound.
#[test]
fn held_hostile_offsets_and_closures_panic_before_touching_memory() {
    let sim = SimPlatform::new(RAM);
    let dev = sim.coherent_device();
    let engine = sim.device(&dev);
    let mut c = dev.alloc_coherent_slice::<Ring>(2).unwrap();
    c[1].flags = U16::new(0xbeef);
    let mut c = c.share().unwrap();
    let hostile: [(usize, usize); 5] = [
        (0, 16),             // past the element
        (0, 14),             // a u32 at 14 spills into the next element
        (0, usize::MAX - 1), // overflows with the size
        (2, 0),              // element past the end
        (usize::MAX, 0),     // element far past the end
    ];
    for (elem, off) in hostile {
        let r = catch_unwind(AssertUnwindSafe(|| {
            c.read_field::<LeU32>(elem, off, |_| &SOME_U32)
        }));
        assert!(r.is_err(), "read at ({elem}, {off}) must panic");
        let r = catch_unwind(AssertUnwindSafe(|| {
            c.write_field::<LeU32>(elem, off, |_| &SOME_U32, LeU32::new(0xdead_beef))
        }));
        assert!(r.is_err(), "write at ({elem}, {off}) must panic");
    }
    // Misaligned for a native u32 (the simulated RAM is page-aligned, so
    // offset 1 of element 0 is odd).
    let r = catch_unwind(AssertUnwindSafe(|| c.read_field::<u32>(0, 1, |_| &0)));
    assert!(r.is_err(), "a misaligned u32 must panic");
    // A field larger than the element.
    let r = catch_unwind(AssertUnwindSafe(|| {
        c.read_field::<[u8; 17]>(0, 0, |_| &[0; 17])
    }));
    assert!(r.is_err());
    // Lying closures at honest offsets: the type is what the offset says.
    assert_eq!(c.read_field::<U16>(1, 0, |_| &SOME_U16).get(), 0xbeef);
    c.write_field::<U16>(1, 2, |_| &SOME_U16, U16::new(0x0102));
    let mut idx = [0u8; 2];
    engine.read(at(c.dma_addr(), 16 + 2), &mut idx).unwrap();
    assert_eq!(idx, [2, 1]);
    // Nothing outside the allocation changed, nothing was granted twice.
    assert_eq!(sim.memory().device_owned_bytes(), c.allocated_bytes());
    // SAFETY: the simulated device is idle.
    unsafe { c.free() };
    assert_eq!(sim.memory().allocated_bytes(), 0);
}

/// A type whose `Deref` target has the field a path names.
struct Wrapper(Ring);
impl core::ops::Deref for Wrapper {
    type Target = Ring;
    fn deref(&self) -> &Ring {
        &self.0
    }
}

/// Attack: `dma_read!`/`dma_write!` with a nested field path
/// (`inner.hi`), and element paths into a slice allocation.
/// (`dma_read!(c, Wrapper, flags)` through `Deref` does not compile:
/// `offset_of!` does not auto-deref, and the closure would have the wrong
/// type for a `Coherent<Ring>` anyway.)
///
/// Held: the nested offset is the real one, checked against the bytes the
/// device sees.
#[test]
fn held_nested_field_paths_address_the_right_bytes() {
    let _ = Wrapper(Ring::new_zeroed()).flags; // the Deref type exists
    let sim = SimPlatform::new(RAM);
    let dev = sim.coherent_device();
    let engine = sim.device(&dev);
    let mut c = dev
        .alloc_coherent_slice::<Ring>(3)
        .unwrap()
        .share()
        .unwrap();
    dma_write!(c[2], Ring, inner.hi, U16::new(0xa55a));
    let mut b = [0u8; 2];
    engine.read(at(c.dma_addr(), 2 * 16 + 6), &mut b).unwrap();
    assert_eq!(b, [0x5a, 0xa5]);
    engine
        .write(at(c.dma_addr(), 16 + 4), &[0x34, 0x12])
        .unwrap();
    assert_eq!(dma_read!(c[1], Ring, inner.lo).get(), 0x1234);
    let i = 1;
    assert_eq!(dma_read!(c[i + 1], Ring, inner.hi).get(), 0xa55a);
    // SAFETY: the simulated device is idle.
    unsafe { c.free() };
}

/// A `FromBytes` type with three padding bytes after `a`, large enough
/// that a copy of it is a `memcpy` (padding included), not two scalars.
#[derive(FromBytes, KnownLayout, Immutable, Debug, Clone, Copy)]
#[repr(C)]
struct Padded {
    a: u8,
    b: u32,
    c: [u32; 2],
}

/// Bytes aligned for a `Padded`: the source of an ordinary struct copy
/// whose padding bytes are not zero (as a stack temporary's may be).
#[repr(C, align(8))]
struct Source([u8; 16]);

static SOURCE: Source = Source([1, 0xaa, 0xbb, 0xcc, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0]);

/// A `Padded` whose padding bytes hold `0xaa 0xbb 0xcc`.
fn padded_source() -> &'static Padded {
    Padded::ref_from_bytes(&SOURCE.0).unwrap()
}

/// Whether `T: SharedContents`, asked at run time (an inherent constant
/// where the bound holds shadows the trait's default).
struct Probe<T: ?Sized>(core::marker::PhantomData<T>);
trait NotShared {
    const SHARED: bool = false;
}
impl<T: ?Sized> NotShared for Probe<T> {}
impl<T: ?Sized + dmacap::coherent::SharedContents> Probe<T> {
    const SHARED: bool = true;
}

/// Attack: share a coherent allocation of a type with padding. With
/// `share` asking only `T: FromBytes` (as at commit 3118c82), the CPU-only
/// phase hands out `&mut T`, so an ordinary typed store of a whole
/// `Padded` (`*b = *padded_source();`) writes its padding bytes
/// (uninitialised in the Rust abstract machine; on hardware whatever the
/// source held: stack garbage or secrets) into memory the device reads
/// after `share`, and `read_field::<[u8; 4]>(0, 0, |_| &ANY)` returns them
/// to the CPU. The brief's rule 4: a `T` the device reads needs
/// `IntoBytes` ("no padding bytes leak to the device").
///
/// Was BROKEN at 3118c82: natively the device read `[1, 0xaa, 0xbb, 0xcc,
/// 2, 0, 0, 0, ...]` instead of the zeroes the allocation held, and
/// `read_field` returned `[1, 0xaa, 0xbb, 0xcc]`; under Miri (both borrow
/// models) the device's read failed with "reading memory at
/// allocN[0x0..0x10], but memory is uninitialized at [0x1..0x4], and this
/// operation requires initialized memory", and `read_field` with
/// "constructing invalid value of type [u8; 4]: at [1], encountered
/// uninitialized memory, but expected an integer".
///
/// Held now (fixed in the working tree while this review ran:
/// `SharedContents` is `FromBytes + IntoBytes`): `share` of a padded type
/// does not compile. This test pins the bound at run time; the attack
/// itself belongs in a ui case.
#[test]
fn held_padded_types_cannot_be_shared() {
    let shared = [
        Probe::<Padded>::SHARED,
        Probe::<[Padded]>::SHARED,
        Probe::<Ring>::SHARED,
        Probe::<[Ring]>::SHARED,
    ];
    assert_eq!(
        shared,
        [false, false, true, true],
        "padded types must not be shareable"
    );
    // The padded value can still be built in a box (CPU-only, never
    // shared) and dropped: the memory comes back.
    let sim = SimPlatform::new(RAM);
    let dev = sim.coherent_device();
    let mut b = dev.alloc_coherent::<Padded>().unwrap();
    *b = *padded_source();
    assert_eq!(b.c, [3, 4]);
    drop(b);
    assert_eq!(sim.memory().allocated_bytes(), 0);
}

/// A coherent device over `Hooked` RAM.
type HookedCoherent = Device<DirectCoherent<Hooked>>;

fn hooked_coherent(mem: &SimMemory) -> (HookedCoherent, Arc<Plan>) {
    let hooked = Hooked::new(mem);
    let plan = hooked.plan.clone();
    (
        Device::new(DirectCoherent::new(hooked), DeviceConfig::new()),
        plan,
    )
}

/// Attack: `make_visible` (a platform hook) panics inside `share`. At that
/// point the allocation was never mapped and no device was ever given it,
/// so nothing stops freeing it; the brief's threat model asks that safe
/// code "lose no memory it did not choose to quarantine" when hooks panic.
///
/// Was BROKEN at 3118c82 (a leak, not UB): `share` wrapped the box in
/// `ManuallyDrop` before calling `phys_of` and `make_visible`, so an
/// unwinding hook lost the allocation for good: natively "memory no device
/// was given must not be lost when a hook unwinds (leaked: 64, counted as
/// quarantined: 0)".
///
/// Held now (fixed in 97c8516: the box holds the memory until the map is
/// asked for).
#[test]
fn held_share_hook_panic_before_the_map_frees_the_memory() {
    let sim = SimPlatform::new(RAM);
    let mem = sim.memory();
    let (dev, plan) = hooked_coherent(mem);
    let before = mem.allocated_bytes();
    for hook in [&plan.make_visible, &plan.phys_of] {
        let b = dev.alloc_coherent::<[u8; 64]>().unwrap();
        hook.store(1, Ordering::SeqCst);
        let r = catch_unwind(AssertUnwindSafe(|| b.share()));
        assert!(r.is_err(), "the hook unwound");
        assert_eq!(mem.device_owned_bytes(), 0, "no device was ever given it");
        assert_eq!(
            mem.allocated_bytes(),
            before,
            "memory no device was given must not be lost when a hook unwinds \
             (leaked: {}, counted as quarantined: {})",
            mem.allocated_bytes() - before,
            dev.leaked()
        );
    }
}

/// Attack: the grant hook (`ownership_changed(Device)`) panics at the very
/// end of `share`, after the map. The device's translation already covers
/// the memory, so it must not be freed; and the allocation is already
/// zeroed-and-mapped. Also: a hook panicking in `alloc_dma` of
/// `alloc_coherent`.
///
/// Held: the memory is kept (quarantined, uncounted) and no grant was made
/// (the simulated device is refused), and a failing `alloc_dma` holds
/// nothing.
#[test]
fn held_share_grant_panic_after_the_map_keeps_the_memory() {
    let sim = SimPlatform::new(RAM);
    let mem = sim.memory();
    let (dev, plan) = hooked_coherent(mem);
    let before = mem.allocated_bytes();
    plan.alloc.store(1, Ordering::SeqCst);
    assert!(catch_unwind(AssertUnwindSafe(|| dev.alloc_coherent::<[u8; 64]>())).is_err());
    assert_eq!(mem.allocated_bytes(), before);

    let b = dev.alloc_coherent::<[u8; 64]>().unwrap();
    let phys = mem.phys_of(NonNull::from(&*b).cast(), 64).unwrap();
    plan.grant.store(1, Ordering::SeqCst);
    assert!(catch_unwind(AssertUnwindSafe(|| b.share())).is_err());
    assert_eq!(
        mem.allocated_bytes(),
        before + 64,
        "mapped: kept, never freed"
    );
    assert!(mem.write_phys(dev.id(), phys, &[1]).is_err());
    // A fresh allocation does not reuse it.
    let fresh = dev.alloc_coherent::<[u8; 64]>().unwrap();
    assert_ne!(mem.phys_of(NonNull::from(&*fresh).cast(), 64), Some(phys));
}

/// Attack: forget a shared `Coherent` (safe), then drop its device, on a
/// direct device and behind an IOMMU; and forget a CPU-phase
/// `CoherentBox`.
///
/// Held: the memory stays allocated and granted for good (the simulator
/// keeps refusing CPU-side reuse), the IOMMU domain leaks its page table
/// instead of freeing it, and Miri sees nothing.
#[test]
fn held_forgotten_coherent_then_device_dropped() {
    let sim = SimPlatform::new(RAM);
    let mem = sim.memory();
    {
        let dev = sim.coherent_device();
        let c = dev.alloc_coherent::<Ring>().unwrap().share().unwrap();
        let dma = c.dma_addr();
        std::mem::forget(c);
        // The device may go on writing it: still granted.
        sim.device(&dev).write(dma, &[1, 2]).unwrap();
        std::mem::forget(dev.alloc_coherent::<Ring>().unwrap());
    }
    {
        let dev = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
        let c = dev.alloc_coherent::<Ring>().unwrap().share().unwrap();
        sim.device(&dev).write(c.dma_addr(), &[1, 2]).unwrap();
        std::mem::forget(c);
    }
    // A coherent direct device rounds to nothing (granule 1); the IOMMU
    // device to its page.
    let ring = size_of::<Ring>();
    assert_eq!(mem.allocated_bytes(), 2 * ring + PAGE);
    assert_eq!(mem.device_owned_bytes(), ring + PAGE);
}

// ===========================================================================
// Non-contiguous allocations.
// ===========================================================================

type NcIommu<K> = Device<Composed<Hooked, IommuDomain<SimIommu>, K, NoBounce>>;

fn hooked_iommu(mem: &SimMemory) -> (NcIommu<CoherentCache>, Arc<Plan>) {
    let hooked = Hooked::new(mem);
    let plan = hooked.plan.clone();
    let dev = Device::new(
        Composed::from_parts(
            hooked,
            IommuDomain::new(SimIommu::new(), InvalidationMode::Strict),
            CoherentCache,
            NoBounce,
        ),
        DeviceConfig::new(),
    );
    (dev, plan)
}

/// Attack: `alloc_dma` panics on the third page of
/// `alloc_noncontiguous`. The first two pages were allocated a moment
/// earlier and never linked, mapped or given to any device.
///
/// Was BROKEN at 3118c82 (a leak, not UB): the pages collected so far sat
/// in a local `Vec<(NonNull<u8>, PhysAddr)>`, which frees nothing when it
/// unwinds: natively "pages no device was ever given were lost (8192
/// bytes)". Every error *return* gave them back; an unwinding hook did not.
///
/// Held now (fixed in 97c8516: a guard frees unlinked pages on unwind).
#[test]
fn held_alloc_noncontiguous_hook_panic_frees_unlinked_pages() {
    let sim = SimPlatform::new(RAM);
    let mem = sim.memory();
    let (dev, plan) = hooked_iommu(mem);
    let before = mem.allocated_bytes();
    plan.alloc.store(3, Ordering::SeqCst);
    let r = catch_unwind(AssertUnwindSafe(|| {
        dev.alloc_noncontiguous::<FromDevice>(4 * PAGE)
    }));
    assert!(r.is_err(), "the allocator hook unwound");
    assert_eq!(mem.device_owned_bytes(), 0);
    assert_eq!(
        mem.allocated_bytes(),
        before,
        "pages no device was ever given were lost ({} bytes)",
        mem.allocated_bytes() - before
    );
}

/// Attack: the platform's grant hook (`ownership_changed(Device)`)
/// panics on the second page of `NonContiguous::sync_for_device`. The
/// first page has been declared to the platform as the device's (the
/// caller promised the platform that no CPU code touches it until a
/// `Side::Cpu` call for it).
///
/// Was BROKEN at 3118c82: `self` was still the CPU-owned `NonContiguous`
/// while the pages were granted one by one, so the unwind dropped it as
/// CPU-owned: it unlinked the range and freed every page, including the
/// one still granted, without taking it back. Natively the simulated RAM
/// still reported 4096 bytes granted to the device after every page was
/// freed; a fresh buffer got that page, and the device's physical write
/// into it (`write_phys` with the device's id) was accepted (the fresh
/// buffer read `[ee, ee, ...]`). Under Miri the same write landed under
/// the live `&[u8]` of the fresh buffer: Stacked Borrows "trying to retag
/// from <N> for SharedReadOnly permission ... but that tag does not exist
/// in the borrow stack" ("was later invalidated ... by a write access"),
/// Tree Borrows "reborrow through <N> ... is forbidden". On a platform
/// where the grant means something to hardware (a confidential guest
/// sharing the page with the host) the page would be reused while still
/// shared.
///
/// Held now (fixed in 97c8516: the allocation is `DevOwned` before its
/// barrier and grants, so the unwind quarantines it).
#[test]
fn held_noncontiguous_grant_panic_quarantines_the_pages() {
    let sim = SimPlatform::new(RAM);
    let mem = sim.memory();
    let (dev, plan) = hooked_iommu(mem);
    let before = mem.allocated_bytes();
    let nc = dev.alloc_noncontiguous::<Bidirectional>(2 * PAGE).unwrap();
    let first = nc.phys_pages().next().unwrap();
    plan.grant.store(2, Ordering::SeqCst);
    let r = catch_unwind(AssertUnwindSafe(|| nc.sync_for_device()));
    assert!(r.is_err(), "the grant hook unwound");
    let granted_after = mem.device_owned_bytes();
    let freed = mem.allocated_bytes() == before;
    // A fresh buffer in the freed memory, read through a live reference
    // while the device (by its grant) writes physical memory.
    let fresh = mem.alloc_slice_aligned::<u8>(2 * PAGE, PAGE).unwrap();
    let view: &[u8] = &fresh;
    let device_wrote = mem.write_phys(dev.id(), first, &[0xee; 8]).is_ok();
    let head = view[..8].to_vec();
    assert!(
        granted_after == 0 || !freed,
        "{granted_after} bytes stay granted to the device after its pages were freed; \
         the device's write into a fresh buffer was accepted: {device_wrote}; \
         the fresh buffer now starts {head:x?}"
    );
    assert_eq!(head, [0; 8], "a live buffer changed under its reference");
}

/// A non-coherent IOMMU device whose barrier the returned flag arms.
type PanickyNc =
    Device<Composed<SimMemory, IommuDomain<SimIommu>, NonCoherent<PanickyCache>, NoBounce>>;

fn panicky_nc_iommu(mem: &SimMemory) -> (PanickyNc, Arc<AtomicBool>) {
    let armed = Arc::new(AtomicBool::new(false));
    let cache = PanickyCache {
        inner: mem.cache().unwrap(),
        armed: armed.clone(),
    };
    let dev = Device::new(
        Composed::from_parts(
            mem.clone(),
            IommuDomain::new(SimIommu::new(), InvalidationMode::Strict),
            NonCoherent(cache),
            NoBounce,
        ),
        DeviceConfig::new(),
    );
    (dev, armed)
}

/// Attack: the completion barrier of `NonContiguous::sync_for_device`
/// unwinds after the cleans of every page were issued. The brief: "if one
/// unwinds, no buffer whose maintenance or invalidation is incomplete may
/// be freed or reused".
///
/// Was BROKEN at 3118c82: as above, the allocation was still CPU-owned
/// while its maintenance was in flight, so the unwind freed the pages with
/// their cleans queued. The simulated cache then completed the stale clean
/// at this thread's next barrier over a receive buffer that reused the
/// page (mapped on another thread and filled by the device with `0x77`):
/// natively "pages with queued maintenance were freed; the receive buffer
/// that reused them then read 0x5a instead of the device's 0x77".
///
/// Held now (fixed in 97c8516) for a panicking *barrier*; a panicking
/// `clean` still breaks it (see
/// `broken_clean_hook_unwinding_in_noncontiguous_sync_for_device`).
#[test]
fn held_noncontiguous_barrier_panic_quarantines_the_pages() {
    let sim = SimPlatform::noncoherent(RAM);
    let mem = sim.memory();
    let (dev, armed) = panicky_nc_iommu(mem);
    let mut tx = dev.alloc_noncontiguous::<ToDevice>(PAGE).unwrap();
    tx.segments_mut().for_each(|s| s.fill(0x5a));
    let allocated = mem.allocated_bytes();
    armed.store(true, Ordering::SeqCst);
    let r = catch_unwind(AssertUnwindSafe(|| tx.sync_for_device()));
    assert!(r.is_err(), "the barrier unwound");
    let cache = mem.cache().unwrap();
    assert!(cache.pending() > 0, "the cleans are still queued");
    let nothing_freed = mem.allocated_bytes() == allocated;

    // Another thread reuses the memory for a receive buffer.
    let nc = sim.noncoherent_device();
    let got = std::thread::scope(|s| {
        let (nc, mem, sim) = (&nc, mem, &sim);
        let rx = s
            .spawn(move || {
                let buf = mem.alloc_slice_aligned::<u8>(PAGE, PAGE).unwrap();
                let rx = nc.map_from_device(buf).unwrap();
                sim.device(nc).fill(rx.dma_addr(), 0x77, PAGE).unwrap();
                rx
            })
            .join()
            .unwrap();
        // This thread's next barrier completes the stale clean.
        cache.complete();
        s.spawn(move || {
            // SAFETY: the simulated fill returned.
            let rx = unsafe { rx.sync_for_cpu() };
            rx.contents()[0]
        })
        .join()
        .unwrap()
    });
    assert!(
        nothing_freed,
        "pages with queued maintenance were freed; the receive buffer that reused them \
         then read {got:#x} instead of the device's 0x77"
    );
    assert_eq!(got, 0x77);
}

/// Attack: forget a device-owned `NonContiguous` and then drop its device
/// (and its IOMMU domain); and drop (not forget) a device-owned one.
///
/// Held: the pages stay allocated (quarantined), the dropped one is
/// counted, and the domain leaks its page table rather than free it.
#[test]
fn held_forgotten_noncontiguous_then_device_dropped() {
    let sim = SimPlatform::new(RAM);
    let mem = sim.memory();
    let before_tables = IommuDomain::<SimIommu>::leaked_page_tables();
    {
        let dev = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
        let a = dev
            .alloc_noncontiguous::<FromDevice>(2 * PAGE)
            .unwrap()
            .sync_for_device();
        sim.device(&dev).fill(a.dma_addr(), 1, 2 * PAGE).unwrap();
        std::mem::forget(a);
        let b = dev
            .alloc_noncontiguous::<FromDevice>(PAGE)
            .unwrap()
            .sync_for_device();
        drop(b);
        assert_eq!(dev.leaked(), 1);
    }
    assert_eq!(mem.allocated_bytes(), 3 * PAGE);
    assert_eq!(mem.device_owned_bytes(), 3 * PAGE);
    assert!(IommuDomain::<SimIommu>::leaked_page_tables() > before_tables);
}

// ===========================================================================
// The batch drop path.
// ===========================================================================

/// A non-coherent direct device whose barrier the returned flag arms.
type PanickyDirect = Device<DirectNonCoherent<SimMemory, PanickyCache>>;

fn panicky_direct(mem: &SimMemory) -> (PanickyDirect, Arc<AtomicBool>) {
    let armed = Arc::new(AtomicBool::new(false));
    let cache = PanickyCache {
        inner: mem.cache().unwrap(),
        armed: armed.clone(),
    };
    (
        Device::new(
            DirectNonCoherent::new(mem.clone(), cache),
            DeviceConfig::new(),
        ),
        armed,
    )
}

/// Attack: drop unflushed batches (a `FixedBatch` of two maps and a
/// `sync_for_device`, and a dynamic `Batch` of three maps, the last two
/// mixing a handle of a second device) and check that everything comes
/// back: no grant survives, no memory is lost, nothing is counted as
/// leaked; then `mem::forget` a batch (safe), which may only leak.
///
/// Held.
#[test]
fn held_dropped_unflushed_batches_unmap_and_free_everything() {
    let sim = SimPlatform::noncoherent(RAM);
    let mem = sim.memory();
    let dev = sim.noncoherent_device();
    let other = sim.noncoherent_device();
    let before = mem.allocated_bytes();
    let h = dev.alloc_pages::<Bidirectional, u8>(64).unwrap();
    {
        let b = dev
            .fixed_batch()
            .map_to_device(mem.alloc_slice_aligned::<u8>(64, 64).unwrap())
            .unwrap()
            .map_from_device(mem.alloc_slice_aligned::<u8>(128, 64).unwrap())
            .unwrap()
            .sync_for_device(h);
        drop_unflushed(b);
    }
    assert_eq!(
        dev.stats().unflushed(),
        3,
        "each item counted on its device"
    );
    {
        let mut b = dev.batch();
        b.map(mem.alloc_slice_aligned::<u8>(64, 64).unwrap())
            .unwrap();
        // SAFETY: the simulated device never runs.
        let foreign = unsafe {
            other
                .map_from_device(mem.alloc_slice_aligned::<u8>(64, 64).unwrap())
                .unwrap()
                .sync_for_cpu()
        };
        b.sync_for_device(foreign);
        drop_unflushed(b);
    }
    assert_eq!(dev.stats().unflushed(), 4);
    assert_eq!(other.stats().unflushed(), 1, "counted on the item's device");
    assert_eq!(mem.device_owned_bytes(), 0);
    assert_eq!(mem.allocated_bytes(), before);
    assert_eq!(dev.leaked() + other.leaked(), 0);
    assert_eq!(
        mem.cache().unwrap().pending(),
        0,
        "every issued clean completed"
    );

    let mut b = dev.batch();
    b.map_from_device(mem.alloc_slice_aligned::<u8>(64, 64).unwrap())
        .unwrap();
    std::mem::forget(b);
    assert_eq!(
        mem.device_owned_bytes(),
        0,
        "a forgotten batch granted nothing"
    );
}

/// Drops a batch holding items: in a debug build the drop panics (after
/// tearing the items down) with a message naming the way out; in a
/// release build it only counts.
fn drop_unflushed<T>(batch: T) {
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(batch)));
    if cfg!(debug_assertions) {
        let payload = dropped.expect_err("a dropped non-empty batch panics in debug builds");
        let text = payload
            .downcast_ref::<String>()
            .expect("a formatted message");
        assert!(text.contains("dropped without `flush()`"), "{text}");
        assert!(text.contains("with_batch"), "names the scoped form: {text}");
    } else {
        dropped.expect("release builds only count");
    }
}

/// Attack: drop unflushed batches whose completion barrier unwinds: a
/// `FixedBatch` of maps, and a dynamic `Batch` of `sync_for_cpu` items
/// (their invalidates queued). The items' maintenance is incomplete, so
/// none may be freed; when the queued work completes later it must land on
/// quarantined memory, not on a fresh buffer.
///
/// Held: every item drops as what it is (device-owned handles and
/// `PendingToCpu` quarantine), nothing is freed, and the late completion
/// hits no live buffer.
#[test]
fn held_dropped_batch_whose_completion_unwinds_quarantines() {
    let sim = SimPlatform::noncoherent(RAM);
    let mem = sim.memory();
    let (dev, armed) = panicky_direct(mem);
    let engine = sim.device(&dev);

    let allocated = mem.allocated_bytes();
    let b = dev
        .fixed_batch()
        .map_to_device(mem.alloc_slice_aligned::<u8>(64, 64).unwrap())
        .unwrap()
        .map_bidirectional(mem.alloc_slice_aligned::<u8>(64, 64).unwrap())
        .unwrap();
    let mapped = mem.allocated_bytes();
    armed.store(true, Ordering::SeqCst);
    assert!(catch_unwind(AssertUnwindSafe(|| drop(b))).is_err());
    assert_eq!(mem.allocated_bytes(), mapped, "nothing freed");
    assert_eq!(dev.leaked(), 2);
    assert!(mapped > allocated);

    let rx: Vec<_> = (0..3)
        .map(|_| {
            dev.map_from_device(mem.alloc_slice_aligned::<u8>(64, 64).unwrap())
                .unwrap()
        })
        .collect();
    for h in &rx {
        engine.fill(h.dma_addr(), 0x99, 64).unwrap();
    }
    let mut back = dev.batch();
    for h in rx {
        // SAFETY: the simulated fills returned.
        unsafe { back.sync_for_cpu(h) };
    }
    let held = mem.allocated_bytes();
    armed.store(true, Ordering::SeqCst);
    assert!(catch_unwind(AssertUnwindSafe(|| drop(back))).is_err());
    assert_eq!(mem.allocated_bytes(), held, "nothing freed");
    assert_eq!(dev.leaked(), 5);
    let mut fresh = mem.alloc_slice_aligned::<u8>(256, 64).unwrap();
    fresh.fill(0x11);
    let cache = mem.cache().unwrap();
    assert!(cache.pending() > 0);
    cache.complete();
    assert_eq!(
        &fresh[..],
        &[0x11; 256][..],
        "the late invalidates hit no live buffer"
    );
}

// ===========================================================================
// Ranged syncs on a device-owned handle.
// ===========================================================================

/// Attack: `write_range` with partial cache lines on the non-coherent
/// simulator, while the device owns the rest of the buffer. A range that
/// starts or ends inside a line must be refused (cleaning the line would
/// write the CPU's stale copy of the device's bytes back over them); the
/// one exception, a range ending at the mapping's end, must be safe because
/// the allocation owns the rest of its last line.
///
/// Held: misaligned ranges are refused (the handle comes back in the
/// error); the device's bytes in the other lines survive the accepted
/// writes and an eviction of every dirty line.
#[test]
fn held_write_range_partial_lines_lose_no_device_data() {
    let sim = SimPlatform::noncoherent(RAM);
    let mem = sim.memory();
    let dev = sim.noncoherent_device();
    let engine = sim.device(&dev);
    // 100 bytes: the mapping ends inside its second line.
    let mut ring = dev
        .alloc_pages::<Bidirectional, u8>(100)
        .unwrap()
        .sync_for_device();
    engine.fill(ring.dma_addr(), 0x11, 100).unwrap();
    for (off, len) in [(0, 10), (10, 54), (64, 30), (0, 101), (usize::MAX, 2)] {
        // SAFETY: each range is refused before anything happens.
        ring = unsafe { ring.write_range(off, &vec![0x22; len]) }
            .unwrap_err()
            .into_handle();
    }
    // The device goes on owning bytes 0..64 (and writes them again) while
    // the CPU writes the tail, which ends at the mapping's end.
    engine.fill(ring.dma_addr(), 0x33, 64).unwrap();
    // SAFETY: the device leaves 64..100 alone during the call.
    let ring = unsafe { ring.write_range(64, &[0x44; 36]) }.unwrap();
    assert_eq!(
        mem.evict_dirty(),
        0,
        "no dirty line left in device-owned memory"
    );
    let mut seen = [0u8; 100];
    engine.read(ring.dma_addr(), &mut seen).unwrap();
    assert_eq!(&seen[..64], &[0x33; 64][..]);
    assert_eq!(&seen[64..], &[0x44; 36][..]);
    // A partial read (inside a line) sees the device's data, and writes
    // nothing back.
    engine.fill(at(ring.dma_addr(), 10), 0x55, 4).unwrap();
    let mut part = [0u8; 4];
    // SAFETY: the device leaves 10..14 alone now.
    let ring = unsafe { ring.read_range(10, &mut part) }.unwrap();
    assert_eq!(part, [0x55; 4]);
    engine.read(ring.dma_addr(), &mut seen).unwrap();
    assert_eq!(&seen[..10], &[0x33; 10][..]);
    // SAFETY: the device is finished.
    let ring = unsafe { ring.sync_for_cpu() };
    assert_eq!(&ring.contents()[..10], &[0x33; 10][..]);
    assert_eq!(&ring.contents()[10..14], &[0x55; 4][..]);
    assert_eq!(&ring.contents()[64..], &[0x44; 36][..]);
}

/// Attack: two CPU threads use the ranged syncs of one device-owned
/// handle on the same bytes, on a coherent direct device (`write_range`)
/// and on a bounced mapping (`read_range`, whose sync for the CPU copies
/// the slot back into the buffer). Their `# Safety` sections speak only of
/// the *device*, which the caller keeps idle.
///
/// Was BROKEN at 3118c82, where both took `&self` and a device-owned
/// handle is `Sync`: two `write_range`s (or two bounced `read_range`s) on
/// two threads were a data race. Miri (both borrow models): "Data race
/// detected between (1) non-atomic write on thread `unnamed-2` and (2)
/// non-atomic write on thread `unnamed-3`" (in `write_range`'s
/// `copy_nonoverlapping`, and in `compose.rs`'s bounce `copy`); natively
/// 2 of 20 and 11 of 100 rounds came out torn.
///
/// Held now (fixed in 97c8516: the ranged syncs take the handle by value
/// and give it back): sharing `&ring` between threads no longer lets
/// either call them; the handle moves between threads instead, and Miri
/// sees no race.
#[test]
fn held_ranged_syncs_cannot_run_twice_at_once() {
    let sim = SimPlatform::new(RAM);
    let dev = sim.coherent_device();
    let mut ring = dev
        .map_bidirectional(sim.memory().alloc_slice::<u8>(256).unwrap())
        .unwrap();
    for byte in [0xaa, 0xbb] {
        ring = std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: the simulated device never runs.
                unsafe { ring.write_range(0, &[byte; 256]) }.unwrap()
            })
            .join()
            .unwrap()
        });
    }
    let mut out = [0u8; 256];
    // SAFETY: as above.
    let ring = unsafe { ring.read_range(0, &mut out) }.unwrap();
    assert_eq!(out, [0xbb; 256]);
    // SAFETY: the device never ran.
    drop(unsafe { ring.unmap() });

    // A bounced mapping: a 32-bit device, the buffer above 4 GiB.
    const BASE: u64 = (1 << 32) - 64 * 1024;
    let mem = SimMemory::with_base(PhysAddr::new(BASE), 128 * 1024);
    let pool = mem.swiotlb(16 * 1024, 1).unwrap();
    let _low = mem.alloc_slice::<u8>(48 * 1024).unwrap();
    let dev = Device::new(
        Composed::from_parts(
            mem.clone(),
            dmacap::backend::direct::Direct::identity(),
            CoherentCache,
            pool,
        ),
        DeviceConfig::new(),
    );
    let high = mem.alloc_slice::<u8>(256).unwrap();
    assert!(mem.phys_of_buffer(&high).as_u64() >= 1 << 32);
    let mut rx = dev.map_from_device(high).unwrap();
    assert_eq!(dev.stats().bounced(), 1);
    SimDevice::new(&dev, mem.clone())
        .fill(rx.dma_addr(), 0x7e, 256)
        .unwrap();
    for _ in 0..2 {
        rx = std::thread::scope(|s| {
            s.spawn(move || {
                let mut out = [0u8; 256];
                // SAFETY: the simulated device finished its fill.
                let rx = unsafe { rx.read_range(0, &mut out) }.unwrap();
                assert_eq!(out, [0x7e; 256]);
                rx
            })
            .join()
            .unwrap()
        });
    }
    // SAFETY: the device is idle.
    drop(unsafe { rx.unmap() });
}

/// Attack: the completion barrier of a `read_range` unwinds (a hook may
/// panic), leaving an invalidate queued on this thread.
///
/// Was BROKEN at 3118c82: `read_range` took `&self`, so the handle
/// survived the unwind, still device-owned and live; moved to another
/// thread (it is `Send`), synced back there, unmapped and written by the
/// CPU (`0x11`), the buffer was then hit by this thread's next barrier
/// completing the old invalidate: natively the CPU's bytes became memory's
/// old `0xd0`; under Miri the simulator's write landed under the live
/// `&[u8]` (Stacked Borrows: "trying to retag from <N> for SharedReadOnly
/// permission ... but that tag does not exist in the borrow stack ... was
/// later invalidated at offsets [0x0..0x40] by a write access"; Tree
/// Borrows: "reborrow through <N> ... is forbidden"). The same attack
/// showed that two threads could run `write_range` under each other's
/// `clean` (whose contract says no other thread writes the range): a
/// cache hook that waited for the second writer saw the range change.
///
/// Held now (fixed in 97c8516: the ranged syncs take the handle by
/// value): the unwinding barrier drops the handle as device-owned, which
/// quarantines the buffer; the late invalidate lands on quarantined memory
/// only.
#[test]
fn held_read_range_barrier_panic_quarantines_the_handle() {
    let sim = SimPlatform::noncoherent(RAM);
    let mem = sim.memory();
    let (dev, armed) = panicky_direct(mem);
    let engine = sim.device(&dev);
    let ring = dev
        .map_bidirectional(mem.alloc_slice_aligned::<u8>(128, 64).unwrap())
        .unwrap();
    engine.fill(ring.dma_addr(), 0xd0, 128).unwrap();
    let allocated = mem.allocated_bytes();
    armed.store(true, Ordering::SeqCst);
    let mut out = [0u8; 64];
    // SAFETY: the device finished (its fill returned) and is idle.
    let r = catch_unwind(AssertUnwindSafe(|| unsafe { ring.read_range(0, &mut out) }));
    assert!(r.is_err(), "the barrier unwound");
    assert_eq!(dev.leaked(), 1, "quarantined and counted");
    assert_eq!(mem.allocated_bytes(), allocated, "nothing freed");
    let cache = mem.cache().unwrap();
    assert!(cache.pending() > 0);
    let mut fresh = mem.alloc_slice_aligned::<u8>(128, 64).unwrap();
    fresh.fill(0x11);
    let view: &[u8] = &fresh;
    cache.complete();
    assert_eq!(
        view,
        &[0x11; 128][..],
        "the late invalidate hit no live buffer"
    );
}

// ===========================================================================
// HAL shapes.
// ===========================================================================

/// Attack: two devices behind their own IOMMU domains get the same IOVA
/// for their first mappings. Put both handles in one `ByDmaAddr` table
/// (the second insert must come back, not replace the first), take the
/// handle by address and unmap it: it must be unmapped on its own device,
/// whatever table it was found in. And `AnyMapped::into_direction` with
/// the wrong direction must give the handle back unchanged.
///
/// Held: the table refuses the duplicate and hands it back; each handle
/// carries its device, so its IOVA is freed in its own domain; a wrong
/// direction is an `Err(self)` and `contents_mut` of a `FromDevice`
/// handle is `None`.
#[test]
fn held_by_dma_addr_and_any_mapped_keep_devices_and_directions() {
    let sim = SimPlatform::new(RAM);
    let mem = sim.memory();
    let d1 = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
    let d2 = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
    let (f1, f2) = (
        d1.backend().translation().free_pages(),
        d2.backend().translation().free_pages(),
    );
    let h1 = d1
        .map_any(
            mem.alloc_slice_aligned::<u8>(64, PAGE).unwrap(),
            DmaDirection::FromDevice,
        )
        .unwrap();
    let h2 = d2
        .map_any(
            mem.alloc_slice_aligned::<u8>(64, PAGE).unwrap(),
            DmaDirection::Bidirectional,
        )
        .unwrap();
    assert_eq!(h1.dma_addr(), h2.dma_addr(), "same IOVA in two domains");
    let mut table = ByDmaAddr::new();
    let dma = table.insert(h1).unwrap();
    let h2 = table.insert(h2).expect_err("the duplicate comes back");
    assert_eq!(table.len(), 1);
    sim.device(&d2).write(h2.dma_addr(), &[2; 64]).unwrap();
    sim.device(&d1).write(dma, &[1; 64]).unwrap();

    // Wrong direction: the same handle comes back.
    let h2 = match h2.into_direction::<ToDevice>() {
        Ok(_) => panic!("a Bidirectional handle is not ToDevice"),
        Err(h) => h,
    };
    let h2 = match h2.into_direction::<FromDevice>() {
        Ok(_) => panic!("a Bidirectional handle is not FromDevice"),
        Err(h) => h,
    };
    let h2 = h2.into_direction::<Bidirectional>().unwrap();

    let h1 = table.take(dma).unwrap();
    assert!(table.take(dma).is_none());
    // SAFETY: the simulated writes returned.
    let mut h1 = unsafe { h1.sync_for_cpu() };
    assert!(
        h1.contents_mut().is_none(),
        "no CPU writes into a FromDevice buffer"
    );
    assert_eq!(h1.contents(), &[1; 64][..]);
    drop(h1.unmap());
    assert_eq!(d1.backend().translation().free_pages(), f1);
    assert!(
        d2.backend().translation().free_pages() < f2,
        "d2's mapping is untouched"
    );
    sim.device(&d2).write(h2.dma_addr(), &[3; 64]).unwrap();
    // SAFETY: the simulated write returned.
    let h2 = unsafe { h2.sync_for_cpu() };
    assert_eq!(h2.contents(), &[3; 64][..]);
    drop(h2);
    assert_eq!(d2.backend().translation().free_pages(), f2);
    assert_eq!(mem.allocated_bytes(), 0);
}

// ===========================================================================
// Address-width proofs.
// ===========================================================================

/// Attack: `Reach<W>` on a device with non-identity bus windows, where
/// "physical below `2^W`" is not "DMA address below the mask": a window
/// moving RAM up by 4 GiB (so every DMA address of a 32-bit zone needs 33
/// bits), and a window that covers only part of `[0, 2^32)`.
///
/// Held: `reach::<U32>` is refused on a 32-bit mask with the offset
/// window and on the partial window; with a 33-bit mask the offset window
/// gives a proof, and the zoned buffer maps where the device writes it.
#[test]
fn held_reach_with_non_identity_windows() {
    let sim = SimPlatform::new(RAM); // RAM at 2 GiB
    let up = DmaWindows::new(&[DmaWindow {
        cpu_start: PhysAddr::new(0),
        dma_start: DmaAddr::new(1 << 32),
        size: 1 << 32,
    }])
    .unwrap();
    let narrow = sim.coherent_device_with(DeviceConfig::new().dma_mask(DmaMask::bits(32)), up);
    assert!(matches!(
        narrow.reach::<U32>(),
        Err(AllocError::ZoneTooWide { .. })
    ));
    let partial = sim.coherent_device_with(
        DeviceConfig::new().dma_mask(DmaMask::bits(64)),
        DmaWindows::new(&[DmaWindow {
            cpu_start: PhysAddr::new(0x8000_0000),
            dma_start: DmaAddr::new(0),
            size: 1 << 31,
        }])
        .unwrap(),
    );
    assert!(partial.reach::<U32>().is_err());

    let wide = sim.coherent_device_with(DeviceConfig::new().dma_mask(DmaMask::bits(33)), up);
    let reach = wide.reach::<U32>().unwrap();
    let buf = wide.alloc_zoned::<U32, u8>(64).unwrap();
    let rx = reach.map::<FromDevice, _, _>(buf);
    assert!(rx.dma_addr().as_u64() >= 1 << 32);
    sim.device(&wide).write(rx.dma_addr(), &[5; 64]).unwrap();
    // SAFETY: the simulated write returned.
    let rx = unsafe { rx.sync_for_cpu() };
    assert_eq!(rx.contents(), &[5; 64][..]);
    // A narrower zone is also accepted (compile-time `Z <= W`).
    let small = wide.alloc_zoned::<dmacap::typenum::U31, u8>(1);
    assert!(small.is_err(), "RAM at 2 GiB has nothing below 2^31");
}

/// The cache-line granule a `Zoned` buffer's type carries.
fn zoned_granule<G: dmacap::typenum::Unsigned>(
    _: &dmacap::width::Zoned<U32, u8, SimMemory, G>,
) -> usize {
    G::USIZE
}

/// Attack: allocate a `Zoned` buffer through a *coherent* device (granule
/// 1: the allocation is rounded to nothing) and map it through the
/// `Reach` of a *non-coherent* device on the same RAM (granule 64):
/// `reach_nc.map::<FromDevice, _, _>(coherent.alloc_zoned::<U32, u8>(1)?)`.
/// `Reach::map` skips the cache-line check ("whole granules of its own").
///
/// Was BROKEN at 3118c82, where `Zoned<Z, T, P>` named only the platform
/// type: the one-byte non-coherent mapping shared its 64-byte line with
/// the next allocation of the RAM (mapping at 0x80000000, neighbour at
/// 0x80000001), the "cacheline overlap between mappings" the brief's
/// misuse table says is rejected (on hardware a dirty line of the
/// neighbour is written back over the device's byte at the edge
/// clean-and-invalidate; the simulated cache cannot show it, so the test
/// asserted the rule).
///
/// Held now (fixed in 97c8516: `Zoned` carries the allocating backend's
/// granule, and `Reach::map` takes only its own): the attack does not
/// compile. This test pins the granules the types carry, and that a
/// non-coherent zoned buffer owns its whole line.
#[test]
fn held_zoned_buffers_carry_their_granule() {
    let sim = SimPlatform::noncoherent(RAM);
    let mem = sim.memory();
    let coherent = sim.coherent_device(); // same RAM, granule 1
    let nc = sim.noncoherent_device();
    let zc = coherent.alloc_zoned::<U32, u8>(1).unwrap();
    let zn = nc.alloc_zoned::<U32, u8>(1).unwrap();
    assert_eq!(zoned_granule(&zc), 1);
    assert_eq!(zoned_granule(&zn), 64);
    drop(zc);
    let reach = nc.reach::<U32>().unwrap();
    let neighbour = mem.alloc_slice::<u8>(8).unwrap();
    let rx = reach.map::<FromDevice, _, _>(zn);
    let dma = rx.dma_addr().as_u64(); // identity windows: the physical address
    let other = mem.phys_of_buffer(&neighbour).as_u64();
    // SAFETY: the simulated device never ran.
    drop(unsafe { rx.unmap() });
    assert_ne!(
        dma / 64,
        other / 64,
        "no line shared with another allocation"
    );
}

// ===========================================================================
// Pages and never-bounce maps.
// ===========================================================================

/// Attack: `alloc_pages` for an untrusted device behind an IOMMU, with
/// other data allocated right after it: can the device (reading as a rogue
/// would, through its IOMMU) see anything but its own bytes and zeroes?
///
/// Held: the allocation fills its IOMMU page (zeroed padding, never
/// bounced), and the next page faults.
#[test]
fn held_untrusted_alloc_pages_reaches_no_neighbour() {
    let sim = SimPlatform::new(RAM);
    let mem = sim.memory();
    let dev = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new().trusted(false));
    let engine = sim.device(&dev);
    let mut tx = dev.alloc_pages::<ToDevice, u8>(100).unwrap();
    tx.contents_mut().fill(0x42);
    let mut secret = mem.alloc_slice::<u8>(64).unwrap();
    secret.fill(0x5e);
    let tx = tx.sync_for_device();
    assert_eq!(dev.stats().bounced(), 0);
    let mut page = vec![0xffu8; PAGE];
    // SAFETY: nothing writes the allocation's padding, and `secret` is
    // only read through a shared reference meanwhile.
    unsafe { engine.read_unchecked(tx.dma_addr(), &mut page) }.unwrap();
    assert!(page[..100].iter().all(|&b| b == 0x42));
    assert!(
        page[100..].iter().all(|&b| b == 0),
        "nothing but zeroes after it"
    );
    let mut next = [0u8; 1];
    // SAFETY: as above.
    let r = unsafe { engine.read_unchecked(at(tx.dma_addr(), PAGE), &mut next) };
    assert!(r.is_err(), "the next page is not mapped");
    assert!(secret.iter().all(|&b| b == 0x5e));
    // SAFETY: the simulated reads returned.
    drop(unsafe { tx.unmap() });
}

/// Attack: `map_require_unbounced` where the backend would bounce, for
/// each reason (a buffer sharing a cache line on a non-coherent device, a
/// sub-page buffer for an untrusted device behind an IOMMU): the error path
/// must leave the pool, the IOVA space and the RAM as they were and give
/// the buffer back with its contents.
///
/// Held.
#[test]
fn held_map_require_unbounced_refusal_changes_nothing() {
    let mem = SimMemory::noncoherent(PhysAddr::new(0x8000_0000), RAM);
    let pool: Swiotlb = mem.swiotlb(16 * 1024, 1).unwrap();
    let dev = Device::new(
        Composed::from_parts(
            mem.clone(),
            IommuDomain::new(SimIommu::new(), InvalidationMode::Strict),
            NonCoherent(mem.cache().unwrap()),
            pool,
        ),
        DeviceConfig::new().trusted(false),
    );
    let free_slots = dev.backend().bounce().free_slots();
    let free_iova = dev.backend().translation().free_pages();
    for (len, align) in [(100, 1), (64, 64)] {
        let mut b = mem.alloc_slice_aligned::<u8>(len, align).unwrap();
        b.fill(0x3c);
        let allocated = mem.allocated_bytes();
        let err = dev.map_require_unbounced::<ToDevice, _>(b).unwrap_err();
        assert!(
            matches!(err.kind(), MapErrorKind::WouldBounce { .. }),
            "{err}"
        );
        assert_eq!(dev.backend().bounce().free_slots(), free_slots);
        assert_eq!(dev.backend().translation().free_pages(), free_iova);
        assert_eq!(mem.allocated_bytes(), allocated);
        assert_eq!(mem.device_owned_bytes(), 0);
        let b = err.into_buffer();
        assert!(b.iter().all(|&x| x == 0x3c));
    }
    assert_eq!(mem.cache().unwrap().pending(), 0, "nothing issued");
}

/// Attack: unmap an `alloc_pages` buffer of a *coherent* device (100
/// bytes, allocation rounded to nothing) and map the `DmaPages` it gives
/// back on a non-coherent device through the ordinary `map` and
/// `map_unbounced`.
///
/// Held: the ordinary path checks byte buffers at map time, so both
/// refuse it (`SharesCacheLine`) and hand it back.
#[test]
fn held_pages_of_a_coherent_device_are_checked_on_a_noncoherent_one() {
    let sim = SimPlatform::noncoherent(RAM);
    let coherent = sim.coherent_device();
    let nc = sim.noncoherent_device();
    let pages = coherent
        .alloc_pages::<Bidirectional, u8>(100)
        .unwrap()
        .unmap();
    let err = nc.map_from_device(pages).unwrap_err();
    assert!(
        matches!(err.kind(), MapErrorKind::SharesCacheLine { .. }),
        "{err}"
    );
    let err = nc
        .map_unbounced::<FromDevice, _>(err.into_buffer())
        .unwrap_err();
    assert!(
        matches!(err.kind(), MapErrorKind::SharesCacheLine { .. }),
        "{err}"
    );
    drop(err.into_buffer());
    assert_eq!(sim.memory().allocated_bytes(), 0);
}

/// A device behind its own strict IOMMU domain, bouncing through a pool it
/// shares with other devices.
type SharedPoolDev =
    Device<Composed<SimMemory, IommuDomain<SimIommu>, CoherentCache, Arc<Swiotlb>>>;

fn shared_pool_device(mem: &SimMemory, pool: &Arc<Swiotlb>, trusted: bool) -> SharedPoolDev {
    Device::new(
        Composed::from_parts(
            mem.clone(),
            IommuDomain::new(SimIommu::new(), InvalidationMode::Strict),
            CoherentCache,
            pool.clone(),
        ),
        DeviceConfig::new().trusted(trusted),
    )
}

/// Attack (the unmap half of a batch, reached from the batch path): an
/// untrusted device behind a *strict* IOMMU bounces a sub-page buffer and
/// reads it (its IOTLB now caches the slot's page). The driver unmaps it in
/// a batch and, before the batch's flush, another device maps a secret
/// through the same pool. The brief: with an IOMMU the device "reaches
/// exactly the pages in its page table ... until the invalidation that
/// removes them has completed". If the slot went back to the pool when the
/// unmap was *issued*, the second mapping would get it and the first
/// device, reading through its stale IOTLB entry at its old address (as a
/// rogue device would), would see the other device's secret.
///
/// Held (since commit 09e0bd9, which landed during this review: the code
/// first read released the slot before the flush): a bounced unmap behind
/// an IOMMU completes its IOTLB invalidation before releasing the slot, so
/// the rogue read faults.
#[test]
fn held_bounce_slot_not_reused_before_the_iotlb_invalidation() {
    let sim = SimPlatform::new(RAM);
    let mem = sim.memory();
    let pool = Arc::new(mem.swiotlb(8 * 1024, 1).unwrap());
    let u = shared_pool_device(mem, &pool, false);
    let v = shared_pool_device(mem, &pool, false);
    let engine_u = sim.device(&u);

    let mut a = mem.alloc_slice::<u8>(100).unwrap();
    a.fill(0xa1);
    let tx = u.map_to_device(a).unwrap();
    assert_eq!(u.stats().bounced(), 1);
    let old = tx.dma_addr();
    let mut seen = [0u8; 16];
    engine_u.read(old, &mut seen).unwrap(); // fills U's IOTLB
    assert_eq!(seen, [0xa1; 16]);

    let mut unmaps = u.batch();
    // SAFETY: U's read returned: the device has finished with the buffer.
    unsafe { unmaps.unmap_device_owned(tx) };

    let mut secret = mem.alloc_slice::<u8>(100).unwrap();
    secret.fill(0x5e);
    let other = v.map_to_device(secret).unwrap();

    let mut rogue = [0u8; 16];
    // SAFETY: nothing references or writes the bytes read: they are a bounce
    // slot held by `other`, a device-owned mapping.
    let r = unsafe { engine_u.read_unchecked(old, &mut rogue) };
    let back = unmaps.flush();
    drop(back);
    // SAFETY: V never read.
    drop(unsafe { other.unmap() });
    assert!(
        r.is_err() || rogue != [0x5e; 16],
        "device U read device V's bounce data through its stale IOTLB entry: {rogue:x?}"
    );
}

/// Attack: a `Zoned` buffer from one simulated RAM mapped through the
/// `Reach` of a device on *another* RAM of the same platform type
/// (`Zoned<Z, T, P>` names the platform type, not the instance).
///
/// Held as far as the claims go: `Reach::map`, documented to panic "only
/// if the platform broke its `DmaAllocator` promise", panics here with no
/// broken promise (the other RAM has no physical address for it), but it
/// does so before anything is mapped, and the buffer frees itself to its
/// own RAM while unwinding: no UB, no leak. (The doc is wrong; a run-time
/// check that the platform instance is the device's, or an error return,
/// would make it right.)
#[test]
fn held_zoned_from_another_ram_panics_without_mapping_or_leaking() {
    let a = SimPlatform::new(RAM);
    let b = SimPlatform::new(RAM);
    let dev_a = a.coherent_device();
    let dev_b = b.coherent_device();
    let reach_b = dev_b.reach::<U32>().unwrap();
    let z = dev_a.alloc_zoned::<U32, u8>(64).unwrap();
    assert_eq!(a.memory().allocated_bytes(), 64);
    let r = catch_unwind(AssertUnwindSafe(|| reach_b.map::<ToDevice, _, _>(z)));
    assert!(r.is_err(), "refused, by a panic");
    assert_eq!(a.memory().allocated_bytes(), 0, "freed to its own RAM");
    assert_eq!(
        a.memory().device_owned_bytes() + b.memory().device_owned_bytes(),
        0
    );
}

/// Attack: `alloc_noncontiguous` for an untrusted device behind a *lazy*
/// IOMMU (whose unlinks leave the pages reachable until the flush queue
/// drains), and on a trusted one check what `free` does.
///
/// Held: the untrusted device is refused (`LazyIommuUntrusted`) with
/// every page given back. Note, not a test failure: for a trusted device
/// in lazy mode `NonContiguous::release` frees the pages right after
/// `unlink_and_free` queues the range, while `IommuDomain::link`'s
/// `# Safety` says the memory "must stay allocated" until "the flush queue
/// holding it has been flushed". The design accepts that window for trusted
/// devices (as Linux does), so the contract text of `link` overstates what
/// its one caller keeps.
#[test]
fn held_noncontiguous_on_a_lazy_iommu_refuses_untrusted_devices() {
    let sim = SimPlatform::new(RAM);
    let mem = sim.memory();
    let dev = sim.iommu_device(InvalidationMode::LAZY, DeviceConfig::new().trusted(false));
    let err = dev.alloc_noncontiguous::<FromDevice>(2 * PAGE).unwrap_err();
    assert_eq!(err, AllocError::Map(MapErrorKind::LazyIommuUntrusted));
    assert_eq!(mem.allocated_bytes(), 0);
    let c = dev.alloc_coherent::<[u8; 64]>().unwrap();
    assert!(matches!(
        c.share(),
        Err(AllocError::Map(MapErrorKind::LazyIommuUntrusted))
    ));
    assert_eq!(mem.allocated_bytes(), 0);
}

/// Attack: allocations for a direct device whose bus windows move RAM:
/// `Backend::phys_limit` is the DMA mask read as a *physical* limit, which
/// the windows make wrong in both directions. Here RAM at 2 GiB appears at
/// DMA address 0 and the mask is 16 bits: the device reaches the first
/// 64 KiB of RAM, but no physical address is below `0xffff`; and with RAM
/// moved *up* past a 32-bit mask, memory below the physical limit is out of
/// the device's reach.
///
/// Held as far as the claims go (every failure is clean: nothing mapped,
/// nothing lost). Functionally wrong: the first allocation fails with
/// `OutOfMemory` although the device could reach the memory, and the
/// second is allocated, then refused at `share` (`BeyondMask`). A
/// `phys_limit` that inverts the windows (the highest physical address
/// whose DMA image lies under the mask) would fix both.
#[test]
fn held_allocations_with_moving_windows_fail_cleanly() {
    let sim = SimPlatform::new(RAM); // RAM at 2 GiB
    let down = DmaWindows::new(&[DmaWindow {
        cpu_start: PhysAddr::new(0x8000_0000),
        dma_start: DmaAddr::new(0),
        size: RAM as u64,
    }])
    .unwrap();
    let dev = sim.coherent_device_with(DeviceConfig::new().dma_mask(DmaMask::bits(16)), down);
    assert!(matches!(
        dev.alloc_coherent::<[u8; 64]>(),
        Err(AllocError::OutOfMemory { .. })
    ));
    // The device does reach the start of RAM: an ordinary map works.
    let h = dev
        .map_to_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    assert_eq!(h.dma_addr(), DmaAddr::new(0));
    // SAFETY: the simulated device never ran.
    drop(unsafe { h.unmap() });

    let up = DmaWindows::new(&[DmaWindow {
        cpu_start: PhysAddr::new(0x8000_0000),
        dma_start: DmaAddr::new(0x1_8000_0000),
        size: RAM as u64,
    }])
    .unwrap();
    let dev = sim.coherent_device_with(DeviceConfig::new().dma_mask(DmaMask::bits(32)), up);
    let c = dev.alloc_coherent::<[u8; 64]>().unwrap();
    assert!(matches!(
        c.share(),
        Err(AllocError::Map(MapErrorKind::BeyondMask { .. }))
    ));
    assert!(matches!(
        dev.alloc_pages::<ToDevice, u8>(64),
        Err(AllocError::Map(MapErrorKind::BeyondMask { .. }))
    ));
    assert_eq!(sim.memory().allocated_bytes(), 0);
}

/// Attack (outside the part under review, found on the way: commit
/// 159666b's `IdentityBus`): a simulated device on an identity bus
/// accessing DMA address 0, which is not RAM.
///
/// Was BROKEN at 3118c82 (robustness, not soundness):
/// `IdentityBus::bus_to_phys` computed the window's remaining length as
/// `u64::MAX - dma + 1`, which overflows for `dma == 0`: debug builds
/// panicked ("attempt to add with overflow" at `direct.rs:226`) instead of
/// returning the `NotRam` fault, and a release build would get a run of 0
/// bytes, on which `SimDevice::route` loops forever.
///
/// Held now (fixed in 97c8516: the run saturates).
#[test]
fn held_identity_bus_device_access_at_address_zero_faults() {
    use dmacap::backend::direct::IdentityCoherent;
    let sim = SimPlatform::new(RAM);
    let dev = Device::new(
        IdentityCoherent::identity_bus(sim.memory().clone()),
        DeviceConfig::new(),
    );
    let engine = sim.device(&dev);
    let r = catch_unwind(AssertUnwindSafe(|| {
        let mut b = [0u8; 4];
        engine.read(DmaAddr::new(0), &mut b)
    }));
    assert!(
        matches!(r, Ok(Err(_))),
        "a device access at DMA address 0 must fault, not panic"
    );
}

/// The simulated cache, whose `clean` panics once when armed, *after*
/// issuing its operation (a hook may fail anywhere: here, after queueing
/// the write-back, as a real implementation that checks a status after
/// `dc cvac` would).
struct CleanThenPanic {
    inner: SimCache,
    armed: Arc<AtomicBool>,
}

// SAFETY: forwards to `SimCache`; an armed `clean` has issued the
// operation (forwarded with the caller's promises) before it unwinds.
unsafe impl CacheMaintenance for CleanThenPanic {
    type Granule = <SimCache as CacheMaintenance>::Granule;

    fn line_size(&self) -> usize {
        self.inner.line_size()
    }

    unsafe fn clean(&self, r: CacheRange) -> usize {
        // SAFETY: forwarded with the caller's promises.
        let n = unsafe { self.inner.clean(r) };
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("the clean hook failed after issuing (armed by the test)");
        }
        n
    }

    unsafe fn invalidate(&self, r: CacheRange) -> usize {
        // SAFETY: forwarded with the caller's promises.
        unsafe { self.inner.invalidate(r) }
    }

    fn complete(&self) {
        self.inner.complete();
    }
}

/// After a hook unwound with a clean of the CPU's `0x5a` data still queued
/// on this thread: another thread allocates `len` bytes (first fit, so the
/// memory just freed, if it was), maps them to receive, and the device
/// fills them with `0x77`; then this thread's next barrier runs; then the
/// other thread takes the buffer back. Returns what it reads.
fn late_clean_victim(sim: &SimPlatform, len: usize) -> u8 {
    let mem = sim.memory();
    let nc = sim.noncoherent_device();
    std::thread::scope(|s| {
        let (nc, sim) = (&nc, sim);
        let rx = s
            .spawn(move || {
                let buf = mem.alloc_slice_aligned::<u8>(len, 64).unwrap();
                let rx = nc.map_from_device(buf).unwrap();
                sim.device(nc).fill(rx.dma_addr(), 0x77, len).unwrap();
                rx
            })
            .join()
            .unwrap();
        mem.cache().unwrap().complete(); // this thread's next barrier
        s.spawn(move || {
            // SAFETY: the simulated fill returned.
            let rx = unsafe { rx.sync_for_cpu() };
            rx.contents()[0]
        })
        .join()
        .unwrap()
    })
}

/// Attack: the cache-maintenance hook's `clean` unwinds after issuing
/// its write-back, in `NonContiguous::sync_for_device` (after the fix to
/// the barrier case above, which turns the allocation `DevOwned` only
/// *after* the loop of cleans) and in `Mapped::sync_for_device` (whose
/// `issue_to_device` also turns the handle `DevOwned` only after the
/// backend's `sync_for_device` returns). The design says "handles on their
/// way to the device are `DevOwned` from the start"; the brief says no
/// buffer whose maintenance is incomplete may be freed.
///
/// BROKEN (at 330bb2c, after the fixes of 97c8516) for `NonContiguous`
/// here, and for `Mapped` in the next test: the CPU-owned value drops while
/// unwinding, which frees the memory with the clean still queued; the next
/// barrier on this thread writes the CPU's old `0x5a` over a receive buffer
/// that reused the memory and that the device had filled with `0x77`.
/// Natively (and under Miri): "NonContiguous: pages with a queued clean
/// were freed (true); the receive buffer that reused them read 0x5a, not
/// the device's 0x77". Fix:
/// turn the value `DevOwned` *before* the first maintenance call (for
/// `Mapped`: `self.into_state(DevOwned)` first, then
/// `backend().sync_for_device(..)` through the new handle; for
/// `NonContiguous`: `into_state::<DevOwned>()` before the loop).
#[test]
fn fixed_clean_hook_unwinding_in_noncontiguous_sync_for_device() {
    {
        let sim = SimPlatform::noncoherent(RAM);
        let mem = sim.memory();
        let armed = Arc::new(AtomicBool::new(false));
        let dev = Device::new(
            Composed::from_parts(
                mem.clone(),
                IommuDomain::new(SimIommu::new(), InvalidationMode::Strict),
                NonCoherent(CleanThenPanic {
                    inner: mem.cache().unwrap(),
                    armed: armed.clone(),
                }),
                NoBounce,
            ),
            DeviceConfig::new(),
        );
        let mut tx = dev.alloc_noncontiguous::<ToDevice>(2 * PAGE).unwrap();
        tx.segments_mut().for_each(|s| s.fill(0x5a));
        let allocated = mem.allocated_bytes();
        armed.store(true, Ordering::SeqCst);
        assert!(catch_unwind(AssertUnwindSafe(|| tx.sync_for_device())).is_err());
        let kept = mem.allocated_bytes() == allocated;
        let got = late_clean_victim(&sim, PAGE);
        assert!(
            kept && got == 0x77,
            "NonContiguous: pages with a queued clean were freed ({}); the receive buffer \
             that reused them read {got:#x}, not the device's 0x77",
            !kept
        );
    }
}

/// Attack: as above, in `Mapped::sync_for_device` (a CPU-owned
/// `Bidirectional` handle the CPU has filled with `0x5a`). See the previous
/// test for what is claimed and the fix.
///
/// BROKEN: `issue_to_device` runs the backend's `sync_for_device` on the
/// CPU-owned handle and turns it `DevOwned` only when that returns, so the
/// unwind drops it CPU-owned: unmapped, and the buffer freed with its
/// clean queued. Natively: "Mapped: a buffer with a queued clean was freed
/// (true); the receive buffer that reused it read 0x5a, not the device's
/// 0x77". (`Batch::sync_for_device` and `FixedBatch::sync_for_device` go
/// through the same `issue_to_device`.)
#[test]
fn fixed_clean_hook_unwinding_in_mapped_sync_for_device() {
    {
        let sim = SimPlatform::noncoherent(RAM);
        let mem = sim.memory();
        let armed = Arc::new(AtomicBool::new(false));
        let dev = Device::new(
            DirectNonCoherent::new(
                mem.clone(),
                CleanThenPanic {
                    inner: mem.cache().unwrap(),
                    armed: armed.clone(),
                },
            ),
            DeviceConfig::new(),
        );
        let h = dev
            .map_bidirectional(mem.alloc_slice_aligned::<u8>(PAGE, 64).unwrap())
            .unwrap();
        // SAFETY: the simulated device never ran.
        let mut h = unsafe { h.sync_for_cpu() };
        h.contents_mut().fill(0x5a);
        let allocated = mem.allocated_bytes();
        armed.store(true, Ordering::SeqCst);
        assert!(catch_unwind(AssertUnwindSafe(|| h.sync_for_device())).is_err());
        let kept = mem.allocated_bytes() == allocated;
        let got = late_clean_victim(&sim, PAGE);
        assert!(
            kept && got == 0x77,
            "Mapped: a buffer with a queued clean was freed ({}); the receive buffer that \
             reused it read {got:#x}, not the device's 0x77",
            !kept
        );
    }
}
