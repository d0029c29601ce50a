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
/// native word `i / 64`: a byte swap per word on s390x.
fn kernel_bitmap_to_words(words: &mut [u64]) {
    for w in words {
        *w = u64::from_le(*w);
    }
}

impl DirtyLogArch for S390x {
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
    /// The slot must have been set through this VM
    /// ([`Error::DirtyLogUnknownSlot`] otherwise) and `bitmap` must cover it
    /// ([`Error::DirtyBitmapTooShort`]): both are checked before the kernel
    /// is called, which writes the whole slot's bitmap.
    fn get_dirty_log(vm: &S390Vm, slot: SlotId, bitmap: &mut [u64]) -> Result<()> {
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
                unsafe { sys::get_dirty_log(vm.file(), slot.0, bitmap) }
                    .map_err(Error::ioctl("KVM_GET_DIRTY_LOG"))?;
                kernel_bitmap_to_words(&mut bitmap[..needed]);
                Ok(())
            })
    }

    /// Wraps `KVM_CLEAR_DIRTY_LOG`, which s390x's KVM does not implement
    /// (`ENOTTY`). `bitmap` must cover `num_pages` bits
    /// ([`Error::DirtyBitmapTooShort`], checked before the kernel is
    /// called); its words are passed as they are.
    fn clear_dirty_log(
        vm: &S390Vm,
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
    use std::fs::File;

    fn ok() -> Result<()> {
        Ok(())
    }

    fn null_vm() -> S390Vm {
        S390Vm::from_file(File::open("/dev/null").unwrap())
    }

    #[test]
    fn slot_sizes_follow_successful_updates_only() {
        let slots = DirtySlots::default();
        assert_eq!(slots.with_words(0, 4096, |w| w), None);
        slots.update(0, 1 << 20, ok).unwrap(); // 256 pages: 4 words
        assert_eq!(slots.with_words(0, 4096, |w| w), Some(4));
        slots.update(1, 65 * 4096, ok).unwrap(); // 65 pages: 2 words
        assert_eq!(slots.with_words(1, 4096, |w| w), Some(2));
        let failed = || Err(Error::ApiVersion(0));
        assert!(slots.update(1, 1 << 30, failed).is_err());
        assert_eq!(slots.with_words(1, 4096, |w| w), Some(2));
        slots.update(1, 0, ok).unwrap();
        assert_eq!(slots.with_words(1, 4096, |w| w), None);
    }

    #[test]
    fn the_kernels_little_endian_bitmap_becomes_the_contracts_words() {
        // Pages 9 and 70 dirty, as `set_bit_le` leaves the memory on s390x
        // (or any host): byte 1 bit 1, byte 8 bit 6. Read natively on
        // s390x, word 0 would be 1 << 49 without the conversion.
        let mut bytes = [0u8; 16];
        bytes[1] = 1 << 1;
        bytes[8] = 1 << 6;
        let mut words = [
            u64::from_ne_bytes(bytes[..8].try_into().unwrap()),
            u64::from_ne_bytes(bytes[8..].try_into().unwrap()),
        ];
        kernel_bitmap_to_words(&mut words);
        assert_eq!(words, [1 << 9, 1 << 6]);
        assert_eq!(u64::from_be_bytes(bytes[..8].try_into().unwrap()), 1 << 49);
    }

    #[test]
    fn short_bitmaps_are_refused_before_the_kernel() {
        let vm = null_vm();
        // CLEAR of 65 pages needs 2 words; with 1 the kernel is not called
        // (over /dev/null it would answer ENOTTY).
        let e = S390x::clear_dirty_log(&vm, SlotId(3), 0, 65, &[u64::MAX]).unwrap_err();
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
        let e = S390x::clear_dirty_log(&vm, SlotId(3), 0, 65, &[0, 0]).unwrap_err();
        assert!(
            matches!(&e, Error::Ioctl { ioctl: "KVM_CLEAR_DIRTY_LOG", source }
                if source.raw_os_error() == Some(libc::ENOTTY)),
            "{e:?}"
        );

        let mut bitmap = [0u64; 4];
        let e = S390x::get_dirty_log(&vm, SlotId(0), &mut bitmap).unwrap_err();
        assert!(matches!(e, Error::DirtyLogUnknownSlot { slot: 0 }), "{e}");
        let size = 64 * 4 * sys::host_page_size(); // 4 words
        vm.dirty_slots().update(0, size, ok).unwrap();
        let e = S390x::get_dirty_log(&vm, SlotId(0), &mut bitmap[..3]).unwrap_err();
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
