//! Rejected: programming a device's IOMMU from safe code (issue 7, hole 4).
//!
//! `Device::backend().translation()` gives the `IommuDomain`. Before the
//! fix its `Translation::map` was a safe function that installed page-table
//! entries for any physical range and direction: safe code made device Y
//! write device X's buffer. It is now an `unsafe fn` whose contract is that
//! the range is memory this device may be given with that access.

use dmacap::backend::compose::{MapAttrs, Translation};
use dmacap::backend::iommu::InvalidationMode;
use dmacap::sim::SimPlatform;
use dmacap::{DeviceConfig, DmaDirection};

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let x = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
    let y = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
    let buf = sim.memory().alloc_slice::<u8>(64).unwrap();
    let phys = sim.memory().phys_of_buffer(&buf);
    let rx = x.map_from_device(buf).unwrap();

    let (iova, ()) = y
        .backend()
        .translation()
        .map(
            phys,
            64,
            DmaDirection::FromDevice,
            MapAttrs::RAM,
            y.context(),
        )
        .unwrap();
    sim.device(&y).fill(iova, 0x66, 64).unwrap(); // Y writes X's buffer

    // SAFETY: the simulated device X never ran.
    drop(unsafe { rx.unmap() });
}
