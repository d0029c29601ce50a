//! Which KVM interface harvests the dirty log: the preference a VMM states and
//! the backend chosen from the kernel's capabilities.

use std::fmt;

use kvmkit_core::{
    Capability, DirtyGfn, DirtyLogArch, Vm, MANUAL_PROTECT_ENABLE, MANUAL_PROTECT_INITIALLY_SET,
};

use crate::{Error, Result};

/// Bytes of one dirty-ring entry (`struct kvm_dirty_gfn`).
///
/// ```
/// assert_eq!(kvmkit_dirty_log::RING_ENTRY_BYTES, 16);
/// ```
pub const RING_ENTRY_BYTES: u32 = 16;
const _: () = assert!(std::mem::size_of::<DirtyGfn>() == RING_ENTRY_BYTES as usize);

/// The smallest ring KVM accepts: one host page (it also wants room for its
/// reserved entries, which only the kernel knows).
///
/// ```
/// assert_eq!(kvmkit_dirty_log::MIN_RING_BYTES, 4096);
/// ```
pub const MIN_RING_BYTES: u32 = 4096;

/// The ring size [`Preference::auto`] asks for: 4096 entries (64 KiB) per
/// vCPU, clamped to what the kernel allows.
///
/// ```
/// assert_eq!(kvmkit_dirty_log::DEFAULT_RING_BYTES, 64 * 1024);
/// ```
pub const DEFAULT_RING_BYTES: u32 = 4096 * RING_ENTRY_BYTES;

/// Which backend a VMM wants.
///
/// ```
/// use kvmkit_dirty_log::{Preference, DEFAULT_RING_BYTES};
/// assert_eq!(Preference::default(), Preference::Auto { ring_bytes: DEFAULT_RING_BYTES });
/// assert_eq!(Preference::auto(), Preference::default());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Preference {
    /// The best the kernel offers: the dirty ring (the `ACQ_REL` variant
    /// where offered) with rings of `ring_bytes` (clamped to the kernel's
    /// maximum), else manual protect, else plain `KVM_GET_DIRTY_LOG`.
    Auto {
        /// Bytes per vCPU ring if the ring is chosen.
        ring_bytes: u32,
    },
    /// `KVM_GET_DIRTY_LOG` alone: it clears and write-protects in one call.
    GetLog,
    /// `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`: `KVM_GET_DIRTY_LOG`, then
    /// `KVM_CLEAR_DIRTY_LOG` of exactly the pages returned.
    ManualProtect,
    /// `KVM_CAP_DIRTY_LOG_RING[_ACQ_REL]` with rings of `bytes` per vCPU (a
    /// power of two of at least [`MIN_RING_BYTES`]).
    Ring {
        /// Bytes per vCPU ring.
        bytes: u32,
    },
}

impl Preference {
    /// [`Preference::Auto`] with [`DEFAULT_RING_BYTES`].
    ///
    /// ```
    /// use kvmkit_dirty_log::Preference;
    /// assert!(matches!(Preference::auto(), Preference::Auto { ring_bytes: 65536 }));
    /// ```
    pub const fn auto() -> Self {
        Preference::Auto {
            ring_bytes: DEFAULT_RING_BYTES,
        }
    }
}

impl Default for Preference {
    fn default() -> Self {
        Preference::auto()
    }
}

/// The backend a [`crate::DirtyTracker`] uses, as chosen from its
/// [`Preference`] and the kernel's capabilities.
///
/// ```
/// use kvmkit_dirty_log::Backend;
/// let ring = Backend::Ring { acq_rel: true, entries: 65536 };
/// assert_eq!(ring.to_string(), "dirty-ring (acq-rel, 65536 entries)");
/// assert_eq!(ring.ring_bytes(), Some(1 << 20));
/// assert_eq!(Backend::ManualProtect { initially_set: true }.to_string(),
///            "manual-protect (initially-set)");
/// assert_eq!(Backend::GetLog.to_string(), "get-dirty-log");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// Plain `KVM_GET_DIRTY_LOG`, one ioctl per slot.
    GetLog,
    /// `KVM_GET_DIRTY_LOG` + `KVM_CLEAR_DIRTY_LOG` (manual protect).
    ManualProtect {
        /// `KVM_DIRTY_LOG_INITIALLY_SET`: turning logging on costs almost
        /// nothing and the first harvest reports every page of the slot.
        initially_set: bool,
    },
    /// Per-vCPU dirty rings.
    Ring {
        /// Enabled as `KVM_CAP_DIRTY_LOG_RING_ACQ_REL` (else
        /// `KVM_CAP_DIRTY_LOG_RING`).
        acq_rel: bool,
        /// Entries per vCPU ring.
        entries: u32,
    },
}

impl Backend {
    /// Bytes per vCPU ring, for the ring backend.
    ///
    /// ```
    /// assert_eq!(kvmkit_dirty_log::Backend::GetLog.ring_bytes(), None);
    /// ```
    pub fn ring_bytes(&self) -> Option<u32> {
        match *self {
            Backend::Ring { entries, .. } => Some(entries * RING_ENTRY_BYTES),
            _ => None,
        }
    }

