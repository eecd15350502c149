//! Rejected: reading a receive buffer after handing it back to the device
//! through a batch, before `flush()` (the driver's recycle path).
//!
//! The batch owns the handle from the moment its clean is issued: the CPU
//! must not read it (nor hand its address to the device) until `flush()`
//! has completed the work and given the handle back.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let rx = dev
        .map_bidirectional(sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap())
        .unwrap();
    // SAFETY: the simulated device was never started.
    let rx = unsafe { rx.sync_prefix_for_cpu(16) }.unwrap();
    let mut batch = dev.batch();
    batch.sync_for_device(rx);
    println!("{:?}", rx.contents());
    drop(batch.flush());
}
