//! Address-width proofs: a map that cannot fail for addressing reasons.
//!
//! A device's reach, `2^W` bytes from physical address zero, becomes a type
//! once checked: [`Reach<W>`](Reach), made by [`Device::reach`] on a direct,
//! never-bouncing backend whose mask and bus windows cover
//! `[0, 2^W)`. Memory allocated from a zone below `2^Z`
//! ([`Device::alloc_zoned`]) carries `Z` in its type ([`Zoned<Z>`](Zoned)),
//! in whole cache-line granules. Mapping a `Zoned<Z>` through a `Reach<W>`
//! with `Z <= W` ([`Reach::map`]) then has nothing left to fail on: the
//! buffer is non-empty, lies inside the device's windows and mask, shares
//! no cache line, and the backend never bounces, so it returns the handle
//! itself, not a `Result`. A zone wider than the reach does not compile.
//!
//! ```
//! use dmacap::sim::SimPlatform;
//! use dmacap::typenum::U32;
//! use dmacap::{DeviceConfig, DmaMask, ToDevice};
//!
//! let sim = SimPlatform::new(1 << 20); // RAM at 2 GiB
//! let dev = sim.coherent_device_with(
//!     DeviceConfig::new().dma_mask(DmaMask::bits(32)),
//!     dmacap::backend::direct::DmaWindows::identity(),
//! );
//! let reach = dev.reach::<U32>().unwrap();          // checked once
//! let buf = dev.alloc_zoned::<U32, u8>(512).unwrap(); // below 4 GiB, by type
//! let tx = reach.map::<ToDevice, _, _>(buf);         // no Result: cannot fail
//! # // SAFETY: no device runs.
//! # drop(unsafe { tx.unmap() });
//! ```

use core::marker::PhantomData;
use core::ptr::NonNull;

use typenum::Unsigned;
use zerocopy::FromZeros;

use crate::api::coherent::dma_pages;
use crate::api::device::Device;
use crate::api::handle::Mapped;
use crate::backend::Backend;
use crate::backend::compose::{Composed, NoBounce};
use crate::backend::direct::{BusWindows, Direct};
use crate::base::addr::PhysAddr;
use crate::base::buffer::{DmaBuffer, DmaPages, PagesKeep, Transfer};
use crate::base::direction::{DevOwned, Direction};
use crate::base::error::AllocError;
use crate::base::platform::DmaAllocator;

/// A zone of `Self` bits lies inside a reach of `W` bits: `Self <= W`.
#[diagnostic::on_unimplemented(
    message = "the buffer's zone is wider than the device's proven reach",
    label = "this buffer may lie where the device cannot address it",
    note = "allocate from a zone no wider than the reach (`alloc_zoned::<W, _>`), or map with the \
            ordinary fallible `map`"
)]
pub trait ZoneWithin<W>: zone::Sealed<W> {}

#[diagnostic::do_not_recommend]
impl<Z: zone::Sealed<W>, W> ZoneWithin<W> for Z {}

mod zone {
    use typenum::{IsLessOrEqual, True};

    pub trait Sealed<W> {}
    impl<Z: IsLessOrEqual<W, Output = True>, W> Sealed<W> for Z {}
}

/// `2^W - 1`, the last address of a `W`-bit zone (all ones for 64).
fn zone_last<W: Unsigned>() -> u64 {
    match W::U32 {
        w if w >= 64 => u64::MAX,
        w => (1u64 << w) - 1,
    }
}

/// The proof that `device` reaches every physical address below `2^W`
/// directly: its bus windows translate `[0, 2^W)` within its mask, and its
/// backend never bounces.
#[derive(Debug, Clone, Copy)]
pub struct Reach<'d, B: Backend, W: Unsigned> {
    device: &'d Device<B>,
    _width: PhantomData<W>,
}

/// A direct, never-bouncing backend: the kind whose reach can be proven.
type DirectUnbounced<P, W, K> = Composed<P, Direct<W>, K, NoBounce>;

impl<P, Bus: BusWindows, K> Device<DirectUnbounced<P, Bus, K>>
where
    DirectUnbounced<P, Bus, K>: Backend,
{
    /// Checks once that the device reaches all of `[0, 2^W)` where it lies
    /// and returns the proof.
    ///
    /// # Errors
    ///
    /// [`AllocError::ZoneTooWide`] if its mask or bus windows do not cover
    /// the zone.
    pub fn reach<W: Unsigned>(
        &self,
    ) -> Result<Reach<'_, DirectUnbounced<P, Bus, K>, W>, AllocError> {
        let last = zone_last::<W>();
        let covered = usize::try_from(last)
            .ok()
            .and_then(|l| l.checked_add(1))
            .is_some_and(|len| {
                self.backend()
                    .translation()
                    .translate(PhysAddr::new(0), len, self.config())
                    .is_ok()
            });
        if !covered {
            return Err(AllocError::ZoneTooWide {
                zone_bits: W::U32,
                mask_bits: 64 - self.config().mask().max_addr().leading_zeros(),
            });
        }
        Ok(Reach {
            device: self,
            _width: PhantomData,
        })
    }
}

