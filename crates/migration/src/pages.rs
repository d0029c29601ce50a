//! Guest pages on the stream: sending ranges of guest memory (zero pages as
//! ranges, the rest as data) and applying received frames.

use crate::probe::ZeroProbe;
use crate::{Error, Frame, FrameWriter, Result, Tag};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

/// Bytes per page on the stream.
pub const PAGE_SIZE: u64 = 0x1000;
/// Pages read and sent per frame at most (1 MiB of data).
pub const PAGES_PER_FRAME: u64 = 256;
/// [`PAGE_SIZE`] as a `usize`, for buffers.
pub(crate) const PAGE: usize = 0x1000;
/// Bytes read per chunk: [`PAGES_PER_FRAME`] pages.
pub(crate) const CHUNK: usize = 256 * PAGE;

/// A range of guest RAM: `len` bytes at guest physical address `gpa`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RamRange {
    /// The first guest physical address.
    pub gpa: u64,
    /// The length in bytes.
    pub len: u64,
}

impl RamRange {
    /// A range of `len` bytes at `gpa`.
    pub fn new(gpa: u64, len: u64) -> Self {
        RamRange { gpa, len }
    }

    /// One past the last address (saturating).
    pub fn end(&self) -> u64 {
        self.gpa.saturating_add(self.len)
    }
}

/// Counters of what was sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Pages sent with their data.
    pub normal_pages: u64,
    /// Pages sent as zero ranges.
    pub zero_pages: u64,
}

pub(crate) fn is_zero(page: &[u8]) -> bool {
    // Word-wise: the compiler vectorises this; one page is 512 words.
    let (head, words, tail) = {
        // SAFETY: every bit pattern is a valid u64; align_to only reinterprets
        // the aligned middle of the slice.
        unsafe { page.align_to::<u64>() }
    };
    head.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

fn mem_err(gpa: u64, len: u64, e: impl std::fmt::Display) -> Error {
    Error::GuestMemory {
        gpa,
        len,
        detail: e.to_string(),
    }
}

/// Sends `ranges` of `mem`: runs of non-zero pages as `PAGES` frames of at most
/// [`PAGES_PER_FRAME`] pages, runs of zero pages as `ZERO_PAGES` frames.
/// Checks `cancel` between frames. Ranges are rounded out to whole pages.
///
/// Every page is read. [`crate::migrate`] and [`crate::save_snapshot`]
/// skip reading the never-touched pages of anonymous memory instead (see
/// the crate README), which needs a look at the process's mappings: once
/// per round there, too costly for each call of this function.
///
/// ```
/// use kvmkit_migration::{send_ranges, FrameReader, FrameWriter, RamRange, SendStats, Tag};
/// use std::sync::atomic::AtomicBool;
/// use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x4000)]).unwrap();
/// mem.write_obj(7u8, GuestAddress(0x2000)).unwrap();
/// let mut w = FrameWriter::new(Vec::new())?;
/// let mut stats = SendStats::default();
/// send_ranges(&mut w, &mem, &[RamRange::new(0, 0x4000)], &mut stats, &AtomicBool::new(false))?;
/// assert_eq!((stats.normal_pages, stats.zero_pages), (1, 3));
/// # Ok::<(), kvmkit_migration::Error>(())
/// ```
pub fn send_ranges<W: Write, M: GuestMemory>(
    w: &mut FrameWriter<W>,
    mem: &M,
    ranges: &[RamRange],
    stats: &mut SendStats,
    cancel: &AtomicBool,
) -> Result<()> {
    send_ranges_probed(w, mem, ranges, stats, cancel, &ZeroProbe::off())
}

/// A run of zero pages not sent yet: consecutive zero chunks become one
/// `ZERO_PAGES` frame.
#[derive(Default)]
struct PendingZero(Option<(u64, u64)>);

impl PendingZero {
    fn add<W: Write>(&mut self, w: &mut FrameWriter<W>, gpa: u64, len: u64) -> Result<()> {
        match &mut self.0 {
            Some((at, l)) if *at + *l == gpa => *l += len,
            _ => {
                self.flush(w)?;
                self.0 = Some((gpa, len));
            }
        }
        Ok(())
    }

    fn flush<W: Write>(&mut self, w: &mut FrameWriter<W>) -> Result<()> {
        if let Some((at, len)) = self.0.take() {
            w.frame_parts(Tag::ZeroPages, &[&at.to_le_bytes(), &len.to_le_bytes()])?;
        }
        Ok(())
    }
}

/// Guest pages the probe looks at in one go: 32 MiB of guest memory, one
/// read of 64 KiB of pagemap.
const PROBE_PAGES: usize = 8192;

/// Reads guest memory chunk by chunk, knowing which pages are zero: the
/// never-touched ones (asked of the probe once per [`PROBE_PAGES`]) without
/// reading them, the others by reading them.
///
/// The probe's answer may be stale by the time a chunk is read: a page the
/// guest writes after the probe looked is sent as zero. That is safe where
/// the scanner is used — while the guest runs, dirty logging is on and the
/// write shows up in the next harvest; the last round and snapshots run
/// with the guest paused.
pub(crate) struct Scanner<'p> {
    probe: &'p ZeroProbe,
    buf: Vec<u8>,
    zero: Vec<bool>,
    /// Never-touched flags of the pages from `window_gpa`.
    window: Vec<bool>,
    window_gpa: u64,
}

