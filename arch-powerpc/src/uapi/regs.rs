//! `kvm_regs`, `kvm_fpu` and the guest-debug structs of `asm/kvm.h`.

use std::mem::{align_of, size_of};

/// `struct kvm_regs` (`KVM_GET_REGS` / `KVM_SET_REGS`): `pc` is the NIP.
///
/// ```
/// let r = kvmkit_arch_powerpc::uapi::kvm_regs { pc: 0x100, ..Default::default() };
/// assert_eq!(std::mem::size_of_val(&r), 392);
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_regs {
    pub pc: u64,
    pub cr: u64,
    pub ctr: u64,
    pub lr: u64,
    pub xer: u64,
    pub msr: u64,
    pub srr0: u64,
    pub srr1: u64,
    pub pid: u64,
    pub sprg0: u64,
    pub sprg1: u64,
    pub sprg2: u64,
    pub sprg3: u64,
    pub sprg4: u64,
    pub sprg5: u64,
    pub sprg6: u64,
    pub sprg7: u64,
    pub gpr: [u64; 32],
}
const _: () = assert!(size_of::<kvm_regs>() == 392 && align_of::<kvm_regs>() == 8);

/// `struct kvm_fpu`: the 32 floating-point registers.
///
/// PowerPC's KVM has no `KVM_GET_FPU`/`KVM_SET_FPU` (they return
/// `ENOTSUPP`); this crate fills the struct through ONE_REG
/// (`KVM_REG_PPC_FPR0` + n).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_fpu {
    pub fpr: [u64; 32],
}
const _: () = assert!(size_of::<kvm_fpu>() == 256 && align_of::<kvm_fpu>() == 8);

/// `struct kvm_debug_exit_arch`: `kvm_run.debug.arch`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_debug_exit_arch {
    pub address: u64,
    pub status: u32,
    pub reserved: u32,
}
const _: () = assert!(size_of::<kvm_debug_exit_arch>() == 16);

/// One entry of `kvm_guest_debug_arch.bp` (an anonymous struct in C).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_guest_debug_bp {
    pub addr: u64,
    pub type_: u32,
    pub reserved: u32,
}
const _: () = assert!(size_of::<kvm_guest_debug_bp>() == 16);

/// `struct kvm_guest_debug_arch`: up to 16 hardware breakpoints/watchpoints.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_guest_debug_arch {
    pub bp: [kvm_guest_debug_bp; 16],
}
const _: () = assert!(size_of::<kvm_guest_debug_arch>() == 256);

/// `struct kvm_guest_debug` (`KVM_SET_GUEST_DEBUG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_guest_debug {
    pub control: u32,
    pub pad: u32,
    pub arch: kvm_guest_debug_arch,
}
const _: () = assert!(size_of::<kvm_guest_debug>() == 264 && align_of::<kvm_guest_debug>() == 8);
