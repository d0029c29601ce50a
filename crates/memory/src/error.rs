//! The error type of the slot table and the RAM layout helpers.

use kvmkit_core::SlotId;

/// Errors of `kvmkit-memory`.
///
/// Every message names the slot and the guest physical addresses involved,
/// in hex. Ranges are written half-open, `[start, end)`.
///
/// ```
/// use kvmkit_core::SlotId;
/// use kvmkit_memory::Error;
/// let e = Error::Overlap { gpa: 0x1000, end: 0x3000, slot: SlotId(0), slot_gpa: 0, slot_end: 0x2000 };
/// assert_eq!(e.to_string(), "region [0x1000, 0x3000) overlaps slot 0 at [0x0, 0x2000)");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A region of zero bytes.
    #[error("region at {gpa:#x} has size 0")]
    ZeroSize {
        /// The region's guest physical address.
        gpa: u64,
    },
    /// The guest physical address is not a multiple of the page size.
    #[error("region at {gpa:#x} is not aligned to the {page_size:#x}-byte page size")]
    UnalignedAddress {
        /// The region's guest physical address.
        gpa: u64,
        /// The table's page size.
        page_size: u64,
    },
    /// The size is not a multiple of the page size.
    #[error(
        "region at {gpa:#x} has size {len:#x}, not a multiple of the {page_size:#x}-byte page size"
    )]
    UnalignedSize {
        /// The region's guest physical address.
        gpa: u64,
        /// The region's size in bytes.
        len: u64,
        /// The table's page size.
        page_size: u64,
    },
    /// The offset into the backing file is not a multiple of the page size.
    #[error(
        "region at {gpa:#x}: file offset {offset:#x} is not a multiple of the {page_size:#x}-byte page size"
    )]
    UnalignedFileOffset {
        /// The region's guest physical address.
        gpa: u64,
        /// The offset into the file.
        offset: u64,
        /// The table's page size.
        page_size: u64,
    },
    /// The backing file ends before the region does: the guest would fault.
    #[error(
        "region at {gpa:#x}: the backing file has {file_len:#x} bytes, too few for {len:#x} bytes at offset {offset:#x}"
    )]
    FileTooShort {
        /// The region's guest physical address.
        gpa: u64,
        /// The offset into the file.
        offset: u64,
        /// The region's size in bytes.
        len: u64,
        /// The file's size in bytes.
        file_len: u64,
    },
    /// Reading the backing file's metadata (its size) failed.
    #[error("region at {gpa:#x}: cannot read the metadata of the backing file")]
    FileMetadata {
        /// The region's guest physical address.
        gpa: u64,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The region runs past the end of the 64-bit guest physical address space.
    #[error(
        "region at {gpa:#x} of size {len:#x} runs past the end of the guest physical address space"
    )]
    AddressOverflow {
        /// The region's guest physical address.
        gpa: u64,
        /// The region's size in bytes.
        len: u64,
    },
    /// The region overlaps a slot already in the table.
    #[error("region [{gpa:#x}, {end:#x}) overlaps slot {slot} at [{slot_gpa:#x}, {slot_end:#x})")]
    Overlap {
        /// The new region's guest physical address.
        gpa: u64,
        /// The new region's end (exclusive).
        end: u64,
        /// The slot it overlaps.
        slot: SlotId,
        /// That slot's guest physical address.
        slot_gpa: u64,
        /// That slot's end (exclusive).
        slot_end: u64,
    },
    /// Every slot id below the table's limit is in use.
    #[error("cannot add the region at {gpa:#x}: all {max_slots} memory slots are in use")]
    TooManySlots {
        /// The region's guest physical address.
        gpa: u64,
        /// The table's limit.
        max_slots: u32,
    },
    /// The table holds a slot id the VM does not allow (`KVM_CAP_NR_MEMSLOTS`).
    #[error(
        "slot {slot} is beyond the {max_slots} memory slots this VM allows (KVM_CAP_NR_MEMSLOTS)"
    )]
    SlotLimit {
        /// The slot.
        slot: SlotId,
        /// The VM's limit.
        max_slots: u32,
    },
    /// No slot with this id.
    #[error("no memory slot {slot}")]
    UnknownSlot {
        /// The slot asked for.
        slot: SlotId,
    },
    /// Flags other than `LOG_DIRTY_PAGES` and `READONLY`.
    #[error("region at {gpa:#x} has unsupported memory flags {flags:#x}")]
    UnsupportedFlags {
        /// The region's guest physical address.
        gpa: u64,
        /// The raw flag bits.
        flags: u32,
    },
    /// A read-only slot on a kernel without `KVM_CAP_READONLY_MEM`.
    #[error("slot {slot} at {gpa:#x} is read-only but this VM lacks KVM_CAP_READONLY_MEM")]
    ReadOnlyUnsupported {
        /// The slot.
        slot: SlotId,
        /// Its guest physical address.
        gpa: u64,
    },
    /// Mapping the host memory that backs a region failed.
    #[error("cannot map {len:#x} bytes of host memory for the region at {gpa:#x}")]
    MapRegion {
        /// The region's guest physical address.
        gpa: u64,
        /// The region's size in bytes.
        len: u64,
        /// The cause.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    /// Copying a slot's contents into its resized mapping failed.
    #[error("cannot copy the contents of slot {slot} at {gpa:#x} into its resized mapping")]
    CopyContents {
        /// The slot.
        slot: SlotId,
        /// Its guest physical address.
        gpa: u64,
        /// The cause.
        #[source]
        source: vm_memory::VolatileMemoryError,
    },
    /// `KVM_SET_USER_MEMORY_REGION` failed; `op` says what it was asked to do.
    #[error("KVM_SET_USER_MEMORY_REGION failed to {op} slot {slot} at {gpa:#x}")]
    SetUserMemoryRegion {
        /// `"add"`, `"delete"` or `"update the flags of"`.
        op: &'static str,
        /// The slot.
        slot: SlotId,
        /// Its guest physical address.
        gpa: u64,
        /// The cause, from the arch backend (its message names the errno).
        #[source]
        source: kvmkit_core::Error,
    },
    /// `register` on a table that is already registered with a VM.
    #[error("the slot table is already registered with a VM")]
    AlreadyRegistered,
    /// A page size that is not a power of two of at least 4 KiB.
    #[error("page size {page_size:#x} is not a power of two of at least 0x1000")]
    InvalidPageSize {
        /// The page size asked for.
        page_size: u64,
    },
    /// A RAM size of zero, or not a multiple of 4 KiB, given to the layout helper.
    #[error("RAM size {ram_bytes:#x} is zero or not a multiple of 0x1000")]
    RamSize {
        /// The RAM size asked for.
        ram_bytes: u64,
    },
    /// A hole that is empty, not 4 KiB-aligned, or runs past the end of the
    /// address space.
    #[error("memory hole at {start:#x} of size {len:#x} is empty, not 4 KiB-aligned or runs past the end of the address space")]
    InvalidHole {
        /// The hole's first address.
        start: u64,
        /// The hole's size in bytes.
        len: u64,
    },
    /// Two holes given to the layout helper overlap.
    #[error("memory holes [{start:#x}, {end:#x}) and [{other_start:#x}, {other_end:#x}) overlap")]
    OverlappingHoles {
        /// The first hole's start.
        start: u64,
        /// The first hole's end (exclusive).
        end: u64,
        /// The second hole's start.
        other_start: u64,
        /// The second hole's end (exclusive).
        other_end: u64,
    },
}

/// The result type of this crate.
///
/// ```
/// fn ram(bytes: u64) -> kvmkit_memory::Result<usize> {
///     Ok(kvmkit_memory::pc_layout(bytes)?.len())
/// }
/// assert_eq!(ram(2 << 20).unwrap(), 2);
/// assert!(ram(0).is_err());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_slot_and_addresses_in_hex() {
        let e = Error::SetUserMemoryRegion {
            op: "delete",
            slot: SlotId(3),
            gpa: 0x10_0000,
            source: kvmkit_core::Error::arch(std::io::Error::other("EINVAL")),
        };
        assert_eq!(
            e.to_string(),
            "KVM_SET_USER_MEMORY_REGION failed to delete slot 3 at 0x100000"
        );
        let src = std::error::Error::source(&e).expect("keeps its cause");
        assert_eq!(src.to_string(), "EINVAL");
        assert_eq!(
            Error::UnknownSlot { slot: SlotId(9) }.to_string(),
            "no memory slot 9"
        );
        assert_eq!(
            Error::TooManySlots {
                gpa: 0x2000,
                max_slots: 2
            }
            .to_string(),
            "cannot add the region at 0x2000: all 2 memory slots are in use"
        );
    }
}
