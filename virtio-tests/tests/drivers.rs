//! `virtio-drivers`' real `VirtIOBlk` and `VirtIONet` (and `VirtIONetRaw`)
//! on dmacap's `Hal` adapter, over every backend combination, against the
//! fake devices of this package, which move data only through the
//! simulated DMA engine.
//!
//! | combination | non-blocking API, buffers in simulated RAM | blocking API, buffers on the stack and heap |
//! |---|---|---|
//! | direct coherent | served | refused: the device cannot reach host memory |
//! | direct over the simulated non-coherent cache | served (whole-line buffers) | refused |
//! | strict IOMMU | served; `unshare` walks no page table | refused |
//! | lazy IOMMU | served; the device's timer hook drives the flush queue, the stale window closes | refused |
//! | bounce (swiotlb, RAM above the 32-bit mask) | served, every buffer bounced | served through bounce slots |
//! | untrusted device behind IOMMU + bounce | served, every sub-page buffer bounced | served through bounce slots |
//!
//! At the end of each: nothing leaked or still shared, every byte of
//! simulated RAM, every bounce slot and every IOVA back.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::Arc;

use dmacap::backend::Backend;
use dmacap::backend::bounce::Swiotlb;
use dmacap::backend::compose::{Coherent as CoherentBus, Composed, NoBounce};
use dmacap::backend::direct::{Direct, DirectCoherent};
use dmacap::backend::iommu::{InvalidationMode, IommuDomain};
use dmacap::backend::noncoherent::DirectNonCoherent;
use dmacap::platform::DmaAllocator;
use dmacap::sim::{BusTranslate, SimBuffer, SimCache, SimDevice, SimFault, SimIommu, SimMemory};
use dmacap::virtio::{HalOptions, VirtioDevice};
use dmacap::{Device, DeviceConfig, PhysAddr};
use dmacap_virtio_tests::{F_INDIRECT_DESC, FakeDevice, FakeTransport, NET_HDR, SECTOR};
use virtio_drivers::Hal;
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk};
use virtio_drivers::device::net::{TxBuffer, VirtIONet, VirtIONetRaw};
use zerocopy::FromBytes;

/// Blocks written and read back per combination (fewer under Miri, whose
/// run covers every combination all the same).
const BLOCKS: usize = if cfg!(miri) { 4 } else { 64 };
/// Requests in flight at once in the non-blocking runs.
const IN_FLIGHT: usize = if cfg!(miri) { 2 } else { 4 };
/// Frames sent and received per combination.
const FRAMES: usize = if cfg!(miri) { 2 } else { 16 };
/// Receive buffers posted by the non-blocking net run.
const RX_BUFS: usize = if cfg!(miri) { 2 } else { 8 };
/// Receive buffer length (`virtio-drivers` wants at least 1526 bytes).
const RX_LEN: usize = 1536;
/// Sectors on the fake disk.
const DISK_SECTORS: usize = 128;

type Dc = DirectCoherent<SimMemory>;
type Dnc = DirectNonCoherent<SimMemory, SimCache>;
type Io = Composed<SimMemory, IommuDomain<SimIommu>, CoherentBus, NoBounce>;
type Bounce = Composed<SimMemory, Direct, CoherentBus, Arc<Swiotlb>>;
type IoBounce = Composed<SimMemory, IommuDomain<SimIommu>, CoherentBus, Arc<Swiotlb>>;

dmacap::virtio_hal!(BlkDirect, Dc);
dmacap::virtio_hal!(BlkNonCoherent, Dnc);
dmacap::virtio_hal!(BlkStrict, Io);
dmacap::virtio_hal!(BlkLazy, Io);
dmacap::virtio_hal!(BlkBounce, Bounce);
dmacap::virtio_hal!(BlkUntrusted, IoBounce);
dmacap::virtio_hal!(NetDirect, Dc);
dmacap::virtio_hal!(NetNonCoherent, Dnc);
dmacap::virtio_hal!(NetStrict, Io);
dmacap::virtio_hal!(NetLazy, Io);
dmacap::virtio_hal!(NetBounce, Bounce);
dmacap::virtio_hal!(NetUntrusted, IoBounce);
dmacap::virtio_hal!(Unshared, Io);

// ---------------------------------------------------------------------------
// Rigs: one simulated machine and device per combination.

/// A device of one combination, its RAM, its pool, and how much RAM was in
/// use before the driver came (the pool, the filler).
struct Rig<B: Backend + BusTranslate + Sync + 'static>
where
    B::Platform: DmaAllocator,
{
    mem: SimMemory,
    dev: &'static Device<B>,
    pool: Option<Arc<Swiotlb>>,
    /// Expected to fail a host-memory share with this text, or `None` if
    /// the backend bounces host memory.
    refuses_host: Option<&'static str>,
}

