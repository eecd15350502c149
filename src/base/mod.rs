//! The base layer, at the bottom: addresses, directions, buffers, the
//! platform hook, the device context backends see, and errors. It imports
//! nothing else of dmacap (but for `sync`, the synchronisation primitives
//! the loom models swap).
//!
//! - [`addr`]: [`PhysAddr`](addr::PhysAddr), [`DmaAddr`](addr::DmaAddr),
//!   [`DmaMask`](addr::DmaMask).
//! - [`direction`]: transfer directions, ownership states, and whether the
//!   hardware enforces a direction.
//! - [`buffer`]: what can be mapped ([`DmaBuffer`](buffer::DmaBuffer)) and
//!   what may travel in which direction ([`Transfer`](buffer::Transfer)).
//! - [`platform`]: the CPU-to-physical hook ([`PhysLookup`](platform::PhysLookup)).
//! - [`context`]: a device's limits, counters and identity.
//! - [`error`]: errors that hand back what they were given.

pub mod addr;
pub mod buffer;
pub mod context;
pub mod direction;
pub mod error;
pub mod platform;
