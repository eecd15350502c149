//! Coherent allocations on every backend combination that maps them: bytes
//! written in the CPU-only phase reach the device, and every later access
//! in either direction is seen by the other side without maintenance,
//! because the memory is shared (uncached on a non-coherent device).
//! Failures hold nothing.

use dmacap::backend::Backend;
use dmacap::backend::bounce::Swiotlb;
use dmacap::backend::compose::{Coherent as CoherentCache, Composed, NoBounce, NonCoherent};
use dmacap::backend::iommu::{InvalidationMode, IommuDomain};
use dmacap::platform::DmaAllocator;
use dmacap::sim::{BusTranslate, SimDevice, SimIommu, SimMemory, SimPlatform};
use dmacap::{AllocError, Device, DeviceConfig, DmaAddr, DmaMask, MapErrorKind, PhysAddr};
use dmacap::{dma_read, dma_write};
use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// A virtqueue-like available ring header.
#[derive(FromBytes, IntoBytes, Immutable, Debug)]
#[repr(C)]
struct Avail {
    flags: U16,
    idx: U16,
    ring: [U16; 6],
}

/// A descriptor.
#[derive(FromBytes, IntoBytes, Immutable, Debug, Clone, Copy, PartialEq)]
#[repr(C)]
struct Desc {
    addr: U64,
    len: U32,
    flags: U16,
    next: U16,
}

fn at(dma: DmaAddr, off: usize) -> DmaAddr {
    dma.checked_add(off as u64).unwrap()
}

/// The whole life of a ring and a descriptor table on `dev`.
fn ring_round_trip<B>(mem: &SimMemory, dev: &Device<B>)
where
    B: Backend<Platform = SimMemory> + BusTranslate,
{
    let engine = SimDevice::new(dev, mem.clone());
    let allocated = mem.allocated_bytes();

    // CPU phase: ordinary references, no DMA address.
    let mut avail = dev.alloc_coherent::<Avail>().unwrap();
    avail.flags = U16::new(1);
    avail.ring[0] = U16::new(5);
    let mut descs = dev.alloc_coherent_slice::<Desc>(8).unwrap();
    for (i, d) in descs.iter_mut().enumerate() {
        d.addr = U64::new(0x1000 * i as u64);
        d.len = U32::new(512);
    }
    assert!(mem.allocated_bytes() > allocated);

    // Shared: what the CPU phase wrote is what the device reads.
    let mut avail = avail.share().unwrap();
    let mut descs = descs.share().unwrap();
    let mut head = [0u8; 6];
    engine.read(avail.dma_addr(), &mut head).unwrap();
    assert_eq!(head, [1, 0, 0, 0, 5, 0]);
    let mut d3 = [0u8; 16];
    engine.read(at(descs.dma_addr(), 3 * 16), &mut d3).unwrap();
    assert_eq!(Desc::read_from_bytes(&d3).unwrap().addr.get(), 0x3000);

    // CPU stores reach the device at once, and device stores the CPU.
    dma_write!(avail, Avail, idx, U16::new(1));
    dma_write!(descs[5], Desc, flags, U16::new(0x2));
    engine
        .read(at(avail.dma_addr(), 2), &mut head[..2])
        .unwrap();
    assert_eq!(&head[..2], &[1, 0]);
    engine
        .read(at(descs.dma_addr(), 5 * 16 + 12), &mut head[..2])
        .unwrap();
    assert_eq!(&head[..2], &[2, 0]);
    engine
        .write(at(descs.dma_addr(), 3 * 16 + 8), &77u32.to_le_bytes())
        .unwrap();
    engine.write(at(avail.dma_addr(), 4), &[9, 0]).unwrap();
    assert_eq!(dma_read!(descs[3], Desc, len).get(), 77);
    assert_eq!(dma_read!(avail, Avail, ring).map(|r| r.get())[0], 9);
    let whole = descs.read_elem(3);
    assert_eq!((whole.addr.get(), whole.len.get()), (0x3000, 77));
    descs.write_elem(
        7,
        Desc {
            addr: U64::new(0xabc),
            len: U32::new(1),
            flags: U16::new(0),
            next: U16::new(0),
        },
    );
    engine.read(at(descs.dma_addr(), 7 * 16), &mut d3).unwrap();
    assert_eq!(Desc::read_from_bytes(&d3).unwrap().addr.get(), 0xabc);
    assert_eq!(avail.read().ring[0].get(), 9);

    // Nothing bounced, nothing maintained by line.
    assert_eq!(dev.stats().bounced(), 0);
    assert_eq!(dev.stats().lines_cleaned(), 0);

    // SAFETY: the simulated device is not running.
    unsafe {
        avail.free();
        descs.free();
    }
    assert_eq!(mem.allocated_bytes(), allocated);
    assert_eq!(mem.device_owned_bytes(), 0);
    assert_eq!(dev.leaked(), 0);
}

