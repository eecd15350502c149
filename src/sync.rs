//! The synchronisation primitives dmacap uses, in one place so that the loom
//! models can swap them.
//!
//! A normal build uses `core`'s atomics and `std`'s mutex. The package
//! `loom-tests/shadow` compiles this same source a second time with
//! `--cfg dmacap_loom`, which swaps in loom's types, so the models under
//! `loom-tests/` explore dmacap's real code while `cargo test --workspace`
//! builds dmacap itself untouched (a Cargo feature would be unified into
//! every test of the workspace and break them outside a model).

#[cfg(not(dmacap_loom))]
pub(crate) use core::sync::atomic::{AtomicUsize, Ordering};
#[cfg(dmacap_loom)]
pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};

#[cfg(dmacap_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
#[cfg(all(feature = "std", not(dmacap_loom)))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// Identifies a thread: the key of per-thread state such as the simulated
/// cache's queue of issued, not yet completed, maintenance.
#[cfg(all(feature = "std", not(dmacap_loom)))]
pub(crate) type ThreadId = std::thread::ThreadId;
/// Identifies a thread (a loom thread: loom runs every modelled thread on
/// one OS thread, so `std`'s id would not tell them apart).
#[cfg(dmacap_loom)]
pub(crate) type ThreadId = loom::thread::ThreadId;

/// The calling thread's id.
#[cfg(all(feature = "std", not(dmacap_loom)))]
#[cfg_attr(not(feature = "sim"), allow(dead_code))]
#[inline]
pub(crate) fn current_thread_id() -> ThreadId {
    std::thread::current().id()
}

/// The calling (loom) thread's id.
#[cfg(dmacap_loom)]
#[cfg_attr(not(feature = "sim"), allow(dead_code))]
#[inline]
pub(crate) fn current_thread_id() -> ThreadId {
    loom::thread::current().id()
}
