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
    /// A dirty-log call was refused before the kernel was called: a
    /// bitmap shorter than what the kernel would access, or a slot not set
    /// through this VM.
    #[error(transparent)]
    DirtyBitmap(#[from] kvmkit_core::DirtyBitmapError),
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
    /// `KVM_SET_MSRS` stopped at an MSR the vCPU refused.
    #[error("KVM_SET_MSRS refused MSR {index:#x} = {value:#x} (wrote {done} of {wanted})")]
    SetMsr {
        /// The MSR index.
        index: u32,
        /// The value it refused.
        value: u64,
        /// MSRs written before it.
        done: usize,
        /// MSRs given.
        wanted: usize,
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
    /// The saved state needs something this host lacks; nothing was written.
    #[error("restore refused, nothing was written: {0}")]
    RestoreRefused(crate::ProfileMismatch),
    /// The saved state holds a piece this VM or vCPU has no place for;
    /// nothing was written.
    #[error("restore refused, nothing was written: the state holds the {piece} but {detail}")]
    StateDoesNotFit {
        /// The piece, e.g. `in-kernel PIC and IOAPIC`.
        piece: crate::StatePiece,
        /// What the target has instead.
        detail: String,
    },
    /// The saved XSAVE region is shorter than the 4096 bytes KVM always writes.
    #[error("the saved XSAVE region has {bytes} bytes, fewer than the 4096 of KVM_GET_XSAVE")]
    XsaveRegion {
        /// Its length in bytes.
        bytes: usize,
    },
    /// Finishing the last exit's I/O (`KVM_RUN` with `immediate_exit`) led
    /// to another exit, which must be handled before the state is read or
    /// written.
    #[error("the vCPU has an unfinished exit (reason {reason}): run it to completion before saving or restoring its state")]
    PendingExit {
        /// The `KVM_EXIT_*` reason now in `kvm_run`.
        reason: u32,
    },
    /// `ClockRestore::AddElapsedRealtime` needs the host real time saved with the clock.
    #[error("cannot advance the VM clock by the elapsed real time: the saved clock has no KVM_CLOCK_REALTIME timestamp (flags {flags:#x})")]
    ClockWithoutRealtime {
        /// The saved `kvm_clock_data.flags`.
        flags: u32,
    },
}

impl Error {
    pub(crate) fn ioctl(ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
        move |source| Error::Ioctl { ioctl, source }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
