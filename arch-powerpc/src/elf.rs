//! Loading a 64-bit PowerPC ELF kernel (`vmlinux`) into guest memory.
//!
//! linux-loader's ELF loader is built for x86 only, so this parses the ELF64
//! header and program headers itself, in either byte order, and places each
//! `PT_LOAD` segment at its physical address (`p_paddr`) plus a load offset.
//! A ppc64 `vmlinux` links at `0xc000000000000000` with `p_paddr` 0: the
//! entry is translated through the segment that contains it.
//!
//! The image comes from the VMM's user, not the guest, but it is parsed as
//! untrusted input: every offset and size is checked, and nothing is written
//! unless every segment fits in guest memory.

use crate::Endian;
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

const EM_PPC64: u16 = 21;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const PT_LOAD: u32 = 1;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;

/// Why an ELF kernel could not be loaded.
///
/// ```
/// use kvmkit_arch_powerpc::{load_elf, ElfError};
/// use vm_memory::{GuestAddress, GuestMemoryMmap};
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
/// let elf32 = [&b"\x7fELF\x01"[..], &[0; 59]].concat();
/// assert!(matches!(load_elf(&mem, &elf32, 0), Err(ElfError::NotElf64(1))));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ElfError {
    /// The image does not start with `\x7fELF`.
    #[error("not an ELF image")]
    BadMagic,
    /// `EI_CLASS` is not `ELFCLASS64`.
    #[error("not a 64-bit ELF image (class {0})")]
    NotElf64(u8),
    /// `EI_DATA` is neither little- nor big-endian.
    #[error("unknown ELF byte order {0}")]
    BadByteOrder(u8),
    /// `e_machine` is not `EM_PPC64`.
    #[error("not a 64-bit PowerPC image (e_machine {0})")]
    NotPpc64(u16),
    /// `e_type` is neither `ET_EXEC` nor `ET_DYN`.
    #[error("not an executable ELF image (e_type {0})")]
    NotExecutable(u16),
    /// A header or segment lies (partly) past the end of the image.
    #[error("the {what} at offset {offset:#x} runs past the end of the {len}-byte image")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Its offset in the image.
        offset: u64,
        /// The image length.
        len: usize,
    },
    /// `e_phentsize` is not the ELF64 program header size.
    #[error("program header size {0} is not 56")]
    BadPhentsize(u16),
    /// A segment's file size exceeds its memory size.
    #[error("segment {index}: file size {filesz:#x} exceeds memory size {memsz:#x}")]
    SegmentSize {
        /// The program header index.
        index: usize,
        /// `p_filesz`.
        filesz: u64,
        /// `p_memsz`.
        memsz: u64,
    },
    /// A segment does not fit in guest memory.
    #[error("segment {index} at guest address {gpa:#x} ({len:#x} bytes) is outside guest memory")]
    OutsideMemory {
        /// The program header index.
        index: usize,
        /// Where it would go.
        gpa: u64,
        /// `p_memsz`.
        len: u64,
    },
    /// No `PT_LOAD` segment.
    #[error("no loadable segment")]
    NoSegments,
    /// The entry point is in no loadable segment.
    #[error("entry point {0:#x} is in no loadable segment")]
    EntryOutside(u64),
    /// Writing guest memory failed.
    #[error("cannot write segment {index} at guest address {gpa:#x}")]
    Write {
        /// The program header index.
        index: usize,
        /// Where.
        gpa: u64,
        /// The cause.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// A loaded kernel.
///
/// ```
/// use kvmkit_arch_powerpc::{pseries_msr, ElfKernel, Endian};
/// let k = ElfKernel { entry: 0x10, endian: Endian::Little, low: 0, high: 0x1_0000 };
/// assert_eq!(pseries_msr(k.endian) & 1, 1); // enter little-endian
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElfKernel {
    /// The entry point, a guest physical address (for `BootSetup::entry`).
    pub entry: u64,
    /// The image's byte order (`EI_DATA`), for [`crate::pseries_msr`].
    pub endian: Endian,
    /// The lowest guest address written.
    pub low: u64,
    /// One past the highest guest address written (place the FDT and
    /// initrd above it).
    pub high: u64,
}

struct Reader<'a> {
    image: &'a [u8],
    endian: Endian,
}

