//! virtio-net (device id 1) on a frame backend (a tap).

use crate::block::{for_each_range, read_config_bytes};
use crate::device::{Activation, Memory, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::{Error, Result};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemory};

/// The `virtio_net_hdr_v1` every frame starts with (virtio 1.x layout,
/// `num_buffers` included).
pub const VNET_HDR_LEN: usize = 12;
/// The size of both queues.
pub const NET_QUEUE_SIZE: u16 = 256;
/// The largest frame: the header and 64 KiB (a tap's maximal MTU plus the
/// Ethernet header fits).
const FRAME_MAX: usize = VNET_HDR_LEN + 65536;
const RX: u16 = 0;
const TX: u16 = 1;
const DEVICE_ID: u32 = 1;
const CONFIG_BYTES: usize = 8;

/// Where frames go and come from: one `recv` returns one frame with its
/// 12-byte vnet header, one `send` sends one. The fd is non-blocking; the
/// worker polls it (edge-triggered) for readability.
///
/// Implemented by [`crate::Tap`], and by a `UnixDatagram` (a socketpair end,
/// set non-blocking) for tests and userspace switches.
///
/// ```
/// use std::os::unix::net::UnixDatagram;
/// use kvmkit_virtio::NetBackend;
/// let (mut a, b) = UnixDatagram::pair().unwrap();
/// a.send(&[0; 20]).unwrap();
/// let mut buf = [0; 64];
/// assert_eq!(b.recv(&mut buf).unwrap(), 20);
/// ```
pub trait NetBackend: AsRawFd + Send {
    /// Receives one frame into `buf`; `WouldBlock` when none is waiting.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Sends one frame.
    fn send(&mut self, frame: &[u8]) -> io::Result<usize>;
}

impl NetBackend for UnixDatagram {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        UnixDatagram::recv(self, buf)
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        UnixDatagram::send(self, frame)
    }
}

/// Frame counters of a [`Net`] device.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetStats {
    /// Frames delivered to the guest.
    pub rx_frames: u64,
    /// Frames from the backend dropped: too short, or larger than the
    /// guest's buffer.
    pub rx_dropped: u64,
    /// Frames sent to the backend.
    pub tx_frames: u64,
    /// Guest frames dropped: too short, too long, or refused by the backend.
    pub tx_dropped: u64,
}

/// A locally administered, unicast MAC address from a pseudo-random source.
///
/// ```
/// let mac = kvmkit_virtio::random_mac();
/// assert_eq!(mac[0] & 0x03, 0x02);
/// ```
pub fn random_mac() -> [u8; 6] {
    let a = vmm_sys_util::rand::xor_pseudo_rng_u32().to_le_bytes();
    let b = vmm_sys_util::rand::xor_pseudo_rng_u32().to_le_bytes();
    [(a[0] & 0xfc) | 0x02, a[1], a[2], a[3], b[0], b[1]]
}

/// What went wrong with one chain.
enum ChainError {
    /// The chain itself is broken (cut short, outside memory): reset.
    Malformed,
    /// The frame does not fit, or is not a frame: drop it.
    Drop,
}

/// A virtio network device: queue 0 receives, queue 1 transmits.
///
/// Offers `VIRTIO_F_VERSION_1`, `VIRTIO_NET_F_MAC` and `VIRTIO_NET_F_STATUS`
/// (link always up); no offloads and no mergeable buffers, so every receive
/// chain holds one whole frame. Frames are copied once through a 64 KiB
/// buffer each way.
///
/// Receive: when the backend is readable (the worker's edge-triggered
/// event) the device reads frames while the guest has buffers; without
/// buffers it keeps the frame and stops reading until the guest notifies
/// queue 0.
///
/// ```
/// use std::os::unix::net::UnixDatagram;
/// use std::sync::Arc;
/// use kvmkit_virtio::{Net, VirtioDevice};
/// use vm_memory::GuestMemoryMmap;
/// let (host, _peer) = UnixDatagram::pair().unwrap();
/// host.set_nonblocking(true).unwrap();
/// let net: Net<_, Arc<GuestMemoryMmap>> = Net::new(host, Some([2, 0, 0, 0, 0, 1]));
/// let mut mac = [0u8; 6];
/// net.read_config(0, &mut mac);
/// assert_eq!(mac, [2, 0, 0, 0, 0, 1]);
/// ```
pub struct Net<B, M> {
    backend: B,
    config: [u8; CONFIG_BYTES],
    active: Option<Activation<M>>,
    rx_buf: Box<[u8]>,
    rx_len: usize,
    tx_buf: Box<[u8]>,
    descs: Vec<Descriptor>,
    stats: NetStats,
}

