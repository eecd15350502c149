//! Rejected under `#![deny(unused_must_use)]`: a batch built and never
//! flushed. The fixed batch's builder methods return the batch, which is
//! `#[must_use]`.

#![deny(unused_must_use)]

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let buf = sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap();
    let h = dev.map_to_device(buf).unwrap();
    // SAFETY: the simulated device was never started.
    let h = unsafe { h.sync_for_cpu() };
    dev.fixed_batch().sync_for_device(h);
}