#[test]
fn direct_coherent() {
    let sim = SimPlatform::new(1 << 20);
    ring_round_trip(sim.memory(), &sim.coherent_device());
}

#[test]
fn direct_over_the_simulated_noncoherent_cache() {
    let sim = SimPlatform::noncoherent(1 << 20);
    ring_round_trip(sim.memory(), &sim.noncoherent_device());
}

fn iommu_domain(mode: InvalidationMode) -> IommuDomain<SimIommu> {
    IommuDomain::new(SimIommu::new(), mode)
}

#[test]
fn strict_iommu_coherent_and_noncoherent() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
    let free = dev.backend().translation().free_pages();
    ring_round_trip(sim.memory(), &dev);
    assert_eq!(dev.backend().translation().free_pages(), free);

    let sim = SimPlatform::noncoherent(1 << 20);
    let mem = sim.memory().clone();
    let cache = mem.cache().unwrap();
    let dev = Device::new(
        Composed::from_parts(
            mem.clone(),
            iommu_domain(InvalidationMode::Strict),
            NonCoherent(cache),
            NoBounce,
        ),
        DeviceConfig::new(),
    );
    let free = dev.backend().translation().free_pages();
    ring_round_trip(&mem, &dev);
    assert_eq!(dev.backend().translation().free_pages(), free);
}

#[test]
fn lazy_iommu_returns_the_iova_after_the_queue_flush() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.iommu_device(InvalidationMode::LAZY, DeviceConfig::new());
    let d = dev.backend().translation();
    let free = d.free_pages();
    ring_round_trip(sim.memory(), &dev);
    assert!(d.free_pages() < free, "queued, not yet invalidated");
    d.flush_queue(dev.context());
    assert_eq!(d.free_pages(), free);
}

#[test]
fn untrusted_device_gets_whole_pages_and_no_bounce() {
    let sim = SimPlatform::noncoherent(4 << 20);
    let mem = sim.memory().clone();
    let pool: Swiotlb = mem.swiotlb(64 * 1024, 1).unwrap();
    let dev = Device::new(
        Composed::from_parts(
            mem.clone(),
            iommu_domain(InvalidationMode::Strict),
            NonCoherent(mem.cache().unwrap()),
            pool,
        ),
        DeviceConfig::new().trusted(false),
    );
    let ring = dev.alloc_coherent::<Avail>().unwrap();
    assert_eq!(ring.allocated_bytes(), 4096, "a whole IOMMU page");
    let ring = ring.share().unwrap();
    assert_eq!(ring.dma_addr().as_u64() % 4096, 0);
    // The device reaches the whole page it was given, and nothing more.
    let engine = SimDevice::new(&dev, mem.clone());
    engine.write(at(ring.dma_addr(), 4000), &[1; 96]).unwrap();
    assert!(engine.write(at(ring.dma_addr(), 4096), &[1]).is_err());
    // SAFETY: the simulated device is not running.
    unsafe { ring.free() };
    ring_round_trip(&mem, &dev);
}

#[test]
fn dropping_a_shared_allocation_quarantines_it() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let ring = dev.alloc_coherent::<Avail>().unwrap().share().unwrap();
    let held = sim.memory().allocated_bytes();
    drop(ring);
    assert_eq!(dev.leaked(), 1);
    assert_eq!(sim.memory().allocated_bytes(), held, "never freed");

    // The CPU phase was never mapped: dropping it frees.
    let before = sim.memory().allocated_bytes();
    let cpu_only = dev.alloc_coherent::<Avail>().unwrap();
    drop(cpu_only);
    assert_eq!(sim.memory().allocated_bytes(), before);
    assert_eq!(dev.leaked(), 1);
}