impl<B, M> fmt::Debug for Net<B, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Net")
            .field("mac", &&self.config[..6])
            .field("active", &self.active.is_some())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<B: NetBackend, M: Memory> Net<B, M> {
    /// A device on `backend` (non-blocking) with `mac`, or a random
    /// locally administered one.
    pub fn new(backend: B, mac: Option<[u8; 6]>) -> Self {
        let mac = mac.unwrap_or_else(random_mac);
        let mut config = [0u8; CONFIG_BYTES];
        config[..6].copy_from_slice(&mac);
        let link = u16::try_from(VIRTIO_NET_S_LINK_UP).unwrap_or(1);
        config[6..8].copy_from_slice(&link.to_le_bytes());
        Net {
            backend,
            config,
            active: None,
            rx_buf: vec![0; FRAME_MAX].into_boxed_slice(),
            rx_len: 0,
            tx_buf: vec![0; FRAME_MAX].into_boxed_slice(),
            descs: Vec::with_capacity(usize::from(NET_QUEUE_SIZE)),
            stats: NetStats::default(),
        }
    }

    /// The MAC address.
    pub fn mac(&self) -> [u8; 6] {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.config[..6]);
        mac
    }

    /// The frame counters.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn rx(&mut self) -> Result<()> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        let Some(q) = a.queues.get_mut(usize::from(RX)) else {
            return Ok(());
        };
        let mem = a.mem.memory();
        let mut used = false;
        let mut result = Ok(());
        loop {
            if self.rx_len == 0 {
                match self.backend.recv(&mut self.rx_buf) {
                    Ok(0) => break,
                    Ok(n) if n < VNET_HDR_LEN => {
                        self.stats.rx_dropped += 1;
                        continue;
                    }
                    Ok(n) => self.rx_len = n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // WouldBlock: drained; anything else: nothing to read now.
                    Err(_) => break,
                }
                // No VIRTIO_NET_F_MRG_RXBUF: num_buffers is 1. The tap
                // leaves these bytes of the header unwritten.
                self.rx_buf[10..12].copy_from_slice(&1u16.to_le_bytes());
            }
            let chain = match q.iter(&*mem) {
                Ok(mut it) => it.next(),
                Err(source) => {
                    result = Err(Error::QueueAccess { queue: RX, source });
                    break;
                }
            };
            // No buffer: keep the frame until the guest notifies queue 0.
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            let frame = &self.rx_buf[..self.rx_len];
            let len = match write_frame(&*mem, chain, frame, &mut self.descs) {
                Ok(len) => {
                    self.stats.rx_frames += 1;
                    len
                }
                Err(ChainError::Drop) => {
                    self.stats.rx_dropped += 1;
                    0
                }
                Err(ChainError::Malformed) => {
                    self.rx_len = 0;
                    let _ = q.add_used(&*mem, head, 0);
                    used = true;
                    result = Err(Error::MalformedChain { queue: RX, head });
                    break;
                }
            };
            self.rx_len = 0;
            if let Err(source) = q.add_used(&*mem, head, len) {
                result = Err(Error::QueueAccess { queue: RX, source });
                break;
            }
            used = true;
        }
        finish(q, &*mem, used, &a.interrupt)?;
        result
    }

    fn tx(&mut self) -> Result<()> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        let Some(q) = a.queues.get_mut(usize::from(TX)) else {
            return Ok(());
        };
        let mem = a.mem.memory();
        let mut used = false;
        let mut result = Ok(());
        loop {
            let chain = match q.iter(&*mem) {
                Ok(mut it) => it.next(),
                Err(source) => {
                    result = Err(Error::QueueAccess { queue: TX, source });
                    break;
                }
            };
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            match read_frame(&*mem, chain, &mut self.tx_buf, &mut self.descs) {
                Ok(n) => match self.backend.send(&self.tx_buf[..n]) {
                    Ok(_) => self.stats.tx_frames += 1,
                    // A full or down backend drops the frame, like a wire.
                    Err(_) => self.stats.tx_dropped += 1,
                },
                Err(ChainError::Drop) => self.stats.tx_dropped += 1,
                Err(ChainError::Malformed) => {
                    let _ = q.add_used(&*mem, head, 0);
                    used = true;
                    result = Err(Error::MalformedChain { queue: TX, head });
                    break;
                }
            }
            if let Err(source) = q.add_used(&*mem, head, 0) {
                result = Err(Error::QueueAccess { queue: TX, source });
                break;
            }
            used = true;
        }
        finish(q, &*mem, used, &a.interrupt)?;
        result
    }
}

