//! The scoped batch: a receive ring refilled inside `with_batch`, whose
//! closure's end is the flush. A refill that fails half-way with `?` keeps
//! what it mapped; nothing needs a `flush()` call that could be forgotten.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let (ring, filled) = dev.with_batch(|rx| {
        for _ in 0..4 {
            let buf = sim.memory().alloc_slice_aligned::<u8>(2048, 64)?;
            rx.map_from_device(buf)?;
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    });
    filled.unwrap();
    assert_eq!(ring.len(), 4);
    assert_eq!(dev.stats().barriers(), 1);
    assert_eq!(dev.stats().unflushed(), 0);
    let (back, ()) = dev.with_batch(|b| {
        for h in ring {
            // SAFETY: the simulated device was never started.
            unsafe { b.sync_for_cpu(h) };
        }
    });
    assert!(back.iter().all(|h| h.contents().len() == 2048));
}
