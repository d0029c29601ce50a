//! [`DirtyLogArch`]: the dirty-log ioctls, an extension of the `Arch` contract.
//!
//! The dirty log is portable (the same structs and semantics on every
//! architecture) but its ioctl numbers are not: PowerPC encodes direction and
//! size bits differently from x86 and s390x. So each arch crate issues these
//! calls itself, and the portable dirty-log crate is generic over
//! `A: DirtyLogArch`. It is an extension trait rather than part of [`Arch`]
//! because a VMM that never logs dirty pages needs none of it.

use crate::{Arch, Capability, SlotId, Vcpu, Vm};
use std::collections::BTreeMap;
use std::os::unix::io::RawFd;
use std::sync::{PoisonError, RwLock};

/// `KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE`: `KVM_GET_DIRTY_LOG` no longer clears
/// or write-protects; `KVM_CLEAR_DIRTY_LOG` does, for the pages it is given.
pub const MANUAL_PROTECT_ENABLE: u64 = 1 << 0;
/// `KVM_DIRTY_LOG_INITIALLY_SET`: turning logging on for a slot sets every bit
/// and write-protects nothing until the pages are cleared.
pub const MANUAL_PROTECT_INITIALLY_SET: u64 = 1 << 1;

/// `KVM_DIRTY_GFN_F_DIRTY`: the entry holds a dirty page, published by KVM.
pub const DIRTY_GFN_F_DIRTY: u32 = 1 << 0;
/// `KVM_DIRTY_GFN_F_RESET`: userspace has collected the entry.
pub const DIRTY_GFN_F_RESET: u32 = 1 << 1;

/// `KVM_DIRTY_LOG_PAGE_OFFSET` where the kernel has a dirty ring (x86,
/// arm64, RISC-V, LoongArch): the ring is mapped from the vCPU fd at this many
/// host pages. Architectures without a ring define it as 0; shared code uses
/// [`DirtyLogArch::DIRTY_RING_PAGE_OFFSET`].
pub const DIRTY_LOG_PAGE_OFFSET: u64 = 64;

/// `struct kvm_dirty_gfn`: one dirty-ring entry, the same layout on every
/// architecture (16 bytes: `flags`, `slot`, `offset`).
///
/// `slot` carries the address space in its upper 16 bits (`as_id << 16 |
/// slot id`); `offset` is the page index within the slot.
///
/// ```
/// assert_eq!(std::mem::size_of::<kvmkit_core::DirtyGfn>(), 16);
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirtyGfn {
    /// `KVM_DIRTY_GFN_F_*`.
    pub flags: u32,
    /// `as_id << 16 | slot`.
    pub slot: u32,
    /// Page index within the slot.
    pub offset: u64,
}

const _: () = assert!(std::mem::size_of::<DirtyGfn>() == 16);

/// The dirty-log calls, per architecture.
///
/// Every method wraps exactly one ioctl; semantics (chunking, epochs, ring
/// harvesting) live in the portable dirty-log crate.
///
/// Bitmaps cross this trait as native `u64` words, bit `i % 64` of word
/// `i / 64` being page `i` of the slot. (KVM fills `KVM_GET_DIRTY_LOG`'s
/// buffer with `set_bit_le`, a little-endian bitmap; a big-endian arch
/// converts with [`le_bitmap_to_native`].) A bit is one host page.
pub trait DirtyLogArch: Arch {
    /// `KVM_DIRTY_LOG_PAGE_OFFSET` of this arch's UAPI: where the dirty ring
    /// is mapped in the vCPU fd, in host pages; `None` where the kernel has
    /// no dirty ring on this arch.
    const DIRTY_RING_PAGE_OFFSET: Option<u64>;

    /// Wraps `KVM_ENABLE_CAP` on the VM fd with `args` (the four argument
    /// words). Used for `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2` and
    /// `KVM_CAP_DIRTY_LOG_RING[_ACQ_REL]`.
    fn enable_vm_cap(vm: &Self::VmFd, cap: Capability, args: [u64; 4]) -> Result<(), Self::Error>;

