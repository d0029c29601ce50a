//! The KVM ABI profile of a saved state, and of a host: what a restore or
//! an incoming migration checks before it writes anything.

use crate::host::{CAP_PIT_STATE2, STATE_CAPS};
use crate::vcpu_state::read_msrs;
use crate::{Error, Result, VcpuConfig, VmConfig, X86System, X86Vcpu, X86VcpuState, X86VmState};
use crate::{STATE_VERSION, X86_64};
use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
use kvmkit_core::{Arch, Capability, CapabilityValue, HeaderMismatch, ProfileHeader, VcpuId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The format version of [`X86AbiProfile`]; `check` refuses any other.
///
/// ```
/// use kvmkit_arch_x86_64::{X86AbiProfile, PROFILE_VERSION};
/// assert_eq!(X86AbiProfile::of_state(None, &[]).header.version, PROFILE_VERSION);
/// ```
pub const PROFILE_VERSION: u32 = 1;

/// The size of `struct kvm_xsave`: what `KVM_GET_XSAVE` writes.
pub(crate) const LEGACY_XSAVE_BYTES: usize = 4096;

/// A CPUID output register.
///
/// ```
/// assert_eq!(kvmkit_arch_x86_64::CpuidRegister::Ecx.to_string(), "ECX");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CpuidRegister {
    /// EAX.
    Eax,
    /// EBX.
    Ebx,
    /// ECX.
    Ecx,
    /// EDX.
    Edx,
}

impl CpuidRegister {
    fn of(self, e: &kvm_cpuid_entry2) -> u32 {
        match self {
            CpuidRegister::Eax => e.eax,
            CpuidRegister::Ebx => e.ebx,
            CpuidRegister::Ecx => e.ecx,
            CpuidRegister::Edx => e.edx,
        }
    }
}

impl fmt::Display for CpuidRegister {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CpuidRegister::Eax => "EAX",
            CpuidRegister::Ebx => "EBX",
            CpuidRegister::Ecx => "ECX",
            CpuidRegister::Edx => "EDX",
        })
    }
}

use CpuidRegister::{Eax, Ebx, Ecx, Edx};

/// The CPUID words whose bits are features a guest may rely on, with the
/// bits that are not features (they follow CR4, the topology or the VMM's
/// choice): leaf 1 ECX OSXSAVE and hypervisor, leaf 1 EDX HTT, leaf 7 ECX
/// OSPKE.
const FEATURE_WORDS: [(u32, u32, CpuidRegister, u32); 14] = [
    (0x1, 0, Ecx, 1 << 27 | 1 << 31),
    (0x1, 0, Edx, 1 << 28),
    (0x7, 0, Ebx, 0),
    (0x7, 0, Ecx, 1 << 4),
    (0x7, 0, Edx, 0),
    (0x7, 1, Eax, 0),
    (0xd, 0, Eax, 0),
    (0xd, 0, Edx, 0),
    (0xd, 1, Eax, 0),
    (0x8000_0001, 0, Ecx, 0),
    (0x8000_0001, 0, Edx, 0),
    (0x8000_0007, 0, Edx, 0),
    (0x8000_0008, 0, Ebx, 0),
    (0x4000_0001, 0, Eax, 0),
];

/// One CPUID feature word: `CPUID.(EAX=leaf, ECX=index).register`.
///
/// ```
/// use kvmkit_arch_x86_64::{CpuidRegister, FeatureWord};
/// let w = FeatureWord { leaf: 7, index: 0, register: CpuidRegister::Ebx, bits: 1 };
/// assert_eq!(w.name(), "CPUID 0x7.0 EBX");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FeatureWord {
    /// EAX input.
    pub leaf: u32,
    /// ECX input.
    pub index: u32,
    /// The output register.
    pub register: CpuidRegister,
    /// Its feature bits (non-feature bits cleared).
    pub bits: u32,
}

