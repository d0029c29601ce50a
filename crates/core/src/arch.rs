//! The `Arch` contract every architecture crate implements in full.

use crate::{Capability, DecodeError, UserMemoryRegion, VcpuExit, VcpuId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;

/// How `KVM_RUN` returned.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RunOutcome {
    /// The guest exited: the reason is in the `kvm_run` area.
    Exited,
    /// `KVM_RUN` failed with `EINTR` (a signal, or `immediate_exit` set) or
    /// `EAGAIN`: nothing to decode, the caller may re-enter.
    Interrupted,
}

/// What the arch hook did with an arch-only exit.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ArchExitOutcome {
    /// Handled (for example a port I/O access a device answered): re-enter.
    Handled,
    /// No device claimed the access; reads were answered with all ones.
    /// The guest continues; the run loop reports it.
    Unhandled {
        /// The address space, e.g. `"pio"` or `"hcall"`.
        space: &'static str,
        /// The address (port number, hypercall number…).
        addr: u64,
        /// Whether the guest was writing.
        write: bool,
    },
    /// The guest asked the platform for a power-off, reset… through an
    /// arch-only path (s390x re-IPL, a PowerPC RTAS call): ends this vCPU
    /// with a typed `SystemEvent`, as `KVM_EXIT_SYSTEM_EVENT` would.
    SystemEvent {
        /// What the guest asked for.
        kind: crate::SystemEventKind,
    },
    /// The exit ends this vCPU for a reason no typed outcome covers.
    Stop {
        /// Why, for the owner.
        reason: String,
    },
}

