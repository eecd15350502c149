//! Fault injection: wrappers around a translation, a bounce policy and a
//! platform that make chosen calls fail, so tests can prove that every
//! failure gives the caller's buffer back and leaves every pool as it was.
//!
//! Each wrapper counts the calls of one kind through a [`FaultPlan`] and
//! refuses the one the plan names, with the error the real part would give
//! when it runs dry:
//!
//! | wrapper | call that fails | as if |
//! |---|---|---|
//! | [`FaultyTranslation`] | [`Translation::map`] | the IOVA space were exhausted ([`MapErrorKind::IovaExhausted`]) |
//! | [`FaultyBounce`] | [`BouncePolicy::alloc`] | the bounce pool were exhausted ([`MapErrorKind::BouncePoolExhausted`]) |
//! | [`FaultyPlatform`] | [`PhysLookup::phys_of`] | the platform could not translate the buffer |
//! | [`FaultyPlatform`] | [`DmaAllocator::alloc_dma`] | the platform were out of DMA memory |
//!
//! Everything else is forwarded unchanged, so the wrapped backend still
//! moves real bytes on the simulated platform.
//!
//! ```
//! use dmacap::backend::compose::{Coherent, Composed, NoBounce};
//! use dmacap::backend::iommu::{InvalidationMode, IommuDomain};
//! use dmacap::sim::{FaultPlan, FaultyTranslation, SimIommu, SimPlatform};
//! use dmacap::{Device, DeviceConfig, MapErrorKind};
//!
//! let sim = SimPlatform::new(1 << 20);
//! let plan = FaultPlan::fail_nth(1); // the second map fails
//! let domain = IommuDomain::new(SimIommu::new(), InvalidationMode::Strict);
//! let translation = FaultyTranslation::new(domain, plan.clone());
//! let dev = Device::new(
//!     Composed::from_parts(sim.memory().clone(), translation, Coherent, NoBounce),
//!     DeviceConfig::new(),
//! );
//! let free = dev.backend().translation().inner().free_pages();
//! let a = dev.map_to_device(sim.memory().alloc_slice::<u8>(64).unwrap()).unwrap();
//! let mut buf = sim.memory().alloc_slice::<u8>(64).unwrap();
//! buf.fill(7);
//! let err = dev.map_to_device(buf).unwrap_err();
//! assert!(matches!(err.kind(), MapErrorKind::IovaExhausted { .. }));
//! assert_eq!(&err.into_buffer()[..], &[7; 64]); // the buffer comes back intact
//! // SAFETY: no device was started.
//! drop(unsafe { a.unmap() });
//! assert_eq!(dev.backend().translation().inner().free_pages(), free);
//! assert_eq!(plan.failures(), 1);
//! ```

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::backend::compose::{BouncePolicy, BounceReason, BounceSlot, MapAttrs, Translation};
use crate::base::addr::{DmaAddr, PhysAddr};
use crate::base::context::{DeviceConfig, DeviceContext};
use crate::base::direction::DmaDirection;
use crate::base::error::MapErrorKind;
use crate::base::platform::{DeviceId, DmaAllocator, PhysLookup, Side};
use crate::sim::device::{Access, BusTranslate, SimFault};

/// No call is chosen.
const NEVER: usize = usize::MAX;

#[derive(Debug)]
struct PlanState {
    /// Calls counted so far.
    calls: AtomicUsize,
    /// The index (from 0) of the call that fails, or [`NEVER`].
    fail_at: AtomicUsize,
    /// Calls refused so far.
    failures: AtomicUsize,
}

/// Which call of one kind fails: a shared counter of calls and the index
/// of the one to refuse. Clones share the counter, so a test keeps one
/// clone and gives another to a wrapper.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    state: Arc<PlanState>,
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self::never()
    }
}

impl FaultPlan {
    /// A plan that refuses nothing (until [`arm`](Self::arm)ed).
    pub fn never() -> Self {
        Self {
            state: Arc::new(PlanState {
                calls: AtomicUsize::new(0),
                fail_at: AtomicUsize::new(NEVER),
                failures: AtomicUsize::new(0),
            }),
        }
    }

