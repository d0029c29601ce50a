//! Harvest-and-iterate cost of each dirty-log backend on real KVM, against a
//! baseline measured in the same run: the bare `KVM_GET_DIRTY_LOG` ioctl plus
//! a naive bit-by-bit scan of its bitmap.
//!
//! For 1, 4 and 16 GiB of guest memory (one slot at 4 GiB) and 0.1%, 1% and
//! 25% of its pages dirty, a long-mode guest writes one byte every 1000, 100
//! or 4 pages (only guest writes set KVM's dirty bits), then the host times
//! `harvest()` + `take()` + a walk of `ranges()`. Each backend runs in a VM
//! of its own; the baseline runs in the get-dirty-log VM, on dirtying rounds
//! of its own. Medians of `REPS` rounds.
//!
//! The dirty ring is harvested while the guest dirties: this host's KVM
//! (PVM) lets emulated guest writes run past the ring's soft limit, and an
//! overfilled ring loses entries, so the guest writes at most half a ring
//! between two ring harvests, and the ring's time is the sum of all of them.
//!
//! Also measured: turning logging on (`KVM_SET_USER_MEMORY_REGION` with
//! `KVM_MEM_LOG_DIRTY_PAGES`; manual protect with INITIALLY_SET) on a fresh
//! slot and on one with 25% of its pages mapped, the first harvest after
//! that, and the manual-protect clear chunk size.
//!
//! `cargo bench -p kvmkit-dirty-log --bench harvest` prints the full tables;
//! `KVMKIT_BENCH_QUICK=1` runs 1 GiB only. Without `--bench` (under
//! `cargo test --benches`) it runs a 64 MiB smoke test.

#![allow(clippy::cast_possible_truncation)] // page counts of a 64-bit host

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::Machine;
use kvmkit_arch_x86_64::X86_64;
use kvmkit_core::{Kvm, SlotId, Vcpu};
use kvmkit_dirty_log::{DirtyBitmap, Preference, DEFAULT_CLEAR_CHUNK_PAGES};

const GIB: u64 = 1 << 30;
const PAGE: u64 = 0x1000;
/// The data slot starts above the 32-bit hole.
const DATA_GPA: u64 = 4 << 30;
/// Dirty rates as a stride in pages.
const RATES: [(u64, &str); 3] = [(1000, "0.1%"), (100, "1%"), (4, "25%")];
/// The largest ring KVM allows.
const RING_BYTES: u32 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Get,
    Manual,
    Ring,
}

impl Kind {
    fn preference(self) -> Preference {
        match self {
            Kind::Get => Preference::GetLog,
            Kind::Manual => Preference::ManualProtect,
            Kind::Ring => Preference::Ring { bytes: RING_BYTES },
        }
    }
}