    /// Wraps `KVM_GET_DIRTY_LOG` for `slot` into `bitmap`: bit `i % 64` of
    /// word `i / 64` is page `i`. The kernel writes the whole slot's bitmap
    /// without knowing the buffer's length, so implementations refuse a
    /// slot they did not set and a `bitmap` shorter than the slot before
    /// calling it ([`SlotSizes::checked_get`], [`DirtyBitmapError`]).
    fn get_dirty_log(vm: &Self::VmFd, slot: SlotId, bitmap: &mut [u64]) -> Result<(), Self::Error>;

    /// Wraps `KVM_CLEAR_DIRTY_LOG`: clears (and write-protects again) the
    /// pages of `slot` from `first_page` on whose bits are set in `bitmap`
    /// (bit `i` is page `first_page + i`), `num_pages` pages in all.
    /// `first_page` must be a multiple of 64; `num_pages` too unless the range
    /// reaches the end of the slot. `bitmap` must cover `num_pages` bits
    /// ([`check_clear_bitmap`]).
    fn clear_dirty_log(
        vm: &Self::VmFd,
        slot: SlotId,
        first_page: u64,
        num_pages: u32,
        bitmap: &[u64],
    ) -> Result<(), Self::Error>;

    /// Wraps `KVM_RESET_DIRTY_RINGS`: re-protects the pages of every ring
    /// entry userspace marked `KVM_DIRTY_GFN_F_RESET`; returns how many.
    fn reset_dirty_rings(vm: &Self::VmFd) -> Result<u32, Self::Error>;

    /// The vCPU's file descriptor, to map its dirty ring (at
    /// [`DIRTY_LOG_PAGE_OFFSET`] host pages). The fd stays owned by `vcpu`.
    fn vcpu_raw_fd(vcpu: &Self::VcpuFd) -> RawFd;
}

/// The size of every memory slot an arch backend set, so that
/// `KVM_GET_DIRTY_LOG` is only given a bitmap at least as long as what the
/// kernel writes.
///
/// `KVM_SET_USER_MEMORY_REGION` runs under the write lock ([`update`]) and
/// `KVM_GET_DIRTY_LOG` under the read lock ([`with_words`]), so a slot cannot
/// grow between the length check and the copy.
///
/// [`update`]: SlotSizes::update
/// [`with_words`]: SlotSizes::with_words
///
/// ```
/// let sizes = kvmkit_core::SlotSizes::default();
/// sizes.update(0, 65 * 4096, || Ok::<(), ()>(()))?;
/// assert_eq!(sizes.with_words(0, 4096, |w| w), Some(2));
/// assert_eq!(sizes.with_words(1, 4096, |w| w), None);
/// # Ok::<(), ()>(())
/// ```
#[derive(Debug, Default)]
pub struct SlotSizes {
    sizes: RwLock<BTreeMap<u32, u64>>,
}