impl<B: Backend + BusTranslate + Sync + 'static> Rig<B>
where
    B::Platform: DmaAllocator,
{
    fn engine(&self) -> SimDevice<'static, B> {
        SimDevice::new(self.dev, self.mem.clone())
    }

    /// Checks that everything came back: no leak, no live share or
    /// allocation, RAM as before the driver, every slot free.
    fn all_back(&self, hal: &VirtioDevice<B>, ram_before: usize, name: &str) {
        assert_eq!(hal.live_shares(), 0, "{name}: buffers still shared");
        assert_eq!(hal.live_allocations(), 0, "{name}: allocations alive");
        assert_eq!(hal.shares(), hal.unshares(), "{name}: share/unshare");
        assert_eq!(self.dev.leaked(), 0, "{name}: quarantined");
        assert_eq!(self.mem.device_owned_bytes(), 0, "{name}: still granted");
        assert_eq!(self.mem.allocated_bytes(), ram_before, "{name}: RAM leaked");
        if let Some(p) = &self.pool {
            assert_eq!(p.free_slots(), p.total_slots(), "{name}: bounce slots");
        }
    }
}

fn leak<B: Backend>(b: B, cfg: DeviceConfig) -> &'static Device<B> {
    Box::leak(Box::new(Device::new(b, cfg)))
}

fn ram(noncoherent: bool) -> SimMemory {
    let base = PhysAddr::new(0x8000_0000);
    let mem = if noncoherent {
        SimMemory::noncoherent(base, 2 << 20)
    } else {
        SimMemory::with_base(base, 2 << 20)
    };
    mem.accept_host_memory();
    mem
}

fn rig_direct() -> Rig<Dc> {
    let mem = ram(false);
    let dev = leak(Dc::new(mem.clone()), DeviceConfig::new());
    Rig {
        mem,
        dev,
        pool: None,
        refuses_host: Some("beyond the device's mask"),
    }
}

fn rig_noncoherent() -> Rig<Dnc> {
    let mem = ram(true);
    let dev = leak(
        Dnc::new(mem.clone(), mem.cache().unwrap()),
        DeviceConfig::new(),
    );
    Rig {
        mem,
        dev,
        pool: None,
        refuses_host: Some("beyond the device's mask"),
    }
}

fn rig_iommu(mode: InvalidationMode) -> Rig<Io> {
    let mem = ram(false);
    let domain = IommuDomain::new(SimIommu::new(), mode);
    let dev = leak(
        Composed::from_parts(mem.clone(), domain, CoherentBus, NoBounce),
        DeviceConfig::new(),
    );
    Rig {
        mem,
        dev,
        pool: None,
        refuses_host: Some("no DMA window covers"),
    }
}

/// RAM straddling 4 GiB; the pool (and the rings, allocated next) below
/// the device's 32-bit mask, every later buffer above it: all bounce.
fn rig_bounce() -> Rig<Bounce> {
    let mem = SimMemory::with_base(PhysAddr::new(0xfff0_0000), 4 << 20);
    mem.accept_host_memory();
    let pool = Arc::new(mem.swiotlb(256 * 1024, 1).unwrap());
    let dev = leak(
        Composed::from_parts(mem.clone(), Direct::identity(), CoherentBus, pool.clone()),
        DeviceConfig::new(),
    );
    Rig {
        mem,
        dev,
        pool: Some(pool),
        refuses_host: None,
    }
}

/// After the driver allocated its rings: fills what is left below 4 GiB so
/// that the test's buffers land above the mask. Returns the bytes taken.
fn fill_below_4g(mem: &SimMemory) -> usize {
    let below = (0x1_0000_0000u64 - mem.phys_base().as_u64()) as usize;
    let free_below = below - mem.allocated_bytes();
    if free_below > 0 {
        std::mem::forget(mem.alloc_slice::<u8>(free_below).unwrap());
    }
    free_below
}

fn rig_untrusted() -> Rig<IoBounce> {
    let mem = ram(false);
    let pool = Arc::new(mem.swiotlb(256 * 1024, 1).unwrap());
    let domain = IommuDomain::new(SimIommu::new(), InvalidationMode::Strict);
    let dev = leak(
        Composed::from_parts(mem.clone(), domain, CoherentBus, pool.clone()),
        DeviceConfig::new().trusted(false),
    );
    Rig {
        mem,
        dev,
        pool: Some(pool),
        refuses_host: None,
    }
}

/// A domain's state, for the IOMMU combinations.
fn domain<P, K, Bo>(
    dev: &Device<Composed<P, IommuDomain<SimIommu>, K, Bo>>,
) -> &IommuDomain<SimIommu>
where
    Composed<P, IommuDomain<SimIommu>, K, Bo>: Backend,
{
    dev.backend().translation()
}

