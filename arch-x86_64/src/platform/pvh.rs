//! The PVH start info (`struct hvm_start_info`) with its memory map and
//! module list.

use super::e820::E820Entry;
use super::error::{PlatformError, Result};
use super::layout::{PVH_INFO_ADDR, PVH_INFO_END, PVH_MEMMAP_ADDR};
use super::mem::write_table;
use linux_loader::loader::bootparam::E820_MAX_ENTRIES_ZEROPAGE;
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info, XEN_HVM_START_MAGIC_VALUE,
};
use std::mem::size_of;
use vm_memory::{ByteValued, GuestMemory};

/// The start-info version written: 1, which carries the memory map.
const START_INFO_VERSION: u32 = 1;

/// Memory map entries taken: Linux copies the PVH memory map into its
/// zero-page e820 table (128 entries) without a bound check, so more would
/// overrun it in the guest.
const MAX_MEMMAP_ENTRIES: usize = E820_MAX_ENTRIES_ZEROPAGE;

// The largest memory map and the module list fit below the zero page.
const _: () = assert!(
    PVH_MEMMAP_ADDR
        + (MAX_MEMMAP_ENTRIES * size_of::<hvm_memmap_table_entry>()) as u64
        + size_of::<hvm_modlist_entry>() as u64
        <= PVH_INFO_END
);

/// What goes into the PVH start info; see [`write_pvh_start_info`].
///
/// ```
/// use kvmkit_arch_x86_64::{PvhBoot, CMDLINE_ADDR};
/// let boot = PvhBoot { cmdline_addr: CMDLINE_ADDR, initrd: None, e820: &[], rsdp_addr: 0 };
/// assert!(boot.initrd.is_none());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct PvhBoot<'a> {
    /// Where the VMM wrote the NUL-terminated command line, or 0 for none.
    pub cmdline_addr: u64,
    /// The initrd the VMM loaded, as `(gpa, size)`: the one module.
    pub initrd: Option<(u64, u64)>,
    /// The memory map, usually [`crate::e820_map`]'s.
    pub e820: &'a [E820Entry],
    /// The ACPI RSDP address ([`crate::write_acpi_tables`]'s result), or 0
    /// for none.
    pub rsdp_addr: u64,
}

