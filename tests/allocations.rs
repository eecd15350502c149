//! Page allocations, line buffers, never-bounce maps, ranged syncs on a
//! long-lived mapping, and the HAL shapes (run-time direction, handles by
//! DMA address), moving real bytes through the simulated platform.

use dmacap::backend::bounce::Swiotlb;
use dmacap::backend::compose::{Composed, NoBounce, NonCoherent};
use dmacap::backend::iommu::{InvalidationMode, IommuDomain};
use dmacap::buffer::{Granule, line_buf};
use dmacap::erased::{AnyMapped, ByDmaAddr};
use dmacap::sim::{SimDevice, SimIommu, SimMemory, SimPlatform};
use dmacap::typenum::U64;
use dmacap::{
    AllocError, Bidirectional, Device, DeviceConfig, DmaAddr, DmaDirection, DmaMask, FromDevice,
    MapErrorKind, PhysAddr, ToDevice,
};
use zerocopy::IntoBytes;

fn at(dma: DmaAddr, off: usize) -> DmaAddr {
    dma.checked_add(off as u64).unwrap()
}

#[test]
fn pages_start_cpu_owned_and_move_with_the_ordinary_syncs() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let engine = sim.device(&dev);
    let before = sim.memory().allocated_bytes();

    // Not a multiple of the line, not a line-aligned type: still fine.
    let mut cmd = dev.alloc_pages::<ToDevice, u32>(5).unwrap();
    assert_eq!(cmd.contents(), &[0; 5]);
    cmd.contents_mut().copy_from_slice(&[1, 2, 3, 4, 5]);
    assert_eq!(
        sim.memory().device_owned_bytes(),
        0,
        "no device was given it yet"
    );
    let cmd = cmd.sync_for_device();
    let mut seen = [0u8; 20];
    engine.read(cmd.dma_addr(), &mut seen).unwrap();
    assert_eq!(seen, [1u32, 2, 3, 4, 5].as_bytes());

    let rx = dev
        .alloc_pages::<FromDevice, u8>(100)
        .unwrap()
        .sync_for_device();
    engine.write(rx.dma_addr(), &[7; 100]).unwrap();
    // SAFETY: the simulated write returned.
    let rx = unsafe { rx.sync_for_cpu() };
    assert_eq!(rx.contents(), &[7; 100]);
    assert_eq!(dev.stats().bounced(), 0);

    // Unmapped, the pages are an ordinary buffer that frees itself.
    let pages = rx.unmap();
    assert_eq!(pages.allocated_bytes(), 128);
    drop(pages);
    // SAFETY: the simulated read returned.
    drop(unsafe { cmd.unmap() });
    assert_eq!(sim.memory().allocated_bytes(), before);
    assert_eq!(dev.leaked(), 0);
}

#[test]
fn pages_behind_an_untrusted_iommu_with_a_pool_are_never_bounced() {
    let mem = SimMemory::noncoherent(PhysAddr::new(0x8000_0000), 4 << 20);
    let pool: Swiotlb = mem.swiotlb(64 * 1024, 1).unwrap();
    let dev = Device::new(
        Composed::from_parts(
            mem.clone(),
            IommuDomain::new(SimIommu::new(), InvalidationMode::Strict),
            NonCoherent(mem.cache().unwrap()),
            pool,
        ),
        DeviceConfig::new().trusted(false),
    );
    let engine = SimDevice::new(&dev, mem.clone());
    let free_pages = dev.backend().translation().free_pages();
    let rx = dev
        .alloc_pages::<Bidirectional, u8>(10)
        .unwrap()
        .sync_for_device();
    assert_eq!(dev.stats().bounced(), 0, "whole pages: nothing to hide");
    engine.write(rx.dma_addr(), &[1; 10]).unwrap();
    // The IOMMU page holds nothing but this allocation: the rest of it, as
    // a rogue device would read it, is zeroes.
    let mut rest = [0xff; 4086];
    // SAFETY: the allocation's padding, which nothing references or writes.
    unsafe { engine.read_unchecked(at(rx.dma_addr(), 10), &mut rest) }.unwrap();
    assert!(rest.iter().all(|&b| b == 0));
    // SAFETY: the simulated write returned.
    let rx = unsafe { rx.sync_for_cpu() };
    assert_eq!(rx.contents(), &[1; 10]);
    drop(rx); // CPU-owned: unmapped and freed
    assert_eq!(dev.backend().translation().free_pages(), free_pages);
    assert_eq!(
        dev.backend().bounce().free_slots(),
        dev.backend().bounce().total_slots()
    );
}

