//! Rejected: a typed buffer whose elements are smaller than the cache-line
//! granule, on a non-coherent backend.
//!
//! A `[u32]` can start and end in the middle of a 64-byte line it shares with
//! other data, which an invalidate would corrupt. Typed contents must be
//! `LineAligned<G>` for the backend's granule `G`; byte buffers are checked
//! at map time instead. (The same map compiles on a coherent device: see
//! `pass/typed_buffer_on_coherent.rs`.)

use dmacap::sim::SimPlatform;

fn main() {
    let sim = SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let words = sim.memory().alloc_slice::<u32>(16).unwrap();
    let _h = dev.map_from_device(words).unwrap();
}
