//! Model-specific registers: the boot set and ONE_REG ids.

use kvm_bindings::kvm_msr_entry;

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MISC_ENABLE_FAST_STRING: u64 = 1;
const MTRR_ENABLE: u64 = 1 << 11;
const MTRR_MEM_TYPE_WB: u64 = 6;

/// MSRs a vCPU gets at boot, as firmware would leave them: syscall MSRs
/// cleared, TSC 0, fast strings on, MTRRs enabled with write-back default.
pub fn boot_msr_entries() -> Vec<kvm_msr_entry> {
    let e = |index, data| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        e(MSR_IA32_SYSENTER_CS, 0),
        e(MSR_IA32_SYSENTER_ESP, 0),
        e(MSR_IA32_SYSENTER_EIP, 0),
        e(MSR_STAR, 0),
        e(MSR_CSTAR, 0),
        e(MSR_KERNEL_GS_BASE, 0),
        e(MSR_SYSCALL_MASK, 0),
        e(MSR_LSTAR, 0),
        e(MSR_IA32_TSC, 0),
        e(MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        e(MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_MEM_TYPE_WB),
    ]
}

/// `MSR_IA32_TSC_DEADLINE`: written after the LAPIC on restore.
pub(crate) const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
const MSR_IA32_APICBASE: u32 = 0x1b;
const MSR_EFER: u32 = 0xc000_0080;
const MSR_FS_BASE: u32 = 0xc000_0100;
const MSR_GS_BASE: u32 = 0xc000_0101;

/// MSRs KVM emulates for every vCPU without listing them in
/// `KVM_GET_MSR_INDEX_LIST`: the MTRRs (default type, the 8 variable-range
/// pairs KVM has, the 11 fixed-range registers).
fn unlisted_architectural_msrs() -> impl Iterator<Item = u32> {
    std::iter::once(MSR_MTRR_DEF_TYPE)
        .chain(0x200..=0x20f)
        .chain([0x250, 0x258, 0x259])
        .chain(0x268..=0x26f)
}

/// The MSRs a saved vCPU state may hold, in the order they are written
/// back: the TSC first (what follows may be relative to it), then
/// `KVM_GET_MSR_INDEX_LIST` in the kernel's order, the feature MSRs of
/// `KVM_GET_MSR_FEATURE_INDEX_LIST` it lacks, and the MTRRs. MSRs that live
/// in `kvm_sregs` (EFER, the APIC base, FS/GS base) are left to `KVM_SET_SREGS`.
pub(crate) fn msr_candidates(index_list: &[u32], feature_list: &[u32]) -> Vec<u32> {
    let mut out = vec![MSR_IA32_TSC];
    let skip = [MSR_IA32_APICBASE, MSR_EFER, MSR_FS_BASE, MSR_GS_BASE];
    for i in index_list
        .iter()
        .chain(feature_list)
        .copied()
        .chain(unlisted_architectural_msrs())
    {
        if !out.contains(&i) && !skip.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// Splits saved MSRs into those written before the LAPIC (in saved order,
/// the TSC first) and those written after it: `MSR_IA32_TSC_DEADLINE`,
/// which KVM drops unless the LAPIC timer is already in TSC-deadline mode
/// and which is relative to the TSC.
pub(crate) fn restore_order(msrs: &[(u32, u64)]) -> (Vec<kvm_msr_entry>, Vec<kvm_msr_entry>) {
    let e = |&(index, data): &(u32, u64)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    let tsc = msrs.iter().filter(|(i, _)| *i == MSR_IA32_TSC);
    let rest = msrs
        .iter()
        .filter(|(i, _)| *i != MSR_IA32_TSC && *i != MSR_IA32_TSC_DEADLINE);
    let early = tsc.chain(rest).map(e).collect();
    let late = msrs
        .iter()
        .filter(|(i, _)| *i == MSR_IA32_TSC_DEADLINE)
        .map(e)
        .collect();
    (early, late)
}

const KVM_REG_X86: u64 = 0x2000_0000_0000_0000;
const KVM_REG_SIZE_U64: u64 = 0x0030_0000_0000_0000;
const KVM_X86_REG_TYPE_MSR: u64 = 2;

/// The `KVM_GET_ONE_REG` id of an MSR (`KVM_X86_REG_MSR(index)`, Linux 6.18+).
///
/// ```
/// assert_eq!(kvmkit_arch_x86_64::msr_one_reg_id(0x10), 0x2030_0002_0000_0010);
/// ```
pub const fn msr_one_reg_id(index: u32) -> u64 {
    KVM_REG_X86 | KVM_REG_SIZE_U64 | (KVM_X86_REG_TYPE_MSR << 32) | index as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_set() {
        let m = boot_msr_entries();
        assert_eq!(m.len(), 11);
        assert!(m
            .iter()
            .any(|e| e.index == MSR_MTRR_DEF_TYPE && e.data == 0x806));
    }

    #[test]
    fn candidates_put_the_tsc_first_and_leave_sregs_msrs_out() {
        let list = [0x174, 0x10, 0x1b, 0x6e0, 0xc000_0080, 0x4b56_4d01];
        let features = [0x10a, 0x174];
        let c = msr_candidates(&list, &features);
        assert_eq!(&c[..5], &[0x10, 0x174, 0x6e0, 0x4b56_4d01, 0x10a]);
        assert!(!c.contains(&0x1b) && !c.contains(&0xc000_0080));
        // The MTRRs KVM does not list: default type, 8 variable pairs, 11 fixed.
        assert_eq!(c.len(), 5 + 1 + 16 + 11);
        assert!(c.contains(&0x2ff) && c.contains(&0x20f) && c.contains(&0x26f));
        let mut dedup = c.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), c.len(), "no MSR twice");
    }

    #[test]
    fn restore_writes_the_tsc_first_and_the_deadline_last() {
        let saved = [(0x174, 1), (0x6e0, 99), (0x10, 5), (0x277, 7)];
        let (early, late) = restore_order(&saved);
        let idx: Vec<u32> = early.iter().map(|e| e.index).collect();
        assert_eq!(idx, [0x10, 0x174, 0x277]);
        assert_eq!(early[0].data, 5);
        assert_eq!(late.len(), 1);
        assert_eq!((late[0].index, late[0].data), (0x6e0, 99));
        let (early, late) = restore_order(&[]);
        assert!(early.is_empty() && late.is_empty());
    }
}