impl FeatureWord {
    /// How messages name the word, e.g. `CPUID 0x7.0 EBX`.
    pub fn name(&self) -> String {
        format!("CPUID {:#x}.{} {}", self.leaf, self.index, self.register)
    }
}

fn find_leaf(entries: &[kvm_cpuid_entry2], leaf: u32, index: u32) -> Option<&kvm_cpuid_entry2> {
    entries.iter().find(|e| {
        e.function == leaf && (e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX == 0 || e.index == index)
    })
}

/// What a CPUID table tells a guest about its CPU: vendor, family, model,
/// stepping (for messages; not compared) and the feature words.
///
/// ```
/// use kvmkit_arch_x86_64::CpuidProfile;
/// use kvmkit_arch_x86_64::kvm_bindings::kvm_cpuid_entry2;
/// let leaf0 = kvm_cpuid_entry2 { function: 0, eax: 0xd, ebx: 0x756e_6547, edx: 0x4965_6e69, ecx: 0x6c65_746e, ..Default::default() };
/// let leaf1 = kvm_cpuid_entry2 { function: 1, eax: 0x0005_0654, ecx: 1 << 26, ..Default::default() };
/// let p = CpuidProfile::from_entries(&[leaf0, leaf1]);
/// assert_eq!(p.vendor, "GenuineIntel");
/// assert_eq!((p.family, p.model, p.stepping), (6, 0x55, 4));
/// assert_eq!(p.features[0].bits, 1 << 26);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuidProfile {
    /// Leaf 0's vendor string, e.g. `GenuineIntel`; empty without CPUID.
    pub vendor: String,
    /// The display family (base plus extended).
    pub family: u32,
    /// The display model (with the extended model for families 6 and 15).
    pub model: u32,
    /// The stepping.
    pub stepping: u32,
    /// The feature words present in the table.
    pub features: Vec<FeatureWord>,
}

impl CpuidProfile {
    /// Summarises a CPUID table (`KVM_GET_CPUID2`, `KVM_GET_SUPPORTED_CPUID`).
    pub fn from_entries(entries: &[kvm_cpuid_entry2]) -> Self {
        let vendor = find_leaf(entries, 0, 0)
            .map(|e| {
                let b: Vec<u8> = [e.ebx, e.edx, e.ecx]
                    .iter()
                    .flat_map(|r| r.to_le_bytes())
                    .collect();
                String::from_utf8_lossy(&b)
                    .trim_end_matches('\0')
                    .to_string()
            })
            .unwrap_or_default();
        let eax = find_leaf(entries, 1, 0).map_or(0, |e| e.eax);
        let base_family = (eax >> 8) & 0xf;
        let family = if base_family == 0xf {
            base_family + ((eax >> 20) & 0xff)
        } else {
            base_family
        };
        let model = if base_family == 0x6 || base_family == 0xf {
            ((eax >> 4) & 0xf) | (((eax >> 16) & 0xf) << 4)
        } else {
            (eax >> 4) & 0xf
        };
        let features = FEATURE_WORDS
            .iter()
            .filter_map(|&(leaf, index, register, ignore)| {
                find_leaf(entries, leaf, index).map(|e| FeatureWord {
                    leaf,
                    index,
                    register,
                    bits: register.of(e) & !ignore,
                })
            })
            .collect();
        CpuidProfile {
            vendor,
            family,
            model,
            stepping: eax & 0xf,
            features,
        }
    }

    fn word(&self, leaf: u32, index: u32, register: CpuidRegister) -> u32 {
        self.features
            .iter()
            .find(|w| w.leaf == leaf && w.index == index && w.register == register)
            .map_or(0, |w| w.bits)
    }
}

