//! Every composition of translation × coherency × bounce policy, moving real
//! bytes in every direction, one handle at a time and in batches.
//!
//! | translation | coherency | bounce | why bytes bounce |
//! |---|---|---|---|
//! | Direct | Coherent / NonCoherent | NoBounce | (never) |
//! | Direct | Coherent / NonCoherent | Swiotlb | buffers above a 32-bit mask |
//! | IOMMU | Coherent / NonCoherent | NoBounce | (never; trusted device) |
//! | IOMMU | Coherent / NonCoherent | Swiotlb | untrusted device, sub-page buffers |

use std::sync::Arc;

use dmacap::backend::Backend;
use dmacap::backend::bounce::Swiotlb;
use dmacap::backend::compose::{
    BouncePolicy, Coherency, Coherent, Composed, NoBounce, NonCoherent, Translation,
};
use dmacap::backend::direct::{Direct, DmaWindows};
use dmacap::backend::iommu::{InvalidationMode, IommuDomain};
use dmacap::buffer::CacheSafe;
use dmacap::sim::{BusTranslate, SimBuffer, SimDevice, SimIommu, SimMemory};
use dmacap::{Device, DeviceConfig, DmaMask, PhysAddr};

/// Bytes per test buffer: three cache lines, under a page.
const LEN: usize = 192;

/// Mappings `exercise` makes: three single, four batched, two in a fixed
/// batch.
const MAPPINGS: usize = 9;

fn pattern(seed: u8) -> Vec<u8> {
    (0..LEN)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// RAM from just below 4 GiB to above it: a pool (and, for the IOMMU, page
/// tables' worth of nothing) below, test buffers above when `high`.
fn ram(noncoherent: bool) -> SimMemory {
    let base = PhysAddr::new(0xfff0_0000);
    if noncoherent {
        SimMemory::noncoherent(base, 4 << 20)
    } else {
        SimMemory::with_base(base, 4 << 20)
    }
}

/// What a test buffer allocator returns.
type Alloc<'a> = Box<dyn Fn() -> SimBuffer<[u8]> + 'a>;

/// Buffers the test maps: above 4 GiB (`high`) or wherever, aligned to a
/// cache line but not to a page.
fn allocator(mem: &SimMemory, high: bool) -> Alloc<'_> {
    if high {
        // Fill what is left below 4 GiB so later buffers land above it.
        let below = (0x1_0000_0000u64 - 0xfff0_0000) as usize;
        let free_below = below.saturating_sub(mem.allocated_bytes());
        if free_below > 0 {
            let filler = mem.alloc_slice::<u8>(free_below).unwrap();
            std::mem::forget(filler);
        }
    }
    Box::new(move || {
        let b = mem.alloc_slice_aligned::<u8>(LEN, 64).unwrap();
        if high {
            assert!(mem.phys_of_buffer(&b).as_u64() >= 0x1_0000_0000);
        }
        b
    })
}

