//! `struct kvm_run` as s390x lays it out: `psw_mask` and `psw_addr` sit
//! between the common header and the exit union, which therefore starts at
//! offset 48 (32 on x86), and the sync-regs area is s390x's `kvm_sync_regs`.

use super::kvm_debug_exit_arch;
use std::fmt;
use std::mem::{align_of, offset_of, size_of};

/// `kvm_run.hw` (`KVM_EXIT_UNKNOWN`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_run_hw {
    pub hardware_exit_reason: u64,
}

/// `kvm_run.fail_entry` (`KVM_EXIT_FAIL_ENTRY`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_run_fail_entry {
    pub hardware_entry_failure_reason: u64,
    pub cpu: u32,
}

/// `kvm_run.debug` (`KVM_EXIT_DEBUG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_run_debug {
    pub arch: kvm_debug_exit_arch,
}

/// `kvm_run.mmio` (`KVM_EXIT_MMIO`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_run_mmio {
    pub phys_addr: u64,
    pub data: [u8; 8],
    pub len: u32,
    pub is_write: u8,
}

/// `kvm_run.s390_sieic` (`KVM_EXIT_S390_SIEIC`): the SIE interception code
/// and the instruction parameters (`ipa`: the first halfword of the
/// intercepted instruction, `ipb`: the next four bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_run_s390_sieic {
    pub icptcode: u8,
    pub ipa: u16,
    pub ipb: u32,
}

/// `kvm_run.s390_ucontrol` (`KVM_EXIT_S390_UCONTROL`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_run_s390_ucontrol {
    pub trans_exc_code: u64,
    pub pgm_code: u32,
}

/// `kvm_run.internal` (`KVM_EXIT_INTERNAL_ERROR`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_run_internal {
    pub suberror: u32,
    pub ndata: u32,
    pub data: [u64; 16],
}

/// `kvm_run.s390_tsch` (`KVM_EXIT_S390_TSCH`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_run_s390_tsch {
    pub subchannel_id: u16,
    pub subchannel_nr: u16,
    pub io_int_parm: u32,
    pub io_int_word: u32,
    pub ipb: u32,
    pub dequeued: u8,
}

/// The anonymous union of `flags` and `data` in `kvm_run.system_event`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union kvm_run_system_event_data {
    pub flags: u64,
    pub data: [u64; 16],
}

impl fmt::Debug for kvm_run_system_event_data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("kvm_run_system_event_data")
            .finish_non_exhaustive()
    }
}

/// `kvm_run.system_event` (`KVM_EXIT_SYSTEM_EVENT`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvm_run_system_event {
    pub type_: u32,
    pub ndata: u32,
    pub u: kvm_run_system_event_data,
}

/// `kvm_run.s390_stsi` (`KVM_EXIT_S390_STSI`, with `KVM_CAP_S390_USER_STSI`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_run_s390_stsi {
    pub addr: u64,
    pub ar: u8,
    pub reserved: u8,
    pub fc: u8,
    pub sel1: u8,
    pub sel2: u16,
}

/// The exit union of `kvm_run` (anonymous in C): the members this crate
/// decodes, padded to 256 bytes as in the header.
#[repr(C)]
#[derive(Clone, Copy)]
pub union kvm_run_exit {
    pub hw: kvm_run_hw,
    pub fail_entry: kvm_run_fail_entry,
    pub debug: kvm_run_debug,
    pub mmio: kvm_run_mmio,
    pub s390_sieic: kvm_run_s390_sieic,
    pub s390_reset_flags: u64,
    pub s390_ucontrol: kvm_run_s390_ucontrol,
    pub internal: kvm_run_internal,
    pub s390_tsch: kvm_run_s390_tsch,
    pub system_event: kvm_run_system_event,
    pub s390_stsi: kvm_run_s390_stsi,
    pub padding: [u8; 256],
}

impl fmt::Debug for kvm_run_exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("kvm_run_exit").finish_non_exhaustive()
    }
}

/// The anonymous union of the vector and floating-point registers in
/// `kvm_sync_regs`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union kvm_sync_regs_vrs {
    /// Vector registers (`KVM_SYNC_VRS`).
    pub vrs: [[u64; 2]; 32],
    /// Floating-point registers (`KVM_SYNC_FPRS`).
    pub fprs: [u64; 16],
}

impl fmt::Debug for kvm_sync_regs_vrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("kvm_sync_regs_vrs").finish_non_exhaustive()
    }
}

