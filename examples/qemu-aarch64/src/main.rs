//! dmacap on bare metal: QEMU's virtio-blk (PCI), driven by
//! `virtio-drivers`' `VirtIOBlk` whose `Hal` is dmacap's adapter, with the
//! MMU and caches on, so dmacap's EL1 cache maintenance runs for real.
//!
//! Two configurations, chosen by QEMU's `-append`:
//!
//! - `direct`: the device reaches RAM at physical addresses; dmacap's
//!   non-coherent direct backend.
//! - `smmuv3`: `-machine virt,iommu=smmuv3`; the device translates through
//!   QEMU's SMMUv3, driven by [`smmu`] as dmacap's `IommuHardware`, over
//!   an `IommuDomain` with Arm stage-1 tables, strict invalidation.
//!
//! See the README's section "Bare metal under QEMU" and `run.sh`.
#![no_std]
#![no_main]

extern crate alloc;

mod boot;
mod fault;
mod heap;
mod mmu;
mod pci;
mod platform;
mod semihost;
mod smmu;
mod transport;
mod uart;

use alloc::boxed::Box;
use alloc::vec;

use dmacap::arch::CacheMaintenance;
use dmacap::arch::aarch64::Aarch64CacheOps;
use dmacap::backend::bounce::Swiotlb;
use dmacap::backend::compose::{Composed, NonCoherent};
use dmacap::backend::direct::Direct;
use dmacap::backend::iommu::{ArmStage1, InvalidationMode, IommuDomain, Stage1Options};
use dmacap::virtio::HalOptions;
use dmacap::{DeviceConfig, DmaMask};
use virtio_drivers::Hal;
use virtio_drivers::device::blk::{BlkReq, BlkResp, SECTOR_SIZE, VirtIOBlk};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceType, Transport};
use zerocopy::FromZeros;

use platform::BarePlatform;
use smmu::{NcTables, Smmu, SmmuTlb};
use transport::PlatformDma;

/// The direct backend: DMA address = physical address, coherence by arm64
/// cache maintenance at EL1, and a bounce pool for buffers that share
/// cache lines with other data.
type DirectBackend =
    Composed<&'static BarePlatform, Direct, NonCoherent<Aarch64CacheOps>, &'static Swiotlb>;

/// The SMMUv3 backend: the same, translated by an IOMMU domain whose
/// tables the SMMU walks and whose IOTLB it invalidates.
type IoBackend = Composed<
    &'static BarePlatform,
    IommuDomain<SmmuTlb, ArmStage1<NcTables>>,
    NonCoherent<Aarch64CacheOps>,
    &'static Swiotlb,
>;

dmacap::virtio_hal!(
    /// The virtio-blk function's `Hal`, direct.
    DiskHal, DirectBackend, mmio = platform::mmio_phys_to_virt
);

dmacap::virtio_hal!(
    /// The virtio-blk function's `Hal`, behind the SMMU.
    pub IoHal, IoBackend, mmio = platform::mmio_phys_to_virt
);

/// Blocks the program writes (0..WRITTEN) and checks.
const WRITTEN: usize = 64;
/// Blocks it reads first and checks against the host's pattern.
const HOST_CHECKED: usize = 128;
/// The SMMU context's ASID.
const ASID: u16 = 1;

/// The host's pattern (run.sh writes it into the image).
fn host_byte(block: usize, i: usize) -> u8 {
    (block.wrapping_mul(7) + i) as u8
}

/// The program's pattern (run.sh checks it in the image afterwards).
fn guest_byte(block: usize, i: usize) -> u8 {
    ((block.wrapping_mul(131) + i.wrapping_mul(3)) as u8) ^ 0xa5
}

/// One block, owning its whole cache lines: mapped directly, with cache
/// maintenance, never bounced.
#[repr(C, align(128))]
struct Block([u8; SECTOR_SIZE]);

/// The Rust entry, called by `_start` with the MMU on.
#[unsafe(no_mangle)]
pub extern "C" fn main() -> ! {
    let el: u64;
    // SAFETY: reads CurrentEL; no memory access.
    unsafe { core::arch::asm!("mrs {0}, CurrentEL", out(reg) el, options(nomem, nostack)) };
    let mut buf = [0u8; 64];
    // Semihosting gives the program's name, then `-append`'s words.
    let config = semihost::cmdline(&mut buf)
        .split_whitespace()
        .last()
        .unwrap_or("");
    println!(
        "qemu-aarch64: started at EL{}, MMU on (identity map), caches on; configuration `{config}`",
        (el >> 2) & 3
    );
    assert_eq!((el >> 2) & 3, 1, "dmacap's EL1 cache maintenance needs EL1");
    // SAFETY: called once; the identity map is on.
    let platform: &'static BarePlatform = Box::leak(Box::new(unsafe { BarePlatform::new() }));
    // SAFETY: called once.
    let pool: &'static Swiotlb = Box::leak(Box::new(unsafe { platform::bounce_pool() }));
    // SAFETY: this program runs at EL1 (checked above) on one CPU, never
    // migrates, and QEMU's `virt` has no system cache beyond the point of
    // coherency.
    let cache = unsafe { Aarch64CacheOps::new_el1() };
    println!(
        "dmacap: EL1 cache maintenance, line {} bytes",
        cache.line_size()
    );
    let failures = match config {
        "smmuv3" => run_smmuv3(platform, pool, cache),
        _ => run_direct(platform, pool, cache),
    };
    semihost::exit(if failures == 0 { 0 } else { 1 })
}

