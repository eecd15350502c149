//! Rejected: sharing a handle whose contents are not `Sync` between threads
//! (issue 7, hole 6).
//!
//! `&Mapped` hands out `&Buf::Target`. Before the fix `Mapped` was `Sync`
//! whenever the buffer type was, so a buffer that is itself `Sync` but
//! whose contents are `[Cell<u8>]` let two threads write and read the same
//! cell at once: a data race in safe code. `Mapped` is now `Sync` only
//! when `Buf::Target: Sync` too (and `Send` only when `Buf::Target: Send`).

use std::cell::Cell;
use std::ptr::NonNull;

use dmacap::DmaBuffer;
use dmacap::sim::{SimBuffer, SimMemory, SimPlatform};

/// Cells in simulated RAM. The buffer is `Send + Sync` (nothing of it is
/// reachable through `&CellBuf`); its contents are not `Sync`.
struct CellBuf(SimBuffer<[u8]>);

// SAFETY: a `SimBuffer<[u8]>` given up, seen as cells: `Cell<u8>` has the
// layout and bit validity of `u8`; rebuilding gives the same buffer back.
unsafe impl DmaBuffer for CellBuf {
    type Target = [Cell<u8>];
    type Keep = SimMemory;

    fn into_raw_parts(self) -> (NonNull<[Cell<u8>]>, SimMemory) {
        let (ptr, keep) = self.0.into_raw_parts();
        (NonNull::slice_from_raw_parts(ptr.cast(), ptr.len()), keep)
    }

    unsafe fn from_raw_parts(ptr: NonNull<[Cell<u8>]>, keep: SimMemory) -> Self {
        let bytes = NonNull::slice_from_raw_parts(ptr.cast::<u8>(), ptr.len());
        // SAFETY: the parts of one `into_raw_parts` of a `SimBuffer`.
        Self(unsafe { SimBuffer::from_raw_parts(bytes, keep) })
    }
}

fn main() {
    let sim = SimPlatform::new(1 << 20);
    let dev = sim.coherent_device();
    let tx = dev
        .map_to_device(CellBuf(sim.memory().alloc_slice::<u8>(8).unwrap()))
        .unwrap();
    // SAFETY: the simulated device never ran.
    let tx = unsafe { tx.sync_for_cpu() };
    let shared = &tx;
    std::thread::scope(|s| {
        s.spawn(move || shared.contents()[0].set(1));
        s.spawn(move || shared.contents()[0].get());
    });
    drop(tx.unmap());
}
