//! Where a bounced mapping goes inside its slots: the offset that keeps the
//! original's low address bits (`min_align_mask`), the padded region, and
//! which slot starts may hold it. Pure arithmetic, no pool state.

use crate::base::addr::PhysAddr;
use crate::base::error::MapErrorKind;

use super::{MAX_MAPPING_SIZE, MAX_SLOTS_PER_MAPPING, SLOT_SIZE};

/// The layout of one bounced mapping.
///
/// The region starts on a slot boundary aligned to `max(align, SLOT_SIZE)`;
/// the copy starts `offset` bytes into it and is followed by padding up to
/// a multiple of `max(pad_to, SLOT_SIZE)`. The bounce address
/// `region + offset` has the same bits under the device's `min_align_mask`
/// as the original: the bits below the region alignment come from `offset`,
/// the ones above from choosing a region start that has them
/// ([`fits`](Self::fits)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    /// Bytes from the region start to the copy's first byte.
    pub(crate) offset: usize,
    /// Bytes of the copy.
    pub(crate) len: usize,
    /// Bytes of the region, padding included: `slots * SLOT_SIZE`.
    pub(crate) region_len: usize,
    /// Slots the region takes.
    pub(crate) slots: usize,
    /// The region start's physical address must have these bits clear
    /// (alignment).
    align_mask: u64,
    /// ... and these bits (the part of `min_align_mask` above the
    /// alignment) ...
    match_mask: u64,
    /// ... equal to these (the original's).
    match_bits: u64,
}

/// The low address bits a copy keeps from its original even without a
/// `min_align_mask`: its offset in a 64-byte line.
const COPY_ALIGN_MASK: u64 = 63;

/// `x` rounded up to a multiple of `unit` (a power of two), if it fits.
fn round_up(x: usize, unit: usize) -> Option<usize> {
    Some(x.checked_add(unit - 1)? & !(unit - 1))
}

impl Placement {
    /// The layout of `len` bytes whose original lies at `orig`, for a
    /// region aligned to `align` and padded to whole `pad_to` granules, on
    /// a device with `min_align_mask`. `0` for `align` or `pad_to` means no
    /// requirement.
    ///
    /// # Errors
    ///
    /// [`MapErrorKind::BounceTooLarge`] when the region would need more than
    /// [`MAX_SLOTS_PER_MAPPING`] slots; [`MapErrorKind::Backend`] when
    /// `align` or `pad_to` is not a power of two;
    /// [`MapErrorKind::ZeroLength`] for an empty copy.
    pub(crate) fn new(
        orig: PhysAddr,
        len: usize,
        align: usize,
        pad_to: usize,
        min_align_mask: u64,
    ) -> Result<Self, MapErrorKind> {
        if len == 0 {
            return Err(MapErrorKind::ZeroLength);
        }
        let align = align.max(1);
        let pad_to = pad_to.max(1);
        if !align.is_power_of_two() || !pad_to.is_power_of_two() {
            return Err(MapErrorKind::Backend(
                "bounce alignment and padding must be powers of two",
            ));
        }
        let align = align.max(SLOT_SIZE);
        let unit = pad_to.max(SLOT_SIZE);
        let align_mask = align as u64 - 1;
        // Bits below the alignment are kept by the offset into the region,
        // bits above it by the choice of the region. Beyond the device's
        // `min_align_mask`, the copy also keeps the original's offset in its
        // 64-byte line where that still fits: the copies in and out then
        // run between equally aligned addresses (on Zen 3, glibc's `memcpy`
        // is some 27 times slower when the destination sits 8 to 16 bytes
        // past the source modulo 4096, as a 16-byte-aligned heap buffer and
        // a slot-aligned copy do).
        let with_line = (orig.as_u64() & (min_align_mask | COPY_ALIGN_MASK) & align_mask) as usize;
        let fits = |offset: usize| offset + len <= MAX_MAPPING_SIZE / unit * unit;
        let offset = if fits(with_line) {
            with_line
        } else {
            (orig.as_u64() & min_align_mask & align_mask) as usize
        };
        let match_mask = min_align_mask & !align_mask;
        // The largest copy that fits in 128 slots with this offset and unit.
        let max = (MAX_MAPPING_SIZE / unit * unit).saturating_sub(offset);
        let too_large = MapErrorKind::BounceTooLarge { len, max };
        let region_len = offset
            .checked_add(len)
            .and_then(|end| round_up(end, unit))
            .ok_or(too_large)?;
        let slots = region_len / SLOT_SIZE;
        if slots > MAX_SLOTS_PER_MAPPING {
            return Err(too_large);
        }
        Ok(Self {
            offset,
            len,
            region_len,
            slots,
            align_mask,
            match_mask,
            match_bits: orig.as_u64() & match_mask,
        })
    }

