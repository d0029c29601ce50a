//! The crate's error type.

use kvmkit_core::{SlotId, VcpuId};

/// Errors of the dirty-log crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Building a bitmap from words failed: the word count does not match the page count.
    #[error("building a bitmap of {pages} pages needs {expected} words, got {words}")]
    FromWords {
        /// Pages the bitmap was to cover.
        pages: usize,
        /// Words needed for `pages`.
        expected: usize,
        /// Words supplied.
        words: usize,
    },
    /// Merging two bitmaps failed: they cover different numbers of pages.
    #[error("merging a bitmap of {other} pages into one of {pages} pages")]
    Merge {
        /// Pages of the bitmap merged into.
        pages: usize,
        /// Pages of the bitmap merged in.
        other: usize,
    },
    /// Harvesting a vm-memory `AtomicBitmap` failed: it does not track 4 KiB pages.
    #[error(
        "harvesting a vm-memory bitmap of {byte_size:#x} bytes in {pages} pages: not 4 KiB pages"
    )]
    HarvestAtomicBitmap {
        /// Bytes the vm-memory bitmap covers.
        byte_size: usize,
        /// Pages (bits) of the vm-memory bitmap.
        pages: usize,
    },
    /// Accumulating a harvest into the log failed: the slot's page count changed.
    #[error("accumulating {other} pages into slot {slot} which has {pages} pages")]
    Accumulate {
        /// The slot.
        slot: SlotId,
        /// Pages accumulated so far for the slot.
        pages: usize,
        /// Pages of the new harvest.
        other: usize,
    },
    /// Computing framebuffer damage failed: the geometry is inconsistent.
    #[error("computing damage for a {width_px}x{height_px} framebuffer at {bytes_per_px} bytes per pixel with stride {stride_bytes}: row wider than stride or size overflows")]
    DamageRects {
        /// Width in pixels.
        width_px: u32,
        /// Height in pixels.
        height_px: u32,
        /// Bytes per pixel.
        bytes_per_px: u32,
        /// Bytes from one row to the next.
        stride_bytes: u32,
    },
    /// Choosing a backend failed: the forced backend needs a capability the
    /// kernel does not offer.
    #[error(
        "the {backend} dirty-log backend needs {capability}, which this kernel does not offer"
    )]
    Unsupported {
        /// The backend asked for: `manual-protect` or `dirty-ring`.
        backend: &'static str,
        /// The capability (or capabilities) it needs.
        capability: &'static str,
    },
    /// Choosing the ring backend failed: the ring size breaks KVM's rules.
    #[error("a dirty ring of {bytes} bytes per vCPU: it must be a power of two from 4096 to {max} bytes")]
    RingSize {
        /// The size asked for.
        bytes: u32,
        /// The kernel's maximum (the capability's value).
        max: u32,
    },
    /// Creating a tracker failed: the host's pages are not 4 KiB, while
    /// KVM's dirty bits are host pages and this crate's bitmaps 4 KiB pages.
    #[error("the host page size is {page_size:#x} bytes: the dirty log needs 4 KiB pages")]
    HostPageSize {
        /// The host page size.
        page_size: u64,
    },
    /// Creating a tracker failed: the host page size could not be read.
    #[error("reading the host page size (sysconf(_SC_PAGESIZE)) failed")]
    HostPageSizeUnknown {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Setting the manual-protect clear chunk failed: not a non-zero multiple of 64 pages.
    #[error("a KVM_CLEAR_DIRTY_LOG chunk of {pages} pages: it must be a non-zero multiple of 64")]
    ClearChunk {
        /// The chunk asked for, in pages.
        pages: usize,
    },
    /// `KVM_ENABLE_CAP` for the chosen backend failed.
    #[error("KVM_ENABLE_CAP {cap} with argument {arg:#x} failed{hint}")]
    EnableCap {
        /// The capability's name.
        cap: &'static str,
        /// Its first argument: ring bytes or manual-protect flags.
        arg: u64,
        /// What the kernel requires, for the ring (enabled before any vCPU exists).
        hint: &'static str,
        /// The cause.
        #[source]
        source: kvmkit_core::Error,
    },
    /// Mapping a vCPU's dirty ring failed.
    #[error("mapping the {bytes}-byte dirty ring of vCPU {vcpu} failed")]
    MapRing {
        /// The vCPU.
        vcpu: VcpuId,
        /// The ring size.
        bytes: u32,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Attaching a vCPU's ring failed: it is attached already.
    #[error("attaching the dirty ring of vCPU {vcpu}: it is attached already")]
    RingAttached {
        /// The vCPU.
        vcpu: VcpuId,
    },
    /// Emptying a full ring failed: the vCPU's ring was never attached, so
    /// nothing can harvest it.
    #[error("the dirty ring of vCPU {vcpu} is full but was never attached to the tracker")]
    RingNotAttached {
        /// The vCPU.
        vcpu: VcpuId,
    },
    /// Emptying a full ring failed: the vCPU exited twice in a row with a
    /// full ring in which there was nothing to collect, so entering it again
    /// would only exit again.
    #[error("the dirty ring of vCPU {vcpu} stays full but holds nothing to collect")]
    RingStuck {
        /// The vCPU.
        vcpu: VcpuId,
    },
    /// Tracking a slot failed: it is tracked already.
    #[error("tracking slot {slot}: it is tracked already")]
    SlotTracked {
        /// The slot.
        slot: SlotId,
    },
    /// Stopping tracking failed: the slot is not tracked.
    #[error("slot {slot} is not tracked")]
    SlotNotTracked {
        /// The slot.
        slot: SlotId,
    },
    /// Tracking a slot failed: its size is not a non-zero number of 4 KiB pages.
    #[error(
        "tracking slot {slot} of {len:#x} bytes: the size must be a non-zero multiple of 4 KiB"
    )]
    SlotSize {
        /// The slot.
        slot: SlotId,
        /// Its size in bytes.
        len: u64,
    },
    /// Turning logging on or off through a slot table failed: the table is
    /// not registered with the tracker's VM.
    #[error("turning dirty logging of slot {slot} on or off: the slot table is not registered with the tracker's VM")]
    ForeignTable {
        /// The slot.
        slot: SlotId,
    },
    /// Turning logging on or off through a slot table failed: the slot is
    /// not in the table.
    #[error("turning dirty logging of slot {slot} on or off: no such slot in the table")]
    UnknownSlot {
        /// The slot.
        slot: SlotId,
    },
    /// `KVM_SET_USER_MEMORY_REGION` with or without `KVM_MEM_LOG_DIRTY_PAGES` failed.
    #[error("turning dirty logging of slot {slot} {} failed", if *on { "on" } else { "off" })]
    SetDirtyLogging {
        /// The slot.
        slot: SlotId,
        /// On or off.
        on: bool,
        /// The cause.
        #[source]
        source: kvmkit_memory::Error,
    },
    /// `KVM_GET_DIRTY_LOG` failed (the slot was removed, or its logging was
    /// turned off, without telling the tracker).
    #[error("KVM_GET_DIRTY_LOG failed for slot {slot}")]
    GetDirtyLog {
        /// The slot.
        slot: SlotId,
        /// The cause.
        #[source]
        source: kvmkit_core::Error,
    },
    /// `KVM_CLEAR_DIRTY_LOG` failed.
    #[error(
        "KVM_CLEAR_DIRTY_LOG failed for slot {slot}, {num_pages} pages from page {first_page}"
    )]
    ClearDirtyLog {
        /// The slot.
        slot: SlotId,
        /// The first page of the chunk.
        first_page: u64,
        /// The pages of the chunk.
        num_pages: u32,
        /// The cause.
        #[source]
        source: kvmkit_core::Error,
    },
    /// `KVM_RESET_DIRTY_RINGS` failed; the entries stay collected and the
    /// next harvest resets them.
    #[error("KVM_RESET_DIRTY_RINGS failed")]
    ResetDirtyRings {
        /// The cause.
        #[source]
        source: kvmkit_core::Error,
    },
}

/// The crate's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
