//! How a pseries vCPU enters its kernel: registers and boot data.
//!
//! Linux's 64-bit PowerPC entry, when booted from a flattened device tree
//! (kexec style, no Open Firmware client interface): r3 = the FDT's guest
//! physical address, r4 = 0 (where memory starts), r5 = 0 (no OF entry),
//! MSR with SF (64-bit) and ME (machine checks on), and LE for a
//! little-endian entry; NIP = the ELF entry.

use crate::uapi::kvm_regs;
use crate::{Error, Result};
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

/// `MSR[SF]`: 64-bit mode.
pub const MSR_SF: u64 = 1 << 63;
/// `MSR[ME]`: machine checks enabled.
pub const MSR_ME: u64 = 1 << 12;
/// `MSR[LE]`: little-endian mode.
pub const MSR_LE: u64 = 1;

/// The byte order a guest is entered in.
///
/// ```
/// assert_eq!(kvmkit_arch_powerpc::Endian::default(), kvmkit_arch_powerpc::Endian::Little);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Endian {
    /// Big-endian.
    Big,
    /// Little-endian (ppc64le kernels).
    #[default]
    Little,
}

/// The MSR of a pseries kernel entry: SF | ME, plus LE for little-endian.
///
/// Linux's ppc64 entry switches itself to its own byte order
/// (`FIXUP_ENDIAN`), so either works for any kernel; matching the kernel's
/// (the ELF's `EI_DATA`, [`crate::ElfKernel::endian`]) saves that step.
///
/// ```
/// use kvmkit_arch_powerpc::{pseries_msr, Endian, MSR_LE, MSR_ME, MSR_SF};
/// assert_eq!(pseries_msr(Endian::Little), MSR_SF | MSR_ME | MSR_LE);
/// assert_eq!(pseries_msr(Endian::Big), 0x8000_0000_0000_1000);
/// ```
pub const fn pseries_msr(endian: Endian) -> u64 {
    match endian {
        Endian::Big => MSR_SF | MSR_ME,
        Endian::Little => MSR_SF | MSR_ME | MSR_LE,
    }
}

/// Where and how a vCPU starts a pseries kernel.
///
/// ```
/// use kvmkit_arch_powerpc::{BootSetup, Endian, MSR_LE};
/// let b = BootSetup::pseries(0x10, 0x0f00_0000, vec![0xd0, 0x0d, 0xfe, 0xed], Endian::Little);
/// let mut regs = Default::default();
/// b.boot_regs(&mut regs);
/// assert_eq!((regs.pc, regs.gpr[3], regs.gpr[4], regs.gpr[5]), (0x10, 0x0f00_0000, 0, 0));
/// assert_ne!(regs.msr & MSR_LE, 0);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootSetup {
    /// The entry point (NIP), a guest physical address.
    pub entry: u64,
    /// The device tree's guest physical address, passed in r3.
    pub fdt_addr: u64,
    /// The MSR at entry ([`pseries_msr`]).
    pub msr: u64,
    /// The flattened device tree ([`crate::build_pseries_fdt`]), written at
    /// `fdt_addr` by `setup_boot`; empty when the VMM wrote it already.
    pub fdt: Vec<u8>,
}

impl BootSetup {
    /// A pseries entry at `entry` with the device tree `fdt` at `fdt_addr`.
    pub fn pseries(entry: u64, fdt_addr: u64, fdt: Vec<u8>, endian: Endian) -> Self {
        BootSetup {
            entry,
            fdt_addr,
            msr: pseries_msr(endian),
            fdt,
        }
    }

    /// Sets NIP, MSR and r3–r5 in `regs` for this entry; r1 and the other
    /// registers are left as they are (Linux sets up its own stack).
    pub fn boot_regs(&self, regs: &mut kvm_regs) {
        regs.pc = self.entry;
        regs.msr = self.msr;
        regs.gpr[3] = self.fdt_addr;
        regs.gpr[4] = 0;
        regs.gpr[5] = 0;
    }

    /// Writes the device tree (if any) into `mem`, checking first that
    /// guest memory covers all of it.
    pub fn write_boot_data<M: GuestMemory + ?Sized>(&self, mem: &M) -> Result<()> {
        write(mem, "device tree", self.fdt_addr, &self.fdt)
    }
}

