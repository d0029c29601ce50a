//! The KVM ABI profile of a saved PowerPC state, and of a host: what a
//! restore checks before it writes anything.

use crate::uapi::{CAP_PPC_ALLOC_HTAB, CAP_PPC_HTAB_FD, KVM_API_VERSION, ONE_REG_IDS};
use crate::{Ppc64, PpcVcpuState, PpcVmState};
use kvmkit_core::{Capability, CapabilityValue, HeaderMismatch, ProfileHeader};
use serde::{Deserialize, Serialize};

/// The format version of [`PpcAbiProfile`]; a check refuses any other.
///
/// ```
/// use kvmkit_arch_powerpc::{PpcAbiProfile, PpcVmState, PROFILE_VERSION};
/// assert_eq!(PpcAbiProfile::of_state(&PpcVmState::default(), &[]).header.version, PROFILE_VERSION);
/// ```
pub const PROFILE_VERSION: u32 = 1;

/// The capabilities that decide which pieces of a PowerPC state can be
/// restored; a host profile lists their values.
pub(crate) const STATE_CAPS: [Capability; 6] = [
    Capability::ONE_REG,
    Capability::PPC_PAPR,
    Capability::DEVICE_CTRL,
    Capability::IRQ_XICS,
    CAP_PPC_HTAB_FD,
    CAP_PPC_ALLOC_HTAB,
];

/// The kernel's name of ONE_REG register `id`, or its number.
///
/// ```
/// use kvmkit_arch_powerpc::{one_reg_name, uapi::KVM_REG_PPC_TAR, vsr};
/// assert_eq!(one_reg_name(KVM_REG_PPC_TAR), "KVM_REG_PPC_TAR");
/// assert_eq!(one_reg_name(vsr(3).unwrap()), "KVM_REG_PPC_VSR(3)");
/// assert_eq!(one_reg_name(0x1030_0000_0000_0fff), "ONE_REG 0x1030000000000fff");
/// ```
pub fn one_reg_name(id: u64) -> String {
    if let Some((name, _)) = ONE_REG_IDS
        .iter()
        .find(|(name, v)| *v == id && name.starts_with("KVM_REG_PPC_"))
    {
        return (*name).to_string();
    }
    for (family, f) in [
        ("FPR", crate::fpr as fn(u32) -> Option<u64>),
        ("VR", crate::vr),
        ("VSR", crate::vsr),
    ] {
        if let Some(n) = (0..32).find(|&n| f(n) == Some(id)) {
            return format!("KVM_REG_PPC_{family}({n})");
        }
    }
    format!("ONE_REG {id:#x}")
}

/// Why a saved PowerPC state cannot be restored on a host: each names the
/// item and the values on both sides.
///
/// ```
/// use kvmkit_arch_powerpc::ProfileMismatch;
/// let m = ProfileMismatch::Pvr { saved: 0x004e_1202, host: 0x004e_1200 };
/// assert_eq!(
///     m.to_string(),
///     "PVR: the state holds 0x004e1202, this host's KVM-HV runs vCPUs only with its own 0x004e1200"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileMismatch {
    /// The profile's header does not fit: another format version,
    /// architecture or KVM API version, or a capability the state relies on
    /// is absent or too small.
    #[error(transparent)]
    Header(#[from] HeaderMismatch),
    /// The state's register bytes are in the other byte order.
    #[error(
        "byte order: the state was saved on a {saved}-endian host, this host is {host}-endian"
    )]
    ByteOrder {
        /// `big` or `little`.
        saved: &'static str,
        /// `big` or `little`.
        host: &'static str,
    },
    /// The state holds a register this host's vCPUs do not have (KVM-PR
    /// lacks most POWER8/9 registers KVM-HV saves).
    #[error("{name}: the state holds it, this host's vCPUs do not have it")]
    OneReg {
        /// The ONE_REG id.
        id: u64,
        /// Its kernel name ([`one_reg_name`]).
        name: String,
    },
    /// KVM-HV runs vCPUs with the host's PVR only, and it is another one.
    #[error("PVR: the state holds {saved:#010x}, this host's KVM-HV runs vCPUs only with its own {host:#010x}")]
    Pvr {
        /// The saved vCPUs' PVR.
        saved: u32,
        /// This host's.
        host: u32,
    },
}

