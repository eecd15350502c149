//! Transfer directions and ownership states, as types.
//!
//! A handle's direction is fixed when it is mapped and is a type parameter
//! from then on, so a sync can only ever be issued in the mapping's own
//! direction. Which CPU accessors exist follows from it:
//!
//! | direction         | CPU reads | CPU writes | device reads | device writes |
//! |-------------------|-----------|------------|--------------|---------------|
//! | [`ToDevice`]      | yes       | yes        | yes          | no            |
//! | [`FromDevice`]    | yes       | **no**     | no           | yes           |
//! | [`Bidirectional`] | yes       | yes        | yes          | yes           |
//!
//! A CPU write into a `FromDevice` buffer is refused because a backend is free
//! to throw it away: a bounce buffer is never copied towards the device for
//! `FromDevice`, and a non-coherent backend may invalidate the line holding it.

mod sealed {
    pub trait Sealed {}
}

/// The direction of a transfer, as a value. Backends receive it with every
/// call; driver code uses the marker types instead.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DmaDirection {
    /// The device reads memory the CPU wrote (transmit, commands).
    ToDevice,
    /// The device writes memory the CPU then reads (receive, responses).
    FromDevice,
    /// Both sides read and write.
    Bidirectional,
}

impl DmaDirection {
    /// Whether the device may read the memory in this direction.
    pub const fn device_reads(self) -> bool {
        !matches!(self, DmaDirection::FromDevice)
    }

    /// Whether the device may write the memory in this direction.
    pub const fn device_writes(self) -> bool {
        !matches!(self, DmaDirection::ToDevice)
    }
}

/// A transfer direction as a type: [`ToDevice`], [`FromDevice`] or
/// [`Bidirectional`]. Sealed: the three are all there is.
pub trait Direction: sealed::Sealed + Send + Sync + 'static {
    /// The same direction as a value.
    const VALUE: DmaDirection;
    /// The short name printed by [`crate::Mapped`]'s `Debug`.
    const NAME: &'static str;
}

/// Directions in which the CPU may write the buffer while it owns it:
/// [`ToDevice`] and [`Bidirectional`].
pub trait CpuWritable: Direction {}

/// Directions in which the device writes the buffer, so the CPU must take
/// the device's bytes back: [`FromDevice`] and [`Bidirectional`]. Only these
/// have a partial sync for the CPU.
pub trait DeviceWritable: Direction {}

/// The device reads the buffer; the CPU writes it. Linux's `DMA_TO_DEVICE`.
#[derive(Debug, Clone, Copy)]
pub enum ToDevice {}
/// The device writes the buffer; the CPU reads it. Linux's `DMA_FROM_DEVICE`.
#[derive(Debug, Clone, Copy)]
pub enum FromDevice {}
/// Both read and write. Linux's `DMA_BIDIRECTIONAL`.
#[derive(Debug, Clone, Copy)]
pub enum Bidirectional {}

impl sealed::Sealed for ToDevice {}
impl sealed::Sealed for FromDevice {}
impl sealed::Sealed for Bidirectional {}

impl Direction for ToDevice {
    const VALUE: DmaDirection = DmaDirection::ToDevice;
    const NAME: &'static str = "ToDevice";
}
impl Direction for FromDevice {
    const VALUE: DmaDirection = DmaDirection::FromDevice;
    const NAME: &'static str = "FromDevice";
}
impl Direction for Bidirectional {
    const VALUE: DmaDirection = DmaDirection::Bidirectional;
    const NAME: &'static str = "Bidirectional";
}

impl CpuWritable for ToDevice {}
impl CpuWritable for Bidirectional {}
impl DeviceWritable for FromDevice {}
impl DeviceWritable for Bidirectional {}

