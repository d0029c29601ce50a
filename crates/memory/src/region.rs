//! What a region is made of: its description and the slot the table keeps.

use kvmkit_core::{MemoryFlags, SlotId, UserMemoryRegion};
use std::fmt;
use std::sync::Arc;
use vm_memory::bitmap::Bitmap;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryRegion, GuestRegionMmap};

/// Where the host memory behind a region comes from.
///
/// ```
/// use kvmkit_memory::Backing;
/// use vm_memory::FileOffset;
/// # let file = std::fs::File::open("/dev/null").unwrap();
/// let anon = Backing::Anonymous;
/// let from_file = Backing::File(FileOffset::new(file, 0));
/// # let _ = (anon, from_file);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Backing {
    /// Private anonymous memory the table maps (zero-filled, `MAP_NORESERVE`).
    Anonymous,
    /// A shared mapping of a caller's file at an offset (`MAP_SHARED`): guest
    /// writes reach the file, which makes it usable for snapshots and for
    /// sharing guest RAM with another process (memfd).
    File(FileOffset),
    /// A private copy-on-write mapping of a caller's file (`MAP_PRIVATE`):
    /// the guest's first read of a page faults it in from the file, its
    /// writes stay in this process and never reach the file. Restoring a
    /// snapshot maps its memory file this way: nothing is read up front.
    FilePrivate(FileOffset),
}

/// A region to add to a [`crate::SlotTable`]: where it goes, how big it is,
/// its flags and its backing.
///
/// ```
/// use kvmkit_memory::RegionConfig;
/// use kvmkit_core::MemoryFlags;
/// use vm_memory::GuestAddress;
/// let rom = RegionConfig::anonymous(GuestAddress(0xfff0_0000), 0x10_0000).read_only(true);
/// assert_eq!(rom.flags, MemoryFlags::READONLY);
/// let ram = RegionConfig::anonymous(GuestAddress(0), 0x10_0000).dirty_logging(true);
/// assert!(ram.flags.contains(MemoryFlags::LOG_DIRTY_PAGES));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RegionConfig {
    /// The guest physical address of the first byte; page-aligned.
    pub gpa: GuestAddress,
    /// The size in bytes; non-zero and page-aligned.
    pub len: u64,
    /// `KVM_MEM_*` flags: [`MemoryFlags::READONLY`] and
    /// [`MemoryFlags::LOG_DIRTY_PAGES`] are supported.
    pub flags: MemoryFlags,
    /// The host memory behind it.
    pub backing: Backing,
}

impl RegionConfig {
    /// `len` bytes of anonymous memory at `gpa`, writable, not dirty-logged.
    pub fn anonymous(gpa: GuestAddress, len: u64) -> Self {
        RegionConfig {
            gpa,
            len,
            flags: MemoryFlags::NONE,
            backing: Backing::Anonymous,
        }
    }

    /// `len` bytes of `file` from its offset, mapped private (copy-on-write)
    /// at `gpa`: pages are read from the file when the guest first touches
    /// them; writes stay in memory.
    pub fn file_private(gpa: GuestAddress, len: u64, file: FileOffset) -> Self {
        RegionConfig {
            gpa,
            len,
            flags: MemoryFlags::NONE,
            backing: Backing::FilePrivate(file),
        }
    }

    /// `len` bytes of `file` from its offset, mapped shared, at `gpa`.
    pub fn file(gpa: GuestAddress, len: u64, file: FileOffset) -> Self {
        RegionConfig {
            gpa,
            len,
            flags: MemoryFlags::NONE,
            backing: Backing::File(file),
        }
    }

    /// Sets or clears [`MemoryFlags::READONLY`]: guest writes become MMIO exits.
    #[must_use]
    pub fn read_only(mut self, on: bool) -> Self {
        self.flags = self.flags.with(MemoryFlags::READONLY, on);
        self
    }

    /// Sets or clears [`MemoryFlags::LOG_DIRTY_PAGES`].
    #[must_use]
    pub fn dirty_logging(mut self, on: bool) -> Self {
        self.flags = self.flags.with(MemoryFlags::LOG_DIRTY_PAGES, on);
        self
    }
}

