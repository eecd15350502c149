//! Rejected: implementing `CacheSafe` outside dmacap (issue 7, hole 5).
//!
//! Before the fix a downstream `impl CacheSafe<U64> for Small` with its
//! check constants overridden mapped a 4-byte typed buffer on a backend
//! whose cache-line granule is 64 bytes, so it shared a line with its
//! neighbour (whose dirty bytes an invalidate or eviction could then
//! destroy). `CacheSafe` is sealed: dmacap implements it for exactly the
//! contents it documents (anything on a coherent backend, `LineAligned`
//! types, byte buffers checked at map time), and its checks live on a
//! private trait no implementation can override.

use dmacap::buffer::CacheSafe;
use dmacap::typenum::U64;

#[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable)]
#[repr(C)]
struct Small([u8; 4]);

impl CacheSafe<U64> for Small {}

fn main() {
    let sim = dmacap::sim::SimPlatform::noncoherent(1 << 20);
    let dev = sim.noncoherent_device();
    let rx = dev.map_from_device(sim.memory().alloc::<Small>().unwrap());
    drop(rx);
}
