//! The KVM ABI profile of a saved s390x state, and of a host: what a
//! restore checks before it writes anything.

use crate::state::{msb0_bit, msb0_numbers};
use crate::uapi::KVM_API_VERSION;
use crate::{CpuModel, S390VcpuState, S390VmState, S390x};
use kvmkit_core::{Capability, CapabilityValue, HeaderMismatch, ProfileHeader};
use serde::{Deserialize, Serialize};

/// The format version of [`S390AbiProfile`]; a check refuses any other.
///
/// ```
/// use kvmkit_arch_s390x::{S390AbiProfile, S390VmState, PROFILE_VERSION};
/// assert_eq!(S390AbiProfile::of_state(&S390VmState::default(), &[]).header.version, PROFILE_VERSION);
/// ```
pub const PROFILE_VERSION: u32 = 1;

/// The capabilities that decide which pieces of an s390x state can be
/// restored; a host profile lists their values.
pub(crate) const STATE_CAPS: [Capability; 5] = [
    Capability::ONE_REG,
    Capability::SYNC_REGS,
    Capability::S390_PSW,
    Capability::DEVICE_CTRL,
    Capability::S390_IRQCHIP,
];

/// Why a saved s390x state cannot be restored on a host: each names the
/// item and the values on both sides.
///
/// ```
/// use kvmkit_arch_s390x::ProfileMismatch;
/// let m = ProfileMismatch::Facilities { missing: vec![139, 146] };
/// assert_eq!(m.to_string(), "facilities 139, 146: the guest saw them, a VM on this host does not get them");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileMismatch {
    /// The profile's header does not fit: another format version,
    /// architecture or KVM API version, or a capability the state relies on
    /// is absent or too small.
    #[error(transparent)]
    Header(#[from] HeaderMismatch),
    /// The TOD clock has an epoch index and this kernel cannot set one.
    #[error("TOD clock: the state has epoch index {epoch_idx}, this host's KVM has no KVM_S390_VM_TOD_EXT to set it")]
    TodEpoch {
        /// The saved epoch index.
        epoch_idx: u8,
    },
    /// The state has a CPU model and this host's KVM reports none.
    #[error(
        "CPU model: the state has one, this host's KVM reports none (no KVM_S390_VM_CPU_MODEL)"
    )]
    NoCpuModel,
    /// Facilities the guest saw that a VM on this host does not get.
    #[error("facilities {}: the guest saw them, a VM on this host does not get them", list(.missing))]
    Facilities {
        /// The missing facility numbers.
        missing: Vec<u32>,
    },
    /// CPU features the guest had that a VM on this host does not get.
    #[error("CPU features {}: the guest had them, a VM on this host does not get them", list(.missing))]
    Features {
        /// The missing feature numbers (`KVM_S390_VM_CPU_FEAT_*`).
        missing: Vec<u32>,
    },
    /// The guest ran at a newer instruction blocking level than this host's.
    #[error(
        "instruction blocking control: the guest ran at {saved:#x}, this host goes up to {host:#x}"
    )]
    Ibc {
        /// The saved IBC.
        saved: u16,
        /// This host's.
        host: u16,
    },
}

fn list(n: &[u32]) -> String {
    n.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

/// What a saved CPU model needs from the model a VM on the host gets:
/// its facilities and features, and an instruction blocking level not
/// above the host's.
pub(crate) fn model_mismatches(saved: &CpuModel, host: &CpuModel) -> Vec<ProfileMismatch> {
    let mut out = Vec::new();
    let missing: Vec<u32> = msb0_numbers(&saved.facilities)
        .into_iter()
        .filter(|&n| !msb0_bit(&host.facilities, n))
        .collect();
    if !missing.is_empty() {
        out.push(ProfileMismatch::Facilities { missing });
    }
    if let Some(saved_features) = &saved.features {
        let host_features = host.features.as_deref().unwrap_or(&[]);
        let missing: Vec<u32> = msb0_numbers(saved_features)
            .into_iter()
            .filter(|&n| !msb0_bit(host_features, n))
            .collect();
        if !missing.is_empty() {
            out.push(ProfileMismatch::Features { missing });
        }
    }
    if saved.ibc != 0 && host.ibc != 0 && saved.ibc > host.ibc {
        out.push(ProfileMismatch::Ibc {
            saved: saved.ibc,
            host: host.ibc,
        });
    }
    out
}

/// What a saved s390x state needs from KVM, or what a host's KVM offers:
/// the architecture, the KVM API version, the capabilities with their
/// values, whether the TOD clock's epoch index can be set, and the CPU
/// model (facilities, features, instruction blocking).
///
/// A state's profile comes from [`S390AbiProfile::of_state`]; a host's
/// from `SnapshotArch::host_profile` (`kvmkit_core::Kvm::abi_profile`), read
/// from a scratch VM: its CPU model is the one KVM gives a new VM, which is
/// what a restored guest runs with (this crate does not set CPU models).
///
/// ```
/// use kvmkit_arch_s390x::{CpuModel, ProfileMismatch, S390AbiProfile, S390VmState};
/// let mut model = CpuModel::default();
/// model.facilities[2] = 1 << (63 - 11); // facility 139
/// let vm = S390VmState { cpu_model: Some(model), ..S390VmState::default() };
/// let saved = S390AbiProfile::of_state(&vm, &[]);
/// let mut host = saved.clone();
/// host.cpu_model = Some(CpuModel::default());
/// assert_eq!(saved.check(&host), Err(ProfileMismatch::Facilities { missing: vec![139] }));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct S390AbiProfile {
    /// The format version ([`PROFILE_VERSION`] when made by this build),
    /// `s390x`, `KVM_GET_API_VERSION` (12) and the capabilities: in a
    /// state's profile the least values it needs, in a host's the values on
    /// the scratch VM's fd.
    #[serde(flatten)]
    pub header: ProfileHeader,
    /// A state's: its TOD clock has an epoch index, which needs
    /// `KVM_S390_VM_TOD_EXT`; a host's: KVM has that attribute.
    pub tod_ext: bool,
    /// The guest's CPU model, or the one a new VM gets on the host.
    pub cpu_model: Option<CpuModel>,
}

