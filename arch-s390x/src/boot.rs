//! Booting a Linux kernel image the way a VMM loads it directly (QEMU's
//! `-kernel`): the raw image at absolute 0, entry at 0x10000, the IPL PSW in
//! 64-bit addressing mode.
//!
//! An s390x Linux `image` / `bzImage` (arch/s390/boot) is laid out to be
//! IPLed from address 0: its first 24 bytes are an IPL PSW and two CCWs,
//! followed by more IPL records, and the kernel proper starts at
//! `KERNEL_IMAGE_START` (0x10000) with the magic `S390EP` at 0x10008 (the
//! kernel's entry-point table, "s390 kernel ABI" in head.S). The parameter
//! area (`struct parmarea`) follows at 0x10400: initrd start and size at
//! 0x10408/0x10410, the command-line size limit at 0x10430 (0 in kernels
//! before 5.x, meaning the legacy 896 bytes) and the command line at 0x10480.
//! QEMU's `hw/s390x/ipl.c` loads a non-ELF kernel exactly so: image at 0;
//! entry 0x10000 when `S390EP` is present, else the address of the short IPL
//! PSW at offset 4; command line and initrd written into the parameter area
//! (big-endian, the guest's order); PSW mask `EA | BA` (64-bit addressing).
//! The code at 0x10000 switches to z/Architecture mode itself, so the PSW is
//! all a vCPU needs: no lowcore set-up is required for Linux. What an IPL
//! stores in the lowcore (the IPL device's subsystem-identification word) is
//! written by [`write_ipl_lowcore`].

use crate::{Error, Result};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

/// Where a Linux image's kernel code starts, and its entry point.
pub const KERNEL_IMAGE_START: u64 = 0x1_0000;
/// Where a Linux image holds its magic `S390EP`.
pub const LINUX_MAGIC_ADDR: u64 = 0x1_0008;
/// The magic of a Linux image at [`LINUX_MAGIC_ADDR`].
pub const LINUX_MAGIC: &[u8; 6] = b"S390EP";
/// `parmarea.initrd_start` (big-endian u64).
pub const INITRD_START_ADDR: u64 = 0x1_0408;
/// `parmarea.initrd_size` (big-endian u64).
pub const INITRD_SIZE_ADDR: u64 = 0x1_0410;
/// `parmarea.max_command_line_size` (big-endian u64; 0 in old kernels).
pub const MAX_COMMAND_LINE_SIZE_ADDR: u64 = 0x1_0430;
/// `parmarea.command_line`: the NUL-terminated kernel command line.
pub const COMMAND_LINE_ADDR: u64 = 0x1_0480;
/// The command-line limit of kernels that do not state one (896 bytes).
pub const LEGACY_COMMAND_LINE_SIZE: u64 = 0x380;
/// Where QEMU puts the initrd (8 MiB), above any kernel image it loads.
pub const INITRD_DEFAULT_ADDR: u64 = 0x80_0000;
/// The PSW mask a directly loaded Linux kernel starts with: EA and BA set
/// (64-bit addressing), everything else off (QEMU's `IPL_PSW_MASK`).
pub const IPL_PSW_MASK: u64 = 0x0000_0001_8000_0000;
/// The address bits of a short (ESA/390-format) PSW.
pub const PSW_MASK_SHORT_ADDR: u32 = 0x7fff_ffff;
/// The size of the lowcore (prefix area): 8 KiB.
pub const LOWCORE_SIZE: u64 = 0x2000;
/// [`LINUX_MAGIC_ADDR`] as an offset into the image.
const MAGIC_OFFSET: usize = 0x1_0008;
const _: () = assert!(MAGIC_OFFSET as u64 == LINUX_MAGIC_ADDR);
/// [`LOWCORE_SIZE`] as a length.
const LOWCORE_LEN: usize = 0x2000;
const _: () = assert!(LOWCORE_LEN as u64 == LOWCORE_SIZE);
/// Lowcore: the subsystem-identification word of the IPL device.
pub const LC_SUBCHANNEL_ID: u64 = 0xb8;
/// Lowcore: the I/O-interruption parameter (zero after IPL).
pub const LC_IO_INT_PARM: u64 = 0xbc;

