//! [`DirtyLogArch`] for x86_64: the dirty-log ioctls with x86's encoding.

use crate::sys;
use crate::{Error, Result, X86Vcpu, X86Vm, X86_64};
use kvm_bindings::kvm_enable_cap;
use kvmkit_core::{check_clear_bitmap, Capability, DirtyLogArch, SlotId};
use std::os::unix::io::{AsRawFd, RawFd};

/// x86's page size: one bit of a dirty bitmap.
const PAGE_SIZE: u64 = 0x1000;

impl DirtyLogArch for X86_64 {
    const DIRTY_RING_PAGE_OFFSET: Option<u64> = Some(kvmkit_core::DIRTY_LOG_PAGE_OFFSET);

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

    /// Wraps `KVM_GET_DIRTY_LOG`. The slot must have been set through this VM
    /// and `bitmap` must cover it ([`Error::DirtyBitmap`] otherwise):
    /// [`SlotSizes::checked_get`](kvmkit_core::SlotSizes::checked_get) checks
    /// both before the kernel, which writes the whole slot's bitmap, is
    /// called.
    fn get_dirty_log(vm: &X86Vm, slot: SlotId, bitmap: &mut [u64]) -> Result<()> {
        vm.slot_sizes()
            .checked_get(slot.0, PAGE_SIZE, bitmap, |words| {
                // SAFETY: `checked_get` passes exactly the words of this
                // slot's bitmap, from the size `set_user_memory_region`
                // recorded through `slot_sizes().update` (every slot this
                // crate sets goes through it) in 4 KiB pages, one bit of the
                // kernel's bitmap; its read lock keeps the slot from changing
                // until we return.
                unsafe { sys::get_dirty_log(vm.vm_fd(), slot.0, words) }
                    .map_err(Error::ioctl("KVM_GET_DIRTY_LOG"))
            })
    }

    fn clear_dirty_log(
        vm: &X86Vm,
        slot: SlotId,
        first_page: u64,
        num_pages: u32,
        bitmap: &[u64],
    ) -> Result<()> {
        check_clear_bitmap(slot.0, num_pages, bitmap)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use kvmkit_core::{DirtyBitmapError, MemoryFlags, UserMemoryRegion};

    #[test]
    fn short_bitmaps_and_unknown_slots_are_refused_before_the_kernel() {
        let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else {
            return;
        };
        let vm = kvm.create_vm(&Default::default()).unwrap();
        let mem = vm_memory::MmapRegion::<()>::new(65 * 4096).unwrap();
        let region = UserMemoryRegion {
            slot: SlotId(2),
            flags: MemoryFlags::LOG_DIRTY_PAGES,
            guest_phys_addr: 0x10_0000,
            memory_size: 65 * 4096,
            userspace_addr: mem.as_ptr() as u64,
        };
        // SAFETY: `mem` outlives the VM's use of the slot: it is deleted
        // below before `mem` is dropped.
        unsafe { vm.set_user_memory_region(&region) }.unwrap();
        let e = X86_64::get_dirty_log(vm.arch_fd(), SlotId(2), &mut [0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "KVM_GET_DIRTY_LOG for slot 2 needs a bitmap of 2 words, the buffer has 1"
        );
        let e = X86_64::get_dirty_log(vm.arch_fd(), SlotId(3), &mut [0; 4]).unwrap_err();
        assert!(
            matches!(
                e,
                Error::DirtyBitmap(DirtyBitmapError::UnknownSlot { slot: 3 })
            ),
            "{e}"
        );
        let mut words = [u64::MAX; 2];
        X86_64::get_dirty_log(vm.arch_fd(), SlotId(2), &mut words).unwrap();
        assert_eq!(words, [0, 0], "nothing written yet");
        let e = X86_64::clear_dirty_log(vm.arch_fd(), SlotId(2), 0, 65, &[0]).unwrap_err();
        assert!(
            matches!(
                e,
                Error::DirtyBitmap(DirtyBitmapError::TooShort { needed: 2, .. })
            ),
            "{e}"
        );
        let deleted = UserMemoryRegion {
            memory_size: 0,
            ..region
        };
        // SAFETY: deleting a slot leaves KVM no reference to host memory.
        unsafe { vm.set_user_memory_region(&deleted) }.unwrap();
        let e = X86_64::get_dirty_log(vm.arch_fd(), SlotId(2), &mut words).unwrap_err();
        assert!(
            matches!(
                e,
                Error::DirtyBitmap(DirtyBitmapError::UnknownSlot { slot: 2 })
            ),
            "{e}"
        );
    }
}