/// One backend's medians per rate, and its enable costs.
struct Run {
    name: String,
    /// Per rate: (median time, dirty pages, ranges, ioctls per round).
    cells: Vec<(Duration, u64, u64, u64)>,
    /// Per rate: the baseline's median (get-dirty-log VM only).
    baseline: Vec<Duration>,
    enable_fresh: Duration,
    enable_mapped: Duration,
    first_harvest: Duration,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `(ranges, pages)` of the coalesced runs, word by word.
fn walk(bm: &DirtyBitmap) -> (u64, u64) {
    bm.ranges()
        .fold((0, 0), |(n, p), (_, c)| (n + 1, p + c as u64))
}

/// `(ranges, pages)` of a bitmap, one bit at a time.
fn naive(words: &[u64], pages: usize) -> (u64, u64) {
    let (mut n, mut p, mut run) = (0, 0, false);
    for i in 0..pages {
        if words[i / 64] >> (i % 64) & 1 == 1 {
            n += u64::from(!run);
            p += 1;
            run = true;
        } else {
            run = false;
        }
    }
    (n, p)
}

/// The guest writes `count` pages `stride` pages apart from the slot's
/// start. With a ring, at most half a ring at a time, harvesting the rings
/// in between; returns the time those harvests took.
fn dirty(
    m: &Machine<()>,
    vcpu: &mut Vcpu<X86_64>,
    slot: SlotId,
    stride: u64,
    count: u64,
    value: u8,
) -> Duration {
    let segment = match m.tracker.backend().ring_bytes() {
        Some(bytes) => u64::from(bytes) / 16 / 2,
        None => count,
    };
    let mut spent = Duration::ZERO;
    let mut done = 0;
    while done < count {
        let n = segment.min(count - done);
        let start = m.gpa(slot, 0) + done * stride * PAGE;
        let full = m.write_stride(vcpu, start, stride * PAGE, n, value);
        assert_eq!(full, 0, "a ring filled up");
        done += n;
        if done < count {
            let t = Instant::now();
            m.tracker.harvest_rings().expect("harvest rings");
            spent += t.elapsed();
        }
    }
    spent
}

fn run(kvm: &Kvm<X86_64>, kind: Kind, bytes: u64, reps: usize) -> Run {
    let mut m = Machine::<()>::new(kvm, kind.preference());
    let name = m.tracker.backend().to_string();
    let pages = bytes / PAGE;
    let slot = m.add_slot(DATA_GPA, bytes);
    let t = Instant::now();
    m.tracker
        .enable_logging(&mut m.table, slot)
        .expect("enable");
    let enable_fresh = t.elapsed();
    let mut vcpu = m.long_mode_vcpu();
    m.tracker.harvest().expect("harvest");
    m.tracker.take(slot);
    // First touch of the largest set: the host allocates the pages.
    dirty(&m, &mut vcpu, slot, 4, pages / 4, 0xff);
    m.tracker.harvest().expect("harvest");
    m.tracker.take(slot);
    let mut buf = vec![0u64; (pages as usize).div_ceil(64)];
    let mut cells = Vec::new();
    let mut baseline = Vec::new();
    for (stride, _) in RATES {
        let count = pages / stride;
        let (mut times, mut base) = (Vec::new(), Vec::new());
        let (mut ranges, mut ioctls) = (0, 0);
        for rep in 0..reps {
            let mid = dirty(&m, &mut vcpu, slot, stride, count, rep as u8);
            let t = Instant::now();
            let h = m.tracker.harvest().expect("harvest");
            let bm = m.tracker.take(slot).expect("tracked");
            let (n, p) = walk(black_box(&bm));
            times.push(t.elapsed() + mid);
            assert_eq!(p, count, "{name}: harvested pages");
            assert_eq!(h.ring_overflows, 0);
            (ranges, ioctls) = (n, h.ioctls);
            if kind == Kind::Get {
                dirty(&m, &mut vcpu, slot, stride, count, rep as u8);
                let t = Instant::now();
                m.vm.get_dirty_log(slot, &mut buf)
                    .expect("KVM_GET_DIRTY_LOG");
                let (n, p) = naive(black_box(&buf), pages as usize);
                base.push(t.elapsed());
                assert_eq!((n, p), (ranges, count), "baseline");
            }
        }
        cells.push((median(times), count, ranges, ioctls));
        if kind == Kind::Get {
            baseline.push(median(base));
        }
    }
    // Logging on again, with a quarter of the slot mapped by the guest.
    m.tracker
        .disable_logging(&mut m.table, slot)
        .expect("disable");
    let t = Instant::now();
    m.tracker
        .enable_logging(&mut m.table, slot)
        .expect("enable");
    let enable_mapped = t.elapsed();
    let t = Instant::now();
    m.tracker.harvest().expect("harvest");
    m.tracker.take(slot);
    let first_harvest = t.elapsed();
    Run {
        name,
        cells,
        baseline,
        enable_fresh,
        enable_mapped,
        first_harvest,
    }
}

/// Manual protect at `bytes`, 1% dirty, with different clear chunks:
/// (chunk pages, median harvest time, ioctls per harvest).
fn chunks(kvm: &Kvm<X86_64>, bytes: u64, reps: usize) -> Vec<(usize, Duration, u64)> {
    let pages = bytes / PAGE;
    let mut out = Vec::new();
    for chunk in [4096, 32768, DEFAULT_CLEAR_CHUNK_PAGES, 1 << 21] {
        let mut m = Machine::<()>::with_clear_chunk(kvm, Preference::ManualProtect, chunk);
        let slot = m.add_slot(DATA_GPA, bytes);
        m.tracker
            .enable_logging(&mut m.table, slot)
            .expect("enable");
        let mut vcpu = m.long_mode_vcpu();
        m.tracker.harvest().expect("harvest");
        m.tracker.take(slot);
        let (mut times, mut ioctls) = (Vec::new(), 0);
        for rep in 0..=reps {
            dirty(&m, &mut vcpu, slot, 100, pages / 100, rep as u8);
            let t = Instant::now();
            let h = m.tracker.harvest().expect("harvest");
            let bm = m.tracker.take(slot).expect("tracked");
            black_box(walk(&bm));
            // The first round also maps the pages: not counted.
            if rep > 0 {
                times.push(t.elapsed());
            }
            ioctls = h.ioctls;
        }
        out.push((chunk, median(times), ioctls));
    }
    out
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn size(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{} GiB", bytes / GIB)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let quick = std::env::var("KVMKIT_BENCH_QUICK").as_deref() == Ok("1");
    if !kvmkit_test_support::kvm_available() {
        return;
    }
    let kvm = Kvm::<X86_64>::new().expect("/dev/kvm");
    let (sizes, reps): (Vec<u64>, usize) = match (bench, quick) {
        (false, _) => (vec![64 << 20], 1),
        (true, true) => (vec![GIB], 3),
        (true, false) => (vec![GIB, 4 * GIB, 16 * GIB], 5),
    };
    let t0 = Instant::now();
    println!("harvest + take + ranges() walk, median of {reps} rounds; ratio = baseline / backend");
    println!();
    println!("| guest memory | dirty | pages | ranges | baseline: GET + naive scan | get-dirty-log | manual-protect | dirty-ring |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut enables = Vec::new();
    for &bytes in &sizes {
        let runs: Vec<Run> = [Kind::Get, Kind::Manual, Kind::Ring]
            .into_iter()
            .map(|k| run(&kvm, k, bytes, reps))
            .collect();
        for (i, (_, label)) in RATES.iter().enumerate() {
            let base = runs[0].baseline[i];
            let (_, pages, ranges, _) = runs[0].cells[i];
            let cols: Vec<String> = runs
                .iter()
                .map(|r| {
                    let (t, _, _, ioctls) = r.cells[i];
                    let ratio = base.as_secs_f64() / t.as_secs_f64().max(1e-9);
                    format!("{} ({ratio:.2}x, {ioctls} ioctls)", fmt(t))
                })
                .collect();
            println!(
                "| {} | {label} | {pages} | {ranges} | {} | {} |",
                size(bytes),
                fmt(base),
                cols.join(" | ")
            );
        }
        for r in runs {
            enables.push((
                bytes,
                r.name,
                r.enable_fresh,
                r.enable_mapped,
                r.first_harvest,
            ));
        }
    }
    println!();
    println!("| guest memory | backend | enable logging (fresh slot) | enable logging (25% mapped) | first harvest after that |");
    println!("|---:|---|---:|---:|---:|");
    for (bytes, name, fresh, mapped, first) in enables {
        println!(
            "| {} | {name} | {} | {} | {} |",
            size(bytes),
            fmt(fresh),
            fmt(mapped),
            fmt(first)
        );
    }
    let largest = *sizes.last().expect("at least one size");
    println!();
    println!(
        "manual protect, {} at 1% dirty: KVM_CLEAR_DIRTY_LOG chunk size",
        size(largest)
    );
    println!();
    println!(
        "| chunk (pages) | chunk (guest memory) | ioctls per harvest | harvest + take + walk |"
    );
    println!("|---:|---:|---:|---:|");
    for (chunk, t, ioctls) in chunks(&kvm, largest, reps) {
        println!(
            "| {chunk} | {} | {ioctls} | {} |",
            size(chunk as u64 * PAGE),
            fmt(t)
        );
    }
    println!();
    println!("total bench time {:.1} s", t0.elapsed().as_secs_f64());
}
