//! dma-debug: "DMA-API: device driver maps memory from kernel text or rodata
//! [addr=...] [len=...]".
//!
//! A C driver sends a firmware blob or a constant table straight from
//! `.rodata`. In dmacap only owned, stable, exclusive memory implements
//! `DmaBuffer`: `&'static mut [u8]` does, but a shared `&'static [u8]`
//! (read-only data, which the device could write on a plain bus and which
//! others may read at any time) does not. Copy it into a buffer first.

use dmacap::sim::SimPlatform;

static FIRMWARE: [u8; 64] = [0x5a; 64];

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let fw: &'static [u8] = &FIRMWARE;
    let _tx = dev.map_to_device(fw);
}
