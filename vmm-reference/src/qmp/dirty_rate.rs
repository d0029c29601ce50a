//! `calc-dirty-rate` / `query-dirty-rate`: how fast the guest dirties its
//! memory, measured on a background thread.
//!
//! `page-sampling` (the default) needs only guest memory: it hashes
//! `sample-pages` random pages per GiB of each RAM region, waits
//! `calc-time`, hashes them again and extrapolates the share that changed
//! to the whole RAM, in MB/s, as QEMU does. `dirty-bitmap` and
//! `dirty-ring` count the pages in KVM's dirty log through
//! [`Machine::start_dirty_count`].

use super::args::QapiEnum;
use super::machine::{DirtyCount, DirtyPageCounter, DirtyRateMode, Machine};
use super::protocol::QmpError;
use serde_json::{json, Map, Value};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

/// Sampled pages per GiB when `sample-pages` is not given.
pub const DEFAULT_SAMPLE_PAGES: i64 = 512;
/// The fewest sampled pages per GiB accepted.
pub const MIN_SAMPLE_PAGES: i64 = 128;
/// The most sampled pages per GiB accepted (1/16 of the pages).
pub const MAX_SAMPLE_PAGES: i64 = 16384;
/// The shortest measurement, in milliseconds.
pub const MIN_CALC_TIME_MS: i64 = 50;
/// The longest measurement, in milliseconds.
pub const MAX_CALC_TIME_MS: i64 = 60_000;

const PAGE: usize = 4096;

/// QAPI `TimeUnit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    /// Seconds.
    Second,
    /// Milliseconds.
    Millisecond,
}

impl QapiEnum for TimeUnit {
    const VALUES: &'static [(&'static str, Self)] = &[
        ("second", TimeUnit::Second),
        ("millisecond", TimeUnit::Millisecond),
    ];

    fn name(self) -> &'static str {
        match self {
            TimeUnit::Second => "second",
            TimeUnit::Millisecond => "millisecond",
        }
    }
}

/// QAPI `DirtyRateStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirtyRateStatus {
    /// No measurement was started.
    Unstarted,
    /// A measurement is running.
    Measuring,
    /// The last measurement finished.
    Measured,
}

impl DirtyRateStatus {
    fn name(self) -> &'static str {
        match self {
            DirtyRateStatus::Unstarted => "unstarted",
            DirtyRateStatus::Measuring => "measuring",
            DirtyRateStatus::Measured => "measured",
        }
    }
}

#[derive(Debug, Clone)]
struct Stat {
    status: DirtyRateStatus,
    /// Seconds of the host's monotonic clock when the measurement began.
    start_time: i64,
    /// The requested, then the actual, measurement time.
    calc_time_ms: i64,
    sample_pages: u64,
    mode: DirtyRateMode,
    /// MB/s, -1 when the measurement could not be made.
    dirty_rate: i64,
    per_vcpu: Option<Vec<i64>>,
    /// The first look at memory is done (page sampling: the hashes).
    baseline_taken: bool,
}

#[derive(Debug, Default)]
struct Cancel {
    cancelled: Mutex<bool>,
    cv: Condvar,
}

impl Cancel {
    /// Waits `d`; false if cancelled meanwhile.
    fn wait(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut c = self.cancelled.lock().unwrap_or_else(|e| e.into_inner());
        while !*c {
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            c = self
                .cv
                .wait_timeout(c, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        false
    }

    fn cancel(&self) {
        *self.cancelled.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }
}

#[derive(Debug)]
struct Shared {
    stat: Mutex<Stat>,
    /// Signalled when a measurement ends.
    measured: Condvar,
    cancel: Cancel,
}

/// The dirty-rate measurement of one VM: at most one runs at a time.
#[derive(Debug)]
pub struct DirtyRate {
    shared: Arc<Shared>,
}

impl Default for DirtyRate {
    fn default() -> Self {
        DirtyRate::new()
    }
}

impl Drop for DirtyRate {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

/// What `calc-dirty-rate` asked for (already type-checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CalcRequest {
    /// `calc-time`.
    pub calc_time: i64,
    /// `calc-time-unit` (default seconds).
    pub unit: Option<TimeUnit>,
    /// `sample-pages`.
    pub sample_pages: Option<i64>,
    /// `mode` (default page sampling).
    pub mode: Option<DirtyRateMode>,
}

fn to_ms(value: i64, unit: TimeUnit) -> Option<i64> {
    match unit {
        TimeUnit::Second => value.checked_mul(1000),
        TimeUnit::Millisecond => Some(value),
    }
}

fn from_ms(ms: i64, unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => ms / 1000,
        TimeUnit::Millisecond => ms,
    }
}

/// Seconds of the host's monotonic clock (QEMU's `QEMU_CLOCK_REALTIME`).
fn monotonic_seconds() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC exists
    // on every Linux; the call writes only `ts`.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if r == 0 {
        ts.tv_sec
    } else {
        0
    }
}

