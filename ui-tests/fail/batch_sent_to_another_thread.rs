//! Rejected: moving a batch to another thread before its flush.
//!
//! The completion barrier completes the maintenance issued by the calling
//! thread, so a batch filled on one thread and flushed on another would
//! leave its cache operations pending: stale bytes for the device, or an
//! invalidate landing later under the CPU's references. Batches are not
//! `Send`; the handles a flush returns are.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let mut batch = dev.batch();
    batch
        .map_to_device(sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap())
        .unwrap();
    std::thread::scope(|s| {
        s.spawn(move || drop(batch.flush()));
    });
}
