//! Decoding s390x's `kvm_run` exit union.
//!
//! Offsets come from the `#[repr(C)]` mirror in [`crate::uapi`] (checked
//! against the s390x header); values are read byte by byte, big-endian, as
//! an s390x kernel stores them (see the README: the kernel lays `kvm_run`
//! out in the byte order of the machine it runs on, and s390x is
//! big-endian).

use crate::uapi::{
    kvm_debug_exit_arch, kvm_run, kvm_run_exit, kvm_run_fail_entry, kvm_run_internal, kvm_run_mmio,
    kvm_run_s390_sieic, kvm_run_s390_stsi, kvm_run_s390_tsch, kvm_run_s390_ucontrol,
    kvm_run_system_event, kvm_run_system_event_data, kvm_sync_regs, KVM_EXIT_DEBUG,
    KVM_EXIT_DIRTY_RING_FULL, KVM_EXIT_FAIL_ENTRY, KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR,
    KVM_EXIT_INTR, KVM_EXIT_IRQ_WINDOW_OPEN, KVM_EXIT_MMIO, KVM_EXIT_S390_RESET,
    KVM_EXIT_S390_SIEIC, KVM_EXIT_S390_STSI, KVM_EXIT_S390_TSCH, KVM_EXIT_S390_UCONTROL,
    KVM_EXIT_SHUTDOWN, KVM_EXIT_SYSTEM_EVENT, KVM_EXIT_UNKNOWN, KVM_SYNC_GPRS,
};
use crate::S390x;
use kvmkit_core::{DecodeError, SystemEventKind, VcpuExit, KVM_RUN_EXIT_REASON_OFFSET};
use std::fmt;
use std::mem::{offset_of, size_of};

/// `sizeof(struct kvm_run)` on s390x: the least a `kvm_run` area must hold.
pub const KVM_RUN_SIZE: usize = size_of::<kvm_run>();

/// Offsets in the `kvm_run` area, from the `#[repr(C)]` mirror.
pub(crate) mod off {
    use super::*;

    pub(crate) const PSW_MASK: usize = offset_of!(kvm_run, psw_mask);
    pub(crate) const PSW_ADDR: usize = offset_of!(kvm_run, psw_addr);
    pub(crate) const EXIT: usize = offset_of!(kvm_run, exit);
    pub(crate) const DIRTY_REGS: usize = offset_of!(kvm_run, kvm_dirty_regs);
    pub(crate) const SYNC: usize = offset_of!(kvm_run, s);
    pub(crate) const SYNC_PREFIX: usize = SYNC + offset_of!(kvm_sync_regs, prefix);
    pub(crate) const SYNC_GPRS: usize = SYNC + offset_of!(kvm_sync_regs, gprs);

    const SIEIC: usize = EXIT + offset_of!(kvm_run_exit, s390_sieic);
    pub(crate) const SIEIC_ICPTCODE: usize = SIEIC + offset_of!(kvm_run_s390_sieic, icptcode);
    pub(crate) const SIEIC_IPA: usize = SIEIC + offset_of!(kvm_run_s390_sieic, ipa);
    pub(crate) const SIEIC_IPB: usize = SIEIC + offset_of!(kvm_run_s390_sieic, ipb);
    pub(crate) const RESET_FLAGS: usize = EXIT + offset_of!(kvm_run_exit, s390_reset_flags);
    const UCONTROL: usize = EXIT + offset_of!(kvm_run_exit, s390_ucontrol);
    pub(crate) const UCONTROL_TEC: usize =
        UCONTROL + offset_of!(kvm_run_s390_ucontrol, trans_exc_code);
    pub(crate) const UCONTROL_PGM: usize = UCONTROL + offset_of!(kvm_run_s390_ucontrol, pgm_code);
    const TSCH: usize = EXIT + offset_of!(kvm_run_exit, s390_tsch);
    pub(crate) const TSCH_ID: usize = TSCH + offset_of!(kvm_run_s390_tsch, subchannel_id);
    pub(crate) const TSCH_NR: usize = TSCH + offset_of!(kvm_run_s390_tsch, subchannel_nr);
    pub(crate) const TSCH_PARM: usize = TSCH + offset_of!(kvm_run_s390_tsch, io_int_parm);
    pub(crate) const TSCH_WORD: usize = TSCH + offset_of!(kvm_run_s390_tsch, io_int_word);
    pub(crate) const TSCH_IPB: usize = TSCH + offset_of!(kvm_run_s390_tsch, ipb);
    pub(crate) const TSCH_DEQUEUED: usize = TSCH + offset_of!(kvm_run_s390_tsch, dequeued);
    const STSI: usize = EXIT + offset_of!(kvm_run_exit, s390_stsi);
    pub(crate) const STSI_ADDR: usize = STSI + offset_of!(kvm_run_s390_stsi, addr);
    pub(crate) const STSI_AR: usize = STSI + offset_of!(kvm_run_s390_stsi, ar);
    pub(crate) const STSI_FC: usize = STSI + offset_of!(kvm_run_s390_stsi, fc);
    pub(crate) const STSI_SEL1: usize = STSI + offset_of!(kvm_run_s390_stsi, sel1);
    pub(crate) const STSI_SEL2: usize = STSI + offset_of!(kvm_run_s390_stsi, sel2);
    const MMIO: usize = EXIT + offset_of!(kvm_run_exit, mmio);
    pub(crate) const MMIO_ADDR: usize = MMIO + offset_of!(kvm_run_mmio, phys_addr);
    pub(crate) const MMIO_DATA: usize = MMIO + offset_of!(kvm_run_mmio, data);
    pub(crate) const MMIO_LEN: usize = MMIO + offset_of!(kvm_run_mmio, len);
    pub(crate) const MMIO_IS_WRITE: usize = MMIO + offset_of!(kvm_run_mmio, is_write);
    pub(crate) const DEBUG_ADDR: usize =
        EXIT + offset_of!(kvm_run_exit, debug) + offset_of!(kvm_debug_exit_arch, addr);
    const FAIL: usize = EXIT + offset_of!(kvm_run_exit, fail_entry);
    pub(crate) const FAIL_REASON: usize =
        FAIL + offset_of!(kvm_run_fail_entry, hardware_entry_failure_reason);
    pub(crate) const FAIL_CPU: usize = FAIL + offset_of!(kvm_run_fail_entry, cpu);
    const INTERNAL: usize = EXIT + offset_of!(kvm_run_exit, internal);
    pub(crate) const INTERNAL_SUBERROR: usize = INTERNAL + offset_of!(kvm_run_internal, suberror);
    pub(crate) const INTERNAL_NDATA: usize = INTERNAL + offset_of!(kvm_run_internal, ndata);
    pub(crate) const INTERNAL_DATA: usize = INTERNAL + offset_of!(kvm_run_internal, data);
    const SYSTEM_EVENT: usize = EXIT + offset_of!(kvm_run_exit, system_event);
    pub(crate) const SYSTEM_EVENT_TYPE: usize =
        SYSTEM_EVENT + offset_of!(kvm_run_system_event, type_);
    pub(crate) const SYSTEM_EVENT_NDATA: usize =
        SYSTEM_EVENT + offset_of!(kvm_run_system_event, ndata);
    pub(crate) const SYSTEM_EVENT_FLAGS: usize = SYSTEM_EVENT
        + offset_of!(kvm_run_system_event, u)
        + offset_of!(kvm_run_system_event_data, flags);
}

