//! A backend as a composition: a **translation** (how a device address is
//! made: direct bus windows or an IOMMU), a **coherency** (coherent, or
//! non-coherent with cache maintenance), and a **bounce policy** (never, or
//! through a swiotlb-like pool).
//!
//! ```text
//!   Composed<P, T: Translation, K: Coherency, Bo: BouncePolicy>
//!     map:   [bounce? copy into slot] → T::map → K::clean        (issue)
//!     flush: K::complete → T::flush                               (complete)
//! ```
//!
//! Every combination is a [`Backend`], and each keeps the compile-time
//! no-op declarations that hold for it: with `Direct`, [`Coherent`] and
//! [`NoBounce`], sync and unmap are no-ops, handles carry no physical
//! address and no state — the same 32-byte handle as a hand-written direct
//! mapping.
//!
//! | `SYNC_IS_NOOP` | `UNMAP_IS_NOOP` | handle carries `phys` |
//! |---|---|---|
//! | `K` coherent and `Bo` never bounces | `T` unmap is a no-op and `Bo` never bounces | unless `K` coherent and `Bo` never bounces |

use core::ptr::NonNull;

use crate::arch::{CacheMaintenance, CacheRange};
use crate::backend::{Backend, MapRequest, Mapping, MmioRequest, NoPhys, PhysSlot, SyncRange};
use crate::base::addr::{DmaAddr, PhysAddr};
use crate::base::context::{DeviceConfig, DeviceContext};
use crate::base::direction::DmaDirection;
use crate::base::error::MapErrorKind;
use crate::base::platform::{PhysLookup, Side};
use crate::sync::{Mutation, mutated, mutation_flag};

/// Attributes of a translation request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MapAttrs {
    /// The range is MMIO or peer memory (Linux's `DMA_ATTR_MMIO`): map it
    /// non-cacheable, never touch it from the CPU.
    pub mmio: bool,
}

impl MapAttrs {
    /// Ordinary RAM.
    pub const RAM: Self = Self { mmio: false };
    /// MMIO or peer-to-peer memory.
    pub const MMIO: Self = Self { mmio: true };
}

/// How device addresses are made: direct bus windows (`Direct`) or an
/// IOMMU domain (`iommu::IommuDomain`).
///
/// # Safety
///
/// 1. When [`map`](Self::map) returns `Ok((dma, state))` for `len` bytes at
///    `phys`, the device reaches exactly `[phys, phys + len)` through
///    `[dma, dma + len)`, with at most the access `dir` allows (an
///    implementation that cannot restrict access, like a direct bus, may
///    allow more), until [`unmap`](Self::unmap) for it was issued and a
///    later [`flush`](Self::flush) completed; `dma + len` lies within the
///    device's mask. On error nothing is held. A translation that defers
///    invalidation (a lazy IOMMU) may leave the range reachable until its
///    deferred flush, and must then refuse untrusted devices; it must still
///    never hand the address out again before that flush.
/// 2. A range the device cannot address is refused by `map` with
///    [`MapErrorKind::BeyondMask`] or [`MapErrorKind::NoDmaWindow`] (and
///    those errors mean only that), so a composition can bounce it.
/// 3. If `UNMAP_IS_NOOP`, skipping `unmap` and `flush` leaks nothing.
/// 4. No resource given back by `unmap` (an IOVA) is handed out again
///    before the device can no longer use it through the old mapping.
pub unsafe trait Translation: Send + Sync {
    /// Per-mapping state (an IOVA allocation); `()` for direct.
    type State: Send + Sync;

    /// `true` when unmap and flush do nothing (direct translation).
    const UNMAP_IS_NOOP: bool;

    /// The granularity at which the device is given access: `1` when the
    /// translation grants nothing (direct: the device can reach everything
    /// anyway), the IOMMU page size otherwise. An untrusted device's bounce
    /// buffer fills whole granules of this size.
    fn granule(&self) -> usize;

