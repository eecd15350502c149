//! Which devices a flush has completed.

use super::sealed::SettleItem;

/// The devices a flush has already completed, so that each is flushed once.
/// Holds up to `N`; past that a device may be flushed twice, which costs a
/// barrier and is otherwise harmless.
pub struct Seen<const N: usize> {
    keys: [*const (); N],
    len: usize,
}

impl<const N: usize> Seen<N> {
    pub fn new() -> Self {
        Self {
            keys: [core::ptr::null(); N],
            len: 0,
        }
    }

    /// Flushes `item`'s device unless it needs nothing or was flushed.
    pub fn flush<T: SettleItem>(&mut self, item: &T) {
        if !item.needs_flush() {
            return;
        }
        let key = item.device_key();
        if self.keys[..self.len].contains(&key) {
            return;
        }
        if self.len < N {
            self.keys[self.len] = key;
            self.len += 1;
        }
        item.flush_device();
    }
}