/// Where and how a vCPU starts: its PSW and prefix.
///
/// ```
/// use kvmkit_arch_s390x::{BootSetup, IPL_PSW_MASK, KERNEL_IMAGE_START};
/// let b = BootSetup::linux(KERNEL_IMAGE_START);
/// assert_eq!((b.psw_mask, b.psw_addr, b.prefix), (IPL_PSW_MASK, 0x10000, 0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootSetup {
    /// The PSW mask (`KVM_S390_SET_INITIAL_PSW`).
    pub psw_mask: u64,
    /// The PSW address: the first instruction.
    pub psw_addr: u64,
    /// The prefix register: the absolute address of this vCPU's lowcore
    /// (8 KiB aligned, below 2 GiB). 0 for the IPL CPU.
    pub prefix: u64,
}

impl BootSetup {
    /// The start of a directly loaded Linux kernel: 64-bit addressing at
    /// `entry`, prefix 0.
    pub fn linux(entry: u64) -> Self {
        BootSetup {
            psw_mask: IPL_PSW_MASK,
            psw_addr: entry,
            prefix: 0,
        }
    }
}

/// Checks that `prefix` is a valid prefix-register value.
pub(crate) fn check_prefix(prefix: u64) -> Result<()> {
    if prefix & !0x7fff_e000 != 0 {
        return Err(Error::InvalidBootParameter {
            what: "prefix",
            value: prefix,
            reason: "must be 8 KiB aligned and below 2 GiB",
        });
    }
    Ok(())
}

fn write<M: GuestMemory + ?Sized>(
    mem: &M,
    what: &'static str,
    gpa: u64,
    data: &[u8],
) -> Result<()> {
    mem.write_slice(data, GuestAddress(gpa))
        .map_err(|source| Error::GuestMemory { what, gpa, source })
}

fn read<M: GuestMemory + ?Sized>(
    mem: &M,
    what: &'static str,
    gpa: u64,
    data: &mut [u8],
) -> Result<()> {
    mem.read_slice(data, GuestAddress(gpa))
        .map_err(|source| Error::GuestMemory { what, gpa, source })
}

/// True when `image` is an s390x Linux image (`S390EP` at 0x10008).
///
/// ```
/// let mut img = vec![0u8; 0x10010];
/// assert!(!kvmkit_arch_s390x::is_linux_image(&img));
/// img[0x10008..0x1000e].copy_from_slice(b"S390EP");
/// assert!(kvmkit_arch_s390x::is_linux_image(&img));
/// ```
pub fn is_linux_image(image: &[u8]) -> bool {
    image.get(MAGIC_OFFSET..MAGIC_OFFSET + LINUX_MAGIC.len()) == Some(&LINUX_MAGIC[..])
}

/// Loads a raw s390x kernel image at absolute address 0 and returns its
/// entry point: [`KERNEL_IMAGE_START`] for a Linux image, otherwise the
/// address in the short IPL PSW at offset 0 (bytes 4..8, 31-bit).
///
/// ```
/// use vm_memory::{GuestAddress, GuestMemoryMmap};
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x2_0000)]).unwrap();
/// // A non-Linux image: short IPL PSW 0x00080000_80001000 (31-bit, at 0x1000).
/// let mut img = vec![0u8; 0x1100];
/// img[..8].copy_from_slice(&[0, 8, 0, 0, 0x80, 0, 0x10, 0]);
/// assert_eq!(kvmkit_arch_s390x::load_kernel_image(&mem, &img).unwrap(), 0x1000);
/// ```
pub fn load_kernel_image<M: GuestMemory + ?Sized>(mem: &M, image: &[u8]) -> Result<u64> {
    if image.len() < 8 {
        return Err(Error::InvalidBootParameter {
            what: "kernel image length",
            value: image.len() as u64,
            reason: "shorter than an IPL PSW",
        });
    }
    write(mem, "kernel image", 0, image)?;
    if is_linux_image(image) {
        return Ok(KERNEL_IMAGE_START);
    }
    let mut w = [0u8; 4];
    w.copy_from_slice(&image[4..8]);
    Ok(u64::from(u32::from_be_bytes(w) & PSW_MASK_SHORT_ADDR))
}

