//! The error type of the portable layer.

/// A boxed error from an architecture backend, kept as the source of [`Error::Arch`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the portable KVM layer.
///
/// Failures of the kernel calls themselves come from the architecture backend
/// (whose error names the ioctl) and are wrapped as [`Error::Arch`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A capability the caller requires is not offered by this kernel.
    #[error("KVM capability {name} ({number}) is not supported by this kernel")]
    MissingCapability {
        /// The kernel's macro name, e.g. `KVM_CAP_IRQFD`.
        name: &'static str,
        /// The capability number.
        number: u32,
    },
    /// A vCPU id beyond what the kernel allows for this VM.
    #[error("vCPU id {id} is out of range: this kernel allows ids below {max}")]
    VcpuIdOutOfRange {
        /// The requested id.
        id: u32,
        /// The kernel's limit (`KVM_CAP_MAX_VCPU_ID`, or `KVM_CAP_MAX_VCPUS`).
        max: u32,
    },
    /// The vCPU with this id was already created.
    #[error("vCPU {id} already exists in this VM")]
    VcpuExists {
        /// The requested id.
        id: u32,
    },
    /// The `kvm_run` area held an exit the decoder could not make sense of.
    #[error("cannot decode the exit of vCPU {vcpu}")]
    DecodeExit {
        /// The vCPU whose exit failed to decode.
        vcpu: u32,
        /// What was wrong with it.
        #[source]
        source: DecodeError,
    },
    /// Installing the vCPU kick signal handler failed.
    #[error("cannot install the handler for the vCPU kick signal {signal}")]
    KickSignal {
        /// The signal number.
        signal: i32,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A saved state needs something this host's KVM does not offer (its ABI
    /// profile does not fit this host's); nothing was restored. The source
    /// is the architecture's `SnapshotArch::ProfileMismatch`, naming the
    /// item and both values.
    #[error("the saved {arch} state cannot be restored on this host")]
    ProfileMismatch {
        /// The architecture, `Arch::NAME`.
        arch: &'static str,
        /// The mismatch (downcast to the arch's `ProfileMismatch`).
        #[source]
        source: BoxError,
    },
    /// An operation of the architecture backend failed; its message names the ioctl.
    #[error(transparent)]
    Arch(BoxError),
}

/// A malformed exit in the `kvm_run` area, as found by an arch decoder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The `kvm_run` buffer is shorter than the exit needs.
    #[error("kvm_run area of {len} bytes is too short: exit reason {reason} needs {needed}")]
    Truncated {
        /// The exit reason being decoded.
        reason: u32,
        /// The buffer length.
        len: usize,
        /// The bytes needed.
        needed: usize,
    },
    /// A length field in the exit is outside what the ABI allows.
    #[error("exit reason {reason}: field {field} has the invalid value {value}")]
    BadField {
        /// The exit reason being decoded.
        reason: u32,
        /// The field name, as in the UAPI header.
        field: &'static str,
        /// The value found.
        value: u64,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an arch backend error.
    pub fn arch<E: std::error::Error + Send + Sync + 'static>(e: E) -> Self {
        Error::Arch(Box::new(e))
    }

    /// Wraps an arch's profile mismatch as [`Error::ProfileMismatch`].
    ///
    /// ```
    /// use kvmkit_core::{Arch, Error};
    /// // In code generic over the architecture, with `A::ProfileMismatch`:
    /// fn refuse<A: Arch>(m: std::io::Error) -> Error {
    ///     Error::profile_mismatch::<A, _>(m)
    /// }
    /// ```
    pub fn profile_mismatch<A: crate::Arch, E: std::error::Error + Send + Sync + 'static>(
        e: E,
    ) -> Self {
        Error::ProfileMismatch {
            arch: A::NAME,
            source: Box::new(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_thing() {
        let e = Error::MissingCapability {
            name: "KVM_CAP_IRQFD",
            number: 32,
        };
        assert_eq!(
            e.to_string(),
            "KVM capability KVM_CAP_IRQFD (32) is not supported by this kernel"
        );
        let e = Error::DecodeExit {
            vcpu: 3,
            source: DecodeError::Truncated {
                reason: 6,
                len: 16,
                needed: 64,
            },
        };
        assert_eq!(e.to_string(), "cannot decode the exit of vCPU 3");
        let src = std::error::Error::source(&e).expect("has a source");
        assert!(src.to_string().contains("needs 64"));
        let e = Error::arch(std::io::Error::other("KVM_RUN failed"));
        assert_eq!(e.to_string(), "KVM_RUN failed");
        let e = Error::ProfileMismatch {
            arch: "s390x",
            source: Box::new(std::io::Error::other("facility 139 missing")),
        };
        assert_eq!(
            e.to_string(),
            "the saved s390x state cannot be restored on this host"
        );
        let src = std::error::Error::source(&e).expect("has a source");
        assert_eq!(src.to_string(), "facility 139 missing");
        assert!(src.downcast_ref::<std::io::Error>().is_some());
    }
}
