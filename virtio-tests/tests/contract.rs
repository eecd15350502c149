//! The adapter's contract (issue 17, items 1, 2, 3 and 12): a caller that
//! keeps `install`'s clauses runs clean (also under Miri, Stacked and Tree
//! Borrows); what the adapter can check at run time panics cleanly; DMA
//! address 0 is never handed out by `dma_alloc`; a request refused in the
//! middle of its chain leaves its earlier buffers shared and counted; and a
//! stale share names the earlier one.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;

use dmacap::backend::compose::{Coherent as CoherentBus, Composed, NoBounce};
use dmacap::backend::direct::DirectCoherent;
use dmacap::backend::iommu::{InvalidationMode, IommuDomain};
use dmacap::sim::{SimDevice, SimIommu, SimMemory};
use dmacap::{Device, DeviceConfig, DmaAddr, PhysAddr};
use dmacap_virtio_tests::{FakeTransport, SECTOR};
use virtio_drivers::BufferDirection::{Both, DeviceToDriver, DriverToDevice};
use virtio_drivers::Hal;
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk};

type Dc = DirectCoherent<SimMemory>;
type Io = Composed<SimMemory, IommuDomain<SimIommu>, CoherentBus, NoBounce>;

dmacap::virtio_hal!(Keeper, Dc);
dmacap::virtio_hal!(Checks, Dc);
dmacap::virtio_hal!(Stale, Dc);
dmacap::virtio_hal!(ZeroRam, Dc);
dmacap::virtio_hal!(ZeroIova, Io);
dmacap::virtio_hal!(MidChain, Dc);

fn leak<B: dmacap::backend::Backend>(b: B) -> &'static Device<B> {
    Box::leak(Box::new(Device::new(b, DeviceConfig::new())))
}

