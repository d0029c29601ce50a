//! The crate's raw system calls: mapping a vCPU's dirty ring, and the host page size.
//!
//! [`RingMap`] is the only owner of the mapping and the only code that forms
//! pointers into it; everything above works with entry indices.

use std::io;
use std::os::unix::io::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

use kvmkit_core::DirtyGfn;

/// The host page size (`sysconf(_SC_PAGESIZE)`), the unit of the ring's mmap offset.
pub(crate) fn host_page_size() -> io::Result<u64> {
    // SAFETY: sysconf reads a system constant; no memory is passed.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).map_err(|_| io::Error::last_os_error())
}

/// A shared mapping of one vCPU's dirty ring: `entries` `struct kvm_dirty_gfn`
/// that the kernel fills and userspace collects.
#[derive(Debug)]
pub(crate) struct RingMap {
    base: NonNull<DirtyGfn>,
    entries: u32,
    bytes: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value until `Drop`;
// every access to it goes through atomics (`flags`) or volatile reads (`slot`,
// `offset`), so it may be used from any thread, and from several at once.
unsafe impl Send for RingMap {}
// SAFETY: as above: `&RingMap` only hands out atomics and volatile reads.
unsafe impl Sync for RingMap {}

impl RingMap {
    /// Maps the dirty ring of the vCPU whose fd is `vcpu_fd`: `bytes` bytes
    /// (a power of two, a multiple of the entry size) at `page_offset` host
    /// pages (the arch's `KVM_DIRTY_LOG_PAGE_OFFSET`), `MAP_SHARED`,
    /// read-write (KVM refuses a private or executable mapping of the ring).
    pub(crate) fn map(vcpu_fd: RawFd, bytes: u32, page_offset: u64) -> io::Result<Self> {
        let offset = page_offset
            .checked_mul(host_page_size()?)
            .and_then(|o| libc::off_t::try_from(o).ok())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        Self::mmap(vcpu_fd, bytes, libc::MAP_SHARED, offset)
    }

    /// An anonymous ring for tests of the harvesting logic: zeroed, like a
    /// fresh kernel ring.
    #[cfg(test)]
    pub(crate) fn anonymous(bytes: u32) -> io::Result<Self> {
        Self::mmap(-1, bytes, libc::MAP_SHARED | libc::MAP_ANONYMOUS, 0)
    }

    fn mmap(fd: RawFd, bytes: u32, flags: libc::c_int, offset: libc::off_t) -> io::Result<Self> {
        let entry = std::mem::size_of::<DirtyGfn>();
        let len = usize::try_from(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        if len == 0 || len % entry != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let entries = u32::try_from(len / entry).expect("fewer entries than bytes, both u32");
        // SAFETY: a fresh mapping at an address the kernel chooses (NULL
        // hint), so no existing memory is replaced; `fd` is either -1 with
        // MAP_ANONYMOUS or a vCPU fd the caller keeps open for the call (the
        // mapping then holds its own reference to the file).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<DirtyGfn>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
        Ok(RingMap {
            base,
            entries,
            bytes: len,
        })
    }

    /// The number of entries (a power of two when the kernel accepted the size).
    pub(crate) fn entries(&self) -> u32 {
        self.entries
    }

    /// A pointer to entry `index % entries`, in bounds of the mapping.
    fn entry(&self, index: u32) -> *mut DirtyGfn {
        // `index % entries < entries`, so the pointer stays inside the
        // mapping; wrapping_add needs no unsafe and cannot overflow here.
        let i = usize::try_from(index % self.entries).expect("u32 fits in usize");
        self.base.as_ptr().wrapping_add(i)
    }

    /// The `flags` word of entry `index`, which the kernel and userspace
    /// hand back and forth with acquire / release.
    pub(crate) fn flags(&self, index: u32) -> &AtomicU32 {
        let p = self.entry(index).cast::<u32>();
        // SAFETY: `p` is the first field (`flags`, a u32) of an in-bounds
        // entry: 4-byte aligned (the mapping is page aligned, entries are 16
        // bytes) and valid for as long as `&self`, which owns the mapping.
        // The kernel writes the word concurrently only with its own atomic
        // stores (smp_store_release / READ_ONCE), so all accesses are atomic.
        unsafe { AtomicU32::from_ptr(p) }
    }

    /// The `(slot, offset)` of entry `index`; read after an Acquire load of
    /// its flags saw `KVM_DIRTY_GFN_F_DIRTY`, so the kernel's writes of both
    /// are visible.
    pub(crate) fn read(&self, index: u32) -> (u32, u64) {
        let (slot, offset) = self.fields(index);
        // SAFETY: `slot` points at the u32 `slot` field of an in-bounds,
        // aligned entry of the live mapping (see `fields`); volatile,
        // because the memory is shared with the kernel and must not be
        // cached or elided.
        let slot = unsafe { slot.read_volatile() };
        // SAFETY: as above, for the u64 `offset` field (8-byte aligned).
        let offset = unsafe { offset.read_volatile() };
        (slot, offset)
    }

    /// Pointers to the `slot` and `offset` fields of entry `index`, formed
    /// without dereferencing anything.
    fn fields(&self, index: u32) -> (*mut u32, *mut u64) {
        use std::mem::offset_of;
        let entry = self.entry(index).cast::<u8>();
        (
            entry.wrapping_add(offset_of!(DirtyGfn, slot)).cast(),
            entry.wrapping_add(offset_of!(DirtyGfn, offset)).cast(),
        )
    }

    /// Writes entry `index` as the kernel would publish a dirty page: slot
    /// and offset, then `flags` = DIRTY with release. For tests.
    #[cfg(test)]
    pub(crate) fn publish(&self, index: u32, slot: u32, offset: u64) {
        use std::sync::atomic::Ordering;
        let (slot_ptr, offset_ptr) = self.fields(index);
        // SAFETY: fields of an in-bounds, aligned entry of the live mapping
        // (see `fields`), written only by this test thread.
        unsafe { slot_ptr.write_volatile(slot) };
        // SAFETY: as above.
        unsafe { offset_ptr.write_volatile(offset) };
        self.flags(index)
            .store(kvmkit_core::DIRTY_GFN_F_DIRTY, Ordering::Release);
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: `base .. base + bytes` is exactly the mapping `mmap`
        // returned, owned by this value, and nothing borrowed from it can
        // outlive `&self` borrows, which have all ended in `drop`.
        let ret = unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
        // munmap of a mapping we own cannot fail; nothing to do if it did.
        debug_assert_eq!(ret, 0, "munmap of a dirty ring failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn page_size_is_a_power_of_two() {
        assert!(host_page_size().unwrap().is_power_of_two());
    }

    #[test]
    fn anonymous_ring_round_trip() {
        let ring = RingMap::anonymous(4096).unwrap();
        assert_eq!(ring.entries(), 256);
        assert_eq!(ring.flags(3).load(Ordering::Acquire), 0);
        ring.publish(3, 0x1_0002, 77);
        assert_eq!(ring.read(3), (0x1_0002, 77));
        // Indices wrap around the ring.
        assert_eq!(ring.read(256 + 3), (0x1_0002, 77));
        assert_eq!(
            ring.flags(3).load(Ordering::Acquire),
            kvmkit_core::DIRTY_GFN_F_DIRTY
        );
    }

    #[test]
    fn bad_sizes_and_fds_are_errors() {
        assert!(RingMap::anonymous(0).is_err());
        assert!(RingMap::anonymous(24).is_err());
        // Not a vCPU fd: the kernel refuses the mapping.
        let e = RingMap::map(-1, 4096, 64).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF));
    }
}
