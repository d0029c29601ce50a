//! [`HostWrites`]: which vm-memory bitmaps record the VMM's own writes.

use std::sync::Arc;

use vm_memory::bitmap::{AtomicBitmap, Bitmap};
use vm_memory::GuestRegionMmap;

/// A vm-memory bitmap type the tracker can merge into the harvest: the pages
/// the VMM itself (devices, loaders) wrote through vm-memory, which KVM never
/// sees.
///
/// Implemented for `()` (vm-memory's no-op bitmap: nothing to merge) and for
/// [`AtomicBitmap`] (harvested word by word with `get_and_reset`, so a write
/// marked while the harvest runs is kept for the next one). This is the
/// `B` of a `kvmkit_memory::SlotTable<A, B>`.
///
/// ```
/// use std::sync::Arc;
/// use kvmkit_dirty_log::HostWrites;
/// use vm_memory::bitmap::AtomicBitmap;
/// use vm_memory::{GuestAddress, GuestRegionMmap};
///
/// let region = Arc::new(GuestRegionMmap::<AtomicBitmap>::from_range(GuestAddress(0), 0x4000, None).unwrap());
/// assert!(AtomicBitmap::host_writes(&region).is_some());
/// let plain = Arc::new(GuestRegionMmap::<()>::from_range(GuestAddress(0), 0x4000, None).unwrap());
/// assert!(<()>::host_writes(&plain).is_none());
/// ```
pub trait HostWrites: Bitmap + Sized {
    /// The region whose bitmap records host writes, if this bitmap type
    /// records any.
    fn host_writes(
        region: &Arc<GuestRegionMmap<Self>>,
    ) -> Option<Arc<GuestRegionMmap<AtomicBitmap>>>;
}

impl HostWrites for () {
    fn host_writes(_: &Arc<GuestRegionMmap<()>>) -> Option<Arc<GuestRegionMmap<AtomicBitmap>>> {
        None
    }
}

impl HostWrites for AtomicBitmap {
    fn host_writes(
        region: &Arc<GuestRegionMmap<AtomicBitmap>>,
    ) -> Option<Arc<GuestRegionMmap<AtomicBitmap>>> {
        Some(Arc::clone(region))
    }
}