/// Reads `HOST_CHECKED` blocks (the host's pattern), writes `WRITTEN`
/// blocks, reads them back; returns (blocks read back right, host blocks
/// right).
fn workload<H: Hal, T: Transport>(blk: &mut VirtIOBlk<H, T>) -> (usize, usize) {
    let mut buf = Box::new(Block([0; SECTOR_SIZE]));
    let mut host_ok = 0;
    for b in 0..HOST_CHECKED {
        blk.read_blocks(b, &mut buf.0).expect("read");
        if buf.0.iter().enumerate().all(|(i, &x)| x == host_byte(b, i)) {
            host_ok += 1;
        } else {
            println!("block {b}: not the host's pattern: {:02x?}", &buf.0[..8]);
        }
    }
    for b in 0..WRITTEN {
        buf.0
            .iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = guest_byte(b, i));
        blk.write_blocks(b, &buf.0).expect("write");
    }
    let mut ok = 0;
    for b in 0..WRITTEN {
        buf.0.fill(0);
        blk.read_blocks(b, &mut buf.0).expect("read");
        if buf
            .0
            .iter()
            .enumerate()
            .all(|(i, &x)| x == guest_byte(b, i))
        {
            ok += 1;
        } else {
            println!("block {b}: read back wrong: {:02x?}", &buf.0[..8]);
        }
    }
    blk.flush().expect("flush");
    (ok, host_ok)
}

/// Prints a device's dmacap counters.
fn report<B: dmacap::backend::Backend + Sync>(
    hal: &dmacap::virtio::VirtioDevice<B>,
    platform: &BarePlatform,
) where
    B::Platform: dmacap::platform::DmaAllocator,
{
    let stats = hal.device().stats();
    println!(
        "dmacap: {} shares, {} unshares, {} bounced ({} bytes), {} lines cleaned (dc cvac), \
         {} invalidated (dc ivac/civac), {} barriers (dsb sy), {} IOTLB invalidations, {} leaked, \
         {} non-cacheable pages live",
        hal.shares(),
        hal.unshares(),
        stats.bounced(),
        stats.bounced_bytes(),
        stats.lines_cleaned(),
        stats.lines_invalidated(),
        stats.barriers(),
        stats.iotlb_invalidations(),
        stats.leaked(),
        platform.pages_in_use(),
    );
}

/// The direct configuration; returns how many checks failed.
fn run_direct(
    platform: &'static BarePlatform,
    pool: &'static Swiotlb,
    cache: Aarch64CacheOps,
) -> usize {
    let backend = Composed::from_parts(platform, Direct::identity(), NonCoherent(cache), pool);
    let device: &'static dmacap::Device<DirectBackend> = Box::leak(Box::new(dmacap::Device::new(
        backend,
        DeviceConfig::new().dma_mask(DmaMask::bits(64)),
    )));
    // SAFETY: QEMU's virtio-blk follows the virtio specification: it never
    // writes a buffer it was given to read. No `whole_lines` promise: the
    // small buffers on the stack are bounced.
    let hal = unsafe { DiskHal::install_with(device, HalOptions::new()) };

    let mut root = pci::root();
    let Some(f) = pci::find_and_enable(&mut root, DeviceType::Block) else {
        println!("qemu-aarch64 direct: no virtio-blk function found");
        return 1;
    };
    let transport = PciTransport::new::<DiskHal, _>(&mut root, f.df).expect("virtio PCI transport");
    let mut blk = VirtIOBlk::<DiskHal, _>::new(transport).expect("virtio-blk");
    println!("virtio-blk: capacity {} sectors", blk.capacity());
    let (ok, host_ok) = workload(&mut blk);
    report(hal, platform);
    println!(
        "qemu-aarch64 direct: {ok}/{WRITTEN} blocks ok, host pattern {host_ok}/{HOST_CHECKED} ok"
    );
    (WRITTEN - ok) + (HOST_CHECKED - host_ok)
}

