//! The IOMMU translation end to end on the simulated platform: real bytes
//! move through IOVAs, the device is held to each mapping's direction,
//! unmapped IOVAs fault (at once in strict mode, after the queue flush in
//! lazy mode), unmaps are invalidated once per flush, and every error path
//! gives the buffer back and leaves the IOVA space as it was.

use core::ptr::NonNull;

use dmacap::backend::compose::{Coherent, Composed, NoBounce};
use dmacap::backend::iommu::{InvalidationMode, IommuDomain, LinkError};
use dmacap::platform::{PhysLookup, Side};
use dmacap::sim::{
    Access, FaultReason, IommuFault, SimFault, SimIommu, SimIommuBackend, SimMemory, SimPlatform,
};
use dmacap::{Device, DeviceConfig, DmaAddr, DmaMask, MapErrorKind};

const PAGE: usize = 4096;

/// A coherent device behind its own IOMMU domain, built from the parts.
fn iommu_device(
    sim: &SimPlatform,
    domain: IommuDomain<SimIommu>,
    cfg: DeviceConfig,
) -> Device<SimIommuBackend> {
    Device::new(
        Composed::from_parts(sim.memory().clone(), domain, Coherent, NoBounce),
        cfg,
    )
}

fn strict(sim: &SimPlatform) -> Device<SimIommuBackend> {
    iommu_device(
        sim,
        IommuDomain::new(SimIommu::new(), InvalidationMode::Strict),
        DeviceConfig::new(),
    )
}

fn domain(dev: &Device<SimIommuBackend>) -> &IommuDomain<SimIommu> {
    dev.backend().translation()
}

