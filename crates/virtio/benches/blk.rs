//! Host-side cost of the virtio-blk device model per 4 KiB request against
//! a raw `pread`/`pwrite` of 4 KiB on the same file.
//!
//! A read and a write request sit in guest memory on a split queue built
//! with virtio-queue's mock driver. Each iteration makes the request
//! available (two stores, the guest's part), calls
//! `Block::process_queue` (parse the chain, `pread`/`pwrite` straight into
//! guest memory, status byte, used ring) and the completion is signalled
//! through the `Interrupt` trait: an `EventFd` write (what an irqfd costs
//! the VMM) or, as a second figure, a counter (the device model alone).
//! Rounds alternate raw and device; medians of the per-round ns/request are
//! printed with their ratio.
//!
//! `cargo bench -p kvmkit-virtio` runs it (`KVMKIT_BENCH_ITERS`, default
//! 100000 per round, 7 rounds); without `--bench` it runs a few iterations
//! as a smoke test.

// Descriptor flags, the 4 KiB length and timing figures fit their casts.
#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]

use kvmkit_virtio::{Activation, Block, Interrupt, InterruptStatus, VirtioDevice};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::tempfile::TempFile;

type Mem = Arc<GuestMemoryMmap>;

const REQ: usize = 4096;
const FILE_BYTES: u64 = 16 << 20;
const QSIZE: u16 = 256;
const HDR_RD: u64 = 0x10_0000;
const HDR_WR: u64 = 0x10_0100;
const STATUS: u64 = 0x10_0200;
const BUF_RD: u64 = 0x11_0000;
const BUF_WR: u64 = 0x12_0000;

#[derive(Default)]
struct Count(AtomicU64);

impl Interrupt for Count {
    fn trigger(&self) -> io::Result<()> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

struct Setup {
    mem: Mem,
    blk: Block<Mem>,
}

fn chain(mock: &MockSplitQueue<'_, GuestMemoryMmap>, first: u16, hdr: u64, buf: u64, write: bool) {
    let next = VRING_DESC_F_NEXT as u16;
    let w = VRING_DESC_F_WRITE as u16;
    let data_flags = if write { next } else { next | w };
    let descs = [
        Descriptor::new(hdr, 16, next, first + 1),
        Descriptor::new(buf, REQ as u32, data_flags, first + 2),
        Descriptor::new(STATUS, 1, w, 0),
    ];
    for (i, d) in (first..).zip(descs) {
        mock.desc_table().store(i, RawDescriptor::from(d)).unwrap();
    }
}

fn setup(
    file: &File,
    line: Arc<dyn Interrupt>,
) -> (Setup, MockSplitQueue<'static, GuestMemoryMmap>) {
    let mem: Mem = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap());
    // The mock borrows the memory for the whole run.
    let leaked: &'static GuestMemoryMmap = Box::leak(Box::new((*mem).clone()));
    let mock = MockSplitQueue::create(leaked, GuestAddress(0), QSIZE);
    chain(&mock, 0, HDR_RD, BUF_RD, false);
    chain(&mock, 3, HDR_WR, BUF_WR, true);
    mem.write_obj(VIRTIO_BLK_T_IN, GuestAddress(HDR_RD))
        .unwrap();
    mem.write_obj(VIRTIO_BLK_T_OUT, GuestAddress(HDR_WR))
        .unwrap();
    mem.write_slice(&[0x5a; REQ], GuestAddress(BUF_WR)).unwrap();
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(file));
    let mut blk = Block::open(path, false).unwrap();
    let queue: Queue = mock.create_queue().unwrap();
    blk.activate(Activation {
        mem: mem.clone(),
        queues: vec![queue],
        interrupt: InterruptStatus::new(line),
        features: kvmkit_virtio::VIRTIO_F_VERSION_1,
    })
    .unwrap();
    (Setup { mem, blk }, mock)
}

fn sector(i: u64) -> u64 {
    (i * 8) % (FILE_BYTES / 512)
}

/// ns per request through the device: alternating reads and writes.
fn device_round(s: &mut Setup, mock: &MockSplitQueue<'_, GuestMemoryMmap>, iters: u64) -> f64 {
    let start = Instant::now();
    for i in 0..iters {
        let (hdr, head) = if i % 2 == 0 { (HDR_RD, 0) } else { (HDR_WR, 3) };
        s.mem.write_obj(sector(i), GuestAddress(hdr + 8)).unwrap();
        let idx = mock.avail().idx().load();
        mock.avail()
            .ring()
            .ref_at(usize::from(idx % QSIZE))
            .unwrap()
            .store(head);
        mock.avail().idx().store(idx.wrapping_add(1));
        s.blk.process_queue(0).unwrap();
    }
    let ns = start.elapsed().as_nanos() as f64 / iters as f64;
    let st: u8 = s.mem.read_obj(GuestAddress(STATUS)).unwrap();
    assert_eq!(st, 0, "requests failed");
    ns
}

/// ns per raw pread/pwrite of 4 KiB, alternating, at the same offsets.
fn raw_round(file: &File, iters: u64) -> f64 {
    let mut buf = vec![0u8; REQ];
    let data = vec![0x5au8; REQ];
    let start = Instant::now();
    for i in 0..iters {
        let off = sector(i) * 512;
        if i % 2 == 0 {
            file.read_exact_at(&mut buf, off).unwrap();
        } else {
            file.write_all_at(&data, off).unwrap();
        }
    }
    start.elapsed().as_nanos() as f64 / iters as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let iters: u64 = if bench {
        std::env::var("KVMKIT_BENCH_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000)
    } else {
        200
    };
    let rounds = if bench { 7 } else { 1 };
    let tmp = TempFile::new().unwrap();
    let file = tmp.as_file();
    file.set_len(FILE_BYTES).unwrap();
    // Fill the page cache so both sides see the same warm file.
    let chunk = vec![0x11u8; 1 << 20];
    for off in (0..FILE_BYTES).step_by(1 << 20) {
        file.write_all_at(&chunk, off).unwrap();
    }

    let efd = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let (mut with_efd, mock_efd) = setup(file, efd.clone());
    let (mut with_count, mock_count) = setup(file, Arc::new(Count::default()));

    let (mut raw, mut dev_efd, mut dev_count) = (vec![], vec![], vec![]);
    for _ in 0..rounds {
        raw.push(raw_round(file, iters));
        dev_efd.push(device_round(&mut with_efd, &mock_efd, iters));
        let _ = efd.read();
        dev_count.push(device_round(&mut with_count, &mock_count, iters));
    }
    let raw = median(&mut raw);
    let dev_efd = median(&mut dev_efd);
    let dev_count = median(&mut dev_count);
    println!("virtio-blk 4 KiB requests, {iters} per round, {rounds} rounds, medians:");
    println!("  raw pread/pwrite                     {raw:8.0} ns/request");
    println!(
        "  device, completion via EventFd write {dev_efd:8.0} ns/request  ratio {:.2}x",
        dev_efd / raw
    );
    println!(
        "  device, completion via counter       {dev_count:8.0} ns/request  ratio {:.2}x",
        dev_count / raw
    );
}
