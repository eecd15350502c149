//! Direct mapping: the device reaches memory at its physical address plus a
//! bus offset, with no IOMMU in between.
//!
//! The bus may expose memory through several windows, each with its own
//! offset (Linux's `bus_dma_region` table, from a device tree's
//! `dma-ranges`); [`DmaWindows`] holds them. [`DirectCoherent`] is the
//! backend for a device that also snoops the CPU's caches: its sync and
//! unmap do nothing, and it declares so, so they compile to nothing and its
//! handles carry neither a physical address nor any state.

use crate::backend::compose::{Coherent, Composed, MapAttrs, NoBounce, Translation};
use crate::base::addr::{DmaAddr, PhysAddr};
use crate::base::context::{DeviceConfig, DeviceContext};
use crate::base::direction::DmaDirection;
use crate::base::error::MapErrorKind;
use crate::base::platform::PhysLookup;

/// One window of the bus: `size` bytes of physical memory from `cpu_start`
/// appear to devices at `dma_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaWindow {
    /// First physical address of the window.
    pub cpu_start: PhysAddr,
    /// The DMA address at which devices see `cpu_start`.
    pub dma_start: DmaAddr,
    /// Length in bytes.
    pub size: u64,
}

/// Why a window table was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WindowError {
    /// More windows than [`DmaWindows::MAX`].
    #[error("{0} DMA windows given; at most {max} are supported", max = DmaWindows::MAX)]
    TooMany(usize),
    /// No windows, or a window of size zero.
    #[error("a DMA window table needs at least one window of non-zero size")]
    Empty,
    /// A window runs past the end of the physical or DMA address space.
    #[error("DMA window {0} runs past the end of the address space")]
    Overflow(usize),
    /// Two windows overlap in physical or in DMA addresses.
    #[error("DMA windows {0} and {1} overlap")]
    Overlap(usize, usize),
}

/// The bus's windows, at most [`MAX`](Self::MAX), none overlapping.
///
/// # Example
///
/// ```
/// use dmacap::{DmaAddr, PhysAddr};
/// use dmacap::backend::direct::{DmaWindow, DmaWindows};
///
/// // RAM at 2 GiB appears to devices at 0.
/// let w = DmaWindows::new(&[DmaWindow {
///     cpu_start: PhysAddr::new(0x8000_0000),
///     dma_start: DmaAddr::new(0),
///     size: 0x4000_0000,
/// }])
/// .unwrap();
/// assert_eq!(w.phys_to_dma(PhysAddr::new(0x8000_1000), 16), Some(DmaAddr::new(0x1000)));
/// assert_eq!(w.phys_to_dma(PhysAddr::new(0x1000), 16), None);
/// ```
///
/// # Invariants
///
/// `count <= MAX`; `windows[..count]` have non-zero sizes, do not overflow
/// and do not overlap; `windows[count..]` have size zero. `identity` is true
/// exactly when the table is one window mapping physical address 0 to DMA
/// address 0 for `u64::MAX` bytes (what [`identity`](Self::identity)
/// builds, however it was built): derived from the windows when the table
/// is made, kept so that the lookup is one test, no walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaWindows {
    windows: [DmaWindow; DmaWindows::MAX],
    count: usize,
    identity: bool,
}

/// All of the address space at DMA address = physical address.
const IDENTITY_WINDOW: DmaWindow = DmaWindow {
    cpu_start: PhysAddr::new(0),
    dma_start: DmaAddr::new(0),
    size: u64::MAX,
};

const EMPTY_WINDOW: DmaWindow = DmaWindow {
    cpu_start: PhysAddr::new(0),
    dma_start: DmaAddr::new(0),
    size: 0,
};

/// Whether `[a, a + a_len)` and `[b, b + b_len)` share a byte (lengths > 0,
/// neither range overflowing).
const fn overlaps(a: u64, a_len: u64, b: u64, b_len: u64) -> bool {
    a < b + b_len && b < a + a_len
}

impl DmaWindows {
    /// The most windows a table holds.
    pub const MAX: usize = 8;

    /// DMA address equals physical address, everywhere.
    pub const fn identity() -> Self {
        Self::single(IDENTITY_WINDOW)
    }

    /// Whether `windows[..count]` is the identity table.
    const fn is_identity(windows: &[DmaWindow]) -> bool {
        windows.len() == 1
            && windows[0].cpu_start.as_u64() == 0
            && windows[0].dma_start.as_u64() == 0
            && windows[0].size == u64::MAX
    }

