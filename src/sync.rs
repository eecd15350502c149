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
#[allow(dead_code)]
#[inline]
pub(crate) fn current_thread_id() -> ThreadId {
    std::thread::current().id()
}

/// The calling (loom) thread's id.
#[cfg(dmacap_loom)]
#[allow(dead_code)]
#[inline]
pub(crate) fn current_thread_id() -> ThreadId {
    loom::thread::current().id()
}

/// A spin lock for `no_std` builds, with the part of `std::sync::Mutex`'s
/// interface dmacap uses.
#[cfg(not(dmacap_loom))]
#[allow(dead_code)]
mod spin {
    use core::cell::UnsafeCell;
    use core::ops::{Deref, DerefMut};
    use core::sync::atomic::{AtomicBool, Ordering};

    /// Invariant: `value` is accessed only through a guard, and at most one
    /// guard exists at a time (`locked` is true while it does).
    pub(crate) struct Mutex<T> {
        locked: AtomicBool,
        value: UnsafeCell<T>,
    }

    // SAFETY: the lock hands out one guard at a time, so `T` is only ever
    // accessed by one thread at once; `T: Send` lets it move between them.
    unsafe impl<T: Send> Sync for Mutex<T> {}
    // SAFETY: as above.
    unsafe impl<T: Send> Send for Mutex<T> {}

    pub(crate) struct MutexGuard<'a, T> {
        lock: &'a Mutex<T>,
    }

    impl<T> Mutex<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self {
                locked: AtomicBool::new(false),
                value: UnsafeCell::new(value),
            }
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            while self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                core::hint::spin_loop();
            }
            MutexGuard { lock: self }
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            // SAFETY: the guard is the only access (invariant).
            unsafe { &*self.lock.value.get() }
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            // SAFETY: as above, and `&mut self` makes it exclusive.
            unsafe { &mut *self.lock.value.get() }
        }
    }

    impl<T> Drop for MutexGuard<'_, T> {
        fn drop(&mut self) {
            self.lock.locked.store(false, Ordering::Release);
        }
    }
}
#[cfg(all(not(feature = "std"), not(dmacap_loom)))]
pub(crate) use spin::{Mutex, MutexGuard};

/// A lock for per-CPU state, held for a few instructions and contended
/// only when two threads share a slot: a spin lock, whose unlock is a plain
/// release store (one locked instruction per lock/unlock pair instead of
/// two, and no poisoning checks). loom's mutex under the models.
#[cfg(not(dmacap_loom))]
pub(crate) type SpinMutex<T> = spin::Mutex<T>;
/// loom's mutex under the models.
#[cfg(dmacap_loom)]
pub(crate) type SpinMutex<T> = loom::sync::Mutex<T>;

