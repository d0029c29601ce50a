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
    /// slot they did not set and a `bitmap` shorter than the slot (see
    /// [`SlotSizes`]) before calling it.
    fn get_dirty_log(vm: &Self::VmFd, slot: SlotId, bitmap: &mut [u64]) -> Result<(), Self::Error>;

    /// Wraps `KVM_CLEAR_DIRTY_LOG`: clears (and write-protects again) the
    /// pages of `slot` from `first_page` on whose bits are set in `bitmap`
    /// (bit `i` is page `first_page + i`), `num_pages` pages in all.
    /// `first_page` must be a multiple of 64; `num_pages` too unless the range
    /// reaches the end of the slot. `bitmap` must cover `num_pages` bits.
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
        let words = sizes.get(&slot).map(|&size| {
            let pages = size.div_ceil(page_size.max(1));
            usize::try_from(pages.div_ceil(64)).unwrap_or(usize::MAX)
        });
        get(words)
    }
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
