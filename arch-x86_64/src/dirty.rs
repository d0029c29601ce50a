//! [`DirtyLogArch`] for x86_64: the dirty-log ioctls with x86's encoding.

use crate::sys;
use crate::{Error, Result, X86Vcpu, X86Vm, X86_64};
use kvm_bindings::kvm_enable_cap;
use kvmkit_core::{Capability, DirtyLogArch, SlotId};
use std::os::unix::io::{AsRawFd, RawFd};

impl DirtyLogArch for X86_64 {
    fn enable_vm_cap(vm: &X86Vm, cap: Capability, args: [u64; 4]) -> Result<()> {
        let raw = kvm_enable_cap {
            cap: cap.number(),
            args,
            ..Default::default()
        };
        vm.vm_fd()
            .enable_cap(&raw)
            .map_err(|source| Error::EnableCap {
                cap: cap.name(),
                source,
            })
    }

    fn get_dirty_log(vm: &X86Vm, slot: SlotId, bitmap: &mut [u64]) -> Result<()> {
        sys::get_dirty_log(vm.vm_fd(), slot.0, bitmap).map_err(Error::ioctl("KVM_GET_DIRTY_LOG"))
    }

    fn clear_dirty_log(
        vm: &X86Vm,
        slot: SlotId,
        first_page: u64,
        num_pages: u32,
        bitmap: &[u64],
    ) -> Result<()> {
        sys::clear_dirty_log(vm.vm_fd(), slot.0, first_page, num_pages, bitmap)
            .map_err(Error::ioctl("KVM_CLEAR_DIRTY_LOG"))
    }

    fn reset_dirty_rings(vm: &X86Vm) -> Result<u32> {
        sys::reset_dirty_rings(vm.vm_fd()).map_err(Error::ioctl("KVM_RESET_DIRTY_RINGS"))
    }

    fn vcpu_raw_fd(vcpu: &X86Vcpu) -> RawFd {
        vcpu.vcpu_fd().as_raw_fd()
    }
}