    /// A plan that refuses the `n`-th call from now (counting from 0), and
    /// only that one.
    pub fn fail_nth(n: usize) -> Self {
        let plan = Self::never();
        plan.arm(n);
        plan
    }

    /// Refuses the `n`-th call from now (counting from 0), and only that
    /// one: the count restarts at 0.
    pub fn arm(&self, n: usize) {
        self.state.calls.store(0, Ordering::SeqCst);
        self.state.fail_at.store(n, Ordering::SeqCst);
    }

    /// Refuses nothing from now on.
    pub fn disarm(&self) {
        self.state.fail_at.store(NEVER, Ordering::SeqCst);
    }

    /// Calls counted since the plan was made or last armed.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Calls refused since the plan was made.
    pub fn failures(&self) -> usize {
        self.state.failures.load(Ordering::SeqCst)
    }

    /// Counts a call; `true` if it is the one to refuse.
    fn hit(&self) -> bool {
        let n = self.state.calls.fetch_add(1, Ordering::SeqCst);
        let fail = n == self.state.fail_at.load(Ordering::SeqCst);
        if fail {
            self.state.failures.fetch_add(1, Ordering::SeqCst);
        }
        fail
    }
}

/// A [`Translation`] whose chosen [`map`](Translation::map) call fails with
/// [`MapErrorKind::IovaExhausted`], before the wrapped translation is asked
/// (so it holds nothing for the refused call).
#[derive(Debug, Clone)]
pub struct FaultyTranslation<T> {
    inner: T,
    plan: FaultPlan,
}

impl<T> FaultyTranslation<T> {
    /// `inner`, failing the map calls `plan` chooses.
    pub fn new(inner: T, plan: FaultPlan) -> Self {
        Self { inner, plan }
    }

    /// The wrapped translation (to read its free counts).
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The plan.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }
}

// SAFETY: every call is forwarded to `T`, which keeps the contract, except
// a refused `map`, which returns an error before `T` is asked and so holds
// nothing (1). `IovaExhausted` is not one of the errors a composition
// bounces on (2). The declarations are `T`'s (3, 4).
unsafe impl<T: Translation> Translation for FaultyTranslation<T> {
    type State = T::State;
    const UNMAP_IS_NOOP: bool = T::UNMAP_IS_NOOP;

    fn granule(&self) -> usize {
        self.inner.granule()
    }

    unsafe fn map(
        &self,
        phys: PhysAddr,
        len: usize,
        dir: DmaDirection,
        attrs: MapAttrs,
        dev: &DeviceContext,
    ) -> Result<(DmaAddr, Self::State), MapErrorKind> {
        if self.plan.hit() {
            return Err(MapErrorKind::IovaExhausted { len });
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.inner.map(phys, len, dir, attrs, dev) }
    }

    unsafe fn unmap(&self, dma: DmaAddr, len: usize, state: Self::State, dev: &DeviceContext) {
        // SAFETY: forwarded from the caller.
        unsafe { self.inner.unmap(dma, len, state, dev) }
    }

    fn flush(&self, dev: &DeviceContext) {
        self.inner.flush(dev)
    }

    fn phys_limit(&self, cfg: &DeviceConfig) -> u64 {
        self.inner.phys_limit(cfg)
    }
}

impl<T: BusTranslate> BusTranslate for FaultyTranslation<T> {
    fn translate(&self, dma: DmaAddr, access: Access) -> Result<(PhysAddr, u64), SimFault> {
        self.inner.translate(dma, access)
    }
}

/// A [`BouncePolicy`] whose chosen [`alloc`](BouncePolicy::alloc) call
/// fails with [`MapErrorKind::BouncePoolExhausted`], before the wrapped
/// policy is asked.
#[derive(Debug, Clone)]
pub struct FaultyBounce<Bo> {
    inner: Bo,
    plan: FaultPlan,
}

impl<Bo> FaultyBounce<Bo> {
    /// `inner`, failing the slot allocations `plan` chooses.
    pub fn new(inner: Bo, plan: FaultPlan) -> Self {
        Self { inner, plan }
    }