fn iommu(dev: &Device<SimIommuBackend>) -> &SimIommu {
    domain(dev).hardware()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn page_of(dma: DmaAddr) -> u64 {
    dma.as_u64() & !(PAGE as u64 - 1)
}

#[test]
fn round_trips_in_every_direction() {
    let sim = SimPlatform::new(1 << 20);
    let mem = sim.memory();
    let dev = strict(&sim);
    let engine = sim.device(&dev);

    // ToDevice: the device reads what the CPU wrote, through an IOVA that
    // keeps the buffer's offset in its page.
    let _misalign = mem.alloc_slice::<u8>(100).unwrap();
    let mut tx = mem.alloc_slice::<u8>(300).unwrap();
    tx.copy_from_slice(&pattern(300, 1));
    let tx_phys = mem.phys_of_buffer(&tx);
    let tx = dev.map_to_device(tx).unwrap();
    assert_ne!(page_of(tx.dma_addr()), tx_phys.as_u64() & !0xfff);
    assert_eq!(tx.dma_addr().as_u64() & 0xfff, tx_phys.as_u64() & 0xfff);
    assert!(tx.dma_addr().as_u64() < 1 << 32, "below the 32-bit mask");
    let mut seen = vec![0u8; 300];
    engine.read(tx.dma_addr(), &mut seen).unwrap();
    assert_eq!(seen, pattern(300, 1));

    // FromDevice, spanning four pages from the middle of one: the device's
    // single write is split at every page and lands in order.
    let len = 3 * PAGE + 100;
    let rx = dev
        .map_from_device(mem.alloc_slice::<u8>(len).unwrap())
        .unwrap();
    engine.write(rx.dma_addr(), &pattern(len, 2)).unwrap();
    // SAFETY: the simulated write returned.
    let rx = unsafe { rx.sync_for_cpu() };
    assert_eq!(rx.contents(), &pattern(len, 2)[..]);

    // Bidirectional: the device reads the CPU's bytes and answers in place.
    let mut bi = mem.alloc_slice_aligned::<u8>(2 * PAGE, PAGE).unwrap();
    bi.copy_from_slice(&pattern(2 * PAGE, 3));
    let bi = dev.map_bidirectional(bi).unwrap();
    let mut got = vec![0u8; 2 * PAGE];
    engine.read(bi.dma_addr(), &mut got).unwrap();
    assert_eq!(got, pattern(2 * PAGE, 3));
    got.iter_mut().for_each(|b| *b = !*b);
    engine.write(bi.dma_addr(), &got).unwrap();
    // SAFETY: the simulated write returned.
    let bi = unsafe { bi.sync_for_cpu() };
    assert_eq!(bi.contents(), &got[..]);

    // A device-side copy from one IOVA range to another.
    let out = dev
        .map_from_device(mem.alloc_slice::<u8>(300).unwrap())
        .unwrap();
    engine.copy(tx.dma_addr(), out.dma_addr(), 300).unwrap();
    // SAFETY: the copy returned.
    let out = unsafe { out.sync_for_cpu() };
    assert_eq!(out.contents(), &pattern(300, 1)[..]);

    assert!(iommu(&dev).faults().is_empty());
    let free_before_unmaps = dev.backend().translation().free_pages();
    // SAFETY: the device finished with `tx`.
    let tx = unsafe { tx.unmap() };
    assert_eq!(&tx[..], &pattern(300, 1)[..]);
    drop((rx.unmap(), bi.unmap(), out.unmap()));
    // 1 + 4 (4 pages, a power of two) + 2 + 1 pages back.
    assert_eq!(
        domain(&dev).free_pages(),
        free_before_unmaps + 1 + 4 + 2 + 1
    );
    assert_eq!(dev.stats().iotlb_invalidations(), 4);
}

#[test]
fn the_device_is_held_to_the_direction() {
    let sim = SimPlatform::new(1 << 20);
    let mem = sim.memory();
    let dev = strict(&sim);
    let engine = sim.device(&dev);

    let mut tx = mem.alloc_slice::<u8>(64).unwrap();
    tx.copy_from_slice(&[0x5a; 64]);
    let tx = dev.map_to_device(tx).unwrap();
    let at = DmaAddr::new(tx.dma_addr().as_u64() + 8);
    assert_eq!(
        engine.write(at, &[0; 16]),
        Err(SimFault::Denied {
            dma: at,
            access: Access::Write
        })
    );
    let rx = dev
        .map_from_device(mem.alloc_slice::<u8>(64).unwrap())
        .unwrap();
    assert_eq!(
        engine.read(rx.dma_addr(), &mut [0; 4]),
        Err(SimFault::Denied {
            dma: rx.dma_addr(),
            access: Access::Read
        })
    );
    assert_eq!(
        iommu(&dev).faults(),
        [
            IommuFault {
                iova: at,
                access: Access::Write,
                reason: FaultReason::Denied
            },
            IommuFault {
                iova: rx.dma_addr(),
                access: Access::Read,
                reason: FaultReason::Denied
            }
        ]
    );
    // SAFETY: the device's accesses were all refused.
    let tx = unsafe { tx.unmap() };
    assert_eq!(&tx[..], &[0x5a; 64], "memory unchanged");
    // SAFETY: as above.
    drop(unsafe { rx.unmap() });
}

#[test]
fn after_a_strict_unmap_every_access_faults() {
    let sim = SimPlatform::new(1 << 20);
    let mem = sim.memory();
    let dev = strict(&sim);
    let engine = sim.device(&dev);
    let sizes = [1, 100, PAGE, PAGE + 1, 3 * PAGE, 5000, 64, 2 * PAGE];
    let mut old = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let h = dev
            .map_bidirectional(mem.alloc_slice::<u8>(len).unwrap())
            .unwrap();
        // The device uses the mapping: its pages are now in the IOTLB.
        engine.write(h.dma_addr(), &pattern(len, i as u8)).unwrap();
        old.push((h.dma_addr(), len));
        // SAFETY: the write returned.
        let buf = unsafe { h.unmap() };
        assert_eq!(&buf[..], &pattern(len, i as u8)[..]);
    }
    assert_eq!(dev.stats().iotlb_invalidations(), sizes.len());
    for &(dma, len) in &old {
        let last = DmaAddr::new(dma.as_u64() + len as u64 - 1);
        for at in [dma, last] {
            assert_eq!(
                engine.read(at, &mut [0; 1]),
                Err(SimFault::Untranslated {
                    dma: at,
                    access: Access::Read
                })
            );
            assert_eq!(
                engine.write(at, &[1]),
                Err(SimFault::Untranslated {
                    dma: at,
                    access: Access::Write
                })
            );
        }
    }
    // Every access was refused by the IOMMU and logged: none was missed.
    let faults = iommu(&dev).faults();
    assert_eq!(faults.len(), 4 * sizes.len());
    assert!(faults.iter().all(|f| f.reason == FaultReason::Untranslated));
    assert_eq!(iommu(&dev).stale_hits(), 0);
    assert_eq!(iommu(&dev).iotlb_entries(), 0);
}

