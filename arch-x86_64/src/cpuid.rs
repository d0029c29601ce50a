//! Building a vCPU's CPUID from what KVM supports.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};
use kvmkit_core::VcpuId;

/// How to turn `KVM_GET_SUPPORTED_CPUID` into one vCPU's CPUID table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuidPolicy {
    /// The number of vCPUs of the VM (for the topology leaves).
    pub nr_vcpus: u32,
    /// Set the "running under a hypervisor" bit (leaf 1 ECX bit 31).
    pub hypervisor_bit: bool,
}

impl Default for CpuidPolicy {
    fn default() -> Self {
        CpuidPolicy {
            nr_vcpus: 1,
            hypervisor_bit: true,
        }
    }
}

const LEAF_FEATURES: u32 = 1;
const LEAF_CACHE_PARAMS: u32 = 4;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_EXT_TOPOLOGY_V2: u32 = 0x1f;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

/// Patches `entries` (from `KVM_GET_SUPPORTED_CPUID`) for vCPU `id`: its
/// initial APIC id in leaves 1, 0xB and 0x1F, a flat topology of
/// `policy.nr_vcpus` cores in one package, and the hypervisor bit.
///
/// ```
/// use kvmkit_arch_x86_64::{filter_cpuid, CpuidPolicy};
/// use kvmkit_arch_x86_64::kvm_bindings::kvm_cpuid_entry2;
/// use kvmkit_core::VcpuId;
/// let mut e = vec![kvm_cpuid_entry2 { function: 1, ..Default::default() }];
/// filter_cpuid(&mut e, VcpuId(3), &CpuidPolicy { nr_vcpus: 4, hypervisor_bit: true });
/// assert_eq!(e[0].ebx >> 24, 3);
/// assert_ne!(e[0].ecx & (1 << 31), 0);
/// ```
pub fn filter_cpuid(entries: &mut [kvm_cpuid_entry2], id: VcpuId, policy: &CpuidPolicy) {
    let n = policy.nr_vcpus.max(1);
    // Bits needed to number n logical CPUs (the x2APIC id shift of the core level).
    let shift = 32 - (n - 1).leading_zeros();
    for e in entries.iter_mut() {
        match e.function {
            LEAF_FEATURES => {
                e.ebx = (e.ebx & 0x0000_ffff) | ((n.min(255) & 0xff) << 16) | ((id.0 & 0xff) << 24);
                if n > 1 {
                    e.edx |= EDX_HTT;
                }
                if policy.hypervisor_bit {
                    e.ecx |= ECX_HYPERVISOR;
                } else {
                    e.ecx &= !ECX_HYPERVISOR;
                }
            }
            LEAF_CACHE_PARAMS => {
                // EAX[31:26]: cores per package - 1.
                e.eax = (e.eax & 0x03ff_ffff) | (((n - 1).min(63)) << 26);
            }
            LEAF_EXT_TOPOLOGY | LEAF_EXT_TOPOLOGY_V2 => {
                e.edx = id.0;
                match e.index {
                    // SMT level: one thread per core.
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 1 << 8 | e.index;
                    }
                    // Core level: n cores.
                    1 => {
                        e.eax = shift;
                        e.ebx = n;
                        e.ecx = 2 << 8 | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Builds the CPUID for one vCPU from the supported list.
pub(crate) fn vcpu_cpuid(
    supported: &CpuId,
    id: VcpuId,
    policy: &CpuidPolicy,
) -> crate::Result<CpuId> {
    let mut entries = supported.as_slice().to_vec();
    filter_cpuid(&mut entries, id, policy);
    CpuId::from_entries(&entries).map_err(|e| crate::Error::FamList {
        what: "CPUID",
        detail: format!("{e:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    #[test]
    fn topology_and_apic_ids() {
        let mut e = vec![
            leaf(1, 0),
            leaf(4, 0),
            leaf(0xb, 0),
            leaf(0xb, 1),
            leaf(0xb, 2),
            leaf(0x1f, 1),
        ];
        e[0].ebx = 0x0000_0800;
        e[0].ecx = 1 << 31;
        let policy = CpuidPolicy {
            nr_vcpus: 4,
            hypervisor_bit: false,
        };
        filter_cpuid(&mut e, VcpuId(2), &policy);
        assert_eq!(e[0].ebx, 0x0204_0800);
        assert_eq!(e[0].ecx & (1 << 31), 0);
        assert_ne!(e[0].edx & EDX_HTT, 0);
        assert_eq!(e[1].eax >> 26, 3);
        assert_eq!((e[2].ebx, e[2].ecx, e[2].edx), (1, 0x100, 2));
        assert_eq!((e[3].eax, e[3].ebx, e[3].ecx, e[3].edx), (2, 4, 0x201, 2));
        assert_eq!((e[4].eax, e[4].ebx, e[4].ecx), (0, 0, 2));
        assert_eq!(e[5].ebx, 4);
    }

    #[test]
    fn single_vcpu() {
        let mut e = vec![leaf(1, 0), leaf(0xb, 1)];
        filter_cpuid(&mut e, VcpuId(0), &CpuidPolicy::default());
        assert_eq!(e[0].edx & EDX_HTT, 0);
        assert_eq!(e[1].eax, 0);
        assert_eq!(e[1].ebx, 1);
    }
}