fn endian(big: bool) -> &'static str {
    if big {
        "big"
    } else {
        "little"
    }
}

/// What a saved PowerPC state needs from KVM, or what a host's KVM offers:
/// the architecture, the KVM API version, the byte order, KVM-HV or KVM-PR,
/// the PVR, the capabilities with their values and the ONE_REG registers.
///
/// The profile of a state comes from [`PpcAbiProfile::of_state`]; a host's
/// from `SnapshotArch::host_profile` (`kvmkit_core::Kvm::abi_profile`),
/// which reads a scratch VM and vCPU made like the restore's.
///
/// ```
/// use kvmkit_arch_powerpc::{uapi::KVM_REG_PPC_TAR, PpcAbiProfile, PpcVcpuState, PpcVmState, ProfileMismatch};
/// let mut vcpu = PpcVcpuState::default();
/// vcpu.sregs.pvr = 0x004e_1202;
/// vcpu.one_regs.push((KVM_REG_PPC_TAR, vec![0; 8]));
/// let saved = PpcAbiProfile::of_state(&PpcVmState::default(), &[vcpu]);
/// let mut host = saved.clone();
/// host.kvm_hv = true;
/// host.one_regs.clear();
/// host.header.capabilities = vec![kvmkit_core::CapabilityValue::new(kvmkit_core::Capability::ONE_REG, 1)];
/// assert_eq!(
///     saved.check(&host),
///     Err(ProfileMismatch::OneReg { id: KVM_REG_PPC_TAR, name: "KVM_REG_PPC_TAR".into() })
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PpcAbiProfile {
    /// The format version ([`PROFILE_VERSION`] when made by this build),
    /// `powerpc`, `KVM_GET_API_VERSION` (12) and the capabilities: in a
    /// state's profile the least values it needs, in a host's the values of
    /// the scratch VM (`KVM_CHECK_EXTENSION` on its fd, so KVM-HV and KVM-PR
    /// answer for themselves).
    #[serde(flatten)]
    pub header: ProfileHeader,
    /// The byte order of the host (a state's: of the host that saved it).
    pub big_endian: bool,
    /// KVM-HV (true) or KVM-PR: a host's KVM-HV accepts only its own PVR.
    pub kvm_hv: bool,
    /// The PVR of the saved vCPUs, or the one a host's vCPUs get.
    pub pvr: Option<u32>,
    /// The ONE_REG ids the state holds, or a host's vCPU can read.
    pub one_regs: Vec<u64>,
}

impl PpcAbiProfile {
    /// What `vm` and `vcpus` need from a host: ONE_REG with any vCPU,
    /// device control and XICS with XICS sources, the HTAB capabilities
    /// with a hash page table; the first vCPU's PVR; every ONE_REG held.
    pub fn of_state(vm: &PpcVmState, vcpus: &[PpcVcpuState]) -> Self {
        let mut caps: Vec<Capability> = Vec::new();
        let mut need = |c: Capability, yes: bool| {
            if yes && !caps.contains(&c) {
                caps.push(c);
            }
        };
        need(Capability::ONE_REG, !vcpus.is_empty());
        need(Capability::DEVICE_CTRL, vm.xics_sources.is_some());
        need(Capability::IRQ_XICS, vm.xics_sources.is_some());
        need(CAP_PPC_HTAB_FD, vm.hpt.is_some());
        need(CAP_PPC_ALLOC_HTAB, vm.hpt.is_some());
        let capabilities = CapabilityValue::needed(&STATE_CAPS, |c| caps.contains(c));
        let mut one_regs: Vec<u64> = Vec::new();
        for (id, _) in vcpus.iter().flat_map(|v| &v.one_regs) {
            if !one_regs.contains(id) {
                one_regs.push(*id);
            }
        }
        PpcAbiProfile {
            header: ProfileHeader::new::<Ppc64>(PROFILE_VERSION, api_version(), capabilities),
            big_endian: vm.big_endian,
            kvm_hv: vm.kvm_hv,
            pvr: vcpus.first().map(|v| v.sregs.pvr),
            one_regs,
        }
    }

    /// The value of capability `number`, 0 when absent.
    pub fn capability(&self, number: u32) -> i32 {
        self.header.capability(number)
    }