#[test]
fn lazy_unmap_leaves_a_stale_window_until_the_queue_is_flushed() {
    // Lazy invalidation is for trusted devices only: this one is trusted
    // (the default), and what follows is the risk it accepts.
    let sim = SimPlatform::new(1 << 20);
    let mem = sim.memory();
    let dev = iommu_device(
        &sim,
        IommuDomain::new(SimIommu::new(), InvalidationMode::LAZY),
        DeviceConfig::new(),
    );
    let engine = sim.device(&dev);
    let free0 = domain(&dev).free_pages();

    let rx = dev
        .map_from_device(mem.alloc_slice::<u8>(64).unwrap())
        .unwrap();
    let stale = rx.dma_addr();
    engine.write(stale, b"first").unwrap(); // fills the IOTLB
    // SAFETY: the write returned.
    let rx = unsafe { rx.sync_for_cpu() };
    let buf = rx.unmap();
    assert_eq!(&buf[..5], b"first");
    assert_eq!(
        dev.stats().iotlb_invalidations(),
        0,
        "nothing invalidated yet"
    );
    assert_eq!(domain(&dev).queued(), 1);
    assert_eq!(
        domain(&dev).free_pages(),
        free0 - 1,
        "the IOVA is not free yet"
    );

    // The device still reaches the unmapped page through its IOTLB: the
    // IOMMU translates and logs nothing. Only the simulator's ownership
    // check (the memory is the CPU's again) stops the write here; real
    // hardware would have written it.
    assert!(matches!(
        engine.write(stale, b"late"),
        Err(SimFault::NotDeviceOwned { .. })
    ));
    assert_eq!(iommu(&dev).stale_hits(), 1);
    assert!(iommu(&dev).faults().is_empty());
    assert_eq!(&buf[..5], b"first");

    // The IOVA is not reused while it may be stale.
    let other = dev
        .map_from_device(mem.alloc_slice::<u8>(64).unwrap())
        .unwrap();
    assert_ne!(page_of(other.dma_addr()), page_of(stale));

    domain(&dev).flush_queue(dev.context());
    assert_eq!(dev.stats().iotlb_invalidations(), 1);
    assert_eq!(domain(&dev).queued(), 0);
    assert_eq!(domain(&dev).free_pages(), free0 - 1, "only `other` is held");
    assert_eq!(
        engine.write(stale, b"late"),
        Err(SimFault::Untranslated {
            dma: stale,
            access: Access::Write
        })
    );
    assert_eq!(iommu(&dev).faults().len(), 1);

    // Now the IOVA may be reused (the magazine hands it out first).
    let again = dev
        .map_from_device(mem.alloc_slice::<u8>(64).unwrap())
        .unwrap();
    assert_eq!(page_of(again.dma_addr()), page_of(stale));
    engine.write(again.dma_addr(), b"fresh").unwrap();
    // SAFETY: the device is done with both.
    let (a, b) = unsafe { (other.unmap(), again.unmap()) };
    assert_eq!(&b[..5], b"fresh");
    drop((a, b, buf));
    domain(&dev).flush_queue(dev.context());
    assert_eq!(domain(&dev).free_pages(), free0);
}

#[test]
fn lazy_queues_flush_when_full_and_on_timeout() {
    let sim = SimPlatform::new(1 << 20);
    let mem = sim.memory();
    let mode = InvalidationMode::Lazy {
        queue_len: 4,
        timeout_ms: 10,
    };
    let dev = iommu_device(
        &sim,
        IommuDomain::new(SimIommu::new(), mode),
        DeviceConfig::new(),
    );
    let free0 = domain(&dev).free_pages();
    let map_unmap = || {
        let h = dev
            .map_to_device(mem.alloc_slice::<u8>(16).unwrap())
            .unwrap();
        // SAFETY: the device never ran.
        drop(unsafe { h.unmap() });
    };
    for _ in 0..4 {
        map_unmap();
    }
    assert_eq!(
        (domain(&dev).queued(), dev.stats().iotlb_invalidations()),
        (4, 0)
    );
    map_unmap(); // the queue is full: all five are invalidated and freed
    assert_eq!(
        (domain(&dev).queued(), dev.stats().iotlb_invalidations()),
        (0, 1)
    );
    assert_eq!(domain(&dev).free_pages(), free0);

    let d = domain(&dev);
    d.tick(100, dev.context());
    map_unmap();
    d.tick(105, dev.context());
    assert_eq!(d.queued(), 1, "5 ms old: kept");
    d.tick(110, dev.context());
    assert_eq!(d.queued(), 0, "10 ms old: flushed");
    assert_eq!(dev.stats().iotlb_invalidations(), 2);
    d.tick(200, dev.context());
    assert_eq!(
        dev.stats().iotlb_invalidations(),
        2,
        "nothing queued, nothing to do"
    );
    assert_eq!(d.free_pages(), free0);
}