fn ram_at(base: u64) -> SimMemory {
    let mem = SimMemory::with_base(PhysAddr::new(base), 1 << 20);
    mem.accept_host_memory();
    mem
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// A hand-written caller that keeps every clause of `install`: each buffer
/// stays allocated and untouched from `share` to `unshare`, `unshare` comes
/// after the device, a read-only buffer comes from a shared reference and
/// the device only reads it. Edge cases: a one-byte buffer, the same
/// memory shared again after its unshare, two live shares of disjoint
/// halves of one allocation, and unshares in another order than the
/// shares. Real bytes move both ways through the simulated device.
#[test]
fn a_caller_keeping_the_contract_is_clean() {
    let mem = ram_at(0x8000_0000);
    let dev = leak(Dc::new(mem.clone()));
    // SAFETY: this test keeps clauses 1-3 (see the test's doc).
    let hal = unsafe { Keeper::install(dev) };
    let engine = SimDevice::new(dev, mem.clone());

    // Read-only, from a shared reference (as `VirtQueue::add` does).
    let mut src = mem.alloc_slice::<u8>(64).unwrap();
    src.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    let ro = NonNull::from(&src[..]);
    // SAFETY: clause 2: `src` is neither freed nor touched until unshared.
    let d_ro = unsafe { Keeper::share(ro, DriverToDevice) };

    // Two halves of one allocation, device-writable, live at once.
    let mut dst = mem.alloc_slice::<u8>(256).unwrap();
    let (lo, hi) = dst.split_at_mut(128);
    let (lo, hi) = (NonNull::from(lo), NonNull::from(hi));
    // SAFETY: clause 2 for both halves.
    let d_lo = unsafe { Keeper::share(lo, DeviceToDriver) };
    // SAFETY: as above.
    let d_hi = unsafe { Keeper::share(hi, Both) };
    // One byte.
    let mut one = mem.alloc_slice::<u8>(1).unwrap();
    let p_one = NonNull::from(&mut one[..]);
    // SAFETY: as above.
    let d_one = unsafe { Keeper::share(p_one, Both) };
    assert_eq!(hal.live_shares(), 4);

    let mut seen = [0u8; 64];
    engine.read(DmaAddr::new(d_ro), &mut seen).unwrap();
    assert_eq!(seen.to_vec(), (0..64u8).collect::<Vec<_>>());
    engine.write(DmaAddr::new(d_lo), &[0xa5; 128]).unwrap();
    engine.write(DmaAddr::new(d_hi), &[0x5a; 128]).unwrap();
    engine.write(DmaAddr::new(d_one), &[0x77]).unwrap();

    // Unshared in another order; the device has finished (clause 3).
    // SAFETY: the device's accesses above returned.
    unsafe {
        Keeper::unshare(d_one, p_one, Both);
        Keeper::unshare(d_hi, hi, Both);
        Keeper::unshare(d_ro, ro, DriverToDevice);
        Keeper::unshare(d_lo, lo, DeviceToDriver);
    }
    assert_eq!(&dst[..128], &[0xa5; 128]);
    assert_eq!(&dst[128..], &[0x5a; 128]);
    assert_eq!(one[0], 0x77);

    // The same memory shared again after its unshare.
    let p = NonNull::from(&mut dst[..]);
    // SAFETY: clause 2.
    let d = unsafe { Keeper::share(p, DeviceToDriver) };
    engine.write(DmaAddr::new(d), &[3; 256]).unwrap();
    // SAFETY: the device finished.
    unsafe { Keeper::unshare(d, p, DeviceToDriver) };
    assert_eq!(&dst[..], &[3; 256]);

    assert_eq!((hal.live_shares(), hal.shares(), hal.unshares()), (0, 5, 5));
    assert_eq!(dev.leaked(), 0);
    assert_eq!(mem.device_owned_bytes(), 0);
}

/// What the adapter checks instead of assuming: an unshare of an address it
/// never handed out, with another length, another buffer or another
/// direction, panics before anything changes, and the share is then still
/// intact (the device still reads the bytes, a correct unshare works).
#[test]
fn unshare_arguments_that_break_the_contract_panic_cleanly() {
    let mem = ram_at(0x8000_0000);
    let dev = leak(Dc::new(mem.clone()));
    // SAFETY: the device only writes what it was given to write.
    let hal = unsafe { Checks::install(dev) };
    let engine = SimDevice::new(dev, mem.clone());
    let mut buf = mem.alloc_slice::<u8>(100).unwrap();
    let mut other = mem.alloc_slice::<u8>(100).unwrap();
    let p = NonNull::from(&mut buf[..]);
    let q = NonNull::from(&mut other[..]);
    // SAFETY: clause 2.
    let dma = unsafe { Checks::share(p, DeviceToDriver) };
    engine.write(DmaAddr::new(dma), &[9; 100]).unwrap();

    let cases: [(u64, NonNull<[u8]>, _, &str); 4] = [
        (dma + 8, p, DeviceToDriver, "not a live share"),
        (
            dma,
            NonNull::slice_from_raw_parts(p.cast::<u8>(), 99),
            DeviceToDriver,
            "but it shared 100 bytes",
        ),
        (dma, q, DeviceToDriver, "but it shared 100 bytes at"),
        (dma, p, Both, "(DeviceToDriver)"),
    ];
    for (addr, ptr, dir, expect) in cases {
        let msg = panic_message(|| {
            // SAFETY: refused before anything is touched.
            unsafe { Checks::unshare(addr, ptr, dir) };
        });
        assert!(msg.contains(expect), "{msg}");
        assert_eq!(hal.live_shares(), 1);
    }
    // SAFETY: the device finished.
    unsafe { Checks::unshare(dma, p, DeviceToDriver) };
    assert_eq!(&buf[..], &[9; 100]);
    assert_eq!(other[0], 0);
    assert_eq!((hal.live_shares(), dev.leaked()), (0, 0));
}

/// Item 12: a `share` at a DMA address that is still a live share (a driver
/// that never unshared, e.g. a dropped request whose memory is reused)
/// names the earlier share: its buffer, length, direction and call number,
/// and the likely cause. Nothing new is mapped; the earlier share is intact.
#[test]
fn a_stale_share_names_the_earlier_share_and_the_cause() {
    // Host memory under a 64-bit mask: the simulated RAM's own check of
    // overlapping grants (which would fire first) does not cover it, so the
    // adapter's table is what sees the clash.
    let mem = ram_at(0x8000_0000);
    let dev = Box::leak(Box::new(Device::new(
        Dc::new(mem.clone()),
        DeviceConfig::new().dma_mask(dmacap::DmaMask::bits(64)),
    )));
    // SAFETY: the device only writes what it was given to write.
    let hal = unsafe { Stale::install(dev) };
    let mut first = Box::new([0u8; 64]);
    let mut buf = Box::new([0u8; 100]);
    let p1 = NonNull::from(&mut first[..]);
    let p = NonNull::from(&mut buf[..]);
    // SAFETY: clause 2 (share call #1).
    let d1 = unsafe { Stale::share(p1, Both) };
    // SAFETY: clause 2 (share call #2).
    let dma = unsafe { Stale::share(p, DriverToDevice) };
    // The "driver" forgets its request and reuses the memory.
    let msg = panic_message(|| {
        let half = NonNull::slice_from_raw_parts(p.cast::<u8>(), 50);
        // SAFETY: (the breach under test) refused before anything maps.
        let _ = unsafe { Stale::share(half, DeviceToDriver) };
    });
    let addr = format!("{:#x}", p.cast::<u8>().as_ptr() as usize);
    for part in [
        "already a live share",
        "share call #2",
        &format!("100 bytes at {addr}, DriverToDevice"),
        &format!("share of 50 bytes at {addr} (DeviceToDriver)"),
        "never unshared",
        "a request dropped",
    ] {
        assert!(msg.contains(part), "missing {part:?} in: {msg}");
    }
    assert_eq!((hal.live_shares(), hal.shares()), (2, 2));
    // SAFETY: the device never ran.
    unsafe {
        Stale::unshare(dma, p, DriverToDevice);
        Stale::unshare(d1, p1, Both);
    }
    assert_eq!((hal.live_shares(), dev.leaked()), (0, 0));
}

/// Item 2, direct: RAM starting at physical (and bus) address 0. The first
/// page allocated lies at 0; `dma_alloc` keeps it aside and counts it, and
/// never returns 0. Bytes move through the allocation, and nothing is lost.
#[test]
fn dma_alloc_never_returns_0_where_ram_starts_at_0() {
    let mem = ram_at(0);
    let dev = leak(Dc::new(mem.clone()));
    // SAFETY: the device only writes what it was given to write.
    let hal = unsafe { ZeroRam::install(dev) };
    let engine = SimDevice::new(dev, mem.clone());
    let mut got = Vec::new();
    for _ in 0..3 {
        let (dma, ptr) = ZeroRam::dma_alloc(1, Both);
        assert_ne!(dma, 0, "dma_alloc handed out DMA address 0");
        engine.write(DmaAddr::new(dma), &[0xee; 16]).unwrap();
        // SAFETY: a live, zeroed page of this allocation; the device wrote
        // the first 16 bytes and has finished.
        let seen = unsafe { core::slice::from_raw_parts(ptr.as_ptr(), 17) };
        assert_eq!((&seen[..16], seen[16]), (&[0xee; 16][..], 0));
        got.push((dma, ptr));
    }
    assert_eq!(hal.held_at_zero(), 1, "the page at 0 is held and counted");
    for (dma, ptr) in got {
        // SAFETY: the device finished with it.
        assert_eq!(unsafe { ZeroRam::dma_dealloc(dma, ptr, 1) }, 0);
    }
    assert_eq!((hal.live_allocations(), hal.held_at_zero()), (0, 1));
    assert_eq!(dev.leaked(), 0);
    // Only the held page is still allocated: nothing else was lost.
    assert_eq!(mem.allocated_bytes(), virtio_drivers::PAGE_SIZE);
}

/// Item 2, IOMMU: a domain whose IOVA space starts at 0 never allocates
/// IOVA 0, for `dma_alloc` or `share`.
#[test]
fn an_iommu_domain_starting_at_iova_0_never_hands_out_0() {
    let mem = ram_at(0x8000_0000);
    let domain = IommuDomain::with_aperture(
        SimIommu::new(),
        InvalidationMode::Strict,
        DmaAddr::new(0),
        1 << 24,
    );
    let dev = leak(Composed::from_parts(
        mem.clone(),
        domain,
        CoherentBus,
        NoBounce,
    ));
    // SAFETY: the device only writes what it was given to write.
    let hal = unsafe { ZeroIova::install(dev) };
    let engine = SimDevice::new(dev, mem.clone());
    let (dma, ptr) = ZeroIova::dma_alloc(1, Both);
    assert_ne!(dma, 0, "IOVA 0 handed out");
    engine.write(DmaAddr::new(dma), &[1; 8]).unwrap();
    let mut buf = mem.alloc_slice::<u8>(32).unwrap();
    buf.fill(4);
    let p = NonNull::from(&mut buf[..]);
    // SAFETY: clause 2.
    let d = unsafe { ZeroIova::share(p, DriverToDevice) };
    assert_ne!(d, 0);
    let mut seen = [0u8; 32];
    engine.read(DmaAddr::new(d), &mut seen).unwrap();
    assert_eq!(seen, [4; 32]);
    // SAFETY: the device finished.
    unsafe {
        ZeroIova::unshare(d, p, DriverToDevice);
        assert_eq!(ZeroIova::dma_dealloc(dma, ptr, 1), 0);
    }
    assert_eq!(
        (hal.live_allocations(), hal.held_at_zero(), dev.leaked()),
        (0, 0, 0)
    );
}

/// Item 3: `virtio-drivers`' real block driver submits a read whose header
/// (in the device's RAM) is shared and whose data buffer (host memory the
/// direct device cannot reach) is refused. The panic unwinds; the header's
/// share stays live and is counted in `live_shares` (no descriptor was
/// written, so the device never saw it), as the adapter documents. The
/// caller keeps clause 2 by never freeing the header.
#[test]
fn a_share_refused_mid_chain_leaves_the_earlier_buffers_shared_and_counted() {
    let mem = ram_at(0x8000_0000);
    let dev = leak(Dc::new(mem.clone()));
    // SAFETY: the fake device only writes what it was given to write.
    let hal = unsafe { MidChain::install(dev) };
    let (transport, _fake) = FakeTransport::blk(SimDevice::new(dev, mem.clone()), 16, 0);
    let mut blk = VirtIOBlk::<MidChain, _>::new(transport).expect("VirtIOBlk::new");
    let mut req = mem.alloc_slice_aligned::<u8>(64, 64).unwrap();
    let mut resp = mem.alloc_slice_aligned::<u8>(64, 64).unwrap();
    let mut host = vec![0u8; SECTOR];
    let before = (hal.live_shares(), hal.shares());
    let msg = panic_message(|| {
        // SAFETY: 64 zeroed bytes aligned to 64 hold a valid `BlkReq` and
        // `BlkResp`; nothing else borrows them.
        let (r, s) = unsafe {
            (
                &mut *req.as_mut_ptr().cast::<BlkReq>(),
                &mut *resp.as_mut_ptr().cast::<BlkResp>(),
            )
        };
        // SAFETY: the buffers are not touched (nor freed: see below) until
        // the request completes.
        let _ = unsafe { blk.read_blocks_nb(0, r, &mut host, s) };
    });
    assert!(msg.contains("dmacap refused to share 512 bytes"), "{msg}");
    assert_eq!(hal.refusals(), 1);
    assert_eq!(hal.live_shares(), before.0 + 1, "the header stays shared");
    assert_eq!(hal.shares(), before.1 + 1);
    assert_eq!(dev.leaked(), 0, "not quarantined: just never unshared");
    // The header stays allocated and untouched forever (clause 2); the
    // queue is treated as broken.
    core::mem::forget(req);
    core::mem::forget(blk);
    drop(resp);
}