/// SIE interception codes (`kvm_run.s390_sieic.icptcode`), as the
/// architecture and `arch/s390/include/asm/kvm_host.h` define them.
pub mod icpt {
    /// Instruction interception: `ipa`/`ipb` hold the instruction; the PSW
    /// already points past it.
    pub const INSTRUCTION: u8 = 0x04;
    /// Program interruption.
    pub const PROGRAM: u8 = 0x08;
    /// Instruction and program interruption.
    pub const INSTRUCTION_PROGRAM: u8 = 0x0c;
    /// External request.
    pub const EXTERNAL_REQUEST: u8 = 0x10;
    /// External interruption.
    pub const EXTERNAL: u8 = 0x14;
    /// I/O request.
    pub const IO_REQUEST: u8 = 0x18;
    /// Wait state; KVM handles enabled waits itself, so this is a disabled
    /// wait: the guest stopped for good (how s390x guests halt).
    pub const WAIT: u8 = 0x1c;
    /// Validity interception: the state description is inconsistent.
    pub const VALIDITY: u8 = 0x20;
    /// Stop request (e.g. the guest's `SIGP STOP` of itself).
    pub const STOP: u8 = 0x28;
    /// Operation exception (e.g. instruction 0x0000, a software breakpoint).
    pub const OPERATION_EXCEPTION: u8 = 0x2c;
    /// Partial execution.
    pub const PARTIAL_EXECUTION: u8 = 0x38;
    /// I/O instruction.
    pub const IO_INSTRUCTION: u8 = 0x40;
}

/// `ipa` of `SERVC` (service call: SCLP requests).
pub const IPA_SERVC: u16 = 0xb220;
/// The opcode byte of `DIAGNOSE` (`ipa & 0xff00`).
pub const IPA0_DIAG: u16 = 0x8300;
/// The opcode byte of `SIGP` (`ipa & 0xff00`).
pub const IPA0_SIGP: u16 = 0xae00;

/// The PSW-mask bits of the condition code (bits 18-19).
const PSW_MASK_CC: u64 = 3 << 44;
/// The PSW-mask bit of the wait state.
pub const PSW_MASK_WAIT: u64 = 0x0002_0000_0000_0000;
/// The PSW-mask bit of the problem state (user mode).
pub const PSW_MASK_PSTATE: u64 = 0x0001_0000_0000_0000;

fn be16(run: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([run[off], run[off + 1]])
}

fn be32(run: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&run[off..off + 4]);
    u32::from_be_bytes(b)
}

fn be64(run: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&run[off..off + 8]);
    u64::from_be_bytes(b)
}

fn put_be64(run: &mut [u8], off: usize, v: u64) {
    run[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

/// The vCPU's PSW and general registers as they are in its `kvm_run` area
/// at an exit: KVM stores the PSW in `psw_mask`/`psw_addr` and keeps the
/// general registers in the sync-regs area (`kvm_run.s.regs.gprs`), and it
/// loads both back on the next `KVM_RUN`. Writing here is how an exit
/// handler sets a condition code or a result register.
///
/// ```
/// use kvmkit_arch_s390x::{RunRegs, KVM_RUN_SIZE};
/// let mut run = vec![0u8; KVM_RUN_SIZE];
/// let mut regs = RunRegs::new(&mut run).unwrap();
/// regs.set_condition_code(2);
/// regs.set_gpr(1, 0x1234);
/// assert_eq!((regs.condition_code(), regs.gpr(1)), (2, 0x1234));
/// assert_eq!(run[32..40], 0x0000_2000_0000_0000u64.to_be_bytes()); // psw_mask, big-endian
/// ```
pub struct RunRegs<'a> {
    run: &'a mut [u8],
}

impl fmt::Debug for RunRegs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunRegs")
            .field("psw_mask", &format_args!("{:#018x}", self.psw_mask()))
            .field("psw_addr", &format_args!("{:#x}", self.psw_addr()))
            .finish_non_exhaustive()
    }
}