    /// One window. Panics in const context if it overflows; use
    /// [`new`](Self::new) to get an error instead.
    pub const fn single(window: DmaWindow) -> Self {
        assert!(window.size > 0);
        assert!(window.cpu_start.checked_add(window.size - 1).is_some());
        assert!(window.dma_start.checked_add(window.size - 1).is_some());
        let mut windows = [EMPTY_WINDOW; Self::MAX];
        windows[0] = window;
        Self {
            windows,
            count: 1,
            identity: Self::is_identity(&[window]),
        }
    }

    /// A table of several windows, checked.
    pub fn new(list: &[DmaWindow]) -> Result<Self, WindowError> {
        if list.len() > Self::MAX {
            return Err(WindowError::TooMany(list.len()));
        }
        if list.is_empty() || list.iter().any(|w| w.size == 0) {
            return Err(WindowError::Empty);
        }
        for (i, w) in list.iter().enumerate() {
            if w.cpu_start.last_of(w.size).is_none() || w.dma_start.last_of(w.size).is_none() {
                return Err(WindowError::Overflow(i));
            }
        }
        for (i, a) in list.iter().enumerate() {
            for (j, b) in list.iter().enumerate().skip(i + 1) {
                let phys = overlaps(a.cpu_start.as_u64(), a.size, b.cpu_start.as_u64(), b.size);
                let dma = overlaps(a.dma_start.as_u64(), a.size, b.dma_start.as_u64(), b.size);
                if phys || dma {
                    return Err(WindowError::Overlap(i, j));
                }
            }
        }
        let mut windows = [EMPTY_WINDOW; Self::MAX];
        windows[..list.len()].copy_from_slice(list);
        Ok(Self {
            windows,
            count: list.len(),
            identity: Self::is_identity(list),
        })
    }

    /// The windows.
    pub fn as_slice(&self) -> &[DmaWindow] {
        &self.windows[..self.count.min(Self::MAX)]
    }

    /// The DMA address of `len` bytes at `phys`, if one window holds all of
    /// them. This is the forward translation done once, at map time.
    #[inline]
    pub fn phys_to_dma(&self, phys: PhysAddr, len: u64) -> Option<DmaAddr> {
        // Checked here, so that the lookup below may assume it: a public
        // caller can pass anything.
        phys.last_of(len)?;
        self.lookup(phys, len)
    }

    /// [`phys_to_dma`](Self::phys_to_dma) for `len > 0` and `phys + len`
    /// not overflowing (what `PhysLookup` promises for every mapping).
    #[inline(always)]
    fn lookup(&self, phys: PhysAddr, len: u64) -> Option<DmaAddr> {
        if self.identity {
            return Some(DmaAddr::new(phys.as_u64()));
        }
        // Unused slots have size 0 and never match, so the walk needs no
        // bounds check on `count`; it stops at the first hit.
        self.windows.iter().take(self.count).find_map(|w| {
            let off = phys.as_u64().wrapping_sub(w.cpu_start.as_u64());
            // Inside the window from `off`, and `len` more bytes still are
            // (`off < size`, so `size - off` cannot underflow).
            (off < w.size && len <= w.size - off).then(|| DmaAddr::new(w.dma_start.as_u64() + off))
        })
    }

    /// What the interconnect does for a device access: the physical address
    /// behind `dma`, and how many bytes from there stay in the same window.
    ///
    /// dmacap's own mapping code never calls this (handles carry the
    /// physical address); it exists for bus models such as the simulated
    /// device.
    pub fn bus_to_phys(&self, dma: DmaAddr) -> Option<(PhysAddr, u64)> {
        self.as_slice().iter().find_map(|w| {
            let off = dma.as_u64().checked_sub(w.dma_start.as_u64())?;
            (off < w.size).then(|| (PhysAddr::new(w.cpu_start.as_u64() + off), w.size - off))
        })
    }
}

impl Default for DmaWindows {
    fn default() -> Self {
        Self::identity()
    }
}

