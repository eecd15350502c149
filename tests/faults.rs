//! Fault injection: every composition, wrapped so that a chosen call fails
//! (a translation's map, as if the IOVA space ran dry; a bounce slot; a
//! physical-address look-up; a platform allocation), runs one scenario of
//! maps, batches, scatter-gather lists and allocations once per call the
//! scenario makes, failing that call. Every failure must give the caller's
//! buffers back with their bytes intact and leave every free count (IOVA
//! pages, bounce slots, simulated RAM, device grants) exactly as it was
//! before the failing call; at the end of every run everything is back.
//!
//! Real exhaustion (a small IOVA aperture, a small bounce pool, RAM the
//! device cannot reach) is checked the same way at the end.

use std::sync::Arc;

use dmacap::backend::Backend;
use dmacap::backend::bounce::Swiotlb;
use dmacap::backend::compose::{
    BouncePolicy, Coherency, Coherent, Composed, NoBounce, NonCoherent, PhysJoin, Translation,
};
use dmacap::backend::direct::Direct;
use dmacap::backend::iommu::{InvalidationMode, IommuDomain};
use dmacap::buffer::CacheSafe;
use dmacap::context::DeviceContext;
use dmacap::sim::{
    BusTranslate, FaultPlan, FaultyBounce, FaultyPlatform, FaultyTranslation, SimBuffer, SimCache,
    SimIommu, SimMemory,
};
use dmacap::{
    AllocError, Bidirectional, DevOwned, Device, DeviceConfig, DmaAddr, DmaMask, FromDevice,
    MapErrorKind, Mapped, PhysAddr, ToDevice,
};

type Buf = SimBuffer<[u8]>;

// ---------------------------------------------------------------- pools

/// Free counts of a translation.
trait Iova {
    fn free(&self) -> u64 {
        0
    }
    fn settle(&self, _dev: &DeviceContext) {}
}
impl Iova for Direct {}
impl Iova for IommuDomain<SimIommu> {
    fn free(&self) -> u64 {
        self.free_pages()
    }
    fn settle(&self, dev: &DeviceContext) {
        self.flush_queue(dev);
    }
}
impl<T: Iova> Iova for FaultyTranslation<T> {
    fn free(&self) -> u64 {
        self.inner().free()
    }
    fn settle(&self, dev: &DeviceContext) {
        self.inner().settle(dev);
    }
}

