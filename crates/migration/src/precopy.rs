//! Pre-copy live migration: copy all RAM while the guest runs, then the pages
//! it dirtied, round after round, until what is left fits the downtime
//! target; then pause, send the rest and the device state, and let the
//! destination resume.

use crate::pages::{apply_pages_probed, send_ranges_probed, RamRange, SendStats, PAGE_SIZE};
use crate::probe::ZeroProbe;
use crate::stream::{from_json, FrameReader, FrameWriter, Tag};
use crate::{BoxError, Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vm_memory::GuestMemory;

/// The VMM side of a migration source.
///
/// Implemented by the VMM over its dirty log, run loop and devices; the
/// engine calls it from the migration thread.
pub trait MigrationSource {
    /// The guest memory type.
    type Memory: GuestMemory;
    /// The guest memory, read while the guest runs.
    fn memory(&self) -> &Self::Memory;
    /// The guest RAM ranges.
    fn ram(&self) -> Vec<RamRange>;
    /// The ABI profile the destination must match.
    fn profile(&mut self) -> Result<Value, BoxError>;
    /// Turns dirty logging on for all RAM.
    fn start_dirty_log(&mut self) -> Result<(), BoxError>;
    /// The RAM dirtied since the previous call (or since logging started).
    fn harvest(&mut self) -> Result<Vec<RamRange>, BoxError>;
    /// Turns dirty logging off (after a failed or cancelled migration).
    fn stop_dirty_log(&mut self);
    /// Stops every vCPU (and device that writes guest memory).
    fn pause(&mut self) -> Result<(), BoxError>;
    /// Lets them run again.
    fn resume(&mut self) -> Result<(), BoxError>;
    /// The device and vCPU state of the paused VM.
    fn state(&mut self) -> Result<Value, BoxError>;
}

/// The VMM side of a migration destination.
pub trait MigrationDestination {
    /// The guest memory type.
    type Memory: GuestMemory;
    /// The guest memory, written as pages arrive.
    fn memory(&self) -> &Self::Memory;
    /// The guest RAM ranges; the stream's layout must be the same.
    fn ram(&self) -> Vec<RamRange>;
    /// Checks the source's ABI profile against this host and VM.
    fn check_profile(&mut self, profile: &Value) -> Result<(), BoxError>;
    /// Restores the device and vCPU state (the VM stays paused).
    fn restore(&mut self, state: &Value) -> Result<(), BoxError>;
}

/// When to stop iterating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Stop-and-copy once the remaining dirty memory is expected to take at
    /// most this long to send at the measured bandwidth.
    pub downtime_limit: Duration,
    /// Stop-and-copy after this many rounds whatever remains.
    pub max_rounds: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            downtime_limit: Duration::from_millis(5),
            max_rounds: 30,
        }
    }
}

/// Where a migration is, as QMP's `MigrationStatus` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Status {
    /// No migration yet.
    None,
    /// Connecting, sending the profile.
    Setup,
    /// Pre-copy rounds.
    Active,
    /// The VM is paused for the last round.
    Device,
    /// Done: the destination runs the guest.
    Completed,
    /// Failed; the source runs the guest.
    Failed,
    /// Cancelling.
    Cancelling,
    /// Cancelled; the source runs the guest.
    Cancelled,
}

/// Live progress of one migration, shared with the monitor.
#[derive(Debug)]
pub struct Progress {
    status: Mutex<(Status, Option<String>)>,
    /// RAM bytes in the guest.
    pub total: AtomicU64,
    /// Bytes written to the stream so far.
    pub transferred: AtomicU64,
    /// Dirty bytes left to send after the last harvest.
    pub remaining: AtomicU64,
    /// Pages sent with data.
    pub normal_pages: AtomicU64,
    /// Pages sent as zero ranges.
    pub zero_pages: AtomicU64,
    /// Pre-copy rounds finished (dirty log syncs).
    pub rounds: AtomicU64,
    /// Pages dirtied per second, measured over the last round.
    pub dirty_pages_rate: AtomicU64,
    /// Bandwidth of the last round, bytes per second.
    pub bytes_per_second: AtomicU64,
    /// Milliseconds from start to completion.
    pub total_time_ms: AtomicU64,
    /// Milliseconds the VM was paused on the source (until the destination
    /// acknowledged).
    pub downtime_ms: AtomicU64,
    /// Unix time (ns) the source paused the guest: its last instruction.
    pub paused_at_ns: AtomicU64,
    /// Milliseconds of set-up (profile, layout).
    pub setup_time_ms: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            status: Mutex::new((Status::None, None)),
            total: AtomicU64::new(0),
            transferred: AtomicU64::new(0),
            remaining: AtomicU64::new(0),
            normal_pages: AtomicU64::new(0),
            zero_pages: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
            dirty_pages_rate: AtomicU64::new(0),
            bytes_per_second: AtomicU64::new(0),
            total_time_ms: AtomicU64::new(0),
            downtime_ms: AtomicU64::new(0),
            paused_at_ns: AtomicU64::new(0),
            setup_time_ms: AtomicU64::new(0),
        }
    }
}