impl S390AbiProfile {
    /// What `vm` and `vcpus` need from a host: ONE_REG, sync regs and the
    /// PSW in `kvm_run` with any vCPU, device control with floating
    /// interruptions, the TOD epoch index, the CPU model.
    pub fn of_state(vm: &S390VmState, vcpus: &[S390VcpuState]) -> Self {
        let need = |c: &Capability| match *c {
            Capability::ONE_REG => vcpus.iter().any(|v| !v.one_regs.is_empty()),
            Capability::SYNC_REGS | Capability::S390_PSW => !vcpus.is_empty(),
            Capability::DEVICE_CTRL => vm.floating_irqs.is_some(),
            _ => false,
        };
        let capabilities = CapabilityValue::needed(&STATE_CAPS, need);
        S390AbiProfile {
            header: ProfileHeader::new::<S390x>(PROFILE_VERSION, api_version(), capabilities),
            tod_ext: vm.tod.epoch_idx != 0,
            cpu_model: vm.cpu_model.clone(),
        }
    }

    /// The value of capability `number`, 0 when absent.
    pub fn capability(&self, number: u32) -> i32 {
        self.header.capability(number)
    }

    /// Everything `self` (a saved state's profile) needs that `host` lacks.
    ///
    /// ```
    /// use kvmkit_arch_s390x::{S390AbiProfile, S390VcpuState, S390VmState};
    /// let saved = S390AbiProfile::of_state(&S390VmState::default(), &[S390VcpuState::default()]);
    /// let mut host = saved.clone();
    /// host.header.capabilities.clear();
    /// assert_eq!(saved.mismatches(&host).len(), 2); // KVM_CAP_SYNC_REGS, KVM_CAP_S390_PSW
    /// ```
    pub fn mismatches(&self, host: &Self) -> Vec<ProfileMismatch> {
        let mut out: Vec<ProfileMismatch> = self
            .header
            .mismatches(&host.header, PROFILE_VERSION)
            .into_iter()
            .map(Into::into)
            .collect();
        if self.tod_ext && !host.tod_ext {
            // The profile only says that the index is not 0.
            out.push(ProfileMismatch::TodEpoch { epoch_idx: 1 });
        }
        match (&self.cpu_model, &host.cpu_model) {
            (Some(s), Some(h)) => out.extend(model_mismatches(s, h)),
            (Some(_), None) => out.push(ProfileMismatch::NoCpuModel),
            (None, _) => {}
        }
        out
    }

    /// Refuses a restore of the state `self` describes on `host`: the first
    /// of [`S390AbiProfile::mismatches`].
    pub fn check(&self, host: &Self) -> Result<(), ProfileMismatch> {
        self.mismatches(host).into_iter().next().map_or(Ok(()), Err)
    }
}

/// `KVM_API_VERSION` as `KVM_GET_API_VERSION` returns it.
fn api_version() -> i32 {
    i32::try_from(KVM_API_VERSION).expect("12")
}

