//! What a device can see beyond its buffer, and the errors that must leave
//! every pool as it was.
//!
//! The trade-off: an IOMMU grants whole 4 KiB pages. A *trusted* device
//! mapped without bouncing can read everything that shares a page with its
//! buffer (cheap, and acceptable for a device you trust). An *untrusted*
//! device gets a bounce buffer that fills whole pages with nothing but the
//! copy and zeroed padding, so the neighbours are out of its reach.

use std::sync::Arc;

use dmacap::backend::bounce::Swiotlb;
use dmacap::backend::compose::{Coherent, Composed, NoBounce};
use dmacap::backend::direct::Direct;
use dmacap::backend::iommu::{InvalidationMode, IommuDomain};
use dmacap::sim::{SimDevice, SimFault, SimIommu, SimMemory};
use dmacap::{Device, DeviceConfig, DmaAddr, DmaMask, MapErrorKind, PhysAddr, ToDevice};

const PAGE: u64 = 4096;
const SECRET: &[u8; 16] = b"neighbour secret";

fn iommu() -> IommuDomain<SimIommu> {
    IommuDomain::new(SimIommu::new(), InvalidationMode::Strict)
}

/// A secret and, in the same page right after it, a 192-byte buffer the
/// driver maps.
fn secret_and_buffer(
    mem: &SimMemory,
) -> (dmacap::sim::SimBuffer<[u8]>, dmacap::sim::SimBuffer<[u8]>) {
    let mut secret = mem.alloc_slice_aligned::<u8>(256, PAGE as usize).unwrap();
    secret[..16].copy_from_slice(SECRET);
    let mut buf = mem.alloc_slice_aligned::<u8>(192, 64).unwrap();
    buf.fill(0x42);
    let (s, b) = (mem.phys_of_buffer(&secret), mem.phys_of_buffer(&buf));
    assert_eq!(s.as_u64() / PAGE, b.as_u64() / PAGE, "same page");
    (secret, buf)
}

fn page_of(dma: DmaAddr) -> DmaAddr {
    DmaAddr::new(dma.as_u64() & !(PAGE - 1))
}

#[test]
fn a_trusted_device_can_read_its_page_neighbours() {
    let mem = SimMemory::with_base(PhysAddr::new(0x8000_0000), 1 << 20);
    let dev = Device::new(
        Composed::from_parts(mem.clone(), iommu(), Coherent, NoBounce),
        DeviceConfig::new(),
    );
    let engine = SimDevice::new(&dev, mem.clone());
    let (secret, buf) = secret_and_buffer(&mem);
    let h = dev.map_to_device(buf).unwrap();
    let mut page = vec![0u8; PAGE as usize];
    // SAFETY: no reference to the page's bytes is live (the secret's buffer
    // is not borrowed now) and nothing writes them during the read.
    unsafe { engine.read_unchecked(page_of(h.dma_addr()), &mut page) }.unwrap();
    assert_eq!(
        &page[..16],
        SECRET,
        "the whole page is mapped: the neighbour leaks"
    );
    assert_eq!(dev.stats().bounced(), 0);
    // SAFETY: the read returned.
    drop(unsafe { h.unmap() });
    drop(secret);
}

#[test]
fn an_untrusted_device_sees_only_its_bounce_copy_and_zero_padding() {
    let mem = SimMemory::with_base(PhysAddr::new(0x8000_0000), 1 << 20);
    let pool = Arc::new(mem.swiotlb(64 * 1024, 1).unwrap());
    let dev = Device::new(
        Composed::from_parts(mem.clone(), iommu(), Coherent, pool.clone()),
        DeviceConfig::new().trusted(false),
    );
    let engine = SimDevice::new(&dev, mem.clone());
    let (secret, buf) = secret_and_buffer(&mem);
    let h = dev.map_to_device(buf).unwrap();
    assert_eq!(dev.stats().bounced(), 1);

    // Even the rogue read sees only the slot region: copy and zeroes.
    let mut page = vec![0u8; PAGE as usize];
    // SAFETY: the bounce pool is never referenced by Rust code, and nothing
    // writes it during the read.
    unsafe { engine.read_unchecked(page_of(h.dma_addr()), &mut page) }.unwrap();
    assert!(
        !page.windows(SECRET.len()).any(|w| w == SECRET),
        "secret leaked"
    );
    assert_eq!(
        page.iter().filter(|&&b| b == 0x42).count(),
        192,
        "the copy is there"
    );
    assert!(page.iter().all(|&b| b == 0 || b == 0x42), "padding is zero");

    // Outside the slot region the IOMMU maps nothing (IOVAs are handed out
    // top-down, so the page below is free).
    let next = DmaAddr::new(page_of(h.dma_addr()).as_u64() - PAGE);
    // SAFETY: as above (nothing is read: the IOMMU faults first).
    let fault = unsafe { engine.read_unchecked(next, &mut page[..1]) }.unwrap_err();
    assert!(matches!(fault, SimFault::Untranslated { .. }), "{fault:?}");
    assert_eq!(dev.backend().translation().hardware().faults().len(), 1);

    // SAFETY: the reads returned.
    drop(unsafe { h.unmap() });
    assert_eq!(pool.free_slots(), pool.total_slots());
    drop(secret);
}