fn finish<G: GuestMemory>(
    q: &mut Queue,
    mem: &G,
    used: bool,
    irq: &crate::InterruptStatus,
) -> Result<()> {
    if used && q.needs_notification(mem).unwrap_or(true) {
        irq.signal_used_queue().map_err(Error::Interrupt)?;
    }
    Ok(())
}

/// Collects the chain; a chain the iterator cut short ends in NEXT.
fn collect<G: GuestMemory>(
    chain: DescriptorChain<&G>,
    descs: &mut Vec<Descriptor>,
) -> Result<(), ChainError> {
    descs.clear();
    descs.extend(chain);
    match descs.last() {
        Some(d) if !d.has_next() => Ok(()),
        _ => Err(ChainError::Malformed),
    }
}

/// Writes `frame` into the chain's device-writable buffers; returns the
/// used length.
fn write_frame<G: GuestMemory>(
    mem: &G,
    chain: DescriptorChain<&G>,
    frame: &[u8],
    descs: &mut Vec<Descriptor>,
) -> Result<u32, ChainError> {
    collect(chain, descs)?;
    descs.retain(Descriptor::is_write_only);
    let room: u64 = descs.iter().map(|d| u64::from(d.len())).sum();
    let len = frame.len() as u64;
    if room < len {
        return Err(ChainError::Drop);
    }
    let mut pos = 0usize;
    for_each_range(
        descs,
        0,
        len,
        |addr, n| {
            mem.write_slice(&frame[pos..pos + n], addr)
                .map_err(|_| ChainError::Malformed)?;
            pos += n;
            Ok(())
        },
        ChainError::Malformed,
    )?;
    u32::try_from(len).map_err(|_| ChainError::Drop)
}

/// Gathers the chain's device-readable buffers into `buf`; returns the
/// frame's length (header included).
fn read_frame<G: GuestMemory>(
    mem: &G,
    chain: DescriptorChain<&G>,
    buf: &mut [u8],
    descs: &mut Vec<Descriptor>,
) -> Result<usize, ChainError> {
    collect(chain, descs)?;
    descs.retain(|d| !d.is_write_only());
    let total: u64 = descs.iter().map(|d| u64::from(d.len())).sum();
    if total < VNET_HDR_LEN as u64 || total > buf.len() as u64 {
        return Err(ChainError::Drop);
    }
    let mut pos = 0usize;
    for_each_range(
        descs,
        0,
        total,
        |addr, n| {
            mem.read_slice(&mut buf[pos..pos + n], addr)
                .map_err(|_| ChainError::Malformed)?;
            pos += n;
            Ok(())
        },
        ChainError::Malformed,
    )?;
    Ok(pos)
}

impl<B: NetBackend, M: Memory> VirtioDevice<M> for Net<B, M> {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn name(&self) -> &'static str {
        "virtio-net"
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[NET_QUEUE_SIZE, NET_QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | 1 << VIRTIO_NET_F_MAC | 1 << VIRTIO_NET_F_STATUS
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // Read-only without VIRTIO_NET_F_CTRL_MAC_ADDR (and legacy only).
    }