impl<'a> RunRegs<'a> {
    /// Registers over a `kvm_run` area of at least [`KVM_RUN_SIZE`] bytes.
    pub fn new(run: &'a mut [u8]) -> Result<Self, DecodeError> {
        need(run, 0, KVM_RUN_SIZE)?;
        Ok(RunRegs { run })
    }

    /// The PSW mask (`kvm_run.psw_mask`).
    pub fn psw_mask(&self) -> u64 {
        be64(self.run, off::PSW_MASK)
    }

    /// The PSW address (`kvm_run.psw_addr`): after an instruction
    /// interception it already points past the instruction.
    pub fn psw_addr(&self) -> u64 {
        be64(self.run, off::PSW_ADDR)
    }

    /// The condition code in the PSW.
    pub fn condition_code(&self) -> u8 {
        ((self.psw_mask() & PSW_MASK_CC) >> 44) as u8
    }

    /// Sets the condition code (0 to 3) the guest sees when it resumes.
    pub fn set_condition_code(&mut self, cc: u8) {
        let mask = (self.psw_mask() & !PSW_MASK_CC) | (u64::from(cc & 3) << 44);
        put_be64(self.run, off::PSW_MASK, mask);
    }

    /// General register `n` (0 to 15; taken modulo 16).
    pub fn gpr(&self, n: u8) -> u64 {
        be64(self.run, off::SYNC_GPRS + 8 * usize::from(n & 15))
    }

    /// Sets general register `n` (0 to 15; taken modulo 16) and marks the
    /// general registers dirty (`KVM_SYNC_GPRS`) for the next entry.
    pub fn set_gpr(&mut self, n: u8, value: u64) {
        put_be64(self.run, off::SYNC_GPRS + 8 * usize::from(n & 15), value);
        let dirty = be64(self.run, off::DIRTY_REGS) | KVM_SYNC_GPRS;
        put_be64(self.run, off::DIRTY_REGS, dirty);
    }

    /// The prefix register as KVM stored it in the sync-regs area.
    pub fn prefix(&self) -> u64 {
        be64(self.run, off::SYNC_PREFIX)
    }
}

/// A decoded intercepted instruction (see [`SieIntercept::instruction`]).
///
/// ```
/// use kvmkit_arch_s390x::Instruction;
/// let i = Instruction::Diagnose { r1: 1, r3: 2, base: 0, displacement: 0x500 };
/// assert!(matches!(i, Instruction::Diagnose { displacement: 0x500, .. }));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Instruction {
    /// `SERVC R1,R2` (`B220`): SCLP command word in R1, SCCB address in R2.
    ServiceCall {
        /// The register holding the SCLP command word.
        r1: u8,
        /// The register holding the SCCB address.
        r2: u8,
    },
    /// `DIAGNOSE R1,R3,D2(B2)` (`83`): the function code is the second
    /// operand address.
    Diagnose {
        /// First register operand.
        r1: u8,
        /// Third register operand.
        r3: u8,
        /// Base register of the second operand (0: none).
        base: u8,
        /// Displacement of the second operand.
        displacement: u16,
    },
    /// `SIGP R1,R3,D2(B2)` (`AE`): the order code is the second operand
    /// address; the target CPU address is in R3.
    Sigp {
        /// First register operand (parameter / status).
        r1: u8,
        /// Register holding the target CPU address.
        r3: u8,
        /// Base register of the second operand (0: none).
        base: u8,
        /// Displacement of the second operand.
        displacement: u16,
    },
    /// Another instruction.
    Other {
        /// Its first halfword.
        ipa: u16,
        /// Its next four bytes.
        ipb: u32,
    },
}

/// A `SERVC` request: the SCLP command and where its SCCB is.
///
/// ```
/// use kvmkit_arch_s390x::{ServiceCall, SCLP_CMD_WRITE_EVENT_DATA};
/// let c = ServiceCall { command: SCLP_CMD_WRITE_EVENT_DATA, sccb: 0x3000 };
/// assert_eq!(c.command, 0x0076_0005);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceCall {
    /// The SCLP command word (R1's low 32 bits).
    pub command: u32,
    /// The SCCB's guest absolute address (R2).
    pub sccb: u64,
}

/// A SIE interception (`KVM_EXIT_S390_SIEIC`): KVM did not handle it and
/// hands it to userspace with the vCPU's PSW and registers.
#[derive(Debug)]
pub struct SieIntercept<'a> {
    /// The interception code ([`icpt`]).
    pub icptcode: u8,
    /// The first halfword of the intercepted instruction.
    pub ipa: u16,
    /// The next four bytes of the instruction.
    pub ipb: u32,
    /// The PSW and general registers, readable and writable.
    pub regs: RunRegs<'a>,
}