#[test]
fn page_allocation_failures_hold_nothing() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
    let free = sim.memory().free_bytes();
    assert_eq!(
        dev.alloc_pages::<ToDevice, u8>(0).unwrap_err(),
        AllocError::ZeroSize
    );
    assert!(matches!(
        dev.alloc_pages::<ToDevice, u64>(usize::MAX / 4)
            .unwrap_err(),
        AllocError::TooLarge { .. }
    ));
    assert!(matches!(
        dev.alloc_pages::<ToDevice, u8>(2 << 20).unwrap_err(),
        AllocError::OutOfMemory { .. }
    ));
    assert_eq!(sim.memory().free_bytes(), free);

    let tiny = Device::new(
        Composed::from_parts(
            sim.memory().clone(),
            IommuDomain::with_aperture(
                SimIommu::new(),
                InvalidationMode::Strict,
                DmaAddr::new(0x1000),
                0x1000,
            ),
            dmacap::backend::compose::Coherent,
            NoBounce,
        ),
        DeviceConfig::new(),
    );
    let iova = tiny.backend().translation().free_pages();
    let err = tiny.alloc_pages::<ToDevice, u8>(8192).unwrap_err();
    assert_eq!(
        err,
        AllocError::Map(MapErrorKind::IovaExhausted { len: 8192 })
    );
    assert_eq!(tiny.backend().translation().free_pages(), iova);
    assert_eq!(sim.memory().free_bytes(), free);
}

#[test]
fn a_line_buffer_maps_on_a_noncoherent_device_without_a_check_or_a_bounce() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let engine = sim.device(&dev);
    let frame: Vec<u8> = (0..1500).map(|i| i as u8).collect();
    // The type a `line_buf::<U64>` has, from the simulated RAM.
    let heap = line_buf::<U64>(1500);
    assert_eq!(heap.len(), 24);
    let rx = sim
        .memory()
        .alloc_slice::<<U64 as Granule>::Line>(24)
        .unwrap();
    let rx = dev.map_from_device(rx).unwrap();
    engine.write(rx.dma_addr(), &frame).unwrap();
    // SAFETY: the simulated write returned.
    let rx = unsafe { rx.sync_prefix_for_cpu(24) }.unwrap();
    assert_eq!(&rx.contents().as_bytes()[..1500], &frame[..]);
    drop(rx);
    assert_eq!(dev.stats().bounced(), 0);
}

#[test]
fn a_never_bounce_map_is_refused_at_run_time_where_it_would_bounce() {
    // RAM straddling 4 GiB, a pool below, a 32-bit device.
    let mem = SimMemory::with_base(PhysAddr::new(0xfff0_0000), 4 << 20);
    let pool: Swiotlb = mem.swiotlb(64 * 1024, 1).unwrap();
    let dev = Device::new(
        dmacap::backend::direct::DirectCoherent::new(mem.clone()).with_bounce(pool),
        DeviceConfig::new().dma_mask(DmaMask::bits(32)),
    );
    let filler = mem
        .alloc_slice::<u8>(0x1_0000_0000 - 0xfff0_0000 - 64 * 1024)
        .unwrap();
    let high = mem.alloc_slice::<u8>(64).unwrap();
    assert!(mem.phys_of_buffer(&high).as_u64() >= 1 << 32);
    let err = dev.map_require_unbounced::<ToDevice, _>(high).unwrap_err();
    assert!(
        matches!(err.kind(), MapErrorKind::WouldBounce { .. }),
        "{err}"
    );
    assert_eq!(dev.backend().bounce().used_slots(), 0);
    let high = err.into_buffer();
    // The ordinary map bounces it.
    let h = dev.map_to_device(high).unwrap();
    assert_eq!(dev.stats().bounced(), 1);
    // SAFETY: no device runs.
    drop(unsafe { h.unmap() });
    drop(filler);

    // A backend without a pool proves it by type: `map_unbounced`.
    let plain = SimPlatform::new(1 << 16);
    let direct = plain.coherent_device();
    let h = direct
        .map_unbounced::<ToDevice, _>(plain.memory().alloc_slice::<u8>(8).unwrap())
        .unwrap();
    // SAFETY: no device runs.
    drop(unsafe { h.unmap() });
}