// ---------------------------------------------------------------------------
// Block.

fn pattern(block: usize, salt: u8) -> Vec<u8> {
    (0..SECTOR)
        .map(|i| (i as u8).wrapping_mul(7) ^ (block as u8).wrapping_mul(31) ^ salt)
        .collect()
}

/// A block request whose header, data and status live in simulated RAM,
/// each in whole 64-byte lines of its own.
struct ReqBufs {
    req: SimBuffer<[u8]>,
    resp: SimBuffer<[u8]>,
    data: SimBuffer<[u8]>,
}

impl ReqBufs {
    fn new(mem: &SimMemory) -> Self {
        Self {
            req: mem.alloc_slice_aligned::<u8>(64, 64).unwrap(),
            resp: mem.alloc_slice_aligned::<u8>(64, 64).unwrap(),
            data: mem.alloc_slice_aligned::<u8>(SECTOR, 64).unwrap(),
        }
    }

    fn parts(&mut self) -> (&mut BlkReq, &mut [u8], &mut BlkResp) {
        let req = self.req.as_mut_ptr().cast::<BlkReq>();
        // SAFETY: 64 bytes aligned to 64, exclusively borrowed through
        // `&mut self`; they hold a valid `BlkReq`: zeroes (`In`, sector 0)
        // from the allocator, or what the driver wrote there since.
        let req = unsafe { &mut *req };
        let resp = BlkResp::mut_from_prefix(&mut self.resp[..]).unwrap().0;
        (req, &mut self.data[..], resp)
    }
}

/// Writes `BLOCKS` blocks and reads them back with the non-blocking API,
/// `IN_FLIGHT` requests at a time, every buffer in simulated RAM. With
/// `walks`, checks that completing (unsharing) walks no page table.
fn blk_nonblocking<H: Hal, B: Backend + BusTranslate + 'static>(
    blk: &mut VirtIOBlk<H, FakeTransport<B>>,
    fake: &Rc<RefCell<FakeDevice<B>>>,
    mem: &SimMemory,
    walks: Option<&dyn Fn() -> usize>,
    name: &str,
) {
    let blocks: Vec<usize> = (0..BLOCKS).collect();
    for write in [true, false] {
        for chunk in blocks.chunks(IN_FLIGHT) {
            let mut bufs: Vec<ReqBufs> = chunk
                .iter()
                .map(|&b| {
                    let mut r = ReqBufs::new(mem);
                    if write {
                        r.data.copy_from_slice(&pattern(b, 1));
                    }
                    r
                })
                .collect();
            let mut tokens = Vec::new();
            for (r, &b) in bufs.iter_mut().zip(chunk) {
                let (req, data, resp) = r.parts();
                // SAFETY: the three buffers are not touched until their
                // request is completed below.
                let t = unsafe {
                    if write {
                        blk.write_blocks_nb(b, req, data, resp)
                    } else {
                        blk.read_blocks_nb(b, req, data, resp)
                    }
                };
                tokens.push(t.unwrap_or_else(|e| panic!("{name}: submit block {b}: {e}")));
            }
            let before = walks.map(|w| w());
            for (r, t) in bufs.iter_mut().zip(&tokens) {
                assert_eq!(blk.peek_used(), Some(*t), "{name}: completion order");
                let (req, data, resp) = r.parts();
                // SAFETY: the same buffers as submitted with `t`.
                let done = unsafe {
                    if write {
                        blk.complete_write_blocks(*t, req, data, resp)
                    } else {
                        blk.complete_read_blocks(*t, req, data, resp)
                    }
                };
                done.unwrap_or_else(|e| panic!("{name}: complete: {e}"));
            }
            if let (Some(w), Some(before)) = (walks, before) {
                assert_eq!(w(), before, "{name}: unshare walked the I/O page table");
            }
            if !write {
                for (r, &b) in bufs.iter().zip(chunk) {
                    assert_eq!(
                        &r.data[..],
                        &pattern(b, 1)[..],
                        "{name}: block {b} read back"
                    );
                }
            }
        }
        if write {
            let d = fake.borrow();
            for b in 0..BLOCKS {
                assert_eq!(
                    &d.disk()[b * SECTOR..][..SECTOR],
                    &pattern(b, 1)[..],
                    "{name}: block {b} on the disk"
                );
            }
        }
    }
}