/// Writes `bytes` at `gpa`, refusing (before writing anything) when guest
/// memory does not cover the whole range.
pub(crate) fn write<M: GuestMemory + ?Sized>(
    mem: &M,
    what: &'static str,
    gpa: u64,
    bytes: &[u8],
) -> Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let err = |source| Error::WriteBootData { what, gpa, source };
    if !mem.check_range(GuestAddress(gpa), bytes.len(), Permissions::Write) {
        return Err(err(vm_memory::GuestMemoryError::InvalidGuestAddress(
            GuestAddress(gpa),
        )));
    }
    mem.write_slice(bytes, GuestAddress(gpa)).map_err(err)
}

/// The RTAS entry code QEMU's spapr uses (big-endian, RTAS runs in BE):
/// it turns an RTAS call into the `H_RTAS` hypercall with the argument
/// buffer in r4, which KVM handles (tokens defined with
/// [`crate::PpcVm::define_rtas_token`]) or passes to userspace.
///
/// ```text
/// mr   r4,r3          7c 64 1b 78
/// lis  r3,0           3c 60 00 00
/// ori  r3,r3,0xf000   60 63 f0 00     (H_RTAS)
/// sc   1              44 00 00 22
/// blr                 4e 80 00 20
/// ```
pub const RTAS_BLOB: [u8; 20] = [
    0x7c, 0x64, 0x1b, 0x78, 0x3c, 0x60, 0x00, 0x00, 0x60, 0x63, 0xf0, 0x00, 0x44, 0x00, 0x00, 0x22,
    0x4e, 0x80, 0x00, 0x20,
];

/// Writes [`RTAS_BLOB`] at `base` (the `linux,rtas-base` of the device
/// tree's `rtas` node, [`crate::RtasConfig::base`]).
///
/// ```
/// use kvmkit_arch_powerpc::{write_rtas_blob, RTAS_BLOB};
/// use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
/// write_rtas_blob(&mem, 0x8000).unwrap();
/// let mut b = [0u8; 20];
/// mem.read_slice(&mut b, GuestAddress(0x8000)).unwrap();
/// assert_eq!(b, RTAS_BLOB);
/// assert!(write_rtas_blob(&mem, 0xfff0).is_err());
/// ```
pub fn write_rtas_blob<M: GuestMemory + ?Sized>(mem: &M, base: u64) -> Result<()> {
    write(mem, "RTAS entry code", base, &RTAS_BLOB)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn fdt_is_written_only_where_memory_is() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x2000)]).unwrap();
        let b = BootSetup::pseries(0, 0x1000, vec![1, 2, 3], Endian::Big);
        b.write_boot_data(&mem).unwrap();
        let mut got = [0u8; 3];
        mem.read_slice(&mut got, GuestAddress(0x1000)).unwrap();
        assert_eq!(got, [1, 2, 3]);
        let b = BootSetup::pseries(0, 0x1fff, vec![9, 9], Endian::Big);
        let e = b.write_boot_data(&mem).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot write the device tree at guest address 0x1fff"
        );
        let mut last = [0u8; 1];
        mem.read_slice(&mut last, GuestAddress(0x1fff)).unwrap();
        assert_eq!(last, [0], "nothing written");
        let empty = BootSetup { fdt: vec![], ..b };
        assert!(empty.write_boot_data(&mem).is_ok());
    }

    #[test]
    fn rtas_code_goes_whole_at_its_base_or_not_at_all() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x2000)]).unwrap();
        write_rtas_blob(&mem, 0x1000).unwrap();
        let mut got = [0u8; 24];
        mem.read_slice(&mut got, GuestAddress(0x1000)).unwrap();
        assert_eq!(got[..20], RTAS_BLOB);
        assert_eq!(got[20..], [0; 4], "nothing past the blob");
        // The last 19 bytes of memory cannot hold it: refused, untouched.
        let e = write_rtas_blob(&mem, 0x2000 - 19).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot write the RTAS entry code at guest address 0x1fed"
        );
        let mut tail = [0u8; 19];
        mem.read_slice(&mut tail, GuestAddress(0x2000 - 19))
            .unwrap();
        assert_eq!(tail, [0; 19]);
        write_rtas_blob(&mem, 0x2000 - 20).unwrap();
    }

    #[test]
    fn regs_for_big_endian_entry() {
        let b = BootSetup::pseries(0x100, 0x200, vec![], Endian::Big);
        let mut r = kvm_regs {
            gpr: [7; 32],
            ..Default::default()
        };
        b.boot_regs(&mut r);
        assert_eq!(r.msr, MSR_SF | MSR_ME);
        assert_eq!(r.gpr[1], 7, "stack untouched");
        assert_eq!(r.gpr[5], 0);
        assert_eq!(pseries_msr(Endian::Little), MSR_SF | MSR_ME | MSR_LE);
        assert_eq!(Endian::default(), Endian::Little);
    }
}
