//! The two calls into `KVM_SET_USER_MEMORY_REGION`: the only `unsafe` of the crate.
//!
//! The invariant that makes them sound is kept by `SlotTable`: a slot whose
//! `registered` flag is set holds (in `Slot::region`) an `Arc` of the mapping
//! KVM was given, and the table drops that `Arc` only after [`delete`]
//! succeeded for the slot. Where deletion fails and the slot must go anyway
//! (`Drop`), the table leaks the mapping instead of unmapping it.

use crate::{Error, Result, Slot};
use kvmkit_core::{Arch, MemoryFlags, UserMemoryRegion, Vm};
use vm_memory::bitmap::Bitmap;

/// Tells KVM about `slot` with `flags`: creates it, or changes the flags of
/// an existing slot with the same address, size and mapping. `op` names the
/// operation in the error.
pub(crate) fn set<A: Arch, B: Bitmap>(
    vm: &Vm<A>,
    slot: &Slot<B>,
    flags: MemoryFlags,
    op: &'static str,
) -> Result<()> {
    let region = UserMemoryRegion {
        flags,
        ..slot.user_memory_region()
    };
    // SAFETY: `region.userspace_addr .. + memory_size` is exactly the mapping
    // of `slot.region` (vm-memory maps `len` bytes at `as_ptr()`), an `Arc`
    // the table keeps in the slot for as long as KVM has the slot: every path
    // that drops a slot's `Arc` (remove, resize, unregister, `Drop`) first
    // deletes the slot with `delete` below, and `Drop` leaks the `Arc` when
    // that fails. The memory is only ever accessed through vm-memory's
    // volatile accessors, never through Rust references, so the guest
    // writing it concurrently breaks no aliasing assumption.
    unsafe { vm.set_user_memory_region(&region) }.map_err(|source| Error::SetUserMemoryRegion {
        op,
        slot: slot.id,
        gpa: region.guest_phys_addr,
        source,
    })
}

/// Deletes `slot` from KVM (`memory_size` 0, as KVM requires).
pub(crate) fn delete<A: Arch, B: Bitmap>(vm: &Vm<A>, slot: &Slot<B>) -> Result<()> {
    let region = UserMemoryRegion {
        memory_size: 0,
        ..slot.user_memory_region()
    };
    // SAFETY: a zero-sized region deletes the slot; KVM keeps no reference to
    // any host memory afterwards, so there is no mapping whose lifetime
    // matters.
    unsafe { vm.set_user_memory_region(&region) }.map_err(|source| Error::SetUserMemoryRegion {
        op: "delete",
        slot: slot.id,
        gpa: region.guest_phys_addr,
        source,
    })
}
