//! The table's rules: what a region must satisfy, and which slot id it gets.

use crate::{Backing, Error, RegionConfig, Result, Slot};
use kvmkit_core::{Arch, Capability, MemoryFlags, SlotId, Vm};
use std::collections::BTreeMap;
use vm_memory::bitmap::Bitmap;
use vm_memory::FileOffset;

/// The flags a slot may carry.
const SUPPORTED_FLAGS: u32 = MemoryFlags::READONLY.bits() | MemoryFlags::LOG_DIRTY_PAGES.bits();

/// Checks `config` against the rules and against `slots` (keyed by guest
/// physical address, disjoint), ignoring the slot `except` (one being
/// replaced): supported flags, non-zero size, page alignment of address and
/// size, no overflow, no overlap, and for files the offset and length.
pub(crate) fn check_region<B: Bitmap>(
    config: &RegionConfig,
    page_size: u64,
    slots: &BTreeMap<u64, Slot<B>>,
    except: Option<SlotId>,
) -> Result<()> {
    let (gpa, len) = (config.gpa.0, config.len);
    if config.flags.bits() & !SUPPORTED_FLAGS != 0 {
        return Err(Error::UnsupportedFlags {
            gpa,
            flags: config.flags.bits(),
        });
    }
    if len == 0 {
        return Err(Error::ZeroSize { gpa });
    }
    if gpa % page_size != 0 {
        return Err(Error::UnalignedAddress { gpa, page_size });
    }
    if len % page_size != 0 {
        return Err(Error::UnalignedSize {
            gpa,
            len,
            page_size,
        });
    }
    let end = gpa
        .checked_add(len)
        .ok_or(Error::AddressOverflow { gpa, len })?;
    // The slots are disjoint, so only the last one starting below `end`
    // can reach into the new range.
    let below = slots
        .range(..end)
        .rev()
        .map(|(_, s)| s)
        .find(|s| Some(s.id) != except);
    if let Some(s) = below.filter(|s| s.end().0 > gpa) {
        return Err(Error::Overlap {
            gpa,
            end,
            slot: s.id,
            slot_gpa: s.gpa().0,
            slot_end: s.end().0,
        });
    }
    if let Backing::File(f) | Backing::FilePrivate(f) = &config.backing {
        check_file(f, gpa, len, page_size)?;
    }
    Ok(())
}

/// The file offset must be page-aligned, and a regular file must be long
/// enough (a guest access past its end would fault the VMM with `SIGBUS`).
fn check_file(f: &FileOffset, gpa: u64, len: u64, page_size: u64) -> Result<()> {
    let offset = f.start();
    if offset % page_size != 0 {
        return Err(Error::UnalignedFileOffset {
            gpa,
            offset,
            page_size,
        });
    }
    let meta = f
        .file()
        .metadata()
        .map_err(|source| Error::FileMetadata { gpa, source })?;
    // Only regular files have a meaningful size (not block devices).
    if meta.is_file() && offset.checked_add(len).is_none_or(|end| end > meta.len()) {
        return Err(Error::FileTooShort {
            gpa,
            offset,
            len,
            file_len: meta.len(),
        });
    }
    Ok(())
}

/// The lowest id not in `used` (ascending), if it is below `max_slots`.
pub(crate) fn lowest_free_id<'a>(
    used: impl Iterator<Item = &'a SlotId>,
    max_slots: u32,
) -> Option<SlotId> {
    let mut want = 0u32;
    for id in used {
        if id.0 != want {
            break;
        }
        want = want.checked_add(1)?;
    }
    (want < max_slots).then_some(SlotId(want))
}

/// The VM's slot limit (`KVM_CAP_NR_MEMSLOTS`), when it reports one.
pub(crate) fn vm_max_slots<A: Arch>(vm: &Vm<A>) -> Option<u32> {
    u32::try_from(vm.check_extension(Capability::NR_MEMSLOTS))
        .ok()
        .filter(|&n| n > 0)
}

/// A read-only slot needs `KVM_CAP_READONLY_MEM`.
pub(crate) fn check_readonly_cap<A: Arch, B: Bitmap>(vm: &Vm<A>, slot: &Slot<B>) -> Result<()> {
    if slot.is_read_only() && !vm.has(Capability::READONLY_MEM) {
        return Err(Error::ReadOnlyUnsupported {
            slot: slot.id,
            gpa: slot.gpa().0,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_id_fills_gaps_first() {
        let ids = |v: &[u32]| v.iter().map(|&i| SlotId(i)).collect::<Vec<_>>();
        assert_eq!(lowest_free_id(ids(&[]).iter(), 4), Some(SlotId(0)));
        assert_eq!(lowest_free_id(ids(&[0, 1, 3]).iter(), 4), Some(SlotId(2)));
        assert_eq!(lowest_free_id(ids(&[1, 2]).iter(), 4), Some(SlotId(0)));
        assert_eq!(lowest_free_id(ids(&[0, 1, 2, 3]).iter(), 4), None);
        assert_eq!(lowest_free_id(ids(&[0, 1]).iter(), 2), None);
        assert_eq!(lowest_free_id(ids(&[]).iter(), 0), None);
        assert_eq!(
            lowest_free_id(ids(&[u32::MAX]).iter(), u32::MAX),
            Some(SlotId(0))
        );
    }
}
