//! Rejected: a partial sync for the CPU on a `ToDevice` mapping.
//!
//! `sync_prefix_for_cpu` is the receive path (take back the first `n`
//! elements the device wrote); the device never writes a `ToDevice` buffer,
//! so the method exists only for `D: DeviceWritable` (`FromDevice`,
//! `Bidirectional`).

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let nic = sim.device(&dev);

    let tx = dev
        .map_to_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    let mut wire = [0u8; 16];
    nic.read(tx.dma_addr(), &mut wire).unwrap();

    // SAFETY: the simulated read returned, so the device has finished with
    // the buffer and nothing else is queued on it.
    let tx = unsafe { tx.sync_prefix_for_cpu(16) }.unwrap();
    assert_eq!(tx.contents().len(), 16);
}