impl<'p> Scanner<'p> {
    pub(crate) fn new(probe: &'p ZeroProbe) -> Self {
        Scanner {
            probe,
            buf: vec![0u8; CHUNK],
            zero: vec![false; CHUNK / PAGE],
            window: Vec::new(),
            window_gpa: 0,
        }
    }

    /// Reads the `pages` pages (at most [`PAGES_PER_FRAME`]) at `gpa`, of a
    /// range that ends at `end`: their data (zero pages left unread) and
    /// whether each is zero.
    pub(crate) fn read<M: GuestMemory>(
        &mut self,
        mem: &M,
        gpa: u64,
        pages: usize,
        end: u64,
    ) -> Result<(&[u8], &[bool])> {
        let in_window = gpa >= self.window_gpa
            && (gpa - self.window_gpa) / PAGE_SIZE + pages as u64 <= self.window.len() as u64;
        if !in_window {
            let n = usize::try_from((end - gpa) / PAGE_SIZE)
                .unwrap_or(PROBE_PAGES)
                .clamp(pages, PROBE_PAGES);
            self.window.clear();
            self.window.resize(n, false);
            self.probe.untouched(mem, gpa, &mut self.window);
            self.window_gpa = gpa;
        }
        let first = usize::try_from((gpa - self.window_gpa) / PAGE_SIZE).unwrap_or(0);
        let zero = &mut self.zero[..pages];
        zero.copy_from_slice(&self.window[first..first + pages]);
        let chunk = &mut self.buf[..pages * PAGE];
        let mut i = 0;
        while i < pages {
            if zero[i] {
                i += 1;
                continue;
            }
            let run = zero[i..].iter().take_while(|&&z| !z).count();
            let at = gpa + i as u64 * PAGE_SIZE;
            let bytes = &mut chunk[i * PAGE..(i + run) * PAGE];
            mem.read_slice(bytes, GuestAddress(at))
                .map_err(|e| mem_err(at, bytes.len() as u64, e))?;
            for (z, page) in zero[i..i + run].iter_mut().zip(bytes.chunks(PAGE)) {
                *z = is_zero(page);
            }
            i += run;
        }
        Ok((chunk, zero))
    }
}

/// [`send_ranges`] with a probe made by the caller (reading the process's
/// mappings costs a fraction of a millisecond: once per round, not per call).
pub(crate) fn send_ranges_probed<W: Write, M: GuestMemory>(
    w: &mut FrameWriter<W>,
    mem: &M,
    ranges: &[RamRange],
    stats: &mut SendStats,
    cancel: &AtomicBool,
    probe: &ZeroProbe,
) -> Result<()> {
    let mut scanner = Scanner::new(probe);
    for r in ranges {
        let start = r.gpa & !(PAGE_SIZE - 1);
        let end = r.end().div_ceil(PAGE_SIZE).saturating_mul(PAGE_SIZE);
        let mut pending = PendingZero::default();
        let mut gpa = start;
        while gpa < end {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            let n = ((end - gpa) / PAGE_SIZE).min(PAGES_PER_FRAME);
            let pages = usize::try_from(n).unwrap_or(0);
            let (chunk, zero) = scanner.read(mem, gpa, pages, end)?;
            send_chunk(w, gpa, chunk, zero, stats, &mut pending)?;
            gpa += n * PAGE_SIZE;
        }
        pending.flush(w)?;
    }
    Ok(())
}

