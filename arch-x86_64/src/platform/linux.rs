//! The Linux zero page (`struct boot_params`) for the 64-bit boot protocol.

use super::e820::E820Entry;
use super::error::{PlatformError, Result};
use super::layout::{CMDLINE_MAX_SIZE, ZERO_PAGE_ADDR};
use super::mem::{split_u64, write_table};
use linux_loader::loader::bootparam::{
    boot_e820_entry, boot_params, setup_header, CAN_USE_HEAP, E820_MAX_ENTRIES_ZEROPAGE,
    LOADED_HIGH, XLF_CAN_BE_LOADED_ABOVE_4G,
};
use vm_memory::{ByteValued, GuestMemory};

/// `boot_flag`: the 0xAA55 boot-sector signature.
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// `header`: "HdrS".
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
/// `type_of_loader`: "undefined" loader (no assigned id).
const KERNEL_LOADER_OTHER: u8 = 0xff;
/// `kernel_alignment` when the kernel gives none: 16 MiB, as x86 kernels use.
const KERNEL_MIN_ALIGNMENT: u32 = 0x100_0000;
/// `heap_end_ptr`: the end of the real-mode heap (64 KiB segment minus
/// 0x200), for the real-mode setup code; the 64-bit entry does not run it.
const HEAP_END_PTR: u16 = 0xfe00;
/// `initrd_addr_max` of boot protocols before 2.03.
const OLD_INITRD_ADDR_MAX: u32 = 0x37ff_ffff;
/// Command-line limit (without the NUL) of boot protocols before 2.06.
const OLD_CMDLINE_MAX: usize = 255;

/// What goes into the Linux zero page; see [`write_linux_boot_params`].
///
/// ```
/// use kvmkit_arch_x86_64::{LinuxBoot, CMDLINE_ADDR};
/// let boot = LinuxBoot {
///     setup_header: None,
///     cmdline_addr: CMDLINE_ADDR,
///     cmdline_len: 12,
///     initrd: None,
///     e820: &[],
///     rsdp_addr: 0,
/// };
/// assert_eq!(boot.cmdline_len, 12);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct LinuxBoot<'a> {
    /// The setup header of a bzImage (`KernelLoaderResult::setup_header`
    /// from linux-loader's `BzImage` loader), copied into the zero page;
    /// `None` for an ELF `vmlinux`.
    pub setup_header: Option<setup_header>,
    /// Where the VMM wrote the NUL-terminated command line (usually
    /// [`crate::CMDLINE_ADDR`]).
    pub cmdline_addr: u64,
    /// The command line's length in bytes, without the NUL.
    pub cmdline_len: usize,
    /// The initrd the VMM loaded, as `(gpa, size)`.
    pub initrd: Option<(u64, u64)>,
    /// The memory map, usually [`crate::e820_map`]'s; at most 128 entries.
    pub e820: &'a [E820Entry],
    /// The ACPI RSDP address ([`crate::write_acpi_tables`]'s result), or 0
    /// for none.
    pub rsdp_addr: u64,
}