impl Progress {
    /// The current status and, after a failure, why.
    pub fn status(&self) -> (Status, Option<String>) {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets the status (and the error description, for `Failed`).
    pub fn set_status(&self, status: Status, error: Option<String>) {
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = (status, error);
    }

    /// Counts pages just sent, and the bytes left in this round.
    fn add_sent(&self, s: &SendStats) {
        self.normal_pages
            .fetch_add(s.normal_pages, Ordering::Relaxed);
        self.zero_pages.fetch_add(s.zero_pages, Ordering::Relaxed);
        let bytes = (s.normal_pages + s.zero_pages) * PAGE_SIZE;
        // The closure always returns Some: the update cannot fail.
        let _ = self
            .remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                Some(r.saturating_sub(bytes))
            });
    }
}

/// Guest RAM sent between two updates of the page counters.
const PIECE_BYTES: u64 = 4 << 20;

/// [`crate::send_ranges`] in pieces of at most [`PIECE_BYTES`], counting
/// each in `progress` as it goes.
fn send_counted<W: Write, M: GuestMemory>(
    w: &mut FrameWriter<W>,
    mem: &M,
    ranges: &[RamRange],
    stats: &mut SendStats,
    cancel: &AtomicBool,
    progress: &Progress,
    probe: &ZeroProbe,
) -> Result<()> {
    for r in ranges {
        let mut at = r.gpa;
        while at < r.end() {
            let piece = RamRange::new(at, (r.end() - at).min(PIECE_BYTES));
            let mut s = SendStats::default();
            send_ranges_probed(w, mem, &[piece], &mut s, cancel, probe)?;
            progress.add_sent(&s);
            stats.normal_pages += s.normal_pages;
            stats.zero_pages += s.zero_pages;
            at = piece.end();
        }
    }
    Ok(())
}

/// A writer that adds what it writes to a progress counter, so that
/// `transferred` moves during a round, not only at its end.
struct Counted<'a, W> {
    w: W,
    n: &'a AtomicU64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.w.write(buf)?;
        self.n.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

/// Unix time in nanoseconds, for downtime measured across two processes.
pub fn unix_time_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `n` per `d`, as a whole rate per second.
fn per_second(n: u64, d: Duration) -> u64 {
    let micros = d.as_micros().max(1);
    u64::try_from(u128::from(n) * 1_000_000 / micros).unwrap_or(u64::MAX)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What the source sends in its `END` frame.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndInfo {
    /// Unix time (ns) the source paused the guest.
    pub paused_at_ns: u64,
    /// Pre-copy rounds.
    pub rounds: u64,
}

/// How a finished migration went, on the destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Pages received (data and zero).
    pub pages: u64,
    /// Stream bytes read.
    pub bytes: u64,
    /// What the source said at the end.
    pub end: EndInfo,
}

/// `e` and its causes on one line (`step failed: why`): what the source is
/// told of a refusal, and what `query-migrate` reports.
fn describe(e: &Error) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let t = c.to_string();
        if !out.ends_with(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cause = c.source();
    }
    out
}

fn vmm(step: &'static str) -> impl FnOnce(BoxError) -> Error {
    move |source| Error::Vmm { step, source }
}

fn total_len(ranges: &[RamRange]) -> u64 {
    ranges.iter().map(|r| r.len).sum()
}

