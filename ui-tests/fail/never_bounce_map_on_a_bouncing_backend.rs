//! Rejected: a map that must never bounce (Linux's
//! `DMA_ATTR_REQUIRE_COHERENT`, as RDMA and DRM need), proven by type, on a
//! backend whose bounce policy may bounce.
//!
//! `map_unbounced` needs `NeverBounces`, which only compositions with
//! `NoBounce` have; the error points to the run-time variant,
//! `map_require_unbounced`.

use dmacap::sim::SimMemory;
use dmacap::{Device, DeviceConfig, PhysAddr, ToDevice};
use dmacap::backend::direct::DirectCoherent;

fn main() {
    let mem = SimMemory::with_base(PhysAddr::new(0x8000_0000), 1 << 20);
    let pool = mem.swiotlb(64 * 1024, 1).unwrap();
    let dev = Device::new(DirectCoherent::new(mem.clone()).with_bounce(pool), DeviceConfig::new());
    let buf = mem.alloc_slice::<u8>(64).unwrap();
    let _h = dev.map_unbounced::<ToDevice, _>(buf);
}