/// Writes the Linux zero page at [`crate::ZERO_PAGE_ADDR`] and returns that
/// address, for `rsi` of the 64-bit entry (`BootSetup::LongMode`).
///
/// The page is linux-loader's `boot_params`. From a bzImage, its setup
/// header is copied in first; then kvmkit sets `type_of_loader` 0xff,
/// `boot_flag` 0xAA55, `header` "HdrS", `kernel_alignment` (16 MiB if the
/// kernel gives none), `loadflags` `LOADED_HIGH | CAN_USE_HEAP` with
/// `heap_end_ptr` 0xfe00, `cmd_line_ptr`/`ext_cmd_line_ptr`, the
/// ramdisk image and size (with their `ext_` high halves), `e820_entries`
/// and `e820_table`, and `acpi_rsdp_addr`. `cmdline_size` is the
/// kernel's limit in a bzImage header, which is checked, not overwritten;
/// without a header it is set to `cmdline_len`.
///
/// linux-loader's `LinuxBootConfigurator` only writes a prepared
/// `boot_params`, and needs a `GuestMemoryBackend`; this writes the same
/// struct through any [`GuestMemory`], checking the whole page fits first.
///
/// # Errors
///
/// [`PlatformError::TooManyE820Entries`] beyond 128 entries,
/// [`PlatformError::CmdlineTooLong`] beyond the kernel's `cmdline_size` (or
/// [`crate::CMDLINE_MAX_SIZE`]` - 1` without a header),
/// [`PlatformError::InitrdTooHigh`] for an initrd above the header's
/// `initrd_addr_max` (unless the kernel loads initrds above 4 GiB),
/// [`PlatformError::RangeOverflow`] for an initrd wrapping the address
/// space, and [`PlatformError::NoRoom`] if guest memory lacks the page.
///
/// ```
/// use kvmkit_arch_x86_64::{e820_map, write_linux_boot_params, LinuxBoot, CMDLINE_ADDR};
/// use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
///
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0xa_0000)]).unwrap();
/// let cmdline = b"console=ttyS0\0";
/// mem.write_slice(cmdline, GuestAddress(CMDLINE_ADDR)).unwrap();
/// let e820 = e820_map(&[(0, 0xa_0000), (0x10_0000, 0x800_0000)]);
/// let zero_page = write_linux_boot_params(
///     &mem,
///     &LinuxBoot {
///         setup_header: None,
///         cmdline_addr: CMDLINE_ADDR,
///         cmdline_len: cmdline.len() - 1,
///         initrd: Some((0x400_0000, 0x10_0000)),
///         e820: &e820,
///         rsdp_addr: 0xe_0000,
///     },
/// )
/// .unwrap();
/// assert_eq!(zero_page, 0x7000);
/// let cmd_line_ptr: u32 = mem.read_obj(GuestAddress(zero_page + 0x228)).unwrap();
/// assert_eq!(u64::from(cmd_line_ptr), CMDLINE_ADDR);
/// ```
pub fn write_linux_boot_params<M: GuestMemory + ?Sized>(
    mem: &M,
    boot: &LinuxBoot<'_>,
) -> Result<u64> {
    let params = boot_params_for(boot)?;
    write_table(mem, "zero page", ZERO_PAGE_ADDR, params.as_slice())?;
    Ok(ZERO_PAGE_ADDR)
}

