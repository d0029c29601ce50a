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
use kvmkit_core::{Capability, DirtyLogArch, SlotId};
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{PoisonError, RwLock};

/// The size of every memory slot set through this crate, so that
/// `KVM_GET_DIRTY_LOG` is only given a bitmap at least as long as what the
/// kernel writes (it cannot know the buffer's length).
///
/// `KVM_SET_USER_MEMORY_REGION` runs under the write lock and
/// `KVM_GET_DIRTY_LOG` under the read lock, so a slot cannot grow between
/// the length check and the copy.
#[derive(Debug, Default)]
pub(crate) struct DirtySlots {
    sizes: RwLock<BTreeMap<u32, u64>>,
}

impl DirtySlots {
    /// Runs `set` (`KVM_SET_USER_MEMORY_REGION` of `slot`) and records the
    /// slot's new size if it succeeded (0 deletes the slot).
    pub(crate) fn update(
        &self,
        slot: u32,
        memory_size: u64,
        set: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        // The map is only changed after `set` succeeded, so a panic in it
        // leaves the map consistent with the kernel: poison is harmless.
        let mut sizes = self.sizes.write().unwrap_or_else(PoisonError::into_inner);
        set()?;
        if memory_size == 0 {
            sizes.remove(&slot);
        } else {
            sizes.insert(slot, memory_size);
        }
        Ok(())
    }

    /// Runs `get` with the words KVM writes for `slot` (its pages at
    /// `page_size` bytes, rounded up to 64) while no slot can change, or
    /// `None` for a slot this VM has not set.
    pub(crate) fn with_words<R>(
        &self,
        slot: u32,
        page_size: u64,
        get: impl FnOnce(Option<usize>) -> R,
    ) -> R {
        let sizes = self.sizes.read().unwrap_or_else(PoisonError::into_inner);
        let words = sizes.get(&slot).map(|&size| {
            let pages = size.div_ceil(page_size.max(1));
            usize::try_from(pages.div_ceil(64)).unwrap_or(usize::MAX)
        });
        get(words)
    }
}

/// Turns the words KVM wrote (a little-endian bitmap: page `i` is bit
/// `i % 8` of byte `i / 8`) into the contract's layout, bit `i % 64` of
/// native word `i / 64`: nothing to do on ppc64le, a byte swap per word on
/// big-endian ppc64.
fn kernel_bitmap_to_words(words: &mut [u64]) {
    for w in words {
        *w = u64::from_le(*w);
    }
}

impl DirtyLogArch for Ppc64 {
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
    /// The slot must have been set through this VM
    /// ([`Error::DirtyLogUnknownSlot`] otherwise) and `bitmap` must cover it
    /// ([`Error::DirtyBitmapTooShort`]): both are checked before the kernel
    /// is called, which writes the whole slot's bitmap.
    fn get_dirty_log(vm: &PpcVm, slot: SlotId, bitmap: &mut [u64]) -> Result<()> {
        vm.dirty_slots()
            .with_words(slot.0, sys::host_page_size(), |words| {
                let needed = words.ok_or(Error::DirtyLogUnknownSlot { slot: slot.0 })?;
                if bitmap.len() < needed {
                    return Err(Error::DirtyBitmapTooShort {
                        ioctl: "KVM_GET_DIRTY_LOG",
                        slot: slot.0,
                        needed,
                        len: bitmap.len(),
                    });
                }
                // SAFETY: `bitmap` has at least `needed` words, the bitmap
                // the kernel keeps for this slot (its size as recorded by
                // `set_user_memory_region`, in host pages rounded up); the
                // read lock keeps the slot from changing until we return.
                unsafe { sys::get_dirty_log(vm.as_fd(), slot.0, bitmap) }
                    .map_err(Error::ioctl("KVM_GET_DIRTY_LOG"))?;
                kernel_bitmap_to_words(&mut bitmap[..needed]);
                Ok(())
            })
    }

