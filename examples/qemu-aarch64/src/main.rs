//! dmacap on bare metal: QEMU's virtio-blk (PCI), driven by
//! `virtio-drivers`' `VirtIOBlk` whose `Hal` is dmacap's adapter over a
//! non-coherent direct device, with the MMU and caches on, so dmacap's
//! EL1 cache maintenance runs for real. See the README's section "Bare
//! metal under QEMU" and `run.sh`.
#![no_std]
#![no_main]

extern crate alloc;

mod boot;
mod exit;
mod heap;
mod mmu;
mod pci;
mod platform;
mod uart;

use alloc::boxed::Box;

use dmacap::arch::aarch64::Aarch64CacheOps;
use dmacap::backend::bounce::Swiotlb;
use dmacap::backend::compose::{Composed, NonCoherent};
use dmacap::backend::direct::Direct;
use dmacap::virtio::HalOptions;
use dmacap::{DeviceConfig, DmaMask};
use virtio_drivers::device::blk::{SECTOR_SIZE, VirtIOBlk};
use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::pci::PciTransport;

use platform::BarePlatform;

/// The backend: DMA address = physical address, coherence by arm64 cache
/// maintenance at EL1, and a bounce pool for buffers that share cache
/// lines with other data.
type Backend =
    Composed<&'static BarePlatform, Direct, NonCoherent<Aarch64CacheOps>, &'static Swiotlb>;

dmacap::virtio_hal!(
    /// The virtio-blk function's `Hal`.
    DiskHal, Backend, mmio = platform::mmio_phys_to_virt
);

/// Blocks the program writes (0..WRITTEN) and checks.
const WRITTEN: usize = 64;
/// Blocks it reads first and checks against the host's pattern.
const HOST_CHECKED: usize = 128;

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
    println!(
        "qemu-aarch64: started at EL{}, MMU on (identity map), caches on",
        (el >> 2) & 3
    );
    let failures = run_direct();
    exit::exit(if failures == 0 { 0 } else { 1 })
}

/// The direct configuration; returns how many checks failed.
fn run_direct() -> usize {
    // SAFETY: called once; the identity map is on.
    let platform: &'static BarePlatform = Box::leak(Box::new(unsafe { BarePlatform::new() }));
    // SAFETY: called once.
    let pool: &'static Swiotlb = Box::leak(Box::new(unsafe { platform::bounce_pool() }));
    // SAFETY: this program runs at EL1 (checked at boot) on one CPU, never
    // migrates, and QEMU's `virt` has no system cache beyond the point of
    // coherency.
    let cache = unsafe { Aarch64CacheOps::new_el1() };
    println!("dmacap: EL1 cache maintenance, line {} bytes", {
        use dmacap::arch::CacheMaintenance;
        cache.line_size()
    });
    let backend = Composed::from_parts(platform, Direct::identity(), NonCoherent(cache), pool);
    let device: &'static dmacap::Device<Backend> = Box::leak(Box::new(dmacap::Device::new(
        backend,
        DeviceConfig::new().dma_mask(DmaMask::bits(64)),
    )));
    // SAFETY: QEMU's virtio-blk follows the virtio specification: it never
    // writes a buffer it was given to read. No `whole_lines` promise: the
    // small buffers on the stack are bounced.
    let hal = unsafe { DiskHal::install_with(device, HalOptions::new()) };

    let mut root = pci::root();
    let Some(df) = pci::find_and_enable(&mut root, DeviceType::Block) else {
        println!("qemu-aarch64 direct: no virtio-blk function found");
        return 1;
    };
    let transport = PciTransport::new::<DiskHal, _>(&mut root, df).expect("virtio PCI transport");
    let mut blk = VirtIOBlk::<DiskHal, _>::new(transport).expect("virtio-blk");
    println!("virtio-blk: capacity {} sectors", blk.capacity());

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
    let stats = device.stats();
    println!(
        "dmacap: {} shares, {} unshares, {} bounced ({} bytes), {} lines cleaned (dc cvac), \
         {} invalidated (dc ivac/civac), {} barriers (dsb sy), {} leaked, {} coherent pages live",
        hal.shares(),
        hal.unshares(),
        stats.bounced(),
        stats.bounced_bytes(),
        stats.lines_cleaned(),
        stats.lines_invalidated(),
        stats.barriers(),
        stats.leaked(),
        platform.pages_in_use(),
    );
    println!(
        "qemu-aarch64 direct: {ok}/{WRITTEN} blocks ok, host pattern {host_ok}/{HOST_CHECKED} ok"
    );
    (WRITTEN - ok) + (HOST_CHECKED - host_ok)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("qemu-aarch64: panic: {info}");
    exit::exit(2)
}
