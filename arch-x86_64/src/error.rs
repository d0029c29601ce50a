//! Errors of the x86_64 backend; each names the ioctl or step that failed.

/// Errors of the x86_64 backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening `/dev/kvm` failed.
    #[error("cannot open /dev/kvm")]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// The kernel speaks another KVM API version.
    #[error("KVM API version {0} is not the supported version 12")]
    ApiVersion(i32),
    /// An ioctl failed.
    #[error("{ioctl} failed")]
    Ioctl {
        /// The ioctl, e.g. `KVM_SET_SREGS`.
        ioctl: &'static str,
        /// The errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_ENABLE_CAP` for a capability failed.
    #[error("KVM_ENABLE_CAP({cap}) failed")]
    EnableCap {
        /// The capability, e.g. `KVM_CAP_DIRTY_LOG_RING`.
        cap: &'static str,
        /// The errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A vCPU ioctl returned fewer entries than it was given.
    #[error("{ioctl} handled {done} of {wanted} entries")]
    Partial {
        /// The ioctl, e.g. `KVM_SET_MSRS`.
        ioctl: &'static str,
        /// Entries handled.
        done: usize,
        /// Entries given.
        wanted: usize,
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
    /// Writing a boot structure into guest memory failed.
    #[error("cannot write the {what} at guest address {gpa:#x}")]
    WriteBootData {
        /// What was being written, e.g. `page tables`.
        what: &'static str,
        /// The guest physical address.
        gpa: u64,
        /// The cause.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// A FAM struct (CPUID, MSR list) could not be built.
    #[error("cannot build the {what} list: {detail}")]
    FamList {
        /// Which list.
        what: &'static str,
        /// The cause.
        detail: String,
    },
}

impl Error {
    pub(crate) fn ioctl(ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
        move |source| Error::Ioctl { ioctl, source }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
