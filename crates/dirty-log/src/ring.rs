//! Collecting the entries of one vCPU's dirty ring.
//!
//! The protocol (Documentation/virt/kvm/api.rst, `KVM_CAP_DIRTY_LOG_RING`):
//! KVM writes an entry's `slot` and `offset`, then publishes it by storing
//! `flags = DIRTY` with release semantics. Userspace walks the ring from its
//! fetch index, loads `flags` with acquire, stops at the first entry that is
//! not `DIRTY`, reads the entry, hands it back by storing `flags = RESET` with
//! release, and advances. `KVM_RESET_DIRTY_RINGS` then re-protects the pages
//! of the handed-back entries and frees them for reuse.
//!
//! KVM promises never to fill a ring completely: it asks the vCPU to exit
//! (`KVM_EXIT_DIRTY_RING_FULL`) at a soft limit, some reserved entries before
//! the end. A kernel that breaks that promise (seen on this project's PVM
//! host, where emulated guest writes go past the soft limit) overwrites
//! entries userspace has not read: pages are lost, and the kernel's and
//! userspace's indices drift apart, leaving a gap of empty entries that
//! stops every later harvest. [`Ring::collect`] reports a full lap so that
//! the tracker can treat the ring's pages as unknown, and [`Ring::skip_gap`]
//! gets past such a gap.

use std::sync::atomic::Ordering;

use kvmkit_core::{VcpuId, DIRTY_GFN_F_DIRTY, DIRTY_GFN_F_RESET};

use crate::sys::RingMap;

/// One vCPU's mapped ring and how far userspace has read it.
#[derive(Debug)]
pub(crate) struct Ring {
    vcpu: VcpuId,
    map: RingMap,
    /// Free-running index of the next entry to read (`% entries` in the ring).
    fetch: u32,
    /// Full-ring exits in a row of this vCPU that found nothing to collect.
    pub(crate) empty_full: u32,
}

/// A dirty page as a ring entry names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RingEntry {
    /// The address space (`slot >> 16`); only 0 is normal memory on x86
    /// (1 is SMM).
    pub as_id: u32,
    /// The slot id (`slot & 0xffff`).
    pub slot: u32,
    /// The page index within the slot.
    pub offset: u64,
}

impl Ring {
    pub(crate) fn new(vcpu: VcpuId, map: RingMap) -> Self {
        Ring {
            vcpu,
            map,
            fetch: 0,
            empty_full: 0,
        }
    }

    /// Entries in the ring.
    pub(crate) fn entries(&self) -> u32 {
        self.map.entries()
    }

    pub(crate) fn vcpu(&self) -> VcpuId {
        self.vcpu
    }

    /// Reads every published entry from the fetch index on, gives each to
    /// `sink`, hands it back to KVM (`RESET`), and returns how many there
    /// were. At most one ring's worth is read: a full lap means the ring was
    /// completely full, which KVM promises never to let happen, so entries
    /// may have been overwritten before they were read.
    pub(crate) fn collect(&mut self, mut sink: impl FnMut(RingEntry)) -> u32 {
        let mut n = 0;
        while n < self.map.entries() {
            let flags = self.map.flags(self.fetch);
            if flags.load(Ordering::Acquire) & DIRTY_GFN_F_DIRTY == 0 {
                break;
            }
            let (slot, offset) = self.map.read(self.fetch);
            sink(RingEntry {
                as_id: slot >> 16,
                slot: slot & 0xffff,
                offset,
            });
            flags.store(DIRTY_GFN_F_RESET, Ordering::Release);
            self.fetch = self.fetch.wrapping_add(1);
            n += 1;
        }
        n
    }