    /// Makes `[phys, phys + len)` reachable by the device.
    ///
    /// # Safety
    ///
    /// `[phys, phys + len)` is memory this device may be given with the
    /// access `dir` allows: a buffer (or bounce slot) given up by its owner
    /// for as long as the mapping lives, or, with [`MapAttrs::MMIO`], a
    /// device range that is not RAM Rust code owns. A safe caller could
    /// otherwise let a device write any memory. `len > 0` and `phys + len`
    /// does not overflow (an implementation adds to `phys` unchecked).
    unsafe fn map(
        &self,
        phys: PhysAddr,
        len: usize,
        dir: DmaDirection,
        attrs: MapAttrs,
        dev: &DeviceContext,
    ) -> Result<(DmaAddr, Self::State), MapErrorKind>;

    /// Issues the removal of the mapping `[dma, dma + len)`.
    ///
    /// # Safety
    ///
    /// `dma`, `len` and `state` describe a live mapping `map` made, not
    /// unmapped before, and the device has finished with it.
    unsafe fn unmap(&self, dma: DmaAddr, len: usize, state: Self::State, dev: &DeviceContext);

    /// Completes the removals this thread issued (an IOTLB invalidation).
    fn flush(&self, dev: &DeviceContext);

    /// The highest physical address the device reaches through this
    /// translation: its mask for a direct bus (the default), the page
    /// table's output range behind an IOMMU.
    fn phys_limit(&self, cfg: &DeviceConfig) -> u64 {
        cfg.mask().max_addr()
    }
}

/// Whether the CPU's caches are coherent with the device: [`Coherent`], or
/// [`NonCoherent<C>`] with cache maintenance `C`.
///
/// # Safety
///
/// `Coherent` must only be used for devices that snoop the CPU's caches;
/// `NonCoherent<C>` forwards `C`'s contract. Sealed by construction: only
/// these two types implement it.
pub unsafe trait Coherency: Send + Sync + sealed::Sealed {
    /// The granule typed buffers must fill (`U1` when coherent).
    type Granule: crate::base::buffer::Granule;
    /// What a handle must keep of the physical address for maintenance.
    type Phys: PhysSlot;
    /// `true` when the device snoops the caches: no maintenance at all.
    const COHERENT: bool;

    /// Issues a clean of `r`; returns lines issued.
    ///
    /// # Safety
    ///
    /// As for [`CacheMaintenance::clean`].
    unsafe fn clean(&self, r: CacheRange) -> usize;

    /// Issues an invalidate of `r`; returns lines issued.
    ///
    /// # Safety
    ///
    /// As for [`CacheMaintenance::invalidate`].
    unsafe fn invalidate(&self, r: CacheRange) -> usize;

    /// Completes issued maintenance; returns whether a barrier was issued.
    fn complete(&self) -> bool;
}

mod sealed {
    pub trait Sealed {}
}

/// A device that snoops the CPU's caches: no maintenance, nothing kept.
#[derive(Debug, Clone, Copy, Default)]
pub struct Coherent;

/// A device that does not snoop: coherence by cache maintenance `C`.
#[derive(Debug, Clone, Default)]
pub struct NonCoherent<C>(pub C);

impl sealed::Sealed for Coherent {}
impl<C> sealed::Sealed for NonCoherent<C> {}

// SAFETY: used only for snooping devices (documented on the type); does
// nothing, which is all such a device needs.
unsafe impl Coherency for Coherent {
    type Granule = typenum::U1;
    type Phys = NoPhys;
    const COHERENT: bool = true;

    #[inline(always)]
    unsafe fn clean(&self, _: CacheRange) -> usize {
        0
    }

    #[inline(always)]
    unsafe fn invalidate(&self, _: CacheRange) -> usize {
        0
    }

    #[inline(always)]
    fn complete(&self) -> bool {
        false
    }
}

// SAFETY: forwards to `C`, whose contract is the same.
unsafe impl<C: CacheMaintenance> Coherency for NonCoherent<C> {
    type Granule = C::Granule;
    type Phys = PhysAddr;
    const COHERENT: bool = false;

