//! What this host's KVM offers for saving and restoring state, read once
//! per open `/dev/kvm`.

use crate::msrs::msr_candidates;
use crate::{Error, Result};
use kvm_bindings::{kvm_cpuid_entry2, CpuId};
use kvm_ioctls::Kvm;
use kvmkit_core::Capability;

/// `KVM_CAP_PIT_STATE2`: `KVM_GET_PIT2` / `KVM_SET_PIT2`.
pub(crate) const CAP_PIT_STATE2: Capability = Capability::new(35, "KVM_CAP_PIT_STATE2");
/// `KVM_CAP_GET_MSR_FEATURES`: `KVM_GET_MSR_FEATURE_INDEX_LIST`.
pub(crate) const CAP_GET_MSR_FEATURES: Capability =
    Capability::new(153, "KVM_CAP_GET_MSR_FEATURES");

/// The capabilities that decide which pieces of state can be saved and
/// restored; an ABI profile lists them with their values.
pub(crate) const STATE_CAPS: [Capability; 15] = [
    Capability::MP_STATE,
    Capability::VCPU_EVENTS,
    Capability::DEBUGREGS,
    Capability::XSAVE,
    Capability::XSAVE2,
    Capability::XCRS,
    Capability::EXT_CPUID,
    Capability::GET_TSC_KHZ,
    Capability::TSC_CONTROL,
    Capability::TSC_DEADLINE_TIMER,
    Capability::IRQCHIP,
    Capability::PIT2,
    CAP_PIT_STATE2,
    Capability::ADJUST_CLOCK,
    CAP_GET_MSR_FEATURES,
];

/// The state-related facts of one `/dev/kvm`.
#[derive(Debug)]
pub(crate) struct HostFacts {
    /// `KVM_GET_API_VERSION`.
    pub(crate) api_version: i32,
    /// [`STATE_CAPS`] and their `KVM_CHECK_EXTENSION` values on `/dev/kvm`.
    pub(crate) caps: Vec<(Capability, i32)>,
    /// The MSRs a vCPU state may hold ([`msr_candidates`]).
    pub(crate) msr_candidates: Vec<u32>,
    /// `KVM_GET_SUPPORTED_CPUID`.
    pub(crate) supported_cpuid: Vec<kvm_cpuid_entry2>,
}

impl HostFacts {
    /// Reads the facts from `kvm`.
    pub(crate) fn read(kvm: &Kvm, supported_cpuid: &CpuId) -> Result<Self> {
        let caps: Vec<(Capability, i32)> = STATE_CAPS
            .iter()
            .map(|&c| (c, kvm.check_extension_raw(libc::c_ulong::from(c.number()))))
            .collect();
        let index_list = kvm
            .get_msr_index_list()
            .map_err(Error::ioctl("KVM_GET_MSR_INDEX_LIST"))?;
        let has_features = caps
            .iter()
            .any(|&(c, v)| c == CAP_GET_MSR_FEATURES && v > 0);
        let features = if has_features {
            kvm.get_msr_feature_index_list()
                .map_err(Error::ioctl("KVM_GET_MSR_FEATURE_INDEX_LIST"))?
                .as_slice()
                .to_vec()
        } else {
            Vec::new()
        };
        Ok(HostFacts {
            api_version: kvm.get_api_version(),
            caps,
            msr_candidates: msr_candidates(index_list.as_slice(), &features),
            supported_cpuid: supported_cpuid.as_slice().to_vec(),
        })
    }

    /// The `KVM_CHECK_EXTENSION` value of `cap` (one of [`STATE_CAPS`]).
    pub(crate) fn cap(&self, cap: Capability) -> i32 {
        self.caps
            .iter()
            .find(|(c, _)| *c == cap)
            .map_or(0, |&(_, v)| v)
    }

    /// True when the kernel offers `cap`.
    pub(crate) fn has(&self, cap: Capability) -> bool {
        self.cap(cap) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_lookup() {
        let f = HostFacts {
            api_version: 12,
            caps: vec![(Capability::XSAVE2, 4096), (Capability::XCRS, 0)],
            msr_candidates: vec![0x10],
            supported_cpuid: vec![],
        };
        assert_eq!(f.cap(Capability::XSAVE2), 4096);
        assert!(f.has(Capability::XSAVE2));
        assert!(!f.has(Capability::XCRS));
        assert!(!f.has(Capability::PIT2), "absent from the list: 0");
        let numbers: Vec<u32> = STATE_CAPS.iter().map(|c| c.number()).collect();
        assert!(numbers.contains(&35) && numbers.contains(&153));
    }
}