    /// Gets past a gap of empty entries left by a kernel that overfilled the
    /// ring: if the entry at the fetch index is empty but a later one in the
    /// same lap is published, the empty ones in between can never be
    /// published any more (KVM publishes in index order), yet KVM counts
    /// them as used. They are handed back (`RESET`, so that
    /// `KVM_RESET_DIRTY_RINGS` walks past them) and skipped. Returns how
    /// many; 0 when there is no gap.
    pub(crate) fn skip_gap(&mut self) -> u32 {
        let entries = self.map.entries();
        let Some(k) = (1..entries).find(|k| {
            self.map
                .flags(self.fetch.wrapping_add(*k))
                .load(Ordering::Acquire)
                & DIRTY_GFN_F_DIRTY
                != 0
        }) else {
            return 0;
        };
        // Entry `fetch + k` is published; any entry before it that was
        // published in this lap is now visible (acquire). Still empty means
        // it is part of a gap.
        let gap = (0..k).all(|j| {
            self.map
                .flags(self.fetch.wrapping_add(j))
                .load(Ordering::Acquire)
                & DIRTY_GFN_F_DIRTY
                == 0
        });
        if !gap {
            return 0;
        }
        for j in 0..k {
            self.map
                .flags(self.fetch.wrapping_add(j))
                .store(DIRTY_GFN_F_RESET, Ordering::Release);
        }
        self.fetch = self.fetch.wrapping_add(k);
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(bytes: u32) -> Ring {
        Ring::new(VcpuId(3), RingMap::anonymous(bytes).unwrap())
    }

    /// What KVM_RESET_DIRTY_RINGS does to handed-back entries.
    fn kernel_reset(r: &Ring, from: u32, to: u32) {
        for i in from..to {
            let f = r.map.flags(i);
            assert_eq!(f.load(Ordering::Acquire), DIRTY_GFN_F_RESET, "entry {i}");
            f.store(0, Ordering::Release);
        }
    }

    #[test]
    fn stops_at_the_first_unpublished_entry() {
        let mut r = ring(4096);
        assert_eq!(r.vcpu(), VcpuId(3));
        assert_eq!(r.collect(|_| panic!("empty ring")), 0);
        r.map.publish(0, 1, 10);
        r.map.publish(1, 1 << 16 | 2, 20);
        // Entry 3 is published but 2 is not: 3 must wait.
        r.map.publish(3, 1, 30);
        let mut seen = Vec::new();
        assert_eq!(r.collect(|e| seen.push(e)), 2);
        assert_eq!(
            seen,
            [
                RingEntry {
                    as_id: 0,
                    slot: 1,
                    offset: 10
                },
                RingEntry {
                    as_id: 1,
                    slot: 2,
                    offset: 20
                }
            ]
        );
        r.map.publish(2, 5, 25);
        seen.clear();
        assert_eq!(r.collect(|e| seen.push(e)), 2);
        assert_eq!(seen.iter().map(|e| e.offset).collect::<Vec<_>>(), [25, 30]);
        kernel_reset(&r, 0, 4);
    }

    #[test]
    fn wraps_around_and_reads_at_most_one_ring() {
        let mut r = ring(4096);
        let n = r.map.entries();
        assert_eq!(n, 256);
        // A full ring.
        for i in 0..n {
            r.map.publish(i, 0, u64::from(i));
        }
        let mut sum = 0u64;
        assert_eq!(r.collect(|e| sum += e.offset), n);
        assert_eq!(sum, u64::from(n) * u64::from(n - 1) / 2);
        kernel_reset(&r, 0, n);
        // KVM goes on at index n (entry 0 again): the fetch index follows.
        r.map.publish(n, 7, 1000);
        r.map.publish(n + 1, 7, 1001);
        let mut seen = Vec::new();
        assert_eq!(r.collect(|e| seen.push(e.offset)), 2);
        assert_eq!(seen, [1000, 1001]);
    }

    #[test]
    fn a_gap_left_by_an_overfilled_ring_is_skipped() {
        let mut r = ring(4096);
        assert_eq!(r.entries(), 256);
        // Nothing published: no gap.
        assert_eq!(r.skip_gap(), 0);
        // The state after an overflow by 10: KVM's index is 10 ahead of
        // ours, the 10 entries between are empty, new entries follow.
        r.fetch = 256;
        for i in 0..5 {
            r.map.publish(256 + 10 + i, 1, u64::from(i));
        }
        assert_eq!(r.collect(|_| panic!("stuck at the gap")), 0);
        assert_eq!(r.skip_gap(), 10);
        let mut seen = Vec::new();
        assert_eq!(r.collect(|e| seen.push(e.offset)), 5);
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        // The gap was handed back, so the kernel's reset walks past it.
        kernel_reset(&r, 256, 256 + 15);
        // No gap when the next entry is published: collect handles it.
        r.map.publish(256 + 15, 1, 9);
        assert_eq!(r.skip_gap(), 0);
        assert_eq!(r.collect(|_| {}), 1);
    }

    #[test]
    fn fetch_index_wraps_at_u32() {
        let mut r = ring(4096);
        r.fetch = u32::MAX;
        r.map.publish(u32::MAX, 0, 1);
        r.map.publish(0, 0, 2);
        let mut seen = Vec::new();
        assert_eq!(r.collect(|e| seen.push(e.offset)), 2);
        assert_eq!(seen, [1, 2]);
        assert_eq!(r.fetch, 1);
    }
}