/// Locks a [`SpinMutex`].
#[inline]
#[allow(dead_code)]
pub(crate) fn spin_lock<T>(m: &SpinMutex<T>) -> impl core::ops::DerefMut<Target = T> + '_ {
    #[cfg(not(dmacap_loom))]
    {
        m.lock()
    }
    #[cfg(dmacap_loom)]
    {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Adds `n` to a statistics counter without a locked instruction: a relaxed
/// load and store, not a read-modify-write (on x86 a `lock`-prefixed add
/// costs a fence's worth and orders weakly ordered cache flushes issued
/// before it). Exact on one thread; concurrent bumps may lose an increment.
/// For statistics only, never for anything soundness or accounting rests on.
#[inline(always)]
#[allow(dead_code)]
pub(crate) fn bump(counter: &AtomicUsize, n: usize) {
    if n != 0 {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
}

/// Locks `m`. A panic while a lock was held cannot leave dmacap's
/// structures half-updated in a way that matters for memory safety (each
/// user says why), so poisoning is ignored.
#[inline]
#[allow(dead_code)]
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    #[cfg(any(feature = "std", dmacap_loom))]
    {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }
    #[cfg(all(not(feature = "std"), not(dmacap_loom)))]
    {
        m.lock()
    }
}

/// A small number naming the CPU (thread) the caller runs on: the index of
/// per-CPU caches and areas. `0` in `no_std` builds, where dmacap cannot ask.
#[inline]
#[allow(dead_code)]
pub(crate) fn cpu_hint() -> usize {
    // loom's thread ids hash their execution too, which changes from one
    // explored interleaving to the next and would make the model
    // non-deterministic; their `Debug` form holds only the stable number.
    #[cfg(dmacap_loom)]
    if let Some(cpu) = loom_hooks::PINNED.with(core::cell::Cell::get) {
        return cpu;
    }
    #[cfg(dmacap_loom)]
    {
        let id = std::format!("{:?}", loom::thread::current().id());
        id.bytes().filter(u8::is_ascii_digit).fold(0usize, |n, d| {
            n.wrapping_mul(10).wrapping_add(usize::from(d - b'0'))
        })
    }
    // Each thread takes the next number the first time it asks and keeps
    // it in a thread-local: one TLS load per call, no hashing (hashing the
    // thread id was half the instructions of an IOVA alloc/free pair), and
    // threads spread round-robin over the per-CPU slots.
    #[cfg(all(feature = "std", not(dmacap_loom)))]
    {
        use core::cell::Cell;
        use core::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        std::thread_local! {
            static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
        }
        SLOT.with(|slot| match slot.get() {
            usize::MAX => {
                let n = NEXT.fetch_add(1, Ordering::Relaxed) % (usize::MAX / 2);
                slot.set(n);
                n
            }
            n => n,
        })
    }
    #[cfg(all(not(feature = "std"), not(dmacap_loom)))]
    {
        0
    }
}

/// A protection the loom models check by removing it: each variant names
/// one place in dmacap's source that does the wrong thing instead when the
/// variant is switched on (`if mutated(Mutation::X) { wrong } else { right }`).
///
/// Switched on only in the loom shadow build (`--cfg dmacap_loom`), by a
/// test in `loom-tests` before it runs a model, to show that the model
/// fails without the protection. In every other build [`mutated`] is a
/// constant `false` and the wrong branches are dead code the compiler
/// removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
// no_std builds compile out some of the places that name a variant.
#[allow(dead_code)]
pub enum Mutation {
    /// `DeviceStats`' leak counters count with a relaxed load and store
    /// instead of a read-modify-write.
    LeakCountLoadStore,
    /// The simulated RAM's allocator releases the free-list lock between
    /// choosing a free range and taking it.
    SimAllocChoiceUnlocked,
    /// The bounce pool releases an area's lock between finding a free run
    /// of slots and taking it.
    BounceChoiceUnlocked,
    /// A lazy flush frees the queued IOVAs before the invalidation that
    /// covers them.
    LazyFreeBeforeInvalidate,
    /// A lazy flush frees the queued IOVAs without issuing any IOTLB
    /// invalidation (the sync still runs).
    LazyNoInvalidate,
    /// A lazy unmap queues its range for invalidation before it clears
    /// the range's page-table entries.
    LazyQueueBeforeClear,
    /// A strict flush takes every thread's gathered unmaps, not only its
    /// own, and completes them without holding them: a thread whose
    /// unmaps another flush took returns before they are invalidated.
    GatherTakesAll,
    /// A strict flush issues its invalidation but does not wait for it
    /// (no hardware sync): the invalidation completes only when some later
    /// sync, of any thread, happens to run.
    StrictIssueWithoutSync,
    /// A strict flush frees its IOVAs before it issues their invalidation.
    StrictFreeBeforeInvalidate,
    /// A non-coherent device keeps one device-wide "maintenance pending"
    /// flag and a flush issues its barrier only if it finds the flag set,
    /// clearing it: correct on one thread, wrong where a barrier completes
    /// only the calling CPU's maintenance (arm64's `dsb`).
    DeviceWidePendingFlag,
    /// A dropped IOMMU domain frees its page tables even though a mapping
    /// (a quarantined or forgotten handle) is still live.
    DomainDropFreesLiveTables,
}

/// Whether `m` is switched on: always `false` outside the loom build.
#[cfg(not(dmacap_loom))]
#[inline(always)]
#[allow(dead_code)]
pub(crate) const fn mutated(_: Mutation) -> bool {
    false
}

/// Whether `m` is switched on for the models run on this OS thread.
#[cfg(dmacap_loom)]
#[inline]
#[allow(dead_code)]
pub(crate) fn mutated(m: Mutation) -> bool {
    loom_hooks::MUTATIONS.with(|s| s.get() & (1 << m as u8) != 0)
}

/// The device-wide flag of [`Mutation::DeviceWidePendingFlag`], for the
/// object at address `key`: sets it (`set`) or clears it; returns whether
/// it was set. Never called outside the loom build.
#[cfg(not(dmacap_loom))]
#[inline(always)]
#[allow(dead_code)]
pub(crate) fn mutation_flag(_key: usize, _set: bool) -> bool {
    false
}

/// The device-wide flag of [`Mutation::DeviceWidePendingFlag`], for the
/// object at address `key`: sets it (`set`) or clears it; returns whether
/// it was set.
#[cfg(dmacap_loom)]
#[allow(dead_code)]
pub(crate) fn mutation_flag(key: usize, set: bool) -> bool {
    loom_hooks::FLAGS.with(|f| {
        let mut f = f.borrow_mut();
        let was = f.contains(&key);
        f.retain(|&k| k != key);
        if set {
            f.push(key);
        }
        was
    })
}

/// Test hooks of the loom shadow build: mutation switches and CPU pinning.
/// Not part of dmacap's API (the real build has none of it).
#[cfg(dmacap_loom)]
pub mod loom_hooks {
    use core::cell::Cell;

    pub use super::Mutation;

    std::thread_local! {
        // A plain `std` thread-local, not a loom primitive: loom runs every
        // thread of a model as a coroutine on the OS thread that called
        // `loom::model`, so all of them see what the test set there, and
        // tests running in parallel on other OS threads do not.
        pub(super) static MUTATIONS: Cell<u64> = const { Cell::new(0) };
        // The flags of `Mutation::DeviceWidePendingFlag`, by object address.
        pub(super) static FLAGS: core::cell::RefCell<std::vec::Vec<usize>> =
            const { core::cell::RefCell::new(std::vec::Vec::new()) };
    }

    loom::thread_local! {
        // The CPU a loom thread has pinned itself to, if any.
        pub(super) static PINNED: Cell<Option<usize>> = Cell::new(None);
    }

    /// Switches exactly the mutations in `ms` on for the models this OS
    /// thread runs from now on (an empty slice switches all off).
    pub fn set_mutations(ms: &[Mutation]) {
        MUTATIONS.with(|s| s.set(ms.iter().fold(0, |acc, &m| acc | 1 << m as u8)));
    }

    /// Makes the calling loom thread report CPU `cpu` from
    /// `sync::cpu_hint` from now on, so that a model chooses which threads
    /// share per-CPU state (IOVA caches, flush queues, bounce areas) and
    /// which do not. Without it each loom thread is its own CPU.
    pub fn pin_cpu(cpu: usize) {
        PINNED.with(|p| p.set(Some(cpu)));
    }
}
