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

/// A function found and enabled: where it is and where its BARs went.
#[derive(Debug, Clone, Copy)]
pub struct Function {
    /// Bus, device, function.
    pub df: DeviceFunction,
    /// Each BAR's assigned address (0 for none).
    pub bars: [u32; 6],
}

impl Function {
    /// The PCI requester ID, which is the SMMU stream ID on QEMU `virt`.
    pub fn requester_id(&self) -> u32 {
        u32::from(self.df.bus) << 8 | u32::from(self.df.device) << 3 | u32::from(self.df.function)
    }

    /// A 32-bit word of the function's configuration space.
    fn config_read(&self, offset: u16) -> u32 {
        let addr = ECAM_BASE + (self.requester_id() as usize) * 4096 + usize::from(offset);
        // SAFETY: inside the function's 4 KiB of ECAM space, mapped as
        // device memory; reading configuration space has no side effect.
        unsafe { core::ptr::read_volatile(addr as *const u32) }
    }

    /// The address of the virtio common configuration's `device_status`
    /// byte (offset 0x14), found through the vendor capability of type 1.
    pub fn device_status_addr(&self, root: &PciRoot<MmioCam<'static>>) -> Option<usize> {
        let cap = root
            .capabilities(self.df)
            .find(|c| c.id == 0x09 && (c.private_header >> 8) as u8 == 1)?;
        let bar = self.config_read(u16::from(cap.offset) + 4) as u8;
        let off = self.config_read(u16::from(cap.offset) + 8);
        let base = *self.bars.get(usize::from(bar))?;
        (base != 0).then(|| base as usize + off as usize + 0x14)
    }
}

/// The first virtio function of type `ty` on bus 0, with its BARs assigned
/// and memory decoding and bus mastering on.
pub fn find_and_enable(root: &mut PciRoot<MmioCam<'static>>, ty: DeviceType) -> Option<Function> {
    let found = root
        .enumerate_bus(0)
        .find(|(_, info)| virtio_device_type(info) == Some(ty))?;
    let (df, info) = found;
    crate::println!("pci: {info} at {df}");
    let mut next = MMIO32_START;
    let mut addrs = [0u32; 6];
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
        addrs[i] = addr;
        match address_type {
            MemoryBarType::Width32 => root.set_bar_32(df, i as u8, addr),
            MemoryBarType::Width64 => root.set_bar_64(df, i as u8, addr.into()),
            other => panic!("BAR {i}: unsupported type {other:?}"),
        }
        crate::println!("pci: BAR {i} at {addr:#x}, {size:#x} bytes");
    }
    root.set_command(df, Command::MEMORY_SPACE | Command::BUS_MASTER);
    Some(Function { df, bars: addrs })
}
