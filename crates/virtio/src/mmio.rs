//! The virtio-mmio transport, version 2 (virtio 1.x section 4.2.2).

use crate::device::{Activation, Memory, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::{Error, Interrupt, InterruptStatus, Result};
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use virtio_queue::{Queue, QueueT};
use vm_device::bus::{MmioAddress, MmioAddressOffset};
use vm_device::DeviceMmio;
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The size of a transport's MMIO window: register it on the bus with this
/// length.
pub const MMIO_LEN: u64 = 0x1000;
/// The offset of `QueueNotify` in the window: where a VMM places the
/// ioeventfds of [`MmioTransport::ioevents`].
pub const NOTIFY_OFFSET: u64 = 0x50;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
/// "KVMK" in little-endian.
const VENDOR_ID: u32 = 0x4b4d_564b;
const MAX_QUEUES: usize = 64;
const CONFIG_OFFSET: u64 = 0x100;

/// The bits of the device `Status` register (virtio 1.x section 2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready: the device is live.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 128;
}

mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    // QueueDescHigh (0x084) and its two siblings: LOW + 4.
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
}

/// One ioeventfd a VMM may register (`KVM_IOEVENTFD`): a 4-byte write of
/// `datamatch` at `base + offset` signals `fd`, and the [`crate::Worker`]
/// (or the VMM's own loop calling [`MmioTransport::process_queue`]) then
/// processes queue `datamatch`.
#[derive(Debug, Clone, Copy)]
pub struct IoEvent<'a> {
    /// The offset in the window: always [`NOTIFY_OFFSET`].
    pub offset: u64,
    /// The value written: the queue index.
    pub datamatch: u32,
    /// The eventfd.
    pub fd: &'a EventFd,
}

#[derive(Debug, Default, Clone, Copy)]
struct QueueConfig {
    size: u16,
    ready: bool,
    desc: u64,
    driver: u64,
    device: u64,
}

fn set_low(v: &mut u64, low: u32) {
    *v = (*v & !0xffff_ffff) | u64::from(low);
}

fn set_high(v: &mut u64, high: u32) {
    *v = (*v & 0xffff_ffff) | (u64::from(high) << 32);
}

fn low(v: u64) -> u32 {
    (v & 0xffff_ffff) as u32
}

fn high(v: u64) -> u32 {
    (v >> 32) as u32
}

struct State<D, M> {
    device: D,
    mem: M,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<QueueConfig>,
    max_sizes: Vec<u16>,
    active: bool,
}

/// A virtio device behind the virtio-mmio (version 2) register layout: a
/// device for vm-device's MMIO bus ([`DeviceMmio`], locking inside).
///
/// Create it with [`MmioTransport::new`], put it in an `Arc`, register that
/// on the bus at `base .. base + MMIO_LEN`, register
/// [`MmioTransport::ioevents`] as ioeventfds at `base + offset` (optional),
/// and run a [`crate::Worker`] on it when ioeventfds are registered or the
/// device has fds of its own (virtio-net's tap).
///
/// ```
/// use std::sync::Arc;
/// use kvmkit_virtio::{Block, MmioTransport, MMIO_LEN};
/// use vm_device::DeviceMmio;
/// use vm_device::bus::MmioAddress;
/// use vm_memory::{GuestAddress, GuestMemoryMmap};
/// use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
/// use vmm_sys_util::tempfile::TempFile;
///
/// let disk = TempFile::new().unwrap();
/// disk.as_file().set_len(1 << 20).unwrap();
/// let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
/// let irq = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
/// let blk = Arc::new(MmioTransport::new(Block::open(disk.as_path(), false).unwrap(), mem, irq).unwrap());
/// let mut magic = [0u8; 4];
/// blk.mmio_read(MmioAddress(0xd000_0000), 0, &mut magic);
/// assert_eq!(&magic, b"virt");
/// assert_eq!(blk.ioevents().count(), 1);
/// ```
pub struct MmioTransport<D, M> {
    state: Mutex<State<D, M>>,
    interrupt: InterruptStatus,
    queue_events: Vec<EventFd>,
    name: &'static str,
    _mem: PhantomData<fn() -> M>,
}

impl<D, M> fmt::Debug for MmioTransport<D, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device", &self.name)
            .field("interrupt", &self.interrupt)
            .finish_non_exhaustive()
    }
}

