//! [`SnapshotArch`]: the VM-wide state and the ABI profile of a snapshot, an
//! extension of the `Arch` contract.
//!
//! A snapshot of a VM is its guest memory (saved by its owner, e.g.
//! `kvmkit-memory`), the state of each vCPU ([`crate::Arch::VcpuState`],
//! [`crate::Vcpu::save_state`]), the VM-wide state the kernel holds
//! ([`SnapshotArch::VmState`], [`Vm::save_state`]) and the state of the
//! userspace devices (their owners'). Its **ABI profile**
//! ([`SnapshotArch::AbiProfile`]) says what the state needs from KVM: the
//! architecture, the API version, the capabilities it relies on, the CPU
//! model the guest saw. A host computes its own profile
//! ([`Kvm::abi_profile`]) and refuses a state that needs more
//! ([`Kvm::check_profile`], [`Error::ProfileMismatch`]) before it writes
//! anything.
//!
//! It is an extension trait, like [`crate::DirtyLogArch`], because a VMM
//! that never saves a VM needs none of it.

use crate::{Arch, Error, Kvm, Result, Vm};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::{self, Debug, Display};

/// Saving and restoring the VM-wide state, and the ABI profile that a
/// restore checks first.
///
/// The restore order, on every architecture:
///
/// 1. check the saved profile against the host's ([`Kvm::check_profile`]);
/// 2. create the VM with the saved VM's `VmConfig`, put guest memory back;
/// 3. create the vCPUs with the saved `VcpuConfig`s (PowerPC's XICS
///    delivers restored pending interrupts to their servers, which must
///    exist);
/// 4. restore the VM-wide state ([`Vm::restore_state`]);
/// 5. restore each vCPU's state ([`crate::Vcpu::restore_state`]), then run.
///
/// Save in the reverse order with every vCPU out of `KVM_RUN` (paused): the
/// vCPUs' states, then the VM-wide state, then memory.
///
/// ```no_run
/// use kvmkit_core::{Kvm, SnapshotArch, VcpuId};
///
/// /// Saves a paused VM of one vCPU and restores it into a new VM (guest
/// /// memory is left out here).
/// fn clone_vm<A: SnapshotArch>(
///     kvm: &Kvm<A>,
///     vm: &kvmkit_core::Vm<A>,
///     vcpu: &kvmkit_core::Vcpu<A>,
///     vm_cfg: &A::VmConfig,
///     vcpu_cfg: &A::VcpuConfig,
/// ) -> kvmkit_core::Result<()> {
///     let vcpus = vec![vcpu.save_state()?];
///     let vm_state = vm.save_state()?;
///     let profile = A::state_profile(&vm_state, &vcpus);
///     // … these three travel in a snapshot file or a migration stream …
///     kvm.check_profile(&profile, vm_cfg, vcpu_cfg)?;
///     let new = kvm.create_vm(vm_cfg)?;
///     let new_vcpu = new.create_vcpu(VcpuId(0), vcpu_cfg)?;
///     new.restore_state(&vm_state)?;
///     new_vcpu.restore_state(&vcpus[0])?;
///     Ok(())
/// }
/// ```
pub trait SnapshotArch: Arch {
    /// The VM-wide state the kernel holds (x86: in-kernel PIC, IOAPIC, PIT,
    /// kvmclock; PowerPC: XICS sources, the KVM-HV hash page table; s390x:
    /// the TOD clock, pending floating interrupts, the CPU model).
    type VmState: Clone + Debug + Send + Sync + Serialize + DeserializeOwned;
    /// What a saved state needs from KVM, or what a host's KVM offers.
    type AbiProfile: Clone + Debug + Send + Sync + Serialize + DeserializeOwned;
    /// Why a saved profile does not fit a host; its message names the item
    /// and the values on both sides.
    type ProfileMismatch: std::error::Error + Clone + Send + Sync + 'static;