    /// Wraps `KVM_CLEAR_DIRTY_LOG`, which PowerPC's KVM does not implement
    /// (`ENOTTY`). `bitmap` must cover `num_pages` bits
    /// ([`Error::DirtyBitmapTooShort`], checked before the kernel is
    /// called); its words are passed as they are, native `unsigned long`s as
    /// the generic kernel code reads them.
    fn clear_dirty_log(
        vm: &PpcVm,
        slot: SlotId,
        first_page: u64,
        num_pages: u32,
        bitmap: &[u64],
    ) -> Result<()> {
        let needed = sys::bitmap_words(num_pages);
        if bitmap.len() < needed {
            return Err(Error::DirtyBitmapTooShort {
                ioctl: "KVM_CLEAR_DIRTY_LOG",
                slot: slot.0,
                needed,
                len: bitmap.len(),
            });
        }
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

    fn ok() -> Result<()> {
        Ok(())
    }

    #[test]
    fn slot_sizes_follow_successful_updates_only() {
        let slots = DirtySlots::default();
        assert_eq!(slots.with_words(0, 4096, |w| w), None);
        // 1 MiB: 256 pages of 4 KiB (4 words), 16 of 64 KiB (1 word).
        slots.update(0, 1 << 20, ok).unwrap();
        assert_eq!(slots.with_words(0, 4096, |w| w), Some(4));
        assert_eq!(slots.with_words(0, 0x1_0000, |w| w), Some(1));
        // 65 pages of 4 KiB: 2 words.
        slots.update(1, 65 * 4096, ok).unwrap();
        assert_eq!(slots.with_words(1, 4096, |w| w), Some(2));
        // A failed update changes nothing.
        let failed = || Err(Error::RtasName("x".into()));
        assert!(slots.update(1, 1 << 30, failed).is_err());
        assert_eq!(slots.with_words(1, 4096, |w| w), Some(2));
        // Deleting (size 0) forgets the slot.
        slots.update(1, 0, ok).unwrap();
        assert_eq!(slots.with_words(1, 4096, |w| w), None);
        assert_eq!(slots.with_words(0, 4096, |w| w), Some(4));
    }

    #[test]
    fn the_kernels_little_endian_bitmap_becomes_the_contracts_words() {
        // Pages 9 and 70 dirty, as `set_bit_le` leaves the memory on any
        // host: byte 1 bit 1, byte 8 bit 6.
        let mut bytes = [0u8; 16];
        bytes[1] = 1 << 1;
        bytes[8] = 1 << 6;
        let mut words = [
            u64::from_ne_bytes(bytes[..8].try_into().unwrap()),
            u64::from_ne_bytes(bytes[8..].try_into().unwrap()),
        ];
        kernel_bitmap_to_words(&mut words);
        assert_eq!(words, [1 << 9, 1 << 6]);
    }

    #[test]
    fn short_bitmaps_are_refused_before_the_kernel() {
        use crate::arch::tests::fake_vm;
        let vm = fake_vm(crate::VmType::Hv);
        // CLEAR of 65 pages needs 2 words; with 1 the kernel is not called
        // (over /dev/null it would answer ENOTTY).
        let e = Ppc64::clear_dirty_log(&vm, SlotId(3), 0, 65, &[u64::MAX]).unwrap_err();
        assert!(matches!(
            e,
            Error::DirtyBitmapTooShort {
                ioctl: "KVM_CLEAR_DIRTY_LOG",
                slot: 3,
                needed: 2,
                len: 1
            }
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
        assert!(matches!(e, Error::DirtyLogUnknownSlot { slot: 0 }), "{e}");
        let size = 64 * 4 * sys::host_page_size(); // 4 words at this host's page size
        vm.dirty_slots().update(0, size, || Ok(())).unwrap();
        let e = Ppc64::get_dirty_log(&vm, SlotId(0), &mut bitmap[..3]).unwrap_err();
        assert!(
            matches!(
                e,
                Error::DirtyBitmapTooShort {
                    ioctl: "KVM_GET_DIRTY_LOG",
                    needed: 4,
                    len: 3,
                    ..
                }
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
