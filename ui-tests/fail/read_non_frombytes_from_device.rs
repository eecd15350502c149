//! Rejected: receiving into a type that not every bit pattern inhabits.
//!
//! The device may write any byte into a `FromDevice` buffer, and the CPU
//! then reads it as the element type. A `bool` holding 2 is undefined
//! behaviour, so mapping requires `[bool]: Transfer<FromDevice>`, i.e.
//! `bool: FromBytes`, which it is not.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let flags: Box<[bool]> = vec![false; 64].into_boxed_slice();
    let rx = dev.map_from_device(flags).unwrap();
    sim.device(&dev).fill(rx.dma_addr(), 2, 64).unwrap();
    // SAFETY: the simulated fill returned, so the device has finished with
    // the buffer and nothing else is queued on it.
    let rx = unsafe { rx.sync_for_cpu() };
    if rx.contents()[0] {
        println!("ready");
    }
}