    /// Reads the VM-wide state. The vCPUs must be out of `KVM_RUN`.
    fn save_vm_state(vm: &Self::VmFd) -> Result<Self::VmState, Self::Error>;
    /// Writes back state saved by [`SnapshotArch::save_vm_state`]: after
    /// guest memory is in place and the vCPUs are created, before the
    /// vCPUs' states are restored. Refuses, before writing anything, a state
    /// that does not fit the VM (another format version, a piece the VM has
    /// no place for).
    fn restore_vm_state(vm: &Self::VmFd, state: &Self::VmState) -> Result<(), Self::Error>;
    /// The ABI profile of this host for VMs made with `vm` and vCPUs made
    /// with `vcpu`: what KVM tells only through a VM or a vCPU (per-VM
    /// capabilities, the registers a vCPU has, the CPU model a guest gets)
    /// is read from a scratch VM and vCPU that never run.
    fn host_profile(
        sys: &Self::System,
        vm: &Self::VmConfig,
        vcpu: &Self::VcpuConfig,
    ) -> Result<Self::AbiProfile, Self::Error>;
    /// What a saved state needs from a host. A pure function of the state,
    /// so a snapshot reader can recompute it; the VM-wide state takes part
    /// (it needs capabilities of its own, and on s390x it holds the CPU
    /// model).
    fn state_profile(vm: &Self::VmState, vcpus: &[Self::VcpuState]) -> Self::AbiProfile;
    /// Refuses `saved` (a state's profile) on `host` (a host's profile): the
    /// first thing the state needs that the host lacks.
    fn check_profile(
        saved: &Self::AbiProfile,
        host: &Self::AbiProfile,
    ) -> Result<(), Self::ProfileMismatch>;
}

/// A piece of state that was not saved, and why: what an arch's saved
/// state lists for each piece the kernel or the VM did not have. `P` is the
/// arch's enum of pieces, `R` the reason (a sentence, or an arch's typed
/// reason); both name themselves with `Display`.
///
/// ```
/// use kvmkit_core::Omitted;
/// let o = Omitted { piece: "guest TOD clock", reason: "the kernel has no such attribute".to_string() };
/// assert_eq!(o.to_string(), "guest TOD clock: the kernel has no such attribute");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Omitted<P, R = String> {
    /// The piece.
    pub piece: P,
    /// Why it is absent.
    pub reason: R,
}

impl<P: Display, R: Display> Display for Omitted<P, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.piece, self.reason)
    }
}

impl<A: SnapshotArch> Kvm<A> {
    /// The ABI profile of this host for VMs made with `vm` and vCPUs made
    /// with `vcpu` (see [`SnapshotArch::host_profile`]).
    pub fn abi_profile(&self, vm: &A::VmConfig, vcpu: &A::VcpuConfig) -> Result<A::AbiProfile> {
        A::host_profile(self.arch_system(), vm, vcpu).map_err(Error::arch)
    }

    /// Fails with [`Error::ProfileMismatch`] when this host, with VMs and
    /// vCPUs made from `vm` and `vcpu`, lacks something the state `saved`
    /// describes needs.
    pub fn check_profile(
        &self,
        saved: &A::AbiProfile,
        vm: &A::VmConfig,
        vcpu: &A::VcpuConfig,
    ) -> Result<()> {
        let host = self.abi_profile(vm, vcpu)?;
        A::check_profile(saved, &host).map_err(Error::profile_mismatch::<A, _>)
    }
}

impl<A: SnapshotArch> Vm<A> {
    /// Saves this VM's VM-wide state (see [`SnapshotArch::save_vm_state`]).
    pub fn save_state(&self) -> Result<A::VmState> {
        A::save_vm_state(self.arch_fd()).map_err(Error::arch)
    }

    /// Restores VM-wide state saved by [`Vm::save_state`], after memory and
    /// vCPU creation, before the vCPUs' states (see
    /// [`SnapshotArch::restore_vm_state`]).
    pub fn restore_state(&self, state: &A::VmState) -> Result<()> {
        A::restore_vm_state(self.arch_fd(), state).map_err(Error::arch)
    }
}