/// The named part of the state-description annex in `kvm_sync_regs`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_sync_regs_sdnx_fields {
    pub reserved1: [u64; 2],
    pub gscb: [u64; 4],
    pub etoken: u64,
    pub etoken_extension: u64,
}

/// The anonymous union of the state-description annex in `kvm_sync_regs`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union kvm_sync_regs_sdnx {
    /// The whole annex, `SDNXL` (256) bytes.
    pub sdnx: [u8; 256],
    /// Its named fields (guarded-storage control block, etoken).
    pub fields: kvm_sync_regs_sdnx_fields,
}

impl fmt::Debug for kvm_sync_regs_sdnx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("kvm_sync_regs_sdnx").finish_non_exhaustive()
    }
}

/// `struct kvm_sync_regs`: the registers shared between KVM and userspace in
/// `kvm_run.s.regs`, valid per `kvm_valid_regs` (`KVM_SYNC_*` bits) and
/// written back on entry per `kvm_dirty_regs`.
///
/// `bpbc` is the C bit-field byte `bpbc:1, reserved2:7`; on big-endian
/// s390x the first bit-field is the most significant bit, so `bpbc` is
/// `0x80` of this byte.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvm_sync_regs {
    pub prefix: u64,
    pub gprs: [u64; 16],
    pub acrs: [u32; 16],
    pub crs: [u64; 16],
    pub todpr: u64,
    pub cputm: u64,
    pub ckc: u64,
    pub pp: u64,
    pub gbea: u64,
    pub pft: u64,
    pub pfs: u64,
    pub pfc: u64,
    pub vrs: kvm_sync_regs_vrs,
    pub reserved: [u8; 512],
    pub fpc: u32,
    pub bpbc: u8,
    pub padding1: [u8; 51],
    pub riccb: [u8; 64],
    pub diag318: u64,
    pub padding2: [u8; 184],
    pub sdnx: kvm_sync_regs_sdnx,
}

impl fmt::Debug for kvm_sync_regs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("kvm_sync_regs")
            .field("prefix", &self.prefix)
            .field("gprs", &self.gprs)
            .field("acrs", &self.acrs)
            .field("crs", &self.crs)
            .finish_non_exhaustive()
    }
}

/// The `s` union of `kvm_run`: the sync registers, padded to
/// `SYNC_REGS_SIZE_BYTES` (2048).
#[repr(C)]
#[derive(Clone, Copy)]
pub union kvm_run_s {
    pub regs: kvm_sync_regs,
    pub padding: [u8; 2048],
}

impl fmt::Debug for kvm_run_s {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("kvm_run_s").finish_non_exhaustive()
    }
}

/// `struct kvm_run` for s390x. Never instantiated by this crate: the area is
/// the kernel's mapping, read byte by byte; this struct is where the offsets
/// the decoder uses come from.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvm_run {
    pub request_interrupt_window: u8,
    pub immediate_exit: u8,
    pub padding1: [u8; 6],
    pub exit_reason: u32,
    pub ready_for_interrupt_injection: u8,
    pub if_flag: u8,
    pub flags: u16,
    pub cr8: u64,
    pub apic_base: u64,
    pub psw_mask: u64,
    pub psw_addr: u64,
    /// The anonymous exit union.
    pub exit: kvm_run_exit,
    pub kvm_valid_regs: u64,
    pub kvm_dirty_regs: u64,
    pub s: kvm_run_s,
}

const _: () = assert!(size_of::<kvm_run_exit>() == 256);
const _: () = assert!(size_of::<kvm_run_system_event>() == 136);
const _: () = assert!(size_of::<kvm_run_internal>() == 136);
const _: () = assert!(size_of::<kvm_run_s390_sieic>() == 8);
const _: () = assert!(size_of::<kvm_run_s390_tsch>() == 20);
const _: () = assert!(size_of::<kvm_run_s390_stsi>() == 16);
const _: () = assert!(size_of::<kvm_sync_regs>() == 1984);
const _: () = assert!(offset_of!(kvm_sync_regs, fpc) == 1416);
const _: () = assert!(offset_of!(kvm_sync_regs, riccb) == 1472);
const _: () = assert!(offset_of!(kvm_sync_regs, sdnx) == 1728);
const _: () = assert!(size_of::<kvm_run>() == 2368);
const _: () = assert!(align_of::<kvm_run>() == 8);
const _: () = assert!(offset_of!(kvm_run, exit) == 48);
const _: () = assert!(offset_of!(kvm_run, kvm_valid_regs) == 304);
const _: () = assert!(offset_of!(kvm_run, s) == 320);