/// Moves bytes in every direction, single and batched, and returns how many
/// mappings were bounced.
fn exercise<B>(name: &str, mem: &SimMemory, dev: &Device<B>, alloc: &Alloc<'_>) -> usize
where
    B: Backend + BusTranslate,
    [u8]: CacheSafe<B::Granule>,
{
    let engine = SimDevice::new(dev, mem.clone());

    // ToDevice: the device reads what the CPU wrote, twice.
    let mut b = alloc();
    b.copy_from_slice(&pattern(1));
    let tx = dev.map_to_device(b).unwrap();
    let mut seen = vec![0u8; LEN];
    engine.read(tx.dma_addr(), &mut seen).unwrap();
    assert_eq!(seen, pattern(1), "{name}: ToDevice first read");
    // SAFETY: the read returned.
    let mut tx = unsafe { tx.sync_for_cpu() };
    tx.contents_mut().copy_from_slice(&pattern(2));
    let tx = tx.sync_for_device();
    engine.read(tx.dma_addr(), &mut seen).unwrap();
    assert_eq!(seen, pattern(2), "{name}: ToDevice after rewrite");
    // SAFETY: the read returned.
    drop(unsafe { tx.unmap() });

    // FromDevice: the CPU sees what the device wrote, and the buffer is
    // recycled for a second packet.
    let rx = dev.map_from_device(alloc()).unwrap();
    engine.write(rx.dma_addr(), &pattern(3)).unwrap();
    // SAFETY: the write returned.
    let rx = unsafe { rx.sync_for_cpu() };
    assert_eq!(
        rx.contents(),
        &pattern(3)[..],
        "{name}: FromDevice first packet"
    );
    let rx = rx.sync_for_device();
    engine.write(rx.dma_addr(), &pattern(4)).unwrap();
    // SAFETY: the write returned.
    let buf = unsafe { rx.unmap() };
    assert_eq!(
        &buf[..],
        &pattern(4)[..],
        "{name}: FromDevice second packet via unmap"
    );

    // Bidirectional: request in, response out, in one buffer.
    let mut b = alloc();
    b.copy_from_slice(&pattern(5));
    let h = dev.map_bidirectional(b).unwrap();
    engine.read(h.dma_addr(), &mut seen).unwrap();
    assert_eq!(seen, pattern(5), "{name}: Bidirectional request");
    engine.write(h.dma_addr(), &pattern(6)).unwrap();
    // SAFETY: the accesses returned.
    let mut h = unsafe { h.sync_for_cpu() };
    assert_eq!(
        h.contents(),
        &pattern(6)[..],
        "{name}: Bidirectional response"
    );
    h.contents_mut()[..4].copy_from_slice(b"next");
    let h = h.sync_for_device();
    engine.read(h.dma_addr(), &mut seen[..4]).unwrap();
    assert_eq!(&seen[..4], b"next", "{name}: Bidirectional second request");
    // SAFETY: returned.
    drop(unsafe { h.unmap() });

    // Batched: four receive buffers, one completion per step.
    let mut maps = dev.batch();
    for _ in 0..4 {
        maps.map_from_device(alloc()).unwrap();
    }
    let rx = maps.flush();
    for (i, h) in rx.iter().enumerate() {
        engine.write(h.dma_addr(), &pattern(10 + i as u8)).unwrap();
    }
    let mut back = dev.batch();
    for h in rx {
        // SAFETY: every write returned.
        unsafe { back.sync_for_cpu(h) };
    }
    let rx = back.flush();
    for (i, h) in rx.iter().enumerate() {
        assert_eq!(
            h.contents(),
            &pattern(10 + i as u8)[..],
            "{name}: batched receive {i}"
        );
    }
    let mut unmaps = dev.batch();
    for h in rx {
        unmaps.unmap(h);
    }
    assert_eq!(unmaps.flush().len(), 4);

    // Batched transmit through a fixed batch mixing directions.
    let mut cmd = alloc();
    cmd.copy_from_slice(&pattern(20));
    let (cmd, resp) = dev
        .fixed_batch()
        .map_to_device(cmd)
        .unwrap()
        .map_from_device(alloc())
        .unwrap()
        .flush();
    engine.read(cmd.dma_addr(), &mut seen).unwrap();
    assert_eq!(seen, pattern(20), "{name}: fixed batch command");
    engine.write(resp.dma_addr(), &pattern(21)).unwrap();
    // SAFETY: both accesses returned.
    let (_cmd, resp) =
        unsafe { dev.fixed_batch().unmap_device_owned(cmd).sync_for_cpu(resp) }.flush();
    assert_eq!(
        resp.contents(),
        &pattern(21)[..],
        "{name}: fixed batch response"
    );
    drop(resp);

    assert_eq!(dev.leaked(), 0, "{name}");
    dev.stats().bounced()
}

fn direct_config(bounce: bool) -> DeviceConfig {
    DeviceConfig::new().dma_mask(if bounce {
        DmaMask::bits(32)
    } else {
        DmaMask::bits(64)
    })
}

fn iommu() -> IommuDomain<SimIommu> {
    IommuDomain::new(SimIommu::new(), InvalidationMode::Strict)
}

fn run<T, K, Bo>(
    name: &str,
    mem: &SimMemory,
    t: T,
    k: K,
    bo: Bo,
    cfg: DeviceConfig,
    high: bool,
) -> usize
where
    T: Translation,
    K: Coherency,
    Bo: BouncePolicy,
    K::Phys: dmacap::backend::compose::PhysJoin<Bo::Phys>,
    Composed<SimMemory, T, K, Bo>: Backend + BusTranslate,
    [u8]: CacheSafe<<Composed<SimMemory, T, K, Bo> as Backend>::Granule>,
{
    let dev = Device::new(Composed::from_parts(mem.clone(), t, k, bo), cfg);
    let alloc = allocator(mem, high);
    exercise(name, mem, &dev, &alloc)
}

fn pool(mem: &SimMemory) -> Arc<Swiotlb> {
    Arc::new(mem.swiotlb(512 * 1024, 2).unwrap())
}

fn nc(mem: &SimMemory) -> NonCoherent<dmacap::sim::SimCache> {
    NonCoherent(mem.cache().unwrap())
}

#[test]
fn direct_coherent_no_bounce() {
    let mem = ram(false);
    let n = run(
        "direct/coherent/none",
        &mem,
        Direct::identity(),
        Coherent,
        NoBounce,
        direct_config(false),
        false,
    );
    assert_eq!(n, 0);
}

#[test]
fn direct_noncoherent_no_bounce() {
    let mem = ram(true);
    let n = run(
        "direct/noncoherent/none",
        &mem,
        Direct::identity(),
        nc(&mem),
        NoBounce,
        direct_config(false),
        false,
    );
    assert_eq!(n, 0);
}

#[test]
fn direct_coherent_swiotlb() {
    let mem = ram(false);
    let p = pool(&mem);
    let n = run(
        "direct/coherent/swiotlb",
        &mem,
        Direct::new(DmaWindows::identity()),
        Coherent,
        p.clone(),
        direct_config(true),
        true,
    );
    assert_eq!(n, MAPPINGS, "every mapping bounced");
    assert_eq!(p.free_slots(), p.total_slots());
}

#[test]
fn direct_noncoherent_swiotlb() {
    let mem = ram(true);
    let p = pool(&mem);
    let n = run(
        "direct/noncoherent/swiotlb",
        &mem,
        Direct::identity(),
        nc(&mem),
        p.clone(),
        direct_config(true),
        true,
    );
    assert_eq!(n, MAPPINGS, "every mapping bounced");
    assert_eq!(p.free_slots(), p.total_slots());
}

#[test]
fn iommu_coherent_no_bounce() {
    let mem = ram(false);
    let n = run(
        "iommu/coherent/none",
        &mem,
        iommu(),
        Coherent,
        NoBounce,
        DeviceConfig::new(),
        false,
    );
    assert_eq!(n, 0);
}

#[test]
fn iommu_noncoherent_no_bounce() {
    let mem = ram(true);
    let n = run(
        "iommu/noncoherent/none",
        &mem,
        iommu(),
        nc(&mem),
        NoBounce,
        DeviceConfig::new(),
        false,
    );
    assert_eq!(n, 0);
}

#[test]
fn iommu_coherent_swiotlb_untrusted() {
    let mem = ram(false);
    let p = pool(&mem);
    let n = run(
        "iommu/coherent/swiotlb",
        &mem,
        iommu(),
        Coherent,
        p.clone(),
        DeviceConfig::new().trusted(false),
        false,
    );
    assert_eq!(n, MAPPINGS, "every sub-page mapping bounced");
    assert_eq!(p.free_slots(), p.total_slots());
}

#[test]
fn iommu_noncoherent_swiotlb_untrusted() {
    let mem = ram(true);
    let p = pool(&mem);
    let n = run(
        "iommu/noncoherent/swiotlb",
        &mem,
        iommu(),
        nc(&mem),
        p.clone(),
        DeviceConfig::new().trusted(false),
        false,
    );
    assert_eq!(n, MAPPINGS, "every sub-page mapping bounced");
    assert_eq!(p.free_slots(), p.total_slots());
}

#[test]
fn the_coherent_direct_composition_still_declares_no_ops() {
    type D = Composed<SimMemory, Direct, Coherent, NoBounce>;
    const { assert!(<D as Backend>::SYNC_IS_NOOP && <D as Backend>::UNMAP_IS_NOOP) };
    type I = Composed<SimMemory, IommuDomain<SimIommu>, Coherent, NoBounce>;
    const { assert!(<I as Backend>::SYNC_IS_NOOP && !<I as Backend>::UNMAP_IS_NOOP) };
    type S = Composed<SimMemory, Direct, Coherent, Arc<Swiotlb>>;
    const { assert!(!<S as Backend>::SYNC_IS_NOOP && !<S as Backend>::UNMAP_IS_NOOP) };
    assert_eq!(size_of::<<D as Backend>::State>(), 0);
    assert_eq!(size_of::<<D as Backend>::Phys>(), 0);
}