#[test]
fn batched_unmaps_share_one_invalidation() {
    let sim = SimPlatform::new(1 << 20);
    let mem = sim.memory();
    let dev = strict(&sim);
    let engine = sim.device(&dev);
    let free0 = domain(&dev).free_pages();

    let mut maps = dev.batch();
    for _ in 0..16 {
        maps.map_from_device(mem.alloc_slice::<u8>(200).unwrap())
            .unwrap();
    }
    let rx = maps.flush();
    assert_eq!(
        dev.stats().iotlb_invalidations(),
        0,
        "maps invalidate nothing"
    );
    let dmas: Vec<_> = rx.iter().map(|h| h.dma_addr()).collect();
    for (i, &dma) in dmas.iter().enumerate() {
        engine.write(dma, &pattern(200, i as u8)).unwrap();
    }
    let mut unmaps = dev.batch();
    for h in rx {
        // SAFETY: every write returned.
        unsafe { unmaps.unmap_device_owned(h) };
    }
    let bufs = unmaps.flush();
    assert_eq!(
        dev.stats().iotlb_invalidations(),
        1,
        "16 unmaps, one invalidation"
    );
    assert_eq!(iommu(&dev).syncs(), 1);
    for (i, b) in bufs.iter().enumerate() {
        assert_eq!(&b[..], &pattern(200, i as u8)[..]);
    }
    for &dma in &dmas {
        assert!(matches!(
            engine.read(dma, &mut [0; 1]),
            Err(SimFault::Untranslated { .. })
        ));
    }
    assert_eq!(iommu(&dev).faults().len(), 16);
    assert_eq!(domain(&dev).free_pages(), free0);

    // One by one, the same unmaps cost one invalidation each.
    let hs: Vec<_> = bufs
        .into_iter()
        .map(|b| dev.map_from_device(b).unwrap())
        .collect();
    for h in hs {
        // SAFETY: the device was not started.
        drop(unsafe { h.unmap() });
    }
    assert_eq!(dev.stats().iotlb_invalidations(), 1 + 16);
}

#[test]
fn iova_exhaustion_gives_the_buffer_back_and_leaves_the_space_as_it_was() {
    let sim = SimPlatform::new(1 << 20);
    let mem = sim.memory();
    // An aperture of eight pages at 16 MiB.
    let aperture = |sim: &SimPlatform, cfg| {
        let d = IommuDomain::with_aperture(
            SimIommu::new(),
            InvalidationMode::Strict,
            DmaAddr::new(16 << 20),
            8 * PAGE as u64,
        );
        iommu_device(sim, d, cfg)
    };
    let dev = aperture(&sim, DeviceConfig::new());
    assert_eq!(domain(&dev).free_pages(), 8);
    let a = dev
        .map_to_device(mem.alloc_slice_aligned::<u8>(4 * PAGE, PAGE).unwrap())
        .unwrap();
    // Three pages are rounded up to four.
    let b = dev
        .map_to_device(mem.alloc_slice_aligned::<u8>(3 * PAGE, PAGE).unwrap())
        .unwrap();
    assert_eq!(domain(&dev).free_pages(), 0);

    let mut c = mem.alloc_slice::<u8>(10).unwrap();
    c.copy_from_slice(b"keep me!!!");
    let err = dev.map_to_device(c).unwrap_err();
    assert_eq!(err.kind(), MapErrorKind::IovaExhausted { len: 10 });
    assert_eq!(&err.into_buffer()[..], b"keep me!!!");
    assert_eq!(domain(&dev).free_pages(), 0);

    // SAFETY: the device never ran.
    drop(unsafe { b.unmap() });
    assert_eq!(domain(&dev).free_pages(), 4);
    // Five pages do not fit in the four left.
    let big = mem.alloc_slice::<u8>(5 * PAGE).unwrap();
    let err = dev.map_from_device(big).unwrap_err();
    assert_eq!(err.kind(), MapErrorKind::IovaExhausted { len: 5 * PAGE });
    assert_eq!(domain(&dev).free_pages(), 4);
    // SAFETY: the device never ran.
    drop(unsafe { a.unmap() });
    assert_eq!(domain(&dev).free_pages(), 8);
    assert!(iommu(&dev).faults().is_empty());

    // A device whose mask ends below the aperture gets nothing.
    let small = aperture(&sim, DeviceConfig::new().dma_mask(DmaMask::bits(24)));
    let err = small
        .map_to_device(mem.alloc_slice::<u8>(1).unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), MapErrorKind::IovaExhausted { len: 1 });
    assert_eq!(domain(&small).free_pages(), 8);
}

