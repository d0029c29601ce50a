//! Errors of the PowerPC backend; each names the ioctl or step that failed.

use std::io;

/// Errors of the PowerPC backend.
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
        /// The ioctl, e.g. `KVM_SET_SREGS` or `KVM_ENABLE_CAP(KVM_CAP_PPC_PAPR)`.
        ioctl: &'static str,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// `KVM_ENABLE_CAP` of a capability failed.
    #[error("KVM_ENABLE_CAP({cap}) failed")]
    EnableCap {
        /// The capability, e.g. `KVM_CAP_DIRTY_LOG_RING`.
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
    /// Mapping a vCPU's `kvm_run` area failed.
    #[error("cannot map the kvm_run area of vCPU {vcpu} ({len} bytes)")]
    MapKvmRun {
        /// The vCPU id.
        vcpu: u32,
        /// The mapping length.
        len: usize,
        /// The cause.
        #[source]
        source: io::Error,
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
    /// The VM was created with another type than its configuration asks.
    #[error("the VM was created as {created} but its configuration asks for {wanted}")]
    VmTypeMismatch {
        /// The type `KVM_CREATE_VM` was given.
        created: &'static str,
        /// The type the configuration asks for.
        wanted: &'static str,
    },
    /// An RTAS service name does not fit `kvm_rtas_token_args.name`.
    #[error("RTAS service name {0:?} is longer than 119 bytes or contains NUL")]
    RtasName(String),
    /// The interrupt controller configuration is invalid.
    #[error("invalid interrupt controller configuration: {0}")]
    IrqchipConfig(String),
    /// Writing boot data into guest memory failed.
    #[error("cannot write the {what} at guest address {gpa:#x}")]
    WriteBootData {
        /// What was being written, e.g. `device tree`.
        what: &'static str,
        /// The guest physical address.
        gpa: u64,
        /// The cause.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// The device tree configuration cannot be described.
    #[error("invalid device tree configuration: {0}")]
    FdtConfig(String),
    /// Building the device tree failed.
    #[error("cannot build the pseries device tree")]
    Fdt(#[source] vm_fdt::Error),
    /// Loading an ELF kernel failed.
    #[error("cannot load the ELF kernel")]
    Elf(#[from] crate::ElfError),
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
    /// The VM holds state in the kernel that this crate cannot save, so a
    /// snapshot of it would not restore.
    #[error("cannot save the VM state: {what} is not carried by this crate")]
    StateNotCarried {
        /// What, e.g. `the in-kernel XIVE`.
        what: &'static str,
    },
    /// Finishing the last exit (`KVM_RUN` with `immediate_exit`) led to
    /// another exit, which must be handled before the state is read or
    /// written.
    #[error("the vCPU has an unfinished exit (reason {reason}): run it to completion before saving or restoring its state")]
    PendingExit {
        /// The `KVM_EXIT_*` reason now in `kvm_run`.
        reason: u32,
    },
    /// The guest hash page table stream, or a saved table, is malformed.
    #[error("invalid guest hash page table")]
    HashPageTable(#[source] crate::HptError),
    /// Reading or writing the hash page table stream failed.
    #[error("cannot {op} the guest hash page table stream")]
    HptStream {
        /// `read` or `write`.
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn ioctl(ioctl: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Ioctl { ioctl, source }
    }

    /// The errno of a failed ioctl, if this is one.
    ///
    /// ```
    /// use kvmkit_arch_powerpc::Error;
    /// let e = Error::Ioctl { ioctl: "KVM_RUN", source: std::io::Error::from_raw_os_error(4) };
    /// assert_eq!(e.errno(), Some(4));
    /// assert_eq!(e.to_string(), "KVM_RUN failed");
    /// ```
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Ioctl { source, .. }
            | Error::EnableCap { source, .. }
            | Error::HptStream { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
