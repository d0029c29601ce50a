//! Boot set-up: the mode a vCPU starts in, with the GDT and page tables it needs.

use crate::{Error, Result};
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

/// Where the boot GDT is written (below the real-mode-unsafe area, above the BDA).
pub const BOOT_GDT_ADDR: u64 = 0x500;
/// Where the boot page tables start: PML4, PDPT, then four page directories.
pub const BOOT_PAGE_TABLES_ADDR: u64 = 0x1000;
/// Bytes of boot page tables: 6 pages, identity-mapping the first 4 GiB.
pub const BOOT_PAGE_TABLES_SIZE: u64 = 6 * 4096;

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// The selectors of the boot GDT: those the Linux 64-bit boot protocol asks
/// for (`__BOOT_CS` = 0x10, `__BOOT_DS` = 0x18), a 32-bit code segment for the
/// PVH entry, and a TSS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GdtLayout;

impl GdtLayout {
    /// 32-bit flat code segment.
    pub const CODE32: u16 = 0x08;
    /// 64-bit code segment (`__BOOT_CS`).
    pub const CODE64: u16 = 0x10;
    /// Flat 4 GiB data segment (`__BOOT_DS`).
    pub const DATA: u16 = 0x18;
    /// 64-bit TSS (busy).
    pub const TSS: u16 = 0x20;

    /// The raw descriptors, in selector order.
    pub const ENTRIES: [u64; 5] = [
        0,
        0x00cf_9b00_0000_ffff, // code32: G, D/B, P, exec/read, accessed
        0x00af_9b00_0000_ffff, // code64: L, P, DPL0, exec/read, accessed
        0x00cf_9300_0000_ffff, // data: G, D/B, P, read/write, accessed
        0x008f_8b00_0000_ffff, // TSS: P, busy 32/64-bit TSS
    ];
}

const GDT_LIMIT: u16 = 5 * 8 - 1;
const _: () = assert!(GdtLayout::ENTRIES.len() * 8 - 1 == GDT_LIMIT as usize);

/// How a vCPU starts: the `Arch::BootSetup` of [`crate::X86_64`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootSetup {
    /// 16-bit real mode at `cs_base + ip` (the reset state, for tiny test guests).
    RealMode {
        /// The code segment base; `cs` = `cs_base >> 4`.
        cs_base: u32,
        /// The instruction pointer.
        ip: u16,
        /// The stack pointer (`ss` = `cs`).
        sp: u16,
    },
    /// 32-bit protected mode, paging off, flat segments: the PVH entry state,
    /// with `ebx` = the `hvm_start_info` address.
    Protected32 {
        /// The entry point.
        entry: u32,
        /// The value of `ebx`.
        ebx: u32,
    },
    /// 64-bit long mode with the first 4 GiB identity-mapped (2 MiB pages)
    /// and a flat GDT: the Linux 64-bit boot protocol entry state, with
    /// `rsi` = the zero-page address.
    LongMode {
        /// The entry point.
        entry: u64,
        /// The stack pointer.
        stack: u64,
        /// The value of `rsi`.
        rsi: u64,
    },
}

/// Unpacks a GDT descriptor into KVM's segment form.
#[allow(clippy::cast_possible_truncation)] // every value is masked to its field width first
fn seg(selector: u16, desc: u64) -> kvm_segment {
    let limit = ((desc & 0xffff) | ((desc >> 32) & 0xf_0000)) as u32;
    let g = (desc >> 55) & 1;
    let bits = |shift: u32, mask: u64| ((desc >> shift) & mask) as u8;
    kvm_segment {
        base: 0,
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector,
        type_: bits(40, 0xf),
        present: bits(47, 1),
        dpl: bits(45, 3),
        db: bits(54, 1),
        s: bits(44, 1),
        l: bits(53, 1),
        g: bits(55, 1),
        avl: bits(52, 1),
        unusable: 0,
        padding: 0,
    }
}

