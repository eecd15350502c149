//! Rejected: using a handle after giving it to a batch, before `flush()`.
//!
//! The batch owns the handle from the moment its maintenance is issued; the
//! CPU could otherwise read a buffer whose invalidate has not completed, or
//! hand the device an address whose clean has not completed.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let rx = dev
        .map_from_device(sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap())
        .unwrap();
    let mut batch = dev.batch();
    // SAFETY: the simulated device was never started.
    unsafe { batch.sync_for_cpu(rx) };
    println!("{:?}", rx.dma_addr());
    drop(batch.flush());
}