impl DirtyRate {
    /// Nothing measured yet.
    pub fn new() -> Self {
        DirtyRate {
            shared: Arc::new(Shared {
                stat: Mutex::new(Stat {
                    status: DirtyRateStatus::Unstarted,
                    start_time: 0,
                    calc_time_ms: 0,
                    sample_pages: 0,
                    mode: DirtyRateMode::PageSampling,
                    dirty_rate: -1,
                    per_vcpu: None,
                    baseline_taken: false,
                }),
                measured: Condvar::new(),
                cancel: Cancel::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Stat> {
        self.shared.stat.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a measurement (`calc-dirty-rate`), after QEMU's checks in
    /// QEMU's order; returns at once.
    pub fn start(&self, machine: &dyn Machine, req: CalcRequest) -> Result<(), QmpError> {
        let mut stat = self.lock();
        if stat.status == DirtyRateStatus::Measuring {
            return Err(QmpError::generic(
                "the dirty rate is already being measured.",
            ));
        }
        let calc_ms = to_ms(req.calc_time, req.unit.unwrap_or(TimeUnit::Second))
            .filter(|ms| (MIN_CALC_TIME_MS..=MAX_CALC_TIME_MS).contains(ms))
            .ok_or_else(|| {
                QmpError::generic(format!(
                    "Calculation time is out of range [{MIN_CALC_TIME_MS}ms, {MAX_CALC_TIME_MS}ms]."
                ))
            })?;
        let mode = req.mode.unwrap_or(DirtyRateMode::PageSampling);
        if req.sample_pages.is_some() && mode != DirtyRateMode::PageSampling {
            return Err(QmpError::generic(
                "sample-pages is used only in page-sampling mode",
            ));
        }
        let sample_pages = req.sample_pages.unwrap_or(DEFAULT_SAMPLE_PAGES);
        if !(MIN_SAMPLE_PAGES..=MAX_SAMPLE_PAGES).contains(&sample_pages) {
            return Err(QmpError::generic(format!(
                "sample-pages is out of range[{MIN_SAMPLE_PAGES}, {MAX_SAMPLE_PAGES}]."
            )));
        }
        let sample_pages = sample_pages.unsigned_abs();
        let work = match mode {
            DirtyRateMode::PageSampling => Work::Sample(machine.guest_memory()),
            m => Work::Count(
                machine
                    .start_dirty_count(m)
                    .map_err(|e| QmpError::generic(e.0))?,
            ),
        };
        *stat = Stat {
            status: DirtyRateStatus::Measuring,
            start_time: monotonic_seconds(),
            calc_time_ms: calc_ms,
            sample_pages,
            mode,
            dirty_rate: -1,
            per_vcpu: None,
            baseline_taken: false,
        };
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("qmp dirty rate".into())
            .spawn(move || measure(&shared, work, calc_ms, sample_pages));
        if let Err(e) = spawned {
            stat.status = DirtyRateStatus::Unstarted;
            return Err(QmpError::generic(format!(
                "cannot start the dirty rate measurement: {e}"
            )));
        }
        Ok(())
    }

    /// The state of the last measurement (`query-dirty-rate`), with times
    /// in `unit`, as QEMU's `DirtyRateInfo`.
    pub fn query(&self, unit: TimeUnit) -> Value {
        let stat = self.lock().clone();
        let mut m = Map::new();
        m.insert("status".into(), json!(stat.status.name()));
        m.insert("start-time".into(), json!(stat.start_time));
        m.insert("calc-time".into(), json!(from_ms(stat.calc_time_ms, unit)));
        m.insert("calc-time-unit".into(), json!(unit.name()));
        let mut sample_pages = stat.sample_pages;
        if stat.status == DirtyRateStatus::Measured {
            m.insert("dirty-rate".into(), json!(stat.dirty_rate));
            if stat.mode != DirtyRateMode::PageSampling {
                // QEMU reports 0: page sampling was not used.
                sample_pages = 0;
            }
            if let Some(rates) = &stat.per_vcpu {
                let list: Vec<Value> = rates
                    .iter()
                    .enumerate()
                    .map(|(id, r)| json!({ "id": id, "dirty-rate": r }))
                    .collect();
                m.insert("vcpu-dirty-rate".into(), Value::Array(list));
            }
        }
        m.insert("sample-pages".into(), json!(sample_pages));
        m.insert("mode".into(), json!(stat.mode.name()));
        Value::Object(m)
    }

    /// The current status.
    pub fn status(&self) -> DirtyRateStatus {
        self.lock().status
    }

    /// Waits until no measurement is running, at most `timeout`; returns
    /// whether none is.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| s.status != DirtyRateStatus::Measuring)
    }

    /// Waits until the running measurement took its first look at memory.
    #[cfg(test)]
    fn wait_baseline(&self, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| s.baseline_taken)
    }

    fn wait_for(&self, timeout: Duration, done: impl Fn(&Stat) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut stat = self.lock();
        while !done(&stat) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            stat = self
                .shared
                .measured
                .wait_timeout(stat, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

enum Work {
    Sample(Arc<GuestMemoryMmap>),
    Count(Box<dyn DirtyPageCounter>),
}

/// The measurement thread.
fn measure(shared: &Shared, work: Work, calc_ms: i64, sample_pages: u64) {
    let t0 = Instant::now();
    let wait = Duration::from_millis(calc_ms.unsigned_abs());
    let (rate, per_vcpu, elapsed_ms) = match work {
        Work::Sample(mem) => {
            let mut rng = Rng::seeded();
            let samples = sample_pages_of(&mem, sample_pages, &mut rng);
            shared
                .stat
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .baseline_taken = true;
            shared.measured.notify_all();
            let finished = shared.cancel.wait(wait);
            let ms = elapsed_ms(t0, calc_ms);
            let rate = if finished {
                sampled_rate(&mem, &samples, ms)
            } else {
                -1
            };
            (rate, None, ms)
        }
        Work::Count(counter) => {
            shared.cancel.wait(wait);
            let ms = elapsed_ms(t0, calc_ms);
            match counter.finish() {
                Ok(DirtyCount { pages, per_vcpu }) => (
                    counted_rate(pages, ms),
                    per_vcpu.map(|v| v.into_iter().map(|p| counted_rate(p, ms)).collect()),
                    ms,
                ),
                Err(_) => (-1, None, ms),
            }
        }
    };
    let mut stat = shared.stat.lock().unwrap_or_else(|e| e.into_inner());
    stat.dirty_rate = rate;
    stat.per_vcpu = per_vcpu;
    stat.calc_time_ms = elapsed_ms;
    stat.status = DirtyRateStatus::Measured;
    drop(stat);
    shared.measured.notify_all();
}

/// The measurement's length in ms: as asked, or longer if hashing took
/// longer (QEMU's `dirty_stat_wait`).
fn elapsed_ms(t0: Instant, asked: i64) -> i64 {
    i64::try_from(t0.elapsed().as_millis())
        .unwrap_or(i64::MAX)
        .max(asked)
}

/// A small xorshift generator: sample positions need no cryptography.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Fold the 128-bit count into 64 bits; truncation is the point.
        #[allow(clippy::cast_possible_truncation)]
        let folded = (nanos as u64) ^ ((nanos >> 64) as u64);
        Rng((folded ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The pages sampled in one RAM region and their hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RegionSample {
    base: GuestAddress,
    len: u64,
    pages: Vec<(u64, u64)>,
}

/// A 64-bit hash of a page (collisions only make a changed page look
/// clean, one time in 2^64).
fn page_hash(page: &[u8; PAGE]) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in page.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(w))
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(29);
    }
    h ^ (h >> 31)
}

fn hash_at(mem: &GuestMemoryMmap, addr: GuestAddress) -> Option<u64> {
    let mut page = [0u8; PAGE];
    mem.read_slice(&mut page, addr).ok()?;
    Some(page_hash(&page))
}

/// Picks `per_gib` random pages per GiB of every region (regions too small
/// for one sample are skipped) and hashes them.
fn sample_pages_of(mem: &GuestMemoryMmap, per_gib: u64, rng: &mut Rng) -> Vec<RegionSample> {
    let mut out = Vec::new();
    for region in mem.iter() {
        let len = region.len();
        let count = len.saturating_mul(per_gib) >> 30;
        let pages_in_region = len / PAGE as u64;
        if count == 0 || pages_in_region == 0 {
            continue;
        }
        let base = region.start_addr();
        let mut pages = Vec::new();
        for _ in 0..count {
            let offset = (rng.next() % pages_in_region) * PAGE as u64;
            if let Some(h) = hash_at(mem, base.unchecked_add(offset)) {
                pages.push((offset, h));
            }
        }
        out.push(RegionSample { base, len, pages });
    }
    out
}

/// Re-hashes the samples: (changed, sampled, MB of RAM sampled).
fn count_changed(mem: &GuestMemoryMmap, samples: &[RegionSample]) -> (u64, u64, u64) {
    let mut changed = 0;
    let mut total = 0;
    let mut mb = 0;
    for s in samples {
        for &(offset, h) in &s.pages {
            total += 1;
            if hash_at(mem, s.base.unchecked_add(offset)) != Some(h) {
                changed += 1;
            }
        }
        mb += s.len >> 20;
    }
    (changed, total, mb)
}

/// QEMU's page-sampling formula: the changed share of the samples times
/// the RAM size in MB, per second; -1 without samples.
fn rate_from_samples(changed: u64, total: u64, mb: u64, ms: i64) -> i64 {
    let ms = ms.unsigned_abs().max(1);
    if total == 0 {
        return -1;
    }
    let r = u128::from(changed) * u128::from(mb) * 1000 / (u128::from(total) * u128::from(ms));
    i64::try_from(r).unwrap_or(i64::MAX)
}

fn sampled_rate(mem: &GuestMemoryMmap, samples: &[RegionSample], ms: i64) -> i64 {
    let (changed, total, mb) = count_changed(mem, samples);
    rate_from_samples(changed, total, mb, ms)
}

/// QEMU's dirty-log formula: whole MB dirtied, per second.
fn counted_rate(pages: u64, ms: i64) -> i64 {
    let mb = (u128::from(pages) * PAGE as u128) >> 20;
    let r = mb * 1000 / u128::from(ms.unsigned_abs().max(1));
    i64::try_from(r).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qmp::machine::{MachineError, RunState, VcpuInfo};

    fn memory(mib: usize) -> Arc<GuestMemoryMmap> {
        Arc::new(
            GuestMemoryMmap::from_ranges(&[
                (GuestAddress(0), 0x1000),
                (GuestAddress(1 << 20), (mib << 20) - (1 << 20)),
            ])
            .unwrap(),
        )
    }

    #[test]
    fn samples_see_changed_pages() {
        let mem = memory(64);
        let mut rng = Rng::seeded();
        let samples = sample_pages_of(&mem, 4096, &mut rng);
        // The one-page region gets no sample; 63 MiB at 4096/GiB get 252.
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].pages.len(), (63 * 4096) >> 10);
        assert_eq!(count_changed(&mem, &samples), (0, 252, 63));
        // Dirty every sampled page but one.
        let s = &samples[0];
        for &(offset, _) in &s.pages[1..] {
            mem.write_obj(0xdead_beefu64 ^ offset, s.base.unchecked_add(offset + 8))
                .unwrap();
        }
        let (changed, total, mb) = count_changed(&mem, &samples);
        let first = s.pages[0].0;
        let dup = s.pages[1..].iter().any(|p| p.0 == first);
        assert_eq!(changed, if dup { 252 } else { 251 });
        assert_eq!((total, mb), (252, 63));
    }

    #[test]
    fn formulas_match_qemu() {
        // Half the samples of 1024 MB changed in 1 s: 512 MB/s.
        assert_eq!(rate_from_samples(256, 512, 1024, 1000), 512);
        assert_eq!(rate_from_samples(256, 512, 1024, 500), 1024);
        assert_eq!(rate_from_samples(0, 512, 1024, 1000), 0);
        assert_eq!(rate_from_samples(1, 0, 1024, 1000), -1);
        // 2560 pages = 10 MB in 500 ms: 20 MB/s; partial MBs round down.
        assert_eq!(counted_rate(2560, 500), 20);
        assert_eq!(counted_rate(255, 1000), 0);
        assert_eq!(to_ms(2, TimeUnit::Second), Some(2000));
        assert_eq!(to_ms(i64::MAX, TimeUnit::Second), None);
        assert_eq!(from_ms(1999, TimeUnit::Second), 1);
        assert_eq!(from_ms(1999, TimeUnit::Millisecond), 1999);
        assert_eq!(
            TimeUnit::from_name("millisecond"),
            Some(TimeUnit::Millisecond)
        );
        assert_eq!(TimeUnit::Second.name(), "second");
        assert!(monotonic_seconds() > 0);
    }

    #[test]
    fn hash_differs_for_a_changed_word() {
        let mut p = [0u8; PAGE];
        let h0 = page_hash(&p);
        p[PAGE - 1] = 1;
        assert_ne!(h0, page_hash(&p));
        let mut r = Rng(1);
        assert_ne!(r.next(), r.next());
    }

    /// A machine whose memory a test dirties, with a scripted counter.
    struct Mock {
        mem: Arc<GuestMemoryMmap>,
        count: Option<DirtyCount>,
    }

    struct Counter(Option<DirtyCount>);
    impl DirtyPageCounter for Counter {
        fn finish(self: Box<Self>) -> Result<DirtyCount, MachineError> {
            self.0.ok_or_else(|| MachineError("harvest failed".into()))
        }
    }

    impl Machine for Mock {
        fn run_state(&self) -> RunState {
            RunState::Running
        }
        fn stop(&self) -> Result<(), MachineError> {
            Ok(())
        }
        fn cont(&self) -> Result<(), MachineError> {
            Ok(())
        }
        fn power_button(&self) -> Result<(), MachineError> {
            Ok(())
        }
        fn quit(&self) {}
        fn vcpus(&self) -> Vec<VcpuInfo> {
            Vec::new()
        }
        fn target(&self) -> &'static str {
            "x86_64"
        }
        fn guest_memory(&self) -> Arc<GuestMemoryMmap> {
            self.mem.clone()
        }
        fn start_dirty_count(
            &self,
            mode: DirtyRateMode,
        ) -> Result<Box<dyn DirtyPageCounter>, MachineError> {
            if mode == DirtyRateMode::DirtyBitmap {
                return Err(MachineError(
                    "mode dirty-bitmap is not available in this build".into(),
                ));
            }
            Ok(Box::new(Counter(self.count.clone())))
        }
    }

    fn req(calc_time: i64) -> CalcRequest {
        CalcRequest {
            calc_time,
            unit: Some(TimeUnit::Millisecond),
            sample_pages: None,
            mode: None,
        }
    }

    #[test]
    fn validation_follows_qemu() {
        let m = Mock {
            mem: memory(16),
            count: None,
        };
        let d = DirtyRate::new();
        let q = d.query(TimeUnit::Second);
        assert_eq!(
            q,
            json!({"status": "unstarted", "start-time": 0, "calc-time": 0,
                   "calc-time-unit": "second", "sample-pages": 0, "mode": "page-sampling"})
        );
        let err = |r: CalcRequest| d.start(&m, r).unwrap_err().desc;
        assert_eq!(
            err(req(49)),
            "Calculation time is out of range [50ms, 60000ms]."
        );
        assert_eq!(
            err(CalcRequest {
                unit: None,
                ..req(61)
            }),
            "Calculation time is out of range [50ms, 60000ms]."
        );
        assert_eq!(
            err(CalcRequest {
                sample_pages: Some(512),
                mode: Some(DirtyRateMode::DirtyRing),
                ..req(100)
            }),
            "sample-pages is used only in page-sampling mode"
        );
        assert_eq!(
            err(CalcRequest {
                sample_pages: Some(127),
                ..req(100)
            }),
            "sample-pages is out of range[128, 16384]."
        );
        assert_eq!(
            err(CalcRequest {
                mode: Some(DirtyRateMode::DirtyBitmap),
                ..req(100)
            }),
            "mode dirty-bitmap is not available in this build"
        );
        assert_eq!(d.status(), DirtyRateStatus::Unstarted, "nothing changed");
    }

    #[test]
    fn page_sampling_measures_changed_pages() {
        let m = Mock {
            mem: memory(16),
            count: None,
        };
        let d = DirtyRate::new();
        d.start(
            &m,
            CalcRequest {
                sample_pages: Some(16384),
                ..req(300)
            },
        )
        .unwrap();
        // Dirty all of RAM once the first hashes are taken.
        assert!(d.wait_baseline(Duration::from_secs(60)));
        let big = vec![0x5au8; 15 << 20];
        m.mem.write_slice(&big, GuestAddress(1 << 20)).unwrap();
        assert!(d.wait_idle(Duration::from_secs(60)));
        let q = d.query(TimeUnit::Millisecond);
        assert_eq!(q["status"], "measured");
        assert_eq!(q["sample-pages"], 16384);
        assert_eq!(q["mode"], "page-sampling");
        let ms = q["calc-time"].as_i64().unwrap();
        assert!(ms >= 300, "at least the time asked: {ms}");
        // Every sampled page changed: all 15 MB sampled, per second.
        assert_eq!(q["dirty-rate"].as_i64().unwrap(), 15 * 1000 / ms);
        assert!(q.get("vcpu-dirty-rate").is_none());
        // A second measurement of an idle guest: nothing changed.
        d.start(&m, req(50)).unwrap();
        assert!(d.wait_idle(Duration::from_secs(60)));
        assert_eq!(d.query(TimeUnit::Second)["dirty-rate"], 0);
    }

    #[test]
    fn a_second_start_is_refused_while_measuring() {
        let m = Mock {
            mem: memory(16),
            count: None,
        };
        let d = DirtyRate::new();
        // The longest measurement cannot end during the test.
        d.start(&m, req(60_000)).unwrap();
        let q = d.query(TimeUnit::Second);
        assert_eq!(q["status"], "measuring");
        assert_eq!(q["calc-time"], 60);
        assert!(q.get("dirty-rate").is_none());
        assert_eq!(
            d.start(&m, req(100)).unwrap_err().desc,
            "the dirty rate is already being measured."
        );
        assert_eq!(d.status(), DirtyRateStatus::Measuring);
    }

    #[test]
    fn dirty_ring_counts_come_from_the_machine() {
        let m = Mock {
            mem: memory(16),
            count: Some(DirtyCount {
                pages: 1 << 20,
                per_vcpu: Some(vec![1 << 19, 0]),
            }),
        };
        let d = DirtyRate::new();
        d.start(
            &m,
            CalcRequest {
                mode: Some(DirtyRateMode::DirtyRing),
                ..req(50)
            },
        )
        .unwrap();
        assert!(d.wait_idle(Duration::from_secs(60)));
        let q = d.query(TimeUnit::Millisecond);
        let ms = q["calc-time"].as_i64().unwrap();
        assert_eq!(q["dirty-rate"], 4096 * 1000 / ms);
        assert_eq!(q["sample-pages"], 0);
        assert_eq!(q["mode"], "dirty-ring");
        assert_eq!(q["vcpu-dirty-rate"][0]["id"], 0);
        assert_eq!(q["vcpu-dirty-rate"][0]["dirty-rate"], 2048 * 1000 / ms);
        assert_eq!(q["vcpu-dirty-rate"][1]["dirty-rate"], 0);
        // A failed harvest measures -1.
        let m = Mock {
            mem: memory(16),
            count: None,
        };
        d.start(
            &m,
            CalcRequest {
                mode: Some(DirtyRateMode::DirtyRing),
                ..req(50)
            },
        )
        .unwrap();
        assert!(d.wait_idle(Duration::from_secs(60)));
        assert_eq!(d.query(TimeUnit::Second)["dirty-rate"], -1);
    }

    #[test]
    fn dropping_cancels_a_running_measurement() {
        let m = Mock {
            mem: memory(16),
            count: None,
        };
        let d = DirtyRate::new();
        d.start(&m, req(60_000)).unwrap();
        let shared = d.shared.clone();
        drop(d);
        let d = DirtyRate { shared };
        assert!(d.wait_idle(Duration::from_secs(60)), "ended early");
        assert_eq!(d.query(TimeUnit::Second)["dirty-rate"], -1);
    }
}