    #[inline]
    unsafe fn clean(&self, r: CacheRange) -> usize {
        if mutated(Mutation::DeviceWidePendingFlag) {
            mutation_flag(core::ptr::from_ref(self).addr(), true);
        }
        // SAFETY: forwarded.
        unsafe { self.0.clean(r) }
    }

    #[inline]
    unsafe fn invalidate(&self, r: CacheRange) -> usize {
        if mutated(Mutation::DeviceWidePendingFlag) {
            mutation_flag(core::ptr::from_ref(self).addr(), true);
        }
        // SAFETY: forwarded.
        unsafe { self.0.invalidate(r) }
    }

    #[inline]
    fn complete(&self) -> bool {
        if mutated(Mutation::DeviceWidePendingFlag)
            && !mutation_flag(core::ptr::from_ref(self).addr(), false)
        {
            // The mutation: "nothing pending on the device, no barrier".
            return false;
        }
        self.0.complete();
        true
    }
}

/// Why a mapping is bounced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BounceReason {
    /// The device cannot address the buffer (beyond its mask or outside
    /// every bus window).
    Unreachable,
    /// A byte buffer shares cache lines with other data on a non-coherent
    /// device.
    SharesCacheLine,
    /// An untrusted device would see the rest of the IOMMU pages the buffer
    /// lies in.
    Untrusted,
}

/// Where a bounced mapping's data lives while the device owns it.
#[derive(Debug, Clone, Copy)]
pub struct BounceSlot {
    /// CPU address of the slot byte that stands for the buffer's first
    /// byte.
    pub cpu: NonNull<u8>,
    /// Its physical address.
    pub phys: PhysAddr,
    /// Where the reserved region starts and how long it is (padding
    /// included): this is what the translation maps for an untrusted device.
    pub region_phys: PhysAddr,
    /// Length of the reserved region.
    pub region_len: usize,
}

impl BounceSlot {
    /// What the translation maps for a mapping of `len` bytes: the whole
    /// padded region for an untrusted device (so it sees only the copy and
    /// zeroed padding in its pages), the copy alone otherwise.
    #[inline]
    pub fn extent(&self, len: usize, trusted: bool) -> (PhysAddr, usize) {
        if trusted {
            (self.phys, len)
        } else {
            (self.region_phys, self.region_len)
        }
    }
}

/// A bounce policy: [`NoBounce`], or a pool of bounce slots
/// (`bounce::Swiotlb`).
///
/// # Safety
///
/// 1. [`alloc`](Self::alloc) returns a slot of at least `len` bytes, aligned
///    as asked, exclusively for this mapping until [`release`](Self::release),
///    inside memory the device can reach (through the translation) and that
///    nothing else references; its padding is zeroed when the device is untrusted (it is given the whole region). On error nothing is
///    held.
/// 2. [`slot`](Self::slot) returns the slot `alloc` stored in the state, or
///    `None` for a state made by [`not_bounced`](Self::not_bounced).
pub unsafe trait BouncePolicy: Send + Sync {
    /// Per-mapping state: the slot, if bounced.
    type State: Send + Sync;
    /// What a handle must keep of the physical address (the original's
    /// address, to copy back without a search).
    type Phys: PhysSlot;
    /// `true` for [`NoBounce`].
    const NEVER: bool;

    /// The state of a mapping that was not bounced.
    fn not_bounced() -> Self::State;

    /// Reserves a slot for `len` bytes whose original lies at `orig`.
    /// `align` is the alignment the slot region needs (an IOMMU page for an
    /// untrusted device, a cache-line granule otherwise); `pad_to` rounds
    /// the region up to whole granules of that size.
    fn alloc(
        &self,
        orig: PhysAddr,
        len: usize,
        align: usize,
        pad_to: usize,
        reason: BounceReason,
        cfg: &DeviceConfig,
    ) -> Result<Self::State, MapErrorKind>;

    /// The slot of a bounced mapping.
    fn slot(&self, state: &Self::State) -> Option<BounceSlot>;

    /// Gives a slot back.
    ///
    /// # Safety
    ///
    /// `state` came from this policy's `alloc`, and the device no longer
    /// uses the slot.
    unsafe fn release(&self, state: Self::State);
}

