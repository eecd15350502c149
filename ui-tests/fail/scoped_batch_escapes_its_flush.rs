//! Rejected: a scoped batch taken out of its closure. The batch is only
//! lent to the closure, whose end is the flush, so it cannot be kept and
//! left unflushed.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let mut kept = None;
    let (_rx, ()) = dev.with_batch(|b| {
        b.map_from_device(sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap())
            .unwrap();
        kept = Some(b);
    });
    drop(kept);
}