/// One memory slot of a [`crate::SlotTable`]: its id, flags and the mapping
/// that backs it.
///
/// The mapping is shared (`Arc`) with the snapshots of guest memory the table
/// publishes, so it lives as long as the longest of them.
///
/// ```
/// use kvmkit_memory::{RegionConfig, SlotTable};
/// use kvmkit_arch_x86_64::X86_64;
/// use vm_memory::GuestAddress;
/// let mut table = SlotTable::<X86_64>::new(8);
/// let id = table.add(RegionConfig::anonymous(GuestAddress(0x10_0000), 0x2000)).unwrap();
/// let slot = table.slot(id).unwrap();
/// assert_eq!((slot.gpa(), slot.len(), slot.end()), (GuestAddress(0x10_0000), 0x2000, GuestAddress(0x10_2000)));
/// assert!(slot.contains(GuestAddress(0x10_1fff)) && !slot.contains(GuestAddress(0x10_2000)));
/// assert!(!slot.is_read_only() && !slot.logs_dirty_pages() && !slot.is_registered());
/// let r = slot.user_memory_region();
/// assert_eq!((r.slot, r.guest_phys_addr, r.memory_size), (id, 0x10_0000, 0x2000));
/// ```
pub struct Slot<B = ()> {
    pub(crate) id: SlotId,
    pub(crate) flags: MemoryFlags,
    pub(crate) region: Arc<GuestRegionMmap<B>>,
    pub(crate) registered: bool,
}

impl<B: Bitmap> Slot<B> {
    /// The slot id KVM knows it by.
    pub fn id(&self) -> SlotId {
        self.id
    }

    /// The guest physical address of the first byte.
    pub fn gpa(&self) -> GuestAddress {
        self.region.start_addr()
    }

    /// The size in bytes.
    pub fn len(&self) -> u64 {
        self.region.len()
    }

    /// Always false: the table refuses empty regions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first guest physical address after the slot (the table refuses
    /// regions that would end past `u64::MAX`).
    pub fn end(&self) -> GuestAddress {
        GuestAddress(self.gpa().0 + self.len())
    }

    /// True when `addr` is inside the slot.
    pub fn contains(&self, addr: GuestAddress) -> bool {
        addr >= self.gpa() && addr < self.end()
    }

    /// The slot's `KVM_MEM_*` flags.
    pub fn flags(&self) -> MemoryFlags {
        self.flags
    }

    /// True when guest writes to the slot become MMIO exits.
    pub fn is_read_only(&self) -> bool {
        self.flags.contains(MemoryFlags::READONLY)
    }

    /// True when the kernel logs guest writes to the slot.
    pub fn logs_dirty_pages(&self) -> bool {
        self.flags.contains(MemoryFlags::LOG_DIRTY_PAGES)
    }

    /// The backing file and offset, for file-backed slots.
    pub fn file_offset(&self) -> Option<&FileOffset> {
        self.region.file_offset()
    }

    /// True for a private (copy-on-write) file mapping, see
    /// [`Backing::FilePrivate`].
    pub fn is_private_file(&self) -> bool {
        self.file_offset().is_some() && self.region.flags() & libc::MAP_PRIVATE != 0
    }

    /// The vm-memory region: host access, its dirty bitmap `B`.
    pub fn region(&self) -> &Arc<GuestRegionMmap<B>> {
        &self.region
    }

    /// The host virtual address of the first byte.
    pub fn host_addr(&self) -> u64 {
        self.region.as_ptr() as u64
    }

    /// True while KVM has this slot (the table is registered with a VM).
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// The `kvm_userspace_memory_region` that describes the slot to KVM.
    pub fn user_memory_region(&self) -> UserMemoryRegion {
        UserMemoryRegion {
            slot: self.id,
            flags: self.flags,
            guest_phys_addr: self.gpa().0,
            memory_size: self.len(),
            userspace_addr: self.host_addr(),
        }
    }
}

impl<B: Bitmap> fmt::Debug for Slot<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("id", &self.id)
            .field("gpa", &format_args!("{:#x}", self.gpa().0))
            .field("len", &format_args!("{:#x}", self.len()))
            .field("flags", &self.flags)
            .field("file_offset", &self.file_offset().map(|f| f.start()))
            .field("registered", &self.registered)
            .finish()
    }
}
