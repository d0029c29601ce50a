//! [`DirtyLogArch`] for ppc64: the dirty-log ioctls in PowerPC's encoding.
//!
//! What PowerPC's KVM offers (Linux 6.1 headers, mainline `virt/kvm` and
//! `arch/powerpc/kvm`): `KVM_GET_DIRTY_LOG` only, in its original
//! get-and-reset form (KVM-HV harvests the changed bits of the HPT or radix
//! tree, KVM-PR its shadow state). PowerPC selects neither
//! `KVM_GENERIC_DIRTYLOG_READ_PROTECT` nor `HAVE_KVM_DIRTY_RING`, so
//! `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2` and `KVM_CAP_DIRTY_LOG_RING[_ACQ_REL]`
//! check as 0 and cannot be enabled (`EINVAL`), `KVM_CLEAR_DIRTY_LOG` is an
//! unknown ioctl (`ENOTTY`) and `KVM_RESET_DIRTY_RINGS` fails with `EINVAL`.
//! This impl issues them all anyway: the kernel's answer, not this crate,
//! says what is supported.
//!
//! Two things differ from x86:
//!
//! - **Page size.** A bitmap bit is one *host* page (`PAGE_SIZE` of the
//!   kernel), 64 KiB on most ppc64 distributions, not 4 KiB.
//! - **Byte order.** KVM sets bits with `set_bit_le`: page `i` is bit `i % 8`
//!   of byte `i / 8`, whatever the host's byte order. On ppc64le that is the
//!   contract's layout (bit `i % 64` of native word `i / 64`); on a
//!   big-endian ppc64 host [`DirtyLogArch::get_dirty_log`] byte-swaps each
//!   word it received, so the contract holds there too.

use crate::ioctls::KVM_ENABLE_CAP;
use crate::uapi::kvm_enable_cap;
use crate::{sys, Error, Ppc64, PpcVcpu, PpcVm, Result};
use kvmkit_core::{check_clear_bitmap, Capability, DirtyLogArch, SlotId};
use std::os::fd::{AsRawFd, RawFd};

impl DirtyLogArch for Ppc64 {
    /// No dirty ring: the UAPI defines `KVM_DIRTY_LOG_PAGE_OFFSET` as 0 here.
    const DIRTY_RING_PAGE_OFFSET: Option<u64> = None;

    /// Wraps `KVM_ENABLE_CAP` on the VM fd. PowerPC's KVM refuses the
    /// dirty-log capabilities (`EINVAL`), see the module documentation.
    fn enable_vm_cap(vm: &PpcVm, cap: Capability, args: [u64; 4]) -> Result<()> {
        let mut raw = kvm_enable_cap::new(cap.number(), args);
        sys::ioctl_plain(vm.as_fd(), KVM_ENABLE_CAP, &mut raw).map_err(|source| {
            Error::EnableCap {
                cap: cap.name(),
                source,
            }
        })?;
        Ok(())
    }

    /// Wraps `KVM_GET_DIRTY_LOG` (get and reset: PowerPC has no manual
    /// protect). A bit is one host page; the words are converted from the
    /// kernel's little-endian bitmap to the contract's layout.
    ///
    /// The slot must have been set through this VM and `bitmap` must cover
    /// it ([`Error::DirtyBitmap`] otherwise):
    /// [`SlotSizes::checked_get`](kvmkit_core::SlotSizes::checked_get) checks both before the kernel, which writes the whole slot's bitmap,
    /// is called.
    fn get_dirty_log(vm: &PpcVm, slot: SlotId, bitmap: &mut [u64]) -> Result<()> {
        let page_size = sys::host_page_size();
        vm.dirty_slots()
            .checked_get(slot.0, page_size, bitmap, |words| {
                // SAFETY: `checked_get` passes exactly the words of this
                // slot's bitmap, from the size `set_user_memory_region`
                // recorded through `dirty_slots().update` (every slot of
                // this VM goes through it) at the host page size, one bit of
                // the kernel's bitmap; its read lock keeps the slot from
                // changing until we return.
                unsafe { sys::get_dirty_log(vm.as_fd(), slot.0, words) }
                    .map_err(Error::ioctl("KVM_GET_DIRTY_LOG"))
            })
    }

