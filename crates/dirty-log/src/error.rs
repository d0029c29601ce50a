//! The crate's error type.

use kvmkit_core::SlotId;

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
}

/// The crate's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
