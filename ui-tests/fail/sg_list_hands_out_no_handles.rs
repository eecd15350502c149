//! Rejected: reaching into a scatter-gather list for its handles (issue 7,
//! hole 2).
//!
//! Before the fix `SgMapped::as_mut_slice` handed out `&mut Mapped`, and
//! `mem::swap` moved device X's handle into device Y's list (the same
//! backend type). Y's list then completed only Y's barriers and IOTLB
//! invalidations: X's IOVA stayed cached over memory that was freed and
//! reused, and X wrote into Y's next buffer. A list now hands out its
//! buffers' contents (`contents`, `contents_mut`, `iter_contents`,
//! `iter_contents_mut`), never a handle by `&mut`.

use dmacap::backend::iommu::InvalidationMode;
use dmacap::sim::SimPlatform;
use dmacap::{Bidirectional, DeviceConfig};

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let x = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
    let y = sim.iommu_device(InvalidationMode::Strict, DeviceConfig::new());
    let bufs = || (0..2).map(|_| sim.memory().alloc_slice::<u8>(64).unwrap());
    let lx = x.map_sg::<Bidirectional, _, _>(bufs()).unwrap();
    let ly = y.map_sg::<Bidirectional, _, _>(bufs()).unwrap();
    // SAFETY: the simulated devices never ran.
    let mut lx = unsafe { lx.sync_for_cpu() };
    // SAFETY: as above.
    let mut ly = unsafe { ly.sync_for_cpu() };

    std::mem::swap(&mut lx.as_mut_slice()[0], &mut ly.as_mut_slice()[0]);

    drop(ly.unmap()); // would complete Y's invalidation only
    drop(lx.unmap());
}
