//! [`DirtyLogArch`]: the dirty-log ioctls, an extension of the `Arch` contract.
//!
//! The dirty log is portable (the same structs and semantics on every
//! architecture) but its ioctl numbers are not: PowerPC encodes direction and
//! size bits differently from x86 and s390x. So each arch crate issues these
//! calls itself, and the portable dirty-log crate is generic over
//! `A: DirtyLogArch`. It is an extension trait rather than part of [`Arch`]
//! because a VMM that never logs dirty pages needs none of it.

use crate::{Arch, Capability, SlotId, Vcpu, Vm};
use std::os::unix::io::RawFd;

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

/// `KVM_DIRTY_LOG_PAGE_OFFSET`: the dirty ring is mapped from the vCPU fd at
/// this many host pages.
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
pub trait DirtyLogArch: Arch {
    /// Wraps `KVM_ENABLE_CAP` on the VM fd with `args` (the four argument
    /// words). Used for `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2` and
    /// `KVM_CAP_DIRTY_LOG_RING[_ACQ_REL]`.
    fn enable_vm_cap(vm: &Self::VmFd, cap: Capability, args: [u64; 4]) -> Result<(), Self::Error>;

    /// Wraps `KVM_GET_DIRTY_LOG` for `slot` into `bitmap`, KVM's layout: bit
    /// `i % 64` of word `i / 64` is page `i`. The caller sizes `bitmap` to
    /// cover the slot (the kernel writes `ceil(pages / 64)` words).
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
