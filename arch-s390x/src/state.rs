//! The saved state of an s390x vCPU.

use crate::uapi::{
    kvm_fpu, kvm_regs, kvm_sregs, KVM_REG_S390_CLOCK_COMP, KVM_REG_S390_CPU_TIMER,
    KVM_REG_S390_EPOCHDIFF, KVM_REG_S390_GBEA, KVM_REG_S390_PFCOMPARE, KVM_REG_S390_PFSELECT,
    KVM_REG_S390_PFTOKEN, KVM_REG_S390_PP, KVM_REG_S390_TODPR,
};

/// The ONE_REG registers saved with a vCPU, by the kernel's names: TOD
/// programmable register, TOD epoch difference, CPU timer, clock
/// comparator, pfault token/compare/select, program parameter, guest
/// breaking-event address.
pub const SAVED_ONE_REGS: [(&str, u64); 9] = [
    ("KVM_REG_S390_TODPR", KVM_REG_S390_TODPR),
    ("KVM_REG_S390_EPOCHDIFF", KVM_REG_S390_EPOCHDIFF),
    ("KVM_REG_S390_CPU_TIMER", KVM_REG_S390_CPU_TIMER),
    ("KVM_REG_S390_CLOCK_COMP", KVM_REG_S390_CLOCK_COMP),
    ("KVM_REG_S390_PFTOKEN", KVM_REG_S390_PFTOKEN),
    ("KVM_REG_S390_PFCOMPARE", KVM_REG_S390_PFCOMPARE),
    ("KVM_REG_S390_PFSELECT", KVM_REG_S390_PFSELECT),
    ("KVM_REG_S390_PP", KVM_REG_S390_PP),
    ("KVM_REG_S390_GBEA", KVM_REG_S390_GBEA),
];

/// Everything `Arch::save_vcpu_state` reads from an s390x vCPU.
///
/// ```
/// let s = kvmkit_arch_s390x::S390VcpuState::default();
/// assert_eq!(s.psw_mask, 0);
/// assert!(s.one_regs.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S390VcpuState {
    /// General registers.
    pub regs: kvm_regs,
    /// Access and control registers.
    pub sregs: kvm_sregs,
    /// Floating-point registers and control.
    pub fpu: kvm_fpu,
    /// The PSW mask (from `kvm_run.psw_mask`).
    pub psw_mask: u64,
    /// The PSW address (from `kvm_run.psw_addr`).
    pub psw_addr: u64,
    /// The prefix register (from the sync-regs area).
    pub prefix: u64,
    /// The [`SAVED_ONE_REGS`] as (id, value bytes as the kernel gave them).
    pub one_regs: Vec<(u64, Vec<u8>)>,
}
