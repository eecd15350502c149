//! Rejected: ignoring the result of a map.
//!
//! A map can fail (no physical address, beyond the device's mask, ...), and
//! the failure carries the buffer back. Mapping returns a `Result`, which is
//! `#[must_use]`, so under `deny(unused_must_use)` a driver that drops it on
//! the floor does not compile.

#![deny(unused_must_use)]

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let buf = sim.memory().alloc_slice::<u8>(64).unwrap();

    dev.map_to_device(buf);
}
