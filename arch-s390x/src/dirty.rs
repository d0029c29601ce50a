//! [`DirtyLogArch`] for s390x: the dirty-log ioctls, generic `_IOC` encoding.
//!
//! What s390x's KVM offers (Linux 6.1 headers, mainline `virt/kvm` and
//! `arch/s390/kvm`): `KVM_GET_DIRTY_LOG` only, in its original get-and-reset
//! form: the kernel first collects the dirty state of the guest's pages
//! from the host page tables (the change bits kept in the PGSTEs and large
//! page entries of the gmap) into the slot's bitmap, then copies it out and
//! clears it. s390x selects neither `KVM_GENERIC_DIRTYLOG_READ_PROTECT` nor
//! `HAVE_KVM_DIRTY_RING`, so `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2` and
//! `KVM_CAP_DIRTY_LOG_RING[_ACQ_REL]` check as 0 and cannot be enabled
//! (`EINVAL`), `KVM_CLEAR_DIRTY_LOG` is an unknown ioctl (`ENOTTY`) and
//! `KVM_RESET_DIRTY_RINGS` fails with `EINVAL`. A user-controlled
//! (ucontrol) VM has no dirty log at all (`EINVAL`). This impl issues every
//! call anyway: the kernel's answer, not this crate, says what is supported.
//!
//! **Byte order.** s390x is big-endian, and KVM keeps dirty bitmaps with
//! `set_bit_le`: page `i` is bit `i % 8` of *byte* `i / 8` on every host, so
//! a word of the copied bitmap read natively on s390x does not have page
//! `64 * w + b` at bit `b`. [`DirtyLogArch::get_dirty_log`] therefore turns
//! each word it received with `u64::from_le` (a byte swap on s390x, nothing
//! on a little-endian host), and the contract's layout (bit `i % 64` of
//! native word `i / 64`) holds. `clear_dirty_log` passes its words
//! unchanged: the generic kernel code reads them as native `unsigned long`
//! masks. `struct kvm_dirty_gfn` entries, had s390x a ring, would be
//! native (big-endian) integers, which `kvmkit_core::DirtyGfn` reads
//! correctly on an s390x host.

use crate::uapi::kvm_enable_cap;
use crate::{sys, Error, Result, S390Vcpu, S390Vm, S390x};
use kvmkit_core::{check_clear_bitmap, Capability, DirtyLogArch, SlotId};
use std::os::fd::{AsRawFd, RawFd};

impl DirtyLogArch for S390x {
    /// No dirty ring: the UAPI defines `KVM_DIRTY_LOG_PAGE_OFFSET` as 0 here.
    const DIRTY_RING_PAGE_OFFSET: Option<u64> = None;

    /// Wraps `KVM_ENABLE_CAP` on the VM fd. s390x's KVM refuses the
    /// dirty-log capabilities (`EINVAL`), see the module documentation.
    fn enable_vm_cap(vm: &S390Vm, cap: Capability, args: [u64; 4]) -> Result<()> {
        let raw = kvm_enable_cap {
            cap: cap.number(),
            args,
            ..Default::default()
        };
        sys::enable_cap(vm.file(), &raw).map_err(|source| Error::EnableCap {
            cap: cap.name(),
            source,
        })
    }

    /// Wraps `KVM_GET_DIRTY_LOG` (get and reset: s390x has no manual
    /// protect); the words are converted from the kernel's little-endian
    /// bitmap to the contract's layout.
    ///
    /// The slot must have been set through this VM and `bitmap` must cover
    /// it ([`Error::DirtyBitmap`] otherwise):
    /// [`SlotSizes::checked_get`](kvmkit_core::SlotSizes::checked_get) checks both before the kernel, which writes the whole slot's bitmap,
    /// is called.
    fn get_dirty_log(vm: &S390Vm, slot: SlotId, bitmap: &mut [u64]) -> Result<()> {
        let page_size = sys::host_page_size();
        vm.dirty_slots()
            .checked_get(slot.0, page_size, bitmap, |words| {
                // SAFETY: `checked_get` passes exactly the words of this
                // slot's bitmap, from the size `set_user_memory_region`
                // recorded through `dirty_slots().update` (every slot of
                // this VM goes through it) at the host page size, one bit of
                // the kernel's bitmap; its read lock keeps the slot from
                // changing until we return.
                unsafe { sys::get_dirty_log(vm.file(), slot.0, words) }
                    .map_err(Error::ioctl("KVM_GET_DIRTY_LOG"))
            })
    }