/// Free counts of a bounce policy.
trait Slots {
    fn free(&self) -> usize {
        0
    }
}
impl Slots for NoBounce {}
impl Slots for Arc<Swiotlb> {
    fn free(&self) -> usize {
        self.free_slots()
    }
}
impl<Bo: Slots> Slots for FaultyBounce<Bo> {
    fn free(&self) -> usize {
        self.inner().free()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    iova: u64,
    slots: usize,
    ram: usize,
    granted: usize,
    leaked: usize,
}

type Faulty<T, K, Bo> =
    Composed<FaultyPlatform<SimMemory>, FaultyTranslation<T>, K, FaultyBounce<Bo>>;

/// The four plans of one run.
#[derive(Clone, Default)]
struct Plans {
    translate: FaultPlan,
    bounce: FaultPlan,
    lookup: FaultPlan,
    alloc: FaultPlan,
}

impl Plans {
    fn all(&self) -> [(&'static str, &FaultPlan); 4] {
        [
            ("translation map (IOVA)", &self.translate),
            ("bounce slot", &self.bounce),
            ("physical look-up", &self.lookup),
            ("platform allocation", &self.alloc),
        ]
    }
    fn failures(&self) -> usize {
        self.all().iter().map(|(_, p)| p.failures()).sum()
    }
}

struct Rig<T, K, Bo>
where
    Faulty<T, K, Bo>: Backend,
{
    mem: SimMemory,
    dev: Device<Faulty<T, K, Bo>>,
}

impl<T, K, Bo> Rig<T, K, Bo>
where
    T: Translation + Iova,
    K: Coherency,
    Bo: BouncePolicy + Slots,
    K::Phys: PhysJoin<Bo::Phys>,
    Faulty<T, K, Bo>: Backend<Platform = FaultyPlatform<SimMemory>> + BusTranslate,
    [u8]: CacheSafe<<Faulty<T, K, Bo> as Backend>::Granule>,
{
    fn new(mem: SimMemory, t: T, k: K, bo: Bo, cfg: DeviceConfig, plans: &Plans) -> Self {
        let platform = FaultyPlatform::new(mem.clone(), plans.lookup.clone(), plans.alloc.clone());
        let backend = Composed::from_parts(
            platform,
            FaultyTranslation::new(t, plans.translate.clone()),
            k,
            FaultyBounce::new(bo, plans.bounce.clone()),
        );
        Self {
            dev: Device::new(backend, cfg),
            mem,
        }
    }

    /// The free counts, after completing deferred work (a lazy IOMMU's
    /// flush queue holds unmapped IOVAs until its flush).
    fn counts(&self) -> Counts {
        self.dev.backend().translation().settle(self.dev.context());
        Counts {
            iova: self.dev.backend().translation().free(),
            slots: self.dev.backend().bounce().free(),
            ram: self.mem.allocated_bytes(),
            granted: self.mem.device_owned_bytes(),
            leaked: self.dev.leaked(),
        }
    }

    fn buf(&self, len: usize, seed: u8) -> (Buf, Vec<u8>) {
        let mut b = self.mem.alloc_slice_aligned::<u8>(len, 64).unwrap();
        for (i, x) in b.iter_mut().enumerate() {
            *x = seed.wrapping_add(i as u8).wrapping_mul(7);
        }
        let v = b.to_vec();
        (b, v)
    }
}

/// Runs the scenario once. Every failure is checked where it happens;
/// returns how many steps failed.
fn scenario<T, K, Bo>(rig: &Rig<T, K, Bo>, low_full: bool) -> usize
where
    T: Translation + Iova,
    K: Coherency,
    Bo: BouncePolicy + Slots,
    K::Phys: PhysJoin<Bo::Phys>,
    Faulty<T, K, Bo>: Backend<Platform = FaultyPlatform<SimMemory>> + BusTranslate,
    [u8]: CacheSafe<<Faulty<T, K, Bo> as Backend>::Granule>,
{
    let dev = &rig.dev;
    let failed = std::cell::Cell::new(0);
    let mut unmap_at_end: Vec<Mapped<'_, Bidirectional, DevOwned, Buf, _>> = Vec::new();

    // A failing step must leave the counts as they were before it, and
    // give back exactly the bytes it was given.
    let refused = |what: &str, before: Counts, got: &[u8], orig: &[u8]| {
        assert_eq!(got, orig, "{what}: the buffer came back changed");
        assert_eq!(rig.counts(), before, "{what}: a free count changed");
        failed.set(failed.get() + 1);
    };

    // Single maps in every direction (one of them kept to the end).
    macro_rules! single {
        ($d:ty, $len:expr) => {{
            let (b, orig) = rig.buf($len, ($len % 251) as u8);
            let before = rig.counts();
            match dev.map::<$d, _>(b) {
                Ok(h) => {
                    // SAFETY: no device was started.
                    let back = unsafe { h.unmap() };
                    assert_eq!(&back[..], &orig[..]);
                }
                Err(e) => refused(
                    concat!("map ", stringify!($d)),
                    before,
                    &e.into_buffer(),
                    &orig,
                ),
            }
        }};
    }
    single!(ToDevice, 192);
    single!(FromDevice, 64);
    single!(Bidirectional, if cfg!(miri) { 1024 } else { 4096 });
    {
        let (b, orig) = rig.buf(128, 9);
        let before = rig.counts();
        match dev.map::<Bidirectional, _>(b) {
            Ok(h) => unmap_at_end.push(h),
            Err(e) => refused("map kept", before, &e.into_buffer(), &orig),
        }
    }

    // A batch of three: a refused map leaves the batch, and the rest, as
    // they were.
    {
        let mut batch = dev.batch::<Mapped<'_, FromDevice, DevOwned, Buf, _>>();
        for k in 0..3 {
            let (b, orig) = rig.buf(64 * (k + 1), k as u8);
            let before = rig.counts();
            if let Err(e) = batch.map(b) {
                refused("batch map", before, &e.into_buffer(), &orig);
            }
        }
        let handles = batch.flush();
        let mut unmaps = dev.batch();
        for h in handles {
            // SAFETY: no device was started.
            unsafe { unmaps.unmap_device_owned(h) };
        }
        drop(unmaps.flush());
    }

    // A fixed batch: a refused second map drops the batch, which unmaps
    // and frees the first; the refused buffer comes back.
    {
        let base = rig.counts();
        let (a, oa) = rig.buf(64, 1);
        let (b, ob) = rig.buf(128, 2);
        let before = rig.counts();
        match dev.fixed_batch().map_to_device(a) {
            Err(e) => {
                refused("fixed batch, first", before, &e.into_buffer(), &oa);
                drop(b);
            }
            Ok(batch) => match batch.map_from_device(b) {
                Err(e) => {
                    let back = e.into_buffer();
                    assert_eq!(&back[..], &ob[..], "fixed batch, second: bytes");
                    drop(back);
                    assert_eq!(rig.counts(), base, "fixed batch, second: counts");
                    failed.set(failed.get() + 1);
                }
                Ok(batch) => {
                    let (t, r) = batch.flush();
                    // SAFETY: no device was started.
                    let (_t, _r) = unsafe {
                        dev.fixed_batch()
                            .unmap_device_owned(t)
                            .unmap_device_owned(r)
                    }
                    .flush();
                }
            },
        }
    }

    // A scatter-gather list: a refused entry gives back every buffer.
    {
        let mut bufs = Vec::new();
        let mut orig = Vec::new();
        for k in 0..3 {
            let (b, o) = rig.buf(64 << k, 30 + k as u8);
            bufs.push(b);
            orig.push(o);
        }
        let before = rig.counts();
        match dev.map_sg::<ToDevice, _, _>(bufs) {
            Ok(list) => {
                // SAFETY: no device was started.
                drop(unsafe { list.unmap() });
            }
            Err(e) => {
                let back = e.into_buffers();
                let bytes: Vec<u8> = back.iter().flat_map(|b| b.to_vec()).collect();
                refused("sg map", before, &bytes, &orig.concat());
            }
        }
    }

    // Allocations: pages, and coherent memory (which may fail when
    // allocated or when shared).
    {
        let before = rig.counts();
        match dev.alloc_pages::<Bidirectional, u32>(100) {
            Ok(h) => drop(h),
            Err(AllocError::OutOfMemory { .. }) if low_full => {}
            Err(_) => refused("alloc_pages", before, &[], &[]),
        }
        let before = rig.counts();
        match dev.alloc_coherent_slice::<u64>(40) {
            Err(AllocError::OutOfMemory { .. }) if low_full => {}
            Err(_) => refused("alloc_coherent", before, &[], &[]),
            Ok(mut c) => {
                c[0] = 5;
                match c.share() {
                    // SAFETY: no device was started.
                    Ok(c) => unsafe { c.free() },
                    Err(_) => refused("share", before, &[], &[]),
                }
            }
        }
    }

    for h in unmap_at_end {
        // SAFETY: no device was started.
        drop(unsafe { h.unmap() });
    }
    failed.get()
}

/// Runs the scenario with nothing failing (to count the calls of each
/// kind), then once per call, failing it. Under Miri, only the last call
/// of kind `miri_kind` fails (each kind is chosen by some composition).
fn exhaust<T, K, Bo>(name: &str, miri_kind: usize, make: impl Fn(&Plans) -> (Rig<T, K, Bo>, bool))
where
    T: Translation + Iova,
    K: Coherency,
    Bo: BouncePolicy + Slots,
    K::Phys: PhysJoin<Bo::Phys>,
    Faulty<T, K, Bo>: Backend<Platform = FaultyPlatform<SimMemory>> + BusTranslate,
    [u8]: CacheSafe<<Faulty<T, K, Bo> as Backend>::Granule>,
{
    let plans = Plans::default();
    let (rig, low_full) = make(&plans);
    let start = rig.counts();
    assert_eq!(
        scenario(&rig, low_full),
        0,
        "{name}: a step failed with no fault"
    );
    finish(name, &rig, start);
    let calls: Vec<usize> = plans.all().iter().map(|(_, p)| p.calls()).collect();
    let mut runs = 0;
    for (kind, &n) in calls.iter().enumerate() {
        let chosen: Vec<usize> = if cfg!(miri) {
            if kind == miri_kind {
                n.checked_sub(1).into_iter().collect()
            } else {
                Vec::new()
            }
        } else {
            (0..n).collect()
        };
        for i in chosen {
            let plans = Plans::default();
            let (label, plan) = plans.all()[kind];
            plan.arm(i);
            let (rig, low_full) = make(&plans);
            let start = rig.counts();
            let failed = scenario(&rig, low_full);
            assert_eq!(
                plans.failures(),
                1,
                "{name}: {label} call {i} of {n} was not made"
            );
            assert!(
                failed <= 1,
                "{name}: {label} call {i}: {failed} steps failed for one fault"
            );
            finish(&format!("{name}: {label} call {i}"), &rig, start);
            runs += 1;
        }
    }
    eprintln!(
        "{name}: calls {calls:?} (translation, bounce, look-up, allocation), {runs} faulty runs"
    );
}

/// Everything is back.
fn finish<T, K, Bo>(name: &str, rig: &Rig<T, K, Bo>, start: Counts)
where
    T: Translation + Iova,
    K: Coherency,
    Bo: BouncePolicy + Slots,
    K::Phys: PhysJoin<Bo::Phys>,
    Faulty<T, K, Bo>: Backend<Platform = FaultyPlatform<SimMemory>> + BusTranslate,
    [u8]: CacheSafe<<Faulty<T, K, Bo> as Backend>::Granule>,
{
    rig.dev.backend().translation().settle(rig.dev.context());
    assert_eq!(rig.counts(), start, "{name}: not everything came back");
}

// ---------------------------------------------------------------- compositions

/// RAM below 4 GiB: the bounce pool and a filler (less under Miri).
const LOW: u64 = if cfg!(miri) { 96 << 10 } else { 256 << 10 };
const LOW_BASE: u64 = 0x1_0000_0000 - LOW;
/// Bounce pool bytes.
const POOL: usize = if cfg!(miri) { 64 << 10 } else { 128 << 10 };

/// `LOW` below 4 GiB, the rest above.
const RAM: usize = if cfg!(miri) { 192 << 10 } else { 1 << 20 };

fn ram(noncoherent: bool) -> SimMemory {
    let base = PhysAddr::new(LOW_BASE);
    if noncoherent {
        SimMemory::noncoherent(base, RAM)
    } else {
        SimMemory::with_base(base, RAM)
    }
}

fn pool(mem: &SimMemory) -> Arc<Swiotlb> {
    Arc::new(mem.swiotlb(POOL, 2).unwrap())
}

fn fill_low(mem: &SimMemory) {
    let free_below = (0x1_0000_0000u64 - LOW_BASE) as usize - mem.allocated_bytes();
    std::mem::forget(mem.alloc_slice::<u8>(free_below).unwrap());
}

fn nc(mem: &SimMemory) -> NonCoherent<SimCache> {
    NonCoherent(mem.cache().unwrap())
}

fn strict() -> IommuDomain<SimIommu> {
    IommuDomain::new(SimIommu::new(), InvalidationMode::Strict)
}

fn lazy() -> IommuDomain<SimIommu> {
    IommuDomain::new(SimIommu::new(), InvalidationMode::LAZY)
}

fn wide() -> DeviceConfig {
    DeviceConfig::new().dma_mask(DmaMask::bits(64))
}

#[test]
fn direct_coherent() {
    exhaust("direct/coherent", 2, |p| {
        (
            Rig::new(
                ram(false),
                Direct::identity(),
                Coherent,
                NoBounce,
                wide(),
                p,
            ),
            false,
        )
    });
}

#[test]
fn direct_noncoherent() {
    exhaust("direct/noncoherent", 3, |p| {
        let mem = ram(true);
        let k = nc(&mem);
        (
            Rig::new(mem, Direct::identity(), k, NoBounce, wide(), p),
            false,
        )
    });
}

#[test]
fn direct_bounce_all() {
    for noncoherent in [false, true] {
        let name = format!("direct/swiotlb (32-bit mask), noncoherent {noncoherent}");
        let cfg = DeviceConfig::new().dma_mask(DmaMask::bits(32));
        if noncoherent {
            exhaust(&name, 1, |p| {
                let mem = ram(true);
                let pool = pool(&mem);
                fill_low(&mem);
                let k = nc(&mem);
                (Rig::new(mem, Direct::identity(), k, pool, cfg, p), true)
            });
        } else {
            exhaust(&name, 0, |p| {
                let mem = ram(false);
                let pool = pool(&mem);
                fill_low(&mem);
                (
                    Rig::new(mem, Direct::identity(), Coherent, pool, cfg, p),
                    true,
                )
            });
        }
    }
}

#[test]
fn iommu_strict_and_lazy() {
    exhaust("iommu strict/coherent", 0, |p| {
        (
            Rig::new(
                ram(false),
                strict(),
                Coherent,
                NoBounce,
                DeviceConfig::new(),
                p,
            ),
            false,
        )
    });
    exhaust("iommu strict/noncoherent", 2, |p| {
        let mem = ram(true);
        let k = nc(&mem);
        (
            Rig::new(mem, strict(), k, NoBounce, DeviceConfig::new(), p),
            false,
        )
    });
    exhaust("iommu lazy/coherent", 0, |p| {
        (
            Rig::new(
                ram(false),
                lazy(),
                Coherent,
                NoBounce,
                DeviceConfig::new(),
                p,
            ),
            false,
        )
    });
}

#[test]
fn iommu_bounce_untrusted() {
    exhaust("iommu strict/coherent/swiotlb untrusted", 1, |p| {
        let mem = ram(false);
        let pool = pool(&mem);
        (
            Rig::new(
                mem,
                strict(),
                Coherent,
                pool,
                DeviceConfig::new().trusted(false),
                p,
            ),
            false,
        )
    });
    exhaust("iommu strict/noncoherent/swiotlb untrusted", 0, |p| {
        let mem = ram(true);
        let pool = pool(&mem);
        let k = nc(&mem);
        (
            Rig::new(
                mem,
                strict(),
                k,
                pool,
                DeviceConfig::new().trusted(false),
                p,
            ),
            false,
        )
    });
}

// ---------------------------------------------------------------- real exhaustion

/// Maps until the IOVA aperture runs dry: the refused buffer comes back
/// intact, the pages taken so far are exactly those of the live mappings,
/// and everything returns after the unmaps.
#[test]
fn a_small_iova_aperture_runs_dry_cleanly() {
    let mem = ram(false);
    let domain = IommuDomain::with_aperture(
        SimIommu::new(),
        InvalidationMode::Strict,
        DmaAddr::new(0x10_0000),
        8 * 4096,
    );
    let dev = Device::new(
        Composed::from_parts(mem.clone(), domain, Coherent, NoBounce),
        DeviceConfig::new(),
    );
    let iova = || dev.backend().translation().free_pages();
    let (ram0, iova0) = (mem.allocated_bytes(), iova());
    let mut live = Vec::new();
    let refused = loop {
        let mut b = mem.alloc_slice_aligned::<u8>(4096, 4096).unwrap();
        b.fill(live.len() as u8 + 1);
        let before = iova();
        match dev.map_to_device(b) {
            Ok(h) => live.push(h),
            Err(e) => {
                assert!(
                    matches!(e.kind(), MapErrorKind::IovaExhausted { .. }),
                    "{e}"
                );
                assert_eq!(iova(), before);
                break e.into_buffer();
            }
        }
    };
    assert!(refused.iter().all(|&x| x == live.len() as u8 + 1));
    assert_eq!(live.len(), 8);
    drop(refused);
    for h in live {
        // SAFETY: no device was started.
        drop(unsafe { h.unmap() });
    }
    assert_eq!((mem.allocated_bytes(), iova()), (ram0, iova0));
}

/// Bounces until the pool runs dry, behind an IOMMU for an untrusted
/// device: the refused map holds no IOVA and no slot.
#[test]
fn a_small_bounce_pool_runs_dry_cleanly() {
    let mem = ram(true);
    let pool = Arc::new(mem.swiotlb(16 * 1024, 1).unwrap());
    let dev = Device::new(
        Composed::from_parts(mem.clone(), strict(), nc(&mem), pool.clone()),
        DeviceConfig::new().trusted(false),
    );
    let iova = || dev.backend().translation().free_pages();
    let (ram0, iova0) = (mem.allocated_bytes(), iova());
    let mut live = Vec::new();
    let refused = loop {
        let mut b = mem.alloc_slice_aligned::<u8>(100, 64).unwrap();
        b.fill(0x5a);
        let before = (iova(), pool.free_slots());
        match dev.map_bidirectional(b) {
            Ok(h) => live.push(h),
            Err(e) => {
                assert!(
                    matches!(e.kind(), MapErrorKind::BouncePoolExhausted { .. }),
                    "{e}"
                );
                assert_eq!((iova(), pool.free_slots()), before);
                break e.into_buffer();
            }
        }
    };
    assert!(refused.iter().all(|&x| x == 0x5a));
    assert_eq!(live.len(), 4, "two slots of 2 KiB per padded 4 KiB page");
    drop(refused);
    for h in live {
        // SAFETY: no device was started.
        drop(unsafe { h.unmap() });
    }
    assert_eq!(pool.free_slots(), pool.total_slots());
    assert_eq!((mem.allocated_bytes(), iova()), (ram0, iova0));
}

/// `alloc_noncontiguous` takes pages one by one: failing the allocation or
/// the look-up of any of them gives back every page taken so far.
#[test]
fn a_noncontiguous_allocation_failing_at_any_page_gives_every_page_back() {
    for kind in ["allocation", "look-up"] {
        for n in 0..4 {
            let mem = ram(false);
            let (lookups, allocs) = (FaultPlan::never(), FaultPlan::never());
            if kind == "allocation" {
                allocs.arm(n);
            } else {
                lookups.arm(n);
            }
            let platform = FaultyPlatform::new(mem.clone(), lookups.clone(), allocs.clone());
            let dev = Device::new(
                Composed::from_parts(platform, strict(), Coherent, NoBounce),
                DeviceConfig::new(),
            );
            let (ram0, iova0) = (
                mem.allocated_bytes(),
                dev.backend().translation().free_pages(),
            );
            let r = dev.alloc_noncontiguous::<FromDevice>(4 * 4096);
            assert!(r.is_err(), "{kind} {n}: the fault was not hit");
            assert_eq!(lookups.failures() + allocs.failures(), 1);
            assert_eq!(
                (
                    mem.allocated_bytes(),
                    dev.backend().translation().free_pages()
                ),
                (ram0, iova0),
                "{kind} {n}"
            );
            // With the fault spent, the same allocation succeeds.
            let pages = dev.alloc_noncontiguous::<FromDevice>(4 * 4096).unwrap();
            pages.free();
            assert_eq!(mem.allocated_bytes(), ram0);
        }
    }
}
