//! A driver generic over every backend needs one bound, `B: Backend`, to map
//! byte buffers in every direction: the granule and the direction
//! enforcement of any backend accept `[u8]` (issue: generic-driver friction).

use dmacap::backend::Backend;
use dmacap::{Device, DmaBuffer};

fn send_and_receive<B: Backend, Buf: DmaBuffer<Target = [u8]>>(dev: &Device<B>, tx: Buf, rx: Buf) {
    let tx = dev.map_to_device(tx).map_err(|e| e.into_buffer()).ok();
    let rx = dev.map_from_device(rx).map_err(|e| e.into_buffer()).ok();
    let both = dev.map_bidirectional(vec![0u8; 64].into_boxed_slice()).ok();
    drop((tx, rx, both));
}

fn main() {
    let sim = dmacap::sim::SimPlatform::noncoherent(1 << 16);
    let dev = sim.noncoherent_device();
    let a = sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap();
    let b = sim.memory().alloc_slice_aligned::<u8>(64, 64).unwrap();
    send_and_receive(&dev, a, b);
    let _ = dev.platform();
    let _: dmacap::typenum::U64 = Default::default();
}