    /// Wraps `KVM_CLEAR_DIRTY_LOG`, which PowerPC's KVM does not implement
    /// (`ENOTTY`). `bitmap` must cover `num_pages` bits
    /// ([`Error::DirtyBitmap`], checked before the kernel is
    /// called); its words are passed as they are, native `unsigned long`s as
    /// the generic kernel code reads them.
    fn clear_dirty_log(
        vm: &PpcVm,
        slot: SlotId,
        first_page: u64,
        num_pages: u32,
        bitmap: &[u64],
    ) -> Result<()> {
        check_clear_bitmap(slot.0, num_pages, bitmap)?;
        sys::clear_dirty_log(vm.as_fd(), slot.0, first_page, num_pages, bitmap)
            .map_err(Error::ioctl("KVM_CLEAR_DIRTY_LOG"))
    }

    /// Wraps `KVM_RESET_DIRTY_RINGS`; PowerPC's KVM has no dirty ring and
    /// answers `EINVAL`.
    fn reset_dirty_rings(vm: &PpcVm) -> Result<u32> {
        sys::reset_dirty_rings(vm.as_fd()).map_err(Error::ioctl("KVM_RESET_DIRTY_RINGS"))
    }

    /// The vCPU fd. There is no ring to map on PowerPC:
    /// `uapi::KVM_DIRTY_LOG_PAGE_OFFSET` is 0 here, not
    /// `kvmkit_core::DIRTY_LOG_PAGE_OFFSET`.
    fn vcpu_raw_fd(vcpu: &PpcVcpu) -> RawFd {
        vcpu.as_fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uapi::{KVM_DIRTY_LOG_PAGE_OFFSET, OTHER_CONSTANTS};
    use kvmkit_core::DirtyBitmapError;

    #[test]
    fn short_bitmaps_are_refused_before_the_kernel() {
        use crate::arch::tests::fake_vm;
        let vm = fake_vm(crate::VmType::Hv);
        // CLEAR of 65 pages needs 2 words; with 1 the kernel is not called
        // (over /dev/null it would answer ENOTTY).
        let e = Ppc64::clear_dirty_log(&vm, SlotId(3), 0, 65, &[u64::MAX]).unwrap_err();
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
        let e = Ppc64::clear_dirty_log(&vm, SlotId(3), 0, 65, &[0, 0]).unwrap_err();
        assert_eq!(e.to_string(), "KVM_CLEAR_DIRTY_LOG failed");
        assert_eq!(e.errno(), Some(libc::ENOTTY));

        // GET: an unknown slot, then one shorter than the slot's bitmap.
        let mut bitmap = [0u64; 4];
        let e = Ppc64::get_dirty_log(&vm, SlotId(0), &mut bitmap).unwrap_err();
        assert!(
            matches!(
                e,
                Error::DirtyBitmap(DirtyBitmapError::UnknownSlot { slot: 0 })
            ),
            "{e}"
        );
        let size = 64 * 4 * sys::host_page_size(); // 4 words at this host's page size
        vm.dirty_slots()
            .update(0, size, || Ok::<(), Error>(()))
            .unwrap();
        let e = Ppc64::get_dirty_log(&vm, SlotId(0), &mut bitmap[..3]).unwrap_err();
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
        let e = Ppc64::get_dirty_log(&vm, SlotId(0), &mut bitmap).unwrap_err();
        assert_eq!(e.to_string(), "KVM_GET_DIRTY_LOG failed");
        assert_eq!(e.errno(), Some(libc::ENOTTY));
    }

    #[test]
    fn every_call_reaches_the_kernel_with_powerpc_numbers() {
        use crate::arch::tests::{fake_vcpu, fake_vm};
        let vm = fake_vm(crate::VmType::Hv);
        let e = Ppc64::enable_vm_cap(&vm, Capability::MANUAL_DIRTY_LOG_PROTECT2, [1, 0, 0, 0])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) failed"
        );
        assert_eq!(e.errno(), Some(libc::ENOTTY));
        let e = Ppc64::reset_dirty_rings(&vm).unwrap_err();
        assert_eq!(e.to_string(), "KVM_RESET_DIRTY_RINGS failed");
        let vcpu = fake_vcpu();
        assert_eq!(Ppc64::vcpu_raw_fd(&vcpu), vcpu.as_fd().as_raw_fd());
    }

    #[test]
    fn powerpc_has_no_dirty_ring_offset() {
        // Checked against the ppc64le header by tests/uapi.rs: 0, the
        // fallback of linux/kvm.h for architectures without a dirty ring.
        assert_eq!(KVM_DIRTY_LOG_PAGE_OFFSET, 0);
        assert!(OTHER_CONSTANTS.contains(&("KVM_DIRTY_LOG_PAGE_OFFSET", 0)));
        assert_ne!(
            KVM_DIRTY_LOG_PAGE_OFFSET,
            kvmkit_core::DIRTY_LOG_PAGE_OFFSET
        );
    }
}