/// The blocking API: request header and status on the driver's stack, data
/// on the test's stack and heap.
fn blk_blocking<H: Hal, B: Backend + BusTranslate + 'static>(
    blk: &mut VirtIOBlk<H, FakeTransport<B>>,
    name: &str,
) {
    for b in 0..BLOCKS {
        let mut stack = [0u8; SECTOR];
        stack.copy_from_slice(&pattern(b, 2));
        blk.write_blocks(b, &stack)
            .unwrap_or_else(|e| panic!("{name}: write block {b}: {e}"));
    }
    for b in 0..BLOCKS {
        let mut stack = [0u8; SECTOR];
        blk.read_blocks(b, &mut stack).unwrap();
        assert_eq!(&stack[..], &pattern(b, 2)[..], "{name}: block {b} (stack)");
    }
    let mut heap = vec![0u8; 4 * SECTOR];
    blk.read_blocks(0, &mut heap).unwrap();
    for b in 0..4 {
        assert_eq!(
            &heap[b * SECTOR..][..SECTOR],
            &pattern(b, 2)[..],
            "{name}: heap"
        );
    }
    let mut id = [0u8; 20];
    let n = blk.device_id(&mut id).unwrap();
    assert_eq!(&id[..n], b"dmacap-fake-blk", "{name}: device id");
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a refusal");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// The blocking API on a backend that cannot reach host memory: the first
/// share (the request header on the driver's stack) is refused with a
/// clear panic, and nothing is left shared.
fn blk_blocking_refused<H: Hal, B: Backend + BusTranslate + Sync + 'static>(
    blk: &mut VirtIOBlk<H, FakeTransport<B>>,
    hal: &VirtioDevice<B>,
    expect: &str,
) where
    B::Platform: DmaAllocator,
{
    let live = hal.live_shares();
    let msg = panic_message(|| {
        let mut stack = [0u8; SECTOR];
        let _ = blk.read_blocks(0, &mut stack);
    });
    assert!(
        msg.contains("dmacap refused to share") && msg.contains(expect),
        "unexpected refusal: {msg}"
    );
    assert_eq!(hal.live_shares(), live);
    assert!(hal.refusals() >= 1);
}

fn blk_run<H: Hal, B: Backend + BusTranslate + Sync + 'static>(
    rig: &Rig<B>,
    hal: &'static VirtioDevice<B>,
    walks: Option<&dyn Fn() -> usize>,
    hook: Option<dmacap_virtio_tests::Hook>,
    name: &str,
) -> Rc<RefCell<FakeDevice<B>>>
where
    B::Platform: DmaAllocator,
{
    let ram_before = rig.mem.allocated_bytes();
    // Indirect descriptor tables live on the heap (`virtio-drivers` boxes
    // them): offered where host memory can be served (bounced). Not under
    // Miri: virtio-drivers 0.13's `add_indirect` keeps a pointer into the
    // boxed table that its own `Box::leak` then invalidates (Stacked
    // Borrows reports the `Box::from_raw` in `recycle_descriptors`), a bug
    // of that crate, not of the DMA path tested here.
    let features = if rig.refuses_host.is_none() && !cfg!(miri) {
        F_INDIRECT_DESC
    } else {
        0
    };
    let (transport, fake) = FakeTransport::blk(rig.engine(), DISK_SECTORS, features);
    if let Some(h) = hook {
        fake.borrow_mut().set_hook(h);
    }
    let mut blk = VirtIOBlk::<H, _>::new(transport).expect("VirtIOBlk::new");
    assert_eq!(blk.capacity(), DISK_SECTORS as u64);
    assert_eq!(fake.borrow().driver_features() & F_INDIRECT_DESC, features);
    assert_eq!(
        hal.live_allocations(),
        2,
        "{name}: descriptor+driver area, device area"
    );
    let filler = if rig.pool.is_some() && rig.mem.phys_base().as_u64() < 0x1_0000_0000 {
        if rig.mem.phys_base().as_u64() + rig.mem.size() as u64 > 0x1_0000_0000 {
            fill_below_4g(&rig.mem)
        } else {
            0
        }
    } else {
        0
    };
    blk_nonblocking(&mut blk, &fake, &rig.mem, walks, name);
    match rig.refuses_host {
        Some(expect) => blk_blocking_refused(&mut blk, hal, expect),
        None => blk_blocking(&mut blk, name),
    }
    if rig.pool.is_some() {
        assert!(rig.dev.stats().bounced() > 0, "{name}: nothing bounced");
    }
    drop(blk);
    rig.all_back(hal, ram_before + filler, name);
    fake
}

#[test]
fn blk_direct_coherent() {
    let rig = rig_direct();
    // SAFETY: the fake device never writes a buffer it was given to read.
    let hal = unsafe { BlkDirect::install(rig.dev) };
    blk_run::<BlkDirect, _>(&rig, hal, None, None, "blk/direct");
    assert_eq!(rig.dev.stats().bounced(), 0);
}