    fn activate(&mut self, activation: Activation<M>) -> Result<()> {
        for queue in [RX, TX] {
            let ready = activation
                .queues
                .get(usize::from(queue))
                .is_some_and(QueueT::ready);
            if !ready {
                return Err(Error::QueueMissing {
                    device: "virtio-net",
                    queue,
                });
            }
        }
        self.active = Some(activation);
        // Frames may have queued while the driver was getting ready.
        self.rx()
    }

    fn reset(&mut self) {
        self.active = None;
        self.rx_len = 0;
    }

    fn process_queue(&mut self, index: u16) -> Result<()> {
        match index {
            RX => self.rx(),
            TX => self.tx(),
            _ => Ok(()),
        }
    }

    fn event_fds(&self) -> Vec<RawFd> {
        vec![self.backend.as_raw_fd()]
    }

    fn process_event(&mut self, index: usize) -> Result<()> {
        if index == 0 {
            self.rx()
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
// Test constants (virtio status values, descriptor flags) fit their casts.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::testutil::{activation, bring_up, mem, Chan, Counter, Driver, Mem, R, W};
    use crate::{MmioTransport, Worker};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;
    use virtio_bindings::virtio_ring::VRING_DESC_F_NEXT;
    use vm_memory::GuestAddress;

    const RXQ: u64 = 0;
    const TXQ: u64 = 0x8000;
    const RX_BUF: u64 = 0x10_0000;
    const TX_BUF: u64 = 0x18_0000;
    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn pair() -> (UnixDatagram, UnixDatagram) {
        let (a, b) = UnixDatagram::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn frame(len: usize, fill: u8) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN];
        f.extend(std::iter::repeat_n(fill, len));
        f
    }

    struct Env {
        mem: Mem,
        net: Net<UnixDatagram, Mem>,
        peer: UnixDatagram,
        irq: Arc<Counter>,
    }

    fn env() -> Env {
        let (host, peer) = pair();
        Env {
            mem: mem(),
            net: Net::new(host, Some(MAC)),
            peer,
            irq: Arc::new(Counter::default()),
        }
    }

    impl Env {
        fn start<'a>(&mut self, mem: &'a Mem) -> (Driver<'a>, Driver<'a>) {
            let rx = Driver::new(mem, RXQ, 16);
            let tx = Driver::new(mem, TXQ, 16);
            let (a, irq) = activation(&self.mem, vec![rx.queue(), tx.queue()]);
            self.irq = irq;
            self.net.activate(a).unwrap();
            (rx, tx)
        }
    }

    #[test]
    fn config_features_and_mac() {
        let e = env();
        let mut cfg = [0u8; 8];
        VirtioDevice::<Mem>::read_config(&e.net, 0, &mut cfg);
        assert_eq!(&cfg[..6], &MAC);
        assert_eq!(u16::from_le_bytes([cfg[6], cfg[7]]), 1);
        assert_eq!(e.net.mac(), MAC);
        let f = VirtioDevice::<Mem>::features(&e.net);
        assert_ne!(f & VIRTIO_F_VERSION_1, 0);
        assert_ne!(f & 1 << VIRTIO_NET_F_MAC, 0);
        assert_ne!(f & 1 << VIRTIO_NET_F_STATUS, 0);
        assert_eq!(VirtioDevice::<Mem>::device_type(&e.net), 1);
        let (host, _) = pair();
        let random: Net<_, Mem> = Net::new(host, None);
        assert_eq!(random.mac()[0] & 3, 2);
        assert!(format!("{random:?}").contains("Net"));
        assert_eq!(random.event_fds(), vec![random.backend().as_raw_fd()]);
    }

    #[test]
    fn tx_sends_the_frame_with_its_header() {
        let mut e = env();
        let mem = e.mem.clone();
        let (_rx, mut tx) = e.start(&mem);
        let f = frame(60, 0x42);
        mem.write_slice(&f[..VNET_HDR_LEN], GuestAddress(TX_BUF))
            .unwrap();
        mem.write_slice(&f[VNET_HDR_LEN..], GuestAddress(TX_BUF + 0x1000))
            .unwrap();
        tx.post(&[(TX_BUF, 12, R), (TX_BUF + 0x1000, 60, R)]);
        e.net.process_queue(1).unwrap();
        let mut got = vec![0u8; 200];
        let n = e.peer.recv(&mut got).unwrap();
        assert_eq!(&got[..n], &f[..]);
        assert_eq!(tx.used_idx(), 1);
        assert_eq!(e.net.stats().tx_frames, 1);
        assert_eq!(e.irq.count(), 1);
    }