/// Why a saved state cannot be restored on a host: each names the item and
/// the values on both sides.
///
/// ```
/// use kvmkit_arch_x86_64::ProfileMismatch;
/// use kvmkit_core::HeaderMismatch;
/// let m = ProfileMismatch::Header(HeaderMismatch::Capability {
///     name: "KVM_CAP_XCRS".into(),
///     number: 56,
///     saved: 1,
///     host: 0,
/// });
/// assert_eq!(m.to_string(), "KVM_CAP_XCRS (56): the state needs 1, this host has 0");
/// let m = ProfileMismatch::Msr { index: 0x4b56_4d01 };
/// assert_eq!(m.to_string(), "MSR 0x4b564d01: the state holds it, this host's KVM does not offer it");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileMismatch {
    /// The profile's header does not fit: another format version,
    /// architecture or KVM API version, or a capability the state relies on
    /// is absent or too small.
    #[error(transparent)]
    Header(#[from] HeaderMismatch),
    /// The host's XSAVE area cannot hold the saved one.
    #[error("XSAVE area: the state holds {saved} bytes, this host's holds {host} bytes")]
    XsaveArea {
        /// The saved region's size.
        saved: u32,
        /// This host's size (`KVM_CAP_XSAVE2`, 4096, or 0 without XSAVE).
        host: u32,
    },
    /// Another CPU vendor.
    #[error("CPUID vendor: the guest saw {saved:?}, this host offers {host:?}")]
    CpuidVendor {
        /// What the guest saw.
        saved: String,
        /// What this host offers.
        host: String,
    },
    /// A CPUID feature bit the guest saw is missing.
    #[error("{word}: the guest saw {saved:#010x}, this host offers {host:#010x} (missing {missing:#010x})")]
    CpuidFeature {
        /// The word, e.g. `CPUID 0x7.0 EBX`.
        word: String,
        /// The guest's bits.
        saved: u32,
        /// This host's bits.
        host: u32,
        /// `saved & !host`.
        missing: u32,
    },
    /// The state holds an MSR this host's KVM cannot read or write.
    #[error("MSR {index:#x}: the state holds it, this host's KVM does not offer it")]
    Msr {
        /// The MSR index.
        index: u32,
    },
    /// The guest's TSC ran at another frequency and this host cannot scale.
    #[error("TSC frequency: the guest ran at {saved} kHz, this host's is {host} kHz and it cannot scale it (no KVM_CAP_TSC_CONTROL)")]
    TscFrequency {
        /// The saved frequency.
        saved: u32,
        /// This host's.
        host: u32,
    },
}

/// What a saved x86_64 state needs from KVM, or what a host's KVM offers:
/// the architecture, the KVM API version, the capabilities the state relies
/// on with their values, the XSAVE area size, the CPUID the guest was given,
/// the MSRs, the TSC frequency.
///
/// The profile of a state comes from [`X86AbiProfile::of_state`] and travels
/// with a snapshot (or goes first in a migration stream); the host's comes
/// from [`abi_profile`]. [`X86AbiProfile::check`] compares them.
/// `Arch::restore_vcpu_state` does the same check itself before it writes
/// anything.
///
/// ```
/// use kvmkit_arch_x86_64::{abi_profile, VcpuConfig, X86AbiProfile, X86VcpuState, X86_64};
/// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
/// let host = abi_profile(kvm.arch_system(), &VcpuConfig::default()).unwrap();
/// assert_eq!(host.header.arch, "x86_64");
/// let mut state = X86VcpuState::default();
/// state.msrs.push((0x10, 0)); // the TSC: every host has it
/// X86AbiProfile::of_state(None, &[state.clone()]).check(&host).unwrap();
/// state.msrs.push((0x4000_dead, 0)); // no such MSR
/// let e = X86AbiProfile::of_state(None, &[state]).check(&host).unwrap_err();
/// assert_eq!(e.to_string(), "MSR 0x4000dead: the state holds it, this host's KVM does not offer it");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct X86AbiProfile {
    /// The format version ([`PROFILE_VERSION`] when made by this build),
    /// `x86_64`, `KVM_GET_API_VERSION` (12) and the capabilities with their
    /// values.
    #[serde(flatten)]
    pub header: ProfileHeader,
    /// The XSAVE area in bytes (`KVM_CAP_XSAVE2`, or 4096 with XSAVE only).
    pub xsave_bytes: Option<u32>,
    /// The CPUID the guest was given (a state's) or would be given (a host's).
    pub cpuid: CpuidProfile,
    /// The MSR indices the state holds, or a vCPU on the host can read.
    pub msrs: Vec<u32>,
    /// The guest TSC frequency in kHz.
    pub tsc_khz: Option<u32>,
}