/// How a bus routes device addresses to memory, with no IOMMU: a table of
/// windows ([`DmaWindows`], from a device tree's `dma-ranges`), or, known at
/// compile time, none at all ([`IdentityBus`]: DMA address = physical
/// address), which makes the forward translation free.
///
/// # Safety
///
/// [`phys_to_dma`](Self::phys_to_dma) returns `Some(dma)` only if the bus
/// routes `[dma, dma + len)` to exactly `[phys, phys + len)`, and
/// `dma + len` does not overflow; [`bus_to_phys`](Self::bus_to_phys) is
/// its inverse (the hardware's routing, used only by simulated devices).
/// Both hold for every `len > 0` with `phys + len` not overflowing: dmacap
/// calls `phys_to_dma` only with such ranges (what
/// [`PhysLookup`](crate::platform::PhysLookup) promises), and an
/// implementation may assume it (the identity needs no check).
pub unsafe trait BusWindows: Clone + Send + Sync + core::fmt::Debug {
    /// The DMA address of `len` bytes at `phys`, if one window holds them.
    /// Called with `len > 0` and `phys + len` not overflowing.
    fn phys_to_dma(&self, phys: PhysAddr, len: u64) -> Option<DmaAddr>;

    /// The physical address behind `dma`, and how many bytes from there the
    /// same window covers.
    fn bus_to_phys(&self, dma: DmaAddr) -> Option<(PhysAddr, u64)>;
}

// SAFETY: the table's windows are checked when built (no overflow, no
// overlap); `phys_to_dma` maps a range inside one window by its offset, and
// `bus_to_phys` inverts it.
unsafe impl BusWindows for DmaWindows {
    #[inline(always)]
    fn phys_to_dma(&self, phys: PhysAddr, len: u64) -> Option<DmaAddr> {
        // The trait's callers pass non-wrapping ranges (see its contract).
        debug_assert!(phys.last_of(len).is_some());
        self.lookup(phys, len)
    }

    #[inline]
    fn bus_to_phys(&self, dma: DmaAddr) -> Option<(PhysAddr, u64)> {
        DmaWindows::bus_to_phys(self, dma)
    }
}

/// A bus where DMA addresses are physical addresses, known at compile time:
/// no window table to search (most x86 systems, and ARM systems without
/// `dma-ranges`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdentityBus;

// SAFETY: the identity: `dma = phys`; `dma + len` does not overflow because
// `phys + len` does not (the trait's domain).
unsafe impl BusWindows for IdentityBus {
    #[inline(always)]
    fn phys_to_dma(&self, phys: PhysAddr, len: u64) -> Option<DmaAddr> {
        debug_assert!(phys.last_of(len).is_some());
        Some(DmaAddr::new(phys.as_u64()))
    }

    #[inline]
    fn bus_to_phys(&self, dma: DmaAddr) -> Option<(PhysAddr, u64)> {
        // To the end of the address space (`u64::MAX` bytes at most).
        Some((
            PhysAddr::new(dma.as_u64()),
            (u64::MAX - dma.as_u64()).saturating_add(1),
        ))
    }
}

/// Direct translation: the device reaches memory through the bus's windows
/// `W`, with no IOMMU. It grants nothing (the device can reach all of
/// memory anyway), so unmap has nothing to undo.
#[derive(Debug, Clone, Default)]
pub struct Direct<W: BusWindows = DmaWindows> {
    windows: W,
}

impl Direct<IdentityBus> {
    /// DMA addresses equal to physical addresses, known at compile time.
    pub const fn identity_bus() -> Self {
        Self {
            windows: IdentityBus,
        }
    }
}

impl<W: BusWindows> Direct<W> {
    /// DMA addresses through `windows`.
    pub const fn with_bus(windows: W) -> Self {
        Self { windows }
    }

    /// The bus windows.
    pub fn bus(&self) -> &W {
        &self.windows
    }

    /// The DMA address of `len` bytes at `phys` for a device with `cfg`'s
    /// mask: the forward translation, done once at map time. An empty or
    /// wrapping range is refused with `NoDmaWindow`.
    #[inline]
    pub fn translate(
        &self,
        phys: PhysAddr,
        len: usize,
        cfg: &DeviceConfig,
    ) -> Result<DmaAddr, MapErrorKind> {
        if phys.last_of(len as u64).is_none() {
            return Err(MapErrorKind::NoDmaWindow { phys, len });
        }
        self.translate_unwrapped(phys, len, cfg)
    }

    /// [`translate`](Self::translate) for `len > 0` and `phys + len` not
    /// overflowing, what every mapping request carries (`MapRequest`'s
    /// invariant): a window lookup and a mask compare, nothing checked twice.
    #[inline(always)]
    fn translate_unwrapped(
        &self,
        phys: PhysAddr,
        len: usize,
        cfg: &DeviceConfig,
    ) -> Result<DmaAddr, MapErrorKind> {
        let dma = self
            .windows
            .phys_to_dma(phys, len as u64)
            .ok_or(MapErrorKind::NoDmaWindow { phys, len })?;
        let mask = cfg.mask();
        // `BusWindows` promises `dma + len` does not overflow.
        if !mask.covers_unwrapped(dma, len as u64) {
            return Err(MapErrorKind::BeyondMask { dma, len, mask });
        }
        Ok(dma)
    }
}

