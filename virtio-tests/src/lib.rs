//! Fake virtio devices for running `virtio-drivers`' real drivers on dmacap
//! (`virtio-drivers`' own fakes are private to that crate).
//!
//! [`FakeTransport`] is a [`Transport`]: feature negotiation, status,
//! config space and queue registers in plain Rust. Behind it, the device
//! side of the split virtqueues reads descriptors, the available ring and
//! the buffers, and writes the used ring and the buffers, **only through
//! the simulated DMA engine** ([`SimDevice`]) at the DMA addresses the
//! driver published: never through a CPU pointer. A wrong address, a
//! missing grant, a mapping torn down too early or a stale cache line
//! shows as a [`SimFault`](dmacap::sim::SimFault) (the device panics with
//! it) or as wrong bytes.
//!
//! Two devices: a block device (a RAM disk of 512-byte sectors: read,
//! write, flush, get-id) and a network device (frames the driver transmits
//! are recorded; frames a test injects are written into the receive
//! buffers the driver posted). The device runs synchronously: a queue
//! notification processes everything available before `notify` returns,
//! then runs an optional hook (a lazy IOMMU's timer, say).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use dmacap::DmaAddr;
use dmacap::backend::Backend;
use dmacap::sim::{BusTranslate, SimDevice, SimFault};
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{Error, PhysAddr};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// The sector size of the block device.
pub const SECTOR: usize = 512;
/// Queue size the fake devices offer (`virtio-drivers`' block driver uses 16).
pub const QUEUE_SIZE: u16 = 16;
/// `VIRTIO_F_VERSION_1`.
pub const F_VERSION_1: u64 = 1 << 32;
/// `VIRTIO_F_INDIRECT_DESC`.
pub const F_INDIRECT_DESC: u64 = 1 << 28;
/// `VIRTIO_NET_F_MAC`.
pub const NET_F_MAC: u64 = 1 << 5;
/// `VIRTIO_NET_F_STATUS`.
pub const NET_F_STATUS: u64 = 1 << 16;
/// The virtio-net header with `VERSION_1`.
pub const NET_HDR: usize = 12;

const DESC_NEXT: u16 = 1;
const DESC_WRITE: u16 = 2;
const DESC_INDIRECT: u16 = 4;

/// One queue's registers and the device's position in it.
#[derive(Debug, Default, Clone, Copy)]
struct Queue {
    ready: bool,
    size: u16,
    desc: u64,
    driver: u64,
    device: u64,
    last_avail: u16,
    used_idx: u16,
}

/// A descriptor chain: `(address, length, device writes it)`.
type Chain = Vec<(u64, u32, bool)>;

/// What the device is.
#[derive(Debug)]
pub enum Kind {
    /// A RAM disk.
    Blk {
        /// Its bytes.
        disk: Vec<u8>,
    },
    /// A network card.
    Net {
        /// Frames the driver transmitted, without the virtio-net header.
        sent: Vec<Vec<u8>>,
        /// Frames waiting for a receive buffer.
        pending: VecDeque<Vec<u8>>,
    },
}

/// Called after every notification the device processed.
pub type Hook = Box<dyn FnMut()>;

/// The device behind a [`FakeTransport`]. Tests reach it through the
/// `Rc<RefCell<..>>` that [`FakeTransport::blk`] and
/// [`FakeTransport::net`] return beside the transport.
pub struct FakeDevice<B: Backend + BusTranslate + 'static> {
    engine: SimDevice<'static, B>,
    kind: Kind,
    features: u64,
    driver_features: u64,
    status: DeviceStatus,
    config: Vec<u8>,
    queues: [Queue; 2],
    interrupt: bool,
    hook: Option<Hook>,
    /// Requests (descriptor chains) completed.
    pub completed: usize,
    /// The DMA address of the last data buffer the device used, kept to
    /// show what a device can still reach after the driver took it back.
    pub last_data: Option<DmaAddr>,
}

