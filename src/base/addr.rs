//! Physical and DMA (bus) addresses, and the device's addressing limit.
//!
//! The two address kinds are distinct types so that a physical address can
//! never be handed to a device, nor a bus address to the CPU's memory, by
//! accident. Converting between them is the job of a [`Backend`]
//! (forward, at map time) and of the hardware (the simulated bus or IOMMU);
//! nothing in dmacap ever converts a DMA address back to a physical one.
//!
//! [`Backend`]: crate::backend::Backend

use core::fmt;

/// An address in the CPU's physical address space.
///
/// # Example
///
/// ```
/// use dmacap::PhysAddr;
/// let p = PhysAddr::new(0x8000_0000);
/// assert_eq!(p.checked_add(0x10), Some(PhysAddr::new(0x8000_0010)));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct PhysAddr(u64);

/// An address as a device sees it on its bus: after any bus offset or IOMMU
/// translation. Only a device-owned handle hands one out.
///
/// # Example
///
/// ```
/// use dmacap::DmaAddr;
/// let d = DmaAddr::new(0x1000);
/// assert_eq!(d.as_u64(), 0x1000);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct DmaAddr(u64);

macro_rules! addr_common {
    ($t:ident, $what:literal) => {
        impl $t {
            #[doc = concat!("Wraps a raw ", $what, " address.")]
            #[inline]
            pub const fn new(addr: u64) -> Self {
                Self(addr)
            }

            #[doc = concat!("The raw ", $what, " address.")]
            #[inline]
            pub const fn as_u64(self) -> u64 {
                self.0
            }

            /// The address `offset` bytes further on, or `None` on overflow.
            #[inline]
            pub const fn checked_add(self, offset: u64) -> Option<Self> {
                match self.0.checked_add(offset) {
                    Some(a) => Some(Self(a)),
                    None => None,
                }
            }

            /// The last address of a range of `len` bytes starting here, or
            /// `None` if `len` is zero or the range wraps around.
            #[inline]
            pub const fn last_of(self, len: u64) -> Option<Self> {
                if len == 0 {
                    return None;
                }
                self.checked_add(len - 1)
            }

            /// Whether this address is a multiple of `align` (a power of two).
            #[inline]
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align.wrapping_sub(1)) == 0
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($t), "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }

        impl fmt::LowerHex for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

addr_common!(PhysAddr, "physical");
addr_common!(DmaAddr, "DMA");

/// The highest DMA address a device can generate, as in Linux's
/// `dma_set_mask`: a mask of `bits` low one-bits.
///
/// # Example
///
/// ```
/// use dmacap::{DmaAddr, DmaMask};
/// let m = DmaMask::bits(32);
/// assert!(m.covers(DmaAddr::new(0xffff_f000), 0x1000));
/// assert!(!m.covers(DmaAddr::new(0xffff_f000), 0x1001));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DmaMask(u64);

impl DmaMask {
    /// A mask of `bits` address bits; 64 or more means every address.
    pub const fn bits(bits: u32) -> Self {
        if bits >= 64 {
            Self(u64::MAX)
        } else {
            Self((1u64 << bits) - 1)
        }
    }

    /// The largest address the device can reach.
    pub const fn max_addr(self) -> u64 {
        self.0
    }

    /// Whether the device can reach every byte of `[start, start + len)`.
    /// A zero-length or wrapping range is never covered.
    pub const fn covers(self, start: DmaAddr, len: u64) -> bool {
        match start.last_of(len) {
            Some(last) => last.as_u64() <= self.0,
            None => false,
        }
    }

    /// [`covers`](Self::covers) for a range already known not to wrap:
    /// `len > 0` and `start + len` does not overflow (a translation's
    /// promise). One add and one compare, the form a hand-written driver
    /// uses; on a wrapping range the answer would be wrong, so only code
    /// holding that promise calls it.
    #[inline(always)]
    pub(crate) const fn covers_unwrapped(self, start: DmaAddr, len: u64) -> bool {
        debug_assert!(start.last_of(len).is_some());
        start.as_u64().wrapping_add(len.wrapping_sub(1)) <= self.0
    }
}

impl fmt::Debug for DmaMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DmaMask({} bits)", 64 - self.0.leading_zeros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_of_rejects_zero_and_wrap() {
        assert_eq!(PhysAddr::new(5).last_of(0), None);
        assert_eq!(PhysAddr::new(u64::MAX).last_of(2), None);
        assert_eq!(
            PhysAddr::new(u64::MAX).last_of(1),
            Some(PhysAddr::new(u64::MAX))
        );
    }

    #[test]
    fn mask_bits() {
        assert_eq!(DmaMask::bits(32).max_addr(), 0xffff_ffff);
        assert_eq!(DmaMask::bits(64).max_addr(), u64::MAX);
        assert!(!DmaMask::bits(32).covers(DmaAddr::new(0x1_0000_0000), 1));
        assert!(!DmaMask::bits(64).covers(DmaAddr::new(u64::MAX), 2));
    }
}