/// The SMMUv3 configuration; returns how many checks failed.
fn run_smmuv3(
    platform: &'static BarePlatform,
    pool: &'static Swiotlb,
    cache: Aarch64CacheOps,
) -> usize {
    // SAFETY: QEMU virt's SMMUv3 frame, mapped as device memory by the
    // identity map (the first gigabyte); nothing else drives it.
    let smmu = match unsafe { Smmu::probe(smmu::SMMU_BASE, platform) } {
        Ok(s) => &*Box::leak(Box::new(s)),
        Err(e) => {
            println!("qemu-aarch64 smmuv3: no usable SMMUv3: {e}");
            return 1;
        }
    };
    let mut root = pci::root();
    let Some(f) = pci::find_and_enable(&mut root, DeviceType::Block) else {
        println!("qemu-aarch64 smmuv3: no virtio-blk function found");
        return 1;
    };
    let sid = f.requester_id();
    let opts = Stage1Options::new()
        .output_bits(smmu.output_bits())
        .coherent_walk(false)
        .coherent_dma(false);
    let table = ArmStage1::new(NcTables(platform), opts).expect("stage-1 root table");
    let cfg = table.config();
    smmu.attach(sid, ASID, cfg);
    smmu.enable();
    println!(
        "smmu: stream {sid} -> CD (ASID {ASID}) -> stage-1 root {}, translation on",
        cfg.ttbr
    );
    let domain = IommuDomain::with_table(SmmuTlb::new(smmu, ASID), InvalidationMode::Strict, table);
    let backend = Composed::from_parts(platform, domain, NonCoherent(cache), pool);
    let device: &'static dmacap::Device<IoBackend> = Box::leak(Box::new(dmacap::Device::new(
        backend,
        DeviceConfig::new().dma_mask(DmaMask::bits(64)),
    )));
    // SAFETY: the SMMU maps every `DriverToDevice` buffer read-only, so the
    // device cannot write one whatever it does.
    let hal = unsafe { IoHal::install_with(device, HalOptions::new()) };

    let transport =
        PciTransport::new::<fault::FaultyHal, _>(&mut root, f.df).expect("virtio PCI transport");
    let mut blk =
        VirtIOBlk::<fault::FaultyHal, _>::new(PlatformDma::new(transport)).expect("virtio-blk");
    println!(
        "virtio-blk: capacity {} sectors, through the SMMU",
        blk.capacity()
    );
    let (ok, host_ok) = workload(&mut blk);
    let mut failures = (WRITTEN - ok) + (HOST_CHECKED - host_ok);
    report(hal, platform);
    while let Some(e) = smmu.pop_event() {
        println!(
            "smmu: unexpected event during the workload: {} {e:x?}",
            e.name()
        );
        failures += 1;
    }

    // A batch of eight unmaps: one invalidation pass, one CMD_SYNC.
    let mut maps = device.batch();
    for _ in 0..8 {
        if maps
            .map_to_device(vec![0x33u8; 4096].into_boxed_slice())
            .is_err()
        {
            panic!("batch map refused");
        }
    }
    let handles = maps.flush();
    let before = smmu.syncs();
    let mut unmaps = device.batch();
    for h in handles {
        // SAFETY: no device was ever told these addresses.
        unsafe { unmaps.unmap_device_owned(h) };
    }
    let bufs = unmaps.flush();
    let batch_syncs = smmu.syncs() - before;
    println!(
        "smmu: a batch of {} unmaps issued {batch_syncs} CMD_SYNC",
        bufs.len()
    );
    if batch_syncs != 1 {
        failures += 1;
    }

    // An MMIO range through the SMMU (a peer's BAR, here the function's own
    // BAR 1 page): Device-nGnRE attributes, read-only for `ToDevice`.
    // SAFETY: BAR 1 is MMIO this program assigned, never RAM; the device is
    // never told the address.
    let bar = unsafe {
        device.map_mmio::<dmacap::ToDevice>(dmacap::PhysAddr::new(f.bars[1].into()), 4096)
    }
    .expect("MMIO mapping");
    let pte = device.backend().translation().walk(bar.dma_addr());
    let mmio_ok = pte.is_some_and(|p| {
        p.attr_index() == dmacap::backend::iommu::Stage1Config::ATTR_DEVICE && p.is_read_only()
    });
    println!(
        "smmu: MMIO {:#x} mapped at IOVA {}: {pte:?}, AttrIndx {:?} (Device-nGnRE), read-only {:?}",
        f.bars[1],
        bar.dma_addr(),
        pte.map(|p| p.attr_index()),
        pte.map(|p| p.is_read_only())
    );
    // SAFETY: the device never had the address.
    unsafe { bar.unmap() };
    if !mmio_ok {
        failures += 1;
    }

    // The fault: the device is handed an IOVA that a strict unmap took away.
    let status_addr = f.device_status_addr(&root);
    let (faults, expected, fault_ok) = fault::provoke(&mut blk, smmu, sid, status_addr);
    if !fault_ok {
        failures += 1;
    }
    println!(
        "qemu-aarch64 smmuv3: {ok}/{WRITTEN} blocks ok, host pattern {host_ok}/{HOST_CHECKED} ok, \
         smmu faults {faults} expected {expected}, cmd_syncs {}, batch unmap cmd_syncs {batch_syncs}, \
         tlbi commands {}",
        smmu.syncs(),
        smmu.tlbis()
    );
    failures
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("qemu-aarch64: panic: {info}");
    semihost::exit(2)
}

/// A zeroed block response.
fn blk_resp() -> BlkResp {
    BlkResp::new_zeroed()
}

/// A block request header.
fn blk_req() -> BlkReq {
    BlkReq::default()
}