fn write<M: GuestMemory>(mem: &M, what: &'static str, gpa: u64, bytes: &[u8]) -> Result<()> {
    mem.write_slice(bytes, GuestAddress(gpa))
        .map_err(|source| Error::WriteBootData { what, gpa, source })
}

fn write_gdt<M: GuestMemory>(mem: &M) -> Result<()> {
    let bytes: Vec<u8> = GdtLayout::ENTRIES
        .iter()
        .flat_map(|e| e.to_le_bytes())
        .collect();
    write(mem, "boot GDT", BOOT_GDT_ADDR, &bytes)
}

/// The identity map of the first 4 GiB with 2 MiB pages.
fn page_tables() -> Vec<u8> {
    const PAGE: usize = 4096;
    let base = BOOT_PAGE_TABLES_ADDR;
    let mut t = vec![0u8; 6 * PAGE];
    let mut put = |off: usize, v: u64| t[off..off + 8].copy_from_slice(&v.to_le_bytes());
    put(0, (base + 0x1000) | 0x3); // PML4[0] -> PDPT, present + writable
    for (i, gib) in (0..4u64).enumerate() {
        put(PAGE + 8 * i, (base + 0x2000 + 0x1000 * gib) | 0x3);
        for (j, mib2) in (0..512u64).enumerate() {
            let addr = (gib << 30) | (mib2 << 21);
            put(2 * PAGE + PAGE * i + 8 * j, addr | 0x83); // PS, RW, P
        }
    }
    t
}

/// Sets `sregs`, `regs` and `fpu` for `boot`, writing the GDT and (long mode)
/// page tables into `mem`. `sregs` comes from `KVM_GET_SREGS` so that fields
/// this does not touch (APIC base, interrupt bitmap) are kept.
pub(crate) fn prepare<M: GuestMemory>(
    mem: &M,
    boot: &BootSetup,
    sregs: &mut kvm_sregs,
) -> Result<(kvm_regs, Option<kvm_fpu>)> {
    let mut regs = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    match *boot {
        BootSetup::RealMode { cs_base, ip, sp } => {
            let sel = u16::try_from(cs_base >> 4).unwrap_or(0xffff);
            let mut s = kvm_segment {
                base: u64::from(sel) << 4,
                limit: 0xffff,
                selector: sel,
                type_: 3,
                present: 1,
                s: 1,
                ..Default::default()
            };
            sregs.ds = s;
            sregs.es = s;
            sregs.fs = s;
            sregs.gs = s;
            sregs.ss = s;
            s.type_ = 0xb;
            sregs.cs = s;
            sregs.cr0 &= !(CR0_PE | CR0_PG);
            sregs.efer &= !(EFER_LME | EFER_LMA);
            regs.rip = u64::from(ip);
            regs.rsp = u64::from(sp);
            Ok((regs, None))
        }
        BootSetup::Protected32 { entry, ebx } => {
            write_gdt(mem)?;
            flat_segments(sregs, GdtLayout::CODE32);
            sregs.cr0 = (sregs.cr0 | CR0_PE | CR0_ET) & !CR0_PG;
            sregs.cr4 &= !CR4_PAE;
            sregs.efer &= !(EFER_LME | EFER_LMA);
            regs.rip = u64::from(entry);
            regs.rbx = u64::from(ebx);
            Ok((regs, Some(initial_fpu())))
        }
        BootSetup::LongMode { entry, stack, rsi } => {
            write_gdt(mem)?;
            write(
                mem,
                "boot page tables",
                BOOT_PAGE_TABLES_ADDR,
                &page_tables(),
            )?;
            flat_segments(sregs, GdtLayout::CODE64);
            sregs.cr3 = BOOT_PAGE_TABLES_ADDR;
            sregs.cr4 |= CR4_PAE;
            sregs.cr0 |= CR0_PE | CR0_ET | CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
            regs.rip = entry;
            regs.rsp = stack;
            regs.rbp = stack;
            regs.rsi = rsi;
            Ok((regs, Some(initial_fpu())))
        }
    }
}

