//! Rejected: a ninth hand-over in a `FixedBatch`, which holds at most eight
//! (its items live in a tuple whose length is part of its type; it never
//! allocates). The error says so and points at the dynamic `Batch`.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let buf = || sim.memory().alloc_slice::<u8>(8).unwrap();
    let batch = dev
        .fixed_batch()
        .map_to_device(buf()).unwrap()
        .map_to_device(buf()).unwrap()
        .map_to_device(buf()).unwrap()
        .map_to_device(buf()).unwrap()
        .map_to_device(buf()).unwrap()
        .map_to_device(buf()).unwrap()
        .map_to_device(buf()).unwrap()
        .map_to_device(buf()).unwrap();
    let _nine = batch.map_to_device(buf());
}