#[test]
fn lazy_invalidation_is_refused_for_untrusted_devices() {
    let sim = SimPlatform::new(1 << 20);
    let mem = sim.memory();
    let untrusted = DeviceConfig::new().trusted(false);
    let lazy = iommu_device(
        &sim,
        IommuDomain::new(SimIommu::new(), InvalidationMode::LAZY),
        untrusted,
    );
    let free0 = domain(&lazy).free_pages();
    let mut buf = mem.alloc_slice_aligned::<u8>(PAGE, PAGE).unwrap();
    buf.copy_from_slice(&pattern(PAGE, 9));
    let err = lazy.map_to_device(buf).unwrap_err();
    assert_eq!(err.kind(), MapErrorKind::LazyIommuUntrusted);
    assert_eq!(&err.into_buffer()[..], &pattern(PAGE, 9)[..]);
    assert_eq!(domain(&lazy).free_pages(), free0);
    assert_eq!(
        domain(&lazy).alloc_range(PAGE, lazy.config()).unwrap_err(),
        MapErrorKind::LazyIommuUntrusted
    );

    // Strict invalidation serves the same device, for whole pages.
    let strict = iommu_device(
        &sim,
        IommuDomain::new(SimIommu::new(), InvalidationMode::Strict),
        untrusted,
    );
    let h = strict
        .map_to_device(mem.alloc_slice_aligned::<u8>(PAGE, PAGE).unwrap())
        .unwrap();
    // SAFETY: the device never ran.
    drop(unsafe { h.unmap() });
    // A sub-page buffer would show the device its neighbours: refused
    // without a bounce policy.
    let err = strict
        .map_to_device(mem.alloc_slice::<u8>(100).unwrap())
        .unwrap_err();
    assert!(matches!(err.kind(), MapErrorKind::UntrustedSubPage { .. }));
}

#[test]
fn magazines_serve_repeated_maps_of_one_size() {
    let sim = SimPlatform::new(1 << 20);
    let mem = sim.memory();
    let dev = strict(&sim);
    let engine = sim.device(&dev);
    let mut buf = mem.alloc_slice::<u8>(3 * PAGE).unwrap();
    let rounds = if cfg!(miri) { 10 } else { 100 };
    let mut first = None;
    for i in 0..rounds {
        let h = dev.map_from_device(buf).unwrap();
        assert_eq!(*first.get_or_insert(h.dma_addr()), h.dma_addr());
        engine.fill(h.dma_addr(), i as u8, 3 * PAGE).unwrap();
        // SAFETY: the fill returned.
        buf = unsafe { h.unmap() };
        assert!(buf.iter().all(|&b| b == i as u8));
    }
    let iova = domain(&dev).iova();
    assert_eq!((iova.cache_misses(), iova.cache_hits()), (1, rounds - 1));
    assert_eq!(dev.stats().iotlb_invalidations(), rounds);
}

