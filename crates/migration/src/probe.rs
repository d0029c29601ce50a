//! Guest pages that are certainly zero, found without reading them.
//!
//! Reading a page of anonymous memory that was never touched costs a page
//! fault (the kernel maps its shared zero page): about 2 µs on the PVM test
//! host, half a second per GiB of an idle guest, on the source (round 0, a
//! snapshot) and again on the destination (checking that a zero range is
//! zero). Linux can tell without faulting: a page of a private anonymous
//! mapping with neither a page-table entry nor a swap entry — its
//! `/proc/self/pagemap` entry is 0 — has never been written and reads as
//! zero. The probe answers that for whole chunks with one `pread` of the
//! pagemap (8 bytes a page).
//!
//! Only mappings where "no entry" means "zero" count: private (`p`),
//! anonymous (inode 0, no file name; `[heap]` and `[anon:…]` names allowed)
//! and not registered with userfaultfd (whose missing pages a handler fills
//! in), as `/proc/self/smaps` lists them. Anything else — files (a restored
//! snapshot's copy-on-write mapping), shared memory, hugetlbfs, a pagemap
//! that cannot be read — is read as before. Setting
//! `KVMKIT_MIGRATION_ZERO_PROBE=0` turns the probe off.

use crate::pages::PAGE;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use vm_memory::{GuestAddress, GuestMemory, Permissions};

/// The environment variable that turns the probe off (`0`).
pub(crate) const PROBE_ENV: &str = "KVMKIT_MIGRATION_ZERO_PROBE";

/// Finds never-touched (so zero) guest pages. See the module docs.
#[derive(Debug)]
pub(crate) struct ZeroProbe {
    /// `/proc/self/pagemap`, or `None` when the probe is off.
    pagemap: Option<File>,
    /// Host address ranges of the private anonymous mappings, sorted.
    anon: Vec<Range<usize>>,
    /// The host page size (one pagemap entry each).
    host_page: usize,
}

impl ZeroProbe {
    /// A probe that finds nothing: every page is read.
    pub(crate) fn off() -> Self {
        ZeroProbe {
            pagemap: None,
            anon: Vec::new(),
            host_page: PAGE,
        }
    }

    /// Reads this process's mappings; off if that fails, on a host without
    /// `/proc`, or when [`PROBE_ENV`] is `0`.
    pub(crate) fn new() -> Self {
        if std::env::var(PROBE_ENV).is_ok_and(|v| v.trim() == "0") {
            return Self::off();
        }
        Self::open()
    }

    /// [`ZeroProbe::new`] whatever the environment says.
    fn open() -> Self {
        let host_page = crate::sys::page_size();
        if host_page == 0 || host_page % PAGE != 0 {
            return Self::off();
        }
        let (Ok(smaps), Ok(pagemap)) = (
            std::fs::read_to_string("/proc/self/smaps"),
            File::open("/proc/self/pagemap"),
        ) else {
            return Self::off();
        };
        ZeroProbe {
            pagemap: Some(pagemap),
            anon: private_anonymous(&smaps),
            host_page,
        }
    }

    /// Whether the host range `[start, start + len)` lies in one private
    /// anonymous mapping.
    fn in_anon(&self, start: usize, len: usize) -> bool {
        let Some(end) = start.checked_add(len) else {
            return false;
        };
        let i = self.anon.partition_point(|r| r.end <= start);
        self.anon
            .get(i)
            .is_some_and(|r| r.start <= start && end <= r.end)
    }

    /// Marks in `zero` the pages of guest memory from `gpa` (one entry per
    /// 4 KiB page) that were never touched; leaves the others alone and
    /// returns how many it marked.
    pub(crate) fn untouched<M: GuestMemory>(&self, mem: &M, gpa: u64, zero: &mut [bool]) -> usize {
        let Some(pagemap) = &self.pagemap else {
            return 0;
        };
        let len = zero.len() * PAGE;
        let Ok(slices) = mem.get_slices(GuestAddress(gpa), len, Permissions::Read) else {
            return 0;
        };
        let mut marked = 0;
        let mut done = 0usize;
        let mut entries: Vec<u8> = Vec::new();
        for slice in slices {
            let Ok(slice) = slice else {
                return marked;
            };
            let host = slice.ptr_guard().as_ptr() as usize;
            let n = slice.len();
            if host % PAGE == 0 && n % PAGE == 0 && self.in_anon(host, n) {
                // One pagemap entry per host page covering [host, host + n).
                let first = host / self.host_page;
                let last = (host + n - 1) / self.host_page;
                entries.resize((last - first + 1) * 8, 0xff);
                if pagemap
                    .read_exact_at(&mut entries, first as u64 * 8)
                    .is_ok()
                {
                    for (i, z) in zero[done / PAGE..(done + n) / PAGE].iter_mut().enumerate() {
                        let e = (host + i * PAGE) / self.host_page - first;
                        if !*z && entries[e * 8..e * 8 + 8] == [0; 8] {
                            *z = true;
                            marked += 1;
                        }
                    }
                }
            }
            done += n;
        }
        marked
    }
}