/// Never bounce: a buffer the device cannot use as it is is an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBounce;

// SAFETY: never allocates.
unsafe impl BouncePolicy for NoBounce {
    type State = ();
    type Phys = NoPhys;
    const NEVER: bool = true;

    #[inline(always)]
    fn not_bounced() {}

    fn alloc(
        &self,
        _: PhysAddr,
        _: usize,
        _: usize,
        _: usize,
        _: BounceReason,
        _: &DeviceConfig,
    ) -> Result<(), MapErrorKind> {
        Err(MapErrorKind::Backend("bouncing is disabled"))
    }

    #[inline(always)]
    fn slot(&self, (): &()) -> Option<BounceSlot> {
        None
    }

    #[inline(always)]
    unsafe fn release(&self, (): ()) {}
}

/// Backends whose type proves they never bounce: any composition with
/// [`NoBounce`]. [`Device::map_unbounced`](crate::Device::map_unbounced)
/// needs it. Sealed.
#[diagnostic::on_unimplemented(
    message = "this backend may bounce buffers, so a map that must never bounce is not proven by its type",
    label = "its bounce policy is not `NoBounce`",
    note = "use `Device::map_require_unbounced` to refuse a bounce at run time instead"
)]
pub trait NeverBounces: Backend + sealed::Sealed {}

impl<P, T, K> sealed::Sealed for Composed<P, T, K, NoBounce> {}
impl<P, T, K> NeverBounces for Composed<P, T, K, NoBounce> where Self: Backend {}

/// The physical-address slot of a composition: nothing if neither the
/// coherency nor the bounce policy needs it.
pub trait PhysJoin<Other: PhysSlot>: PhysSlot {
    /// `NoPhys` only if both are `NoPhys`.
    type Out: PhysSlot;
}
impl PhysJoin<NoPhys> for NoPhys {
    type Out = NoPhys;
}
impl PhysJoin<PhysAddr> for NoPhys {
    type Out = PhysAddr;
}
impl PhysJoin<NoPhys> for PhysAddr {
    type Out = PhysAddr;
}
impl PhysJoin<PhysAddr> for PhysAddr {
    type Out = PhysAddr;
}

/// A backend made of a platform `P`, a translation `T`, a coherency `K` and
/// a bounce policy `Bo`. See the module docs.
#[derive(Debug, Clone)]
pub struct Composed<P, T, K, Bo> {
    platform: P,
    translation: T,
    coherency: K,
    bounce: Bo,
}

impl<P, T, K, Bo> Composed<P, T, K, Bo> {
    /// The composition of the four parts.
    pub const fn from_parts(platform: P, translation: T, coherency: K, bounce: Bo) -> Self {
        Self {
            platform,
            translation,
            coherency,
            bounce,
        }
    }

    /// The same backend with another bounce policy.
    pub fn with_bounce<Bo2>(self, bounce: Bo2) -> Composed<P, T, K, Bo2> {
        Composed {
            platform: self.platform,
            translation: self.translation,
            coherency: self.coherency,
            bounce,
        }
    }

    /// The translation.
    pub fn translation(&self) -> &T {
        &self.translation
    }

    /// The coherency.
    pub fn coherency(&self) -> &K {
        &self.coherency
    }

    /// The bounce policy.
    pub fn bounce(&self) -> &Bo {
        &self.bounce
    }
}

impl<P, T, C, Bo> Composed<P, T, NonCoherent<C>, Bo> {
    /// The cache maintenance of a non-coherent composition.
    pub fn cache(&self) -> &C {
        &self.coherency.0
    }
}

/// A mapping's state in a composition: the translation's and the bounce
/// policy's.
#[derive(Debug)]
pub struct ComposedState<TS, BS> {
    translation: TS,
    bounce: BS,
}

impl<TS, BS> ComposedState<TS, BS> {
    /// The translation's part (the IOVA allocation).
    pub fn translation(&self) -> &TS {
        &self.translation
    }