    /// Whether a region may start at physical address `start`.
    #[inline]
    pub(crate) fn fits(&self, start: u64) -> bool {
        start & self.align_mask == 0 && start & self.match_mask == self.match_bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(orig: u64, len: usize, align: usize, pad: usize, mask: u64) -> Placement {
        Placement::new(PhysAddr::new(orig), len, align, pad, mask).unwrap()
    }

    #[test]
    fn whole_slots_and_the_line_offset_by_default() {
        // Without a `min_align_mask` the copy keeps only the original's
        // offset in its 64-byte line (0x123 & 63 = 0x23).
        let a = p(0x1_0000_0123, 100, 64, 64, 0);
        assert_eq!((a.offset, a.region_len, a.slots), (0x23, SLOT_SIZE, 1));
        // A copy that would no longer fit in 128 slots with it starts at
        // the region's start.
        let full = p(0x1_0000_0123, MAX_MAPPING_SIZE, 64, 64, 0);
        assert_eq!((full.offset, full.slots), (0, MAX_SLOTS_PER_MAPPING));
        assert!(a.fits(0x8000_0800));
        assert!(!a.fits(0x8000_0400));
        let b = p(0x1000, 2 * SLOT_SIZE + 1, 1, 1, 0);
        assert_eq!(b.slots, 3);
    }

    #[test]
    fn min_align_mask_keeps_low_bits() {
        // NVMe: 0xfff. Bits below the slot come from the offset, bit 11
        // from the choice of slot.
        let a = p(0x1_0000_09a4, 300, 1, 1, 0xfff);
        assert_eq!(a.offset, 0x1a4);
        assert!(a.fits(0x8000_0800));
        assert!(!a.fits(0x8000_1000));
        assert_eq!((0x8000_0800u64 + a.offset as u64) & 0xfff, 0x9a4);
        // With a page-aligned region, the whole 12 bits are the offset.
        let b = p(0x1_0000_09a4, 300, 4096, 4096, 0xfff);
        assert_eq!((b.offset, b.region_len, b.slots), (0x9a4, 4096, 2));
        assert!(b.fits(0x8000_1000) && !b.fits(0x8000_0800));
    }

    #[test]
    fn padding_fills_granules() {
        let a = p(0x1_0000_0000, 5000, 4096, 4096, 0);
        assert_eq!((a.region_len, a.slots), (8192, 4));
        let b = p(0x1_0000_0000, 5000, 16384, 16384, 0);
        assert_eq!((b.region_len, b.slots), (16384, 8));
    }

    #[test]
    fn limits() {
        assert_eq!(p(0, MAX_MAPPING_SIZE, 1, 1, 0).slots, MAX_SLOTS_PER_MAPPING);
        assert_eq!(
            Placement::new(PhysAddr::new(0), MAX_MAPPING_SIZE + 1, 1, 1, 0),
            Err(MapErrorKind::BounceTooLarge {
                len: MAX_MAPPING_SIZE + 1,
                max: MAX_MAPPING_SIZE
            })
        );
        // An offset eats into the largest mapping.
        assert_eq!(
            Placement::new(PhysAddr::new(0x10), MAX_MAPPING_SIZE, 1, 1, 0xff),
            Err(MapErrorKind::BounceTooLarge {
                len: MAX_MAPPING_SIZE,
                max: MAX_MAPPING_SIZE - 0x10
            })
        );
        assert!(matches!(
            Placement::new(PhysAddr::new(0), usize::MAX, 1, 1, 0),
            Err(MapErrorKind::BounceTooLarge { .. })
        ));
        assert_eq!(
            Placement::new(PhysAddr::new(0), 0, 1, 1, 0),
            Err(MapErrorKind::ZeroLength)
        );
        assert!(matches!(
            Placement::new(PhysAddr::new(0), 1, 3, 1, 0),
            Err(MapErrorKind::Backend(_))
        ));
    }
}
