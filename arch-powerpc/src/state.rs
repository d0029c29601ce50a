//! A PowerPC vCPU's saved state.

use crate::uapi::{kvm_fpu, kvm_regs, kvm_sregs};

/// Everything [`crate::Ppc64`] saves of a vCPU: `KVM_GET_REGS`,
/// `KVM_GET_SREGS`, the FPRs and the ONE_REG registers of
/// [`crate::snapshot_one_regs`] the kernel has, as `(id, bytes)`.
///
/// ```
/// let s = kvmkit_arch_powerpc::PpcVcpuState::default();
/// assert!(s.one_regs.is_empty() && s.regs.pc == 0);
/// ```
#[derive(Clone, Debug, Default)]
pub struct PpcVcpuState {
    /// General registers, NIP, MSR.
    pub regs: kvm_regs,
    /// PVR and the Book3S/BookE special registers.
    pub sregs: kvm_sregs,
    /// Floating-point registers (through ONE_REG).
    pub fpu: kvm_fpu,
    /// Other registers by ONE_REG id, in restore order, each its register's
    /// size.
    pub one_regs: Vec<(u64, Vec<u8>)>,
}