/// Migrates the VM of `src` to the destination at the other end of
/// `(reader, writer)`.
///
/// On success the destination has acknowledged the state and the source VM
/// stays paused (the caller ends it). On any failure — the connection drops,
/// the destination refuses, `cancel` is set — logging is turned off, the VM
/// is resumed if it was paused, and the error says why: the source keeps
/// running the guest and loses nothing. `cancel` is checked between frames;
/// to end a read or write blocked on a stalled destination, the caller also
/// shuts the connection down: any error once `cancel` is set is
/// [`Error::Cancelled`].
///
/// `progress` moves while a round runs: `transferred` with every write,
/// `remaining` (the bytes of the current round not sent yet) and the page
/// counters every 4 MiB of guest RAM.
pub fn migrate<S: MigrationSource, R: Read, W: Write>(
    src: &mut S,
    mut reader: R,
    writer: W,
    policy: &Policy,
    progress: &Progress,
    cancel: &AtomicBool,
) -> Result<()> {
    let start = Instant::now();
    progress.set_status(Status::Setup, None);
    let mut paused = false;
    let mut res = run_source(
        src,
        &mut reader,
        writer,
        policy,
        progress,
        cancel,
        &mut paused,
        start,
    );
    if res.is_err() && cancel.load(Ordering::SeqCst) {
        // A cancel may shut the connection down to end a blocked read or
        // write: whatever error that caused, the migration was cancelled.
        res = Err(Error::Cancelled);
    } else if let Err(Error::Write { .. }) = res {
        // A destination that refuses closes the connection after saying why:
        // prefer its reason to the broken pipe.
        if let Ok(ack) = FrameReader::new(&mut reader).and_then(|mut r| r.next_frame()) {
            if ack.tag == Tag::Ack && !ack.payload.is_empty() {
                res = Err(Error::Refused(
                    String::from_utf8_lossy(&ack.payload).into_owned(),
                ));
            }
        }
    }
    match &res {
        Ok(()) => {
            progress
                .total_time_ms
                .store(ms(start.elapsed()), Ordering::Relaxed);
            progress.set_status(Status::Completed, None);
        }
        Err(e) => {
            src.stop_dirty_log();
            let resumed = if paused { src.resume() } else { Ok(()) };
            let status = if matches!(e, Error::Cancelled) {
                Status::Cancelled
            } else {
                Status::Failed
            };
            let mut msg = describe(e);
            if let Err(r) = resumed {
                msg.push_str(&format!("; resuming the source VM failed too: {r}"));
            }
            progress
                .total_time_ms
                .store(ms(start.elapsed()), Ordering::Relaxed);
            progress.set_status(status, Some(msg));
        }
    }
    res
}

#[allow(clippy::too_many_arguments)]
fn run_source<S: MigrationSource, R: Read, W: Write>(
    src: &mut S,
    reader: &mut R,
    writer: W,
    policy: &Policy,
    progress: &Progress,
    cancel: &AtomicBool,
    paused: &mut bool,
    start: Instant,
) -> Result<()> {
    let ram = src.ram();
    progress.total.store(total_len(&ram), Ordering::Relaxed);
    progress.transferred.store(0, Ordering::Relaxed);
    let mut w = FrameWriter::new(Counted {
        w: writer,
        n: &progress.transferred,
    })?;
    let profile = src.profile().map_err(vmm("describing the ABI profile"))?;
    w.json(Tag::Profile, "PROFILE", &profile)?;
    w.json(Tag::Layout, "LAYOUT", &ram)?;
    src.start_dirty_log()
        .map_err(vmm("starting the dirty log"))?;
    // Pages written before this harvest are sent by the full copy below,
    // which reads memory after it; pages written after it show up in the
    // next harvest. So what it returns is not needed.
    src.harvest().map_err(vmm("harvesting the dirty log"))?;
    progress
        .setup_time_ms
        .store(ms(start.elapsed()), Ordering::Relaxed);
    // Figures of the first round before its status: a monitor that sees
    // `active` sees all of RAM left to send, not 0.
    progress.remaining.store(total_len(&ram), Ordering::Relaxed);
    progress.set_status(Status::Active, None);

    let mut to_send = ram.clone();
    let mut round = 0u64;
    // Read again each round (the mappings are this process's); the last one
    // serves the paused round too, keeping the downtime free of it.
    let mut probe;
    loop {
        // Made before the clock starts: reading smaps is no part of the
        // bandwidth the round measures.
        probe = ZeroProbe::new();
        let t = Instant::now();
        let before = w.bytes_written();
        let mut stats = SendStats::default();
        progress
            .remaining
            .store(total_len(&to_send), Ordering::Relaxed);
        send_counted(
            &mut w,
            src.memory(),
            &to_send,
            &mut stats,
            cancel,
            progress,
            &probe,
        )?;
        w.json(Tag::Round, "ROUND", &round)?;
        w.flush()?;
        let took = t.elapsed().max(Duration::from_micros(1));
        let bw = per_second(w.bytes_written() - before, took);
        progress.bytes_per_second.store(bw, Ordering::Relaxed);
        round += 1;
        progress.rounds.store(round, Ordering::Relaxed);

        let dirty = src.harvest().map_err(vmm("harvesting the dirty log"))?;
        let dirty_bytes = total_len(&dirty);
        progress.remaining.store(dirty_bytes, Ordering::Relaxed);
        progress
            .dirty_pages_rate
            .store(per_second(dirty_bytes / PAGE_SIZE, took), Ordering::Relaxed);
        let expected = Duration::from_secs_f64(dirty_bytes as f64 / bw.max(1) as f64);
        if expected <= policy.downtime_limit || round >= u64::from(policy.max_rounds) {
            to_send = dirty;
            break;
        }
        to_send = dirty;
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
    }

    // Stop and copy.
    src.pause().map_err(vmm("pausing the VM"))?;
    *paused = true;
    let paused_at = Instant::now();
    let paused_at_ns = unix_time_ns();
    progress.paused_at_ns.store(paused_at_ns, Ordering::Relaxed);
    progress.set_status(Status::Device, None);
    let last = src.harvest().map_err(vmm("harvesting the dirty log"))?;
    to_send.extend(last);
    let mut stats = SendStats::default();
    progress
        .remaining
        .store(total_len(&to_send), Ordering::Relaxed);
    send_counted(
        &mut w,
        src.memory(),
        &to_send,
        &mut stats,
        cancel,
        progress,
        &probe,
    )?;
    let state = src.state().map_err(vmm("saving the VM state"))?;
    w.json(Tag::State, "STATE", &state)?;
    w.json(
        Tag::End,
        "END",
        &EndInfo {
            paused_at_ns,
            rounds: round,
        },
    )?;
    w.flush()?;
    progress.remaining.store(0, Ordering::Relaxed);

    let mut r = FrameReader::new(reader)?;
    let ack = r.expect(Tag::Ack, "the destination's ACK")?;
    progress
        .downtime_ms
        .store(ms(paused_at.elapsed()), Ordering::Relaxed);
    if !ack.payload.is_empty() {
        return Err(Error::Refused(
            String::from_utf8_lossy(&ack.payload).into_owned(),
        ));
    }
    src.stop_dirty_log();
    Ok(())
}