    /// True for the ring backend: vCPUs must be attached and full rings
    /// harvested (see [`crate::DirtyTracker::ring_full_hook`]).
    ///
    /// ```
    /// use kvmkit_dirty_log::Backend;
    /// assert!(Backend::Ring { acq_rel: false, entries: 256 }.is_ring());
    /// assert!(!Backend::GetLog.is_ring());
    /// ```
    pub fn is_ring(&self) -> bool {
        matches!(self, Backend::Ring { .. })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Backend::GetLog => f.write_str("get-dirty-log"),
            Backend::ManualProtect { initially_set } => {
                f.write_str("manual-protect")?;
                if initially_set {
                    f.write_str(" (initially-set)")?;
                }
                Ok(())
            }
            Backend::Ring { acq_rel, entries } => {
                let kind = if acq_rel { "acq-rel" } else { "plain" };
                write!(f, "dirty-ring ({kind}, {entries} entries)")
            }
        }
    }
}

/// What the kernel reports for the dirty-log capabilities
/// (`KVM_CHECK_EXTENSION` values; 0 when absent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Caps {
    /// `KVM_CAP_DIRTY_LOG_RING_ACQ_REL`: the largest ring in bytes.
    pub ring_acq_rel: i32,
    /// `KVM_CAP_DIRTY_LOG_RING`: the largest ring in bytes.
    pub ring: i32,
    /// `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`: the supported flags.
    pub manual: i32,
}

impl Caps {
    /// The VM's capabilities; the ring counts as absent where the arch has
    /// no `KVM_DIRTY_LOG_PAGE_OFFSET` to map it from.
    pub(crate) fn probe<A: DirtyLogArch>(vm: &Vm<A>) -> Self {
        let ring = |cap| {
            if A::DIRTY_RING_PAGE_OFFSET.is_some() {
                vm.check_extension(cap)
            } else {
                0
            }
        };
        Caps {
            ring_acq_rel: ring(Capability::DIRTY_LOG_RING_ACQ_REL),
            ring: ring(Capability::DIRTY_LOG_RING),
            manual: vm.check_extension(Capability::MANUAL_DIRTY_LOG_PROTECT2),
        }
    }
}

/// A backend and the `KVM_ENABLE_CAP` that turns it on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub backend: Backend,
    /// The capability to enable and its first argument, if any.
    pub enable: Option<(Capability, u64)>,
}

/// Checks a requested ring size against KVM's rules (a power of two of at
/// least one page, at most the capability's maximum).
fn check_ring_bytes(bytes: u32, max: i32) -> Result<u32> {
    let max = u32::try_from(max).unwrap_or(0);
    if bytes.is_power_of_two() && (MIN_RING_BYTES..=max).contains(&bytes) {
        Ok(bytes)
    } else {
        Err(Error::RingSize { bytes, max })
    }
}

/// The ring capability to use, ACQ_REL first, with its maximum size.
fn ring_cap(caps: Caps) -> Option<(Capability, bool, i32)> {
    if caps.ring_acq_rel > 0 {
        Some((Capability::DIRTY_LOG_RING_ACQ_REL, true, caps.ring_acq_rel))
    } else if caps.ring > 0 {
        Some((Capability::DIRTY_LOG_RING, false, caps.ring))
    } else {
        None
    }
}

fn ring_plan(cap: Capability, acq_rel: bool, bytes: u32) -> Plan {
    Plan {
        backend: Backend::Ring {
            acq_rel,
            entries: bytes / RING_ENTRY_BYTES,
        },
        enable: Some((cap, u64::from(bytes))),
    }
}

fn manual_plan(flags: i32) -> Plan {
    let supported = u64::try_from(flags).unwrap_or(0);
    let wanted = MANUAL_PROTECT_ENABLE | MANUAL_PROTECT_INITIALLY_SET;
    Plan {
        backend: Backend::ManualProtect {
            initially_set: supported & MANUAL_PROTECT_INITIALLY_SET != 0,
        },
        enable: Some((
            Capability::MANUAL_DIRTY_LOG_PROTECT2,
            wanted & supported | MANUAL_PROTECT_ENABLE,
        )),
    }
}

