//! Rejected: settling a batch item by hand, or making a new kind of item
//! (issue 7, hole 5).
//!
//! Before the fix `batch::Settle`'s `#[doc(hidden)]` methods were public:
//! `settle` on a device-owned handle granted it to the device a second
//! time, and `flush_device` completed work outside any batch. `Settle`
//! (like `SettleAll` and `Push`) is now sealed and its methods live on a
//! trait in a private module: they can be named in no bound and called
//! from no code outside dmacap, and no type outside dmacap can be an item.

use dmacap::batch::Settle;
use dmacap::sim::SimPlatform;

struct Forged;

impl Settle for Forged {}

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let rx = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    rx.flush_device();
    let rx = rx.settle();
    // SAFETY: the simulated device never ran.
    drop(unsafe { rx.unmap() });
}