/// Receives a migration from `reader` into `dest`, answering on `writer`.
///
/// Checks the header, then the ABI profile (first frame) and the RAM layout
/// before touching guest memory; applies pages; restores the state; and
/// acknowledges. Any error is also sent to the source (so that it resumes
/// the guest at once) before it is returned. The VM stays paused: the caller
/// resumes it after this returns `Ok`.
pub fn receive<D: MigrationDestination, R: Read, W: Write>(
    dest: &mut D,
    reader: R,
    writer: W,
) -> Result<Received> {
    // The answer (header and ACK) is written only at the end, so that a
    // broken connection shows up as the reading error it is.
    let res = run_destination(dest, reader);
    let answer = |w: W, payload: &[u8]| -> Result<()> {
        let mut w = FrameWriter::new(w)?;
        w.frame(Tag::Ack, payload)?;
        w.flush()
    };
    match res {
        Ok(received) => {
            answer(writer, &[])?;
            Ok(received)
        }
        Err(e) => {
            // Best effort: the source may be gone already.
            let _ = answer(writer, describe(&e).as_bytes());
            Err(e)
        }
    }
}

fn run_destination<D: MigrationDestination, R: Read>(dest: &mut D, reader: R) -> Result<Received> {
    let mut r = FrameReader::new(reader)?;
    let profile = r.expect(Tag::Profile, "the PROFILE frame")?;
    let profile: Value = from_json(&profile, "PROFILE")?;
    dest.check_profile(&profile).map_err(Error::Profile)?;
    let layout = r.expect(Tag::Layout, "the LAYOUT frame")?;
    let layout: Vec<RamRange> = from_json(&layout, "LAYOUT")?;
    let ram = dest.ram();
    if layout != ram {
        return Err(Error::Layout {
            stream: format!("{layout:x?}"),
            local: format!("{ram:x?}"),
        });
    }
    let probe = ZeroProbe::new();
    let mut pages = 0;
    let mut state_restored = false;
    loop {
        let f = r.next_frame()?;
        match f.tag {
            Tag::Pages | Tag::ZeroPages if !state_restored => {
                pages += apply_pages_probed(dest.memory(), &ram, &f, &probe)?;
            }
            Tag::Round if !state_restored => {}
            Tag::State if !state_restored => {
                let state: Value = from_json(&f, "STATE")?;
                dest.restore(&state)
                    .map_err(vmm("restoring the VM state"))?;
                state_restored = true;
            }
            Tag::End if state_restored => {
                let end: EndInfo = from_json(&f, "END")?;
                return Ok(Received {
                    pages,
                    bytes: r.bytes_read(),
                    end,
                });
            }
            other => {
                return Err(Error::UnexpectedFrame {
                    offset: f.offset,
                    found: other.to_string(),
                    expected: if state_restored {
                        "the END frame"
                    } else {
                        "pages, a round end or the STATE frame"
                    },
                })
            }
        }
    }
}