fn flat_segments(sregs: &mut kvm_sregs, code: u16) {
    let entry = |sel: u16| GdtLayout::ENTRIES[usize::from(sel >> 3)];
    let data = seg(GdtLayout::DATA, entry(GdtLayout::DATA));
    sregs.cs = seg(code, entry(code));
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = seg(GdtLayout::TSS, entry(GdtLayout::TSS));
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = GDT_LIMIT;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
}

/// The FPU state after `fninit`, with the default MXCSR.
fn initial_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    #[test]
    fn long_mode_writes_tables_and_sets_paging() {
        let m = mem();
        let mut s = kvm_sregs::default();
        let (r, fpu) = prepare(
            &m,
            &BootSetup::LongMode {
                entry: 0x10_0000,
                stack: 0x8ff0,
                rsi: 0x7000,
            },
            &mut s,
        )
        .unwrap();
        assert_eq!(
            (r.rip, r.rsp, r.rsi, r.rflags),
            (0x10_0000, 0x8ff0, 0x7000, 2)
        );
        assert_eq!(s.cr3, BOOT_PAGE_TABLES_ADDR);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(
            (s.cs.l, s.cs.db, s.cs.selector, s.cs.type_),
            (1, 0, 0x10, 0xb)
        );
        assert_eq!(
            (s.ds.selector, s.ss.selector, s.tr.selector),
            (0x18, 0x18, 0x20)
        );
        assert_eq!((s.ds.limit, s.ds.g, s.ds.db), (0xffff_ffff, 1, 1));
        assert_eq!(fpu.unwrap().fcw, 0x37f);
        let pml4: u64 = m.read_obj(GuestAddress(BOOT_PAGE_TABLES_ADDR)).unwrap();
        assert_eq!(pml4, 0x2003);
        // The PDE mapping 3 GiB + 2 MiB.
        let pde: u64 = m
            .read_obj(GuestAddress(0x1000 + 0x2000 + 3 * 0x1000 + 8))
            .unwrap();
        assert_eq!(pde, (3 << 30) | (1 << 21) | 0x83);
        let gdt2: u64 = m.read_obj(GuestAddress(BOOT_GDT_ADDR + 0x10)).unwrap();
        assert_eq!(gdt2, GdtLayout::ENTRIES[2]);
    }

    #[test]
    fn protected_and_real_mode() {
        let m = mem();
        let mut s = kvm_sregs {
            cr0: CR0_PG,
            ..Default::default()
        };
        let (r, _) = prepare(
            &m,
            &BootSetup::Protected32 {
                entry: 0x10_0040,
                ebx: 0x6000,
            },
            &mut s,
        )
        .unwrap();
        assert_eq!((r.rip, r.rbx), (0x10_0040, 0x6000));
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE);
        assert_eq!((s.cs.selector, s.cs.db, s.cs.l), (GdtLayout::CODE32, 1, 0));
        let (r, fpu) = prepare(
            &m,
            &BootSetup::RealMode {
                cs_base: 0x1000,
                ip: 0x10,
                sp: 0x800,
            },
            &mut s,
        )
        .unwrap();
        assert!(fpu.is_none());
        assert_eq!((r.rip, r.rsp), (0x10, 0x800));
        assert_eq!((s.cs.selector, s.cs.base), (0x100, 0x1000));
        assert_eq!(s.cr0 & CR0_PE, 0);
    }

    #[test]
    fn out_of_memory_write_is_an_error() {
        let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x10_0000), 4096)]).unwrap();
        let mut s = kvm_sregs::default();
        let e = prepare(&m, &BootSetup::Protected32 { entry: 0, ebx: 0 }, &mut s).unwrap_err();
        assert!(e.to_string().contains("boot GDT at guest address 0x500"));
    }
}