impl Reader<'_> {
    fn bytes<const N: usize>(&self, off: u64, what: &'static str) -> Result<[u8; N], ElfError> {
        let trunc = || ElfError::Truncated {
            what,
            offset: off,
            len: self.image.len(),
        };
        let start = usize::try_from(off).map_err(|_| trunc())?;
        let b = start
            .checked_add(N)
            .and_then(|end| self.image.get(start..end))
            .ok_or_else(trunc)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    fn u16(&self, off: u64, what: &'static str) -> Result<u16, ElfError> {
        let b = self.bytes::<2>(off, what)?;
        Ok(match self.endian {
            Endian::Big => u16::from_be_bytes(b),
            Endian::Little => u16::from_le_bytes(b),
        })
    }

    fn u32(&self, off: u64, what: &'static str) -> Result<u32, ElfError> {
        let b = self.bytes::<4>(off, what)?;
        Ok(match self.endian {
            Endian::Big => u32::from_be_bytes(b),
            Endian::Little => u32::from_le_bytes(b),
        })
    }

    fn u64(&self, off: u64, what: &'static str) -> Result<u64, ElfError> {
        let b = self.bytes::<8>(off, what)?;
        Ok(match self.endian {
            Endian::Big => u64::from_be_bytes(b),
            Endian::Little => u64::from_le_bytes(b),
        })
    }
}

struct Segment {
    index: usize,
    file: std::ops::Range<usize>,
    gpa: u64,
    vaddr: u64,
    memsz: u64,
}