#[test]
fn failures_hold_nothing() {
    let sim = SimPlatform::new(1 << 20);
    let mem = sim.memory();
    let dev = sim.coherent_device();
    let free = mem.free_bytes();

    assert_eq!(
        dev.alloc_coherent::<()>().unwrap_err(),
        AllocError::ZeroSize
    );
    assert_eq!(
        dev.alloc_coherent_slice::<Desc>(0).unwrap_err(),
        AllocError::ZeroSize
    );
    assert!(matches!(
        dev.alloc_coherent_slice::<Desc>(usize::MAX / 8)
            .unwrap_err(),
        AllocError::TooLarge { .. }
    ));
    let too_big = dev
        .alloc_coherent_slice::<Desc>((2 << 20) / 16)
        .unwrap_err();
    assert!(
        matches!(too_big, AllocError::OutOfMemory { .. }),
        "{too_big}"
    );
    assert!(too_big.to_string().contains("no DMA memory"), "{too_big}");
    assert_eq!(mem.free_bytes(), free);

    // A device that addresses less than where RAM starts: no memory it can
    // reach, refused before anything is allocated.
    let low = sim.coherent_device_with(
        DeviceConfig::new().dma_mask(DmaMask::bits(31)),
        dmacap::backend::direct::DmaWindows::identity(),
    );
    assert!(matches!(
        low.alloc_coherent::<Avail>().unwrap_err(),
        AllocError::OutOfMemory {
            max_phys: 0x7fff_ffff,
            ..
        }
    ));
    assert_eq!(mem.free_bytes(), free);

    // IOVA space exhausted at share: the memory is freed, the IOVA space
    // is as it was.
    let tiny = Device::new(
        Composed::from_parts(
            mem.clone(),
            IommuDomain::with_aperture(
                SimIommu::new(),
                InvalidationMode::Strict,
                DmaAddr::new(0x1000),
                0x1000,
            ),
            CoherentCache,
            NoBounce,
        ),
        DeviceConfig::new(),
    );
    let pages = tiny.backend().translation().free_pages();
    let two_pages = tiny.alloc_coherent_slice::<u8>(8192).unwrap();
    assert_eq!(
        two_pages.share().unwrap_err(),
        AllocError::Map(MapErrorKind::IovaExhausted { len: 8192 })
    );
    assert_eq!(tiny.backend().translation().free_pages(), pages);
    assert_eq!(mem.free_bytes(), free);
}

#[test]
fn the_platform_hook_refuses_what_it_cannot_give() {
    let mem = SimMemory::with_base(PhysAddr::new(0x1000_0000), 1 << 16);
    assert!(mem.alloc_dma(0, 64, u64::MAX, false).is_none());
    assert!(
        mem.alloc_dma(64, 64, 0x1000_0000 + 62, false).is_none(),
        "last byte above the limit"
    );
    let p = mem.alloc_dma(64, 64, 0x1000_0000 + 63, false).unwrap();
    assert_eq!(mem.allocated_bytes(), 64);
    // SAFETY: allocated just above, never mapped.
    unsafe { mem.free_dma(p, 64, 64) };
    assert_eq!(mem.allocated_bytes(), 0);
}

#[test]
fn direct_with_a_bounce_pool_never_bounces_a_coherent_allocation() {
    let sim = SimPlatform::noncoherent(4 << 20);
    let mem = sim.memory().clone();
    let pool: Swiotlb = mem.swiotlb(64 * 1024, 1).unwrap();
    let dev = Device::new(
        dmacap::backend::noncoherent::DirectNonCoherent::new(mem.clone(), mem.cache().unwrap())
            .with_bounce(pool),
        DeviceConfig::new(),
    );
    ring_round_trip(&mem, &dev);
    assert_eq!(dev.backend().bounce().used_slots(), 0);
}