    #[test]
    fn tx_drops_bad_frames_but_returns_their_buffers() {
        let mut e = env();
        let mem = e.mem.clone();
        let (_rx, mut tx) = e.start(&mem);
        tx.post(&[(TX_BUF, 4, R)]); // shorter than the header
        tx.post(&[(TX_BUF, 0x20000, R)]); // longer than any frame
        tx.post(&[(0x4000_0000, 64, R)]); // outside memory: reset
        let err = e.net.process_queue(1).unwrap_err();
        assert!(matches!(err, Error::MalformedChain { queue: 1, .. }));
        assert_eq!(e.net.stats().tx_dropped, 2);
        assert_eq!(tx.used_idx(), 3);
        let mut buf = [0u8; 16];
        assert!(e.peer.recv(&mut buf).is_err());
    }

    #[test]
    fn tx_backend_failure_drops_the_frame() {
        let mut e = env();
        let mem = e.mem.clone();
        let (_rx, mut tx) = e.start(&mem);
        drop(std::mem::replace(&mut e.peer, pair().0));
        tx.post(&[(TX_BUF, 64, R)]);
        e.net.process_queue(1).unwrap();
        assert_eq!(e.net.stats().tx_dropped, 1);
        assert_eq!(tx.used_idx(), 1);
    }

