//! Rejected: unmapping the same handle twice.
//!
//! An error path unmaps the transmit buffer, then the common cleanup unmaps
//! it again. `unmap` consumes the handle, so the second call is a use of a
//! moved value.

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let nic = sim.device(&dev);

    let tx = dev
        .map_to_device(sim.memory().alloc_slice::<u8>(64).unwrap())
        .unwrap();
    let mut wire = [0u8; 64];
    if nic.read(tx.dma_addr(), &mut wire).is_err() {
        // SAFETY: the simulated read returned (with a fault), so the device
        // has finished with the buffer and nothing else is queued on it.
        let _frame = unsafe { tx.unmap() };
    }

    // Cleanup.
    // SAFETY: as above.
    let _frame = unsafe { tx.unmap() };
}