impl<'d, B: Backend, W: Unsigned> Reach<'d, B, W> {
    /// Maps a buffer from a zone the device reaches: cannot fail.
    ///
    /// # Panics
    ///
    /// Only if the buffer was allocated from another platform instance of
    /// the same type (another simulated RAM, say) that this device's
    /// platform cannot translate, or a platform broke its [`DmaAllocator`]
    /// promise (an allocation above its zone). Nothing is mapped or leaked:
    /// the buffer is dropped.
    pub fn map<D: Direction, Z, T>(
        &self,
        buf: ZonedFor<B, Z, T>,
    ) -> Mapped<'d, D, DevOwned, ZonedFor<B, Z, T>, B>
    where
        Z: Unsigned + ZoneWithin<W>,
        [T]: Transfer<D>,
        B::Platform: DmaAllocator,
    {
        let size = buf.pages.allocated_bytes();
        // Whole granules of its own: no line check; the backend cannot
        // bounce, and the zone lies inside the reach.
        match Mapped::<D, DevOwned, _, B>::map_issue_with(self.device, buf, false, true, size) {
            Ok(h) => {
                h.complete_sync();
                h.granted();
                h
            }
            Err(e) => panic!(
                "a zoned buffer inside the device's proven reach was refused ({}): \
                 the platform broke its allocation promise",
                e.kind()
            ),
        }
    }
}

impl<B: Backend> Device<B>
where
    B::Platform: DmaAllocator + Clone,
{
    /// Allocates `len` zeroed `T`s below physical `2^Z`, in whole cache-line
    /// granules: a buffer whose type carries its zone.
    ///
    /// # Errors
    ///
    /// [`AllocError::ZeroSize`], [`AllocError::TooLarge`], or
    /// [`AllocError::OutOfMemory`] if the zone has no such memory. Nothing is
    /// held on error.
    pub fn alloc_zoned<Z: Unsigned, T: FromZeros>(
        &self,
        len: usize,
    ) -> Result<ZonedFor<B, Z, T>, AllocError> {
        let pages = dma_pages::<B, T>(self, len, Some(zone_last::<Z>()))?;
        Ok(Zoned {
            pages,
            _zone: PhantomData,
        })
    }
}

/// The zoned buffer a device with backend `B` allocates and maps.
pub type ZonedFor<B, Z, T> = Zoned<Z, T, <B as Backend>::Platform, <B as Backend>::Granule>;

/// Memory below physical `2^Z`, in whole cache-line granules of `G`,
/// holding `[T]`: what [`Device::alloc_zoned`] returns and [`Reach::map`]
/// takes, on a backend of the same granule (a buffer allocated for a
/// coherent device, in granules of one byte, does not map infallibly on a
/// non-coherent one). Dereferences to its contents; frees itself when
/// dropped.
pub struct Zoned<Z: Unsigned, T, P: DmaAllocator, G = typenum::U1> {
    pages: DmaPages<[T], P>,
    _zone: PhantomData<(Z, G)>,
}

impl<Z: Unsigned, T, P: DmaAllocator, G> core::ops::Deref for Zoned<Z, T, P, G> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.pages
    }
}

impl<Z: Unsigned, T, P: DmaAllocator, G> core::ops::DerefMut for Zoned<Z, T, P, G> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.pages
    }
}

impl<Z: Unsigned, T, P: DmaAllocator, G> core::fmt::Debug for Zoned<Z, T, P, G> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Zoned<{}> {{ bytes: {} }}",
            Z::U32,
            self.pages.allocated_bytes()
        )
    }
}

// SAFETY: forwards to `DmaPages`, whose parts these are; the zone (a type
// parameter) is kept across the round trip.
unsafe impl<Z: Unsigned, T, P: DmaAllocator, G> DmaBuffer for Zoned<Z, T, P, G> {
    type Target = [T];
    type Keep = PagesKeep<P>;

    fn into_raw_parts(self) -> (NonNull<[T]>, PagesKeep<P>) {
        self.pages.into_raw_parts()
    }

    unsafe fn from_raw_parts(ptr: NonNull<[T]>, keep: PagesKeep<P>) -> Self {
        Self {
            // SAFETY: forwarded from the caller: parts of one `DmaPages`.
            pages: unsafe { DmaPages::from_raw_parts(ptr, keep) },
            _zone: PhantomData,
        }
    }
}
