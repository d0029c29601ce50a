//! [`ProfileHeader`]: the part of an ABI profile that is the same on every
//! architecture, and [`HeaderMismatch`], why it does not fit a host.
//!
//! Each arch crate's profile ([`crate::SnapshotArch::AbiProfile`]) embeds a
//! header and adds what only its architecture has (x86's CPUID and MSRs,
//! PowerPC's byte order and PVR, s390x's CPU model); its `ProfileMismatch`
//! wraps [`HeaderMismatch`] for the header's part.

use crate::{Arch, CapabilityValue};
use serde::{Deserialize, Serialize};

/// What every saved state's ABI profile starts with, and every host's: the
/// profile's format version, the architecture, the KVM API version and the
/// capabilities with their values.
///
/// In a state's profile `capabilities` holds the least values the state
/// needs (1: present), in a host's the host's values. Arch profiles embed it
/// with `#[serde(flatten)]`, so its fields stand at the top level of their
/// JSON next to the arch's own.
///
/// ```
/// use kvmkit_core::{Capability, CapabilityValue, HeaderMismatch, ProfileHeader};
/// let host = ProfileHeader {
///     version: 1,
///     arch: "x86_64".into(),
///     api_version: 12,
///     capabilities: vec![],
/// };
/// let saved = ProfileHeader {
///     capabilities: vec![CapabilityValue::new(Capability::XCRS, 1)],
///     ..host.clone()
/// };
/// assert_eq!(
///     saved.mismatches(&host, 1),
///     [HeaderMismatch::Capability { name: "KVM_CAP_XCRS".into(), number: 56, saved: 1, host: 0 }]
/// );
/// assert!(saved.mismatches(&saved, 1).is_empty());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileHeader {
    /// The format version of the arch's profile, the arch crate's
    /// `PROFILE_VERSION` when made by this build.
    pub version: u32,
    /// The architecture, `Arch::NAME`.
    pub arch: String,
    /// `KVM_GET_API_VERSION` (12).
    pub api_version: i32,
    /// Capabilities: in a state's profile the least values it needs, in a
    /// host's the host's values.
    pub capabilities: Vec<CapabilityValue>,
}

/// Why the header of a saved state's profile does not fit a host's: each
/// names the item and the values on both sides.
///
/// ```
/// use kvmkit_core::HeaderMismatch;
/// let m = HeaderMismatch::ApiVersion { saved: 11, host: 12 };
/// assert_eq!(m.to_string(), "KVM API version: the state needs 11, this host has 12");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderMismatch {
    /// The profile has another format version.
    #[error("profile format version {saved}, this build reads version {supported}")]
    Version {
        /// The saved profile's version.
        saved: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The state is for another architecture.
    #[error("architecture: the state is for {saved}, this host is {host}")]
    Arch {
        /// The state's.
        saved: String,
        /// This host's.
        host: String,
    },
    /// Another KVM API version.
    #[error("KVM API version: the state needs {saved}, this host has {host}")]
    ApiVersion {
        /// The state's.
        saved: i32,
        /// This host's.
        host: i32,
    },
    /// A capability the state relies on is absent or too small.
    #[error("{name} ({number}): the state needs {saved}, this host has {host}")]
    Capability {
        /// The capability.
        name: String,
        /// Its number.
        number: u32,
        /// The least value the state needs.
        saved: i32,
        /// This host's value (0: absent).
        host: i32,
    },
}

impl ProfileHeader {
    /// The header of a profile made by this build for architecture `A`:
    /// format `version`, `A::NAME`, `api_version` and `capabilities`.
    ///
    /// ```
    /// # use kvmkit_core::ProfileHeader;
    /// fn header<A: kvmkit_core::Arch>() -> ProfileHeader {
    ///     ProfileHeader::new::<A>(1, 12, Vec::new())
    /// }
    /// ```
    pub fn new<A: Arch>(
        version: u32,
        api_version: i32,
        capabilities: Vec<CapabilityValue>,
    ) -> Self {
        ProfileHeader {
            version,
            arch: A::NAME.to_string(),
            api_version,
            capabilities,
        }
    }

