//! `struct kvm_run` as laid out for ppc64, with the exit-union members this
//! crate decodes.
//!
//! The decoder reads the mapped area byte by byte at the offsets these
//! definitions give (never casting the buffer to a struct); the definitions
//! exist so that the offsets come from the compiler and can be checked
//! against the header.

use super::kvm_debug_exit_arch;
use std::fmt;
use std::mem::{align_of, size_of};

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
    /// Tail padding of the C struct (not a kernel field).
    pub _pad: u32,
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
    /// Tail padding of the C struct (not a kernel field).
    pub _pad: [u8; 3],
}

/// `kvm_run.dcr` (`KVM_EXIT_DCR`, BookE device control registers; deprecated).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_run_dcr {
    pub dcrn: u32,
    pub data: u32,
    pub is_write: u8,
    /// Tail padding of the C struct (not a kernel field).
    pub _pad: [u8; 3],
}

/// `kvm_run.internal` (`KVM_EXIT_INTERNAL_ERROR`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_run_internal {
    pub suberror: u32,
    pub ndata: u32,
    pub data: [u64; 16],
}

/// `kvm_run.osi` (`KVM_EXIT_OSI`, Mac-on-Linux OS interface calls of KVM-PR).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_run_osi {
    pub gprs: [u64; 32],
}

/// `kvm_run.papr_hcall` (`KVM_EXIT_PAPR_HCALL`): `ret` and `args` are
/// copied back to r3 and r4..r12 on the next `KVM_RUN`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_run_papr_hcall {
    pub nr: u64,
    pub ret: u64,
    pub args: [u64; 9],
}

/// `kvm_run.epr` (`KVM_EXIT_EPR`, BookE external proxy).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_run_epr {
    pub epr: u32,
}

/// `kvm_run.system_event` (`KVM_EXIT_SYSTEM_EVENT`); `data[0]` is the
/// legacy `flags` (an anonymous union in C).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_run_system_event {
    pub type_: u32,
    pub ndata: u32,
    pub data: [u64; 16],
}

/// The exit union of `kvm_run` (anonymous in C), 256 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub union kvm_run_exit {
    pub(crate) hw: kvm_run_hw,
    pub(crate) fail_entry: kvm_run_fail_entry,
    pub(crate) debug: kvm_run_debug,
    pub(crate) mmio: kvm_run_mmio,
    pub(crate) dcr: kvm_run_dcr,
    pub(crate) internal: kvm_run_internal,
    pub(crate) osi: kvm_run_osi,
    pub(crate) papr_hcall: kvm_run_papr_hcall,
    pub(crate) epr: kvm_run_epr,
    pub(crate) system_event: kvm_run_system_event,
    pub(crate) padding: [u8; 256],
}
const _: () = assert!(size_of::<kvm_run_exit>() == 256);

impl fmt::Debug for kvm_run_exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("kvm_run_exit { .. }")
    }
}

/// `struct kvm_run` for ppc64 (no s390 PSW before the union; the ppc
/// `kvm_sync_regs` is empty, so `s` is its 2048-byte padding).
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
    pub(crate) u: kvm_run_exit,
    pub kvm_valid_regs: u64,
    pub kvm_dirty_regs: u64,
    pub s: [u8; 2048],
}
const _: () = assert!(size_of::<kvm_run>() == 2352 && align_of::<kvm_run>() == 8);

impl kvm_run {
    /// All zero.
    pub const ZERO: Self = kvm_run {
        request_interrupt_window: 0,
        immediate_exit: 0,
        padding1: [0; 6],
        exit_reason: 0,
        ready_for_interrupt_injection: 0,
        if_flag: 0,
        flags: 0,
        cr8: 0,
        apic_base: 0,
        u: kvm_run_exit { padding: [0; 256] },
        kvm_valid_regs: 0,
        kvm_dirty_regs: 0,
        s: [0; 2048],
    };
}