/// 250 parts per million: the TSC calibration noise between boots of one
/// host (QEMU's and Firecracker's tolerance).
fn tsc_close(saved: u32, host: u32) -> bool {
    let diff = u64::from(saved.abs_diff(host));
    diff * 1_000_000 <= u64::from(saved) * 250
}

fn bytes_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl X86AbiProfile {
    /// What `vcpus` (and `vm`) need from a host to be restored: the
    /// capabilities of the pieces present (value 1, "present"), the largest
    /// XSAVE region, the CPUID of the first vCPU that has one, every MSR
    /// held, the TSC frequency of the first vCPU that has one.
    pub fn of_state(vm: Option<&X86VmState>, vcpus: &[X86VcpuState]) -> Self {
        let mut caps: Vec<Capability> = Vec::new();
        let mut need = |c: Capability, yes: bool| {
            if yes && !caps.contains(&c) {
                caps.push(c);
            }
        };
        for v in vcpus {
            need(Capability::MP_STATE, v.mp_state.is_some());
            need(Capability::VCPU_EVENTS, v.vcpu_events.is_some());
            need(Capability::DEBUGREGS, v.debugregs.is_some());
            need(Capability::XSAVE, v.xsave.is_some());
            need(Capability::XCRS, v.xcrs.is_some());
            need(Capability::EXT_CPUID, !v.cpuid.is_empty());
            need(Capability::GET_TSC_KHZ, v.tsc_khz.is_some());
            need(Capability::IRQCHIP, v.lapic.is_some());
        }
        if let Some(vm) = vm {
            need(Capability::IRQCHIP, vm.irqchip.is_some());
            need(Capability::PIT2, vm.pit.is_some());
            need(CAP_PIT_STATE2, vm.pit.is_some());
            need(Capability::ADJUST_CLOCK, vm.clock.is_some());
        }
        let capabilities = CapabilityValue::needed(&STATE_CAPS, |c| caps.contains(c));
        let mut msrs: Vec<u32> = Vec::new();
        for (i, _) in vcpus.iter().flat_map(|v| &v.msrs) {
            if !msrs.contains(i) {
                msrs.push(*i);
            }
        }
        X86AbiProfile {
            header: ProfileHeader::new::<X86_64>(PROFILE_VERSION, 12, capabilities),
            xsave_bytes: vcpus
                .iter()
                .filter_map(|v| v.xsave.as_ref())
                .map(|x| bytes_u32(x.len() * 4))
                .max(),
            cpuid: vcpus
                .iter()
                .find(|v| !v.cpuid.is_empty())
                .map(|v| CpuidProfile::from_entries(&v.cpuid))
                .unwrap_or_default(),
            msrs,
            tsc_khz: vcpus.iter().find_map(|v| v.tsc_khz),
        }
    }

    /// The value of capability `number`, 0 when absent.
    ///
    /// ```
    /// use kvmkit_arch_x86_64::{X86AbiProfile, X86VcpuState};
    /// let mut s = X86VcpuState::default();
    /// s.xcrs = Some(Default::default());
    /// assert_eq!(X86AbiProfile::of_state(None, &[s]).capability(56), 1); // KVM_CAP_XCRS
    /// ```
    pub fn capability(&self, number: u32) -> i32 {
        self.header.capability(number)
    }

    /// Everything `self` (a saved state's profile) needs that `host` lacks.
    ///
    /// ```
    /// use kvmkit_arch_x86_64::{X86AbiProfile, X86VcpuState};
    /// let mut s = X86VcpuState::default();
    /// s.msrs = vec![(0x10, 1), (0x6e0, 2)];
    /// let saved = X86AbiProfile::of_state(None, &[s]);
    /// let mut host = saved.clone();
    /// host.msrs.clear();
    /// assert_eq!(saved.mismatches(&host).len(), 2);
    /// ```
    pub fn mismatches(&self, host: &Self) -> Vec<ProfileMismatch> {
        let mut out: Vec<ProfileMismatch> = self
            .header
            .mismatches(&host.header, PROFILE_VERSION)
            .into_iter()
            .map(Into::into)
            .collect();
        if let Some(saved) = self.xsave_bytes {
            let h = host.xsave_bytes.unwrap_or(0);
            if h < saved {
                out.push(ProfileMismatch::XsaveArea { saved, host: h });
            }
        }
        if !self.cpuid.vendor.is_empty() && self.cpuid.vendor != host.cpuid.vendor {
            out.push(ProfileMismatch::CpuidVendor {
                saved: self.cpuid.vendor.clone(),
                host: host.cpuid.vendor.clone(),
            });
        }
        for w in &self.cpuid.features {
            let h = host.cpuid.word(w.leaf, w.index, w.register);
            let missing = w.bits & !h;
            if missing != 0 {
                out.push(ProfileMismatch::CpuidFeature {
                    word: w.name(),
                    saved: w.bits,
                    host: h,
                    missing,
                });
            }
        }
        for &index in &self.msrs {
            if !host.msrs.contains(&index) {
                out.push(ProfileMismatch::Msr { index });
            }
        }
        if let (Some(saved), Some(h)) = (self.tsc_khz, host.tsc_khz) {
            let can_scale = host.capability(Capability::TSC_CONTROL.number()) > 0;
            if !tsc_close(saved, h) && !can_scale {
                out.push(ProfileMismatch::TscFrequency { saved, host: h });
            }
        }
        out
    }

    /// Refuses a restore of the state `self` describes on `host`: the first
    /// of [`X86AbiProfile::mismatches`].
    ///
    /// ```
    /// use kvmkit_arch_x86_64::{ProfileMismatch, X86AbiProfile, X86VcpuState};
    /// let mut s = X86VcpuState::default();
    /// s.xsave = Some(vec![0; 2048]); // 8 KiB: needs KVM_CAP_XSAVE2
    /// let saved = X86AbiProfile::of_state(None, &[s]);
    /// let mut host = saved.clone();
    /// host.xsave_bytes = Some(4096);
    /// assert_eq!(
    ///     saved.check(&host),
    ///     Err(ProfileMismatch::XsaveArea { saved: 8192, host: 4096 })
    /// );
    /// assert!(saved.check(&saved).is_ok());
    /// ```
    pub fn check(&self, host: &Self) -> std::result::Result<(), ProfileMismatch> {
        self.mismatches(host).into_iter().next().map_or(Ok(()), Err)
    }
}