impl<B: Backend + BusTranslate + 'static> FakeDevice<B> {
    fn new(engine: SimDevice<'static, B>, kind: Kind, features: u64, config: Vec<u8>) -> Self {
        Self {
            engine,
            kind,
            features,
            driver_features: 0,
            status: DeviceStatus::empty(),
            config,
            queues: [Queue::default(); 2],
            interrupt: false,
            hook: None,
            completed: 0,
            last_data: None,
        }
    }

    /// The DMA engine.
    pub fn engine(&self) -> &SimDevice<'static, B> {
        &self.engine
    }

    /// The features the driver accepted.
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// Runs `hook` after every notification from now on.
    pub fn set_hook(&mut self, hook: Hook) {
        self.hook = Some(hook);
    }

    /// The disk's bytes (block device).
    pub fn disk(&self) -> &[u8] {
        match &self.kind {
            Kind::Blk { disk } => disk,
            Kind::Net { .. } => panic!("not a block device"),
        }
    }

    /// Frames transmitted so far (network device).
    pub fn sent(&self) -> &[Vec<u8>] {
        match &self.kind {
            Kind::Net { sent, .. } => sent,
            Kind::Blk { .. } => panic!("not a network device"),
        }
    }

    /// Queues a frame for reception and delivers what it can into posted
    /// receive buffers; returns how many frames still wait.
    pub fn inject(&mut self, frame: &[u8]) -> usize {
        match &mut self.kind {
            Kind::Net { pending, .. } => pending.push_back(frame.to_vec()),
            Kind::Blk { .. } => panic!("not a network device"),
        }
        self.deliver_rx();
        match &self.kind {
            Kind::Net { pending, .. } => pending.len(),
            Kind::Blk { .. } => 0,
        }
    }

    fn fail(&self, what: &str, e: SimFault) -> ! {
        panic!("fake virtio device: DMA {what} failed: {e}")
    }

    fn read(&self, addr: u64, out: &mut [u8]) {
        if let Err(e) = self.engine.read(DmaAddr::new(addr), out) {
            self.fail("read", e);
        }
    }

    fn write(&self, addr: u64, data: &[u8]) {
        if let Err(e) = self.engine.write(DmaAddr::new(addr), data) {
            self.fail("write", e);
        }
    }

    fn read_u16(&self, addr: u64) -> u16 {
        let mut b = [0; 2];
        self.read(addr, &mut b);
        u16::from_le_bytes(b)
    }

    /// The next available chain head of queue `q`, if any.
    fn pop_avail(&mut self, q: usize) -> Option<u16> {
        let queue = self.queues[q];
        if !queue.ready {
            return None;
        }
        let idx = self.read_u16(queue.driver + 2);
        if idx == queue.last_avail {
            return None;
        }
        let slot = u64::from(queue.last_avail % queue.size);
        let head = self.read_u16(queue.driver + 4 + 2 * slot);
        self.queues[q].last_avail = queue.last_avail.wrapping_add(1);
        Some(head)
    }

    /// Reads descriptor `i` of the table at `table`.
    fn desc(&self, table: u64, i: u16) -> (u64, u32, u16, u16) {
        let mut d = [0u8; 16];
        self.read(table + 16 * u64::from(i), &mut d);
        (
            u64::from_le_bytes(d[0..8].try_into().unwrap()),
            u32::from_le_bytes(d[8..12].try_into().unwrap()),
            u16::from_le_bytes(d[12..14].try_into().unwrap()),
            u16::from_le_bytes(d[14..16].try_into().unwrap()),
        )
    }

    /// The chain starting at `head` of queue `q` (following an indirect
    /// table if the head points to one).
    fn chain(&self, q: usize, head: u16) -> Chain {
        let queue = self.queues[q];
        let (mut table, mut limit, mut i) = (queue.desc, queue.size, head);
        let (addr, len, flags, _) = self.desc(table, i);
        if flags & DESC_INDIRECT != 0 {
            assert_eq!(len % 16, 0, "indirect table of {len} bytes");
            table = addr;
            limit = (len / 16) as u16;
            i = 0;
        }
        let mut chain = Vec::new();
        loop {
            assert!(chain.len() < usize::from(limit), "descriptor chain loops");
            let (addr, len, flags, next) = self.desc(table, i);
            chain.push((addr, len, flags & DESC_WRITE != 0));
            if flags & DESC_NEXT == 0 {
                return chain;
            }
            i = next;
        }
    }

    /// Puts `head` in queue `q`'s used ring with `len` bytes written.
    fn push_used(&mut self, q: usize, head: u16, len: u32) {
        let queue = self.queues[q];
        let slot = u64::from(queue.used_idx % queue.size);
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        self.write(queue.device + 4 + 8 * slot, &elem);
        let idx = queue.used_idx.wrapping_add(1);
        self.queues[q].used_idx = idx;
        // The element before the index, as the specification orders it.
        self.write(queue.device + 2, &idx.to_le_bytes());
        self.interrupt = true;
        self.completed += 1;
    }

    /// Everything the device may read in `chain`, concatenated.
    fn gather(&self, chain: &Chain) -> Vec<u8> {
        let mut out = Vec::new();
        for &(addr, len, write) in chain {
            if !write {
                let at = out.len();
                out.resize(at + len as usize, 0);
                self.read(addr, &mut out[at..]);
            }
        }
        out
    }

    /// Writes `data` over the writable buffers of `chain`, in order;
    /// returns the bytes written.
    fn scatter(&self, chain: &Chain, data: &[u8]) -> usize {
        let mut done = 0;
        for &(addr, len, write) in chain {
            if write && done < data.len() {
                let n = (len as usize).min(data.len() - done);
                self.write(addr, &data[done..done + n]);
                done += n;
            }
        }
        done
    }

    fn process(&mut self, q: usize) {
        match self.kind {
            Kind::Blk { .. } => {
                while let Some(head) = self.pop_avail(q) {
                    let chain = self.chain(q, head);
                    let written = self.blk_request(&chain);
                    self.push_used(q, head, written);
                }
            }
            Kind::Net { .. } if q == 1 => {
                while let Some(head) = self.pop_avail(q) {
                    let chain = self.chain(q, head);
                    let bytes = self.gather(&chain);
                    assert!(bytes.len() >= NET_HDR, "transmit without a header");
                    self.last_data = chain.last().map(|c| DmaAddr::new(c.0));
                    if let Kind::Net { sent, .. } = &mut self.kind {
                        sent.push(bytes[NET_HDR..].to_vec());
                    }
                    self.push_used(q, head, 0);
                }
            }
            Kind::Net { .. } => self.deliver_rx(),
        }
    }

    /// Writes waiting frames into posted receive buffers.
    fn deliver_rx(&mut self) {
        loop {
            let has_frame = matches!(&self.kind, Kind::Net { pending, .. } if !pending.is_empty());
            if !has_frame {
                return;
            }
            let Some(head) = self.pop_avail(0) else {
                return;
            };
            let chain = self.chain(0, head);
            let frame = match &mut self.kind {
                Kind::Net { pending, .. } => pending.pop_front().unwrap(),
                Kind::Blk { .. } => unreachable!(),
            };
            let mut bytes = vec![0u8; NET_HDR];
            bytes[10] = 1; // num_buffers
            bytes.extend_from_slice(&frame);
            let room: usize = chain.iter().filter(|c| c.2).map(|c| c.1 as usize).sum();
            assert!(
                room >= bytes.len(),
                "receive buffer of {room} bytes too small"
            );
            self.last_data = chain.first().map(|c| DmaAddr::new(c.0));
            let n = self.scatter(&chain, &bytes);
            self.push_used(0, head, n as u32);
        }
    }

    /// Serves one block request; returns the bytes written to the driver.
    fn blk_request(&mut self, chain: &Chain) -> u32 {
        let readable = self.gather(chain);
        assert!(readable.len() >= 16, "block request without a header");
        let kind = u32::from_le_bytes(readable[0..4].try_into().unwrap());
        let sector = u64::from_le_bytes(readable[8..16].try_into().unwrap()) as usize;
        let room: usize = chain.iter().filter(|c| c.2).map(|c| c.1 as usize).sum();
        assert!(room >= 1, "block request without a status byte");
        let data_len = room - 1;
        let mut reply = Vec::new();
        let disk_len = self.disk().len();
        let span = |len: usize| {
            let start = sector.checked_mul(SECTOR)?;
            (start.checked_add(len)? <= disk_len).then_some(start..start + len)
        };
        let status = match kind {
            // IN: read sectors.
            0 => match span(data_len) {
                Some(r) => {
                    reply.extend_from_slice(&self.disk()[r]);
                    0
                }
                None => {
                    reply.resize(data_len, 0);
                    1
                }
            },
            // OUT: write sectors.
            1 => {
                let data = &readable[16..];
                match span(data.len()) {
                    Some(r) => {
                        if let Kind::Blk { disk } = &mut self.kind {
                            disk[r].copy_from_slice(data);
                        }
                        0
                    }
                    None => 1,
                }
            }
            // FLUSH.
            4 => 0,
            // GET_ID.
            8 => {
                let mut id = b"dmacap-fake-blk".to_vec();
                id.resize(data_len.min(20), 0);
                reply.extend_from_slice(&id);
                reply.resize(data_len, 0);
                0
            }
            _ => {
                reply.resize(data_len, 0);
                2
            }
        };
        if kind == 0 {
            self.last_data = chain.iter().find(|c| c.2).map(|c| DmaAddr::new(c.0));
        } else if kind == 1 {
            self.last_data = chain
                .iter()
                .filter(|c| !c.2)
                .nth(1)
                .map(|c| DmaAddr::new(c.0));
        }
        reply.resize(data_len, 0);
        reply.push(status);
        self.scatter(chain, &reply) as u32
    }
}