#[test]
fn two_step_api_links_scattered_pages_into_one_range() {
    let sim = SimPlatform::new(1 << 20);
    let mem = sim.memory();
    let dev = strict(&sim);
    let engine = sim.device(&dev);
    let d = domain(&dev);
    let free0 = d.free_pages();

    // Three pages that are not physically contiguous.
    let mut pages: Vec<_> = (0..3)
        .map(|_| {
            let p = mem.alloc_slice_aligned::<u8>(PAGE, PAGE).unwrap();
            let _gap = mem.alloc_slice_aligned::<u8>(PAGE, PAGE).unwrap();
            p
        })
        .collect();
    let range = d.alloc_range(3 * PAGE, dev.config()).unwrap();
    assert_eq!(range.len(), 3 * PAGE);
    // 3 pages, rounded to 4.
    assert_eq!(d.free_pages(), free0 - 4);
    let ptrs: Vec<NonNull<u8>> = pages
        .iter_mut()
        .map(|p| NonNull::from(&mut p[..]).cast())
        .collect();
    for (i, (p, &ptr)) in pages.iter().zip(&ptrs).enumerate() {
        let phys = mem.phys_of_buffer(p);
        // SAFETY: the pages stay allocated until after `unlink_and_free`,
        // and are handed to the device (below) for the whole time.
        let dma = unsafe {
            d.link(
                &range,
                i * PAGE,
                phys,
                PAGE,
                dmacap::DmaDirection::FromDevice,
            )
        }
        .unwrap();
        assert_eq!(dma.as_u64(), range.addr().as_u64() + (i * PAGE) as u64);
        // SAFETY: no reference to the page is used until it is taken back.
        unsafe { mem.ownership_changed(ptr, PAGE, Side::Device, dev.id()) };
    }
    // Linking a page twice, or out of the range, is refused.
    let phys0 = mem.phys_of_buffer(&pages[0]);
    // SAFETY: refused, so nothing is handed over.
    let twice = unsafe { d.link(&range, 0, phys0, 1, dmacap::DmaDirection::FromDevice) };
    assert!(matches!(twice, Err(LinkError::Table(_))));
    // SAFETY: as above.
    let outside = unsafe {
        d.link(
            &range,
            2 * PAGE,
            phys0,
            PAGE + 1,
            dmacap::DmaDirection::FromDevice,
        )
    };
    assert!(matches!(outside, Err(LinkError::OutOfRange { .. })));
    // SAFETY: as above.
    let skewed = unsafe { d.link(&range, 1, phys0, 1, dmacap::DmaDirection::FromDevice) };
    assert!(matches!(skewed, Err(LinkError::OffsetMismatch { .. })));

    d.sync(&range, dev.context());
    assert_eq!(dev.stats().iotlb_invalidations(), 1);
    // One device write over the contiguous IOVA range scatters to the pages.
    engine.write(range.addr(), &pattern(3 * PAGE, 4)).unwrap();
    let start = range.addr();
    // SAFETY: the write returned; the pages stay allocated.
    unsafe { d.unlink_and_free(range, dev.context()) };
    assert_eq!(dev.stats().iotlb_invalidations(), 2);
    assert_eq!(d.free_pages(), free0);
    assert!(matches!(
        engine.read(start, &mut [0; 1]),
        Err(SimFault::Untranslated { .. })
    ));
    for &ptr in &ptrs {
        // SAFETY: handed over above; the device is done.
        unsafe { mem.ownership_changed(ptr, PAGE, Side::Cpu, dev.id()) };
    }
    let expect = pattern(3 * PAGE, 4);
    for (i, p) in pages.iter().enumerate() {
        assert_eq!(&p[..], &expect[i * PAGE..(i + 1) * PAGE]);
    }
}

#[test]
fn mmio_is_mapped_noncacheable() {
    let sim = SimPlatform::new(1 << 20);
    let dev = strict(&sim);
    let bar = dmacap::PhysAddr::new(0xfe00_0000);
    // SAFETY: a (simulated) peer BAR, no RAM.
    let m = unsafe { dev.map_mmio::<dmacap::ToDevice>(bar, 2 * PAGE) }.unwrap();
    for k in 0..2 {
        let pte = domain(&dev)
            .walk(DmaAddr::new(m.dma_addr().as_u64() + (k * PAGE) as u64))
            .unwrap();
        assert_eq!(pte.phys().as_u64(), bar.as_u64() + (k * PAGE) as u64);
        assert!(pte.is_noncacheable() && pte.can_read() && !pte.can_write());
    }
    let at = m.dma_addr();
    // SAFETY: the device never used it.
    unsafe { m.unmap() };
    assert_eq!(domain(&dev).walk(at), None);
    assert_eq!(dev.stats().iotlb_invalidations(), 1);
}

#[test]
fn threads_map_and_unmap_concurrently() {
    let rounds = if cfg!(miri) { 4 } else { 200 };
    let sim = SimPlatform::new(1 << 20);
    let dev = strict(&sim);
    let free0 = domain(&dev).free_pages();
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let (sim, dev) = (&sim, &dev);
                s.spawn(move || {
                    let engine = sim.device(dev);
                    let mem: &SimMemory = sim.memory();
                    for r in 0..rounds {
                        let len = 1 + (r * 997 + t as usize * 131) % (3 * PAGE);
                        let h = dev
                            .map_from_device(mem.alloc_slice::<u8>(len).unwrap())
                            .unwrap();
                        let data = pattern(len, t ^ r as u8);
                        engine.write(h.dma_addr(), &data).unwrap();
                        // SAFETY: the write returned.
                        let h = unsafe { h.sync_for_cpu() };
                        assert_eq!(h.contents(), &data[..]);
                        drop(h.unmap());
                    }
                })
            })
            .collect();
        // Joined explicitly: a thread hands its IOVA magazines back in its
        // thread-local destructors, which the scope's implicit join does
        // not wait for (`IovaAllocator::free_pages`).
        threads.into_iter().for_each(|t| t.join().unwrap());
    });
    assert_eq!(domain(&dev).free_pages(), free0);
    assert!(iommu(&dev).faults().is_empty());
    assert_eq!(iommu(&dev).stale_hits(), 0);
    assert_eq!(dev.stats().iotlb_invalidations(), 4 * rounds);
}