/// Loads a ppc64 ELF `image` into `mem`: each `PT_LOAD` segment at
/// `p_paddr + load_offset`, its bss (`p_memsz - p_filesz`) zeroed. Returns
/// the translated entry point and the range written.
///
/// ```
/// # use kvmkit_arch_powerpc::{load_elf, Endian};
/// # use vm_memory::{GuestAddress, GuestMemoryMmap};
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
/// assert!(load_elf(&mem, b"not an elf", 0).is_err());
/// ```
pub fn load_elf<M: GuestMemory + ?Sized>(
    mem: &M,
    image: &[u8],
    load_offset: u64,
) -> Result<ElfKernel, ElfError> {
    if image.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err(ElfError::BadMagic);
    }
    let mut r = Reader {
        image,
        endian: Endian::Little,
    };
    let ident = r.bytes::<16>(0, "ELF header")?;
    if ident[4] != 2 {
        return Err(ElfError::NotElf64(ident[4]));
    }
    r.endian = match ident[5] {
        1 => Endian::Little,
        2 => Endian::Big,
        d => return Err(ElfError::BadByteOrder(d)),
    };
    r.bytes::<EHDR_SIZE>(0, "ELF header")?;
    let e_type = r.u16(16, "ELF header")?;
    let machine = r.u16(18, "ELF header")?;
    if machine != EM_PPC64 {
        return Err(ElfError::NotPpc64(machine));
    }
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Err(ElfError::NotExecutable(e_type));
    }
    let e_entry = r.u64(24, "ELF header")?;
    let phoff = r.u64(32, "ELF header")?;
    let phentsize = r.u16(54, "ELF header")?;
    let phnum = r.u16(56, "ELF header")?;
    if usize::from(phentsize) != PHDR_SIZE && phnum > 0 {
        return Err(ElfError::BadPhentsize(phentsize));
    }

    let mut segments = Vec::new();
    for index in 0..usize::from(phnum) {
        let ph = (index as u64)
            .checked_mul(PHDR_SIZE as u64)
            .and_then(|o| o.checked_add(phoff))
            .ok_or(ElfError::Truncated {
                what: "program header",
                offset: phoff,
                len: image.len(),
            })?;
        r.bytes::<PHDR_SIZE>(ph, "program header")?;
        if r.u32(ph, "program header")? != PT_LOAD {
            continue;
        }
        let offset = r.u64(ph + 8, "program header")?;
        let vaddr = r.u64(ph + 16, "program header")?;
        let paddr = r.u64(ph + 24, "program header")?;
        let filesz = r.u64(ph + 32, "program header")?;
        let memsz = r.u64(ph + 40, "program header")?;
        if filesz > memsz {
            return Err(ElfError::SegmentSize {
                index,
                filesz,
                memsz,
            });
        }
        let trunc = ElfError::Truncated {
            what: "segment",
            offset,
            len: image.len(),
        };
        let start = usize::try_from(offset).map_err(|_| ElfError::Truncated {
            what: "segment",
            offset,
            len: image.len(),
        })?;
        let end = usize::try_from(filesz)
            .ok()
            .and_then(|f| start.checked_add(f))
            .filter(|&e| e <= image.len())
            .ok_or(trunc)?;
        let outside = ElfError::OutsideMemory {
            index,
            gpa: paddr.wrapping_add(load_offset),
            len: memsz,
        };
        let gpa = paddr.checked_add(load_offset).ok_or(outside)?;
        let fits = usize::try_from(memsz).is_ok_and(|len| {
            gpa.checked_add(memsz).is_some()
                && mem.check_range(GuestAddress(gpa), len, Permissions::Write)
        });
        if !fits {
            return Err(ElfError::OutsideMemory {
                index,
                gpa,
                len: memsz,
            });
        }
        segments.push(Segment {
            index,
            file: start..end,
            gpa,
            vaddr,
            memsz,
        });
    }
    if segments.is_empty() {
        return Err(ElfError::NoSegments);
    }
    let entry = segments
        .iter()
        .find(|s| e_entry >= s.vaddr && e_entry - s.vaddr < s.memsz.max(1))
        .map(|s| s.gpa + (e_entry - s.vaddr))
        .ok_or(ElfError::EntryOutside(e_entry))?;

    let zeros = [0u8; 4096];
    for s in &segments {
        let werr = |source| ElfError::Write {
            index: s.index,
            gpa: s.gpa,
            source,
        };
        let data = &image[s.file.clone()];
        mem.write_slice(data, GuestAddress(s.gpa)).map_err(werr)?;
        let mut at = s.gpa + data.len() as u64;
        let end = s.gpa + s.memsz;
        while at < end {
            let n = usize::try_from(end - at).map_or(zeros.len(), |n| n.min(zeros.len()));
            mem.write_slice(&zeros[..n], GuestAddress(at))
                .map_err(werr)?;
            at += n as u64;
        }
    }
    let low = segments.iter().map(|s| s.gpa).min().unwrap_or(0);
    let high = segments.iter().map(|s| s.gpa + s.memsz).max().unwrap_or(0);
    Ok(ElfKernel {
        entry,
        endian: r.endian,
        low,
        high,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestMemoryMmap, Permissions};

    struct Seg {
        p_type: u32,
        vaddr: u64,
        paddr: u64,
        data: Vec<u8>,
        memsz: u64,
    }

    /// An ELF64 image for `machine` in byte order `endian` with `segs`
    /// (data placed after the headers, in order).
    fn elf(endian: Endian, machine: u16, e_type: u16, entry: u64, segs: &[Seg]) -> Vec<u8> {
        let p16 = |v: u16| match endian {
            Endian::Big => v.to_be_bytes().to_vec(),
            Endian::Little => v.to_le_bytes().to_vec(),
        };
        let p32 = |v: u32| match endian {
            Endian::Big => v.to_be_bytes().to_vec(),
            Endian::Little => v.to_le_bytes().to_vec(),
        };
        let p64 = |v: u64| match endian {
            Endian::Big => v.to_be_bytes().to_vec(),
            Endian::Little => v.to_le_bytes().to_vec(),
        };
        let mut h = b"\x7fELF".to_vec();
        h.push(2); // ELFCLASS64
        h.push(if endian == Endian::Big { 2 } else { 1 });
        h.push(1); // EV_CURRENT
        h.resize(16, 0);
        h.extend(p16(e_type));
        h.extend(p16(machine));
        h.extend(p32(1));
        h.extend(p64(entry));
        h.extend(p64(64)); // e_phoff
        h.extend(p64(0)); // e_shoff
        h.extend(p32(2)); // e_flags: ELFv2 ABI
        h.extend(p16(64));
        h.extend(p16(56));
        h.extend(p16(u16::try_from(segs.len()).unwrap()));
        h.extend(p16(64));
        h.extend(p16(0));
        h.extend(p16(0));
        assert_eq!(h.len(), 64);
        let mut off = 64 + 56 * segs.len() as u64;
        let mut data: Vec<u8> = Vec::new();
        for s in segs {
            h.extend(p32(s.p_type));
            h.extend(p32(7));
            h.extend(p64(off));
            h.extend(p64(s.vaddr));
            h.extend(p64(s.paddr));
            h.extend(p64(s.data.len() as u64));
            h.extend(p64(s.memsz));
            h.extend(p64(0x10000));
            off += s.data.len() as u64;
            data.extend(&s.data);
        }
        h.extend(data);
        h
    }

    const KERNELBASE: u64 = 0xc000_0000_0000_0000;

    fn vmlinux(endian: Endian) -> Vec<u8> {
        elf(
            endian,
            EM_PPC64,
            ET_EXEC,
            KERNELBASE + 0x10,
            &[
                Seg {
                    p_type: PT_LOAD,
                    vaddr: KERNELBASE,
                    paddr: 0,
                    data: vec![0xaa; 0x20],
                    memsz: 0x40,
                },
                Seg {
                    p_type: 4, // PT_NOTE: skipped
                    vaddr: 0,
                    paddr: 0,
                    data: vec![0xee; 8],
                    memsz: 8,
                },
                Seg {
                    p_type: PT_LOAD,
                    vaddr: KERNELBASE + 0x1000,
                    paddr: 0x1000,
                    data: vec![0xbb; 0x10],
                    memsz: 0x2010,
                },
            ],
        )
    }

    fn mem() -> GuestMemoryMmap<()> {
        let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        m.write_slice(&[0x55; 0x10000], GuestAddress(0)).unwrap();
        m
    }

    #[test]
    fn loads_both_byte_orders_with_bss_and_translated_entry() {
        for endian in [Endian::Big, Endian::Little] {
            let m = mem();
            let k = load_elf(&m, &vmlinux(endian), 0x4000).unwrap();
            assert_eq!(
                k,
                ElfKernel {
                    entry: 0x4010,
                    endian,
                    low: 0x4000,
                    high: 0x7010
                }
            );
            let mut b = [0u8; 0x50];
            m.read_slice(&mut b, GuestAddress(0x4000)).unwrap();
            assert_eq!(b[..0x20], [0xaa; 0x20]);
            assert_eq!(b[0x20..0x40], [0; 0x20], "bss zeroed");
            assert_eq!(b[0x40..], [0x55; 0x10], "past memsz untouched");
            let mut b = [0u8; 0x2020];
            m.read_slice(&mut b, GuestAddress(0x5000)).unwrap();
            assert_eq!(b[..0x10], [0xbb; 0x10]);
            assert!(b[0x10..0x2010].iter().all(|&x| x == 0));
            assert_eq!(b[0x2010..], [0x55; 0x10]);
        }
    }

    #[test]
    fn refuses_what_is_not_a_ppc64_kernel() {
        let m = mem();
        let check = |img: &[u8], want: &str| {
            let e = load_elf(&m, img, 0).unwrap_err();
            assert!(e.to_string().starts_with(want), "{e} / {want}");
        };
        check(b"\x7fEL", "not an ELF image");
        let good = vmlinux(Endian::Big);
        let mut img = good.clone();
        img[4] = 1;
        check(&img, "not a 64-bit ELF image (class 1)");
        let mut img = good.clone();
        img[5] = 3;
        check(&img, "unknown ELF byte order 3");
        check(&good[..40], "the ELF header at offset 0x0 runs past");
        check(
            &elf(Endian::Little, 62, ET_EXEC, 0, &[]),
            "not a 64-bit PowerPC image (e_machine 62)",
        );
        check(
            &elf(Endian::Little, EM_PPC64, 1, 0, &[]),
            "not an executable ELF image (e_type 1)",
        );
        check(
            &elf(Endian::Little, EM_PPC64, ET_DYN, 0, &[]),
            "no loadable segment",
        );
        let mut img = good.clone();
        img[54..56].copy_from_slice(&32u16.to_be_bytes());
        check(&img, "program header size 32 is not 56");
        check(&good[..64 + 30], "the program header at offset 0x40");
        check(&good[..64 + 56], "the segment at offset 0xe8");
        check(&good[..good.len() - 1], "the segment at offset");
        let seg = |data: Vec<u8>, memsz: u64, paddr: u64| Seg {
            p_type: PT_LOAD,
            vaddr: paddr,
            paddr,
            data,
            memsz,
        };
        check(
            &elf(Endian::Big, EM_PPC64, ET_EXEC, 0, &[seg(vec![1; 8], 4, 0)]),
            "segment 0: file size 0x8 exceeds memory size 0x4",
        );
        check(
            &elf(
                Endian::Big,
                EM_PPC64,
                ET_EXEC,
                0,
                &[seg(vec![1; 8], 8, 0xfffc)],
            ),
            "segment 0 at guest address 0xfffc (0x8 bytes) is outside guest memory",
        );
        check(
            &elf(
                Endian::Big,
                EM_PPC64,
                ET_EXEC,
                0x100,
                &[seg(vec![1; 8], 8, 0)],
            ),
            "entry point 0x100 is in no loadable segment",
        );
        let e = load_elf(&m, &good, u64::MAX).unwrap_err();
        assert!(matches!(e, ElfError::OutsideMemory { index: 0, .. }));
        // Nothing is written when a later segment does not fit.
        let m = mem();
        assert!(load_elf(&m, &good, 0xd000).is_err());
        let mut b = [0u8; 0x20];
        m.read_slice(&mut b, GuestAddress(0xd000)).unwrap();
        assert_eq!(b, [0x55; 0x20]);
    }

    /// Guest memory whose writes start failing after `writes` of them,
    /// though its range check still passes (an IOMMU mapping revoked
    /// between the check and the write).
    struct Revoked {
        mem: GuestMemoryMmap<()>,
        writes: std::sync::atomic::AtomicUsize,
    }

    impl GuestMemory for Revoked {
        type PhysicalMemory = GuestMemoryMmap<()>;
        type Bitmap = ();

        fn check_range(&self, addr: GuestAddress, count: usize, access: Permissions) -> bool {
            GuestMemory::check_range(&self.mem, addr, count, access)
        }

        fn get_slices<'a>(
            &'a self,
            addr: GuestAddress,
            count: usize,
            access: Permissions,
        ) -> Result<
            impl vm_memory::guest_memory::GuestMemorySliceIterator<'a, vm_memory::bitmap::BS<'a, ()>>,
            vm_memory::GuestMemoryError,
        > {
            use std::sync::atomic::Ordering;
            if access.has_write()
                && self
                    .writes
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_err()
            {
                return Err(vm_memory::GuestMemoryError::InvalidGuestAddress(addr));
            }
            GuestMemory::get_slices(&self.mem, addr, count, access)
        }
    }

    #[test]
    fn a_failed_write_names_the_segment_and_its_address() {
        // Two writes go through: segment 0's data and its zeroed tail;
        // segment 2's data (index 1 is the PT_NOTE) is refused.
        let m = Revoked {
            mem: mem(),
            writes: 2.into(),
        };
        let e = load_elf(&m, &vmlinux(Endian::Big), 0x4000).unwrap_err();
        assert!(
            matches!(
                e,
                ElfError::Write {
                    index: 2,
                    gpa: 0x5000,
                    source: vm_memory::GuestMemoryError::InvalidGuestAddress(GuestAddress(0x5000))
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "cannot write segment 2 at guest address 0x5000"
        );
        let mut b = [0u8; 0x40];
        m.mem.read_slice(&mut b, GuestAddress(0x4000)).unwrap();
        assert_eq!(b[..0x20], [0xaa; 0x20]);
        assert_eq!(b[0x20..], [0; 0x20]);
        // A failure while zeroing a segment's tail is that segment's.
        let m = Revoked {
            mem: mem(),
            writes: 1.into(),
        };
        assert!(matches!(
            load_elf(&m, &vmlinux(Endian::Little), 0x4000),
            Err(ElfError::Write {
                index: 0,
                gpa: 0x4000,
                ..
            })
        ));
    }
}