    /// Everything `self` (a saved state's profile) needs that `host` lacks.
    ///
    /// ```
    /// use kvmkit_arch_powerpc::{PpcAbiProfile, PpcVmState};
    /// let saved = PpcAbiProfile::of_state(&PpcVmState::default(), &[]);
    /// let mut host = saved.clone();
    /// host.big_endian = !host.big_endian;
    /// host.header.api_version = 11;
    /// assert_eq!(saved.mismatches(&host).len(), 2);
    /// ```
    pub fn mismatches(&self, host: &Self) -> Vec<ProfileMismatch> {
        let (saved_header, host_header) = (&self.header, &host.header);
        let mut out: Vec<ProfileMismatch> = saved_header
            .identity_mismatches(host_header, PROFILE_VERSION)
            .into_iter()
            .map(Into::into)
            .collect();
        // The byte order before the capabilities: it is what the header's
        // identity is to the other architectures.
        if self.big_endian != host.big_endian {
            out.push(ProfileMismatch::ByteOrder {
                saved: endian(self.big_endian),
                host: endian(host.big_endian),
            });
        }
        out.extend(
            saved_header
                .capability_mismatches(host_header)
                .into_iter()
                .map(Into::into),
        );
        for &id in &self.one_regs {
            if !host.one_regs.contains(&id) {
                out.push(ProfileMismatch::OneReg {
                    id,
                    name: one_reg_name(id),
                });
            }
        }
        if let (true, Some(saved), Some(h)) = (host.kvm_hv, self.pvr, host.pvr) {
            if saved != h {
                out.push(ProfileMismatch::Pvr { saved, host: h });
            }
        }
        out
    }

    /// Refuses a restore of the state `self` describes on `host`: the first
    /// of [`PpcAbiProfile::mismatches`].
    pub fn check(&self, host: &Self) -> Result<(), ProfileMismatch> {
        self.mismatches(host).into_iter().next().map_or(Ok(()), Err)
    }
}

/// `KVM_API_VERSION` as `KVM_GET_API_VERSION` returns it.
fn api_version() -> i32 {
    i32::try_from(KVM_API_VERSION).expect("12")
}

