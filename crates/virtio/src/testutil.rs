//! Shared test helpers: guest memory, a driver-side view of a split queue
//! (virtio-queue's mock), an interrupt that counts.

// The virtio constants cast here (flags, addresses split in halves) fit.
#![allow(clippy::cast_possible_truncation)]

use crate::device::Activation;
use crate::{Interrupt, InterruptStatus};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{GuestAddress, GuestMemoryMmap};

pub type Mem = Arc<GuestMemoryMmap>;

/// 2 MiB of guest memory at 0.
pub const MEM_BYTES: usize = 2 << 20;
pub fn mem() -> Mem {
    Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_BYTES)]).unwrap())
}

/// Counts triggers.
#[derive(Default)]
pub struct Counter(pub AtomicU64);

impl Interrupt for Counter {
    fn trigger(&self) -> io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

impl Counter {
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// An interrupt that always fails.
pub struct Broken;

impl Interrupt for Broken {
    fn trigger(&self) -> io::Result<()> {
        Err(io::Error::other("broken line"))
    }
}

pub const R: u16 = 0;
pub const W: u16 = VRING_DESC_F_WRITE as u16;

/// A driver-side queue at `base` with `size` entries.
pub struct Driver<'a> {
    pub mock: MockSplitQueue<'a, GuestMemoryMmap>,
    next_desc: u16,
    size: u16,
}

impl<'a> Driver<'a> {
    pub fn new(mem: &'a Mem, base: u64, size: u16) -> Self {
        Driver {
            mock: MockSplitQueue::create(&**mem, GuestAddress(base), size),
            next_desc: 0,
            size,
        }
    }

    /// The device-side queue for the same rings.
    pub fn queue(&self) -> Queue {
        self.mock.create_queue::<Queue>().unwrap()
    }

    /// Writes raw descriptors at `index..` and makes `index` available.
    pub fn post_raw(&mut self, index: u16, descs: &[Descriptor]) {
        for (i, d) in descs.iter().enumerate() {
            let i = u16::try_from(i).unwrap();
            self.mock
                .desc_table()
                .store(index + i, RawDescriptor::from(*d))
                .unwrap();
        }
        self.make_available(index);
    }

    /// Makes `head` available.
    pub fn make_available(&mut self, head: u16) {
        let idx = self.mock.avail().idx().load();
        self.mock
            .avail()
            .ring()
            .ref_at(usize::from(idx % self.size))
            .unwrap()
            .store(head);
        self.mock.avail().idx().store(idx.wrapping_add(1));
    }

    /// Posts a chain of `(addr, len, flags)` buffers; returns its head.
    pub fn post(&mut self, bufs: &[(u64, u32, u16)]) -> u16 {
        let n = u16::try_from(bufs.len()).unwrap();
        if self.next_desc + n > self.size {
            self.next_desc = 0;
        }
        let head = self.next_desc;
        let descs: Vec<Descriptor> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let i = u16::try_from(i).unwrap();
                let last = usize::from(i) + 1 == bufs.len();
                let flags = if last {
                    flags
                } else {
                    flags | VRING_DESC_F_NEXT as u16
                };
                Descriptor::new(addr, len, flags, head + i + 1)
            })
            .collect();
        self.next_desc += n;
        self.post_raw(head, &descs);
        head
    }

    /// The used ring's index.
    pub fn used_idx(&self) -> u16 {
        self.mock.used().idx().load()
    }

    /// Used entry `i`: (head, len).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let e = self
            .mock
            .used()
            .ring()
            .ref_at(usize::from(i % self.size))
            .unwrap()
            .load();
        (e.id(), e.len())
    }
}

/// An activation with the given queues and a counting interrupt.
pub fn activation(mem: &Mem, queues: Vec<Queue>) -> (Activation<Mem>, Arc<Counter>) {
    let irq = Arc::new(Counter::default());
    let a = Activation {
        mem: mem.clone(),
        queues,
        interrupt: InterruptStatus::new(irq.clone()),
        features: crate::VIRTIO_F_VERSION_1,
    };
    (a, irq)
}

fn wr(t: &impl vm_device::DeviceMmio, off: u64, v: u32) {
    t.mmio_write(vm_device::bus::MmioAddress(0), off, &v.to_le_bytes());
}

/// Drives the virtio-mmio init sequence with `queues` as queues 0.. and
/// every offered feature accepted; sets DRIVER_OK.
pub fn bring_up(t: &impl vm_device::DeviceMmio, queues: &[&Driver<'_>]) {
    let mut f = [0u8; 4];
    wr(t, 0x70, 0);
    wr(t, 0x70, 1);
    wr(t, 0x70, 3);
    for sel in 0..2 {
        wr(t, 0x14, sel);
        t.mmio_read(vm_device::bus::MmioAddress(0), 0x10, &mut f);
        wr(t, 0x24, sel);
        wr(t, 0x20, u32::from_le_bytes(f));
    }
    wr(t, 0x70, 11);
    for (i, d) in queues.iter().enumerate() {
        wr(t, 0x30, u32::try_from(i).unwrap());
        wr(t, 0x38, u32::from(d.size));
        for (off, a) in [
            (0x80, d.mock.desc_table_addr().0),
            (0x90, d.mock.avail_addr().0),
            (0xa0, d.mock.used_addr().0),
        ] {
            wr(t, off, (a & 0xffff_ffff) as u32);
            wr(t, off + 4, (a >> 32) as u32);
        }
        wr(t, 0x44, 1);
    }
    wr(t, 0x70, 15);
}

/// An interrupt that sends on a channel, to wait for with `recv_timeout`.
pub struct Chan(pub std::sync::mpsc::Sender<()>);

impl Interrupt for Chan {
    fn trigger(&self) -> io::Result<()> {
        let _ = self.0.send(());
        Ok(())
    }
}
