//! The identity map: virtual address = physical address, one L1 table of
//! 1 GiB blocks and one L2 table of 2 MiB blocks for the RAM gigabyte,
//! 4 KiB granule, 39-bit addresses.
//!
//! | range | what | memory type |
//! |---|---|---|
//! | 0 .. 1 GiB | UART, SMMU, PCI MMIO window, low ECAM | Device-nGnRnE, never executable |
//! | 1 GiB .. 2 GiB, but the 2 MiB at 0x4400_0000 | RAM: image, heap, stack, bounce pool | Normal, write-back cacheable, inner shareable |
//! | 0x4400_0000 .. +2 MiB (`.dma_nc`) | RAM: dmacap's coherent pool | Normal, non-cacheable |
//! | 256 GiB .. 257 GiB | high ECAM (0x40_1000_0000) | Device-nGnRnE |
//!
//! So ordinary buffers are cached and dmacap's non-coherent backend must
//! clean and invalidate them (`dc cvac`/`dc ivac`/`dc civac`, `dsb sy`)
//! for the device to see the CPU's bytes and the CPU the device's, and the
//! coherent allocations (the virtqueues) need none.

/// MAIR_EL1: attribute 0 Device-nGnRnE, 1 Normal write-back
/// read/write-allocate, 2 Normal non-cacheable.
pub const MAIR: u64 = (0xff << 8) | (0x44 << 16); // attribute 0 is 0x00

/// TCR_EL1: T0SZ = 25 (39-bit), walks write-back cacheable inner
/// shareable, 4 KiB granule, TTBR1 walks off, 40-bit physical addresses.
pub const TCR: u64 = 25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | (2 << 32);

const BLOCK: u64 = 0b01;
const AF: u64 = 1 << 10;
const INNER_SHAREABLE: u64 = 3 << 8;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;
const DEVICE: u64 = BLOCK | AF | PXN | UXN; // AttrIndx 0
const NORMAL_WB: u64 = BLOCK | AF | INNER_SHAREABLE | (1 << 2) | UXN;
const NORMAL_NC: u64 = BLOCK | AF | INNER_SHAREABLE | (2 << 2) | PXN | UXN;

/// Physical address of the non-cacheable pool (`.dma_nc` in `link.ld`).
pub const DMA_NC_BASE: usize = 0x4400_0000;
/// Its size.
pub const DMA_NC_SIZE: usize = 0x20_0000;

/// A translation table.
#[repr(C, align(4096))]
pub struct Table(pub [u64; 512]);

/// The L1 table. Entry 1 (the RAM gigabyte) is set to point at [`L2`] by
/// the boot code, before the MMU is on.
#[unsafe(no_mangle)]
pub static mut L1: Table = {
    let mut t = [0u64; 512];
    t[0] = DEVICE;
    t[256] = 0x40_0000_0000 | DEVICE;
    Table(t)
};

/// The L2 table of the RAM gigabyte.
#[unsafe(no_mangle)]
pub static L2: Table = {
    let mut t = [0u64; 512];
    let mut i = 0;
    while i < 512 {
        let pa = 0x4000_0000 + (i as u64) * 0x20_0000;
        t[i] = pa
            | if pa == DMA_NC_BASE as u64 {
                NORMAL_NC
            } else {
                NORMAL_WB
            };
        i += 1;
    }
    Table(t)
};