    /// The value of capability `number`, 0 when absent.
    pub fn capability(&self, number: u32) -> i32 {
        CapabilityValue::value_in(&self.capabilities, number)
    }

    /// Whether `self` (a saved state's header) is of a kind `host` can
    /// read at all: the format version this build reads (`supported`), the
    /// host's architecture and KVM API version; the mismatches in that
    /// order.
    pub fn identity_mismatches(&self, host: &Self, supported: u32) -> Vec<HeaderMismatch> {
        let mut out = Vec::new();
        if self.version != supported {
            out.push(HeaderMismatch::Version {
                saved: self.version,
                supported,
            });
        }
        if self.arch != host.arch {
            out.push(HeaderMismatch::Arch {
                saved: self.arch.clone(),
                host: host.arch.clone(),
            });
        }
        if self.api_version != host.api_version {
            out.push(HeaderMismatch::ApiVersion {
                saved: self.api_version,
                host: host.api_version,
            });
        }
        out
    }

    /// Every capability `self` (a saved state's header) needs at a value
    /// `host` does not reach, in `self`'s order.
    pub fn capability_mismatches(&self, host: &Self) -> Vec<HeaderMismatch> {
        self.capabilities
            .iter()
            .filter_map(|c| {
                let h = host.capability(c.number);
                (h < c.value).then(|| HeaderMismatch::Capability {
                    name: c.name.clone(),
                    number: c.number,
                    saved: c.value,
                    host: h,
                })
            })
            .collect()
    }

    /// Everything `self` (a saved state's header) needs that `host` lacks:
    /// [`ProfileHeader::identity_mismatches`], then
    /// [`ProfileHeader::capability_mismatches`].
    pub fn mismatches(&self, host: &Self, supported: u32) -> Vec<HeaderMismatch> {
        let mut out = self.identity_mismatches(host, supported);
        out.extend(self.capability_mismatches(host));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Capability;

    fn header(caps: Vec<CapabilityValue>) -> ProfileHeader {
        ProfileHeader {
            version: 1,
            arch: "s390x".into(),
            api_version: 12,
            capabilities: caps,
        }
    }

    fn messages(all: &[HeaderMismatch]) -> Vec<String> {
        all.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn every_header_mismatch_in_order_with_its_message() {
        let mut saved = header(vec![
            CapabilityValue::new(Capability::ONE_REG, 1),
            CapabilityValue::new(Capability::XSAVE2, 8192),
        ]);
        saved.version = 2;
        saved.arch = "x86_64".into();
        saved.api_version = 11;
        let host = header(vec![
            CapabilityValue::new(Capability::XSAVE2, 4096),
            CapabilityValue::new(Capability::ONE_REG, 1),
        ]);
        assert_eq!(
            messages(&saved.mismatches(&host, 1)),
            [
                "profile format version 2, this build reads version 1",
                "architecture: the state is for x86_64, this host is s390x",
                "KVM API version: the state needs 11, this host has 12",
                "KVM_CAP_XSAVE2 (208): the state needs 8192, this host has 4096"
            ]
        );
        assert_eq!(saved.identity_mismatches(&host, 1).len(), 3);
        assert_eq!(host.capability(208), 4096);
        assert_eq!(host.capability(56), 0);
    }

    #[test]
    fn a_host_with_more_fits() {
        let saved = header(vec![CapabilityValue::new(Capability::ONE_REG, 1)]);
        let host = header(vec![
            CapabilityValue::new(Capability::ONE_REG, 2),
            CapabilityValue::new(Capability::SYNC_REGS, 1),
        ]);
        assert!(saved.mismatches(&host, 1).is_empty());
        // The other way round: a value too small, a capability absent.
        assert_eq!(
            messages(&host.capability_mismatches(&saved)),
            [
                "KVM_CAP_ONE_REG (70): the state needs 2, this host has 1",
                "KVM_CAP_SYNC_REGS (74): the state needs 1, this host has 0"
            ]
        );
    }
}
