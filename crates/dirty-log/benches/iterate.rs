//! Coalesced-range iteration vs a naive bit-by-bit scan.
//!
//! `cargo bench -p kvmkit-dirty-log` runs 1, 4 and 16 GiB at 0.1%, 1% and 25% dirty;
//! without `--bench` only the 1 GiB cases run once, as a smoke test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use kvmkit_dirty_log::DirtyBitmap;

const GIB_PAGES: usize = 1 << 18;

/// A tiny xorshift64 so the bench needs no extra crates.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn bitmap(pages: usize, permille: usize, rng: &mut XorShift) -> DirtyBitmap {
    let mut bm = DirtyBitmap::new(pages);
    let target = pages * permille / 1000;
    while bm.count() < target {
        for _ in 0..(target - bm.count()) {
            let page = usize::try_from(rng.next() % pages as u64).expect("page < pages");
            bm.set(page);
        }
    }
    bm
}

/// Sum of `(first, count)` so the work cannot be optimised away.
fn word_wise(bm: &DirtyBitmap) -> (usize, usize) {
    bm.ranges()
        .fold((0, 0), |(n, pages), (_, count)| (n + 1, pages + count))
}

fn naive(bm: &DirtyBitmap) -> (usize, usize) {
    let (mut n, mut pages, mut in_run) = (0, 0, false);
    for p in 0..bm.pages() {
        if bm.is_dirty(p) {
            if !in_run {
                n += 1;
                in_run = true;
            }
            pages += 1;
        } else {
            in_run = false;
        }
    }
    (n, pages)
}

fn best_of(reps: usize, f: impl Fn() -> (usize, usize)) -> (Duration, (usize, usize)) {
    let mut best = Duration::MAX;
    let mut out = (0, 0);
    for _ in 0..reps {
        let t = Instant::now();
        out = black_box(f());
        best = best.min(t.elapsed());
    }
    (best, out)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (sizes, reps): (&[usize], usize) = if bench { (&[1, 4, 16], 20) } else { (&[1], 1) };
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    println!(
        "{:>6} {:>6} {:>9} {:>14} {:>14} {:>8}",
        "GiB", "dirty", "ranges", "ranges ns", "naive ns", "ratio"
    );
    for &gib in sizes {
        for (permille, label) in [(1, "0.1%"), (10, "1%"), (250, "25%")] {
            let bm = bitmap(gib * GIB_PAGES, permille, &mut rng);
            let (fast, a) = best_of(reps, || word_wise(black_box(&bm)));
            let (slow, b) = best_of(reps, || naive(black_box(&bm)));
            assert_eq!(a, b, "word-wise and naive disagree");
            let ratio = slow.as_secs_f64() / fast.as_secs_f64().max(1e-9);
            println!(
                "{gib:>6} {label:>6} {:>9} {:>14} {:>14} {ratio:>7.1}x",
                a.0,
                fast.as_nanos(),
                slow.as_nanos()
            );
        }
    }
}