/// Chooses the backend for `pref` given `caps`.
pub(crate) fn choose(pref: Preference, caps: Caps) -> Result<Plan> {
    let missing = |backend: &'static str, capability: &'static str| Error::Unsupported {
        backend,
        capability,
    };
    match pref {
        Preference::GetLog => Ok(Plan {
            backend: Backend::GetLog,
            enable: None,
        }),
        Preference::ManualProtect if caps.manual > 0 => Ok(manual_plan(caps.manual)),
        Preference::ManualProtect => Err(missing(
            "manual-protect",
            Capability::MANUAL_DIRTY_LOG_PROTECT2.name(),
        )),
        Preference::Ring { bytes } => {
            let (cap, acq_rel, max) = ring_cap(caps).ok_or(missing(
                "dirty-ring",
                "KVM_CAP_DIRTY_LOG_RING_ACQ_REL or KVM_CAP_DIRTY_LOG_RING",
            ))?;
            Ok(ring_plan(cap, acq_rel, check_ring_bytes(bytes, max)?))
        }
        Preference::Auto { ring_bytes } => {
            if let Some((cap, acq_rel, max)) = ring_cap(caps) {
                // Clamp a too-large request to what the kernel allows; a
                // malformed one is still the caller's error.
                let clamped = u32::try_from(max).map_or(ring_bytes, |m| ring_bytes.min(m));
                return Ok(ring_plan(cap, acq_rel, check_ring_bytes(clamped, max)?));
            }
            if caps.manual > 0 {
                return Ok(manual_plan(caps.manual));
            }
            Ok(Plan {
                backend: Backend::GetLog,
                enable: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Caps = Caps {
        ring_acq_rel: 1 << 20,
        ring: 1 << 20,
        manual: 3,
    };

    #[test]
    fn default_preference_is_auto() {
        assert_eq!(Preference::default(), Preference::auto());
        assert_eq!(
            choose(Preference::default(), ALL).unwrap(),
            choose(Preference::auto(), ALL).unwrap()
        );
    }

    #[test]
    fn auto_prefers_the_acq_rel_ring() {
        let p = choose(Preference::auto(), ALL).unwrap();
        assert_eq!(
            p.backend,
            Backend::Ring {
                acq_rel: true,
                entries: 4096
            }
        );
        assert_eq!(p.enable, Some((Capability::DIRTY_LOG_RING_ACQ_REL, 65536)));
        // Only the plain ring.
        let caps = Caps {
            ring_acq_rel: 0,
            ..ALL
        };
        let p = choose(Preference::auto(), caps).unwrap();
        assert_eq!(p.backend.to_string(), "dirty-ring (plain, 4096 entries)");
        assert_eq!(p.enable, Some((Capability::DIRTY_LOG_RING, 65536)));
    }

    #[test]
    fn auto_clamps_the_ring_and_falls_back() {
        let p = choose(
            Preference::Auto {
                ring_bytes: 1 << 24,
            },
            ALL,
        )
        .unwrap();
        assert_eq!(p.backend.ring_bytes(), Some(1 << 20));
        let p = choose(Preference::Auto { ring_bytes: 1000 }, ALL);
        assert!(matches!(p, Err(Error::RingSize { bytes: 1000, .. })));
        let no_ring = Caps {
            ring_acq_rel: 0,
            ring: 0,
            manual: 3,
        };
        let p = choose(Preference::auto(), no_ring).unwrap();
        assert_eq!(
            p.backend,
            Backend::ManualProtect {
                initially_set: true
            }
        );
        assert_eq!(p.enable, Some((Capability::MANUAL_DIRTY_LOG_PROTECT2, 3)));
        let p = choose(Preference::auto(), Caps::default()).unwrap();
        assert_eq!((p.backend, p.enable), (Backend::GetLog, None));
    }

    #[test]
    fn manual_protect_without_initially_set() {
        let caps = Caps {
            manual: 1,
            ..Caps::default()
        };
        let p = choose(Preference::ManualProtect, caps).unwrap();
        assert_eq!(
            p.backend,
            Backend::ManualProtect {
                initially_set: false
            }
        );
        assert_eq!(p.backend.to_string(), "manual-protect");
        assert_eq!(p.enable, Some((Capability::MANUAL_DIRTY_LOG_PROTECT2, 1)));
        assert!(!p.backend.is_ring());
        assert_eq!(p.backend.ring_bytes(), None);
    }

    #[test]
    fn forced_backends_name_the_missing_capability() {
        let e = choose(Preference::ManualProtect, Caps::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the manual-protect dirty-log backend needs KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, which this kernel does not offer"
        );
        let e = choose(Preference::Ring { bytes: 4096 }, Caps::default()).unwrap_err();
        assert!(e
            .to_string()
            .contains("needs KVM_CAP_DIRTY_LOG_RING_ACQ_REL or KVM_CAP_DIRTY_LOG_RING"));
        // GET_DIRTY_LOG is part of the base API.
        assert_eq!(
            choose(Preference::GetLog, Caps::default()).unwrap().backend,
            Backend::GetLog
        );
    }

    #[test]
    fn forced_ring_sizes_are_checked() {
        for bad in [0, 2048, 4097, 3 << 12, 1 << 21] {
            let e = choose(Preference::Ring { bytes: bad }, ALL).unwrap_err();
            assert!(matches!(e, Error::RingSize { bytes, max } if bytes == bad && max == 1 << 20));
        }
        let p = choose(Preference::Ring { bytes: 4096 }, ALL).unwrap();
        assert_eq!(p.backend.to_string(), "dirty-ring (acq-rel, 256 entries)");
        let e = choose(Preference::Ring { bytes: 1 << 21 }, ALL).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a dirty ring of 2097152 bytes per vCPU: it must be a power of two from 4096 to 1048576 bytes"
        );
    }
}