/// Builds the zero page for `boot`.
fn boot_params_for(boot: &LinuxBoot<'_>) -> Result<boot_params> {
    let mut params = boot_params::default();
    if let Some(hdr) = boot.setup_header {
        params.hdr = hdr;
    }
    let version = params.hdr.version;
    let has_header = boot.setup_header.is_some();

    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    }
    params.hdr.loadflags |= LOADED_HIGH | CAN_USE_HEAP;
    params.hdr.heap_end_ptr = HEAP_END_PTR;

    // The command line.
    let max_cmdline = match (has_header, version) {
        (false, _) => CMDLINE_MAX_SIZE - 1,
        (true, v) if v < 0x206 => OLD_CMDLINE_MAX,
        (true, _) => usize::try_from(params.hdr.cmdline_size).unwrap_or(usize::MAX),
    };
    if boot.cmdline_len > max_cmdline {
        return Err(PlatformError::CmdlineTooLong {
            gpa: boot.cmdline_addr,
            len: boot.cmdline_len,
            max: max_cmdline,
        });
    }
    if !has_header {
        params.hdr.cmdline_size = u32::try_from(boot.cmdline_len).unwrap_or(u32::MAX);
    }
    let (cmd_lo, cmd_hi) = split_u64(boot.cmdline_addr);
    params.hdr.cmd_line_ptr = cmd_lo;
    params.ext_cmd_line_ptr = cmd_hi;

    // The initrd.
    if let Some((gpa, size)) = boot.initrd {
        let end = gpa.checked_add(size).ok_or(PlatformError::RangeOverflow {
            what: "initrd",
            gpa,
            len: size,
        })?;
        if has_header && params.hdr.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G == 0 {
            let addr_max = params.hdr.initrd_addr_max;
            let max = if version < 0x203 || addr_max == 0 {
                OLD_INITRD_ADDR_MAX
            } else {
                addr_max
            };
            if size > 0 && end - 1 > u64::from(max) {
                return Err(PlatformError::InitrdTooHigh {
                    gpa,
                    size,
                    max: u64::from(max),
                });
            }
        }
        let (img_lo, img_hi) = split_u64(gpa);
        let (size_lo, size_hi) = split_u64(size);
        params.hdr.ramdisk_image = img_lo;
        params.ext_ramdisk_image = img_hi;
        params.hdr.ramdisk_size = size_lo;
        params.ext_ramdisk_size = size_hi;
    }

    // The memory map.
    let entries = boot.e820.len();
    params.e820_entries = u8::try_from(entries)
        .ok()
        .filter(|_| entries <= E820_MAX_ENTRIES_ZEROPAGE)
        .ok_or(PlatformError::TooManyE820Entries {
            what: "zero page",
            entries,
            max: E820_MAX_ENTRIES_ZEROPAGE,
        })?;
    for (slot, e) in params.e820_table.iter_mut().zip(boot.e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind.linux_type(),
        };
    }

    params.acpi_rsdp_addr = boot.rsdp_addr;
    Ok(params)
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

    fn rd<T: ByteValued>(m: &GuestMemoryMmap, off: u64) -> T {
        m.read_obj(GuestAddress(ZERO_PAGE_ADDR + off)).unwrap()
    }

    fn boot(e820: &[E820Entry]) -> LinuxBoot<'_> {
        LinuxBoot {
            setup_header: None,
            cmdline_addr: CMDLINE_ADDR,
            cmdline_len: 20,
            initrd: Some((0x1_2345_6000, 0x1_0000_1000)),
            e820,
            rsdp_addr: 0xe_0000,
        }
    }

    #[test]
    fn fields_at_their_documented_offsets() {
        let m = mem();
        // Garbage first: the whole page is rewritten.
        m.write_slice(&[0xcc; 4096], GuestAddress(ZERO_PAGE_ADDR))
            .unwrap();
        let e820 = e820_map(&[(0, 0xa_0000), (0x10_0000, 0x1ff0_0000)]);
        let at = write_linux_boot_params(&m, &boot(&e820)).unwrap();
        assert_eq!(at, ZERO_PAGE_ADDR);

        assert_eq!(rd::<u64>(&m, 0x070), 0xe_0000); // acpi_rsdp_addr
        assert_eq!(rd::<u32>(&m, 0x0c0), 1); // ext_ramdisk_image
        assert_eq!(rd::<u32>(&m, 0x0c4), 1); // ext_ramdisk_size
        assert_eq!(rd::<u32>(&m, 0x0c8), 0); // ext_cmd_line_ptr
        assert_eq!(rd::<u8>(&m, 0x1e8), 6); // e820_entries
        assert_eq!(rd::<u16>(&m, 0x1fe), 0xaa55); // boot_flag
        assert_eq!(rd::<u32>(&m, 0x202), 0x5372_6448); // header
        assert_eq!(rd::<u8>(&m, 0x210), 0xff); // type_of_loader
        assert_eq!(rd::<u8>(&m, 0x211), LOADED_HIGH | CAN_USE_HEAP); // loadflags
        assert_eq!(rd::<u32>(&m, 0x218), 0x2345_6000); // ramdisk_image
        assert_eq!(rd::<u32>(&m, 0x21c), 0x1000); // ramdisk_size
        assert_eq!(rd::<u16>(&m, 0x224), 0xfe00); // heap_end_ptr
        assert_eq!(rd::<u32>(&m, 0x228), 0x2_0000); // cmd_line_ptr
        assert_eq!(rd::<u32>(&m, 0x230), 0x100_0000); // kernel_alignment
        assert_eq!(rd::<u32>(&m, 0x238), 20); // cmdline_size
        for (i, e) in e820.iter().enumerate() {
            let off = 0x2d0 + 20 * i as u64; // e820_table
            assert_eq!(rd::<u64>(&m, off), e.addr);
            assert_eq!(rd::<u64>(&m, off + 8), e.size);
            assert_eq!(rd::<u32>(&m, off + 16), e.kind.linux_type());
        }
        assert_eq!(rd::<u64>(&m, 0x2d0 + 20 * 6), 0); // past the map
        assert_eq!(rd::<u64>(&m, 0xff8), 0); // tail of the page
    }

    fn bzimage_header() -> setup_header {
        setup_header {
            setup_sects: 0x1b,
            version: 0x20f,
            loadflags: LOADED_HIGH,
            kernel_alignment: 0x20_0000,
            cmdline_size: 0x7ff,
            initrd_addr_max: 0x7fff_ffff,
            xloadflags: 0x1,
            ..Default::default()
        }
    }

    #[test]
    fn bzimage_header_is_kept_and_its_limits_checked() {
        let m = mem();
        let mut b = boot(&[]);
        b.setup_header = Some(bzimage_header());
        b.initrd = Some((0x7000_0000, 0x100_0000));
        write_linux_boot_params(&m, &b).unwrap();
        assert_eq!(rd::<u8>(&m, 0x1f1), 0x1b); // setup_sects
        assert_eq!(rd::<u16>(&m, 0x206), 0x20f); // version
        assert_eq!(rd::<u32>(&m, 0x230), 0x20_0000); // kernel_alignment kept
        assert_eq!(rd::<u32>(&m, 0x238), 0x7ff); // cmdline_size kept
        assert_eq!(rd::<u8>(&m, 0x1e8), 0);

        b.cmdline_len = 0x800;
        let e = write_linux_boot_params(&m, &b).unwrap_err();
        assert!(matches!(
            e,
            PlatformError::CmdlineTooLong { max: 0x7ff, .. }
        ));

        b.cmdline_len = 10;
        b.initrd = Some((0x7fff_f000, 0x2000));
        let e = write_linux_boot_params(&m, &b).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the initrd at 0x7ffff000 (0x2000 bytes) ends above 0x7fffffff, the kernel's initrd_addr_max"
        );

        // A kernel that takes initrds above 4 GiB.
        let mut hdr = bzimage_header();
        hdr.xloadflags |= XLF_CAN_BE_LOADED_ABOVE_4G;
        b.setup_header = Some(hdr);
        write_linux_boot_params(&m, &b).unwrap();

        // An old protocol: 255-byte command lines, initrds below 0x38000000.
        let hdr = setup_header {
            version: 0x202,
            initrd_addr_max: 0x7fff_ffff,
            ..Default::default()
        };
        b.setup_header = Some(hdr);
        b.cmdline_len = 256;
        let e = write_linux_boot_params(&m, &b).unwrap_err();
        assert!(matches!(e, PlatformError::CmdlineTooLong { max: 255, .. }));
        b.cmdline_len = 255;
        let e = write_linux_boot_params(&m, &b).unwrap_err();
        assert!(matches!(
            e,
            PlatformError::InitrdTooHigh {
                max: 0x37ff_ffff,
                ..
            }
        ));
    }

    #[test]
    fn errors() {
        let m = mem();
        let mut b = boot(&[]);
        b.cmdline_len = CMDLINE_MAX_SIZE;
        assert!(matches!(
            write_linux_boot_params(&m, &b).unwrap_err(),
            PlatformError::CmdlineTooLong { max: 2047, .. }
        ));

        b.cmdline_len = 1;
        b.initrd = Some((u64::MAX - 1, 4));
        assert!(matches!(
            write_linux_boot_params(&m, &b).unwrap_err(),
            PlatformError::RangeOverflow { what: "initrd", .. }
        ));

        b.initrd = None;
        let many = vec![
            E820Entry {
                addr: 0,
                size: 1,
                kind: E820Kind::Ram
            };
            129
        ];
        b.e820 = &many;
        assert_eq!(
            write_linux_boot_params(&m, &b).unwrap_err().to_string(),
            "the zero page holds at most 128 memory map entries, got 129"
        );
        b.e820 = &many[..128];
        write_linux_boot_params(&m, &b).unwrap();
        assert_eq!(rd::<u8>(&m, 0x1e8), 128);

        let small = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x7800)]).unwrap();
        assert_eq!(
            write_linux_boot_params(&small, &b).unwrap_err().to_string(),
            "guest memory has no room for the zero page (4096 bytes) at 0x7000"
        );
    }
}