#[test]
fn an_untrusted_sub_page_buffer_without_bouncing_is_refused() {
    let mem = SimMemory::with_base(PhysAddr::new(0x8000_0000), 1 << 20);
    let dev = Device::new(
        Composed::from_parts(mem.clone(), iommu(), Coherent, NoBounce),
        DeviceConfig::new().trusted(false),
    );
    let free = dev.backend().translation().free_pages();
    let (_secret, buf) = secret_and_buffer(&mem);
    let err = dev.map_to_device(buf).unwrap_err();
    assert!(matches!(
        err.kind(),
        MapErrorKind::UntrustedSubPage {
            len: 192,
            page: 4096,
            ..
        }
    ));
    assert!(err.into_buffer().iter().all(|&b| b == 0x42));
    assert_eq!(
        dev.backend().translation().free_pages(),
        free,
        "no IOVA kept"
    );

    // A buffer that fills whole pages needs no bounce, even untrusted.
    let whole = mem
        .alloc_slice_aligned::<u8>(PAGE as usize, PAGE as usize)
        .unwrap();
    let h = dev.map_to_device(whole).unwrap();
    // SAFETY: never started.
    drop(unsafe { h.unmap() });
}

#[test]
fn mmio_that_would_need_a_bounce_is_refused_and_pools_are_untouched() {
    let mem = SimMemory::with_base(PhysAddr::new(0xfff0_0000), 2 << 20);
    let pool: Arc<Swiotlb> = Arc::new(mem.swiotlb(64 * 1024, 1).unwrap());
    let dev = Device::new(
        Composed::from_parts(mem.clone(), Direct::identity(), Coherent, pool.clone()),
        DeviceConfig::new().dma_mask(DmaMask::bits(32)),
    );
    let slots = pool.free_slots();
    // A peer BAR above 4 GiB: a 32-bit device cannot reach it, and MMIO is
    // never bounced.
    // SAFETY: a (simulated) peer BAR, not RAM.
    let err = unsafe { dev.map_mmio::<ToDevice>(PhysAddr::new(0x2_0000_0000), 4096) }.unwrap_err();
    assert!(matches!(
        err,
        MapErrorKind::MmioNeedsBounce { len: 4096, .. }
    ));
    assert_eq!(pool.free_slots(), slots);
    assert_eq!(dev.stats().bounced(), 0);
    // Below 4 GiB it maps, unbounced.
    // SAFETY: as above.
    let bar = unsafe { dev.map_mmio::<ToDevice>(PhysAddr::new(0xfe00_0000), 4096) }.unwrap();
    assert_eq!(bar.dma_addr().as_u64(), 0xfe00_0000);
    // SAFETY: never used.
    unsafe { bar.unmap() };
    assert_eq!(pool.free_slots(), slots);
}

/// A bounced unmap behind an IOMMU completes its IOTLB invalidation before
/// the slot goes back to the pool: even inside an unflushed batch, by the
/// time another mapping can take the slot, the old IOVA no longer reaches
/// it (found by the adversarial review: the slot used to be released when
/// the unmap was issued, before the batch's invalidation).
#[test]
fn a_bounce_slot_returns_to_the_pool_only_after_its_iotlb_invalidation() {
    let mem = SimMemory::with_base(PhysAddr::new(0x8000_0000), 1 << 20);
    let pool = Arc::new(mem.swiotlb(64 * 1024, 1).unwrap());
    let dev = Device::new(
        Composed::from_parts(mem.clone(), iommu(), Coherent, pool.clone()),
        DeviceConfig::new().trusted(false),
    );
    let engine = SimDevice::new(&dev, mem.clone());
    let buf = mem.alloc_slice::<u8>(100).unwrap();
    let h = dev.map_to_device(buf).unwrap();
    let old = h.dma_addr();
    let mut seen = [0u8; 4];
    engine.read(old, &mut seen).unwrap();
    let hw = dev.backend().translation().hardware();
    let syncs = hw.syncs();
    let mut batch = dev.batch();
    // SAFETY: the simulated read returned.
    unsafe { batch.unmap_device_owned(h) };
    // The slot is free again, and the invalidation that ends the device's
    // access to it has already completed, before the batch's flush.
    assert_eq!(pool.used_slots(), 0);
    assert!(hw.syncs() > syncs);
    assert!(matches!(
        engine.read(old, &mut seen),
        Err(SimFault::Untranslated { .. })
    ));
    let bufs = batch.flush();
    assert_eq!(bufs.len(), 1);
}