/// Who may touch a mapped buffer now: [`CpuOwned`], [`DevOwned`] or
/// [`CpuOwnedPrefix`]. Sealed.
///
/// A state may carry data (the prefix length); the two plain states are
/// zero-sized, so they cost nothing in a handle.
pub trait Ownership: sealed::Sealed + Send + Sync + 'static {
    /// True for [`DevOwned`]: the device may be accessing the buffer, so
    /// dropping the handle must quarantine it rather than free it.
    const DEVICE_OWNED: bool;
    /// The short name printed by [`crate::Mapped`]'s `Debug`.
    const NAME: &'static str;

    /// From which element on the CPU has not taken the buffer back from the
    /// device: all of it while device-owned, none once synced, the tail
    /// after a prefix sync. Unmap syncs that part for the CPU first.
    #[doc(hidden)]
    fn cpu_stale_from(&self) -> Option<usize>;
}

/// The states in which the CPU owns the buffer: [`CpuOwned`] and
/// [`CpuOwnedPrefix`]. Sealed.
pub trait CpuState: Ownership {}

/// Only for the compiler's message: a device-owned handle has no CPU view.
/// Implemented by no state, so a `contents()` call on a
/// [`DevOwned`] handle fails with a first error line that says what is
/// needed and which call gets there. Sealed (its parameter must be a sealed `Direction`).
#[diagnostic::on_unimplemented(
    message = "`contents()` needs a CPU-owned handle: this one is device-owned; `unsafe {{ h.sync_for_cpu() }}` returns one once the device has finished (a handle given to a batch comes back from `flush()`)",
    label = "device-owned: the device may be writing this buffer now",
    note = "a device-owned handle has no CPU view; `sync_for_cpu` hands the buffer back to the CPU"
)]
pub trait CpuViewable<D>: sealed::Sealed {
    /// Never called: no state implements this trait.
    #[doc(hidden)]
    fn absurd<R>() -> R;
}

/// Only for the compiler's message: a CPU-owned handle has no DMA address.
/// Implemented by no state, so a `dma_addr()` call on a [`CpuOwned`] or
/// [`CpuOwnedPrefix`] handle fails with a first error line that says what
/// is needed and which call gets there. Sealed (its parameter must be a sealed `Direction`).
#[diagnostic::on_unimplemented(
    message = "`dma_addr()` needs a device-owned handle: this one is CPU-owned; `h.sync_for_device()` returns one (a handle given to a batch comes back from `flush()`)",
    label = "CPU-owned: the device must not be given this buffer's address",
    note = "only a device-owned handle has a DMA address: handing it out is handing the buffer over"
)]
pub trait DevAddressable<D>: sealed::Sealed {
    /// Never called: no state implements this trait.
    #[doc(hidden)]
    fn absurd<R>() -> R;
}

/// The CPU owns the buffer: CPU views exist, the DMA address does not.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuOwned;

/// The device owns the buffer: the DMA address exists, CPU views do not.
#[derive(Debug, Clone, Copy, Default)]
pub struct DevOwned;

/// The CPU owns the buffer, but only its first `len` elements were synced
/// back from the device (the receive path: a packet shorter than its
/// buffer). CPU views are limited to that prefix.
#[derive(Debug, Clone, Copy)]
pub struct CpuOwnedPrefix {
    pub(crate) len: usize,
}

impl CpuOwnedPrefix {
    /// How many elements the CPU may see.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the prefix is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl sealed::Sealed for CpuOwned {}
impl sealed::Sealed for DevOwned {}
impl sealed::Sealed for CpuOwnedPrefix {}

impl Ownership for CpuOwned {
    const DEVICE_OWNED: bool = false;
    const NAME: &'static str = "CpuOwned";
    #[inline(always)]
    fn cpu_stale_from(&self) -> Option<usize> {
        None
    }
}
impl Ownership for DevOwned {
    const DEVICE_OWNED: bool = true;
    const NAME: &'static str = "DevOwned";
    #[inline(always)]
    fn cpu_stale_from(&self) -> Option<usize> {
        Some(0)
    }
}
impl Ownership for CpuOwnedPrefix {
    const DEVICE_OWNED: bool = false;
    const NAME: &'static str = "CpuOwnedPrefix";
    #[inline(always)]
    fn cpu_stale_from(&self) -> Option<usize> {
        Some(self.len)
    }
}

impl CpuState for CpuOwned {}
impl CpuState for CpuOwnedPrefix {}