    #[test]
    fn rx_delivers_frames_with_num_buffers_set() {
        let mut e = env();
        let mem = e.mem.clone();
        let (mut rx, _tx) = e.start(&mem);
        rx.post(&[(RX_BUF, 12, W), (RX_BUF + 0x1000, 2048, W)]);
        let mut f = frame(100, 0x17);
        f[10] = 0xee; // whatever the backend left there
        e.peer.send(&f).unwrap();
        e.net.process_event(0).unwrap();
        assert_eq!(rx.used_idx(), 1);
        assert_eq!(rx.used(0).1, 112);
        let mut hdr = [0u8; 12];
        mem.read_slice(&mut hdr, GuestAddress(RX_BUF)).unwrap();
        assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 1);
        let mut body = [0u8; 100];
        mem.read_slice(&mut body, GuestAddress(RX_BUF + 0x1000))
            .unwrap();
        assert_eq!(body, [0x17; 100]);
        assert_eq!(e.irq.count(), 1);
    }

    #[test]
    fn rx_without_buffers_waits_for_the_guest() {
        let mut e = env();
        let mem = e.mem.clone();
        let (mut rx, _tx) = e.start(&mem);
        e.peer.send(&frame(50, 1)).unwrap();
        e.peer.send(&frame(50, 2)).unwrap();
        e.net.process_event(0).unwrap();
        assert_eq!(rx.used_idx(), 0);
        assert_eq!(e.irq.count(), 0);
        // One buffer: one frame, the other stays queued.
        rx.post(&[(RX_BUF, 2048, W)]);
        e.net.process_queue(0).unwrap();
        assert_eq!(rx.used_idx(), 1);
        rx.post(&[(RX_BUF + 0x1000, 2048, W)]);
        e.net.process_queue(0).unwrap();
        assert_eq!(rx.used_idx(), 2);
        let b: u8 = mem.read_obj(GuestAddress(RX_BUF + 0x1000 + 12)).unwrap();
        assert_eq!(b, 2);
        assert_eq!(e.net.stats().rx_frames, 2);
    }

    #[test]
    fn rx_frame_larger_than_the_buffer_is_dropped() {
        let mut e = env();
        let mem = e.mem.clone();
        let (mut rx, _tx) = e.start(&mem);
        rx.post(&[(RX_BUF, 64, W)]);
        rx.post(&[(RX_BUF + 0x1000, 64, W)]);
        e.peer.send(&frame(1000, 1)).unwrap();
        e.peer.send(&[0u8; 4]).unwrap(); // shorter than a header
        e.peer.send(&frame(10, 3)).unwrap();
        e.net.process_event(0).unwrap();
        assert_eq!(rx.used(0).1, 0);
        assert_eq!(rx.used(1).1, 22);
        assert_eq!(e.net.stats().rx_dropped, 2);
        assert_eq!(e.net.stats().rx_frames, 1);
    }

    #[test]
    fn rx_malformed_chains_need_a_reset() {
        for bad in [
            vec![Descriptor::new(
                RX_BUF,
                2048,
                W | VRING_DESC_F_NEXT as u16,
                0,
            )],
            vec![Descriptor::new(0x4000_0000, 2048, W, 0)],
        ] {
            let mut e = env();
            let mem = e.mem.clone();
            let (mut rx, _tx) = e.start(&mem);
            rx.post_raw(0, &bad);
            e.peer.send(&frame(100, 1)).unwrap();
            let err = e.net.process_event(0).unwrap_err();
            assert!(
                matches!(err, Error::MalformedChain { queue: 0, .. }),
                "{err}"
            );
            assert_eq!(rx.used(0).1, 0);
        }
    }

    #[test]
    fn readable_descriptors_in_rx_and_writable_in_tx_are_skipped() {
        let mut e = env();
        let mem = e.mem.clone();
        let (mut rx, mut tx) = e.start(&mem);
        rx.post(&[(0x4000_0000, 16, R), (RX_BUF, 2048, W)]);
        e.peer.send(&frame(20, 9)).unwrap();
        e.net.process_event(0).unwrap();
        assert_eq!(rx.used(0).1, 32);
        tx.post(&[(TX_BUF, 40, R), (0x4000_0000, 16, W)]);
        e.net.process_queue(1).unwrap();
        let mut got = [0u8; 100];
        assert_eq!(e.peer.recv(&mut got).unwrap(), 40);
    }

    #[test]
    fn idle_reset_and_bad_queues_are_harmless() {
        let mut e = env();
        e.peer.send(&frame(20, 9)).unwrap();
        e.net.process_event(0).unwrap();
        e.net.process_queue(1).unwrap();
        let mem = e.mem.clone();
        let (mut rx, _tx) = e.start(&mem);
        e.net.process_queue(9).unwrap();
        e.net.process_event(3).unwrap();
        VirtioDevice::<Mem>::reset(&mut e.net);
        rx.post(&[(RX_BUF, 2048, W)]);
        e.net.process_queue(0).unwrap();
        assert_eq!(rx.used_idx(), 0);
        // A device without both queues does not start.
        let (a, _) = activation(&e.mem, vec![rx.queue()]);
        assert!(matches!(
            e.net.activate(a),
            Err(Error::QueueMissing { queue: 1, .. })
        ));
    }

    #[test]
    fn worker_moves_frames_both_ways() {
        let mem = mem();
        let (host, peer) = pair();
        let (irq_tx, irq_rx) = mpsc::channel();
        let net = Net::new(host, Some(MAC));
        let t = Arc::new(MmioTransport::new(net, mem.clone(), Arc::new(Chan(irq_tx))).unwrap());
        let mut rx = Driver::new(&mem, RXQ, 16);
        let mut tx = Driver::new(&mem, TXQ, 16);
        bring_up(&*t, &[&rx, &tx]);
        assert!(t.is_active());
        let worker = Worker::spawn(t.clone()).unwrap();
        // Receive: the backend becomes readable, the worker delivers.
        rx.post(&[(RX_BUF, 2048, W)]);
        peer.send(&frame(64, 5)).unwrap();
        irq_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(rx.used_idx(), 1);
        // Transmit through the queue's ioeventfd.
        tx.post(&[(TX_BUF, 64, R)]);
        t.queue_event(1).unwrap().write(1).unwrap();
        irq_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let mut got = [0u8; 100];
        assert_eq!(peer.recv(&mut got).unwrap(), 64);
        // No rx buffer: the frame waits for the guest's notification.
        peer.send(&frame(64, 6)).unwrap();
        rx.post(&[(RX_BUF + 0x1000, 2048, W)]);
        t.queue_event(0).unwrap().write(1).unwrap();
        irq_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(rx.used_idx(), 2);
        assert_eq!(t.with_device(|n| n.stats().rx_frames), 2);
        worker.stop().unwrap();
    }
}
