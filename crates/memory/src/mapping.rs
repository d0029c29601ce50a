//! Host mappings of guest memory, made with vm-memory.

use crate::{Backing, Error, RegionConfig, Result, Slot};
use vm_memory::bitmap::NewBitmap;
use vm_memory::{GuestRegionMmap, MmapRegion, VolatileMemory};

/// Maps the host memory of a region that passed `rules::check_region`:
/// private anonymous memory, or the caller's file shared or private.
pub(crate) fn map<B: NewBitmap>(config: &RegionConfig) -> Result<GuestRegionMmap<B>> {
    let (gpa, len) = (config.gpa.0, config.len);
    let size = usize::try_from(len).expect("vm-memory builds only for 64-bit hosts");
    let mmap = match &config.backing {
        Backing::Anonymous => MmapRegion::<B>::new(size),
        Backing::File(f) => MmapRegion::<B>::from_file(f.clone(), size),
        Backing::FilePrivate(f) => MmapRegion::<B>::build(
            Some(f.clone()),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        ),
    }
    .map_err(|source| Error::MapRegion { gpa, len, source })?;
    Ok(GuestRegionMmap::new(mmap, config.gpa)
        .expect("the region was checked not to overflow the address space"))
}

/// Copies the common prefix of `from`'s memory into `to`.
pub(crate) fn copy_contents<B: NewBitmap>(from: &Slot<B>, to: &Slot<B>) -> Result<()> {
    let err = |source| Error::CopyContents {
        slot: from.id,
        gpa: from.gpa().0,
        source,
    };
    let count =
        usize::try_from(from.len().min(to.len())).expect("vm-memory builds only for 64-bit hosts");
    let src = VolatileMemory::get_slice(&**from.region, 0, count).map_err(err)?;
    let dst = VolatileMemory::get_slice(&**to.region, 0, count).map_err(err)?;
    src.copy_to_volatile_slice(dst);
    Ok(())
}
