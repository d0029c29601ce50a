//! `SnapshotArch` for x86_64: the existing VM state and ABI profile behind
//! the portable contract.

use crate::{
    abi_profile_for, restore_vm_state, save_vm_state, ProfileMismatch, Result, VcpuConfig,
    VmConfig, X86AbiProfile, X86System, X86VcpuState, X86Vm, X86VmState, X86_64,
};
use kvmkit_core::SnapshotArch;

/// The VM state is [`X86VmState`] (in-kernel PIC and IOAPIC, PIT, kvmclock),
/// restored with [`crate::ClockRestore::Continue`] (for live migration use
/// [`crate::restore_vm_state_with`] directly); the profile is
/// [`X86AbiProfile`].
///
/// ```
/// use kvmkit_arch_x86_64::{IrqchipMode, VcpuConfig, VmConfig, X86_64};
/// use kvmkit_core::{SnapshotArch, VcpuId};
/// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
/// let cfg = VmConfig { irqchip: IrqchipMode::Kernel, pit: true, ..Default::default() };
/// let vm = kvm.create_vm(&cfg).unwrap();
/// let vcpu = vm.create_vcpu(VcpuId(0), &VcpuConfig::default()).unwrap();
/// let vcpus = vec![vcpu.save_state().unwrap()];
/// let state = vm.save_state().unwrap();
/// let saved = X86_64::state_profile(&state, &vcpus);
/// kvm.check_profile(&saved, &cfg, &VcpuConfig::default()).unwrap();
/// ```
impl SnapshotArch for X86_64 {
    type VmState = X86VmState;
    type AbiProfile = X86AbiProfile;
    type ProfileMismatch = ProfileMismatch;

    fn save_vm_state(vm: &X86Vm) -> Result<X86VmState> {
        save_vm_state(vm)
    }

    fn restore_vm_state(vm: &X86Vm, state: &X86VmState) -> Result<()> {
        restore_vm_state(vm, state)
    }

    fn host_profile(sys: &X86System, vm: &VmConfig, vcpu: &VcpuConfig) -> Result<X86AbiProfile> {
        abi_profile_for(sys, vm, vcpu)
    }

    fn state_profile(vm: &X86VmState, vcpus: &[X86VcpuState]) -> X86AbiProfile {
        X86AbiProfile::of_state(Some(vm), vcpus)
    }

    fn check_profile(
        saved: &X86AbiProfile,
        host: &X86AbiProfile,
    ) -> std::result::Result<(), ProfileMismatch> {
        saved.check(host)
    }
}
