//! Newtypes shared by every layer.

use std::fmt;

/// The id of a vCPU (`KVM_CREATE_VCPU`'s argument; on x86 the initial APIC id).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct VcpuId(pub u32);

impl fmt::Display for VcpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A KVM memory slot id (the low 16 bits of `kvm_userspace_memory_region.slot`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct SlotId(pub u32);

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Flags of a memory slot (`KVM_MEM_*`), the same on every architecture.
///
/// ```
/// use kvmkit_core::MemoryFlags;
/// let f = MemoryFlags::LOG_DIRTY_PAGES | MemoryFlags::READONLY;
/// assert_eq!(f.bits(), 3);
/// assert!(f.contains(MemoryFlags::READONLY));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct MemoryFlags(u32);

impl MemoryFlags {
    /// No flags: writable, no dirty logging.
    pub const NONE: MemoryFlags = MemoryFlags(0);
    /// `KVM_MEM_LOG_DIRTY_PAGES`: the kernel logs guest writes to this slot.
    pub const LOG_DIRTY_PAGES: MemoryFlags = MemoryFlags(1);
    /// `KVM_MEM_READONLY`: guest writes become MMIO exits.
    pub const READONLY: MemoryFlags = MemoryFlags(2);

    /// The raw flag bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Builds flags from raw bits; unknown bits are kept (the kernel refuses them).
    pub const fn from_bits(bits: u32) -> Self {
        MemoryFlags(bits)
    }

    /// True when every flag of `other` is set in `self`.
    pub const fn contains(self, other: MemoryFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the flags of `other` set or cleared.
    #[must_use]
    pub const fn with(self, other: MemoryFlags, on: bool) -> Self {
        if on {
            MemoryFlags(self.0 | other.0)
        } else {
            MemoryFlags(self.0 & !other.0)
        }
    }
}

impl std::ops::BitOr for MemoryFlags {
    type Output = MemoryFlags;
    fn bitor(self, rhs: MemoryFlags) -> MemoryFlags {
        MemoryFlags(self.0 | rhs.0)
    }
}

/// A `kvm_userspace_memory_region`, portable: the struct is the same on every
/// architecture; only the ioctl number that carries it is encoded per arch.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UserMemoryRegion {
    /// The slot id.
    pub slot: SlotId,
    /// `KVM_MEM_*` flags.
    pub flags: MemoryFlags,
    /// The guest physical address of the first byte.
    pub guest_phys_addr: u64,
    /// The size in bytes; 0 deletes the slot.
    pub memory_size: u64,
    /// The host virtual address backing the first byte.
    pub userspace_addr: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_compose() {
        let f = MemoryFlags::NONE.with(MemoryFlags::READONLY, true);
        assert!(f.contains(MemoryFlags::READONLY));
        assert!(!f.contains(MemoryFlags::LOG_DIRTY_PAGES));
        let f = (f | MemoryFlags::LOG_DIRTY_PAGES).with(MemoryFlags::READONLY, false);
        assert_eq!(f, MemoryFlags::LOG_DIRTY_PAGES);
        assert_eq!(MemoryFlags::from_bits(2), MemoryFlags::READONLY);
        assert_eq!(VcpuId(3).to_string(), "3");
        assert_eq!(SlotId(7).to_string(), "7");
    }
}
