//! s390x's KVM UAPI: `#[repr(C)]` mirrors of the structs in `linux/kvm.h` and
//! `asm/kvm.h` (Linux 6.1, Debian's `linux-libc-dev-s390x-cross`) that this
//! crate passes to the kernel or decodes from `kvm_run`.
//!
//! Written by hand from the headers, not generated on this host: kvm-bindings
//! has no s390x. Every size, alignment, field offset and field size is pinned
//! below and compared with the real headers, compiled by the s390x cross
//! compiler, in `tests/uapi.rs` (see [`crate::uapi_facts`]).
//!
//! The structs are in the s390x host's (big-endian) byte order when the
//! kernel reads or writes them through an ioctl: on an s390x host that is the
//! native order, so plain integer fields are right. The `kvm_run` area is
//! decoded byte by byte instead (see [`crate::decode_exit`]).

#![allow(non_camel_case_types, missing_docs)]

mod consts;
mod irq;
mod run;

pub use consts::*;
pub use irq::*;
pub use run::*;

use std::mem::{align_of, size_of};

/// `struct kvm_regs`: the 16 general-purpose registers (`KVM_GET_REGS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_regs {
    pub gprs: [u64; 16],
}

/// `struct kvm_sregs`: access and control registers (`KVM_GET_SREGS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_sregs {
    pub acrs: [u32; 16],
    pub crs: [u64; 16],
}

/// `struct kvm_fpu`: the floating-point control register and the 16
/// floating-point registers (`KVM_GET_FPU`); C pads `fpc` to 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_fpu {
    pub fpc: u32,
    /// The implicit padding after `fpc` in C.
    pub pad: u32,
    pub fprs: [u64; 16],
}

/// `struct kvm_one_reg` (`KVM_GET_ONE_REG` / `KVM_SET_ONE_REG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_one_reg {
    pub id: u64,
    pub addr: u64,
}

/// `struct kvm_s390_psw` (`KVM_S390_SET_INITIAL_PSW`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_s390_psw {
    pub mask: u64,
    pub addr: u64,
}

/// `struct kvm_userspace_memory_region` (`KVM_SET_USER_MEMORY_REGION`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_userspace_memory_region {
    pub slot: u32,
    pub flags: u32,
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    pub userspace_addr: u64,
}

/// `struct kvm_debug_exit_arch`: the s390x part of `kvm_run.debug`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_debug_exit_arch {
    pub addr: u64,
    pub type_: u8,
    pub pad: [u8; 7],
}

/// `struct kvm_hw_breakpoint`: one entry of the array `kvm_guest_debug_arch`
/// points at.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_hw_breakpoint {
    pub addr: u64,
    pub phys_addr: u64,
    pub len: u64,
    pub type_: u8,
    pub pad: [u8; 7],
}

/// `struct kvm_guest_debug_arch`; `hw_bp` is a user pointer to `nr_hw_bp`
/// [`kvm_hw_breakpoint`]s (a 64-bit pointer on s390x).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_guest_debug_arch {
    pub nr_hw_bp: u32,
    pub pad: u32,
    pub hw_bp: u64,
}

/// `struct kvm_guest_debug` (`KVM_SET_GUEST_DEBUG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_guest_debug {
    pub control: u32,
    pub pad: u32,
    pub arch: kvm_guest_debug_arch,
}

/// `struct kvm_enable_cap` (`KVM_ENABLE_CAP`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct kvm_enable_cap {
    pub cap: u32,
    pub flags: u32,
    pub args: [u64; 4],
    pub pad: [u8; 64],
}

impl Default for kvm_enable_cap {
    fn default() -> Self {
        kvm_enable_cap {
            cap: 0,
            flags: 0,
            args: [0; 4],
            pad: [0; 64],
        }
    }
}

/// `struct kvm_create_device` (`KVM_CREATE_DEVICE`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_create_device {
    pub type_: u32,
    pub fd: u32,
    pub flags: u32,
}