#[test]
fn the_ready_made_iommu_device_works() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
    let engine = sim.device(&dev);
    let rx = dev
        .map_from_device(sim.memory().alloc_slice::<u32>(4).unwrap())
        .unwrap();
    engine
        .write(rx.dma_addr(), &[1, 0, 0, 0, 2, 0, 0, 0])
        .unwrap();
    // SAFETY: the write returned.
    let rx = unsafe { rx.sync_for_cpu() };
    assert_eq!(&rx.contents()[..2], &[1, 2]);
}

/// No reverse translation (issue 10, target 7): maps, syncs and unmaps of
/// every kind, single and batched, on a strict and a lazy domain, with and
/// without bouncing, do not walk the page table once; only device accesses
/// (IOTLB misses) do.
#[test]
fn no_sync_or_unmap_path_walks_the_page_table() {
    use dmacap::backend::compose::NonCoherent;
    for mode in [InvalidationMode::Strict, InvalidationMode::LAZY] {
        let mem = dmacap::sim::SimMemory::noncoherent(dmacap::PhysAddr::new(0x8000_0000), 1 << 20);
        let pool = mem.swiotlb(64 * 1024, 1).unwrap();
        let dev = Device::new(
            Composed::from_parts(
                mem.clone(),
                IommuDomain::new(SimIommu::new(), mode),
                NonCoherent(mem.cache().unwrap()),
                pool,
            ),
            DeviceConfig::new(),
        );
        let d = dev.backend().translation();
        let a = dev
            .map_from_device(mem.alloc_slice_aligned::<u8>(256, 64).unwrap())
            .unwrap();
        // A byte buffer sharing a line: bounced.
        let b = dev
            .map_bidirectional(mem.alloc_slice::<u8>(10).unwrap())
            .unwrap();
        assert_eq!(dev.stats().bounced(), 1);
        // SAFETY: no device access happened.
        let a = unsafe { a.sync_for_cpu() }.sync_for_device();
        // SAFETY: as above.
        let b = unsafe { b.sync_prefix_for_cpu(4) }
            .unwrap()
            .sync_for_device();
        let mut batch = dev.batch();
        // SAFETY: as above.
        unsafe {
            batch.unmap_device_owned(a);
            batch.unmap_device_owned(b);
        }
        drop(batch.flush());
        d.flush_queue(dev.context());
        assert_eq!(d.walks(), 0, "{mode:?}");
        // A device access walks (IOTLB miss): the counter works.
        let c = dev
            .map_from_device(mem.alloc_slice_aligned::<u8>(64, 64).unwrap())
            .unwrap();
        dmacap::sim::SimDevice::new(&dev, mem.clone())
            .write(c.dma_addr(), &[1])
            .unwrap();
        assert_eq!(d.walks(), 1);
        // SAFETY: the simulated write returned.
        drop(unsafe { c.unmap() });
        assert_eq!(d.walks(), 1);
    }
}