impl SieIntercept<'_> {
    /// The intercepted instruction, for an instruction interception.
    ///
    /// ```
    /// use kvmkit_arch_s390x::{icpt, Instruction, RunRegs, SieIntercept, KVM_RUN_SIZE};
    /// let mut run = vec![0u8; KVM_RUN_SIZE];
    /// // servc %r2,%r3 = B220 0023
    /// let i = SieIntercept { icptcode: icpt::INSTRUCTION, ipa: 0xb220, ipb: 0x0023_0000,
    ///                        regs: RunRegs::new(&mut run).unwrap() };
    /// assert_eq!(i.instruction(), Some(Instruction::ServiceCall { r1: 2, r2: 3 }));
    /// ```
    pub fn instruction(&self) -> Option<Instruction> {
        if self.icptcode != icpt::INSTRUCTION {
            return None;
        }
        let base = (self.ipb >> 28) as u8;
        let displacement = ((self.ipb >> 16) & 0xfff) as u16;
        let r1 = ((self.ipa >> 4) & 0xf) as u8;
        let r3 = (self.ipa & 0xf) as u8;
        Some(if self.ipa == IPA_SERVC {
            Instruction::ServiceCall {
                r1: ((self.ipb >> 20) & 0xf) as u8,
                r2: ((self.ipb >> 16) & 0xf) as u8,
            }
        } else if self.ipa & 0xff00 == IPA0_DIAG {
            Instruction::Diagnose {
                r1,
                r3,
                base,
                displacement,
            }
        } else if self.ipa & 0xff00 == IPA0_SIGP {
            Instruction::Sigp {
                r1,
                r3,
                base,
                displacement,
            }
        } else {
            Instruction::Other {
                ipa: self.ipa,
                ipb: self.ipb,
            }
        })
    }

    /// The SCLP request of an intercepted `SERVC`, with the registers read.
    pub fn service_call(&self) -> Option<ServiceCall> {
        match self.instruction()? {
            Instruction::ServiceCall { r1, r2 } => Some(ServiceCall {
                command: (self.regs.gpr(r1) & 0xffff_ffff) as u32,
                sccb: self.regs.gpr(r2),
            }),
            _ => None,
        }
    }

    /// The function code of an intercepted `DIAGNOSE` (bits 48-63 of the
    /// second-operand address, as KVM and QEMU read it), e.g. 0x308 (IPL),
    /// 0x500 (virtio-ccw notify).
    pub fn diagnose_code(&self) -> Option<u16> {
        match self.instruction()? {
            Instruction::Diagnose {
                base, displacement, ..
            } => Some((self.operand_address(base, displacement) & 0xffff) as u16),
            _ => None,
        }
    }

    /// The order code of an intercepted `SIGP` (bits 56-63 of the second
    /// operand address), e.g. 0x05 (stop), 0x12 (set architecture).
    pub fn sigp_order(&self) -> Option<u8> {
        match self.instruction()? {
            Instruction::Sigp {
                base, displacement, ..
            } => Some((self.operand_address(base, displacement) & 0xff) as u8),
            _ => None,
        }
    }

    /// True for a disabled-wait interception: the guest loaded a wait PSW
    /// with interruptions off and will never continue (how it halts).
    pub fn is_disabled_wait(&self) -> bool {
        self.icptcode == icpt::WAIT
    }

    fn operand_address(&self, base: u8, displacement: u16) -> u64 {
        let b = if base == 0 { 0 } else { self.regs.gpr(base) };
        b.wrapping_add(u64::from(displacement))
    }
}

/// Exits only s390x has.
///
/// ```
/// use kvmkit_arch_s390x::{decode_exit, S390Exit, KVM_RUN_SIZE};
/// use kvmkit_core::VcpuExit;
/// let mut run = vec![0u8; KVM_RUN_SIZE];
/// run[8..12].copy_from_slice(&13u32.to_be_bytes()); // KVM_EXIT_S390_SIEIC
/// run[48] = 0x1c; // disabled wait
/// match decode_exit(&mut run).unwrap() {
///     VcpuExit::Arch(S390Exit::SieIntercept(i)) => assert!(i.is_disabled_wait()),
///     e => panic!("{e:?}"),
/// }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum S390Exit<'a> {
    /// A SIE interception KVM left to userspace (`KVM_EXIT_S390_SIEIC`).
    SieIntercept(SieIntercept<'a>),
    /// The guest asked for a reset / re-IPL (`KVM_EXIT_S390_RESET`), e.g.
    /// by `DIAGNOSE 0x308`; `flags` are `KVM_S390_RESET_*`.
    Reset {
        /// `kvm_run.s390_reset_flags`.
        flags: u64,
    },
    /// A fault in a user-controlled VM (`KVM_EXIT_S390_UCONTROL`).
    Ucontrol {
        /// The translation-exception code.
        trans_exc_code: u64,
        /// The program interruption code.
        pgm_code: u32,
    },
    /// `TEST SUBCHANNEL` for the channel subsystem in userspace
    /// (`KVM_EXIT_S390_TSCH`).
    Tsch {
        /// The subsystem-identification word's high half.
        subchannel_id: u16,
        /// The subchannel number.
        subchannel_nr: u16,
        /// The I/O interruption parameter (if one was dequeued).
        io_int_parm: u32,
        /// The I/O interruption word (if one was dequeued).
        io_int_word: u32,
        /// The instruction's `ipb`.
        ipb: u32,
        /// Whether KVM dequeued an I/O interruption for it.
        dequeued: bool,
    },
    /// `STORE SYSTEM INFORMATION` after KVM stored the SYSIB
    /// (`KVM_EXIT_S390_STSI`, with `KVM_CAP_S390_USER_STSI`).
    Stsi {
        /// The SYSIB's guest logical address.
        addr: u64,
        /// Its access register.
        ar: u8,
        /// The function code.
        fc: u8,
        /// Selector 1.
        sel1: u8,
        /// Selector 2.
        sel2: u16,
    },
    /// A generic exit with no s390x meaning (`KVM_EXIT_UNKNOWN`).
    Other {
        /// The raw `exit_reason`.
        reason: u32,
    },
}