impl SlotSizes {
    /// Runs `set` (`KVM_SET_USER_MEMORY_REGION` of `slot`) and records the
    /// slot's new size if it succeeded (0 deletes the slot).
    pub fn update<E>(
        &self,
        slot: u32,
        memory_size: u64,
        set: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
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

    /// Runs `get` with the number of words KVM writes for `slot` (its pages
    /// at `page_size` bytes, rounded up to 64) while no slot can change, or
    /// `None` for a slot not set.
    pub fn with_words<R>(
        &self,
        slot: u32,
        page_size: u64,
        get: impl FnOnce(Option<usize>) -> R,
    ) -> R {
        let sizes = self.sizes.read().unwrap_or_else(PoisonError::into_inner);
        let words = sizes
            .get(&slot)
            .map(|&size| bitmap_words(size.div_ceil(page_size.max(1))));
        get(words)
    }

    /// The checks around a `KVM_GET_DIRTY_LOG` of `slot` into `bitmap`:
    /// refuses a slot not set through [`SlotSizes::update`]
    /// ([`DirtyBitmapError::UnknownSlot`]) and a `bitmap` shorter than the
    /// slot's bitmap at `page_size` bytes a bit
    /// ([`DirtyBitmapError::TooShort`]); otherwise runs `get`, which issues
    /// the ioctl, on the first `words` words of `bitmap` (exactly the slot's
    /// bitmap) and turns them from the kernel's little-endian layout into
    /// native words ([`le_bitmap_to_native`]). Words past the slot's are
    /// left as they were.
    ///
    /// # What `get` may rely on
    ///
    /// The kernel writes the slot's whole bitmap without knowing the
    /// buffer's length, so `get` holds an `unsafe` ioctl whose soundness
    /// rests on this function: `get` is called only with a slice of exactly
    /// the words of the slot's bitmap as recorded here, and under the read
    /// lock, so no [`SlotSizes::update`] (and so no
    /// `KVM_SET_USER_MEMORY_REGION` made through it) can change the slot
    /// until `get` returns. That is the kernel's length provided that
    /// `page_size` is the kernel's page (one bitmap bit) and that every
    /// `KVM_SET_USER_MEMORY_REGION` of the VM `get` calls went through this
    /// `SlotSizes`: the caller states both in `get`'s `// SAFETY:` comment.
    /// The function itself does nothing unsafe, hence it is not `unsafe`.
    ///
    /// ```
    /// use kvmkit_core::{DirtyBitmapError, SlotSizes};
    /// let sizes = SlotSizes::default();
    /// sizes.update(0, 65 * 4096, || Ok::<(), ()>(())).unwrap();
    /// let mut bitmap = [7u64; 3];
    /// let r = sizes.checked_get(0, 4096, &mut bitmap, |words| {
    ///     assert_eq!(words.len(), 2); // 65 pages
    ///     words.copy_from_slice(&[u64::to_le(1), u64::to_le(1)]); // as the kernel would
    ///     Ok::<(), DirtyBitmapError>(())
    /// });
    /// assert_eq!((r, bitmap), (Ok(()), [1, 1, 7]));
    /// let r = sizes.checked_get(0, 4096, &mut bitmap[..1], |_| -> Result<(), DirtyBitmapError> {
    ///     unreachable!("refused before the kernel")
    /// });
    /// assert_eq!(
    ///     r.unwrap_err().to_string(),
    ///     "KVM_GET_DIRTY_LOG for slot 0 needs a bitmap of 2 words, the buffer has 1"
    /// );
    /// ```
    pub fn checked_get<E: From<DirtyBitmapError>>(
        &self,
        slot: u32,
        page_size: u64,
        bitmap: &mut [u64],
        get: impl FnOnce(&mut [u64]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.with_words(slot, page_size, |words| {
            let needed = words.ok_or(DirtyBitmapError::UnknownSlot { slot })?;
            let len = bitmap.len();
            let words = bitmap.get_mut(..needed).ok_or(DirtyBitmapError::TooShort {
                ioctl: "KVM_GET_DIRTY_LOG",
                slot,
                needed,
                len,
            })?;
            get(words)?;
            le_bitmap_to_native(words);
            Ok(())
        })
    }
}

/// Why a dirty-log call was refused before the kernel was called; the
/// arch crates' errors wrap it.
///
/// ```
/// let e = kvmkit_core::DirtyBitmapError::UnknownSlot { slot: 3 };
/// assert_eq!(e.to_string(), "KVM_GET_DIRTY_LOG for slot 3: no such slot was set through this VM");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DirtyBitmapError {
    /// A dirty-log bitmap is shorter than what the kernel would access.
    #[error("{ioctl} for slot {slot} needs a bitmap of {needed} words, the buffer has {len}")]
    TooShort {
        /// `KVM_GET_DIRTY_LOG` or `KVM_CLEAR_DIRTY_LOG`.
        ioctl: &'static str,
        /// The slot id.
        slot: u32,
        /// The words the kernel would write or read.
        needed: usize,
        /// The words given.
        len: usize,
    },
    /// `KVM_GET_DIRTY_LOG` of a slot not set through this VM: its size, and
    /// so the bitmap the kernel writes, is unknown.
    #[error("KVM_GET_DIRTY_LOG for slot {slot}: no such slot was set through this VM")]
    UnknownSlot {
        /// The slot id.
        slot: u32,
    },
}

/// The check before a `KVM_CLEAR_DIRTY_LOG` of `num_pages` pages of `slot`:
/// `bitmap` must hold a bit for each ([`DirtyBitmapError::TooShort`]).
///
/// ```
/// use kvmkit_core::{check_clear_bitmap, DirtyBitmapError};
/// assert_eq!(check_clear_bitmap(1, 128, &[0, 0]), Ok(()));
/// assert_eq!(
///     check_clear_bitmap(1, 129, &[0, 0]),
///     Err(DirtyBitmapError::TooShort { ioctl: "KVM_CLEAR_DIRTY_LOG", slot: 1, needed: 3, len: 2 })
/// );
/// ```
pub fn check_clear_bitmap(
    slot: u32,
    num_pages: u32,
    bitmap: &[u64],
) -> Result<(), DirtyBitmapError> {
    let needed = bitmap_words(u64::from(num_pages));
    if bitmap.len() < needed {
        return Err(DirtyBitmapError::TooShort {
            ioctl: "KVM_CLEAR_DIRTY_LOG",
            slot,
            needed,
            len: bitmap.len(),
        });
    }
    Ok(())
}

/// The `u64` words of a bitmap of `pages` bits.
fn bitmap_words(pages: u64) -> usize {
    usize::try_from(pages.div_ceil(64)).unwrap_or(usize::MAX)
}

/// Turns the words of a kernel dirty bitmap (little-endian: page `i` is bit
/// `i % 8` of byte `i / 8`) into native words (bit `i % 64` of word `i / 64`):
/// nothing on little-endian hosts, a byte swap per word on big-endian ones.
///
/// ```
/// let mut w = [u64::from_le(1)];
/// kvmkit_core::le_bitmap_to_native(&mut w);
/// assert_eq!(w, [1]);
/// ```
pub fn le_bitmap_to_native(words: &mut [u64]) {
    for w in words {
        *w = u64::from_le(*w);
    }
}

impl<A: DirtyLogArch> Vm<A> {
    /// Wraps `KVM_ENABLE_CAP` on this VM (see [`DirtyLogArch::enable_vm_cap`]).
    pub fn enable_cap(&self, cap: Capability, args: [u64; 4]) -> crate::Result<()> {
        A::enable_vm_cap(self.arch_fd(), cap, args).map_err(crate::Error::arch)
    }

