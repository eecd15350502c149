//! Rejected: the CPU writing into a `FromDevice` buffer, even while it owns
//! it.
//!
//! For `FromDevice` a backend may throw CPU writes away (a bounce buffer is
//! never copied towards the device, a non-coherent cache line may be
//! invalidated), so `contents_mut()` requires `D: CpuWritable`, which
//! `FromDevice` is not.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let rx = dev
        .map_from_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    sim.device(&dev).fill(rx.dma_addr(), 0xab, 64).unwrap();

    // SAFETY: the simulated fill returned, so the device has finished with
    // the buffer and nothing else is queued on it.
    let mut rx = unsafe { rx.sync_for_cpu() };

    // Clearing the receive buffer from the CPU before recycling it.
    rx.contents_mut().fill(0);

    let rx = rx.sync_for_device();
    // SAFETY: nothing was given to the simulated device since the sync.
    let _buf = unsafe { rx.unmap() };
}
