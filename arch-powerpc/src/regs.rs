//! PowerPC ONE_REG ids: the indexed families and the registers a vCPU
//! snapshot carries.

use crate::uapi::*;

/// `KVM_REG_PPC_FPR(n)`: floating-point register `n` (0–31), 64 bits.
///
/// ```
/// use kvmkit_arch_powerpc::{fpr, uapi::KVM_REG_PPC_FPR31};
/// assert_eq!(fpr(31), Some(KVM_REG_PPC_FPR31));
/// assert_eq!(fpr(32), None);
/// ```
pub const fn fpr(n: u32) -> Option<u64> {
    indexed(KVM_REG_PPC_FPR0, n)
}

/// `KVM_REG_PPC_VR(n)`: VMX/AltiVec vector register `n` (0–31), 128 bits.
///
/// ```
/// use kvmkit_arch_powerpc::{vr, uapi::KVM_REG_PPC_VR0};
/// assert_eq!(vr(0), Some(KVM_REG_PPC_VR0));
/// ```
pub const fn vr(n: u32) -> Option<u64> {
    indexed(KVM_REG_PPC_VR0, n)
}

/// `KVM_REG_PPC_VSR(n)`: VSX register `n` (0–31), 128 bits; its first
/// doubleword is FPR `n`.
///
/// ```
/// use kvmkit_arch_powerpc::{vsr, uapi::KVM_REG_PPC_VSR0};
/// assert_eq!(vsr(3), Some(KVM_REG_PPC_VSR0 + 3));
/// ```
pub const fn vsr(n: u32) -> Option<u64> {
    indexed(KVM_REG_PPC_VSR0, n)
}

const fn indexed(base: u64, n: u32) -> Option<u64> {
    if n < 32 {
        Some(base + n as u64)
    } else {
        None
    }
}

/// The size in bytes of ONE_REG register `id` (`KVM_REG_SIZE(id)`).
///
/// ```
/// use kvmkit_arch_powerpc::{reg_size, uapi::{KVM_REG_PPC_DSISR, KVM_REG_PPC_TB_OFFSET, KVM_REG_PPC_VSR0}};
/// assert_eq!(reg_size(KVM_REG_PPC_DSISR), 4);
/// assert_eq!(reg_size(KVM_REG_PPC_TB_OFFSET), 8);
/// assert_eq!(reg_size(KVM_REG_PPC_VSR0), 16);
/// ```
pub fn reg_size(id: u64) -> usize {
    crate::sys::reg_size(id)
}

/// The ONE_REG registers [`crate::Ppc64`]'s vCPU snapshot carries beyond
/// `kvm_regs`, `kvm_sregs` and the FPRs, in restore order. Registers the
/// running kernel does not have (KVM-PR lacks most POWER8/9 SPRs, non-VSX
/// CPUs the VSRs, a vCPU without the in-kernel XICS the ICP state) are
/// skipped when saving.
///
/// The VPA registrations (`KVM_REG_PPC_VPA_*`) are not included: restoring
/// them depends on order and on guest memory being in place, which the VMM
/// must sequence itself.
pub fn snapshot_one_regs() -> Vec<u64> {
    let mut v = vec![
        KVM_REG_PPC_FPSCR,
        KVM_REG_PPC_VSCR,
        KVM_REG_PPC_VRSAVE,
        KVM_REG_PPC_DAR,
        KVM_REG_PPC_DSISR,
        KVM_REG_PPC_AMR,
        KVM_REG_PPC_UAMOR,
        KVM_REG_PPC_IAMR,
        KVM_REG_PPC_DSCR,
        KVM_REG_PPC_PPR,
        KVM_REG_PPC_TAR,
        KVM_REG_PPC_FSCR,
        KVM_REG_PPC_PSPB,
        KVM_REG_PPC_EBBHR,
        KVM_REG_PPC_EBBRR,
        KVM_REG_PPC_BESCR,
        KVM_REG_PPC_CIABR,
        KVM_REG_PPC_DAWR,
        KVM_REG_PPC_DAWRX,
        KVM_REG_PPC_PURR,
        KVM_REG_PPC_SPURR,
        KVM_REG_PPC_MMCR0,
        KVM_REG_PPC_MMCR1,
        KVM_REG_PPC_MMCRA,
        KVM_REG_PPC_SIAR,
        KVM_REG_PPC_SDAR,
        KVM_REG_PPC_PID,
        KVM_REG_PPC_TIDR,
        KVM_REG_PPC_PSSCR,
        KVM_REG_PPC_SPRG9,
        KVM_REG_PPC_HIOR,
        KVM_REG_PPC_LPCR_64,
        KVM_REG_PPC_ARCH_COMPAT,
        KVM_REG_PPC_TB_OFFSET,
        KVM_REG_PPC_VTB,
        KVM_REG_PPC_DEC_EXPIRY,
        KVM_REG_PPC_ONLINE,
        // The vCPU's XICS presenter (CPPR, XISR, MFRR, pending priority),
        // when it is connected to the in-kernel XICS; after the VM state
        // put the sources back.
        KVM_REG_PPC_ICP_STATE,
    ];
    v.extend((KVM_REG_PPC_PMC1..=KVM_REG_PPC_PMC6).collect::<Vec<_>>());
    v.extend((0..32).filter_map(vr));
    v.extend((0..32).filter_map(vsr));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_snapshot_list() {
        assert_eq!(vsr(31), Some(KVM_REG_PPC_VSR31));
        assert_eq!(vr(31), Some(KVM_REG_PPC_VR31));
        assert_eq!(vr(32), None);
        assert_eq!(vsr(40), None);
        let s = snapshot_one_regs();
        assert_eq!(s.len(), 38 + 6 + 64);
        let unique: std::collections::HashSet<_> = s.iter().collect();
        assert_eq!(unique.len(), s.len());
        assert!(s.iter().all(|&id| id & KVM_REG_PPC == KVM_REG_PPC));
        assert!(s.iter().all(|&id| matches!(reg_size(id), 4 | 8 | 16)));
    }
}
