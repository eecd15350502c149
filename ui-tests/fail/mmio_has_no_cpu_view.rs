//! Rejected: reading an MMIO mapping from the CPU or syncing it. An MMIO or
//! peer-memory range is never touched by the CPU through dmacap and needs
//! no maintenance, so `MmioMapped` has neither CPU views nor syncs.

use dmacap::sim::SimPlatform;
use dmacap::{FromDevice, PhysAddr};

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    // SAFETY: 0xfe00_0000 stands for a peer device's BAR in this system.
    let bar = unsafe { dev.map_mmio::<FromDevice>(PhysAddr::new(0xfe00_0000), 4096) }.unwrap();
    // SAFETY: (would be) the device is finished.
    let bar = unsafe { bar.sync_for_cpu() };
    let _ = bar.contents();
}
