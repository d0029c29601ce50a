//! Kernel, initramfs and command line: detection, validation and loading.

use crate::{Error, Result};
use linux_loader::bootparam::setup_header;
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Where protected-mode kernels are loaded (1 MiB).
pub const HIMEM_START: u64 = 0x10_0000;

/// How the loaded kernel is entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootEntry {
    /// The Linux 64-bit boot protocol: long mode, `rsi` = zero page.
    Linux64 {
        /// The 64-bit entry point.
        entry: u64,
    },
    /// The PVH boot protocol: 32-bit protected mode, `ebx` = start_info.
    Pvh {
        /// The 32-bit entry point from the ELF note.
        entry: u32,
    },
}

/// A kernel placed in guest memory.
#[derive(Clone, Debug)]
pub struct LoadedKernel {
    /// How to enter it.
    pub entry: BootEntry,
    /// The bzImage setup header, for the zero page.
    pub setup_header: Option<setup_header>,
    /// First byte after the kernel.
    pub end: u64,
}

/// The kernel image formats this VMM boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// A bzImage (setup header magic `HdrS` at 0x202).
    BzImage,
    /// An ELF executable.
    Elf,
}

/// Tells a kernel's format from its first bytes.
///
/// ```
/// use kvmkit_vmm_reference::kernel::{detect, KernelFormat};
/// assert_eq!(detect(b"\x7fELF\x02\x01\x01"), Ok(KernelFormat::Elf));
/// assert!(detect(b"garbage").is_err());
/// ```
pub fn detect(bytes: &[u8]) -> std::result::Result<KernelFormat, String> {
    if bytes.starts_with(b"\x7fELF") {
        if bytes.get(4) != Some(&2) {
            return Err("ELF but not 64-bit".into());
        }
        return Ok(KernelFormat::Elf);
    }
    if bytes.get(0x202..0x206) == Some(b"HdrS") {
        return Ok(KernelFormat::BzImage);
    }
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    Err("no ELF magic and no bzImage header".into())
}

/// Loads a kernel image held in `bytes` into `mem`.
pub fn load_kernel(mem: &GuestMemoryMmap, bytes: &[u8], path: &Path) -> Result<LoadedKernel> {
    let fmt = detect(bytes).map_err(|detail| Error::KernelFormat {
        path: path.to_path_buf(),
        detail,
    })?;
    let load_err = |e: linux_loader::loader::Error| Error::KernelLoad {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let mut image = Cursor::new(bytes);
    match fmt {
        KernelFormat::Elf => {
            let r = Elf::load(mem, None, &mut image, Some(GuestAddress(HIMEM_START)))
                .map_err(load_err)?;
            let entry = match r.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(a) => BootEntry::Pvh {
                    entry: u32::try_from(a.0).map_err(|_| Error::KernelLoad {
                        path: path.to_path_buf(),
                        detail: format!("PVH entry {:#x} is above 4 GiB", a.0),
                    })?,
                },
                _ => BootEntry::Linux64 {
                    entry: r.kernel_load.0,
                },
            };
            Ok(LoadedKernel {
                entry,
                setup_header: None,
                end: r.kernel_end,
            })
        }
        KernelFormat::BzImage => {
            let r = BzImage::load(mem, None, &mut image, Some(GuestAddress(HIMEM_START)))
                .map_err(load_err)?;
            Ok(LoadedKernel {
                // startup_64 is 0x200 past the protected-mode code start.
                entry: BootEntry::Linux64 {
                    entry: r.kernel_load.0 + 0x200,
                },
                setup_header: r.setup_header,
                end: r.kernel_end,
            })
        }
    }
}

/// Compression formats the kernel can unpack an initramfs from, by magic.
const COMPRESSED: &[(&[u8], &str)] = &[
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"BZh", "bzip2"),
    (b"\x5d\x00\x00", "lzma"),
    (b"\x89LZO", "lzo"),
];

/// Checks that `bytes` is an initramfs: an uncompressed newc/crc cpio archive
/// is walked to its `TRAILER!!!` (so a truncated one is refused); a compressed
/// one must start with a known magic and, for gzip, end with a plausible size.
pub fn validate_initramfs(bytes: &[u8]) -> std::result::Result<(), String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    if let Some((_, name)) = COMPRESSED.iter().find(|(m, _)| bytes.starts_with(m)) {
        if *name == "gzip" && bytes.len() < 18 {
            return Err("gzip stream shorter than its header and trailer".into());
        }
        return Ok(());
    }
    walk_cpio(bytes)
}