#[test]
fn blk_direct_noncoherent() {
    let rig = rig_noncoherent();
    // SAFETY: as above; and every buffer the test gives the driver fills
    // whole 64-byte lines of its own (`ReqBufs`).
    let hal = unsafe { BlkNonCoherent::install_with(rig.dev, HalOptions::new().whole_lines(true)) };
    blk_run::<BlkNonCoherent, _>(&rig, hal, None, None, "blk/noncoherent");
    assert!(rig.dev.stats().lines_cleaned() > 0);
    assert!(rig.dev.stats().lines_invalidated() > 0);
    assert_eq!(rig.mem.evict_dirty(), 0);
}

#[test]
fn blk_noncoherent_refuses_sub_line_buffers_without_the_promise() {
    let rig = rig_noncoherent();
    // SAFETY: the fake device never writes a buffer it was given to read.
    let hal = unsafe { BlkNonCoherent2::install(rig.dev) };
    let mut small = rig.mem.alloc_slice_aligned::<u8>(16, 64).unwrap();
    let p = core::ptr::NonNull::from(&mut small[..]);
    let msg = panic_message(|| {
        // SAFETY: `small` is valid and not touched during the call.
        let _ =
            unsafe { BlkNonCoherent2::share(p, virtio_drivers::BufferDirection::DriverToDevice) };
    });
    assert!(msg.contains("share a cache line"), "{msg}");
    assert_eq!(hal.live_shares(), 0);
}
dmacap::virtio_hal!(BlkNonCoherent2, Dnc);

#[test]
fn blk_strict_iommu() {
    let rig = rig_iommu(InvalidationMode::Strict);
    let dom = domain(rig.dev);
    let free0 = dom.free_pages();
    // SAFETY: the fake device never writes a buffer it was given to read.
    let hal = unsafe { BlkStrict::install(rig.dev) };
    let walks = || dom.walks();
    blk_run::<BlkStrict, _>(&rig, hal, Some(&walks), None, "blk/strict");
    assert!(dom.walks() > 0, "the device's accesses walked the table");
    assert_eq!(dom.free_pages(), free0, "IOVAs back");
    assert!(dom.hardware().faults().is_empty());
}

#[test]
fn blk_lazy_iommu_timer_hook_closes_the_stale_window() {
    let rig = rig_iommu(InvalidationMode::LAZY);
    let dev = rig.dev;
    let dom = domain(dev);
    let free0 = dom.free_pages();
    // SAFETY: the fake device never writes a buffer it was given to read.
    let hal = unsafe { BlkLazy::install(dev) };
    // The device's timer: 3 ms per notification (a slow disk), driving
    // the flush queue (Linux's 10 ms timeout) through `IommuDomain::tick`.
    let clock = Rc::new(Cell::new(0u64));
    let c = clock.clone();
    let hook: dmacap_virtio_tests::Hook = Box::new(move || {
        c.set(c.get() + 3);
        dom.tick(c.get(), dev.context());
    });
    let walks = || dom.walks();
    let fake = blk_run::<BlkLazy, _>(&rig, hal, Some(&walks), Some(hook), "blk/lazy");
    assert!(dev.stats().iotlb_invalidations() > 0, "the timer flushed");

    // The stale window: a request completes, its IOVA waits in the queue,
    // and the device still reaches it through its IOTLB.
    let (transport, fake2) = FakeTransport::blk(rig.engine(), DISK_SECTORS, 0);
    drop(fake);
    let mut blk = VirtIOBlk::<BlkLazy, _>::new(transport).unwrap();
    dom.flush_queue(dev.context());
    let mut r = ReqBufs::new(&rig.mem);
    r.data.fill(0x5a);
    let (req, data, resp) = r.parts();
    // SAFETY: untouched until completed.
    let t = unsafe { blk.write_blocks_nb(1, req, data, resp) }.unwrap();
    let (req, data, resp) = r.parts();
    // SAFETY: the same buffers.
    unsafe { blk.complete_write_blocks(t, req, data, resp) }.unwrap();
    let stale = fake2
        .borrow()
        .last_data
        .expect("the device used a data buffer");
    assert!(dom.queued() > 0, "unmapped, waiting for the flush");
    let hits = dom.hardware().stale_hits();
    let probe = fake2.borrow().engine().read(stale, &mut [0u8; 8]);
    assert!(
        matches!(probe, Err(SimFault::NotDeviceOwned { .. })),
        "only the simulator's ownership check stops it: {probe:?}"
    );
    assert_eq!(dom.hardware().stale_hits(), hits + 1, "a stale IOTLB hit");
    // The device's timer runs on: the queue is flushed within 10 ms.
    let hook = {
        let c = clock.clone();
        move || {
            c.set(c.get() + 3);
            dom.tick(c.get(), dev.context());
        }
    };
    for _ in 0..4 {
        hook();
    }
    assert_eq!(dom.queued(), 0, "the timer flushed the queue");
    let probe = fake2.borrow().engine().read(stale, &mut [0u8; 8]);
    assert!(
        matches!(probe, Err(SimFault::Untranslated { .. })),
        "the window closed: {probe:?}"
    );
    assert_eq!(
        dom.hardware().stale_hits(),
        hits + 1,
        "no stale hit after the flush"
    );
    drop(r);
    drop(blk);
    dom.flush_queue(dev.context());
    assert_eq!(dom.free_pages(), free0, "IOVAs back");
    assert_eq!(hal.live_shares(), 0);
    assert_eq!(hal.live_allocations(), 0);
}

