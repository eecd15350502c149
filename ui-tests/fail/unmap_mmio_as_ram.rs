//! dma-debug: "DMA-API: device driver frees DMA memory with wrong function
//! [device address=...] [size=...] [mapped as resource] [unmapped as
//! single]".
//!
//! A C driver maps a peer device's BAR with `dma_map_resource` and tears it
//! down with `dma_unmap_single`/`dma_unmap_page`, as if it were RAM. In
//! dmacap the kind of mapping is the handle's type: a resource mapping is
//! an `MmioMapped`, which gives back no buffer, and the RAM unmap path (a
//! batch of unmaps here) takes only `Mapped` handles.

use dmacap::backend::direct::DirectCoherent;
use dmacap::batch::Batch;
use dmacap::handle::PendingUnmap;
use dmacap::sim::{SimBuffer, SimMemory, SimPlatform};
use dmacap::{PhysAddr, ToDevice};

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();

    // SAFETY: 0xfe00_0000 stands for a peer device's BAR in this system.
    let bar = unsafe { dev.map_mmio::<ToDevice>(PhysAddr::new(0xfe00_0000), 4096) }.unwrap();

    // Teardown sends every mapping through the driver's unmap batch.
    let mut unmaps: Batch<'_, DirectCoherent<SimMemory>, PendingUnmap<'_, SimBuffer<[u8]>, _>> =
        dev.batch();
    // SAFETY: the simulated device was never started.
    unsafe { unmaps.unmap_device_owned(bar) };
    drop(unmaps.flush());
}
