//! Rejected: a hand-over to the device written as a statement, the way a C
//! recycle loop reads (`dma_sync_single_for_device(...);`).
//!
//! `sync_for_device` consumes the CPU-owned handle and returns the
//! device-owned one; dropping that on the floor would quarantine the buffer
//! for good. Handles are `#[must_use]`, so under `deny(unused_must_use)` the
//! statement does not compile.

#![deny(unused_must_use)]

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let rx = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    // SAFETY: no device runs in this program.
    let rx = unsafe { rx.sync_for_cpu() };
    rx.sync_for_device();
}
