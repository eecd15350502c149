//! Rejected: mapping a buffer and discarding the handle
//! (`dev.map_from_device(b).expect("map");` as a statement).
//!
//! The handle is device-owned; dropped, it would quarantine the buffer for
//! good. `Mapped` is `#[must_use]`, so under `deny(unused_must_use)` this
//! does not compile.

#![deny(unused_must_use)]

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    dev.map_from_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .expect("map");
}
