//! The PCIe root complex of QEMU `virt`: ECAM at 0x40_1000_0000 (the high
//! ECAM QEMU uses for a 64-bit CPU with `highmem` on, 256 buses), and the
//! 32-bit memory window 0x1000_0000..0x3eff_0000 where bus address equals
//! CPU address. No firmware ran, so the program assigns the BARs itself.

use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::pci::bus::{
    BarInfo, Cam, Command, DeviceFunction, MemoryBarType, MmioCam, PciRoot,
};
use virtio_drivers::transport::pci::virtio_device_type;

/// The ECAM of QEMU `virt` (high ECAM).
pub const ECAM_BASE: usize = 0x40_1000_0000;
const MMIO32_START: u32 = 0x1000_0000;
const MMIO32_END: u32 = 0x3eff_0000;

/// The root complex.
pub fn root() -> PciRoot<MmioCam<'static>> {
    // SAFETY: ECAM_BASE is QEMU virt's ECAM, 256 MiB mapped as device
    // memory by the identity map, and only this root accesses it.
    PciRoot::new(unsafe { MmioCam::new(ECAM_BASE as *mut u8, Cam::Ecam) })
}

/// The first virtio function of type `ty` on bus 0, with its BARs assigned
/// and memory decoding and bus mastering on.
pub fn find_and_enable(
    root: &mut PciRoot<MmioCam<'static>>,
    ty: DeviceType,
) -> Option<DeviceFunction> {
    let found = root
        .enumerate_bus(0)
        .find(|(_, info)| virtio_device_type(info) == Some(ty))?;
    let (df, info) = found;
    crate::println!("pci: {info} at {df}");
    let mut next = MMIO32_START;
    let bars = root.bars(df).ok()?;
    for (i, bar) in bars.into_iter().enumerate() {
        let Some(BarInfo::Memory {
            address_type, size, ..
        }) = bar
        else {
            continue;
        };
        if size == 0 {
            continue;
        }
        let size = u32::try_from(size).ok()?;
        let addr = next.next_multiple_of(size);
        assert!(addr + size <= MMIO32_END, "the PCI memory window is full");
        next = addr + size;
        match address_type {
            MemoryBarType::Width32 => root.set_bar_32(df, i as u8, addr),
            MemoryBarType::Width64 => root.set_bar_64(df, i as u8, addr.into()),
            other => panic!("BAR {i}: unsupported type {other:?}"),
        }
        crate::println!("pci: BAR {i} at {addr:#x}, {size:#x} bytes");
    }
    root.set_command(df, Command::MEMORY_SPACE | Command::BUS_MASTER);
    Some(df)
}