/// The Arm stage-1 format used from outside the crate, as an SMMUv3 driver
/// uses it: its own table-page source, a domain over it, a device mapping
/// simulator buffers, and the descriptors read back by physical address
/// from the context descriptor's root.
mod arm_stage1 {
    use std::alloc::{Layout, alloc_zeroed, dealloc};
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering, fence};

    use super::NonNull;
    use dmacap::backend::compose::{Coherent, Composed, NoBounce};
    use dmacap::backend::iommu::{
        ArmStage1, InvalidationMode, IommuDomain, IommuHardware, Stage1Options, Stage1Pte,
        TablePage, TablePages,
    };
    use dmacap::sim::SimMemory;
    use dmacap::{Device, DeviceConfig, DmaAddr, PhysAddr};

    const LAYOUT: Layout = match Layout::from_size_align(4096, 4096) {
        Ok(l) => l,
        Err(_) => panic!("a page layout"),
    };

    struct Page(NonNull<u64>);
    // SAFETY: an owned heap page, used under the mutex.
    unsafe impl Send for Page {}

    /// Heap pages at made-up physical addresses, found again by physical
    /// address through a map (no int-to-pointer cast); a coherent walker.
    #[derive(Default)]
    struct Pages(Mutex<(u64, BTreeMap<u64, Page>)>);

    impl Pages {
        /// The walker's read of the descriptor at `phys`.
        fn read(&self, phys: u64) -> u64 {
            let g = self.0.lock().unwrap();
            let page = &g.1[&(phys & !0xfff)];
            // SAFETY: inside a live page of this source.
            unsafe { page.0.add((phys as usize & 0xfff) / 8).read_volatile() }
        }

        fn live(&self) -> usize {
            self.0.lock().unwrap().1.len()
        }
    }

    // SAFETY: zeroed, aligned, owned heap pages the (model) walker reads at
    // their made-up physical address; the fence orders writes.
    unsafe impl TablePages for Pages {
        fn alloc_table(&self) -> Option<TablePage> {
            // SAFETY: not zero-sized.
            let cpu = NonNull::new(unsafe { alloc_zeroed(LAYOUT) })?.cast::<u64>();
            let mut g = self.0.lock().unwrap();
            g.0 += 4096;
            let phys = 0x4000_0000 + g.0;
            g.1.insert(phys, Page(cpu));
            Some(TablePage {
                cpu,
                phys: PhysAddr::new(phys),
            })
        }

        unsafe fn free_table(&self, page: TablePage) {
            let p = self.0.lock().unwrap().1.remove(&page.phys.as_u64());
            assert_eq!(p.map(|p| p.0), Some(page.cpu));
            // SAFETY: allocated with `LAYOUT`, freed once.
            unsafe { dealloc(page.cpu.as_ptr().cast(), LAYOUT) };
        }

        unsafe fn sync_for_walker(&self, _: NonNull<u64>, _: usize) {
            fence(Ordering::Release);
        }
    }

    /// Counts invalidations and syncs; caches nothing.
    #[derive(Default)]
    struct Smmu(AtomicUsize);

    // SAFETY: it caches no translation and translates nothing.
    unsafe impl IommuHardware for Smmu {
        fn invalidate_range(&self, _: DmaAddr, _: u64) {}
        fn invalidate_all(&self) {}
        fn sync(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn arm_stage1_tables_translate_what_the_device_maps() {
        let pages = Pages::default();
        {
            let mem = SimMemory::with_base(PhysAddr::new(0x8000_0000), 1 << 16);
            let table = ArmStage1::new(&pages, Stage1Options::new()).unwrap();
            let domain = IommuDomain::with_table(Smmu::default(), InvalidationMode::Strict, table);
            let dev = Device::new(
                Composed::from_parts(mem.clone(), domain, Coherent, NoBounce),
                DeviceConfig::new(),
            );
            let d = dev.backend().translation();
            let cd = d.with_page_table(|t| t.config());
            // The SMMU's walk from TTB0, by physical address.
            let walk = |iova: DmaAddr| {
                let v = iova.as_u64();
                let mut table = cd.ttbr.as_u64();
                for level in 0..4 {
                    let desc = pages.read(table + ((v >> (39 - 9 * level)) & 511) * 8);
                    if desc & 1 == 0 {
                        return None;
                    }
                    assert_eq!(desc & 3, 3, "table or page descriptor");
                    if level == 3 {
                        return Some(Stage1Pte::from_bits(desc));
                    }
                    table = desc & Stage1Pte::ADDR_MASK;
                }
                unreachable!()
            };
            let tx = mem.alloc_slice::<u8>(100).unwrap();
            let rx = mem.alloc_slice::<u8>(2 * super::PAGE).unwrap();
            let (tx_phys, rx_phys) = (mem.phys_of_buffer(&tx), mem.phys_of_buffer(&rx));
            let tx = dev.map_to_device(tx).unwrap();
            let rx = dev.map_from_device(rx).unwrap();
            let t = walk(tx.dma_addr()).unwrap();
            assert_eq!(t.phys().as_u64(), tx_phys.as_u64() & !0xfff);
            assert!(t.is_read_only() && t.bits() & Stage1Pte::AF != 0);
            let last = DmaAddr::new(rx.dma_addr().as_u64() + 2 * super::PAGE as u64 - 1);
            let r = walk(last).unwrap();
            assert_eq!(
                r.phys().as_u64(),
                (rx_phys.as_u64() + 2 * super::PAGE as u64 - 1) & !0xfff
            );
            assert!(!r.is_read_only(), "FromDevice: read/write on Arm");
            let (tx_iova, rx_iova) = (tx.dma_addr(), rx.dma_addr());
            // SAFETY: no device runs.
            drop(unsafe { (tx.unmap(), rx.unmap()) });
            assert_eq!((walk(tx_iova), walk(rx_iova)), (None, None));
            assert_eq!(d.hardware().0.load(Ordering::Relaxed), 2);
            assert_eq!(d.walks(), 0);
        }
        assert_eq!(pages.live(), 0, "the domain's drop freed every table");
    }
}