/// The host profile from what the scratch VM answered.
pub(crate) fn host_profile(
    capabilities: Vec<CapabilityValue>,
    tod_ext: bool,
    cpu_model: Option<CpuModel>,
) -> S390AbiProfile {
    S390AbiProfile {
        header: ProfileHeader::new::<S390x>(PROFILE_VERSION, api_version(), capabilities),
        tod_ext,
        cpu_model,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FloatingIrq, TodClock};

    /// A z15-like model: facilities 0-2, 139, 146; feature 1 (SIEF2); IBC.
    fn model() -> CpuModel {
        let mut m = CpuModel {
            cpuid: 0xff00_0000_8561_8000,
            ibc: 0x0f10,
            ..CpuModel::default()
        };
        m.facilities[0] = 0b111 << 61;
        m.facilities[2] = 1 << (63 - 11) | 1 << (63 - 18);
        m.features = Some(vec![1 << 62; 16]);
        m
    }

    fn saved() -> S390AbiProfile {
        let vm = S390VmState {
            tod: TodClock {
                epoch_idx: 1,
                tod: 7,
            },
            cpu_model: Some(model()),
            floating_irqs: Some(vec![FloatingIrq {
                kind: 0xffff_2401,
                payload: vec![0; 64],
            }]),
            ..S390VmState::default()
        };
        let mut v = S390VcpuState::default();
        v.one_regs
            .push((crate::uapi::KVM_REG_S390_CPU_TIMER, vec![0; 8]));
        S390AbiProfile::of_state(&vm, &[v])
    }

    fn host() -> S390AbiProfile {
        host_profile(
            STATE_CAPS
                .iter()
                .map(|&c| CapabilityValue::new(c, 1))
                .collect(),
            true,
            Some(model()),
        )
    }

    #[test]
    fn a_state_profile_lists_what_it_needs_and_fits_its_host() {
        let p = saved();
        let caps = &p.header.capabilities;
        let names: Vec<&str> = caps.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "KVM_CAP_ONE_REG",
                "KVM_CAP_SYNC_REGS",
                "KVM_CAP_S390_PSW",
                "KVM_CAP_DEVICE_CTRL"
            ]
        );
        assert!(p.tod_ext);
        assert!(p.check(&host()).is_ok());
        let back: S390AbiProfile =
            serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        // The header's fields stand at the top level, as before it was one.
        let json = serde_json::to_value(&p).unwrap();
        assert!(json.get("header").is_none() && json["arch"] == "s390x");
    }

    #[test]
    fn an_older_machine_is_refused_with_what_it_lacks() {
        let mut h = host();
        let mut older = model();
        older.facilities[2] = 0; // no 139, no 146
        older.features = Some(vec![0; 16]);
        older.ibc = 0x0e10;
        h.cpu_model = Some(older);
        h.tod_ext = false;
        let all = saved().mismatches(&h);
        assert_eq!(
            all,
            [
                ProfileMismatch::TodEpoch { epoch_idx: 1 },
                ProfileMismatch::Facilities {
                    missing: vec![139, 146]
                },
                ProfileMismatch::Features {
                    missing: (0..16).map(|w| w * 64 + 1).collect()
                },
                ProfileMismatch::Ibc {
                    saved: 0x0f10,
                    host: 0x0e10
                },
            ]
        );
        assert_eq!(
            all[1].to_string(),
            "facilities 139, 146: the guest saw them, a VM on this host does not get them"
        );
        assert_eq!(
            all[2].to_string(),
            "CPU features 1, 65, 129, 193, 257, 321, 385, 449, 513, 577, 641, 705, 769, 833, 897, 961: the guest had them, a VM on this host does not get them"
        );
        assert_eq!(
            all[3].to_string(),
            "instruction blocking control: the guest ran at 0xf10, this host goes up to 0xe10"
        );
        // A host that reports no features lacks every saved one.
        let mut bare = model();
        bare.features = None;
        h.cpu_model = Some(bare);
        assert_eq!(
            model_mismatches(&model(), h.cpu_model.as_ref().unwrap()),
            [ProfileMismatch::Features {
                missing: (0..16).map(|w| w * 64 + 1).collect()
            }]
        );
        h.cpu_model = None;
        assert!(saved()
            .mismatches(&h)
            .contains(&ProfileMismatch::NoCpuModel));
    }

    #[test]
    fn versions_architectures_and_capabilities() {
        let mut s = saved();
        s.header.version = 2;
        s.header.arch = "x86_64".into();
        s.header.api_version = 11;
        let mut h = host();
        h.header
            .capabilities
            .retain(|c| c.number != Capability::DEVICE_CTRL.number());
        let all: Vec<String> = s.mismatches(&h).iter().map(ToString::to_string).collect();
        assert_eq!(
            all,
            [
                "profile format version 2, this build reads version 1",
                "architecture: the state is for x86_64, this host is s390x",
                "KVM API version: the state needs 11, this host has 12",
                "KVM_CAP_DEVICE_CTRL (89): the state needs 1, this host has 0"
            ]
        );
        assert_eq!(s.capability(70), 1);
    }
}