/// The kernel parameters a directly booted Linux finds in its parameter area.
///
/// ```
/// use kvmkit_arch_s390x::{LinuxParams, INITRD_DEFAULT_ADDR};
/// let p = LinuxParams { cmdline: b"console=ttysclp0", initrd: Some((INITRD_DEFAULT_ADDR, 4096)) };
/// assert_eq!(p.cmdline.len(), 16);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinuxParams<'a> {
    /// The command line, without the NUL.
    pub cmdline: &'a [u8],
    /// The initrd, as (guest address, size), already loaded there.
    pub initrd: Option<(u64, u64)>,
}

/// Writes the command line and initrd location into the parameter area of a
/// Linux image already loaded by [`load_kernel_image`], as QEMU does: the
/// command line at [`COMMAND_LINE_ADDR`], limited by the image's
/// `max_command_line_size` (or the legacy 896 bytes), the initrd address
/// and size big-endian at [`INITRD_START_ADDR`] / [`INITRD_SIZE_ADDR`].
///
/// ```
/// use kvmkit_arch_s390x::{load_kernel_image, write_linux_params, LinuxParams, COMMAND_LINE_ADDR};
/// use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x2_0000)]).unwrap();
/// let mut image = vec![0u8; 0x1_1000]; // a (tiny) Linux image
/// image[0x1_0008..0x1_000e].copy_from_slice(b"S390EP");
/// assert_eq!(load_kernel_image(&mem, &image).unwrap(), 0x1_0000);
/// write_linux_params(&mem, &LinuxParams { cmdline: b"quiet", initrd: None }).unwrap();
/// assert_eq!(mem.read_obj::<[u8; 6]>(GuestAddress(COMMAND_LINE_ADDR)).unwrap(), *b"quiet\0");
/// ```
pub fn write_linux_params<M: GuestMemory + ?Sized>(
    mem: &M,
    params: &LinuxParams<'_>,
) -> Result<()> {
    let mut magic = [0u8; 6];
    read(mem, "kernel image magic", LINUX_MAGIC_ADDR, &mut magic)?;
    if &magic != LINUX_MAGIC {
        return Err(Error::InvalidBootParameter {
            what: "kernel image magic",
            value: LINUX_MAGIC_ADDR,
            reason: "no S390EP there: not a Linux image",
        });
    }
    let mut max = [0u8; 8];
    read(
        mem,
        "command line size limit",
        MAX_COMMAND_LINE_SIZE_ADDR,
        &mut max,
    )?;
    let max = match u64::from_be_bytes(max) {
        0 => LEGACY_COMMAND_LINE_SIZE,
        n => n,
    };
    let with_nul = params.cmdline.len() as u64 + 1;
    if with_nul > max || params.cmdline.contains(&0) {
        return Err(Error::InvalidBootParameter {
            what: "command line length",
            value: with_nul,
            reason: "over the image's limit, or contains NUL",
        });
    }
    let mut line = params.cmdline.to_vec();
    line.push(0);
    write(mem, "command line", COMMAND_LINE_ADDR, &line)?;
    if let Some((addr, size)) = params.initrd {
        write(mem, "initrd start", INITRD_START_ADDR, &addr.to_be_bytes())?;
        write(mem, "initrd size", INITRD_SIZE_ADDR, &size.to_be_bytes())?;
    }
    Ok(())
}