/// Sends one chunk read from `gpa`, split into zero and data runs.
fn send_chunk<W: Write>(
    w: &mut FrameWriter<W>,
    gpa: u64,
    chunk: &[u8],
    zero: &[bool],
    stats: &mut SendStats,
    pending: &mut PendingZero,
) -> Result<()> {
    let mut i = 0;
    while i < zero.len() {
        let z = zero[i];
        let run = zero[i..].iter().take_while(|&&x| x == z).count();
        let at = gpa + i as u64 * PAGE_SIZE;
        let len = run as u64 * PAGE_SIZE;
        if z {
            pending.add(w, at, len)?;
            stats.zero_pages += run as u64;
        } else {
            pending.flush(w)?;
            let data = &chunk[i * PAGE..(i + run) * PAGE];
            w.frame_parts(Tag::Pages, &[&at.to_le_bytes(), data])?;
            stats.normal_pages += run as u64;
        }
        i += run;
    }
    Ok(())
}

fn u64_at(payload: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = payload.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

fn check_in_ram(ram: &[RamRange], gpa: u64, len: u64, offset: u64) -> Result<()> {
    let end = gpa.checked_add(len);
    let inside = end.is_some_and(|end| {
        gpa % PAGE_SIZE == 0 && ram.iter().any(|r| gpa >= r.gpa && end <= r.end())
    });
    if inside {
        Ok(())
    } else {
        Err(Error::BadFrame {
            offset,
            detail: format!("pages at {gpa:#x} (+{len:#x}) are not in guest RAM"),
        })
    }
}

/// Applies a `PAGES` or `ZERO_PAGES` frame to `mem`, after checking that it
/// lies within `ram`; returns the pages it covered.
///
/// Zero ranges only write pages that are not zero already, so a fresh
/// destination's untouched memory stays unallocated. ([`crate::receive`]
/// does not even read the never-touched pages of anonymous memory.)
pub fn apply_pages<M: GuestMemory>(mem: &M, ram: &[RamRange], frame: &Frame) -> Result<u64> {
    apply_pages_probed(mem, ram, frame, &ZeroProbe::off())
}

/// [`apply_pages`] with a probe made by the caller.
pub(crate) fn apply_pages_probed<M: GuestMemory>(
    mem: &M,
    ram: &[RamRange],
    frame: &Frame,
    probe: &ZeroProbe,
) -> Result<u64> {
    let p = &frame.payload;
    let bad = |detail: String| Error::BadFrame {
        offset: frame.offset,
        detail,
    };
    match frame.tag {
        Tag::Pages => {
            let gpa = u64_at(p, 0).ok_or_else(|| bad("PAGES frame without an address".into()))?;
            let data = &p[8..];
            if data.is_empty() || data.len() as u64 % PAGE_SIZE != 0 {
                return Err(bad(format!(
                    "PAGES frame of {} bytes is not whole pages",
                    data.len()
                )));
            }
            check_in_ram(ram, gpa, data.len() as u64, frame.offset)?;
            mem.write_slice(data, GuestAddress(gpa))
                .map_err(|e| mem_err(gpa, data.len() as u64, e))?;
            Ok(data.len() as u64 / PAGE_SIZE)
        }
        Tag::ZeroPages => {
            let (Some(gpa), Some(len), 16) = (u64_at(p, 0), u64_at(p, 8), p.len()) else {
                return Err(bad(format!(
                    "ZERO_PAGES frame of {} bytes, expected 16",
                    p.len()
                )));
            };
            if len == 0 || len % PAGE_SIZE != 0 {
                return Err(bad(format!(
                    "ZERO_PAGES length {len:#x} is not whole pages"
                )));
            }
            check_in_ram(ram, gpa, len, frame.offset)?;
            let mut zero = Vec::new();
            let mut page = [0u8; PAGE];
            let zero_page = [0u8; PAGE];
            let mut at = gpa;
            while at < gpa + len {
                let n = ((gpa + len - at) / PAGE_SIZE).min(PROBE_PAGES as u64);
                zero.clear();
                zero.resize(usize::try_from(n).unwrap_or(0), false);
                probe.untouched(mem, at, &mut zero);
                for (i, _) in zero.iter().enumerate().filter(|(_, &z)| !z) {
                    let a = at + i as u64 * PAGE_SIZE;
                    mem.read_slice(&mut page, GuestAddress(a))
                        .map_err(|e| mem_err(a, PAGE_SIZE, e))?;
                    if !is_zero(&page) {
                        mem.write_slice(&zero_page, GuestAddress(a))
                            .map_err(|e| mem_err(a, PAGE_SIZE, e))?;
                    }
                }
                at += n * PAGE_SIZE;
            }
            Ok(len / PAGE_SIZE)
        }
        other => Err(Error::UnexpectedFrame {
            offset: frame.offset,
            found: other.to_string(),
            expected: "a PAGES or ZERO_PAGES frame",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FrameReader;
    use vm_memory::GuestMemoryMmap;

    fn mem(len: u64) -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), usize::try_from(len).unwrap())]).unwrap()
    }

    #[test]
    fn pages_round_trip_with_zero_runs() {
        let src = mem(0x10_0000);
        for (i, gpa) in [0x0u64, 0x1000, 0x5000, 0xff000].iter().enumerate() {
            src.write_obj(u32::try_from(i).unwrap() + 1, GuestAddress(*gpa + 8))
                .unwrap();
        }
        let dst = mem(0x10_0000);
        // The destination has stale data in a page the source has zero.
        dst.write_obj(0xdeadu32, GuestAddress(0x3000)).unwrap();
        let mut w = FrameWriter::new(Vec::new()).unwrap();
        let mut stats = SendStats::default();
        let ram = [RamRange::new(0, 0x10_0000)];
        send_ranges(&mut w, &src, &ram, &mut stats, &AtomicBool::new(false)).unwrap();
        assert_eq!(stats.normal_pages, 4);
        assert_eq!(stats.zero_pages, 256 - 4);
        let bytes = w.into_inner();
        let mut r = FrameReader::new(&bytes[..]).unwrap();
        let mut pages = 0;
        while r.bytes_read() < bytes.len() as u64 {
            pages += apply_pages(&dst, &ram, &r.next_frame().unwrap()).unwrap();
        }
        assert_eq!(pages, 256);
        let mut a = vec![0u8; 0x10_0000];
        let mut b = vec![0u8; 0x10_0000];
        src.read_slice(&mut a, GuestAddress(0)).unwrap();
        dst.read_slice(&mut b, GuestAddress(0)).unwrap();
        assert!(a == b);
    }

    #[test]
    fn frames_outside_ram_or_malformed_are_refused() {
        let dst = mem(0x2000);
        let ram = [RamRange::new(0, 0x2000)];
        let frame = |tag, payload: Vec<u8>| Frame {
            tag,
            offset: 100,
            payload,
        };
        let mut p = 0x2000u64.to_le_bytes().to_vec();
        p.extend_from_slice(&[1u8; 0x1000]);
        let e = apply_pages(&dst, &ram, &frame(Tag::Pages, p)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid frame at byte 100: pages at 0x2000 (+0x1000) are not in guest RAM"
        );
        let mut p = 0u64.to_le_bytes().to_vec();
        p.extend_from_slice(&[1u8; 100]);
        assert!(apply_pages(&dst, &ram, &frame(Tag::Pages, p)).is_err());
        assert!(apply_pages(&dst, &ram, &frame(Tag::Pages, vec![1, 2])).is_err());
        let mut p = u64::MAX.to_le_bytes().to_vec();
        p.extend_from_slice(&0x1000u64.to_le_bytes());
        assert!(apply_pages(&dst, &ram, &frame(Tag::ZeroPages, p)).is_err());
        assert!(apply_pages(&dst, &ram, &frame(Tag::ZeroPages, vec![0; 15])).is_err());
        let mut p = 0u64.to_le_bytes().to_vec();
        p.extend_from_slice(&0u64.to_le_bytes());
        assert!(apply_pages(&dst, &ram, &frame(Tag::ZeroPages, p)).is_err());
        assert!(apply_pages(&dst, &ram, &frame(Tag::State, vec![])).is_err());
        // Unaligned addresses are refused too.
        let mut p = 0x800u64.to_le_bytes().to_vec();
        p.extend_from_slice(&[1u8; 0x1000]);
        assert!(apply_pages(&dst, &ram, &frame(Tag::Pages, p)).is_err());
    }

    #[test]
    fn cancel_stops_sending() {
        let src = mem(0x10_0000);
        let mut w = FrameWriter::new(Vec::new()).unwrap();
        let e = send_ranges(
            &mut w,
            &src,
            &[RamRange::new(0, 0x10_0000)],
            &mut SendStats::default(),
            &AtomicBool::new(true),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Cancelled));
    }

    #[test]
    fn unmapped_source_memory_is_an_error() {
        let src = mem(0x1000);
        let mut w = FrameWriter::new(Vec::new()).unwrap();
        let e = send_ranges(
            &mut w,
            &src,
            &[RamRange::new(0x1000, 0x1000)],
            &mut SendStats::default(),
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert!(matches!(e, Error::GuestMemory { gpa: 0x1000, .. }), "{e}");
    }
}
