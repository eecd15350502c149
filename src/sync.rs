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
