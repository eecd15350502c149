//! The global allocator `alloc` needs (dmacap's tables, `virtio-drivers`'
//! queues' bookkeeping): a bump allocator over a 4 MiB static in cacheable
//! RAM that takes back only the newest block. The program is short and
//! allocates little. Every block is aligned to 128 bytes (arm64's
//! `ARCH_DMA_MINALIGN`, as Linux's `kmalloc` pads), so a heap buffer whose
//! length is a multiple of 128 owns its cache lines and maps without a
//! bounce.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

const SIZE: usize = 4 << 20;

#[repr(C, align(4096))]
struct Arena(UnsafeCell<[u8; SIZE]>);

// SAFETY: the arena's bytes are handed out in disjoint blocks by `Bump`,
// which never gives one block to two owners.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; SIZE]));

/// The allocator: `next` is the offset of the first free byte.
pub struct Bump {
    next: AtomicUsize,
}

#[global_allocator]
static HEAP: Bump = Bump {
    next: AtomicUsize::new(0),
};

// SAFETY: `alloc` returns blocks inside the arena, aligned, disjoint from
// every live block (the offset only grows, under compare-exchange, except in
// `dealloc` of the newest block, which moves it back to that block's start
// only if nothing was allocated after it).
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = ARENA.0.get() as usize;
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            let start = (base + cur).next_multiple_of(layout.align().max(128)) - base;
            let Some(end) = start.checked_add(layout.size()).filter(|&e| e <= SIZE) else {
                return core::ptr::null_mut();
            };
            match self
                .next
                .compare_exchange(cur, end, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return ARENA.0.get().cast::<u8>().wrapping_add(start),
                Err(now) => cur = now,
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let start = ptr as usize - ARENA.0.get() as usize;
        let _ = self.next.compare_exchange(
            start + layout.size(),
            start,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}