/// `struct kvm_device_attr` (`KVM_SET_DEVICE_ATTR` and friends).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_device_attr {
    pub flags: u32,
    pub group: u32,
    pub attr: u64,
    pub addr: u64,
}

/// `struct kvm_dirty_log` (`KVM_GET_DIRTY_LOG`): `dirty_bitmap` is the user
/// address of the bitmap (in C a union of `void *` and `__u64 padding2`,
/// 8 bytes on s390x either way).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_dirty_log {
    pub slot: u32,
    pub padding1: u32,
    pub dirty_bitmap: u64,
}

/// `struct kvm_clear_dirty_log` (`KVM_CLEAR_DIRTY_LOG`): `dirty_bitmap` as
/// in [`kvm_dirty_log`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_clear_dirty_log {
    pub slot: u32,
    pub num_pages: u32,
    pub first_page: u64,
    pub dirty_bitmap: u64,
}

/// `struct kvm_s390_vm_tod_clock` (`KVM_S390_VM_TOD_EXT`): the guest TOD
/// clock with its epoch index (multiple-epoch facility, 139).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_s390_vm_tod_clock {
    pub epoch_idx: u8,
    /// The implicit padding after `epoch_idx` in C.
    pub pad: [u8; 7],
    pub tod: u64,
}

/// `struct kvm_s390_vm_cpu_processor` (`KVM_S390_VM_CPU_PROCESSOR`): the
/// CPU model the VM's guest sees: CPU id, instruction blocking control and
/// the facility list STFLE reports.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct kvm_s390_vm_cpu_processor {
    pub cpuid: u64,
    pub ibc: u16,
    pub pad: [u8; 6],
    pub fac_list: [u64; 256],
}

impl kvm_s390_vm_cpu_processor {
    /// All zero.
    pub const ZERO: Self = kvm_s390_vm_cpu_processor {
        cpuid: 0,
        ibc: 0,
        pad: [0; 6],
        fac_list: [0; 256],
    };
}

impl Default for kvm_s390_vm_cpu_processor {
    fn default() -> Self {
        Self::ZERO
    }
}

/// `struct kvm_s390_vm_cpu_feat` (`KVM_S390_VM_CPU_PROCESSOR_FEAT`): the
/// CPU features (SIE and others STFLE does not report), 1024 bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_s390_vm_cpu_feat {
    pub feat: [u64; 16],
}

const _: () = assert!(size_of::<kvm_regs>() == 128);
const _: () = assert!(size_of::<kvm_sregs>() == 192);
const _: () = assert!(size_of::<kvm_fpu>() == 136);
const _: () = assert!(size_of::<kvm_one_reg>() == 16);
const _: () = assert!(size_of::<kvm_s390_psw>() == 16);
const _: () = assert!(size_of::<kvm_userspace_memory_region>() == 32);
const _: () = assert!(size_of::<kvm_debug_exit_arch>() == 16);
const _: () = assert!(size_of::<kvm_hw_breakpoint>() == 32);
const _: () = assert!(size_of::<kvm_guest_debug_arch>() == 16);
const _: () = assert!(size_of::<kvm_guest_debug>() == 24);
const _: () = assert!(size_of::<kvm_enable_cap>() == 104);
const _: () = assert!(size_of::<kvm_create_device>() == 12);
const _: () = assert!(size_of::<kvm_device_attr>() == 24);
const _: () = assert!(size_of::<kvm_dirty_log>() == 16 && align_of::<kvm_dirty_log>() == 8);
const _: () = assert!(size_of::<kvm_clear_dirty_log>() == 24);
const _: () = assert!(align_of::<kvm_fpu>() == 8 && align_of::<kvm_create_device>() == 4);
const _: () = assert!(size_of::<kvm_s390_vm_tod_clock>() == 16);
const _: () = assert!(size_of::<kvm_s390_vm_cpu_processor>() == 2064);
const _: () = assert!(size_of::<kvm_s390_vm_cpu_feat>() == 128);
