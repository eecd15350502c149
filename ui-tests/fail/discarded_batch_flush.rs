//! Rejected: flushing a batch and discarding what it returns
//! (`batch.flush();` as a statement).
//!
//! The flush returns the device-owned handles; dropped, they would be
//! quarantined for good. `flush` is `#[must_use]`, so under
//! `deny(unused_must_use)` this does not compile.

#![deny(unused_must_use)]

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let mut rx = dev.batch();
    rx.map_from_device(sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap())
        .unwrap();
    rx.flush();
}
