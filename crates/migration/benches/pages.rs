//! The cost of guest memory on the stream, through the public entry points
//! the VMM uses: `migrate` of a guest that dirties nothing (round 0 sends
//! all RAM), `receive` of that stream on a fresh destination, and
//! `save_snapshot`, for a guest whose RAM is mostly never touched — an idle
//! guest — and one with 16 MiB of data scattered over it.
//!
//! Each case runs twice in the same run: with the zero-page probe
//! (never-touched anonymous pages are known zero from `/proc/self/pagemap`)
//! and with it off (`KVMKIT_MIGRATION_ZERO_PROBE=0`: every page is read, the
//! behaviour before the probe), and prints the ratio probe / read-all. Each
//! repetition uses fresh memory, since reading untouched memory maps it.
//!
//! `cargo bench -p kvmkit-migration --bench pages` runs 1 GiB,
//! `KVMKIT_MIGRATION_BENCH_REPS` repetitions (default 5, median reported);
//! without `--bench` (as `cargo test --all-targets` runs it) one repetition
//! of 64 MiB, as a smoke test.

use kvmkit_migration::{
    migrate, receive, save_snapshot, BoxError, FrameWriter, MigrationDestination, MigrationSource,
    Policy, Progress, RamRange, Tag, PAGE_SIZE,
};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const PROBE_ENV: &str = "KVMKIT_MIGRATION_ZERO_PROBE";
const REPS_ENV: &str = "KVMKIT_MIGRATION_BENCH_REPS";

type Mem = GuestMemoryMmap<()>;

/// Fresh guest memory of `bytes` with `data_pages` pages written, spread
/// evenly (like a guest's scattered allocations).
fn guest(bytes: u64, data_pages: u64) -> Mem {
    let len = usize::try_from(bytes).expect("fits usize");
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), len)]).expect("mmap");
    let pages = bytes / PAGE_SIZE;
    for i in 0..data_pages {
        let gpa = (i * pages / data_pages.max(1)) * PAGE_SIZE;
        mem.write_obj(i + 1, GuestAddress(gpa)).expect("write");
    }
    mem
}

/// A source whose guest does not run: nothing is dirtied, so the migration
/// is round 0 (all RAM) and an empty paused round.
struct Source(Mem, u64);

impl MigrationSource for Source {
    type Memory = Mem;
    fn memory(&self) -> &Mem {
        &self.0
    }
    fn ram(&self) -> Vec<RamRange> {
        vec![RamRange::new(0, self.1)]
    }
    fn profile(&mut self) -> Result<Value, BoxError> {
        Ok(json!({}))
    }
    fn start_dirty_log(&mut self) -> Result<(), BoxError> {
        Ok(())
    }
    fn harvest(&mut self) -> Result<Vec<RamRange>, BoxError> {
        Ok(Vec::new())
    }
    fn stop_dirty_log(&mut self) {}
    fn pause(&mut self) -> Result<(), BoxError> {
        Ok(())
    }
    fn resume(&mut self) -> Result<(), BoxError> {
        Ok(())
    }
    fn state(&mut self) -> Result<Value, BoxError> {
        Ok(json!({}))
    }
}

struct Dest(Mem, u64);

impl MigrationDestination for Dest {
    type Memory = Mem;
    fn memory(&self) -> &Mem {
        &self.0
    }
    fn ram(&self) -> Vec<RamRange> {
        vec![RamRange::new(0, self.1)]
    }
    fn check_profile(&mut self, _: &Value) -> Result<(), BoxError> {
        Ok(())
    }
    fn restore(&mut self, _: &Value) -> Result<(), BoxError> {
        Ok(())
    }
}

fn set_probe(on: bool) {
    if on {
        std::env::remove_var(PROBE_ENV);
    } else {
        std::env::set_var(PROBE_ENV, "0");
    }
}

/// One repetition: (send — `migrate` into memory —, receive that stream on
/// a fresh destination, save a snapshot), each on its own fresh memory.
fn rep(bytes: u64, data_pages: u64, dir: &std::path::Path) -> [Duration; 3] {
    // The destination's answer, ready for the source to read.
    let mut ack = FrameWriter::new(Vec::new()).expect("header");
    ack.frame(Tag::Ack, &[]).expect("ack");
    let ack = ack.into_inner();

    let mut src = Source(guest(bytes, data_pages), bytes);
    let progress = Progress::default();
    let mut stream = Vec::new();
    let t = Instant::now();
    migrate(
        &mut src,
        &ack[..],
        &mut stream,
        &Policy::default(),
        &progress,
        &AtomicBool::new(false),
    )
    .expect("migrate");
    let send = t.elapsed();
    assert_eq!(progress.normal_pages.load(Ordering::Relaxed), data_pages);
    drop(src);

    let mut dst = Dest(guest(bytes, 0), bytes);
    let t = Instant::now();
    let got = receive(&mut dst, &stream[..], std::io::sink()).expect("receive");
    let apply = t.elapsed();
    assert_eq!(got.pages, bytes / PAGE_SIZE);
    drop(dst);

    // A fresh directory: replacing a snapshot unlinks the old memory file
    // inside the rename, which costs the file system's time, not ours.
    let _ = std::fs::remove_dir_all(dir);
    let src = guest(bytes, data_pages);
    let t = Instant::now();
    let j = json!({});
    let s = save_snapshot(dir, &src, &[RamRange::new(0, bytes)], &j, &j).expect("snapshot");
    let save = t.elapsed();
    assert_eq!(s.data_pages, data_pages);
    [send, apply, save]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (bytes, reps) = if bench {
        let reps = std::env::var(REPS_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(5);
        (1u64 << 30, reps)
    } else {
        (64u64 << 20, 1)
    };
    let dir = std::env::temp_dir().join(format!("kvmkit-pages-bench-{}", std::process::id()));
    println!(
        "guest memory on the stream: {} MiB, {reps} repetitions (median ms)",
        bytes >> 20
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "case", "migrate", "receive", "snapshot"
    );
    for data_mib in [0u64, 16] {
        let data_pages = (data_mib << 20) / PAGE_SIZE;
        let mut medians = Vec::new();
        for on in [false, true] {
            set_probe(on);
            let runs: Vec<[Duration; 3]> =
                (0..reps).map(|_| rep(bytes, data_pages, &dir)).collect();
            let m: Vec<Duration> = (0..3)
                .map(|i| median(runs.iter().map(|r| r[i]).collect()))
                .collect();
            println!(
                "{:<28} {:>10.1} {:>10.1} {:>10.1}",
                format!(
                    "{data_mib} MiB data, {}",
                    if on { "probe" } else { "read all" }
                ),
                ms(m[0]),
                ms(m[1]),
                ms(m[2])
            );
            medians.push(m);
        }
        println!(
            "{:<28} {:>10.3} {:>10.3} {:>10.3}",
            "  ratio probe / read all",
            ms(medians[1][0]) / ms(medians[0][0]),
            ms(medians[1][1]) / ms(medians[0][1]),
            ms(medians[1][2]) / ms(medians[0][2])
        );
    }
    set_probe(true);
    let _ = std::fs::remove_dir_all(&dir);
}