/// Writes what an IPL stores in the lowcore of the IPL CPU at `prefix`: the
/// subsystem-identification word of the IPL device at 0xb8 (0 for a direct
/// kernel boot, which has no IPL device) and a zero I/O-interruption
/// parameter at 0xbc. Checks that `prefix` is valid and its 8 KiB lowcore
/// lies in guest memory.
///
/// ```
/// use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
/// kvmkit_arch_s390x::write_ipl_lowcore(&mem, 0x4000, 0x0001_0002).unwrap();
/// assert_eq!(mem.read_obj::<[u8; 4]>(GuestAddress(0x40b8)).unwrap(), [0, 1, 0, 2]);
/// assert!(kvmkit_arch_s390x::write_ipl_lowcore(&mem, 0x1000, 0).is_err());
/// ```
pub fn write_ipl_lowcore<M: GuestMemory + ?Sized>(
    mem: &M,
    prefix: u64,
    subchannel_id: u32,
) -> Result<()> {
    check_prefix(prefix)?;
    if !mem.check_range(
        GuestAddress(prefix),
        LOWCORE_LEN,
        vm_memory::Permissions::ReadWrite,
    ) {
        return Err(Error::InvalidBootParameter {
            what: "prefix",
            value: prefix,
            reason: "its 8 KiB lowcore is not all guest memory",
        });
    }
    write(
        mem,
        "lowcore subchannel id",
        prefix + LC_SUBCHANNEL_ID,
        &subchannel_id.to_be_bytes(),
    )?;
    write(
        mem,
        "lowcore interruption parameter",
        prefix + LC_IO_INT_PARM,
        &0u32.to_be_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem(len: usize) -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), len)]).unwrap()
    }

    fn linux_image(max_cmdline: u64) -> Vec<u8> {
        let mut img = vec![0u8; 0x1_1000];
        // The image's own IPL PSW (31-bit, at iplstart): not used for Linux.
        img[..8].copy_from_slice(&0x0008_0000_8000_0200u64.to_be_bytes());
        img[0x1_0008..0x1_000e].copy_from_slice(LINUX_MAGIC);
        img[0x1_0430..0x1_0438].copy_from_slice(&max_cmdline.to_be_bytes());
        img
    }

    #[test]
    fn loads_linux_at_zero_with_entry_0x10000() {
        let m = mem(0x20_0000);
        let img = linux_image(4096);
        assert!(is_linux_image(&img));
        assert_eq!(load_kernel_image(&m, &img).unwrap(), KERNEL_IMAGE_START);
        let back: [u8; 6] = m.read_obj(GuestAddress(LINUX_MAGIC_ADDR)).unwrap();
        assert_eq!(&back, LINUX_MAGIC);
    }

    #[test]
    fn other_images_start_at_their_short_ipl_psw() {
        let m = mem(0x2_0000);
        // Short PSW 0x00080000_80001000: 31-bit mode (the top bit of the
        // second word), entry 0x1000.
        let mut img = vec![0u8; 0x1100];
        img[..8].copy_from_slice(&0x0008_0000_8000_1000u64.to_be_bytes());
        img[0x1000] = 0x07; // something to run
        assert!(!is_linux_image(&img));
        assert_eq!(load_kernel_image(&m, &img).unwrap(), 0x1000);
        let loaded: [u8; 8] = m.read_obj(GuestAddress(0)).unwrap();
        assert_eq!(loaded, img[..8], "loaded at absolute 0");
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x1000)).unwrap(), 0x07);
        // The addressing-mode bit never becomes part of the address.
        img[4..8].copy_from_slice(&0xffff_fffeu32.to_be_bytes());
        assert_eq!(load_kernel_image(&m, &img).unwrap(), 0x7fff_fffe);
        // Exactly a PSW and nothing else is still an image.
        assert_eq!(
            load_kernel_image(&m, &0x0008_0000_0000_2000u64.to_be_bytes()).unwrap(),
            0x2000
        );
    }

    #[test]
    fn refuses_tiny_and_oversized_images() {
        let m = mem(0x1000);
        assert!(matches!(
            load_kernel_image(&m, &[0; 4]),
            Err(Error::InvalidBootParameter { .. })
        ));
        let e = load_kernel_image(&m, &[0; 0x2000]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot access the kernel image at guest address 0x0"
        );
    }

    #[test]
    fn writes_cmdline_and_initrd_big_endian() {
        let m = mem(0x20_0000);
        load_kernel_image(&m, &linux_image(4096)).unwrap();
        write_linux_params(
            &m,
            &LinuxParams {
                cmdline: b"console=ttysclp0",
                initrd: Some((INITRD_DEFAULT_ADDR, 0x1234)),
            },
        )
        .unwrap();
        let mut line = [0u8; 17];
        m.read_slice(&mut line, GuestAddress(COMMAND_LINE_ADDR))
            .unwrap();
        assert_eq!(&line, b"console=ttysclp0\0");
        let start: [u8; 8] = m.read_obj(GuestAddress(INITRD_START_ADDR)).unwrap();
        let size: [u8; 8] = m.read_obj(GuestAddress(INITRD_SIZE_ADDR)).unwrap();
        assert_eq!(u64::from_be_bytes(start), 0x80_0000);
        assert_eq!(u64::from_be_bytes(size), 0x1234);
    }

    #[test]
    fn command_line_limits() {
        let m = mem(0x20_0000);
        // An old kernel (limit 0 = legacy 896 bytes).
        load_kernel_image(&m, &linux_image(0)).unwrap();
        let long = vec![b'x'; 896];
        assert!(write_linux_params(
            &m,
            &LinuxParams {
                cmdline: &long[..895],
                initrd: None
            }
        )
        .is_ok());
        assert!(write_linux_params(
            &m,
            &LinuxParams {
                cmdline: &long,
                initrd: None
            }
        )
        .is_err());
        assert!(write_linux_params(
            &m,
            &LinuxParams {
                cmdline: b"a\0b",
                initrd: None
            }
        )
        .is_err());
        // Not a Linux image.
        let m = mem(0x20_0000);
        let e = write_linux_params(&m, &LinuxParams::default()).unwrap_err();
        assert!(e.to_string().contains("S390EP"), "{e}");
        // Memory too small to hold the parameter area.
        let m = mem(0x1000);
        assert!(write_linux_params(&m, &LinuxParams::default()).is_err());
        // Memory that holds the magic but ends before the image's
        // command-line limit: refused naming the field.
        let m = mem(0x1_0400);
        m.write_slice(LINUX_MAGIC, GuestAddress(LINUX_MAGIC_ADDR))
            .unwrap();
        let e = write_linux_params(
            &m,
            &LinuxParams {
                cmdline: b"quiet",
                initrd: None,
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot access the command line size limit at guest address 0x10430"
        );
    }

    #[test]
    fn lowcore_and_prefix_checks() {
        let m = mem(0x10000);
        write_ipl_lowcore(&m, 0, 0x0001_0005).unwrap();
        let sid: [u8; 8] = m.read_obj(GuestAddress(LC_SUBCHANNEL_ID)).unwrap();
        assert_eq!(sid, [0, 1, 0, 5, 0, 0, 0, 0]);
        assert!(check_prefix(0x7fff_e000).is_ok());
        assert!(check_prefix(0x8000_0000).is_err());
        assert!(check_prefix(0x3000).is_err());
        // Lowcore past the end of memory.
        assert!(matches!(
            write_ipl_lowcore(&m, 0x1_0000, 0),
            Err(Error::InvalidBootParameter { what: "prefix", .. })
        ));
        assert_eq!(BootSetup::linux(0x10000).psw_mask, IPL_PSW_MASK);
    }
}