#[test]
fn ranged_syncs_on_a_long_lived_ring_in_streaming_memory() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let engine = sim.device(&dev);
    // A 4-entry ring of 64-byte entries the device owns for good.
    let ring = dev
        .map_bidirectional(sim.memory().alloc_slice_aligned::<u8>(256, 64).unwrap())
        .unwrap();
    engine.write(at(ring.dma_addr(), 128), &[0xaa; 64]).unwrap();
    let mut entry = [0u8; 64];
    // SAFETY: the device finished entry 2 (its write returned) and leaves
    // it alone until we are done.
    let ring = unsafe { ring.read_range(128, &mut entry) }.unwrap();
    assert_eq!(entry, [0xaa; 64]);
    // SAFETY: the device does not touch entry 3 now.
    let ring = unsafe { ring.write_range(192, &[0x55; 64]) }.unwrap();
    engine.read(at(ring.dma_addr(), 192), &mut entry).unwrap();
    assert_eq!(entry, [0x55; 64]);
    // Checked ranges: past the end, empty, or splitting a cache line; the
    // handle comes back in the error.
    // SAFETY: refused before anything happens.
    let ring = unsafe {
        let ring = ring.read_range(250, &mut entry).unwrap_err().into_handle();
        let ring = ring.read_range(0, &mut []).unwrap_err().into_handle();
        ring.write_range(10, &[1; 8]).unwrap_err().into_handle()
    };
    // SAFETY: the device is done with the ring.
    drop(unsafe { ring.unmap() });
}

#[test]
fn a_hal_maps_with_a_run_time_direction_and_finds_handles_by_address() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
    let engine = sim.device(&dev);
    let mut live = ByDmaAddr::new();
    let mut addrs = Vec::new();
    for dir in [
        DmaDirection::ToDevice,
        DmaDirection::FromDevice,
        DmaDirection::Bidirectional,
    ] {
        let mut buf = sim.memory().alloc_slice::<u8>(16).unwrap();
        buf.fill(dir as u8 + 1);
        let h = dev.map_any(buf, dir).unwrap();
        assert_eq!(h.direction(), dir);
        addrs.push((dir, live.insert(h).unwrap()));
    }
    assert_eq!(live.len(), 3);
    // The device writes where the direction lets it (the IOMMU enforces).
    for &(dir, dma) in &addrs {
        let wrote = engine.write(dma, &[0xee; 16]);
        assert_eq!(wrote.is_ok(), dir != DmaDirection::ToDevice, "{dir:?}");
    }
    // `unshare(paddr)`: found by address, converted back, unmapped.
    for (dir, dma) in addrs {
        let h = live.take(dma).unwrap();
        // SAFETY: the simulated device finished.
        let h = unsafe { h.sync_for_cpu() };
        let expect = if dir == DmaDirection::ToDevice {
            dir as u8 + 1
        } else {
            0xee
        };
        assert_eq!(h.contents(), &[expect; 16]);
        match h.into_direction::<Bidirectional>() {
            Ok(bi) => assert_eq!(bi.direction(), DmaDirection::Bidirectional),
            Err(other) => {
                assert_ne!(other.direction(), DmaDirection::Bidirectional);
                drop(other.unmap());
            }
        }
    }
    assert!(live.is_empty());
    assert!(live.take(DmaAddr::new(0x1234)).is_none());
    let _: Option<AnyMapped<'_, dmacap::DevOwned, dmacap::sim::SimBuffer<[u8]>, _>> =
        live.take(DmaAddr::new(0));
    assert_eq!(dev.leaked(), 0);
}