/// The host profile from what the scratch VM and vCPU answered.
pub(crate) fn host_profile(
    kvm_hv: bool,
    pvr: u32,
    capabilities: Vec<CapabilityValue>,
    one_regs: Vec<u64>,
) -> PpcAbiProfile {
    PpcAbiProfile {
        header: ProfileHeader::new::<Ppc64>(PROFILE_VERSION, api_version(), capabilities),
        big_endian: cfg!(target_endian = "big"),
        kvm_hv,
        pvr: Some(pvr),
        one_regs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uapi::{KVM_REG_PPC_ICP_STATE, KVM_REG_PPC_TAR};
    use crate::{snapshot_one_regs, HashPageTable, XicsSource};

    fn saved() -> PpcAbiProfile {
        let mut v = PpcVcpuState::default();
        v.sregs.pvr = 0x004e_1202;
        v.one_regs = vec![
            (KVM_REG_PPC_TAR, vec![0; 8]),
            (KVM_REG_PPC_ICP_STATE, vec![0; 8]),
        ];
        let vm = PpcVmState {
            kvm_hv: true,
            xics_sources: Some(vec![XicsSource {
                irq: 0x1000,
                state: 0,
            }]),
            hpt: Some(HashPageTable {
                order: 24,
                entries: vec![],
            }),
            ..PpcVmState::default()
        };
        PpcAbiProfile::of_state(&vm, &[v.clone(), v])
    }

    fn host() -> PpcAbiProfile {
        host_profile(
            true,
            0x004e_1202,
            STATE_CAPS
                .iter()
                .map(|&c| CapabilityValue::new(c, 1))
                .collect(),
            snapshot_one_regs(),
        )
    }

    #[test]
    fn a_state_profile_lists_what_it_needs() {
        let p = saved();
        let caps = &p.header.capabilities;
        let names: Vec<&str> = caps.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "KVM_CAP_ONE_REG",
                "KVM_CAP_DEVICE_CTRL",
                "KVM_CAP_IRQ_XICS",
                "KVM_CAP_PPC_HTAB_FD",
                "KVM_CAP_PPC_ALLOC_HTAB"
            ]
        );
        assert_eq!(p.one_regs, [KVM_REG_PPC_TAR, KVM_REG_PPC_ICP_STATE]);
        assert_eq!(p.pvr, Some(0x004e_1202));
        assert!(p.kvm_hv);
        assert!(p.check(&host()).is_ok());
        let back: PpcAbiProfile =
            serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        // The header's fields stand at the top level, as before it was one.
        let json = serde_json::to_value(&p).unwrap();
        assert!(json.get("header").is_none() && json["arch"] == "powerpc");
    }

    #[test]
    fn a_kvm_pr_host_refuses_what_it_lacks_and_accepts_any_pvr() {
        let mut pr = host();
        pr.kvm_hv = false;
        pr.pvr = Some(0x0080_0200);
        pr.header
            .capabilities
            .retain(|c| c.number != CAP_PPC_HTAB_FD.number());
        pr.one_regs.retain(|&id| id != KVM_REG_PPC_TAR);
        let all = saved().mismatches(&pr);
        assert_eq!(
            all,
            [
                ProfileMismatch::Header(HeaderMismatch::Capability {
                    name: "KVM_CAP_PPC_HTAB_FD".into(),
                    number: 84,
                    saved: 1,
                    host: 0
                }),
                ProfileMismatch::OneReg {
                    id: KVM_REG_PPC_TAR,
                    name: "KVM_REG_PPC_TAR".into()
                }
            ]
        );
        assert_eq!(
            all[1].to_string(),
            "KVM_REG_PPC_TAR: the state holds it, this host's vCPUs do not have it"
        );
    }

    #[test]
    fn kvm_hv_refuses_another_pvr_and_everyone_another_byte_order() {
        let mut h = host();
        h.pvr = Some(0x004e_1200);
        assert_eq!(
            saved().check(&h),
            Err(ProfileMismatch::Pvr {
                saved: 0x004e_1202,
                host: 0x004e_1200
            })
        );
        let mut h = host();
        h.big_endian = !h.big_endian;
        let e = saved().check(&h).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("byte order: the state was saved on a"),
            "{e}"
        );
        let mut s = saved();
        s.header.version = 3;
        s.header.arch = "s390x".into();
        s.header.api_version = 11;
        let all = s.mismatches(&host());
        assert_eq!(
            all.iter().map(ToString::to_string).collect::<Vec<_>>()[..3],
            [
                "profile format version 3, this build reads version 1",
                "architecture: the state is for s390x, this host is powerpc",
                "KVM API version: the state needs 11, this host has 12"
            ]
        );
    }

    #[test]
    fn register_names() {
        assert_eq!(one_reg_name(KVM_REG_PPC_ICP_STATE), "KVM_REG_PPC_ICP_STATE");
        assert_eq!(one_reg_name(crate::fpr(7).unwrap()), "KVM_REG_PPC_FPR(7)");
        assert_eq!(one_reg_name(crate::vr(30).unwrap()), "KVM_REG_PPC_VR(30)");
        assert_eq!(one_reg_name(crate::vr(31).unwrap()), "KVM_REG_PPC_VR31");
        assert_eq!(one_reg_name(crate::vsr(5).unwrap()), "KVM_REG_PPC_VSR(5)");
    }

    #[test]
    fn a_register_without_a_kernel_name_is_named_by_its_id() {
        // A register a newer kernel saved, unknown to this build: the
        // mismatch still says which one, by number.
        let unknown = 0x1030_0000_0000_0fff;
        let mut s = saved();
        s.one_regs.push(unknown);
        let e = s.check(&host()).unwrap_err();
        assert_eq!(
            e,
            ProfileMismatch::OneReg {
                id: unknown,
                name: "ONE_REG 0x1030000000000fff".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "ONE_REG 0x1030000000000fff: the state holds it, this host's vCPUs do not have it"
        );
    }

    #[test]
    fn capability_values_are_looked_up_by_number() {
        let s = saved();
        assert_eq!(s.capability(CAP_PPC_HTAB_FD.number()), 1);
        assert_eq!(s.capability(Capability::IRQ_XICS.number()), 1);
        // Not needed by the state (no vCPU asks for PAPR): absent, 0.
        assert_eq!(s.capability(Capability::PPC_PAPR.number()), 0);
        let mut h = host();
        h.header.capabilities = vec![CapabilityValue::new(CAP_PPC_HTAB_FD, 7)];
        assert_eq!(h.capability(84), 7);
        assert_eq!(h.capability(Capability::ONE_REG.number()), 0);
    }
}