#[test]
fn blk_bounce() {
    let rig = rig_bounce();
    // SAFETY: the device reads bounce copies only.
    let hal = unsafe { BlkBounce::install(rig.dev) };
    blk_run::<BlkBounce, _>(&rig, hal, None, None, "blk/bounce");
}

#[test]
fn blk_untrusted_iommu_bounce() {
    let rig = rig_untrusted();
    let dom = domain(rig.dev);
    let free0 = dom.free_pages();
    // SAFETY: the device reads bounce copies, mapped read-only.
    let hal = unsafe { BlkUntrusted::install(rig.dev) };
    let walks = || dom.walks();
    blk_run::<BlkUntrusted, _>(&rig, hal, Some(&walks), None, "blk/untrusted");
    assert_eq!(dom.free_pages(), free0, "IOVAs back");
    assert!(dom.hardware().faults().is_empty());
}

// ---------------------------------------------------------------------------
// Net.

fn frame(i: usize) -> Vec<u8> {
    let len = 60 + (i * 97) % 1400;
    (0..len)
        .map(|j| (j as u8) ^ (i as u8).wrapping_mul(13))
        .collect()
}

fn net_run<H: Hal, B: Backend + BusTranslate + Sync + 'static>(
    rig: &Rig<B>,
    hal: &'static VirtioDevice<B>,
    walks: Option<&dyn Fn() -> usize>,
    name: &str,
) where
    B::Platform: DmaAllocator,
{
    let ram_before = rig.mem.allocated_bytes();
    let straddles = rig.mem.phys_base().as_u64() + rig.mem.size() as u64 > 0x1_0000_0000;
    net_raw_all_back::<H, B>(rig, hal, walks, name);
    let filler = if rig.pool.is_some() && straddles {
        rig.mem.allocated_bytes() - ram_before
    } else {
        0
    };

    // The high-level `VirtIONet`: receive buffers on the heap, transmit
    // headers on the driver's stack.
    let mac = [0x02, 0, 0, 0, 0, 1];
    match rig.refuses_host {
        Some(expect) => {
            let (transport, _fake) = FakeTransport::net(rig.engine(), mac, 0);
            let msg = panic_message(|| {
                let _ = VirtIONet::<H, _, 16>::new(transport, RX_LEN);
            });
            assert!(
                msg.contains("dmacap refused to share") && msg.contains(expect),
                "{name}: unexpected refusal: {msg}"
            );
        }
        None => {
            let (transport, fake) = FakeTransport::net(rig.engine(), mac, 0);
            let mut net = VirtIONet::<H, _, 16>::new(transport, RX_LEN).unwrap();
            for i in 0..FRAMES {
                let f = frame(i + 100);
                net.send(TxBuffer::from(&f)).unwrap();
                assert_eq!(fake.borrow().sent().last(), Some(&f), "{name}: sent");
                assert_eq!(fake.borrow_mut().inject(&f), 0);
                let rx = net.receive().expect("received");
                assert_eq!(rx.packet(), &f[..], "{name}: frame {i} received (heap)");
                net.recycle_rx_buffer(rx).unwrap();
            }
            // Complete every posted receive buffer, so none is left shared.
            let mut done = Vec::new();
            for i in 0..16 {
                let f = frame(i + 200);
                assert_eq!(fake.borrow_mut().inject(&f), 0);
                done.push(net.receive().unwrap());
            }
            drop(net);
            drop(done);
        }
    }
    rig.all_back(hal, ram_before + filler, name);
}

