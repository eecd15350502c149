//! Flush queues of lazy invalidation (Linux's `iova_fq`): one per CPU slot,
//! holding unmapped IOVA ranges whose IOTLB invalidation has not been
//! issued. The ranges are freed only after an invalidation issued after
//! they were queued has completed.
//!
//! Time is what the caller says it is: [`FlushQueues::tick`] is given the
//! current time in milliseconds and stamps later entries with it, so an
//! entry is never older than its stamp says, and a timeout measured from
//! the stamp fires early rather than late.

use alloc::vec::Vec;

use crate::backend::iommu::iova::IovaAlloc;
use crate::backend::iommu::rcache::CPU_SLOTS;
use crate::sync::{Mutex, cpu_hint, lock};

/// One CPU slot's queue.
#[derive(Default)]
struct Queue {
    /// Ranges and the time they were queued at.
    entries: Vec<(IovaAlloc, u64)>,
    /// The last time `tick` reported.
    now: u64,
}

/// The flush queues of one domain.
pub(crate) struct FlushQueues {
    queues: [Mutex<Queue>; CPU_SLOTS],
    capacity: usize,
    timeout_ms: u64,
}

impl FlushQueues {
    /// Queues of `capacity` entries (at least one) whose entries expire
    /// after `timeout_ms`.
    pub(crate) fn new(capacity: usize, timeout_ms: u64) -> Self {
        Self {
            queues: core::array::from_fn(|_| Mutex::new(Queue::default())),
            capacity: capacity.max(1),
            timeout_ms,
        }
    }

    /// Queues `a` on this CPU's queue. If the queue is full, `a` comes back
    /// and the caller must flush.
    pub(crate) fn push(&self, a: IovaAlloc) -> Result<(), IovaAlloc> {
        let mut q = lock(&self.queues[cpu_hint() % CPU_SLOTS]);
        if q.entries.len() >= self.capacity {
            return Err(a);
        }
        let now = q.now;
        q.entries.push((a, now));
        Ok(())
    }

    /// Takes every queued range, from every queue.
    pub(crate) fn drain(&self) -> Vec<IovaAlloc> {
        let mut all = Vec::new();
        for q in &self.queues {
            let mut q = lock(q);
            all.extend(q.entries.drain(..).map(|(a, _)| a));
        }
        all
    }

    /// Records that it is `now_ms`; returns whether some entry has waited
    /// `timeout_ms` or longer.
    pub(crate) fn tick(&self, now_ms: u64) -> bool {
        let mut expired = false;
        for q in &self.queues {
            let mut q = lock(q);
            q.now = q.now.max(now_ms);
            if let Some(&(_, stamp)) = q.entries.first() {
                expired |= now_ms.saturating_sub(stamp) >= self.timeout_ms;
            }
        }
        expired
    }

    /// Ranges queued now, over all queues.
    pub(crate) fn len(&self) -> usize {
        self.queues.iter().map(|q| lock(q).entries.len()).sum()
    }
}