/// Writes the PVH start info at [`crate::PVH_INFO_ADDR`] and returns that
/// address, for `ebx` of the PVH entry (`BootSetup::Protected32`).
///
/// The start info is linux-loader's `hvm_start_info`: magic 0x336ec578,
/// version 1, `cmdline_paddr`, `rsdp_paddr`, the memory map (the e820 map,
/// same type numbers) at [`crate::PVH_MEMMAP_ADDR`], and for an initrd one
/// `hvm_modlist_entry` right after the memory map. linux-loader's
/// `PvhBootConfigurator` needs a `GuestMemoryBackend`; this writes the same
/// structs through any [`GuestMemory`].
///
/// # Errors
///
/// [`PlatformError::TooManyE820Entries`] beyond 128 memory map entries
/// (Linux copies them into its 128-entry e820 table unchecked),
/// [`PlatformError::RangeOverflow`] for an initrd wrapping
/// the address space, [`PlatformError::NoRoom`] if guest memory lacks the
/// area.
///
/// ```
/// use kvmkit_arch_x86_64::{e820_map, write_pvh_start_info, PvhBoot, CMDLINE_ADDR};
/// use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
///
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0xa_0000)]).unwrap();
/// let e820 = e820_map(&[(0, 0xa_0000), (0x10_0000, 0x800_0000)]);
/// let boot = PvhBoot { cmdline_addr: CMDLINE_ADDR, initrd: None, e820: &e820, rsdp_addr: 0xe_0000 };
/// let ebx = write_pvh_start_info(&mem, &boot).unwrap();
/// assert_eq!(ebx, 0x6000);
/// let magic: u32 = mem.read_obj(GuestAddress(ebx)).unwrap();
/// assert_eq!(magic, 0x336e_c578);
/// ```
pub fn write_pvh_start_info<M: GuestMemory + ?Sized>(mem: &M, boot: &PvhBoot<'_>) -> Result<u64> {
    let memmap: Vec<u8> = boot
        .e820
        .iter()
        .flat_map(|e| {
            hvm_memmap_table_entry {
                addr: e.addr,
                size: e.size,
                type_: e.kind.linux_type(),
                reserved: 0,
            }
            .as_slice()
            .to_vec()
        })
        .collect();
    let modlist_addr = PVH_MEMMAP_ADDR + memmap.len() as u64;
    let module = match boot.initrd {
        Some((paddr, size)) => {
            paddr
                .checked_add(size)
                .ok_or(PlatformError::RangeOverflow {
                    what: "initrd",
                    gpa: paddr,
                    len: size,
                })?;
            Some(hvm_modlist_entry {
                paddr,
                size,
                cmdline_paddr: 0,
                reserved: 0,
            })
        }
        None => None,
    };
    let entries = boot.e820.len();
    if entries > MAX_MEMMAP_ENTRIES {
        return Err(PlatformError::TooManyE820Entries {
            what: "PVH start info",
            entries,
            max: MAX_MEMMAP_ENTRIES,
        });
    }

    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: START_INFO_VERSION,
        flags: 0,
        nr_modules: u32::from(module.is_some()),
        modlist_paddr: if module.is_some() { modlist_addr } else { 0 },
        cmdline_paddr: boot.cmdline_addr,
        rsdp_paddr: boot.rsdp_addr,
        memmap_paddr: PVH_MEMMAP_ADDR,
        // At most MAX_MEMMAP_ENTRIES, checked above.
        memmap_entries: u32::try_from(entries).unwrap_or(u32::MAX),
        reserved: 0,
    };
    write_table(mem, "PVH start info", PVH_INFO_ADDR, info.as_slice())?;
    write_table(mem, "PVH memory map", PVH_MEMMAP_ADDR, &memmap)?;
    if let Some(module) = module {
        write_table(mem, "PVH module list", modlist_addr, module.as_slice())?;
    }
    Ok(PVH_INFO_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::e820::{e820_map, E820Kind};
    use crate::platform::layout::CMDLINE_ADDR;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0xa_0000)]).unwrap()
    }

    #[test]
    fn start_info_memmap_and_module() {
        let m = mem();
        let e820 = e820_map(&[(0, 0xa_0000), (0x10_0000, 0x3ff0_0000)]);
        let boot = PvhBoot {
            cmdline_addr: CMDLINE_ADDR,
            initrd: Some((0x200_0000, 0x12_3456)),
            e820: &e820,
            rsdp_addr: 0xe_0000,
        };
        assert_eq!(write_pvh_start_info(&m, &boot).unwrap(), PVH_INFO_ADDR);

        let info: hvm_start_info = m.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
        assert_eq!(info.magic, 0x336e_c578);
        assert_eq!(info.version, 1);
        assert_eq!(info.flags, 0);
        assert_eq!(info.cmdline_paddr, CMDLINE_ADDR);
        assert_eq!(info.rsdp_paddr, 0xe_0000);
        assert_eq!(info.memmap_paddr, 0x6040);
        assert_eq!(info.memmap_entries, 6);
        assert_eq!(info.nr_modules, 1);
        assert_eq!(info.modlist_paddr, 0x6040 + 6 * 24);
        // Raw offsets of the start_info ABI.
        let raw = |off: u64| {
            m.read_obj::<u64>(GuestAddress(PVH_INFO_ADDR + off))
                .unwrap()
        };
        assert_eq!(raw(0x10), info.modlist_paddr);
        assert_eq!(raw(0x18), CMDLINE_ADDR);
        assert_eq!(raw(0x20), 0xe_0000);
        assert_eq!(raw(0x28), 0x6040);
        assert_eq!(raw(0x30) & 0xffff_ffff, 6);

        for (i, e) in e820.iter().enumerate() {
            let at = GuestAddress(0x6040 + 24 * i as u64);
            let got: hvm_memmap_table_entry = m.read_obj(at).unwrap();
            assert_eq!(
                (got.addr, got.size, got.type_),
                (e.addr, e.size, e.kind as u32)
            );
        }
        let module: hvm_modlist_entry = m.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!(
            (module.paddr, module.size, module.cmdline_paddr),
            (0x200_0000, 0x12_3456, 0)
        );
    }

    #[test]
    fn no_initrd_no_module_list() {
        let m = mem();
        let e820 = e820_map(&[(0, 0xa_0000)]);
        let boot = PvhBoot {
            cmdline_addr: 0,
            initrd: None,
            e820: &e820,
            rsdp_addr: 0,
        };
        write_pvh_start_info(&m, &boot).unwrap();
        let info: hvm_start_info = m.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
        assert_eq!((info.nr_modules, info.modlist_paddr), (0, 0));
        assert_eq!(info.memmap_entries, 5);
    }

    #[test]
    fn errors() {
        let m = mem();
        let entry = E820Entry {
            addr: 0,
            size: 1,
            kind: E820Kind::Ram,
        };
        let many = vec![entry; 129];
        let mut boot = PvhBoot {
            cmdline_addr: 0,
            initrd: None,
            e820: &many,
            rsdp_addr: 0,
        };
        boot.initrd = Some((0x100_0000, 0x1000));
        assert_eq!(
            write_pvh_start_info(&m, &boot).unwrap_err().to_string(),
            "the PVH start info holds at most 128 memory map entries, got 129"
        );
        boot.e820 = &many[..128];
        write_pvh_start_info(&m, &boot).unwrap();
        let info: hvm_start_info = m.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
        assert_eq!(info.memmap_entries, 128);
        assert_eq!(info.modlist_paddr, 0x6040 + 128 * 24);
        boot.initrd = Some((u64::MAX, 2));
        assert!(matches!(
            write_pvh_start_info(&m, &boot).unwrap_err(),
            PlatformError::RangeOverflow { .. }
        ));

        let small = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x6020)]).unwrap();
        boot.initrd = None;
        assert_eq!(
            write_pvh_start_info(&small, &boot).unwrap_err().to_string(),
            "guest memory has no room for the PVH start info (56 bytes) at 0x6000"
        );
    }
}