/// The block device's configuration space (its first fields).
#[derive(FromBytes, IntoBytes, Immutable)]
#[repr(C)]
struct BlkConfig {
    capacity: u64,
    rest: [u8; 56],
}

/// A virtio transport over a [`FakeDevice`].
pub struct FakeTransport<B: Backend + BusTranslate + 'static> {
    device: Rc<RefCell<FakeDevice<B>>>,
    device_type: DeviceType,
}

impl<B: Backend + BusTranslate + 'static> FakeTransport<B> {
    /// A block device of `sectors` sectors (zeroed), offering `features`
    /// (`VERSION_1` is always offered).
    pub fn blk(
        engine: SimDevice<'static, B>,
        sectors: usize,
        features: u64,
    ) -> (Self, Rc<RefCell<FakeDevice<B>>>) {
        let config = BlkConfig {
            capacity: sectors as u64,
            rest: [0; 56],
        };
        let dev = FakeDevice::new(
            engine,
            Kind::Blk {
                disk: vec![0; sectors * SECTOR],
            },
            features | F_VERSION_1,
            config.as_bytes().to_vec(),
        );
        Self::with(dev, DeviceType::Block)
    }

    /// A network device with MAC address `mac`, link up, offering
    /// `features` (`VERSION_1`, `MAC` and `STATUS` are always offered).
    pub fn net(
        engine: SimDevice<'static, B>,
        mac: [u8; 6],
        features: u64,
    ) -> (Self, Rc<RefCell<FakeDevice<B>>>) {
        let mut config = vec![0u8; 16];
        config[..6].copy_from_slice(&mac);
        config[6..8].copy_from_slice(&1u16.to_le_bytes()); // link up
        let dev = FakeDevice::new(
            engine,
            Kind::Net {
                sent: Vec::new(),
                pending: VecDeque::new(),
            },
            features | F_VERSION_1 | NET_F_MAC | NET_F_STATUS,
            config,
        );
        Self::with(dev, DeviceType::Network)
    }

    fn with(dev: FakeDevice<B>, device_type: DeviceType) -> (Self, Rc<RefCell<FakeDevice<B>>>) {
        let device = Rc::new(RefCell::new(dev));
        (
            Self {
                device: device.clone(),
                device_type,
            },
            device,
        )
    }
}