#[test]
fn an_address_width_proof_makes_the_map_infallible() {
    use dmacap::typenum::{U31, U32, U33};
    // RAM just below 4 GiB; a 32-bit device reaches it all.
    let sim = SimPlatform::with_base(PhysAddr::new(0xfff0_0000), 4 << 20);
    let dev = sim.coherent_device_with(
        DeviceConfig::new().dma_mask(DmaMask::bits(32)),
        dmacap::backend::direct::DmaWindows::identity(),
    );
    let engine = sim.device(&dev);
    let reach = dev.reach::<U32>().unwrap();
    assert_eq!(
        dev.reach::<U33>().unwrap_err(),
        AllocError::ZoneTooWide {
            zone_bits: 33,
            mask_bits: 32
        }
    );
    let mut buf = dev.alloc_zoned::<U32, u8>(100).unwrap();
    buf.copy_from_slice(&[3; 100]);
    let tx = reach.map::<ToDevice, _, _>(buf);
    let mut seen = [0u8; 100];
    engine.read(tx.dma_addr(), &mut seen).unwrap();
    assert_eq!(seen, [3; 100]);
    // SAFETY: the simulated read returned.
    drop(unsafe { tx.unmap() });
    // The zone below 2^31 has no memory here (RAM starts above 2 GiB).
    let free = sim.memory().free_bytes();
    assert!(matches!(
        dev.alloc_zoned::<U31, u8>(100).unwrap_err(),
        AllocError::OutOfMemory {
            max_phys: 0x7fff_ffff,
            ..
        }
    ));
    assert_eq!(sim.memory().free_bytes(), free);
}

/// A page allocation's life on `dev`: CPU fills, device reads; device
/// writes, CPU reads; everything back at the end.
fn pages_round_trip<B>(mem: &SimMemory, dev: &Device<B>)
where
    B: dmacap::backend::Backend<Platform = SimMemory> + dmacap::sim::BusTranslate,
{
    let engine = SimDevice::new(dev, mem.clone());
    let before = mem.allocated_bytes();
    let mut buf = dev.alloc_pages::<Bidirectional, u8>(300).unwrap();
    buf.contents_mut().fill(0x3c);
    let buf = buf.sync_for_device();
    let mut seen = [0u8; 300];
    engine.read(buf.dma_addr(), &mut seen).unwrap();
    assert_eq!(seen, [0x3c; 300]);
    engine.write(buf.dma_addr(), &[0xc3; 300]).unwrap();
    // SAFETY: the simulated write returned.
    let buf = unsafe { buf.sync_for_cpu() };
    assert_eq!(buf.contents(), &[0xc3; 300]);
    drop(buf);
    assert_eq!(mem.allocated_bytes(), before);
    assert_eq!(dev.stats().bounced(), 0);
    assert_eq!(dev.leaked(), 0);
}

#[test]
fn pages_on_every_combination() {
    use dmacap::backend::compose::Coherent as Snoops;
    let sim = SimPlatform::new(4 << 20);
    pages_round_trip(sim.memory(), &sim.coherent_device());
    let nc = SimPlatform::noncoherent(4 << 20);
    pages_round_trip(nc.memory(), &nc.noncoherent_device());
    for mode in [InvalidationMode::Strict, InvalidationMode::LAZY] {
        pages_round_trip(sim.memory(), &sim.iommu_device(mode, DeviceConfig::new()));
    }
    let mem = nc.memory().clone();
    let iommu_nc = Device::new(
        Composed::from_parts(
            mem.clone(),
            IommuDomain::new(SimIommu::new(), InvalidationMode::Strict),
            NonCoherent(mem.cache().unwrap()),
            NoBounce,
        ),
        DeviceConfig::new(),
    );
    pages_round_trip(&mem, &iommu_nc);
    let pool: Swiotlb = sim.memory().swiotlb(64 * 1024, 1).unwrap();
    let bounce = Device::new(
        Composed::from_parts(
            sim.memory().clone(),
            dmacap::backend::direct::Direct::new(dmacap::backend::direct::DmaWindows::identity()),
            Snoops,
            pool,
        ),
        DeviceConfig::new(),
    );
    pages_round_trip(sim.memory(), &bounce);
}