/// One architecture's implementation of the KVM interface.
///
/// Shared code (memory slots, dirty log, the run loop, the VMM) is generic over
/// `A: Arch` and never names an architecture. Every item is required: there are
/// no `cfg`s on the contract and no default that pretends. An implementation is
/// a marker type (`X86_64`, `Ppc64`, `S390x`); its associated types are the
/// architecture's register sets and exits, its functions the ioctls with the
/// architecture's own encoding and the hooks for what only it has.
///
/// The kernel objects are the backend handles [`Arch::System`] (`/dev/kvm`),
/// [`Arch::VmFd`] and [`Arch::VcpuFd`]; users hold them through the generic
/// [`crate::Kvm`], [`crate::Vm`] and [`crate::Vcpu`].
pub trait Arch: Debug + Sized + Send + Sync + 'static {
    /// The architecture's name as Linux spells it (`x86_64`, `powerpc`, `s390x`).
    const NAME: &'static str;

    /// The backend's error; its messages name the ioctl that failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// An open `/dev/kvm`.
    type System: Debug + Send + Sync;
    /// A VM file descriptor.
    type VmFd: Debug + Send + Sync;
    /// A vCPU file descriptor with its mapped `kvm_run` area.
    type VcpuFd: Debug + Send;

    /// General-purpose registers (`KVM_GET_REGS`).
    type Regs: Clone + Debug + Default + Send + Sync;
    /// Special registers (`KVM_GET_SREGS`).
    type Sregs: Clone + Debug + Default + Send + Sync;
    /// Floating-point state (`KVM_GET_FPU`).
    type Fpu: Clone + Debug + Default + Send + Sync;
    /// The argument of `KVM_SET_GUEST_DEBUG`.
    type GuestDebug: Clone + Debug + Default + Send + Sync;
    /// Everything needed to save and restore a vCPU; serialisable, to be
    /// written into a snapshot or sent in a migration stream.
    type VcpuState: Clone + Debug + Send + Sync + Serialize + DeserializeOwned;

    /// VM-wide set-up parameters (x86: TSS and identity-map addresses, irqchip).
    type VmConfig: Clone + Debug + Default + Send + Sync;
    /// Per-vCPU initialisation parameters (x86: CPUID policy; powerpc: PVR).
    type VcpuConfig: Clone + Debug + Default + Send + Sync;
    /// Where and how a vCPU starts executing a guest.
    type BootSetup: Clone + Debug + Send + Sync;

    /// An exit only this architecture has (x86: port I/O).
    type ArchExit<'a>: Debug
    where
        Self: 'a;
    /// The devices arch-only exits are dispatched to (x86: the port I/O bus).
    type ArchIo: Send + Sync;

    /// Opens `/dev/kvm` and checks the API version.
    fn open_system() -> Result<Self::System, Self::Error>;
    /// Wraps `KVM_CHECK_EXTENSION` on `/dev/kvm`; 0 means absent.
    fn check_extension(sys: &Self::System, cap: Capability) -> i32;
    /// The size of the `kvm_run` mapping (`KVM_GET_VCPU_MMAP_SIZE`).
    fn vcpu_mmap_size(sys: &Self::System) -> Result<usize, Self::Error>;
    /// Wraps `KVM_CREATE_VM`; `config` gives the machine type argument where
    /// the architecture has one (PowerPC HV or PR, s390x user-controlled).
    fn create_vm(sys: &Self::System, config: &Self::VmConfig) -> Result<Self::VmFd, Self::Error>;
    /// Wraps `KVM_CHECK_EXTENSION` on a VM fd; 0 means absent.
    fn vm_check_extension(vm: &Self::VmFd, cap: Capability) -> i32;
    /// VM-wide set-up done once after creation.
    fn init_vm(vm: &Self::VmFd, config: &Self::VmConfig) -> Result<(), Self::Error>;
    /// Wraps `KVM_SET_USER_MEMORY_REGION`.
    ///
    /// # Safety
    ///
    /// `region.userspace_addr .. + memory_size` must be a mapping that stays
    /// valid, and is not otherwise aliased in ways the caller relies on, for as
    /// long as the slot exists: the guest reads and writes it.
    unsafe fn set_user_memory_region(
        vm: &Self::VmFd,
        region: &UserMemoryRegion,
    ) -> Result<(), Self::Error>;
    /// Wraps `KVM_CREATE_VCPU` and maps its `kvm_run` area.
    fn create_vcpu(
        sys: &Self::System,
        vm: &Self::VmFd,
        id: VcpuId,
    ) -> Result<Self::VcpuFd, Self::Error>;
    /// Per-vCPU initialisation (x86: CPUID with this vCPU's APIC id, MSRs, LAPIC).
    fn init_vcpu(
        sys: &Self::System,
        vm: &Self::VmFd,
        vcpu: &Self::VcpuFd,
        id: VcpuId,
        config: &Self::VcpuConfig,
    ) -> Result<(), Self::Error>;

    /// Wraps `KVM_GET_REGS`.
    fn get_regs(vcpu: &Self::VcpuFd) -> Result<Self::Regs, Self::Error>;
    /// Wraps `KVM_SET_REGS`.
    fn set_regs(vcpu: &Self::VcpuFd, regs: &Self::Regs) -> Result<(), Self::Error>;
    /// Wraps `KVM_GET_SREGS`.
    fn get_sregs(vcpu: &Self::VcpuFd) -> Result<Self::Sregs, Self::Error>;
    /// Wraps `KVM_SET_SREGS`.
    fn set_sregs(vcpu: &Self::VcpuFd, sregs: &Self::Sregs) -> Result<(), Self::Error>;
    /// Wraps `KVM_GET_FPU`.
    fn get_fpu(vcpu: &Self::VcpuFd) -> Result<Self::Fpu, Self::Error>;
    /// Wraps `KVM_SET_FPU`.
    fn set_fpu(vcpu: &Self::VcpuFd, fpu: &Self::Fpu) -> Result<(), Self::Error>;
    /// The guest's program counter (x86 RIP, PowerPC NIP, s390x PSW address),
    /// for messages about where a guest stopped.
    fn program_counter(vcpu: &Self::VcpuFd) -> Result<u64, Self::Error>;
    /// Wraps `KVM_GET_ONE_REG`; returns the register's size in bytes.
    fn get_one_reg(vcpu: &Self::VcpuFd, id: u64, data: &mut [u8]) -> Result<usize, Self::Error>;
    /// Wraps `KVM_SET_ONE_REG`; returns the register's size in bytes.
    fn set_one_reg(vcpu: &Self::VcpuFd, id: u64, data: &[u8]) -> Result<usize, Self::Error>;
    /// Wraps `KVM_SET_GUEST_DEBUG`.
    fn set_guest_debug(vcpu: &Self::VcpuFd, debug: &Self::GuestDebug) -> Result<(), Self::Error>;
    /// Reads all of a vCPU's state, for snapshots and migration. Call it
    /// while the vCPU is out of `KVM_RUN`, from the thread that runs it. An
    /// implementation whose kernel finishes an exit's I/O only on the next
    /// `KVM_RUN` (x86, PowerPC) first finishes it (`KVM_RUN` with
    /// `immediate_exit` set), so that the state is the guest's own.
    fn save_vcpu_state(vcpu: &Self::VcpuFd) -> Result<Self::VcpuState, Self::Error>;
    /// Writes back state saved by [`Arch::save_vcpu_state`]; the VM-wide
    /// state ([`crate::SnapshotArch::restore_vm_state`]) goes back first.
    fn restore_vcpu_state(vcpu: &Self::VcpuFd, state: &Self::VcpuState) -> Result<(), Self::Error>;
    /// Writes the boot structures into guest memory and sets the registers so
    /// that the vCPU starts as `boot` says.
    fn setup_boot<M: vm_memory::GuestMemory>(
        vcpu: &Self::VcpuFd,
        mem: &M,
        boot: &Self::BootSetup,
    ) -> Result<(), Self::Error>;

    /// The mapped `kvm_run` area, `vcpu_mmap_size` bytes.
    fn kvm_run(vcpu: &mut Self::VcpuFd) -> &mut [u8];
    /// Wraps `KVM_RUN`.
    fn run(vcpu: &mut Self::VcpuFd) -> Result<RunOutcome, Self::Error>;
    /// Decodes the exit the kernel left in a `kvm_run` area laid out for this
    /// architecture. Pure: it reads (and for reads, lends out) the buffer only.
    fn decode_exit(run: &mut [u8]) -> Result<VcpuExit<'_, Self>, DecodeError>;
    /// Handles an arch-only exit (x86: dispatches port I/O to `io`).
    fn handle_arch_exit(io: &Self::ArchIo, exit: Self::ArchExit<'_>) -> ArchExitOutcome;
}