/// The private anonymous mappings in `smaps` (the text of
/// `/proc/self/smaps`) not registered with userfaultfd, sorted by address.
fn private_anonymous(smaps: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut current: Option<Range<usize>> = None;
    for line in smaps.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            let uffd = flags
                .split_whitespace()
                .any(|f| matches!(f, "um" | "uw" | "ui" | "ht"));
            if let Some(r) = current.take() {
                if !uffd {
                    out.push(r);
                }
            }
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms), Some(_offset), Some(_dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            // A field line ("Rss:   4 kB"), not a mapping.
            continue;
        };
        let name = fields.next().unwrap_or("");
        let private = perms.as_bytes().get(3) == Some(&b'p');
        let readable = perms.as_bytes().first() == Some(&b'r');
        let anonymous =
            inode == "0" && (name.is_empty() || name == "[heap]" || name.starts_with("[anon:"));
        current = (private && readable && anonymous && start < end).then_some(start..end);
    }
    out.sort_by_key(|r| r.start);
    // Adjacent mappings (split by mprotect or madvise) merge into one.
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(out.len());
    for r in out {
        match merged.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => merged.push(r),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use vm_memory::{Bytes, FileOffset, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

    fn mem(len: usize) -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), len)]).unwrap()
    }

    #[test]
    fn untouched_pages_of_anonymous_memory_are_found() {
        let m = mem(0x10_0000);
        m.write_obj(1u8, GuestAddress(0x3000)).unwrap();
        // A page read (not written) is mapped: it counts as touched, and
        // reading it finds zero.
        let _: u8 = m.read_obj(GuestAddress(0x5000)).unwrap();
        let probe = ZeroProbe::open();
        let mut zero = vec![false; 256];
        let n = probe.untouched(&m, 0, &mut zero);
        assert_eq!(n, 254);
        assert!(!zero[3] && !zero[5] && zero[0] && zero[255]);
        // Already marked pages are not counted again.
        assert_eq!(probe.untouched(&m, 0, &mut zero), 0);
        // A sub-range, not at the start.
        let mut zero = vec![false; 4];
        assert_eq!(probe.untouched(&m, 0x2000, &mut zero), 2);
        assert_eq!(zero, [true, false, true, false]);
    }

    #[test]
    fn file_backed_memory_and_the_off_probe_find_nothing() {
        let mut f = vmm_sys_util::tempfile::TempFile::new().unwrap().into_file();
        f.write_all(&[7u8; 0x4000]).unwrap();
        let region = MmapRegion::from_file(FileOffset::new(f, 0), 0x4000).unwrap();
        let m = GuestMemoryMmap::<()>::from_regions(vec![GuestRegionMmap::new(
            region,
            GuestAddress(0),
        )
        .unwrap()])
        .unwrap();
        let mut zero = vec![false; 4];
        assert_eq!(ZeroProbe::open().untouched(&m, 0, &mut zero), 0);
        let m = mem(0x4000);
        assert_eq!(ZeroProbe::off().untouched(&m, 0, &mut zero), 0);
        // Outside guest memory: nothing.
        assert_eq!(ZeroProbe::open().untouched(&m, 0x10_0000, &mut zero), 0);
    }

    #[test]
    fn smaps_parsing_keeps_private_anonymous_mappings_only() {
        let smaps = "\
1000-3000 rw-p 00000000 00:00 0
Rss:                   4 kB
VmFlags: rd wr mr mw me ac
3000-4000 rw-p 00000000 00:00 0                          [heap]
VmFlags: rd wr mr mw me ac
5000-6000 rw-s 00000000 00:01 1234                       /dev/zero (deleted)
VmFlags: rd wr sh mr mw me ms
6000-7000 rw-p 00001000 08:01 42                         /tmp/snapshot/memory
VmFlags: rd wr mr mw me
7000-8000 rw-p 00000000 00:00 0
VmFlags: rd wr mr mw me ac um
8000-9000 ---p 00000000 00:00 0
VmFlags: mr mw me
9000-a000 rw-p 00000000 00:00 0                          [anon:guest]
VmFlags: rd wr mr mw me ac
b000-c000 rw-p 00000000 00:00 0                          [stack]
VmFlags: rd wr mr mw me ac
";
        assert_eq!(
            private_anonymous(smaps),
            vec![0x1000..0x4000, 0x9000..0xa000]
        );
        let probe = ZeroProbe {
            pagemap: None,
            anon: private_anonymous(smaps),
            host_page: PAGE,
        };
        assert!(probe.in_anon(0x1000, 0x3000));
        assert!(!probe.in_anon(0x1000, 0x4000));
        assert!(!probe.in_anon(0x6000, 0x1000));
        assert!(!probe.in_anon(usize::MAX, 2));
    }
}
