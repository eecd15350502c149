//! The simulator's host-memory hook (`SimMemory::accept_host_memory`),
//! with the plain dmacap API: ordinary heap memory has a physical identity
//! in the host window, which no simulated device reaches; a backend that
//! translates it directly refuses it with an addressing error, a backend
//! with a bounce pool serves it through a slot in simulated RAM.

use std::sync::Arc;

use dmacap::backend::compose::{Coherent, Composed, NoBounce};
use dmacap::backend::direct::{Direct, DirectCoherent, DmaWindow, DmaWindows};
use dmacap::backend::iommu::{InvalidationMode, IommuDomain};
use dmacap::sim::{SimDevice, SimIommu, SimMemory};
use dmacap::virtio::Page;
use dmacap::{Device, DeviceConfig, DmaAddr, MapErrorKind, PhysAddr};

fn ram() -> SimMemory {
    SimMemory::with_base(PhysAddr::new(0x8000_0000), 1 << 20)
}

fn heap() -> Box<[u8]> {
    (0..200u8).collect::<Vec<_>>().into_boxed_slice()
}

#[test]
fn without_the_hook_host_memory_has_no_physical_address() {
    let mem = ram();
    let dev = Device::new(DirectCoherent::new(mem.clone()), DeviceConfig::new());
    let err = dev.map_to_device(heap()).unwrap_err();
    assert!(matches!(err.kind(), MapErrorKind::NoPhysAddr { .. }));
    assert_eq!(&err.into_buffer()[..3], &[0, 1, 2], "the buffer comes back");
}

#[test]
fn a_direct_bus_over_the_ram_refuses_host_memory_with_no_dma_window() {
    let mem = ram();
    mem.accept_host_memory();
    let windows = DmaWindows::single(DmaWindow {
        cpu_start: mem.phys_base(),
        dma_start: DmaAddr::new(mem.phys_base().as_u64()),
        size: mem.size() as u64,
    });
    let dev = Device::new(
        DirectCoherent::with_windows(mem.clone(), windows),
        DeviceConfig::new(),
    );
    let err = dev.map_to_device(heap()).unwrap_err();
    match err.kind() {
        MapErrorKind::NoDmaWindow { phys, len } => {
            assert!(phys.as_u64() >= SimMemory::HOST_PHYS_BASE);
            assert_eq!(len, 200);
        }
        other => panic!("expected NoDmaWindow, got {other}"),
    }
    // Under a 32-bit mask and the identity bus: beyond the mask.
    let dev = Device::new(DirectCoherent::new(mem.clone()), DeviceConfig::new());
    let err = dev.map_to_device(heap()).unwrap_err();
    assert!(
        matches!(err.kind(), MapErrorKind::BeyondMask { .. }),
        "{}",
        err.kind()
    );
}

#[test]
fn an_iommu_refuses_host_memory_with_no_dma_window() {
    let mem = ram();
    mem.accept_host_memory();
    let domain = IommuDomain::new(SimIommu::new(), InvalidationMode::Strict);
    let free0 = domain.free_pages();
    let dev = Device::new(
        Composed::from_parts(mem.clone(), domain, Coherent, NoBounce),
        DeviceConfig::new(),
    );
    let err = dev.map_from_device(heap()).unwrap_err();
    assert!(
        matches!(err.kind(), MapErrorKind::NoDmaWindow { .. }),
        "{}",
        err.kind()
    );
    assert_eq!(
        dev.backend().translation().free_pages(),
        free0,
        "nothing held"
    );
}

#[test]
fn bounce_pools_serve_host_memory() {
    let mem = ram();
    mem.accept_host_memory();
    let pool = Arc::new(mem.swiotlb(64 * 1024, 1).unwrap());
    // Direct bus + pool, and an IOMMU + pool for a trusted device (whole
    // pages map where they lie, so the host buffer reaches the IOMMU's
    // refusal and is bounced from there).
    let direct = Device::new(
        Composed::from_parts(mem.clone(), Direct::identity(), Coherent, pool.clone()),
        DeviceConfig::new(),
    );
    let iommu = Device::new(
        Composed::from_parts(
            mem.clone(),
            IommuDomain::new(SimIommu::new(), InvalidationMode::Strict),
            Coherent,
            pool.clone(),
        ),
        DeviceConfig::new(),
    );
    // A small heap buffer, and a whole page-aligned page of the heap.
    let page = Box::new(Page([0; 4096]));
    assert_eq!(page.0.as_ptr() as usize % 4096, 0);

    let small = heap();
    let expect = small.to_vec();
    let h = direct.map_to_device(small).unwrap();
    let mut seen = vec![0u8; expect.len()];
    SimDevice::new(&direct, mem.clone())
        .read(h.dma_addr(), &mut seen)
        .unwrap();
    assert_eq!(seen, expect, "direct+pool: small");
    // SAFETY: the read returned.
    let small = unsafe { h.unmap() };
    let h = iommu.map_from_device(small).unwrap();
    let data: Vec<u8> = (0..200).map(|i| (i * 3) as u8).collect();
    SimDevice::new(&iommu, mem.clone())
        .write(h.dma_addr(), &data)
        .unwrap();
    // SAFETY: the write returned.
    let small = unsafe { h.unmap() };
    assert_eq!(&small[..], &data[..], "iommu+pool: small");

    let h = direct.map_to_device(page).unwrap();
    let mut seen = vec![1u8; 4096];
    SimDevice::new(&direct, mem.clone())
        .read(h.dma_addr(), &mut seen)
        .unwrap();
    assert_eq!(seen, vec![0; 4096], "direct+pool: page");
    // SAFETY: the read returned.
    let page = unsafe { h.unmap() };
    let h = iommu.map_from_device(page).unwrap();
    let data: Vec<u8> = (0..4096).map(|i| (i * 5) as u8).collect();
    SimDevice::new(&iommu, mem.clone())
        .write(h.dma_addr(), &data)
        .unwrap();
    // SAFETY: the write returned.
    let page = unsafe { h.unmap() };
    assert_eq!(&page.0[..], &data[..], "iommu+pool: page");

    assert_eq!(direct.stats().bounced(), 2);
    assert_eq!(iommu.stats().bounced(), 2);
    assert_eq!(pool.free_slots(), pool.total_slots());
    assert_eq!(mem.device_owned_bytes(), 0);
}
