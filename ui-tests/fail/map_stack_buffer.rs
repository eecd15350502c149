//! Rejected: mapping a buffer borrowed from the stack.
//!
//! `DmaBuffer` is implemented for `&'static mut T` only: a shorter `&mut`
//! does not implement it, because forgetting the handle would let the stack
//! frame be reused while the device still writes there. Mapping
//! `&mut [u8; 64]` borrowed from a local array therefore demands a `'static`
//! borrow, which the local cannot give.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let mut frame = [0u8; 64];
    let rx = dev.map_from_device(&mut frame).unwrap();
    sim.device(&dev).fill(rx.dma_addr(), 0xab, 64).ok();
    std::mem::forget(rx);
}