/// `VirtIONetRaw`'s non-blocking API, every buffer in simulated RAM:
/// frames sent arrive at the device intact, frames injected arrive in the
/// posted receive buffers intact, which are recycled; at the end every
/// receive buffer still posted is completed, so that nothing stays shared.
fn net_raw_all_back<H: Hal, B: Backend + BusTranslate + Sync + 'static>(
    rig: &Rig<B>,
    hal: &'static VirtioDevice<B>,
    walks: Option<&dyn Fn() -> usize>,
    name: &str,
) where
    B::Platform: DmaAllocator,
{
    let mac = [0x02, 0, 0, 0xd3, 0xca, 0x9];
    let (transport, fake) = FakeTransport::net(rig.engine(), mac, 0);
    let mut net = VirtIONetRaw::<H, _, 16>::new(transport).expect("VirtIONetRaw::new");
    assert_eq!(net.mac_address(), mac);
    if rig.pool.is_some() && rig.mem.phys_base().as_u64() + rig.mem.size() as u64 > 0x1_0000_0000 {
        fill_below_4g(&rig.mem);
    }
    let mut rx: Vec<SimBuffer<[u8]>> = (0..RX_BUFS)
        .map(|_| rig.mem.alloc_slice_aligned::<u8>(RX_LEN, 64).unwrap())
        .collect();
    let mut posted = std::collections::HashMap::new();
    for (i, b) in rx.iter_mut().enumerate() {
        // SAFETY: untouched until `receive_complete`.
        let t = unsafe { net.receive_begin(&mut b[..]) }.unwrap();
        posted.insert(t, i);
    }
    for i in 0..FRAMES {
        let f = frame(i);
        let len = NET_HDR + f.len();
        let mut tx = rig
            .mem
            .alloc_slice_aligned::<u8>(len.next_multiple_of(64), 64)
            .unwrap();
        let hdr = net.fill_buffer_header(&mut tx[..]).unwrap();
        assert_eq!(hdr, NET_HDR);
        tx[hdr..len].copy_from_slice(&f);
        // SAFETY: untouched until `transmit_complete`.
        let t = unsafe { net.transmit_begin(&tx[..len]) }.unwrap();
        assert_eq!(net.poll_transmit(), Some(t), "{name}: transmitted");
        let before = walks.map(|w| w());
        // SAFETY: the same buffer.
        unsafe { net.transmit_complete(t, &tx[..len]) }.unwrap();
        if let (Some(w), Some(b)) = (walks, before) {
            assert_eq!(w(), b, "{name}: unshare walked the I/O page table");
        }
        assert_eq!(fake.borrow().sent()[i], f, "{name}: frame {i} sent");

        assert_eq!(fake.borrow_mut().inject(&f), 0, "{name}: delivered");
        let t = net.poll_receive().expect("a frame arrived");
        let slot = posted.remove(&t).expect("a posted buffer");
        let before = walks.map(|w| w());
        // SAFETY: the buffer posted with `t`.
        let (h, n) = unsafe { net.receive_complete(t, &mut rx[slot][..]) }.unwrap();
        if let (Some(w), Some(b)) = (walks, before) {
            assert_eq!(w(), b, "{name}: unshare walked the I/O page table");
        }
        assert_eq!((h, n), (NET_HDR, f.len()));
        assert_eq!(&rx[slot][h..h + n], &f[..], "{name}: frame {i} received");
        // SAFETY: untouched until completed.
        let t = unsafe { net.receive_begin(&mut rx[slot][..]) }.unwrap();
        posted.insert(t, slot);
    }
    // Complete every receive buffer still posted (a last burst of
    // frames), so that nothing stays shared when the driver goes.
    for i in 0..RX_BUFS {
        assert_eq!(fake.borrow_mut().inject(&frame(300 + i)), 0);
        let t = net.poll_receive().unwrap();
        let slot = posted.remove(&t).unwrap();
        // SAFETY: the buffer posted with `t`.
        unsafe { net.receive_complete(t, &mut rx[slot][..]) }.unwrap();
    }
    assert!(posted.is_empty());
    assert_eq!(hal.live_shares(), 0, "{name}: all unshared");
    drop(net);
    drop(rx);
}

#[test]
fn net_direct_coherent() {
    let rig = rig_direct();
    // SAFETY: the fake device never writes a buffer it was given to read.
    let hal = unsafe { NetDirect::install(rig.dev) };
    net_run::<NetDirect, _>(&rig, hal, None, "net/direct");
}

#[test]
fn net_direct_noncoherent() {
    let rig = rig_noncoherent();
    // SAFETY: as above; every buffer the test shares fills whole lines.
    let hal = unsafe { NetNonCoherent::install_with(rig.dev, HalOptions::new().whole_lines(true)) };
    net_run::<NetNonCoherent, _>(&rig, hal, None, "net/noncoherent");
    assert_eq!(rig.mem.evict_dirty(), 0);
}

#[test]
fn net_strict_iommu() {
    let rig = rig_iommu(InvalidationMode::Strict);
    let dom = domain(rig.dev);
    let free0 = dom.free_pages();
    // SAFETY: the fake device never writes a buffer it was given to read.
    let hal = unsafe { NetStrict::install(rig.dev) };
    let walks = || dom.walks();
    net_run::<NetStrict, _>(&rig, hal, Some(&walks), "net/strict");
    assert_eq!(dom.free_pages(), free0);
}

