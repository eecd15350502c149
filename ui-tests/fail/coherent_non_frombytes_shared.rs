//! Rejected: sharing coherent memory of a type the device could make
//! invalid (`bool`).
//!
//! Once shared the device may write any byte at any time, and the CPU reads
//! values out of it: the contents must be `FromBytes`.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let flag = dev.alloc_coherent::<bool>().unwrap();
    let _shared = flag.share();
}