impl<D: VirtioDevice<M>, M: Memory> MmioTransport<D, M> {
    /// Puts `device` behind the transport, with guest memory `mem` and the
    /// interrupt line `line` (typically an irqfd [`EventFd`]). Creates one
    /// notification eventfd per queue.
    pub fn new(device: D, mem: M, line: Arc<dyn Interrupt>) -> Result<Self> {
        let max_sizes = device.queue_max_sizes().to_vec();
        if max_sizes.len() > MAX_QUEUES {
            return Err(Error::QueueCount {
                count: max_sizes.len(),
                max: MAX_QUEUES,
            });
        }
        let mut queue_events = Vec::with_capacity(max_sizes.len());
        for (i, &size) in max_sizes.iter().enumerate() {
            let queue = u16::try_from(i).unwrap_or(u16::MAX);
            if Queue::new(size).is_err() {
                return Err(Error::QueueMaxSize { queue, size });
            }
            queue_events.push(
                EventFd::new(EFD_NONBLOCK)
                    .map_err(|source| Error::CreateQueueEventFd { queue, source })?,
            );
        }
        let queues = max_sizes
            .iter()
            .map(|&size| QueueConfig {
                size,
                ..QueueConfig::default()
            })
            .collect();
        Ok(MmioTransport {
            name: device.name(),
            state: Mutex::new(State {
                device,
                mem,
                status: 0,
                device_features_sel: 0,
                driver_features_sel: 0,
                driver_features: 0,
                queue_sel: 0,
                queues,
                max_sizes,
                active: false,
            }),
            interrupt: InterruptStatus::new(line),
            queue_events,
            _mem: PhantomData,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<D, M>> {
        // A poisoned lock means a panic elsewhere; the state is still
        // consistent enough to keep serving register accesses.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The device's name, e.g. `virtio-blk`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The ioeventfds a VMM may register, one per queue: offset
    /// [`NOTIFY_OFFSET`], datamatch the queue index (4 bytes).
    pub fn ioevents(&self) -> impl Iterator<Item = IoEvent<'_>> + '_ {
        self.queue_events
            .iter()
            .zip(0u32..)
            .map(|(fd, datamatch)| IoEvent {
                offset: NOTIFY_OFFSET,
                datamatch,
                fd,
            })
    }

    /// The notification eventfd of queue `index`.
    pub fn queue_event(&self, index: u16) -> Option<&EventFd> {
        self.queue_events.get(usize::from(index))
    }

    /// The `InterruptStatus` register shared with the device.
    pub fn interrupt(&self) -> &InterruptStatus {
        &self.interrupt
    }

    /// The device `Status` register.
    pub fn status(&self) -> u32 {
        self.lock().status
    }

    /// Whether the device is live: `DRIVER_OK`, and neither `FAILED` nor
    /// `DEVICE_NEEDS_RESET`.
    pub fn is_active(&self) -> bool {
        let s = self.lock();
        Self::live(&s)
    }

    /// Runs `f` on the device, e.g. to read its statistics.
    pub fn with_device<R>(&self, f: impl FnOnce(&mut D) -> R) -> R {
        f(&mut self.lock().device)
    }

    /// The device's own fds, for the worker.
    pub fn device_event_fds(&self) -> Vec<RawFd> {
        self.lock().device.event_fds()
    }

    /// Processes queue `index` as if the driver had notified it: what the
    /// worker calls when the queue's ioeventfd fires. Ignored unless the
    /// device is live; a device error sets `DEVICE_NEEDS_RESET` and raises a
    /// configuration-change interrupt.
    pub fn process_queue(&self, index: u16) {
        let mut s = self.lock();
        self.notify(&mut s, u32::from(index));
    }

    /// Fd `index` of [`MmioTransport::device_event_fds`] is readable.
    pub fn process_event(&self, index: usize) {
        let mut s = self.lock();
        if Self::live(&s) {
            let r = s.device.process_event(index);
            self.check(&mut s, r);
        }
    }

    fn live(s: &State<D, M>) -> bool {
        s.active
            && s.status & status::DRIVER_OK != 0
            && s.status & (status::FAILED | status::DEVICE_NEEDS_RESET) == 0
    }

    fn notify(&self, s: &mut State<D, M>, index: u32) {
        let Ok(index) = u16::try_from(index) else {
            return;
        };
        if !Self::live(s) || usize::from(index) >= s.queues.len() {
            return;
        }
        let r = s.device.process_queue(index);
        self.check(s, r);
    }

    fn check(&self, s: &mut State<D, M>, r: Result<()>) {
        if r.is_err() {
            self.needs_reset(s);
        }
    }

    fn needs_reset(&self, s: &mut State<D, M>) {
        if s.status & status::DEVICE_NEEDS_RESET == 0 {
            s.status |= status::DEVICE_NEEDS_RESET;
            // The guest learns of it on its next status read even if the
            // line cannot be raised.
            let _ = self.interrupt.signal_config_change();
        }
    }

    fn reset(&self, s: &mut State<D, M>) {
        s.device.reset();
        s.status = 0;
        s.device_features_sel = 0;
        s.driver_features_sel = 0;
        s.driver_features = 0;
        s.queue_sel = 0;
        s.active = false;
        for (q, &max) in s.queues.iter_mut().zip(&s.max_sizes) {
            *q = QueueConfig {
                size: max,
                ..QueueConfig::default()
            };
        }
        self.interrupt.clear();
    }

    fn device_features(s: &State<D, M>) -> u64 {
        s.device.features() | VIRTIO_F_VERSION_1
    }

    fn write_status(&self, s: &mut State<D, M>, v: u32) {
        if v == 0 {
            self.reset(s);
            return;
        }
        if v & status::FAILED != 0 {
            s.status |= status::FAILED;
        }
        // The driver sets bits one step at a time and never clears one
        // without a reset; a write that drops a bit is refused.
        let keep = s.status & !(status::FAILED | status::DEVICE_NEEDS_RESET);
        if v & keep != keep || s.status & status::FAILED != 0 {
            return;
        }
        let steps = [
            (status::ACKNOWLEDGE, 0),
            (status::DRIVER, status::ACKNOWLEDGE),
            (status::FEATURES_OK, status::DRIVER),
            (status::DRIVER_OK, status::FEATURES_OK),
        ];
        for (bit, needs) in steps {
            if v & bit == 0 || s.status & bit != 0 {
                continue;
            }
            if s.status & needs != needs {
                return;
            }
            match bit {
                status::FEATURES_OK => {
                    let offered = Self::device_features(s);
                    let f = s.driver_features;
                    if f & !offered != 0 || f & VIRTIO_F_VERSION_1 == 0 {
                        // Not set: the driver reads Status back and fails.
                        return;
                    }
                    s.status |= bit;
                }
                status::DRIVER_OK => {
                    s.status |= bit;
                    if self.activate(s).is_err() {
                        self.needs_reset(s);
                    }
                }
                _ => s.status |= bit,
            }
        }
    }

    fn activate(&self, s: &mut State<D, M>) -> Result<()> {
        let mut queues = Vec::with_capacity(s.queues.len());
        {
            let mem = s.mem.memory();
            for (i, (c, &max)) in s.queues.iter().zip(&s.max_sizes).enumerate() {
                let queue = u16::try_from(i).unwrap_or(u16::MAX);
                let setup = |source| Error::QueueSetup { queue, source };
                let mut q = Queue::new(max).map_err(setup)?;
                if c.ready {
                    q.try_set_size(c.size).map_err(setup)?;
                    q.try_set_desc_table_address(GuestAddress(c.desc))
                        .map_err(setup)?;
                    q.try_set_avail_ring_address(GuestAddress(c.driver))
                        .map_err(setup)?;
                    q.try_set_used_ring_address(GuestAddress(c.device))
                        .map_err(setup)?;
                    q.set_ready(true);
                    if !q.is_valid(&*mem) {
                        return Err(Error::QueueMemory { queue });
                    }
                }
                queues.push(q);
            }
        }
        let activation = Activation {
            mem: s.mem.clone(),
            queues,
            interrupt: self.interrupt.clone(),
            features: s.driver_features,
        };
        s.device.activate(activation)?;
        s.active = true;
        Ok(())
    }

    fn queue_config(s: &mut State<D, M>) -> Option<&mut QueueConfig> {
        // Queues are configured after FEATURES_OK and before DRIVER_OK.
        let configurable = s.status & status::FEATURES_OK != 0
            && s.status & (status::DRIVER_OK | status::FAILED) == 0;
        if !configurable {
            return None;
        }
        s.queues.get_mut(usize::try_from(s.queue_sel).ok()?)
    }

    fn read_register(&self, s: &State<D, M>, offset: u64) -> u32 {
        let sel_queue = usize::try_from(s.queue_sel)
            .ok()
            .and_then(|i| s.queues.get(i).copied());
        match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => s.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match s.device_features_sel {
                0 => low(Self::device_features(s)),
                1 => high(Self::device_features(s)),
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => usize::try_from(s.queue_sel)
                .ok()
                .and_then(|i| s.max_sizes.get(i))
                .map_or(0, |&m| u32::from(m)),
            reg::QUEUE_READY => sel_queue.map_or(0, |q| u32::from(q.ready)),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => s.status,
            reg::CONFIG_GENERATION => self.interrupt.config_generation(),
            _ => 0,
        }
    }

    fn write_register(&self, s: &mut State<D, M>, offset: u64, v: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => s.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => s.driver_features_sel = v,
            reg::DRIVER_FEATURES => {
                // Only while negotiating: after DRIVER, before FEATURES_OK.
                let negotiating = s.status & status::DRIVER != 0
                    && s.status & (status::FEATURES_OK | status::FAILED) == 0;
                if negotiating {
                    match s.driver_features_sel {
                        0 => set_low(&mut s.driver_features, v),
                        1 => set_high(&mut s.driver_features, v),
                        _ => {}
                    }
                }
            }
            reg::QUEUE_SEL => s.queue_sel = v,
            reg::QUEUE_NUM => {
                if let Some(q) = Self::queue_config(s) {
                    // Checked against QueueNumMax and for a power of two
                    // at DRIVER_OK.
                    q.size = u16::try_from(v).unwrap_or(0);
                }
            }
            reg::QUEUE_READY => {
                if let Some(q) = Self::queue_config(s) {
                    q.ready = v == 1;
                }
            }
            reg::QUEUE_DESC_LOW..=0x0a4 => {
                if let Some(q) = Self::queue_config(s) {
                    let field = match offset & !0xf {
                        reg::QUEUE_DESC_LOW => &mut q.desc,
                        reg::QUEUE_DRIVER_LOW => &mut q.driver,
                        reg::QUEUE_DEVICE_LOW => &mut q.device,
                        _ => return,
                    };
                    match offset & 0xf {
                        0 => set_low(field, v),
                        4 => set_high(field, v),
                        _ => {}
                    }
                }
            }
            reg::QUEUE_NOTIFY => self.notify(s, v),
            reg::INTERRUPT_ACK => self.interrupt.ack(v),
            reg::STATUS => self.write_status(s, v),
            _ => {}
        }
    }
}

impl<D: VirtioDevice<M>, M: Memory> DeviceMmio for MmioTransport<D, M> {
    fn mmio_read(&self, _base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        if offset >= CONFIG_OFFSET {
            self.lock().device.read_config(offset - CONFIG_OFFSET, data);
            return;
        }
        // Registers are 32 bits wide and read whole (section 4.2.2.2).
        let v = match (offset % 4, data.len()) {
            (0, 4) if offset == reg::INTERRUPT_STATUS => self.interrupt.status(),
            (0, 4) => {
                let s = self.lock();
                self.read_register(&s, offset)
            }
            _ => {
                data.fill(0);
                return;
            }
        };
        data.copy_from_slice(&v.to_le_bytes());
    }

    fn mmio_write(&self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        if offset >= CONFIG_OFFSET {
            self.lock()
                .device
                .write_config(offset - CONFIG_OFFSET, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        if offset % 4 != 0 {
            return;
        }
        let v = u32::from_le_bytes(bytes);
        if offset == reg::INTERRUPT_ACK {
            self.interrupt.ack(v);
            return;
        }
        let mut s = self.lock();
        self.write_register(&mut s, offset, v);
    }
}

#[cfg(test)]
// Test constants (virtio status values, descriptor flags) fit their casts.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::testutil::{mem, Counter, Driver, Mem, R, W};
    use crate::{Block, INT_CONFIG, INT_USED_RING};
    use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN};
    use vm_memory::Bytes;
    use vmm_sys_util::tempfile::TempFile;

    const BASE: MmioAddress = MmioAddress(0xd000_0000);
    const HDR: u64 = 0x10_0000;
    const STATUS: u64 = 0x10_0800;
    const BUF: u64 = 0x10_1000;

    type Blk = MmioTransport<Block<Mem>, Mem>;

    struct Env {
        _file: TempFile,
        mem: Mem,
        t: Blk,
        irq: Arc<Counter>,
    }

    fn env() -> Env {
        let file = TempFile::new().unwrap();
        file.as_file().set_len(64 * 512).unwrap();
        let mem = mem();
        let irq = Arc::new(Counter::default());
        let blk = Block::open(file.as_path(), false).unwrap();
        let t = MmioTransport::new(blk, mem.clone(), irq.clone()).unwrap();
        Env {
            _file: file,
            mem,
            t,
            irq,
        }
    }

    fn rd(t: &impl DeviceMmio, off: u64) -> u32 {
        let mut d = [0u8; 4];
        t.mmio_read(BASE, off, &mut d);
        u32::from_le_bytes(d)
    }

    fn wr(t: &impl DeviceMmio, off: u64, v: u32) {
        t.mmio_write(BASE, off, &v.to_le_bytes());
    }

    /// Negotiates: reset, ACK, DRIVER, features, FEATURES_OK.
    fn negotiate(t: &Blk, features: u64) -> bool {
        wr(t, reg::STATUS, 0);
        wr(t, reg::STATUS, status::ACKNOWLEDGE);
        wr(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        wr(t, reg::DRIVER_FEATURES_SEL, 0);
        wr(t, reg::DRIVER_FEATURES, low(features));
        wr(t, reg::DRIVER_FEATURES_SEL, 1);
        wr(t, reg::DRIVER_FEATURES, high(features));
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        wr(t, reg::STATUS, s);
        rd(t, reg::STATUS) & status::FEATURES_OK != 0
    }

    fn setup_queue(t: &Blk, index: u32, d: &Driver<'_>, size: u32) {
        wr(t, reg::QUEUE_SEL, index);
        wr(t, reg::QUEUE_NUM, size);
        let addrs = [
            (reg::QUEUE_DESC_LOW, d.mock.desc_table_addr().0),
            (reg::QUEUE_DRIVER_LOW, d.mock.avail_addr().0),
            (reg::QUEUE_DEVICE_LOW, d.mock.used_addr().0),
        ];
        for (off, a) in addrs {
            wr(t, off, low(a));
            wr(t, off + 4, high(a));
        }
        wr(t, reg::QUEUE_READY, 1);
    }

    fn driver_ok(t: &Blk) {
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        wr(t, reg::STATUS, s | status::DRIVER_OK);
    }

    fn all_features(t: &Blk) -> u64 {
        wr(t, reg::DEVICE_FEATURES_SEL, 0);
        let lo = rd(t, reg::DEVICE_FEATURES);
        wr(t, reg::DEVICE_FEATURES_SEL, 1);
        let hi = rd(t, reg::DEVICE_FEATURES);
        u64::from(lo) | u64::from(hi) << 32
    }

    /// A read of sector 0 into BUF.
    fn post_read(mem: &Mem, d: &mut Driver<'_>) {
        mem.write_obj(VIRTIO_BLK_T_IN, GuestAddress(HDR)).unwrap();
        mem.write_obj(0u64, GuestAddress(HDR + 8)).unwrap();
        mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        d.post(&[(HDR, 16, R), (BUF, 512, W), (STATUS, 1, W)]);
    }

    fn status_byte(mem: &Mem) -> u8 {
        mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    #[test]
    fn identification_registers() {
        let e = env();
        assert_eq!(rd(&e.t, reg::MAGIC), 0x7472_6976);
        assert_eq!(rd(&e.t, reg::VERSION), 2);
        assert_eq!(rd(&e.t, reg::DEVICE_ID), 2);
        assert_eq!(rd(&e.t, reg::VENDOR_ID), VENDOR_ID);
        assert_eq!(rd(&e.t, reg::QUEUE_NUM_MAX), 256);
        wr(&e.t, reg::QUEUE_SEL, 1);
        assert_eq!(rd(&e.t, reg::QUEUE_NUM_MAX), 0);
        assert_ne!(all_features(&e.t) & VIRTIO_F_VERSION_1, 0);
        wr(&e.t, reg::DEVICE_FEATURES_SEL, 7);
        assert_eq!(rd(&e.t, reg::DEVICE_FEATURES), 0);
        assert_eq!(e.t.name(), "virtio-blk");
        assert!(format!("{:?}", e.t).contains("virtio-blk"));
        // Config space: capacity, at any width.
        let mut cap = [0u8; 8];
        e.t.mmio_read(BASE, 0x100, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 64);
        let mut b = [0u8; 1];
        e.t.mmio_read(BASE, 0x100, &mut b);
        assert_eq!(b[0], 64);
        e.t.mmio_write(BASE, 0x100, &[1, 2, 3, 4]); // ignored
        e.t.mmio_read(BASE, 0x100, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 64);
    }

    #[test]
    fn odd_width_and_unaligned_accesses_are_ignored() {
        let e = env();
        let mut two = [0xaau8; 2];
        e.t.mmio_read(BASE, reg::MAGIC, &mut two);
        assert_eq!(two, [0, 0]);
        let mut four = [0xaau8; 4];
        e.t.mmio_read(BASE, 0x2, &mut four);
        assert_eq!(four, [0; 4]);
        e.t.mmio_write(BASE, reg::STATUS, &[1]);
        e.t.mmio_write(BASE, reg::STATUS + 1, &1u32.to_le_bytes());
        assert_eq!(e.t.status(), 0);
        assert_eq!(rd(&e.t, 0x0f0), 0);
        wr(&e.t, 0x0f0, 5);
    }

    #[test]
    fn full_init_then_a_request_through_queue_notify() {
        let e = env();
        let mem = e.mem.clone();
        let mut d = Driver::new(&mem, 0, 16);
        assert!(negotiate(&e.t, VIRTIO_F_VERSION_1));
        setup_queue(&e.t, 0, &d, 16);
        assert_eq!(rd(&e.t, reg::QUEUE_READY), 1);
        driver_ok(&e.t);
        assert!(e.t.is_active());
        assert_eq!(e.t.status() & status::DEVICE_NEEDS_RESET, 0);

        post_read(&mem, &mut d);
        wr(&e.t, reg::QUEUE_NOTIFY, 0);
        assert_eq!(status_byte(&mem), VIRTIO_BLK_S_OK as u8);
        assert_eq!(d.used_idx(), 1);
        assert_eq!(rd(&e.t, reg::INTERRUPT_STATUS), INT_USED_RING);
        assert_eq!(e.irq.count(), 1);
        wr(&e.t, reg::INTERRUPT_ACK, INT_USED_RING);
        assert_eq!(rd(&e.t, reg::INTERRUPT_STATUS), 0);

        // The VMM's ioeventfd path: the same request via process_queue.
        post_read(&mem, &mut d);
        e.t.process_queue(0);
        assert_eq!(d.used_idx(), 2);
        assert_eq!(e.t.with_device(|b| b.capacity_sectors()), 64);
    }

    #[test]
    fn feature_negotiation_requires_version_1() {
        let e = env();
        assert!(!negotiate(&e.t, 0));
        let offered = all_features(&e.t);
        assert!(!negotiate(&e.t, VIRTIO_F_VERSION_1 | 1 << 63));
        assert!(negotiate(&e.t, offered));
        // Features are fixed after FEATURES_OK.
        wr(&e.t, reg::DRIVER_FEATURES_SEL, 1);
        wr(&e.t, reg::DRIVER_FEATURES, 0);
        let s = e.t.lock();
        assert_eq!(s.driver_features, offered);
    }

    #[test]
    fn status_out_of_order_is_refused() {
        let e = env();
        // DRIVER before ACKNOWLEDGE.
        wr(&e.t, reg::STATUS, status::DRIVER);
        assert_eq!(e.t.status(), 0);
        // FEATURES_OK before DRIVER.
        wr(&e.t, reg::STATUS, status::ACKNOWLEDGE | status::FEATURES_OK);
        assert_eq!(e.t.status(), status::ACKNOWLEDGE);
        // Driver features before DRIVER are ignored.
        wr(&e.t, reg::DRIVER_FEATURES_SEL, 1);
        wr(&e.t, reg::DRIVER_FEATURES, 1);
        assert_eq!(e.t.lock().driver_features, 0);
        // DRIVER_OK before FEATURES_OK.
        wr(&e.t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        wr(
            &e.t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
        );
        assert_eq!(e.t.status(), status::ACKNOWLEDGE | status::DRIVER);
        // Dropping a bit without a reset.
        wr(&e.t, reg::STATUS, status::DRIVER);
        assert_eq!(e.t.status(), status::ACKNOWLEDGE | status::DRIVER);
        // The driver cannot set DEVICE_NEEDS_RESET.
        wr(&e.t, reg::STATUS, 0x43);
        assert_eq!(e.t.status() & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn queue_setup_outside_its_window_is_ignored() {
        let e = env();
        let mem = e.mem.clone();
        let d = Driver::new(&mem, 0, 16);
        // Before FEATURES_OK.
        setup_queue(&e.t, 0, &d, 16);
        assert_eq!(rd(&e.t, reg::QUEUE_READY), 0);
        assert!(negotiate(&e.t, VIRTIO_F_VERSION_1));
        // A queue that does not exist.
        setup_queue(&e.t, 3, &d, 16);
        assert_eq!(rd(&e.t, reg::QUEUE_READY), 0);
        setup_queue(&e.t, 0, &d, 16);
        driver_ok(&e.t);
        // After DRIVER_OK.
        wr(&e.t, reg::QUEUE_SEL, 0);
        wr(&e.t, reg::QUEUE_NUM, 4);
        wr(&e.t, reg::QUEUE_READY, 0);
        assert_eq!(rd(&e.t, reg::QUEUE_READY), 1);
        assert_eq!(e.t.lock().queues[0].size, 16);
    }

    /// DRIVER_OK with a broken queue: DEVICE_NEEDS_RESET and a
    /// configuration interrupt, and nothing is processed.
    fn expect_needs_reset_at_driver_ok(set_up: impl FnOnce(&Blk, &Driver<'_>)) {
        let e = env();
        let mem = e.mem.clone();
        let mut d = Driver::new(&mem, 0, 16);
        assert!(negotiate(&e.t, VIRTIO_F_VERSION_1));
        set_up(&e.t, &d);
        driver_ok(&e.t);
        assert_ne!(e.t.status() & status::DEVICE_NEEDS_RESET, 0);
        assert!(!e.t.is_active());
        assert_eq!(rd(&e.t, reg::INTERRUPT_STATUS), INT_CONFIG);
        assert_eq!(rd(&e.t, reg::CONFIG_GENERATION), 1);
        assert_eq!(e.irq.count(), 1);
        post_read(&mem, &mut d);
        wr(&e.t, reg::QUEUE_NOTIFY, 0);
        assert_eq!(d.used_idx(), 0);
        // A reset recovers.
        wr(&e.t, reg::STATUS, 0);
        assert_eq!(e.t.status(), 0);
        assert_eq!(rd(&e.t, reg::INTERRUPT_STATUS), 0);
    }

    #[test]
    fn queue_size_not_a_power_of_two() {
        expect_needs_reset_at_driver_ok(|t, d| setup_queue(t, 0, d, 12));
    }

    #[test]
    fn queue_size_above_max_or_zero() {
        expect_needs_reset_at_driver_ok(|t, d| setup_queue(t, 0, d, 512));
        expect_needs_reset_at_driver_ok(|t, d| setup_queue(t, 0, d, 0));
        expect_needs_reset_at_driver_ok(|t, d| setup_queue(t, 0, d, 0x1_0000));
    }

    #[test]
    fn queue_rings_outside_memory_or_misaligned() {
        expect_needs_reset_at_driver_ok(|t, d| {
            setup_queue(t, 0, d, 16);
            wr(t, reg::QUEUE_DESC_LOW, 0);
            wr(t, reg::QUEUE_DESC_LOW + 4, 0x10);
        });
        expect_needs_reset_at_driver_ok(|t, d| {
            setup_queue(t, 0, d, 16);
            wr(t, reg::QUEUE_DEVICE_LOW, 0x4000_0000);
        });
        expect_needs_reset_at_driver_ok(|t, d| {
            setup_queue(t, 0, d, 16);
            wr(t, reg::QUEUE_DESC_LOW, 0x1008);
        });
        expect_needs_reset_at_driver_ok(|t, d| {
            setup_queue(t, 0, d, 16);
            wr(t, reg::QUEUE_DEVICE_LOW, 0x1002);
        });
    }

    #[test]
    fn queue_never_made_ready() {
        // Block needs queue 0: activation fails.
        expect_needs_reset_at_driver_ok(|_, _| {});
    }

    #[test]
    fn notify_before_ready_or_for_a_bad_queue_is_ignored() {
        let e = env();
        let mem = e.mem.clone();
        let mut d = Driver::new(&mem, 0, 16);
        post_read(&mem, &mut d);
        wr(&e.t, reg::QUEUE_NOTIFY, 0);
        e.t.process_queue(0);
        e.t.process_event(0);
        assert!(negotiate(&e.t, VIRTIO_F_VERSION_1));
        setup_queue(&e.t, 0, &d, 16);
        wr(&e.t, reg::QUEUE_NOTIFY, 0);
        assert_eq!(d.used_idx(), 0);
        driver_ok(&e.t);
        wr(&e.t, reg::QUEUE_NOTIFY, 5);
        wr(&e.t, reg::QUEUE_NOTIFY, u32::MAX);
        assert_eq!(d.used_idx(), 0);
        wr(&e.t, reg::QUEUE_NOTIFY, 0);
        assert_eq!(d.used_idx(), 1);
    }

    #[test]
    fn reset_mid_request_drops_it_and_reinit_works() {
        let e = env();
        let mem = e.mem.clone();
        let mut d = Driver::new(&mem, 0, 16);
        assert!(negotiate(&e.t, VIRTIO_F_VERSION_1));
        setup_queue(&e.t, 0, &d, 16);
        driver_ok(&e.t);
        post_read(&mem, &mut d);
        wr(&e.t, reg::STATUS, 0);
        assert_eq!(rd(&e.t, reg::QUEUE_READY), 0);
        // A stale ioeventfd or notify after the reset.
        e.t.process_queue(0);
        wr(&e.t, reg::QUEUE_NOTIFY, 0);
        assert_eq!(d.used_idx(), 0);
        assert_eq!(status_byte(&mem), 0xff);
        // A fresh driver instance: new rings.
        let mut d2 = Driver::new(&mem, 0x8000, 16);
        assert!(negotiate(&e.t, VIRTIO_F_VERSION_1));
        setup_queue(&e.t, 0, &d2, 16);
        driver_ok(&e.t);
        post_read(&mem, &mut d2);
        wr(&e.t, reg::QUEUE_NOTIFY, 0);
        assert_eq!(d2.used_idx(), 1);
        assert_eq!(status_byte(&mem), VIRTIO_BLK_S_OK as u8);
    }

    #[test]
    fn notifications_after_failed_are_ignored() {
        let e = env();
        let mem = e.mem.clone();
        let mut d = Driver::new(&mem, 0, 16);
        assert!(negotiate(&e.t, VIRTIO_F_VERSION_1));
        setup_queue(&e.t, 0, &d, 16);
        driver_ok(&e.t);
        wr(&e.t, reg::STATUS, e.t.status() | status::FAILED);
        assert!(!e.t.is_active());
        post_read(&mem, &mut d);
        wr(&e.t, reg::QUEUE_NOTIFY, 0);
        e.t.process_queue(0);
        assert_eq!(d.used_idx(), 0);
        // FAILED sticks until reset, whatever else is written.
        wr(&e.t, reg::STATUS, status::ACKNOWLEDGE);
        assert_ne!(e.t.status() & status::FAILED, 0);
        wr(&e.t, reg::STATUS, 0);
        assert_eq!(e.t.status(), 0);
    }

    #[test]
    fn malformed_chain_sets_needs_reset() {
        let e = env();
        let mem = e.mem.clone();
        let mut d = Driver::new(&mem, 0, 16);
        assert!(negotiate(&e.t, VIRTIO_F_VERSION_1));
        setup_queue(&e.t, 0, &d, 16);
        driver_ok(&e.t);
        d.post(&[(HDR, 16, R), (BUF, 512, R)]);
        wr(&e.t, reg::QUEUE_NOTIFY, 0);
        assert_ne!(e.t.status() & status::DEVICE_NEEDS_RESET, 0);
        assert_eq!(rd(&e.t, reg::INTERRUPT_STATUS) & INT_CONFIG, INT_CONFIG);
        assert_eq!(d.used(0).1, 0);
        // Later requests wait for the reset.
        post_read(&mem, &mut d);
        wr(&e.t, reg::QUEUE_NOTIFY, 0);
        assert_eq!(d.used_idx(), 1);
    }

    #[test]
    fn ioevents_are_one_per_queue_at_queue_notify() {
        let e = env();
        let evs: Vec<_> = e.t.ioevents().collect();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].offset, NOTIFY_OFFSET);
        assert_eq!(evs[0].datamatch, 0);
        assert!(e.t.queue_event(0).is_some());
        assert!(e.t.queue_event(1).is_none());
        assert!(e.t.device_event_fds().is_empty());
        assert_eq!(e.t.interrupt().status(), 0);
    }

    struct Huge;
    impl VirtioDevice<Mem> for Huge {
        fn device_type(&self) -> u32 {
            0
        }
        fn name(&self) -> &'static str {
            "huge"
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[3]
        }
        fn features(&self) -> u64 {
            0
        }
        fn read_config(&self, _: u64, _: &mut [u8]) {}
        fn write_config(&mut self, _: u64, _: &[u8]) {}
        fn activate(&mut self, _: Activation<Mem>) -> Result<()> {
            Ok(())
        }
        fn reset(&mut self) {}
        fn process_queue(&mut self, _: u16) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn device_with_a_bad_queue_size_is_refused() {
        let irq = Arc::new(Counter::default());
        let err = MmioTransport::new(Huge, mem(), irq).unwrap_err();
        assert!(matches!(err, Error::QueueMaxSize { queue: 0, size: 3 }));
    }
}