impl Direct {
    /// DMA addresses equal to physical addresses.
    pub const fn identity() -> Self {
        Self {
            windows: DmaWindows::identity(),
        }
    }

    /// DMA addresses through `windows`.
    pub const fn new(windows: DmaWindows) -> Self {
        Self { windows }
    }

    /// The bus windows.
    pub fn windows(&self) -> &DmaWindows {
        &self.windows
    }
}

// SAFETY: (1) `translate` returns the window's image of the range and checks
// it against the mask; the bus routes it to that memory. (2) Unreachable
// ranges fail with `NoDmaWindow` or `BeyondMask` and hold nothing. (3) Unmap holds and frees nothing. (4) Nothing is
// handed out.
unsafe impl<W: BusWindows> Translation for Direct<W> {
    type State = ();
    const UNMAP_IS_NOOP: bool = true;

    #[inline(always)]
    fn granule(&self) -> usize {
        1
    }

    #[inline(always)]
    unsafe fn map(
        &self,
        phys: PhysAddr,
        len: usize,
        _: DmaDirection,
        _: MapAttrs,
        dev: &DeviceContext,
    ) -> Result<(DmaAddr, ()), MapErrorKind> {
        // `phys + len` does not overflow: the `Translation::map` contract.
        self.translate_unwrapped(phys, len, dev.config())
            .map(|dma| (dma, ()))
    }

    #[inline(always)]
    unsafe fn unmap(&self, _: DmaAddr, _: usize, (): (), _: &DeviceContext) {}

    #[inline(always)]
    fn flush(&self, _: &DeviceContext) {}
}

/// The backend for a device that reaches memory directly and snoops the
/// CPU's caches (most x86 devices; arm64 devices marked `dma-coherent`):
/// [`Direct`] translation, [`Coherent`], [`NoBounce`].
///
/// Map is a window lookup and a mask check. Sync and unmap do nothing and
/// are declared so ([`Backend::SYNC_IS_NOOP`], [`Backend::UNMAP_IS_NOOP`]),
/// and handles keep no physical address and no state, so a handle over a
/// `Box<[u8]>` is the box, the DMA address and the device reference.
///
/// Addresses beyond the device's mask are an error here: it does not
/// bounce (add a bounce policy with [`Composed::with_bounce`]).
///
/// [`Backend::SYNC_IS_NOOP`]: crate::backend::Backend::SYNC_IS_NOOP
/// [`Backend::UNMAP_IS_NOOP`]: crate::backend::Backend::UNMAP_IS_NOOP
pub type DirectCoherent<P> = Composed<P, Direct, Coherent, NoBounce>;

impl<P: PhysLookup> Composed<P, Direct, Coherent, NoBounce> {
    /// A backend where DMA addresses equal physical addresses.
    pub fn new(platform: P) -> Self {
        Self::with_windows(platform, DmaWindows::identity())
    }

    /// A backend whose bus maps memory through `windows`.
    pub fn with_windows(platform: P, windows: DmaWindows) -> Self {
        Composed::from_parts(platform, Direct::new(windows), Coherent, NoBounce)
    }
}

impl<P, W: BusWindows, K, Bo> Composed<P, Direct<W>, K, Bo> {
    /// The bus windows.
    pub fn windows(&self) -> &W {
        self.translation().bus()
    }
}

/// [`DirectCoherent`] on a bus known at compile time to be the identity:
/// the forward translation is a mask check, nothing to search.
pub type IdentityCoherent<P> = Composed<P, Direct<IdentityBus>, Coherent, NoBounce>;