    /// The wrapped policy (to read its free counts).
    pub fn inner(&self) -> &Bo {
        &self.inner
    }

    /// The plan.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }
}

// SAFETY: forwards to `Bo`, which keeps the contract; a refused `alloc`
// returns an error before `Bo` is asked and holds nothing.
unsafe impl<Bo: BouncePolicy> BouncePolicy for FaultyBounce<Bo> {
    type State = Bo::State;
    type Phys = Bo::Phys;
    const NEVER: bool = Bo::NEVER;

    fn not_bounced() -> Self::State {
        Bo::not_bounced()
    }

    fn alloc(
        &self,
        orig: PhysAddr,
        len: usize,
        align: usize,
        pad_to: usize,
        reason: BounceReason,
        cfg: &DeviceConfig,
    ) -> Result<Self::State, MapErrorKind> {
        if self.plan.hit() {
            return Err(MapErrorKind::BouncePoolExhausted {
                slots: len.div_ceil(crate::backend::bounce::SLOT_SIZE),
            });
        }
        self.inner.alloc(orig, len, align, pad_to, reason, cfg)
    }

    fn slot(&self, state: &Self::State) -> Option<BounceSlot> {
        self.inner.slot(state)
    }

    unsafe fn release(&self, state: Self::State) {
        // SAFETY: forwarded from the caller.
        unsafe { self.inner.release(state) }
    }
}

/// A platform whose chosen [`phys_of`](PhysLookup::phys_of) calls find no
/// physical address and whose chosen [`alloc_dma`](DmaAllocator::alloc_dma)
/// calls find no memory.
#[derive(Debug, Clone)]
pub struct FaultyPlatform<P> {
    inner: P,
    lookups: FaultPlan,
    allocs: FaultPlan,
}

impl<P> FaultyPlatform<P> {
    /// `inner`, failing the look-ups `lookups` chooses and the allocations
    /// `allocs` chooses.
    pub fn new(inner: P, lookups: FaultPlan, allocs: FaultPlan) -> Self {
        Self {
            inner,
            lookups,
            allocs,
        }
    }

    /// The wrapped platform.
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

// SAFETY: forwards to `P`; a refused look-up answers `None`, which the
// contract always allows (the map is refused).
unsafe impl<P: PhysLookup> PhysLookup for FaultyPlatform<P> {
    fn phys_of(&self, cpu: NonNull<u8>, len: usize) -> Option<PhysAddr> {
        if self.lookups.hit() {
            return None;
        }
        self.inner.phys_of(cpu, len)
    }

    unsafe fn ownership_changed(&self, cpu: NonNull<u8>, len: usize, to: Side, device: DeviceId) {
        // SAFETY: the caller's promise, passed on unchanged.
        unsafe { self.inner.ownership_changed(cpu, len, to, device) }
    }
}

// SAFETY: forwards to `P`, which keeps the promise; a refused allocation
// answers `None` and holds nothing. Look-ups of memory `P` allocated are
// `P`'s own (the wrapper's `phys_of` forwards them unless refused, which
// only makes a caller fail).
unsafe impl<P: DmaAllocator> DmaAllocator for FaultyPlatform<P> {
    fn alloc_dma(
        &self,
        size: usize,
        align: usize,
        max_phys: u64,
        uncached: bool,
    ) -> Option<NonNull<u8>> {
        if self.allocs.hit() {
            return None;
        }
        self.inner.alloc_dma(size, align, max_phys, uncached)
    }

    unsafe fn free_dma(&self, ptr: NonNull<u8>, size: usize, align: usize) {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.inner.free_dma(ptr, size, align) }
    }

    unsafe fn make_visible(&self, ptr: NonNull<u8>, len: usize) {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.inner.make_visible(ptr, len) }
    }

    unsafe fn read_shared<T: zerocopy::FromBytes>(&self, src: NonNull<T>) -> T {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.inner.read_shared(src) }
    }

    unsafe fn write_shared<T: zerocopy::IntoBytes>(&self, dst: NonNull<T>, value: T) {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.inner.write_shared(dst, value) }
    }
}
