//! `PlatformDma<T>`: a virtio transport that also accepts
//! `VIRTIO_F_ACCESS_PLATFORM` when the device offers it.
//!
//! Behind an IOMMU, QEMU's virtio devices translate through it only when
//! that feature is negotiated (`iommu_platform=on`), and refuse
//! `FEATURES_OK` from a driver that does not accept it. `virtio-drivers`
//! 0.13's block driver does not list it, yet all its DMA goes through the
//! `Hal` — here dmacap's IOMMU domain, which is exactly what the feature
//! means — so accepting it on the driver's behalf is right.

use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{PhysAddr, Result};
use zerocopy::{FromBytes, Immutable, IntoBytes};

const ACCESS_PLATFORM: u64 = 1 << 33;

/// `T`, accepting `VIRTIO_F_ACCESS_PLATFORM`.
#[derive(Debug)]
pub struct PlatformDma<T> {
    inner: T,
    offered: bool,
}

impl<T: Transport> PlatformDma<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            offered: false,
        }
    }
}

impl<T: Transport> Transport for PlatformDma<T> {
    fn device_type(&self) -> DeviceType {
        self.inner.device_type()
    }
    fn read_device_features(&mut self) -> u64 {
        let f = self.inner.read_device_features();
        self.offered = f & ACCESS_PLATFORM != 0;
        f
    }
    fn write_driver_features(&mut self, driver_features: u64) {
        let extra = if self.offered { ACCESS_PLATFORM } else { 0 };
        self.inner.write_driver_features(driver_features | extra)
    }
    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.inner.max_queue_size(queue)
    }
    fn notify(&mut self, queue: u16) {
        self.inner.notify(queue)
    }
    fn get_status(&self) -> DeviceStatus {
        self.inner.get_status()
    }
    fn set_status(&mut self, status: DeviceStatus) {
        self.inner.set_status(status)
    }
    fn set_guest_page_size(&mut self, guest_page_size: u32) {
        self.inner.set_guest_page_size(guest_page_size)
    }
    fn requires_legacy_layout(&self) -> bool {
        self.inner.requires_legacy_layout()
    }
    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        self.inner
            .queue_set(queue, size, descriptors, driver_area, device_area)
    }
    fn queue_unset(&mut self, queue: u16) {
        self.inner.queue_unset(queue)
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        self.inner.queue_used(queue)
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.inner.ack_interrupt()
    }
    fn read_config_generation(&self) -> u32 {
        self.inner.read_config_generation()
    }
    fn read_config_space<V: FromBytes + IntoBytes>(&self, offset: usize) -> Result<V> {
        self.inner.read_config_space(offset)
    }
    fn write_config_space<V: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: V,
    ) -> Result<()> {
        self.inner.write_config_space(offset, value)
    }
}