impl<P: PhysLookup> Composed<P, Direct<IdentityBus>, Coherent, NoBounce> {
    /// A coherent device on an identity bus.
    pub fn identity_bus(platform: P) -> Self {
        Composed::from_parts(platform, Direct::identity_bus(), Coherent, NoBounce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(cpu: u64, dma: u64, size: u64) -> DmaWindow {
        DmaWindow {
            cpu_start: PhysAddr::new(cpu),
            dma_start: DmaAddr::new(dma),
            size,
        }
    }

    #[test]
    fn windows_are_checked() {
        assert_eq!(DmaWindows::new(&[]), Err(WindowError::Empty));
        assert_eq!(DmaWindows::new(&[w(0, 0, 0)]), Err(WindowError::Empty));
        assert_eq!(
            DmaWindows::new(&[w(u64::MAX, 0, 2)]),
            Err(WindowError::Overflow(0))
        );
        assert_eq!(
            DmaWindows::new(&[w(0, 0, 0x1000), w(0x800, 0x10_0000, 0x1000)]),
            Err(WindowError::Overlap(0, 1))
        );
        assert_eq!(
            DmaWindows::new(&[w(0, 0, 0x1000), w(0x10_0000, 0x800, 0x1000)]),
            Err(WindowError::Overlap(0, 1))
        );
        assert_eq!(
            DmaWindows::new(&[w(0, 0, 1); 9]),
            Err(WindowError::TooMany(9))
        );
    }

    #[test]
    fn translation_stays_inside_one_window() {
        let t =
            DmaWindows::new(&[w(0x1000, 0x10_0000, 0x1000), w(0x2000, 0x20_0000, 0x1000)]).unwrap();
        assert_eq!(
            t.phys_to_dma(PhysAddr::new(0x1ff0), 0x10),
            Some(DmaAddr::new(0x10_0ff0))
        );
        // Straddles the two windows: refused, even though both halves map.
        assert_eq!(t.phys_to_dma(PhysAddr::new(0x1ff0), 0x20), None);
        assert_eq!(t.phys_to_dma(PhysAddr::new(0x2000), 0), None);
        assert_eq!(
            t.bus_to_phys(DmaAddr::new(0x20_0010)),
            Some((PhysAddr::new(0x2010), 0xff0))
        );
        assert_eq!(t.bus_to_phys(DmaAddr::new(0x30_0000)), None);
    }

    /// The unchecked window walk against the obvious definition, over every
    /// start and length around three windows, plus the top of the address
    /// space (where only the public entry's wrap check stands between a
    /// caller and a wrong answer).
    #[test]
    fn window_walk_matches_its_definition() {
        let list = [
            w(0x100, 0x1000, 0x40),
            w(0x180, 0x2000, 0x10),
            w(0x200, 0, 0x80),
        ];
        let t = DmaWindows::new(&list).unwrap();
        for phys in 0xf0..0x290u64 {
            for len in 1..0x90u64 {
                let want = list.iter().find_map(|w| {
                    let (s, e) = (w.cpu_start.as_u64(), w.cpu_start.as_u64() + w.size);
                    (phys >= s && phys + len <= e)
                        .then(|| DmaAddr::new(w.dma_start.as_u64() + (phys - s)))
                });
                assert_eq!(
                    t.phys_to_dma(PhysAddr::new(phys), len),
                    want,
                    "{phys:#x}+{len:#x}"
                );
            }
        }
        let top = DmaWindows::new(&[w(u64::MAX - 0xfff, 0, 0x1000)]).unwrap();
        assert_eq!(
            top.phys_to_dma(PhysAddr::new(u64::MAX), 1),
            Some(DmaAddr::new(0xfff))
        );
        assert_eq!(top.phys_to_dma(PhysAddr::new(u64::MAX), 2), None);
        assert_eq!(top.phys_to_dma(PhysAddr::new(u64::MAX - 0xfff), 0), None);
        let id = DmaWindows::identity();
        // The flag is derived from the windows, not from the constructor.
        assert_eq!(DmaWindows::new(&[IDENTITY_WINDOW]), Ok(id));
        assert_eq!(id.phys_to_dma(PhysAddr::new(u64::MAX), 2), None);
        assert_eq!(
            id.phys_to_dma(PhysAddr::new(0x1234), 8),
            Some(DmaAddr::new(0x1234))
        );
        let cfg = DeviceConfig::new().dma_mask(crate::DmaMask::bits(32));
        let direct = Direct::new(DmaWindows::identity());
        assert!(matches!(
            direct.translate(PhysAddr::new(u64::MAX), 2, &cfg),
            Err(MapErrorKind::NoDmaWindow { .. })
        ));
        assert!(matches!(
            direct.translate(PhysAddr::new(0xffff_fff0), 0x11, &cfg),
            Err(MapErrorKind::BeyondMask { .. })
        ));
        assert!(
            direct
                .translate(PhysAddr::new(0xffff_fff0), 0x10, &cfg)
                .is_ok()
        );
    }
}
