//! Rejected: the infallible map of a buffer from a zone wider than the
//! device's proven reach.
//!
//! `Reach<U32>` proves the device addresses everything below 4 GiB; a
//! buffer from the zone below 2^36 may lie above that, so mapping it
//! without a `Result` is refused at compile time.

use dmacap::sim::SimPlatform;
use dmacap::typenum::{U32, U36};
use dmacap::ToDevice;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let reach = dev.reach::<U32>().unwrap();
    let wide = dev.alloc_zoned::<U36, u8>(64).unwrap();
    let _tx = reach.map::<ToDevice, _, _>(wide);
}
