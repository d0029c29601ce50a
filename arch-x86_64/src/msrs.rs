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

/// The MSRs saved with a vCPU's state (a superset of the boot set).
pub(crate) fn saved_msr_indices() -> Vec<u32> {
    let mut v: Vec<u32> = boot_msr_entries().iter().map(|e| e.index).collect();
    v.extend([0xc000_0100, 0xc000_0101, 0x1b, 0x3b, 0x6e0]); // FS/GS base, APIC base, TSC adjust, TSC deadline
    v
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
        assert!(saved_msr_indices().contains(&0x1b));
    }
}