/// The profile of what `vcpu`'s host offers, with `cpuid` as the CPUID the
/// guest is or would be given: the capabilities of `/dev/kvm` (and the VM's
/// `KVM_CAP_XSAVE2` size), the MSRs this vCPU can read, its TSC frequency.
pub(crate) fn host_profile(vcpu: &X86Vcpu, cpuid: &[kvm_cpuid_entry2]) -> Result<X86AbiProfile> {
    let facts = &vcpu.host;
    let mut capabilities: Vec<CapabilityValue> = facts
        .caps
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|&(c, v)| CapabilityValue::new(c, v))
        .collect();
    // The XSAVE2 size is per VM (it follows the VM's permitted features).
    let xsave2 = vcpu.vm.check_extension(Capability::XSAVE2);
    capabilities.retain(|c| c.number != Capability::XSAVE2.number());
    if xsave2 > 0 {
        capabilities.push(CapabilityValue::new(Capability::XSAVE2, xsave2));
    }
    let xsave_bytes = match (facts.has(Capability::XSAVE), xsave2) {
        (false, _) => None,
        (true, n) if n > 0 => Some(n.unsigned_abs()),
        (true, _) => Some(bytes_u32(LEGACY_XSAVE_BYTES)),
    };
    let msrs = read_msrs(vcpu.vcpu_fd(), &facts.msr_candidates)?.values;
    let tsc_khz = if facts.has(Capability::GET_TSC_KHZ) {
        vcpu.vcpu_fd().get_tsc_khz().ok()
    } else {
        None
    };
    Ok(X86AbiProfile {
        header: ProfileHeader::new::<X86_64>(PROFILE_VERSION, facts.api_version, capabilities),
        xsave_bytes,
        cpuid: CpuidProfile::from_entries(cpuid),
        msrs: msrs.into_iter().map(|(i, _)| i).collect(),
        tsc_khz,
    })
}