    /// Wraps `KVM_GET_DIRTY_LOG` (see [`DirtyLogArch::get_dirty_log`]).
    pub fn get_dirty_log(&self, slot: SlotId, bitmap: &mut [u64]) -> crate::Result<()> {
        A::get_dirty_log(self.arch_fd(), slot, bitmap).map_err(crate::Error::arch)
    }

    /// Wraps `KVM_CLEAR_DIRTY_LOG` (see [`DirtyLogArch::clear_dirty_log`]).
    pub fn clear_dirty_log(
        &self,
        slot: SlotId,
        first_page: u64,
        num_pages: u32,
        bitmap: &[u64],
    ) -> crate::Result<()> {
        A::clear_dirty_log(self.arch_fd(), slot, first_page, num_pages, bitmap)
            .map_err(crate::Error::arch)
    }

    /// Wraps `KVM_RESET_DIRTY_RINGS` (see [`DirtyLogArch::reset_dirty_rings`]).
    pub fn reset_dirty_rings(&self) -> crate::Result<u32> {
        A::reset_dirty_rings(self.arch_fd()).map_err(crate::Error::arch)
    }
}

impl<A: DirtyLogArch> Vcpu<A> {
    /// The vCPU fd, to map its dirty ring (see [`DirtyLogArch::vcpu_raw_fd`]).
    pub fn raw_fd(&self) -> RawFd {
        A::vcpu_raw_fd(self.arch_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_sizes_follow_successful_updates_only() {
        let ok = || Ok::<(), &str>(());
        let slots = SlotSizes::default();
        assert_eq!(slots.with_words(0, 4096, |w| w), None);
        // 1 MiB: 256 pages of 4 KiB (4 words), 16 of 64 KiB (1 word).
        slots.update(0, 1 << 20, ok).unwrap();
        assert_eq!(slots.with_words(0, 4096, |w| w), Some(4));
        assert_eq!(slots.with_words(0, 0x1_0000, |w| w), Some(1));
        // 65 pages of 4 KiB: 2 words.
        slots.update(1, 65 * 4096, ok).unwrap();
        assert_eq!(slots.with_words(1, 4096, |w| w), Some(2));
        // A failed update changes nothing.
        assert!(slots.update(1, 1 << 30, || Err("refused")).is_err());
        assert_eq!(slots.with_words(1, 4096, |w| w), Some(2));
        // Deleting (size 0) forgets the slot.
        slots.update(1, 0, ok).unwrap();
        assert_eq!(slots.with_words(1, 4096, |w| w), None);
        assert_eq!(slots.with_words(0, 4096, |w| w), Some(4));
    }

    /// What an arch error looks like to `checked_get`: its own ioctl
    /// failure, or the core check it wraps.
    #[derive(Debug, PartialEq)]
    enum ArchError {
        Ioctl(i32),
        Refused(DirtyBitmapError),
    }

    impl From<DirtyBitmapError> for ArchError {
        fn from(e: DirtyBitmapError) -> Self {
            ArchError::Refused(e)
        }
    }

    #[test]
    fn checked_get_calls_the_ioctl_only_with_the_slots_words() {
        let slots = SlotSizes::default();
        let mut bitmap = [0u64; 4];
        let never = |_: &mut [u64]| -> Result<(), ArchError> { panic!("the kernel was called") };
        assert_eq!(
            slots.checked_get(5, 4096, &mut bitmap, never),
            Err(ArchError::Refused(DirtyBitmapError::UnknownSlot {
                slot: 5
            }))
        );
        slots.update(5, 129 * 4096, || Ok::<(), ()>(())).unwrap();
        assert_eq!(
            slots.checked_get(5, 4096, &mut bitmap[..2], never),
            Err(ArchError::Refused(DirtyBitmapError::TooShort {
                ioctl: "KVM_GET_DIRTY_LOG",
                slot: 5,
                needed: 3,
                len: 2
            }))
        );
        // The ioctl's own error comes back unchanged.
        let failing = |words: &mut [u64]| {
            assert_eq!(words.len(), 3);
            Err(ArchError::Ioctl(libc::EFAULT))
        };
        assert_eq!(
            slots.checked_get(5, 4096, &mut bitmap, failing),
            Err(ArchError::Ioctl(libc::EFAULT))
        );
        // At 64 KiB pages the same slot is 9 pages: one word.
        let mut words_seen = 0;
        slots
            .checked_get(5, 0x1_0000, &mut bitmap, |w| {
                words_seen = w.len();
                Ok::<(), ArchError>(())
            })
            .unwrap();
        assert_eq!(words_seen, 1);
    }

    #[test]
    fn clear_bitmaps_must_cover_num_pages() {
        assert_eq!(check_clear_bitmap(0, 0, &[]), Ok(()));
        assert_eq!(check_clear_bitmap(0, 64, &[0]), Ok(()));
        assert_eq!(
            check_clear_bitmap(2, 65, &[0]).unwrap_err().to_string(),
            "KVM_CLEAR_DIRTY_LOG for slot 2 needs a bitmap of 2 words, the buffer has 1"
        );
        assert_eq!(bitmap_words(u64::from(u32::MAX)), 1 << 26);
    }

    #[test]
    fn the_kernels_little_endian_bitmap_becomes_native_words() {
        // Pages 9 and 70 dirty, as `set_bit_le` leaves the memory on any
        // host: byte 1 bit 1, byte 8 bit 6.
        let mut bytes = [0u8; 16];
        bytes[1] = 1 << 1;
        bytes[8] = 1 << 6;
        let mut words = [
            u64::from_ne_bytes(bytes[..8].try_into().unwrap()),
            u64::from_ne_bytes(bytes[8..].try_into().unwrap()),
        ];
        le_bitmap_to_native(&mut words);
        assert_eq!(words, [1 << 9, 1 << 6]);
    }
}
