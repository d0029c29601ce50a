//! What a harvest found and cost.

use std::time::Duration;

use kvmkit_core::SlotId;

/// What one harvest found and what it cost.
///
/// `per_slot` feeds a [`crate::DirtyRateSampler`]; the rest is for
/// benchmarks and monitoring.
///
/// ```
/// use kvmkit_dirty_log::HarvestStats;
/// let s = HarvestStats::default();
/// assert_eq!((s.kvm_pages, s.host_pages, s.ioctls), (0, 0, 0));
/// assert_eq!(s.pages(), 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HarvestStats {
    /// Pages KVM reported: bits set by `KVM_GET_DIRTY_LOG`, or ring entries
    /// of tracked slots (a page appears once per ring reset).
    pub kvm_pages: u64,
    /// Pages vm-memory's bitmaps reported (written by the VMM itself).
    pub host_pages: u64,
    /// Ring entries that name no tracked page: an untracked slot (for
    /// example one whose logging was just turned off, or a removed slot), an
    /// address space other than 0 (x86 SMM), or an offset past the slot's
    /// end. They are handed back to KVM and otherwise ignored.
    pub ignored_entries: u64,
    /// Rings found completely full (or with a gap of lost entries): KVM
    /// overfilled them, entries were overwritten before they were read, so
    /// every page of every tracked slot was reported dirty, to lose nothing.
    /// 0 on a kernel that honours the ring's soft limit.
    pub ring_overflows: u64,
    /// ioctls issued: `KVM_GET_DIRTY_LOG`, `KVM_CLEAR_DIRTY_LOG`,
    /// `KVM_RESET_DIRTY_RINGS`.
    pub ioctls: u64,
    /// Wall time of the harvest.
    pub duration: Duration,
    /// Pages reported per slot (KVM's and vm-memory's; a page both saw is
    /// counted once by the bitmap backends, twice by the ring).
    pub per_slot: Vec<(SlotId, u64)>,
}

impl HarvestStats {
    /// `kvm_pages + host_pages`.
    ///
    /// ```
    /// let mut s = kvmkit_dirty_log::HarvestStats::default();
    /// s.kvm_pages = 3;
    /// s.host_pages = 2;
    /// assert_eq!(s.pages(), 5);
    /// ```
    pub fn pages(&self) -> u64 {
        self.kvm_pages + self.host_pages
    }
}

/// Totals since a [`crate::DirtyTracker`] was created.
///
/// ```
/// let t = kvmkit_dirty_log::TrackerStats::default();
/// assert_eq!((t.harvests, t.ring_full), (0, 0));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrackerStats {
    /// Harvests run, including those of full rings.
    pub harvests: u64,
    /// Harvests run because a vCPU's ring was full.
    pub ring_full: u64,
    /// Sum of [`HarvestStats::kvm_pages`].
    pub kvm_pages: u64,
    /// Sum of [`HarvestStats::host_pages`].
    pub host_pages: u64,
    /// Sum of [`HarvestStats::ignored_entries`].
    pub ignored_entries: u64,
    /// Sum of [`HarvestStats::ring_overflows`].
    pub ring_overflows: u64,
    /// Sum of [`HarvestStats::ioctls`].
    pub ioctls: u64,
    /// Sum of [`HarvestStats::duration`].
    pub busy: Duration,
}

impl TrackerStats {
    pub(crate) fn add(&mut self, h: &HarvestStats) {
        self.harvests += 1;
        self.kvm_pages += h.kvm_pages;
        self.host_pages += h.host_pages;
        self.ignored_entries += h.ignored_entries;
        self.ring_overflows += h.ring_overflows;
        self.ioctls += h.ioctls;
        self.busy += h.duration;
    }
}
