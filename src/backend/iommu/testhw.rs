//! A recording [`IommuHardware`] for the unit tests.

use std::vec::Vec;

use crate::backend::iommu::IommuHardware;
use crate::base::addr::DmaAddr;
use crate::sync::{Mutex, lock};

/// What the domain asked of the hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Range(DmaAddr, u64),
    All,
    Sync,
}

/// Records every request; caches nothing.
#[derive(Default)]
pub(crate) struct Recorder {
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    /// The requests so far, emptying the record.
    pub(crate) fn take(&self) -> Vec<Op> {
        core::mem::take(&mut *lock(&self.ops))
    }
}

// SAFETY: it caches no translation, so there is never anything to
// invalidate, and it translates nothing.
unsafe impl IommuHardware for Recorder {
    fn invalidate_range(&self, iova: DmaAddr, len: u64) {
        lock(&self.ops).push(Op::Range(iova, len));
    }

    fn invalidate_all(&self) {
        lock(&self.ops).push(Op::All);
    }

    fn sync(&self) {
        lock(&self.ops).push(Op::Sync);
    }
}
