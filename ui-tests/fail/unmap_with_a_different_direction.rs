//! dma-debug: "DMA-API: device driver frees DMA memory with different
//! direction [device address=...] [size=...] [mapped with DMA_TO_DEVICE]
//! [unmapped with DMA_FROM_DEVICE]".
//!
//! A C driver shares one cleanup routine between its rings and passes it
//! the wrong direction. In dmacap the direction is a type parameter of the
//! handle: the receive ring's cleanup takes `Mapped<FromDevice, ..>`, and a
//! transmit handle, `Mapped<ToDevice, ..>`, is a different type.

use dmacap::backend::direct::DirectCoherent;
use dmacap::sim::{SimBuffer, SimMemory, SimPlatform};
use dmacap::{DevOwned, FromDevice, Mapped};

type RxSlot<'d> = Mapped<'d, FromDevice, DevOwned, SimBuffer<[u8]>, DirectCoherent<SimMemory>>;

/// The receive ring's cleanup.
///
/// # Safety
///
/// The device has finished with the slot.
unsafe fn release_rx_slot(slot: RxSlot<'_>) -> SimBuffer<[u8]> {
    // SAFETY: forwarded from the caller.
    unsafe { slot.unmap() }
}

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    let tx = dev
        .map_to_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();

    // Teardown reuses the receive-ring cleanup for the transmit buffer.
    // SAFETY: the simulated device was never started.
    let _buf = unsafe { release_rx_slot(tx) };
}