fn hex_field(h: &[u8], i: usize) -> std::result::Result<usize, String> {
    let f = h
        .get(6 + 8 * i..14 + 8 * i)
        .ok_or("truncated cpio header")?;
    let s = std::str::from_utf8(f).map_err(|_| "non-ASCII cpio header")?;
    usize::from_str_radix(s, 16).map_err(|_| format!("bad cpio header field '{s}'"))
}

fn walk_cpio(bytes: &[u8]) -> std::result::Result<(), String> {
    let align4 = |n: usize| n.div_ceil(4) * 4;
    if !(bytes.starts_with(b"070701") || bytes.starts_with(b"070702")) {
        return Err("not a cpio archive and no known compression magic".into());
    }
    let mut off = 0usize;
    loop {
        let h = bytes
            .get(off..off + 110)
            .ok_or_else(|| format!("truncated: cpio header at byte {off} cut short"))?;
        if !(h.starts_with(b"070701") || h.starts_with(b"070702")) {
            return Err(if off == 0 {
                "not a cpio archive and no known compression magic".into()
            } else {
                format!("bad cpio magic at byte {off}")
            });
        }
        let filesize = hex_field(h, 6)?;
        let namesize = hex_field(h, 11)?;
        let name_end = off + 110 + namesize;
        let name = bytes
            .get(off + 110..name_end)
            .ok_or_else(|| format!("truncated: file name at byte {} cut short", off + 110))?;
        let data = align4(name_end);
        let next = align4(data + filesize);
        if name.starts_with(b"TRAILER!!!") {
            return Ok(());
        }
        if next > bytes.len() {
            return Err(format!(
                "truncated: {} needs {filesize} bytes at byte {data}, the file ends at {}",
                String::from_utf8_lossy(name.strip_suffix(b"\0").unwrap_or(name)),
                bytes.len()
            ));
        }
        off = next;
    }
}

/// Places the initramfs at the highest page-aligned address that keeps it
/// below `limit` and above `kernel_end`; returns (address, size).
pub fn load_initramfs(
    mem: &GuestMemoryMmap,
    bytes: &[u8],
    path: &Path,
    kernel_end: u64,
    limit: u64,
) -> Result<(u64, u64)> {
    validate_initramfs(bytes).map_err(|detail| Error::Initramfs {
        path: PathBuf::from(path),
        detail,
    })?;
    let len = bytes.len() as u64;
    let addr = limit
        .checked_sub(len)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= kernel_end)
        .ok_or(Error::DoesNotFit {
            what: "initramfs",
            len,
            limit,
        })?;
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|e| Error::BootData {
            what: "initramfs",
            detail: e.to_string(),
        })?;
    Ok((addr, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpio_entry(name: &str, data: &[u8]) -> Vec<u8> {
        let mut v =
            format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            1, 0o100644, 0, 0, 1, 0, data.len(), 0, 0, 0, 0, name.len() + 1, 0
        )
            .into_bytes();
        v.extend(name.as_bytes());
        v.push(0);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v.extend(data);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn cpio_walk_accepts_whole_and_refuses_truncated() {
        let mut a = cpio_entry("init", b"#!/bin/sh\necho hi\n");
        a.extend(cpio_entry("TRAILER!!!", b""));
        assert_eq!(validate_initramfs(&a), Ok(()));
        let e = validate_initramfs(&a[..40]).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let e = validate_initramfs(&a[..130]).unwrap_err();
        assert!(e.contains("truncated: init needs"), "{e}");
        let e = validate_initramfs(b"hello world").unwrap_err();
        assert!(e.contains("not a cpio archive"), "{e}");
        assert!(validate_initramfs(b"").is_err());
        assert!(validate_initramfs(b"\x1f\x8b\x08").is_err());
        let mut gz = b"\x1f\x8b\x08\x00".to_vec();
        gz.resize(40, 0);
        assert_eq!(validate_initramfs(&gz), Ok(()));
        let mut bad = a.clone();
        bad[54] = b'z'; // in c_filesize
        assert!(validate_initramfs(&bad)
            .unwrap_err()
            .contains("bad cpio header field"));
    }

    #[test]
    fn detection() {
        assert_eq!(detect(b"\x7fELF\x01"), Err("ELF but not 64-bit".into()));
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(detect(&bz), Ok(KernelFormat::BzImage));
        assert_eq!(detect(b""), Err("the file is empty".into()));
    }

    #[test]
    fn initramfs_placement() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mut a = cpio_entry("TRAILER!!!", b"");
        a.resize(5000, 0);
        let (addr, len) = load_initramfs(&mem, &a, Path::new("i"), 0x1000, 1 << 20).unwrap();
        assert_eq!((addr, len), (0xfe000, 5000));
        let e = load_initramfs(&mem, &a, Path::new("i"), 0xff000, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
    }
}
