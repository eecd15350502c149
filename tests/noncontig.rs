//! Non-contiguous allocations: physically scattered pages, one contiguous
//! IOVA range, real bytes through the simulated IOMMU and cache.

use dmacap::backend::compose::{Coherent, Composed, NoBounce, NonCoherent};
use dmacap::backend::iommu::{InvalidationMode, IommuDomain};
use dmacap::sim::{SimDevice, SimIommu, SimMemory};
use dmacap::{
    AllocError, Bidirectional, Device, DeviceConfig, DmaAddr, FromDevice, PhysAddr, ToDevice,
};

const PAGE: usize = 4096;

/// Leaves one-page holes between allocated pages, so that page
/// allocations land apart; returns what keeps the RAM fragmented.
fn fragment(mem: &SimMemory, holes: usize) -> Vec<dmacap::sim::SimBuffer<[u8]>> {
    let mut all: Vec<_> = (0..2 * holes)
        .map(|_| mem.alloc_slice_aligned::<u8>(PAGE, PAGE).unwrap())
        .collect();
    let keep = all.split_off(0).into_iter().enumerate();
    keep.filter_map(|(i, b)| (i % 2 == 1).then_some(b))
        .collect()
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / PAGE) as u8).collect()
}

#[test]
fn scattered_pages_one_iova_range_noncoherent() {
    let mem = SimMemory::noncoherent(PhysAddr::new(0x8000_0000), 1 << 20);
    let _holes = fragment(&mem, 4);
    let dev = Device::new(
        Composed::from_parts(
            mem.clone(),
            IommuDomain::new(SimIommu::new(), InvalidationMode::Strict),
            NonCoherent(mem.cache().unwrap()),
            NoBounce,
        ),
        DeviceConfig::new(),
    );
    let engine = SimDevice::new(&dev, mem.clone());
    let free_iova = dev.backend().translation().free_pages();
    let free_ram = mem.free_bytes();
    let len = 3 * PAGE + 100;

    // The device writes one contiguous range; the CPU finds it in pages
    // that are not physically contiguous.
    let rx = dev.alloc_noncontiguous::<FromDevice>(len).unwrap();
    let phys: Vec<PhysAddr> = rx.phys_pages().collect();
    assert_eq!(phys.len(), 4);
    assert!(
        phys.windows(2)
            .any(|w| w[1].as_u64() != w[0].as_u64() + PAGE as u64),
        "physically scattered: {phys:x?}"
    );
    let rx = rx.sync_for_device();
    engine.write(rx.dma_addr(), &pattern(len)).unwrap();
    // SAFETY: the simulated write returned.
    let rx = unsafe { rx.sync_for_cpu() };
    let got: Vec<u8> = rx.segments().flatten().copied().collect();
    assert_eq!(got, pattern(len));
    assert_eq!(
        rx.segments().map(<[u8]>::len).collect::<Vec<_>>(),
        [PAGE, PAGE, PAGE, 100]
    );
    rx.free();

    // And the other way: the CPU fills the pages, the device reads one range.
    let mut tx = dev.alloc_noncontiguous::<ToDevice>(len).unwrap();
    let data = pattern(len);
    for (seg, chunk) in tx.segments_mut().zip(data.chunks(PAGE)) {
        seg.copy_from_slice(chunk);
    }
    let tx = tx.sync_for_device();
    let mut seen = vec![0u8; len];
    engine.read(tx.dma_addr(), &mut seen).unwrap();
    assert_eq!(seen, data);
    // A ToDevice range is read-only to the device.
    assert!(engine.write(tx.dma_addr(), &[1]).is_err());
    // SAFETY: the simulated read returned.
    unsafe { tx.free() };

    assert_eq!(dev.backend().translation().free_pages(), free_iova);
    assert_eq!(mem.free_bytes(), free_ram);
    assert_eq!(mem.device_owned_bytes(), 0);
    assert_eq!(dev.leaked(), 0);
}

#[test]
fn failures_give_every_page_and_iova_back() {
    let mem = SimMemory::with_base(PhysAddr::new(0x8000_0000), 64 * PAGE);
    let dev = Device::new(
        Composed::from_parts(
            mem.clone(),
            IommuDomain::with_aperture(
                SimIommu::new(),
                InvalidationMode::Strict,
                DmaAddr::new(0x10_0000),
                4 * PAGE as u64,
            ),
            Coherent,
            NoBounce,
        ),
        DeviceConfig::new(),
    );
    let free_ram = mem.free_bytes();
    let free_iova = dev.backend().translation().free_pages();
    assert_eq!(
        dev.alloc_noncontiguous::<Bidirectional>(0).unwrap_err(),
        AllocError::ZeroSize
    );
    // More IOVA than the aperture: every page allocated for it comes back.
    assert!(matches!(
        dev.alloc_noncontiguous::<Bidirectional>(8 * PAGE)
            .unwrap_err(),
        AllocError::Map(_)
    ));
    // More pages than the RAM.
    assert!(matches!(
        dev.alloc_noncontiguous::<Bidirectional>(100 * PAGE)
            .unwrap_err(),
        AllocError::OutOfMemory { .. }
    ));
    assert_eq!(mem.free_bytes(), free_ram);
    assert_eq!(dev.backend().translation().free_pages(), free_iova);

    // Dropped while the device owns it: quarantined, counted.
    let held = dev
        .alloc_noncontiguous::<FromDevice>(PAGE)
        .unwrap()
        .sync_for_device();
    drop(held);
    assert_eq!(dev.leaked(), 1);
    assert_eq!(mem.free_bytes(), free_ram - PAGE);
}
