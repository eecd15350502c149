//! A `FromDevice` buffer of `Cell<u8>` is rejected at map time: `Cell::set`
//! through the read-only view would be a CPU write into a buffer the CPU may
//! not write, which a bounce buffer or an invalidate could silently discard.
//! `Transfer<FromDevice>` requires zerocopy's `Immutable`.

use std::cell::Cell;

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let buf = sim.memory().alloc_slice::<Cell<u8>>(64).unwrap();
    let rx = dev.map_from_device(buf).unwrap();
    // SAFETY: the device was never started.
    let rx = unsafe { rx.sync_for_cpu() };
    rx.contents()[0].set(0x11);
}
