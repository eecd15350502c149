//! One area of the pool: a bitmap of used slots, each used slot's original
//! address, a count of free slots and a next-fit cursor. The pool keeps each
//! area behind its own lock.

use alloc::vec;
use alloc::vec::Vec;

const WORD: usize = u64::BITS as usize;

/// What a used slot stands for: the original byte its first byte copies,
/// and which of its bytes hold the copy (the others are padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotMeta {
    /// Physical address of the original byte that the slot's first byte
    /// stands for (the slot may start in padding before the copy: then this
    /// lies before the original, by wrapping arithmetic).
    pub(crate) orig: u64,
    /// The copy occupies bytes `[lo, hi)` of the slot (`lo == hi` for a
    /// slot of padding only).
    pub(crate) lo: u16,
    /// See `lo`.
    pub(crate) hi: u16,
}

/// The slots of one area, indexed from the area's first slot.
///
/// Invariants: bit `i` of `used` is set exactly for the slots of live
/// regions, and `meta[i]` describes slot `i` while it is set; `free` is the
/// number of clear bits; bits past `len` are never set.
pub(crate) struct Area {
    used: Vec<u64>,
    meta: Vec<SlotMeta>,
    len: usize,
    free: usize,
    cursor: usize,
}

impl Area {
    /// `len` free slots.
    pub(crate) fn new(len: usize) -> Self {
        Self {
            used: vec![0; len.div_ceil(WORD)],
            meta: vec![
                SlotMeta {
                    orig: 0,
                    lo: 0,
                    hi: 0
                };
                len
            ],
            len,
            free: len,
            cursor: 0,
        }
    }

    /// Free slots.
    pub(crate) fn free(&self) -> usize {
        self.free
    }

    fn is_used(&self, i: usize) -> bool {
        self.used[i / WORD] & (1 << (i % WORD)) != 0
    }

    /// The first used slot in `[from, to)`, a word at a time.
    fn first_used(&self, from: usize, to: usize) -> Option<usize> {
        let mut i = from;
        while i < to {
            let bit = i % WORD;
            let word = self.used[i / WORD] >> bit;
            if word != 0 {
                let at = i + word.trailing_zeros() as usize;
                return (at < to).then_some(at);
            }
            i += WORD - bit;
        }
        None
    }

    /// A start among `[lo, hi)` of `n` free slots for which `ok` holds.
    fn scan(&self, lo: usize, hi: usize, n: usize, ok: &impl Fn(usize) -> bool) -> Option<usize> {
        let mut i = lo;
        while i < hi {
            if !ok(i) {
                i += 1;
                continue;
            }
            match self.first_used(i, i + n) {
                None => return Some(i),
                Some(used) => i = used + 1,
            }
        }
        None
    }

    /// A run of `n` free slots whose start `ok` accepts, searched from the
    /// cursor onwards and then from the area's start. The cursor follows
    /// the last run taken and moves back to the last run given back, so a
    /// map after an unmap reuses the slots just freed: their lines are
    /// still in the CPU's cache, and the copy into them costs what a
    /// `memcpy` into a warm buffer costs. (Linux's next fit leaves a freed
    /// slot alone until the cursor comes round; immediate reuse is safe
    /// here because a slot is given back only after its device access has
    /// ended: the unmap's contract, and behind an IOMMU its invalidation.)
    pub(crate) fn find(&self, n: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
        if n == 0 || n > self.free || n > self.len {
            return None;
        }
        let last = self.len - n + 1; // one past the last possible start
        let cursor = if self.cursor < last { self.cursor } else { 0 };
        self.scan(cursor, last, n, &ok)
            .or_else(|| self.scan(0, cursor, n, &ok))
    }

    fn set(&mut self, start: usize, n: usize, used: bool) {
        for i in start..start + n {
            let (w, b) = (i / WORD, 1u64 << (i % WORD));
            if used {
                self.used[w] |= b;
            } else {
                self.used[w] &= !b;
            }
        }
    }

    /// Marks the `n` free slots at `start` used, slot `k` described by
    /// `meta(k)`.
    ///
    /// # Panics
    ///
    /// In debug builds, if a slot is already used.
    pub(crate) fn take(&mut self, start: usize, n: usize, meta: impl Fn(usize) -> SlotMeta) {
        debug_assert!(self.first_used(start, start + n).is_none());
        self.set(start, n, true);
        for k in 0..n {
            self.meta[start + k] = meta(k);
        }
        self.free -= n;
        self.cursor = start + n;
    }

    /// Frees the `n` used slots at `start`.
    ///
    /// # Panics
    ///
    /// If a slot is not used: the region was released twice or never
    /// allocated.
    pub(crate) fn give_back(&mut self, start: usize, n: usize) {
        assert!(
            (start..start + n).all(|i| self.is_used(i)),
            "bounce slots {start}..{} released but not in use",
            start + n
        );
        self.set(start, n, false);
        self.free += n;
        self.cursor = start;
    }

    /// What slot `i` stands for, if it is used.
    pub(crate) fn meta(&self, i: usize) -> Option<SlotMeta> {
        self.is_used(i).then(|| self.meta[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: SlotMeta = SlotMeta {
        orig: 0,
        lo: 0,
        hi: 0,
    };

    #[test]
    fn next_fit_and_exact_release() {
        let mut a = Area::new(130);
        assert_eq!(a.find(64, |_| true), Some(0));
        a.take(0, 64, |_| M);
        assert_eq!(a.find(64, |_| true), Some(64));
        a.take(64, 64, |_| M);
        assert_eq!(a.free(), 2);
        assert_eq!(a.find(3, |_| true), None);
        assert_eq!(a.find(2, |_| true), Some(128));
        a.give_back(0, 64);
        // The cursor moved back to the run just freed: reused first.
        assert_eq!(a.find(2, |_| true), Some(0));
        a.take(0, 2, |_| M);
        // From the cursor (2) on, then wrapping: 62 fit at 2, 63 do not
        // (64 is used), and only the 2 at 128 are left beyond.
        assert_eq!(a.find(62, |_| true), Some(2));
        assert_eq!(a.find(63, |_| true), None);
        a.give_back(0, 2);
        assert_eq!(a.find(3, |_| true), Some(0));
        // Only even starts, and a used slot in the way.
        a.take(1, 1, |_| M);
        assert_eq!(a.find(4, |i| i % 2 == 0), Some(2));
        assert_eq!(a.find(4, |i| i % 8 == 3), Some(3));
        a.give_back(1, 1);
        a.give_back(64, 64);
        assert_eq!(a.free(), 130);
    }

    #[test]
    #[should_panic(expected = "released but not in use")]
    fn double_release_is_caught() {
        let mut a = Area::new(8);
        a.take(2, 2, |_| M);
        a.give_back(2, 2);
        a.give_back(2, 2);
    }
}