fn need(run: &[u8], reason: u32, needed: usize) -> Result<(), DecodeError> {
    if run.len() < needed {
        Err(DecodeError::Truncated {
            reason,
            len: run.len(),
            needed,
        })
    } else {
        Ok(())
    }
}

fn bad(reason: u32, field: &'static str, value: u64) -> DecodeError {
    DecodeError::BadField {
        reason,
        field,
        value,
    }
}

/// The exit reason in a `kvm_run` area (big-endian `exit_reason`).
pub(crate) fn exit_reason(run: &[u8]) -> Result<u32, DecodeError> {
    need(run, 0, KVM_RUN_EXIT_REASON_OFFSET + 4)?;
    Ok(be32(run, KVM_RUN_EXIT_REASON_OFFSET))
}

/// Decodes the exit in an s390x `kvm_run` area (at least [`KVM_RUN_SIZE`]
/// bytes, laid out and byte-ordered as an s390x kernel writes it).
///
/// Malformed lengths (which a correct kernel never writes) are errors, never
/// out-of-bounds accesses.
///
/// ```
/// use kvmkit_arch_s390x::{decode_exit, S390Exit, KVM_RUN_SIZE};
/// use kvmkit_core::VcpuExit;
/// let mut run = vec![0u8; KVM_RUN_SIZE];
/// run[8..12].copy_from_slice(&14u32.to_be_bytes()); // KVM_EXIT_S390_RESET
/// run[48..56].copy_from_slice(&16u64.to_be_bytes()); // KVM_S390_RESET_IPL
/// assert!(matches!(decode_exit(&mut run), Ok(VcpuExit::Arch(S390Exit::Reset { flags: 16 }))));
/// ```
pub fn decode_exit(run: &mut [u8]) -> Result<VcpuExit<'_, S390x>, DecodeError> {
    let reason = exit_reason(run)?;
    need(run, reason, KVM_RUN_SIZE)?;
    Ok(match reason {
        KVM_EXIT_S390_SIEIC => {
            let icptcode = run[off::SIEIC_ICPTCODE];
            let ipa = be16(run, off::SIEIC_IPA);
            let ipb = be32(run, off::SIEIC_IPB);
            VcpuExit::Arch(S390Exit::SieIntercept(SieIntercept {
                icptcode,
                ipa,
                ipb,
                regs: RunRegs { run },
            }))
        }
        KVM_EXIT_S390_RESET => VcpuExit::Arch(S390Exit::Reset {
            flags: be64(run, off::RESET_FLAGS),
        }),
        KVM_EXIT_S390_UCONTROL => VcpuExit::Arch(S390Exit::Ucontrol {
            trans_exc_code: be64(run, off::UCONTROL_TEC),
            pgm_code: be32(run, off::UCONTROL_PGM),
        }),
        KVM_EXIT_S390_TSCH => VcpuExit::Arch(S390Exit::Tsch {
            subchannel_id: be16(run, off::TSCH_ID),
            subchannel_nr: be16(run, off::TSCH_NR),
            io_int_parm: be32(run, off::TSCH_PARM),
            io_int_word: be32(run, off::TSCH_WORD),
            ipb: be32(run, off::TSCH_IPB),
            dequeued: run[off::TSCH_DEQUEUED] != 0,
        }),
        KVM_EXIT_S390_STSI => VcpuExit::Arch(S390Exit::Stsi {
            addr: be64(run, off::STSI_ADDR),
            ar: run[off::STSI_AR],
            fc: run[off::STSI_FC],
            sel1: run[off::STSI_SEL1],
            sel2: be16(run, off::STSI_SEL2),
        }),
        KVM_EXIT_MMIO => {
            let addr = be64(run, off::MMIO_ADDR);
            let len = be32(run, off::MMIO_LEN);
            if !(1..=8).contains(&len) {
                return Err(bad(reason, "mmio.len", u64::from(len)));
            }
            let is_write = run[off::MMIO_IS_WRITE] != 0;
            let data = &mut run[off::MMIO_DATA..off::MMIO_DATA + len as usize];
            if is_write {
                VcpuExit::MmioWrite { addr, data }
            } else {
                VcpuExit::MmioRead { addr, data }
            }
        }
        KVM_EXIT_DEBUG => VcpuExit::Debug {
            pc: be64(run, off::DEBUG_ADDR),
        },
        KVM_EXIT_FAIL_ENTRY => VcpuExit::FailEntry {
            reason: be64(run, off::FAIL_REASON),
            cpu: be32(run, off::FAIL_CPU),
        },
        KVM_EXIT_INTERNAL_ERROR => {
            let ndata = be32(run, off::INTERNAL_NDATA);
            if ndata > 16 {
                return Err(bad(reason, "internal.ndata", u64::from(ndata)));
            }
            let mut data = [0u64; 4];
            for (i, d) in data.iter_mut().enumerate().take(ndata as usize) {
                *d = be64(run, off::INTERNAL_DATA + 8 * i);
            }
            VcpuExit::InternalError {
                suberror: be32(run, off::INTERNAL_SUBERROR),
                ndata,
                data,
            }
        }
        KVM_EXIT_SYSTEM_EVENT => {
            let ndata = be32(run, off::SYSTEM_EVENT_NDATA);
            if ndata > 16 {
                return Err(bad(reason, "system_event.ndata", u64::from(ndata)));
            }
            VcpuExit::SystemEvent {
                kind: SystemEventKind::from_raw(be32(run, off::SYSTEM_EVENT_TYPE)),
                flags: be64(run, off::SYSTEM_EVENT_FLAGS),
            }
        }
        KVM_EXIT_INTR => VcpuExit::Interrupted,
        KVM_EXIT_HLT => VcpuExit::Hlt,
        KVM_EXIT_SHUTDOWN => VcpuExit::Shutdown,
        KVM_EXIT_IRQ_WINDOW_OPEN => VcpuExit::IrqWindowOpen,
        // Never written by s390x's KVM today (no dirty ring), but the number
        // is generic and the exit carries no data.
        KVM_EXIT_DIRTY_RING_FULL => VcpuExit::DirtyRingFull,
        KVM_EXIT_UNKNOWN => VcpuExit::Arch(S390Exit::Other { reason }),
        other => VcpuExit::Unknown { reason: other },
    })
}

