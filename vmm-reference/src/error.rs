//! Errors of the reference VMM; each message is one line naming the thing involved.

use std::path::PathBuf;

/// Errors building or running the VM (not guest behaviour: see `VmmExit`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Restoring a snapshot failed (unreadable, damaged, or made for another
    /// machine or host).
    #[error("{0}")]
    Restore(String),
    /// An incoming migration failed or was refused.
    #[error("{0}")]
    Incoming(String),
    /// `--memory 0`.
    #[error("--memory must be at least 1 MiB")]
    MemoryZero,
    /// More memory than the host has.
    #[error("--memory {mib} MiB is more than this host's {host_mib} MiB of RAM")]
    MemoryTooLarge {
        /// Requested.
        mib: u64,
        /// The host's total RAM.
        host_mib: u64,
    },
    /// Too little memory for the guest's boot structures and kernel.
    #[error("--memory {mib} MiB is too small: at least {min_mib} MiB are needed")]
    MemoryTooSmall {
        /// Requested.
        mib: u64,
        /// The minimum.
        min_mib: u64,
    },
    /// `--vcpus 0`.
    #[error("--vcpus must be at least 1")]
    VcpusZero,
    /// More vCPUs than KVM (or the boot tables) allow.
    #[error("--vcpus {vcpus} is more than the {max} this host's KVM allows")]
    VcpusTooMany {
        /// Requested.
        vcpus: u32,
        /// The limit.
        max: u32,
    },
    /// Reading a file given on the command line failed.
    #[error("cannot read {what} {path}: {source}")]
    ReadFile {
        /// `kernel` or `initramfs`.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The kernel file is neither a bzImage nor an x86_64 ELF.
    #[error("kernel {path} is not a bzImage or an x86_64 ELF vmlinux ({detail})")]
    KernelFormat {
        /// The path.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// linux-loader refused the kernel.
    #[error("cannot load kernel {path}: {detail}")]
    KernelLoad {
        /// The path.
        path: PathBuf,
        /// linux-loader's error.
        detail: String,
    },
    /// The initramfs is not one.
    #[error("initramfs {path} is invalid: {detail}")]
    Initramfs {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The kernel, initramfs and boot data do not fit in guest memory.
    #[error("{what} of {len} bytes does not fit in guest memory below {limit:#x}")]
    DoesNotFit {
        /// What.
        what: &'static str,
        /// Its size.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The command line is too long or has a NUL.
    #[error("invalid kernel command line: {0}")]
    Cmdline(String),
    /// Opening the serial output file failed.
    #[error("cannot open serial output {path}: {source}")]
    SerialFile {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A KVM operation failed.
    #[error(transparent)]
    Kvm(#[from] kvmkit_core::Error),
    /// A memory-slot operation failed.
    #[error(transparent)]
    Memory(#[from] kvmkit_memory::Error),
    /// An x86 set-up step failed.
    #[error(transparent)]
    Arch(#[from] kvmkit_arch_x86_64::Error),
    /// Starting the vCPU threads failed.
    #[error(transparent)]
    RunLoop(#[from] kvmkit_runloop::Error),
    /// Writing boot data into guest memory failed.
    #[error("cannot write {what} into guest memory: {detail}")]
    BootData {
        /// What.
        what: &'static str,
        /// The cause.
        detail: String,
    },
    /// Registering a device on a bus failed.
    #[error("cannot register {device} at {base:#x}: {detail}")]
    Device {
        /// The device.
        device: &'static str,
        /// Its base address or port.
        base: u64,
        /// The cause.
        detail: String,
    },
    /// Too many virtio devices for the interrupt lines set aside for them.
    #[error("{count} virtio devices given; at most {max} fit")]
    TooManyVirtioDevices {
        /// Requested.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The split irqchip could not be set up.
    #[error(transparent)]
    Irqchip(#[from] kvmkit_irq::Error),
    /// A virtio device could not be created (bad disk image, tap…).
    #[error(transparent)]
    Virtio(#[from] kvmkit_virtio::Error),
    /// The dirty log asked for (`--dirty-log ring`) could not be set up.
    #[error(transparent)]
    DirtyLog(#[from] kvmkit_dirty_log::Error),
    /// The QMP control socket could not be set up.
    #[error(transparent)]
    Qmp(#[from] crate::qmp::Error),
    /// Creating an eventfd or irqfd failed.
    #[error("cannot set up the interrupt of {device}: {source}")]
    Interrupt {
        /// The device.
        device: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