    /// The bounce policy's part (the slot, if bounced).
    pub fn bounce(&self) -> &BS {
        &self.bounce
    }
}

impl<P, T, K, Bo> Composed<P, T, K, Bo>
where
    P: PhysLookup,
    T: Translation,
    K: Coherency,
    Bo: BouncePolicy,
    K::Phys: PhysJoin<Bo::Phys>,
{
    /// Why the buffer must be bounced before the translation is even
    /// asked (cheap checks, no translation work), if it must.
    fn early_bounce_reason(&self, req: &MapRequest<'_>) -> Option<BounceReason> {
        if !req.granule_ok {
            return Some(BounceReason::SharesCacheLine);
        }
        let page = self.translation.granule();
        let whole_pages = req.phys.is_aligned(page as u64)
            && (req.len.is_multiple_of(page) || req.owned_len >= req.len.next_multiple_of(page));
        if !req.device.config().is_trusted() && page > 1 && !whole_pages {
            return Some(BounceReason::Untrusted);
        }
        None
    }

    /// The error for a buffer that needs bouncing when the policy cannot.
    fn unbounced_error(&self, req: &MapRequest<'_>, reason: BounceReason) -> MapErrorKind {
        match reason {
            BounceReason::SharesCacheLine => MapErrorKind::SharesCacheLine {
                phys: req.phys,
                len: req.len,
                granule: <K::Granule as typenum::Unsigned>::USIZE,
            },
            BounceReason::Untrusted => MapErrorKind::UntrustedSubPage {
                phys: req.phys,
                len: req.len,
                page: self.translation.granule(),
            },
            // The translation refuses unreachable buffers itself, with the
            // precise reason (window or mask); they never come here.
            BounceReason::Unreachable => unreachable!("early reasons only"),
        }
    }

    /// Reserves a bounce slot for `req`, aligned and padded for `reason`.
    fn alloc_bounce(
        &self,
        req: &MapRequest<'_>,
        reason: BounceReason,
    ) -> Result<Bo::State, MapErrorKind> {
        let page = self.translation.granule();
        let line = <K::Granule as typenum::Unsigned>::USIZE;
        let cfg = req.device.config();
        let (align, pad) = if !cfg.is_trusted() && page > 1 {
            (page, page)
        } else {
            (line, line)
        };
        self.bounce
            .alloc(req.phys, req.len, align, pad, reason, cfg)
    }

    /// The range the device works on: the slot if bounced, the buffer
    /// otherwise, offset by `range`.
    fn device_range(
        &self,
        m: &Mapping<'_, Self>,
        state: &ComposedState<T::State, Bo::State>,
        phys: PhysAddr,
        range: SyncRange,
    ) -> CacheRange {
        let (cpu, base) = match self.bounce.slot(&state.bounce) {
            Some(s) => (s.cpu, s.phys),
            None => (m.cpu, phys),
        };
        CacheRange::new(
            // SAFETY: `range` lies inside the mapping, and the slot is as
            // long as the buffer.
            unsafe { cpu.add(range.offset) },
            PhysAddr::new(base.as_u64() + range.offset as u64),
            range.len,
        )
    }
}

/// The refusal of a mapping that must not bounce.
#[cold]
fn would_bounce(req: &MapRequest<'_>, reason: BounceReason) -> MapErrorKind {
    MapErrorKind::WouldBounce {
        phys: req.phys,
        len: req.len,
        reason: match reason {
            BounceReason::Unreachable => "the device cannot address it",
            BounceReason::SharesCacheLine => "it shares a cache line with other data",
            BounceReason::Untrusted => "an untrusted device would see the rest of its IOMMU pages",
        },
    }
}

/// Copies `len` bytes between the original buffer and its slot.
///
/// # Safety
///
/// Both ranges are valid for the access, do not overlap, and no reference
/// to either exists.
#[inline]
unsafe fn copy(src: NonNull<u8>, dst: NonNull<u8>, len: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_ptr(), len) };
}