#[test]
fn net_lazy_iommu() {
    let rig = rig_iommu(InvalidationMode::LAZY);
    let dom = domain(rig.dev);
    let free0 = dom.free_pages();
    // SAFETY: the fake device never writes a buffer it was given to read.
    let hal = unsafe { NetLazy::install(rig.dev) };
    let walks = || dom.walks();
    net_run::<NetLazy, _>(&rig, hal, Some(&walks), "net/lazy");
    dom.flush_queue(rig.dev.context());
    assert_eq!(dom.free_pages(), free0);
}

#[test]
fn net_bounce() {
    let rig = rig_bounce();
    // SAFETY: the device reads bounce copies only.
    let hal = unsafe { NetBounce::install(rig.dev) };
    net_run::<NetBounce, _>(&rig, hal, None, "net/bounce");
    assert!(rig.dev.stats().bounced() > 0);
}

#[test]
fn net_untrusted_iommu_bounce() {
    let rig = rig_untrusted();
    let dom = domain(rig.dev);
    let free0 = dom.free_pages();
    // SAFETY: the device reads bounce copies, mapped read-only.
    let hal = unsafe { NetUntrusted::install(rig.dev) };
    let walks = || dom.walks();
    net_run::<NetUntrusted, _>(&rig, hal, Some(&walks), "net/untrusted");
    assert_eq!(dom.free_pages(), free0);
    assert!(rig.dev.stats().bounced() > 0);
}

// ---------------------------------------------------------------------------
// The adapter's own checks.

#[test]
fn unshare_finds_its_handle_without_walking_and_refuses_unknown_addresses() {
    let rig = rig_iommu(InvalidationMode::Strict);
    let dom = domain(rig.dev);
    // SAFETY: the test's device only reads what it was given to read.
    let hal = unsafe { Unshared::install(rig.dev) };
    let engine = rig.engine();
    let mut buf = rig.mem.alloc_slice::<u8>(100).unwrap();
    buf.fill(7);
    let p = core::ptr::NonNull::from(&mut buf[..]);
    // SAFETY: `buf` is valid and untouched until unshared.
    let dma = unsafe { Unshared::share(p, virtio_drivers::BufferDirection::DriverToDevice) };
    let mut seen = [0u8; 100];
    engine.read(dmacap::DmaAddr::new(dma), &mut seen).unwrap();
    assert_eq!(seen, [7; 100]);
    let walks = dom.walks();
    assert!(
        walks > 0,
        "the device's access walked the table (IOTLB miss)"
    );

    // Unknown address: a clear panic, nothing changes.
    let msg = panic_message(|| {
        // SAFETY: the adapter refuses the address before touching anything.
        unsafe {
            Unshared::unshare(
                dma + 4096,
                p,
                virtio_drivers::BufferDirection::DriverToDevice,
            )
        };
    });
    assert!(msg.contains("not a live share"), "{msg}");
    // The right address with another length: refused, still shared.
    let msg = panic_message(|| {
        let shorter = core::ptr::NonNull::slice_from_raw_parts(p.cast::<u8>(), 50);
        // SAFETY: refused before anything is touched.
        unsafe {
            Unshared::unshare(
                dma,
                shorter,
                virtio_drivers::BufferDirection::DriverToDevice,
            )
        };
    });
    assert!(msg.contains("but it shared 100 bytes"), "{msg}");
    assert_eq!(hal.live_shares(), 1);
    // A deallocation of something never allocated.
    let msg = panic_message(|| {
        // SAFETY: refused before anything is touched.
        unsafe { Unshared::dma_dealloc(dma, p.cast(), 1) };
    });
    assert!(msg.contains("not a live allocation"), "{msg}");

    let p = core::ptr::NonNull::from(&mut buf[..]);
    // SAFETY: the device finished (the read returned).
    unsafe { Unshared::unshare(dma, p, virtio_drivers::BufferDirection::DriverToDevice) };
    assert_eq!(dom.walks(), walks, "unshare walked nothing");
    assert_eq!(hal.live_shares(), 0);
    assert_eq!(
        engine.read(dmacap::DmaAddr::new(dma), &mut seen),
        Err(SimFault::Untranslated {
            dma: dmacap::DmaAddr::new(dma),
            access: dmacap::sim::Access::Read
        })
    );
    // Twice: refused.
    let msg = panic_message(|| {
        // SAFETY: refused before anything is touched.
        unsafe { Unshared::unshare(dma, p, virtio_drivers::BufferDirection::DriverToDevice) };
    });
    assert!(msg.contains("unshared already"), "{msg}");
}

#[test]
fn a_hal_used_before_install_names_itself() {
    dmacap::virtio_hal!(Nowhere, Dc);
    let msg = panic_message(|| {
        let _ = Nowhere::dma_alloc(1, virtio_drivers::BufferDirection::Both);
    });
    assert!(
        msg.contains("`Nowhere` used before a device was installed"),
        "{msg}"
    );
}