/// The ABI profile of this host for vCPUs made with `config`: creates a
/// scratch VM and vCPU (no memory, never run) to read what KVM only tells
/// per vCPU (the CPUID it is given, the MSRs that read back, the TSC
/// frequency), then drops them.
///
/// A snapshot's profile ([`X86AbiProfile::of_state`]) is checked against
/// this before a restore or an incoming migration.
///
/// ```
/// use kvmkit_arch_x86_64::{abi_profile, VcpuConfig, X86_64};
/// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
/// let p = abi_profile(kvm.arch_system(), &VcpuConfig::default()).unwrap();
/// assert_eq!((p.header.arch.as_str(), p.header.api_version), ("x86_64", 12));
/// assert!(p.msrs.contains(&0x10), "the TSC");
/// assert!(!p.cpuid.vendor.is_empty());
/// ```
pub fn abi_profile(sys: &X86System, config: &VcpuConfig) -> Result<X86AbiProfile> {
    abi_profile_for(sys, &VmConfig::default(), config)
}

/// [`abi_profile`] with the scratch VM made from `vm_config`, like the VM a
/// restore would create: what `SnapshotArch::host_profile` (and so
/// `Kvm::abi_profile`) does. Per-VM values (`KVM_CAP_XSAVE2`) and what a
/// vCPU reads (MSRs, CPUID) then come from a VM with the same irqchip.
///
/// ```
/// use kvmkit_arch_x86_64::{abi_profile_for, IrqchipMode, VcpuConfig, VmConfig, X86_64};
/// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
/// let cfg = VmConfig { irqchip: IrqchipMode::Kernel, ..Default::default() };
/// let p = abi_profile_for(kvm.arch_system(), &cfg, &VcpuConfig::default()).unwrap();
/// assert!(p.msrs.contains(&0x10), "the TSC");
/// ```
pub fn abi_profile_for(
    sys: &X86System,
    vm_config: &VmConfig,
    config: &VcpuConfig,
) -> Result<X86AbiProfile> {
    let vm = X86_64::create_vm(sys, vm_config)?;
    X86_64::init_vm(&vm, vm_config)?;
    let vcpu = X86_64::create_vcpu(sys, &vm, VcpuId(0))?;
    X86_64::init_vcpu(sys, &vm, &vcpu, VcpuId(0), config)?;
    let cpuid = crate::vcpu_state::read_cpuid(&vcpu).map_err(Error::ioctl("KVM_GET_CPUID2"))?;
    host_profile(&vcpu, &cpuid)
}

