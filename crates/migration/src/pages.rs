//! Guest pages on the stream: sending ranges of guest memory (zero pages as
//! ranges, the rest as data) and applying received frames.

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

fn is_zero(page: &[u8]) -> bool {
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
    let mut buf = vec![0u8; CHUNK];
    for r in ranges {
        let start = r.gpa & !(PAGE_SIZE - 1);
        let end = r.end().div_ceil(PAGE_SIZE).saturating_mul(PAGE_SIZE);
        let mut gpa = start;
        while gpa < end {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            let n = ((end - gpa) / PAGE_SIZE).min(PAGES_PER_FRAME);
            let chunk = &mut buf[..usize::try_from(n).unwrap_or(0) * PAGE];
            mem.read_slice(chunk, GuestAddress(gpa))
                .map_err(|e| mem_err(gpa, n * PAGE_SIZE, e))?;
            send_chunk(w, gpa, chunk, stats)?;
            gpa += n * PAGE_SIZE;
        }
    }
    Ok(())
}

/// Sends one chunk read from `gpa`, split into zero and data runs.
fn send_chunk<W: Write>(
    w: &mut FrameWriter<W>,
    gpa: u64,
    chunk: &[u8],
    stats: &mut SendStats,
) -> Result<()> {
    let pages: Vec<bool> = chunk.chunks(PAGE).map(is_zero).collect();
    let mut i = 0;
    while i < pages.len() {
        let zero = pages[i];
        let run = pages[i..].iter().take_while(|&&z| z == zero).count();
        let at = gpa + i as u64 * PAGE_SIZE;
        let len = run as u64 * PAGE_SIZE;
        if zero {
            w.frame_parts(Tag::ZeroPages, &[&at.to_le_bytes(), &len.to_le_bytes()])?;
            stats.zero_pages += run as u64;
        } else {
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
/// destination's untouched memory stays unallocated.
pub fn apply_pages<M: GuestMemory>(mem: &M, ram: &[RamRange], frame: &Frame) -> Result<u64> {
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
            let mut page = [0u8; PAGE];
            let zero = [0u8; PAGE];
            let mut at = gpa;
            while at < gpa + len {
                mem.read_slice(&mut page, GuestAddress(at))
                    .map_err(|e| mem_err(at, PAGE_SIZE, e))?;
                if !is_zero(&page) {
                    mem.write_slice(&zero, GuestAddress(at))
                        .map_err(|e| mem_err(at, PAGE_SIZE, e))?;
                }
                at += PAGE_SIZE;
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