// SAFETY: (1) the translation maps either the buffer or, when bouncing, a
// slot that holds a copy of it; the device reaches through `dma` exactly
// the bytes that stand for the buffer. (2) Map, `sync_for_device`: copy the
// buffer into the slot (when bounced and the device reads), then clean what
// the device reads; `flush` completes it. `sync_for_cpu`: invalidate what
// the device wrote and, when bounced, complete that first and then copy the
// slot back, so the copy never reads stale lines. (3) SYNC_IS_NOOP only
// when coherent and never bouncing; UNMAP_IS_NOOP only when the translation
// has nothing to undo and nothing was bounced. (4) Only the buffer's range
// and its own slot are touched. (5) `flush` completes the coherency's and
// the translation's work for the calling thread.
unsafe impl<P, T, K, Bo> Backend for Composed<P, T, K, Bo>
where
    P: PhysLookup,
    T: Translation,
    K: Coherency,
    Bo: BouncePolicy,
    K::Phys: PhysJoin<Bo::Phys>,
{
    type Platform = P;
    type Phys = <K::Phys as PhysJoin<Bo::Phys>>::Out;
    type State = ComposedState<T::State, Bo::State>;
    type Granule = K::Granule;

    const COHERENT: bool = K::COHERENT;
    const SYNC_IS_NOOP: bool = K::COHERENT && Bo::NEVER;
    const UNMAP_IS_NOOP: bool = T::UNMAP_IS_NOOP && Bo::NEVER;

    #[inline]
    fn platform(&self) -> &P {
        &self.platform
    }

    #[inline]
    unsafe fn map(&self, req: &MapRequest<'_>) -> Result<(DmaAddr, Self::State), MapErrorKind> {
        let stats = req.device.stats();
        let bounce = match self.early_bounce_reason(req) {
            Some(reason) if Bo::NEVER => return Err(self.unbounced_error(req, reason)),
            Some(reason) if req.no_bounce => return Err(would_bounce(req, reason)),
            Some(reason) => self.alloc_bounce(req, reason)?,
            // The common case: map the buffer where it lies, translating
            // once; bounce only if the translation cannot address it.
            None => {
                // SAFETY: the buffer was given up by its owner (caller).
                match unsafe {
                    self.translation
                        .map(req.phys, req.len, req.dir, MapAttrs::RAM, req.device)
                } {
                    Ok((dma, translation)) => {
                        let r = CacheRange::new(req.cpu, req.phys, req.len);
                        // SAFETY: the buffer is live memory with this
                        // physical address, given up by its owner.
                        let lines = unsafe { self.coherency.clean(r) };
                        stats.add_lines_cleaned(lines);
                        return Ok((
                            dma,
                            ComposedState {
                                translation,
                                bounce: Bo::not_bounced(),
                            },
                        ));
                    }
                    Err(MapErrorKind::BeyondMask { .. } | MapErrorKind::NoDmaWindow { .. })
                        if !Bo::NEVER && req.no_bounce =>
                    {
                        return Err(would_bounce(req, BounceReason::Unreachable));
                    }
                    Err(MapErrorKind::BeyondMask { .. } | MapErrorKind::NoDmaWindow { .. })
                        if !Bo::NEVER =>
                    {
                        self.alloc_bounce(req, BounceReason::Unreachable)?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let slot = self.bounce.slot(&bounce);
        // Copy the original in for every direction: stale slot contents
        // must never reach a device.
        if let Some(s) = slot {
            // SAFETY: the buffer was given up by its owner (no reference),
            // the slot is exclusively this mapping's; they are distinct
            // memory.
            unsafe { copy(req.cpu, s.cpu, req.len) };
        }
        let trusted = req.device.config().is_trusted();
        let (map_phys, map_len) = match slot {
            Some(s) => s.extent(req.len, trusted),
            None => (req.phys, req.len),
        };
        // SAFETY: the slot region is this mapping's alone until released.
        let (dma_base, t_state) = match unsafe {
            self.translation
                .map(map_phys, map_len, req.dir, MapAttrs::RAM, req.device)
        } {
            Ok(ok) => ok,
            Err(e) => {
                // SAFETY: just allocated; no device was given it.
                unsafe { self.bounce.release(bounce) };
                return Err(e);
            }
        };
        // The DMA address of the buffer's first byte (inside the padded
        // region, for an untrusted device's bounce slot).
        let first = slot.map_or(req.phys, |s| s.phys);
        let dma = DmaAddr::new(dma_base.as_u64() + (first.as_u64() - map_phys.as_u64()));
        if slot.is_some() {
            stats.add_bounced(req.len);
        }
        // Clean exactly what the device was given: the buffer, the copy, or
        // (untrusted) the whole slot region with its zeroed padding, so no
        // stale line behind the padding reaches the device.
        let (cpu, phys, len) = match slot {
            None => (req.cpu, req.phys, req.len),
            Some(s) => {
                let before = (s.phys.as_u64() - map_phys.as_u64()) as usize;
                // SAFETY: `map_phys` is the region start or the copy itself,
                // `before` bytes ahead of the copy inside the same slot region.
                (unsafe { s.cpu.sub(before) }, map_phys, map_len)
            }
        };
        // SAFETY: the range is live memory with this physical address, and
        // nothing references it.
        let lines = unsafe { self.coherency.clean(CacheRange::new(cpu, phys, len)) };
        stats.add_lines_cleaned(lines);
        Ok((
            dma,
            ComposedState {
                translation: t_state,
                bounce,
            },
        ))
    }

    #[inline(always)]
    unsafe fn hand_over(&self, m: &Mapping<'_, Self>, state: &Self::State, to: Side) {
        let (cpu, len) = match self.bounce.slot(&state.bounce) {
            None => (m.cpu, m.len),
            Some(s) => {
                // The device works on the slot: exactly what the translation
                // mapped (the copy, or an untrusted device's padded region).
                let (start, len) = s.extent(m.len, m.device.config().is_trusted());
                let before = (s.phys.as_u64() - start.as_u64()) as usize;
                // SAFETY: `start` is the region start or the copy itself,
                // `before` bytes ahead of the copy in the same slot region.
                (unsafe { s.cpu.sub(before) }, len)
            }
        };
        // SAFETY: the caller's promise covers the buffer; the slot region is
        // this mapping's alone and touched by the CPU only inside this
        // backend's calls, which dmacap makes only while the CPU side owns
        // the mapping (before `Side::Device`, after `Side::Cpu`).
        unsafe { self.platform.ownership_changed(cpu, len, to, m.device.id()) }
    }

    unsafe fn sync_for_device(&self, m: &Mapping<'_, Self>, state: &Self::State, range: SyncRange) {
        let phys = m.phys.get().unwrap_or(PhysAddr::new(0));
        if let Some(s) = self.bounce.slot(&state.bounce) {
            if m.dir.device_reads() {
                // SAFETY: inside the mapping and its slot; the CPU holds no
                // reference (caller), the device is not using the slot.
                unsafe { copy(m.cpu.add(range.offset), s.cpu.add(range.offset), range.len) };
            }
        }
        let r = self.device_range(m, state, phys, range);
        // SAFETY: live memory of this mapping.
        let lines = unsafe { self.coherency.clean(r) };
        m.device.stats().add_lines_cleaned(lines);
    }

    unsafe fn sync_for_cpu(&self, m: &Mapping<'_, Self>, state: &Self::State, range: SyncRange) {
        debug_assert!(
            m.dir.device_writes(),
            "dmacap never syncs ToDevice for the CPU"
        );
        let phys = m.phys.get().unwrap_or(PhysAddr::new(0));
        let r = self.device_range(m, state, phys, range);
        // SAFETY: live memory of this mapping; the device is finished and
        // no CPU reference exists (caller).
        let lines = unsafe { self.coherency.invalidate(r) };
        m.device.stats().add_lines_invalidated(lines);
        if let Some(s) = self.bounce.slot(&state.bounce) {
            // The copy must read completed, not stale, lines: complete the
            // invalidate now (bounced syncs do not batch on the CPU side).
            if self.coherency.complete() {
                m.device.stats().add_barriers(1);
            }
            // SAFETY: as above; slot and buffer are distinct.
            unsafe { copy(s.cpu.add(range.offset), m.cpu.add(range.offset), range.len) };
        }
    }

    unsafe fn unmap(&self, m: &Mapping<'_, Self>, state: Self::State) {
        let ComposedState {
            translation,
            bounce,
        } = state;
        let trusted = m.device.config().is_trusted();
        let (base, len) = match self.bounce.slot(&bounce) {
            Some(s) => {
                let (start, len) = s.extent(m.len, trusted);
                (m.dma.as_u64() - (s.phys.as_u64() - start.as_u64()), len)
            }
            None => (m.dma.as_u64(), m.len),
        };
        let base = DmaAddr::new(base);
        let bounced = self.bounce.slot(&bounce).is_some();
        // SAFETY: live mapping made by `map`, unmapped once, device done.
        unsafe { self.translation.unmap(base, len, translation, m.device) };
        if bounced && !T::UNMAP_IS_NOOP {
            // The slot goes back to the pool, where the next mapping (of any
            // device) may take it at once: the device must not reach it any
            // more, so the IOTLB invalidation completes first (as Linux's
            // iommu-dma syncs the IOTLB before `swiotlb_tbl_unmap_single`).
            // Bounced unmaps behind an IOMMU therefore do not batch their
            // invalidation.
            self.translation.flush(m.device);
        }
        // SAFETY: the device is finished with the slot (caller), and behind
        // an IOMMU its translation is gone.
        unsafe { self.bounce.release(bounce) };
    }

    fn flush(&self, device: &DeviceContext) {
        if self.coherency.complete() {
            device.stats().add_barriers(1);
        }
        self.translation.flush(device);
    }

    unsafe fn map_mmio(
        &self,
        req: &MmioRequest<'_>,
    ) -> Result<(DmaAddr, Self::State), MapErrorKind> {
        // SAFETY: the caller promises an MMIO range the device may be given.
        let (dma, translation) = unsafe {
            self.translation
                .map(req.phys, req.len, req.dir, MapAttrs::MMIO, req.device)
        }
        .map_err(|e| match e {
            // MMIO is never bounced: a range the device cannot address
            // is an error of its own.
            MapErrorKind::BeyondMask { .. } | MapErrorKind::NoDmaWindow { .. } => {
                MapErrorKind::MmioNeedsBounce {
                    phys: req.phys,
                    len: req.len,
                }
            }
            e => e,
        })?;
        Ok((
            dma,
            ComposedState {
                translation,
                bounce: Bo::not_bounced(),
            },
        ))
    }

    unsafe fn map_coherent(
        &self,
        req: &MmioRequest<'_>,
    ) -> Result<(DmaAddr, Self::State), MapErrorKind> {
        // SAFETY: the caller promises a coherent allocation of the platform,
        // memory the device may be given read and write.
        let (dma, translation) = unsafe {
            self.translation.map(
                req.phys,
                req.len,
                DmaDirection::Bidirectional,
                MapAttrs::RAM,
                req.device,
            )
        }?;
        Ok((
            dma,
            ComposedState {
                translation,
                bounce: Bo::not_bounced(),
            },
        ))
    }

    unsafe fn unmap_coherent(
        &self,
        dma: DmaAddr,
        len: usize,
        state: Self::State,
        dev: &DeviceContext,
    ) {
        // SAFETY: forwarded from the caller: a live coherent mapping, device
        // done.
        unsafe { self.translation.unmap(dma, len, state.translation, dev) };
    }

    fn phys_limit(&self, cfg: &DeviceConfig) -> u64 {
        self.translation.phys_limit(cfg)
    }

    fn access_granule(&self) -> usize {
        self.translation.granule()
    }

    unsafe fn unmap_mmio(&self, dma: DmaAddr, len: usize, state: Self::State, dev: &DeviceContext) {
        // SAFETY: forwarded from the caller: a live MMIO mapping, device done.
        unsafe { self.translation.unmap(dma, len, state.translation, dev) };
    }
}