/// Checks the state's format versions before anything else.
pub(crate) fn check_version(what: &'static str, found: u32) -> Result<()> {
    if found == STATE_VERSION {
        Ok(())
    } else {
        Err(Error::StateVersion {
            what,
            found,
            supported: STATE_VERSION,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            flags: if function == 7 || function == 0xd {
                KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            } else {
                0
            },
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    /// "AuthenticAMD", family 0x19 model 0x11 (the host this was written on).
    fn amd_cpuid() -> Vec<kvm_cpuid_entry2> {
        vec![
            entry(0, 0, [0x1c, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
            entry(1, 0, [0x00a1_0f11, 0x0002_0800, 0x8120_2000, 0x078b_fbff]),
            entry(7, 0, [1, 0x0180_0002, 0x104, 0x2000_0000]),
            entry(7, 1, [0, 0, 0, 0]),
            entry(0xd, 0, [0xe7, 0x980, 0x980, 0]),
            entry(
                0x8000_0001,
                0,
                [0x00a1_0f11, 0x4000_0000, 0x0040_0393, 0x23d3_fbff],
            ),
            entry(0x4000_0001, 0, [0x0100_7efb, 0, 0, 0]),
        ]
    }

    fn saved() -> X86AbiProfile {
        let mut s = X86VcpuState {
            cpuid: amd_cpuid(),
            msrs: vec![(0x10, 1), (0x6e0, 0), (0x4b56_4d01, 0)],
            xsave: Some(vec![0; 1024]),
            xcrs: Some(Default::default()),
            tsc_khz: Some(2_596_130),
            mp_state: Some(Default::default()),
            ..Default::default()
        };
        s.lapic = Some(kvm_bindings::kvm_lapic_state::default());
        let vm = X86VmState {
            pit: Some(Default::default()),
            clock: Some(Default::default()),
            ..Default::default()
        };
        X86AbiProfile::of_state(Some(&vm), &[s])
    }

    /// A host offering exactly what `saved()` needs, with real-looking values.
    fn host() -> X86AbiProfile {
        let mut h = saved();
        h.header.capabilities = STATE_CAPS
            .iter()
            .map(|&c| CapabilityValue::new(c, if c == Capability::XSAVE2 { 4096 } else { 1 }))
            .collect();
        h.header
            .capabilities
            .retain(|c| c.number != Capability::TSC_CONTROL.number());
        h.msrs.push(0x174);
        h
    }

    #[test]
    fn of_state_lists_what_the_state_relies_on() {
        let p = saved();
        let caps = &p.header.capabilities;
        let names: Vec<&str> = caps.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "KVM_CAP_MP_STATE",
                "KVM_CAP_XSAVE",
                "KVM_CAP_XCRS",
                "KVM_CAP_EXT_CPUID",
                "KVM_CAP_GET_TSC_KHZ",
                "KVM_CAP_IRQCHIP",
                "KVM_CAP_PIT2",
                "KVM_CAP_PIT_STATE2",
                "KVM_CAP_ADJUST_CLOCK"
            ]
        );
        assert_eq!(p.xsave_bytes, Some(4096));
        assert_eq!(p.cpuid.vendor, "AuthenticAMD");
        assert_eq!(
            (p.cpuid.family, p.cpuid.model, p.cpuid.stepping),
            (0x19, 0x11, 1)
        );
        assert_eq!(p.msrs, [0x10, 0x6e0, 0x4b56_4d01]);
        // OSXSAVE and the hypervisor bit are not features.
        assert_eq!(p.cpuid.word(1, 0, Ecx), 0x0120_2000);
        assert_eq!(p.cpuid.word(7, 0, Ebx), 0x0180_0002);
        assert!(p.check(&host()).is_ok());
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<X86AbiProfile>(&json).unwrap(), p);
        // The header's fields stand at the top level, as before it was one.
        let json = serde_json::to_value(&p).unwrap();
        assert!(json.get("header").is_none() && json["arch"] == "x86_64");
    }

    #[test]
    fn refuses_a_missing_capability() {
        let mut h = host();
        h.header.capabilities.retain(|c| c.name != "KVM_CAP_XCRS");
        let e = saved().check(&h).unwrap_err();
        assert_eq!(
            e.to_string(),
            "KVM_CAP_XCRS (56): the state needs 1, this host has 0"
        );
    }

    #[test]
    fn refuses_a_smaller_xsave_area() {
        let mut h = host();
        h.xsave_bytes = None;
        let e = saved().check(&h).unwrap_err();
        assert_eq!(
            e,
            ProfileMismatch::XsaveArea {
                saved: 4096,
                host: 0
            }
        );
        assert_eq!(
            e.to_string(),
            "XSAVE area: the state holds 4096 bytes, this host's holds 0 bytes"
        );
    }

    #[test]
    fn refuses_a_missing_cpuid_feature() {
        let mut h = host();
        // The host lacks leaf 7 EBX bit 1 (TSC_ADJUST) and has bit 3 more.
        h.cpuid.features.iter_mut().for_each(|w| {
            if (w.leaf, w.register) == (7, Ebx) {
                w.bits = 0x0180_0008;
            }
        });
        let e = saved().check(&h).unwrap_err();
        assert_eq!(
            e.to_string(),
            "CPUID 0x7.0 EBX: the guest saw 0x01800002, this host offers 0x01800008 (missing 0x00000002)"
        );
        // A leaf the host lacks entirely offers nothing.
        let mut h = host();
        h.cpuid.features.retain(|w| w.leaf != 0x4000_0001);
        assert!(matches!(
            saved().check(&h),
            Err(ProfileMismatch::CpuidFeature {
                host: 0,
                saved: 0x0100_7efb,
                ..
            })
        ));
        // The vendor is compared as a whole.
        let mut h = host();
        h.cpuid.vendor = "GenuineIntel".into();
        assert_eq!(
            saved().check(&h).unwrap_err().to_string(),
            "CPUID vendor: the guest saw \"AuthenticAMD\", this host offers \"GenuineIntel\""
        );
    }

    #[test]
    fn refuses_a_missing_msr() {
        let mut h = host();
        h.msrs.retain(|&i| i != 0x4b56_4d01);
        let e = saved().check(&h).unwrap_err();
        assert_eq!(
            e.to_string(),
            "MSR 0x4b564d01: the state holds it, this host's KVM does not offer it"
        );
    }

    #[test]
    fn refuses_another_tsc_frequency_unless_the_host_scales() {
        let mut h = host();
        h.tsc_khz = Some(2_596_130 + 649); // 250 ppm: same host, recalibrated
        assert!(saved().check(&h).is_ok());
        h.tsc_khz = Some(3_000_000);
        assert_eq!(
            saved().check(&h).unwrap_err(),
            ProfileMismatch::TscFrequency {
                saved: 2_596_130,
                host: 3_000_000
            }
        );
        h.header
            .capabilities
            .push(CapabilityValue::new(Capability::TSC_CONTROL, 1));
        assert!(saved().check(&h).is_ok(), "KVM_SET_TSC_KHZ can scale");
    }

    #[test]
    fn refuses_another_arch_api_or_version_and_lists_everything() {
        let mut s = saved();
        s.header.version = 7;
        s.header.arch = "s390x".into();
        s.header.api_version = 11;
        let all = s.mismatches(&host());
        assert_eq!(all.len(), 3);
        assert_eq!(
            all[0].to_string(),
            "profile format version 7, this build reads version 1"
        );
        assert_eq!(
            all[1].to_string(),
            "architecture: the state is for s390x, this host is x86_64"
        );
        assert_eq!(
            all[2].to_string(),
            "KVM API version: the state needs 11, this host has 12"
        );
    }

    #[test]
    fn family_and_model_decoding() {
        // Intel family 6 model 0x8f stepping 8; family 15 adds the extended family.
        let p = CpuidProfile::from_entries(&[entry(1, 0, [0x0008_06f8, 0, 0, 0])]);
        assert_eq!((p.family, p.model, p.stepping), (6, 0x8f, 8));
        let p = CpuidProfile::from_entries(&[entry(1, 0, [0x0010_0f42, 0, 0, 0])]);
        assert_eq!((p.family, p.model), (0x10, 4));
        let p = CpuidProfile::from_entries(&[]);
        assert_eq!(p, CpuidProfile::default());
        assert!(tsc_close(1_000_000, 1_000_250) && !tsc_close(1_000_000, 1_000_251));
        assert!(check_version("vCPU", STATE_VERSION).is_ok());
        assert_eq!(
            check_version("VM", 9).unwrap_err().to_string(),
            "cannot restore VM state of format version 9: this build reads version 1"
        );
    }
}
