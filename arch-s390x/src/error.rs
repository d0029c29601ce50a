//! Errors of the s390x backend; each names the ioctl or step that failed.

use std::io;

/// Errors of the s390x backend.
///
/// ```
/// use kvmkit_arch_s390x::Error;
/// let e = Error::ApiVersion(11);
/// assert_eq!(e.to_string(), "KVM API version 11 is not the supported version 12");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening `/dev/kvm` failed.
    #[error("cannot open /dev/kvm")]
    OpenKvm(#[source] io::Error),
    /// The kernel speaks another KVM API version.
    #[error("KVM API version {0} is not the supported version 12")]
    ApiVersion(i32),
    /// An ioctl failed.
    #[error("{ioctl} failed")]
    Ioctl {
        /// The ioctl, e.g. `KVM_S390_SET_INITIAL_PSW`.
        ioctl: &'static str,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// `KVM_ENABLE_CAP` of a capability failed.
    #[error("KVM_ENABLE_CAP({cap}) failed")]
    EnableCap {
        /// The capability, e.g. `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`.
        cap: &'static str,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// A dirty-log call was refused before the kernel was called: a
    /// bitmap shorter than what the kernel would access, or a slot not set
    /// through this VM.
    #[error(transparent)]
    DirtyBitmap(#[from] kvmkit_core::DirtyBitmapError),
    /// A capability the configuration asks for is missing.
    #[error("KVM capability {name} ({number}) is not supported by this kernel")]
    MissingCapability {
        /// The kernel's macro name.
        name: &'static str,
        /// The capability number.
        number: u32,
    },
    /// Mapping a vCPU's `kvm_run` area failed.
    #[error("cannot map the {len}-byte kvm_run area of vCPU {vcpu}")]
    MapRun {
        /// The vCPU id.
        vcpu: u32,
        /// The mapping length (`KVM_GET_VCPU_MMAP_SIZE`).
        len: usize,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `KVM_GET_VCPU_MMAP_SIZE` is smaller than s390x's `struct kvm_run`.
    #[error("the kvm_run mapping of {len} bytes is smaller than struct kvm_run ({needed} bytes)")]
    RunAreaTooSmall {
        /// The mapping length.
        len: usize,
        /// `sizeof(struct kvm_run)`.
        needed: usize,
    },
    /// A buffer for a register was smaller than the register.
    #[error("register {id:#x} needs {needed} bytes, the buffer has {len}")]
    OneRegBuffer {
        /// The ONE_REG id.
        id: u64,
        /// The register size.
        needed: usize,
        /// The buffer length.
        len: usize,
    },
    /// Reading or writing boot data in guest memory failed.
    #[error("cannot access the {what} at guest address {gpa:#x}")]
    GuestMemory {
        /// What was being accessed, e.g. `kernel image`.
        what: &'static str,
        /// The guest physical address.
        gpa: u64,
        /// The cause.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// A saved state has a format version this build does not read.
    #[error("cannot restore {what} state of format version {found}: this build reads version {supported}")]
    StateVersion {
        /// `vCPU` or `VM`.
        what: &'static str,
        /// The version in the state.
        found: u32,
        /// [`crate::STATE_VERSION`].
        supported: u32,
    },
    /// The saved state holds a piece this VM has no place for; nothing was
    /// written.
    #[error("restore refused, nothing was written: the state holds the {piece} but {detail}")]
    StateDoesNotFit {
        /// The piece.
        piece: crate::StatePiece,
        /// What the target has instead.
        detail: String,
    },
    /// The FLIC holds more pending interruptions than its largest buffer
    /// (`KVM_S390_FLIC_MAX_BUFFER`) takes.
    #[error("the FLIC has more pending floating interruptions than {bytes} bytes hold")]
    FlicTooManyIrqs {
        /// The largest buffer tried.
        bytes: usize,
    },
    /// A boot parameter is outside what the architecture or the image allows.
    #[error("invalid {what}: {value:#x} ({reason})")]
    InvalidBootParameter {
        /// The parameter, e.g. `prefix`.
        what: &'static str,
        /// Its value.
        value: u64,
        /// Why it is refused.
        reason: &'static str,
    },
}

impl Error {
    pub(crate) fn ioctl(ioctl: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Ioctl { ioctl, source }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_operation() {
        let e = Error::ioctl("KVM_S390_INITIAL_RESET")(io::Error::from_raw_os_error(libc::EBUSY));
        assert_eq!(e.to_string(), "KVM_S390_INITIAL_RESET failed");
        assert!(std::error::Error::source(&e).is_some());
        let e = Error::InvalidBootParameter {
            what: "prefix",
            value: 0x1000,
            reason: "not 8 KiB aligned",
        };
        assert_eq!(e.to_string(), "invalid prefix: 0x1000 (not 8 KiB aligned)");
        let e = Error::RunAreaTooSmall {
            len: 1024,
            needed: 2368,
        };
        assert!(e.to_string().contains("2368"));
        assert_eq!(
            Error::ApiVersion(11).to_string(),
            "KVM API version 11 is not the supported version 12"
        );
    }
}
