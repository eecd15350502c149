//! Rejected: a `bool` mapped `ToDevice` behind an IOMMU (issue 7, hole 1).
//!
//! The IOMMU maps the buffer read-only, but it grants whole pages: a
//! writable mapping of the same device that shares the page reaches the
//! `bool` through its own IOVA (`tests/adversarial.rs`,
//! `hole1_iommu_denies_the_write_but_a_page_neighbour_still_reaches_it`).
//! The buffer comes back to the CPU, so `ToDevice` contents need
//! `FromBytes` on every backend.

use dmacap::DeviceConfig;
use dmacap::backend::iommu::InvalidationMode;
use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
    let flag = sim.memory().alloc::<bool>().unwrap();
    let _tx = dev.map_to_device(flag);
}