    /// Wraps `KVM_CLEAR_DIRTY_LOG`, which s390x's KVM does not implement
    /// (`ENOTTY`). `bitmap` must cover `num_pages` bits
    /// ([`Error::DirtyBitmap`], checked before the kernel is
    /// called); its words are passed as they are.
    fn clear_dirty_log(
        vm: &S390Vm,
        slot: SlotId,
        first_page: u64,
        num_pages: u32,
        bitmap: &[u64],
    ) -> Result<()> {
        check_clear_bitmap(slot.0, num_pages, bitmap)?;
        sys::clear_dirty_log(vm.file(), slot.0, first_page, num_pages, bitmap)
            .map_err(Error::ioctl("KVM_CLEAR_DIRTY_LOG"))
    }

    /// Wraps `KVM_RESET_DIRTY_RINGS`; s390x's KVM has no dirty ring and
    /// answers `EINVAL`.
    fn reset_dirty_rings(vm: &S390Vm) -> Result<u32> {
        sys::reset_dirty_rings(vm.file()).map_err(Error::ioctl("KVM_RESET_DIRTY_RINGS"))
    }

    /// The vCPU fd. There is no ring to map on s390x:
    /// `uapi::KVM_DIRTY_LOG_PAGE_OFFSET` is 0 here, not
    /// `kvmkit_core::DIRTY_LOG_PAGE_OFFSET`.
    fn vcpu_raw_fd(vcpu: &S390Vcpu) -> RawFd {
        vcpu.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uapi::KVM_DIRTY_LOG_PAGE_OFFSET;
    use kvmkit_core::DirtyBitmapError;
    use std::fs::File;

    fn ok() -> Result<()> {
        Ok(())
    }

    fn null_vm() -> S390Vm {
        S390Vm::from_file(File::open("/dev/null").unwrap())
    }

    #[test]
    fn short_bitmaps_are_refused_before_the_kernel() {
        let vm = null_vm();
        // CLEAR of 65 pages needs 2 words; with 1 the kernel is not called
        // (over /dev/null it would answer ENOTTY).
        let e = S390x::clear_dirty_log(&vm, SlotId(3), 0, 65, &[u64::MAX]).unwrap_err();
        assert!(matches!(
            e,
            Error::DirtyBitmap(DirtyBitmapError::TooShort {
                ioctl: "KVM_CLEAR_DIRTY_LOG",
                slot: 3,
                needed: 2,
                len: 1
            })
        ));
        assert_eq!(
            e.to_string(),
            "KVM_CLEAR_DIRTY_LOG for slot 3 needs a bitmap of 2 words, the buffer has 1"
        );
        let e = S390x::clear_dirty_log(&vm, SlotId(3), 0, 65, &[0, 0]).unwrap_err();
        assert!(
            matches!(&e, Error::Ioctl { ioctl: "KVM_CLEAR_DIRTY_LOG", source }
                if source.raw_os_error() == Some(libc::ENOTTY)),
            "{e:?}"
        );

        let mut bitmap = [0u64; 4];
        let e = S390x::get_dirty_log(&vm, SlotId(0), &mut bitmap).unwrap_err();
        assert!(
            matches!(
                e,
                Error::DirtyBitmap(DirtyBitmapError::UnknownSlot { slot: 0 })
            ),
            "{e}"
        );
        let size = 64 * 4 * sys::host_page_size(); // 4 words
        vm.dirty_slots().update(0, size, ok).unwrap();
        let e = S390x::get_dirty_log(&vm, SlotId(0), &mut bitmap[..3]).unwrap_err();
        assert!(
            matches!(
                e,
                Error::DirtyBitmap(DirtyBitmapError::TooShort {
                    ioctl: "KVM_GET_DIRTY_LOG",
                    needed: 4,
                    len: 3,
                    ..
                })
            ),
            "{e}"
        );
        let e = S390x::get_dirty_log(&vm, SlotId(0), &mut bitmap).unwrap_err();
        assert_eq!(e.to_string(), "KVM_GET_DIRTY_LOG failed");
    }

    #[test]
    fn the_other_calls_reach_the_kernel() {
        let vm = null_vm();
        let e = S390x::enable_vm_cap(&vm, Capability::DIRTY_LOG_RING, [4096, 0, 0, 0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "KVM_ENABLE_CAP(KVM_CAP_DIRTY_LOG_RING) failed"
        );
        let e = S390x::reset_dirty_rings(&vm).unwrap_err();
        assert_eq!(e.to_string(), "KVM_RESET_DIRTY_RINGS failed");
    }

    #[test]
    fn s390x_has_no_dirty_ring_offset() {
        // Checked against the s390x header by tests/uapi.rs: 0, the
        // fallback of linux/kvm.h for architectures without a dirty ring.
        assert_eq!(KVM_DIRTY_LOG_PAGE_OFFSET, 0);
        assert_ne!(
            KVM_DIRTY_LOG_PAGE_OFFSET,
            kvmkit_core::DIRTY_LOG_PAGE_OFFSET
        );
    }
}