impl<B: Backend + BusTranslate + 'static> Transport for FakeTransport<B> {
    fn device_type(&self) -> DeviceType {
        self.device_type
    }

    fn read_device_features(&mut self) -> u64 {
        self.device.borrow().features
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        let mut d = self.device.borrow_mut();
        assert_eq!(
            driver_features & !d.features,
            0,
            "the driver accepted features the device did not offer"
        );
        d.driver_features = driver_features;
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        assert!(queue < 2, "the fake devices have two queues at most");
        QUEUE_SIZE.into()
    }

    fn notify(&mut self, queue: u16) {
        let hook = {
            let mut d = self.device.borrow_mut();
            d.process(usize::from(queue));
            d.hook.take()
        };
        // The hook may reach the device itself (through the test's handle).
        if let Some(mut hook) = hook {
            hook();
            self.device.borrow_mut().hook.get_or_insert(hook);
        }
    }

    fn get_status(&self) -> DeviceStatus {
        self.device.borrow().status
    }

    fn set_status(&mut self, status: DeviceStatus) {
        let mut d = self.device.borrow_mut();
        if status.is_empty() {
            // Reset: forget the queues.
            d.queues = [Queue::default(); 2];
        }
        d.status = status;
    }

    fn set_guest_page_size(&mut self, _guest_page_size: u32) {}

    fn requires_legacy_layout(&self) -> bool {
        false
    }

    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        self.device.borrow_mut().queues[usize::from(queue)] = Queue {
            ready: true,
            size: size as u16,
            desc: descriptors,
            driver: driver_area,
            device: device_area,
            last_avail: 0,
            used_idx: 0,
        };
    }

    fn queue_unset(&mut self, queue: u16) {
        self.device.borrow_mut().queues[usize::from(queue)] = Queue::default();
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.device.borrow().queues[usize::from(queue)].ready
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        let mut d = self.device.borrow_mut();
        let was = core::mem::take(&mut d.interrupt);
        if was {
            InterruptStatus::QUEUE_INTERRUPT
        } else {
            InterruptStatus::empty()
        }
    }

    fn read_config_generation(&self) -> u32 {
        0
    }

    fn read_config_space<T: FromBytes + IntoBytes>(&self, offset: usize) -> Result<T, Error> {
        let d = self.device.borrow();
        let end = offset
            .checked_add(size_of::<T>())
            .ok_or(Error::ConfigSpaceTooSmall)?;
        let bytes = d
            .config
            .get(offset..end)
            .ok_or(Error::ConfigSpaceTooSmall)?;
        T::read_from_bytes(bytes).map_err(|_| Error::ConfigSpaceTooSmall)
    }

    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: T,
    ) -> Result<(), Error> {
        let mut d = self.device.borrow_mut();
        let bytes = value.as_bytes();
        let end = offset
            .checked_add(bytes.len())
            .ok_or(Error::ConfigSpaceTooSmall)?;
        d.config
            .get_mut(offset..end)
            .ok_or(Error::ConfigSpaceTooSmall)?
            .copy_from_slice(bytes);
        Ok(())
    }
}