/// Every `KVM_EXIT_*` value this decoder knows, by the kernel's name.
pub const EXIT_REASONS: &[(&str, u32)] = &[
    ("KVM_EXIT_UNKNOWN", KVM_EXIT_UNKNOWN),
    ("KVM_EXIT_DEBUG", KVM_EXIT_DEBUG),
    ("KVM_EXIT_HLT", KVM_EXIT_HLT),
    ("KVM_EXIT_MMIO", KVM_EXIT_MMIO),
    ("KVM_EXIT_IRQ_WINDOW_OPEN", KVM_EXIT_IRQ_WINDOW_OPEN),
    ("KVM_EXIT_SHUTDOWN", KVM_EXIT_SHUTDOWN),
    ("KVM_EXIT_FAIL_ENTRY", KVM_EXIT_FAIL_ENTRY),
    ("KVM_EXIT_INTR", KVM_EXIT_INTR),
    ("KVM_EXIT_S390_SIEIC", KVM_EXIT_S390_SIEIC),
    ("KVM_EXIT_S390_RESET", KVM_EXIT_S390_RESET),
    ("KVM_EXIT_INTERNAL_ERROR", KVM_EXIT_INTERNAL_ERROR),
    ("KVM_EXIT_S390_UCONTROL", KVM_EXIT_S390_UCONTROL),
    ("KVM_EXIT_S390_TSCH", KVM_EXIT_S390_TSCH),
    ("KVM_EXIT_SYSTEM_EVENT", KVM_EXIT_SYSTEM_EVENT),
    ("KVM_EXIT_S390_STSI", KVM_EXIT_S390_STSI),
    ("KVM_EXIT_DIRTY_RING_FULL", KVM_EXIT_DIRTY_RING_FULL),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A kvm_run area as an s390x kernel leaves it: big-endian fields.
    fn area(reason: u32) -> Vec<u8> {
        let mut v = vec![0u8; 4096];
        v[8..12].copy_from_slice(&reason.to_be_bytes());
        v
    }

    fn put(v: &mut [u8], off: usize, bytes: &[u8]) {
        v[off..off + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn offsets_are_those_of_the_s390x_header() {
        // Values from s390x-linux-gnu-gcc on linux/kvm.h (6.1); the live
        // comparison of every field is tests/uapi.rs.
        assert_eq!(KVM_RUN_SIZE, 2368);
        assert_eq!(off::PSW_MASK, 32);
        assert_eq!(off::PSW_ADDR, 40);
        assert_eq!(off::EXIT, 48);
        assert_eq!(off::SIEIC_IPA, 50);
        assert_eq!(off::SIEIC_IPB, 52);
        assert_eq!(off::MMIO_LEN, 64);
        assert_eq!(off::SYNC, 320);
        assert_eq!(off::SYNC_GPRS, 328);
    }

    #[test]
    fn decodes_a_servc_intercept_and_sets_the_condition_code() {
        let mut run = area(KVM_EXIT_S390_SIEIC);
        run[off::SIEIC_ICPTCODE] = icpt::INSTRUCTION;
        put(&mut run, off::SIEIC_IPA, &0xb220u16.to_be_bytes());
        put(&mut run, off::SIEIC_IPB, &0x0023_0000u32.to_be_bytes());
        put(&mut run, off::SYNC_GPRS + 16, &0x0076_0005u64.to_be_bytes());
        put(&mut run, off::SYNC_GPRS + 24, &0x3000u64.to_be_bytes());
        put(
            &mut run,
            off::PSW_MASK,
            &0x0700_3000_8000_0000u64.to_be_bytes(),
        );
        put(&mut run, off::PSW_ADDR, &0x1_0004u64.to_be_bytes());
        put(&mut run, off::SYNC_PREFIX, &0x2000u64.to_be_bytes());
        match decode_exit(&mut run).unwrap() {
            VcpuExit::Arch(S390Exit::SieIntercept(mut i)) => {
                assert_eq!(i.icptcode, icpt::INSTRUCTION);
                assert_eq!(
                    i.service_call(),
                    Some(ServiceCall {
                        command: 0x0076_0005,
                        sccb: 0x3000
                    })
                );
                assert_eq!(i.diagnose_code(), None);
                assert_eq!(i.sigp_order(), None);
                assert!(!i.is_disabled_wait());
                assert_eq!(i.regs.psw_addr(), 0x1_0004);
                assert_eq!(i.regs.condition_code(), 3);
                assert_eq!(i.regs.prefix(), 0x2000);
                i.regs.set_condition_code(0);
                i.regs.set_gpr(4, 0xdead);
                assert!(format!("{i:?}").contains("0x10004"));
            }
            e => panic!("unexpected {e:?}"),
        }
        assert_eq!(be64(&run, off::PSW_MASK), 0x0700_0000_8000_0000);
        assert_eq!(be64(&run, off::SYNC_GPRS + 32), 0xdead);
        assert_eq!(be64(&run, off::DIRTY_REGS), KVM_SYNC_GPRS);
    }

    #[test]
    fn recognises_diagnose_and_sigp() {
        let mut run = area(KVM_EXIT_S390_SIEIC);
        put(&mut run, off::SYNC_GPRS + 8 * 5, &0x300u64.to_be_bytes());
        let mut regs = RunRegs::new(&mut run).unwrap();
        regs.set_gpr(0, 0);
        // diag %r1,%r2,0x500 = 8312 0500
        let i = SieIntercept {
            icptcode: icpt::INSTRUCTION,
            ipa: 0x8312,
            ipb: 0x0500_0000,
            regs,
        };
        assert_eq!(
            i.instruction(),
            Some(Instruction::Diagnose {
                r1: 1,
                r3: 2,
                base: 0,
                displacement: 0x500
            })
        );
        assert_eq!(i.diagnose_code(), Some(0x500));
        assert_eq!(i.service_call(), None);
        // diag %r0,%r0,8(%r5) = 8300 5008: code = gpr5 + 8
        let i = SieIntercept {
            ipa: 0x8300,
            ipb: 0x5008_0000,
            ..i
        };
        assert_eq!(i.diagnose_code(), Some(0x308));
        // sigp %r1,%r3,5 (stop) = AE13 0005
        let i = SieIntercept {
            ipa: 0xae13,
            ipb: 0x0005_0000,
            ..i
        };
        assert_eq!(i.sigp_order(), Some(5));
        assert_eq!(i.diagnose_code(), None);
        let i = SieIntercept { ipa: 0xb2ff, ..i };
        assert!(matches!(
            i.instruction(),
            Some(Instruction::Other { ipa: 0xb2ff, .. })
        ));
        assert_eq!(i.sigp_order(), None);
        let i = SieIntercept {
            icptcode: icpt::WAIT,
            ..i
        };
        assert!(i.is_disabled_wait());
        assert_eq!(i.instruction(), None);
    }

    #[test]
    fn decodes_the_s390_exits() {
        let mut run = area(KVM_EXIT_S390_RESET);
        put(&mut run, off::RESET_FLAGS, &0x12u64.to_be_bytes());
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::Arch(S390Exit::Reset { flags: 0x12 })
        ));

        let mut run = area(KVM_EXIT_S390_UCONTROL);
        put(&mut run, off::UCONTROL_TEC, &0x8000_1000u64.to_be_bytes());
        put(&mut run, off::UCONTROL_PGM, &0x10u32.to_be_bytes());
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::Arch(S390Exit::Ucontrol {
                trans_exc_code: 0x8000_1000,
                pgm_code: 0x10
            })
        ));

        let mut run = area(KVM_EXIT_S390_TSCH);
        put(&mut run, off::TSCH_ID, &0x0001u16.to_be_bytes());
        put(&mut run, off::TSCH_NR, &0x0002u16.to_be_bytes());
        put(&mut run, off::TSCH_PARM, &0x1234_5678u32.to_be_bytes());
        put(&mut run, off::TSCH_WORD, &0x8000_0000u32.to_be_bytes());
        put(&mut run, off::TSCH_IPB, &0x0010_0000u32.to_be_bytes());
        run[off::TSCH_DEQUEUED] = 1;
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::Arch(S390Exit::Tsch {
                subchannel_id: 1,
                subchannel_nr: 2,
                io_int_parm: 0x1234_5678,
                io_int_word: 0x8000_0000,
                ipb: 0x0010_0000,
                dequeued: true
            })
        ));

        let mut run = area(KVM_EXIT_S390_STSI);
        put(&mut run, off::STSI_ADDR, &0x7000u64.to_be_bytes());
        run[off::STSI_AR] = 1;
        run[off::STSI_FC] = 3;
        run[off::STSI_SEL1] = 2;
        put(&mut run, off::STSI_SEL2, &2u16.to_be_bytes());
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::Arch(S390Exit::Stsi {
                addr: 0x7000,
                ar: 1,
                fc: 3,
                sel1: 2,
                sel2: 2
            })
        ));

        let mut run = area(KVM_EXIT_UNKNOWN);
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::Arch(S390Exit::Other { reason: 0 })
        ));
        let mut run = area(999);
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::Unknown { reason: 999 }
        ));
    }

    #[test]
    fn decodes_mmio_without_reordering_the_data() {
        let mut run = area(KVM_EXIT_MMIO);
        put(&mut run, off::MMIO_ADDR, &0xd000_0000u64.to_be_bytes());
        put(&mut run, off::MMIO_LEN, &4u32.to_be_bytes());
        match decode_exit(&mut run).unwrap() {
            VcpuExit::MmioRead {
                addr: 0xd000_0000,
                data,
            } => data.copy_from_slice(&[1, 2, 3, 4]),
            e => panic!("unexpected {e:?}"),
        }
        assert_eq!(run[off::MMIO_DATA..off::MMIO_DATA + 4], [1, 2, 3, 4]);
        run[off::MMIO_IS_WRITE] = 1;
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::MmioWrite {
                data: [1, 2, 3, 4],
                ..
            }
        ));
        put(&mut run, off::MMIO_LEN, &9u32.to_be_bytes());
        assert!(matches!(
            decode_exit(&mut run),
            Err(DecodeError::BadField {
                field: "mmio.len",
                value: 9,
                ..
            })
        ));
        put(&mut run, off::MMIO_LEN, &0u32.to_be_bytes());
        assert!(decode_exit(&mut run).is_err());
    }

    #[test]
    fn decodes_the_portable_exits() {
        let mut run = area(KVM_EXIT_DEBUG);
        put(&mut run, off::DEBUG_ADDR, &0x1_0040u64.to_be_bytes());
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::Debug { pc: 0x1_0040 }
        ));
        let mut run = area(KVM_EXIT_FAIL_ENTRY);
        put(&mut run, off::FAIL_REASON, &0x21u64.to_be_bytes());
        put(&mut run, off::FAIL_CPU, &3u32.to_be_bytes());
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::FailEntry {
                reason: 0x21,
                cpu: 3
            }
        ));
        let mut run = area(KVM_EXIT_INTERNAL_ERROR);
        put(&mut run, off::INTERNAL_SUBERROR, &1u32.to_be_bytes());
        put(&mut run, off::INTERNAL_NDATA, &2u32.to_be_bytes());
        put(&mut run, off::INTERNAL_DATA, &7u64.to_be_bytes());
        put(&mut run, off::INTERNAL_DATA + 8, &8u64.to_be_bytes());
        match decode_exit(&mut run).unwrap() {
            VcpuExit::InternalError {
                suberror: 1,
                ndata: 2,
                data,
            } => assert_eq!(data, [7, 8, 0, 0]),
            e => panic!("unexpected {e:?}"),
        }
        put(&mut run, off::INTERNAL_NDATA, &17u32.to_be_bytes());
        assert!(matches!(
            decode_exit(&mut run),
            Err(DecodeError::BadField {
                field: "internal.ndata",
                ..
            })
        ));
        let mut run = area(KVM_EXIT_SYSTEM_EVENT);
        put(&mut run, off::SYSTEM_EVENT_TYPE, &2u32.to_be_bytes());
        put(&mut run, off::SYSTEM_EVENT_FLAGS, &5u64.to_be_bytes());
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::SystemEvent {
                kind: SystemEventKind::Reset,
                flags: 5
            }
        ));
        put(&mut run, off::SYSTEM_EVENT_NDATA, &99u32.to_be_bytes());
        assert!(decode_exit(&mut run).is_err());
        for (reason, want) in [
            (KVM_EXIT_INTR, "Interrupted"),
            (KVM_EXIT_HLT, "Hlt"),
            (KVM_EXIT_SHUTDOWN, "Shutdown"),
            (KVM_EXIT_IRQ_WINDOW_OPEN, "IrqWindowOpen"),
            (KVM_EXIT_DIRTY_RING_FULL, "DirtyRingFull"),
        ] {
            let mut run = area(reason);
            assert_eq!(format!("{:?}", decode_exit(&mut run).unwrap()), want);
        }
    }

    #[test]
    fn decodes_dirty_ring_full_from_a_big_endian_area() {
        // exit_reason 31 big-endian at offset 8, as an s390x kernel stores
        // it; the little-endian reading would be 0x1f00_0000.
        let mut run = vec![0x5au8; KVM_RUN_SIZE];
        run[8..12].copy_from_slice(&[0, 0, 0, 31]);
        assert_eq!(KVM_EXIT_DIRTY_RING_FULL, 31);
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::DirtyRingFull
        ));
        run[8..12].copy_from_slice(&31u32.to_le_bytes());
        assert!(matches!(
            decode_exit(&mut run).unwrap(),
            VcpuExit::Unknown {
                reason: 0x1f00_0000
            }
        ));
    }

    #[test]
    fn short_areas_are_errors() {
        let mut tiny = vec![0u8; 4];
        assert!(matches!(
            decode_exit(&mut tiny),
            Err(DecodeError::Truncated { reason: 0, .. })
        ));
        let mut short = area(KVM_EXIT_S390_SIEIC);
        short.truncate(KVM_RUN_SIZE - 1);
        assert!(matches!(
            decode_exit(&mut short),
            Err(DecodeError::Truncated {
                reason: 13,
                needed: 2368,
                ..
            })
        ));
        assert!(RunRegs::new(&mut short).is_err());
        let names: Vec<_> = EXIT_REASONS.iter().map(|(n, _)| *n).collect();
        assert!(names.contains(&"KVM_EXIT_S390_SIEIC"));
    }
}
