//! [`DirtyLog`]: per-slot accumulation of harvests, taken atomically.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use kvmkit_core::SlotId;

use crate::{DirtyBitmap, Error, Result};

/// How many times a slot's accumulated set has been taken.
///
/// ```
/// assert!(kvmkit_dirty_log::Epoch(0) < kvmkit_dirty_log::Epoch(1));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

#[derive(Debug)]
struct SlotLog {
    pending: DirtyBitmap,
    epoch: Epoch,
}

/// Accumulates dirty-page harvests per slot so that no page is lost between two takes.
///
/// A harvester (the KVM backend, the vm-memory userspace bitmap) calls
/// [`accumulate`](DirtyLog::accumulate) as often as it likes; a consumer (migration,
/// display) calls [`take`](DirtyLog::take), which returns everything accumulated since the
/// previous take and clears it under the same lock, so a page is reported by exactly one
/// take at or after the harvest that saw it.
///
/// ```
/// use kvmkit_core::SlotId;
/// use kvmkit_dirty_log::{DirtyBitmap, DirtyLog, Epoch};
///
/// let log = DirtyLog::new();
/// log.accumulate(SlotId(0), &DirtyBitmap::from_words(&[0b01], 2)?)?;
/// log.accumulate(SlotId(0), &DirtyBitmap::from_words(&[0b10], 2)?)?;
/// let taken = log.take(SlotId(0)).expect("slot 0 was harvested");
/// assert_eq!(taken.count(), 2);
/// assert_eq!(log.epoch(SlotId(0)), Some(Epoch(1)));
/// assert!(log.take(SlotId(0)).expect("still tracked").is_clean());
/// # Ok::<(), kvmkit_dirty_log::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct DirtyLog {
    slots: Mutex<BTreeMap<SlotId, SlotLog>>,
}

impl DirtyLog {
    /// An empty log.
    ///
    /// ```
    /// assert!(kvmkit_dirty_log::DirtyLog::new().slots().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<SlotId, SlotLog>> {
        // Every update is a plain OR or swap that cannot leave the map half-written, so a
        // panic elsewhere while holding the lock leaves consistent data behind.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// ORs a harvest of `slot` into its accumulated set; the first harvest of a slot fixes
    /// its page count.
    ///
    /// ```
    /// use kvmkit_core::SlotId;
    /// use kvmkit_dirty_log::{DirtyBitmap, DirtyLog};
    /// let log = DirtyLog::new();
    /// log.accumulate(SlotId(3), &DirtyBitmap::new(8))?;
    /// assert!(log.accumulate(SlotId(3), &DirtyBitmap::new(9)).is_err());
    /// # Ok::<(), kvmkit_dirty_log::Error>(())
    /// ```
    pub fn accumulate(&self, slot: SlotId, harvest: &DirtyBitmap) -> Result<()> {
        let mut slots = self.lock();
        match slots.get_mut(&slot) {
            Some(log) => log.pending.merge(harvest).map_err(|_| Error::Accumulate {
                slot,
                pages: log.pending.pages(),
                other: harvest.pages(),
            }),
            None => {
                slots.insert(
                    slot,
                    SlotLog {
                        pending: harvest.clone(),
                        epoch: Epoch(0),
                    },
                );
                Ok(())
            }
        }
    }

    /// Marks the pages `dirty` of `slot` (a slot of `pages` pages) in its
    /// accumulated set, without building a whole bitmap: what a backend that
    /// learns pages one by one (the dirty ring) uses. Pages at or past
    /// `pages` are ignored; the first call for a slot fixes its page count.
    ///
    /// ```
    /// use kvmkit_core::SlotId;
    /// use kvmkit_dirty_log::DirtyLog;
    /// let log = DirtyLog::new();
    /// log.accumulate_pages(SlotId(0), 130, [3, 64, 129, 500])?;
    /// let taken = log.take(SlotId(0)).expect("slot 0 was harvested");
    /// assert_eq!(taken.pages_iter().collect::<Vec<_>>(), vec![3, 64, 129]);
    /// assert!(log.accumulate_pages(SlotId(0), 131, [0]).is_err());
    /// # Ok::<(), kvmkit_dirty_log::Error>(())
    /// ```
    pub fn accumulate_pages(
        &self,
        slot: SlotId,
        pages: usize,
        dirty: impl IntoIterator<Item = usize>,
    ) -> Result<()> {
        let mut slots = self.lock();
        let log = slots.entry(slot).or_insert_with(|| SlotLog {
            pending: DirtyBitmap::new(pages),
            epoch: Epoch(0),
        });
        if log.pending.pages() != pages {
            return Err(Error::Accumulate {
                slot,
                pages: log.pending.pages(),
                other: pages,
            });
        }
        for page in dirty {
            log.pending.set(page);
        }
        Ok(())
    }

    /// Returns and clears the pages accumulated for `slot` since the previous take, and
    /// advances its epoch; `None` if the slot was never harvested.
    ///
    /// ```
    /// use kvmkit_core::SlotId;
    /// assert!(kvmkit_dirty_log::DirtyLog::new().take(SlotId(0)).is_none());
    /// ```
    pub fn take(&self, slot: SlotId) -> Option<DirtyBitmap> {
        let mut slots = self.lock();
        let log = slots.get_mut(&slot)?;
        let empty = DirtyBitmap::new(log.pending.pages());
        log.epoch.0 += 1;
        Some(std::mem::replace(&mut log.pending, empty))
    }

    /// Stops tracking `slot` (for example when it is removed), returning what was pending.
    ///
    /// ```
    /// use kvmkit_core::SlotId;
    /// use kvmkit_dirty_log::{DirtyBitmap, DirtyLog};
    /// let log = DirtyLog::new();
    /// log.accumulate(SlotId(1), &DirtyBitmap::new(1))?;
    /// assert!(log.remove(SlotId(1)).is_some());
    /// assert!(log.slots().is_empty());
    /// # Ok::<(), kvmkit_dirty_log::Error>(())
    /// ```
    pub fn remove(&self, slot: SlotId) -> Option<DirtyBitmap> {
        self.lock().remove(&slot).map(|log| log.pending)
    }

    /// How many times `slot` has been taken; `None` if it is not tracked.
    ///
    /// ```
    /// use kvmkit_core::SlotId;
    /// assert_eq!(kvmkit_dirty_log::DirtyLog::new().epoch(SlotId(0)), None);
    /// ```
    pub fn epoch(&self, slot: SlotId) -> Option<Epoch> {
        self.lock().get(&slot).map(|log| log.epoch)
    }

    /// Pages pending (accumulated, not yet taken) for `slot`; 0 if it is not tracked.
    ///
    /// ```
    /// use kvmkit_core::SlotId;
    /// use kvmkit_dirty_log::{DirtyBitmap, DirtyLog};
    /// let log = DirtyLog::new();
    /// log.accumulate(SlotId(0), &DirtyBitmap::from_words(&[7], 3)?)?;
    /// assert_eq!(log.pending_count(SlotId(0)), 3);
    /// # Ok::<(), kvmkit_dirty_log::Error>(())
    /// ```
    pub fn pending_count(&self, slot: SlotId) -> usize {
        self.lock().get(&slot).map_or(0, |log| log.pending.count())
    }

    /// The tracked slots, in ascending order.
    ///
    /// ```
    /// use kvmkit_core::SlotId;
    /// use kvmkit_dirty_log::{DirtyBitmap, DirtyLog};
    /// let log = DirtyLog::new();
    /// log.accumulate(SlotId(2), &DirtyBitmap::new(1))?;
    /// log.accumulate(SlotId(1), &DirtyBitmap::new(1))?;
    /// assert_eq!(log.slots(), vec![SlotId(1), SlotId(2)]);
    /// # Ok::<(), kvmkit_dirty_log::Error>(())
    /// ```
    pub fn slots(&self) -> Vec<SlotId> {
        self.lock().keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroUsize;
    use std::sync::Arc;
    use vm_memory::bitmap::AtomicBitmap;

    const PAGES: usize = 1000;

    #[test]
    fn interleaved_harvest_and_take_lose_nothing() {
        // Deterministic interleaving: the guest dirties pages, the harvester moves them from
        // the source into the log, the consumer takes; every step order is exercised.
        let source = AtomicBitmap::new(PAGES * 0x1000, NonZeroUsize::new(0x1000).unwrap());
        let log = DirtyLog::new();
        let slot = SlotId(7);
        let mut seen = DirtyBitmap::new(PAGES);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut expected = DirtyBitmap::new(PAGES);
        for step in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let page = usize::try_from(x % PAGES as u64).unwrap();
            source.set_bit(page);
            expected.set(page);
            if step % 3 == 0 {
                let h = DirtyBitmap::harvest_atomic_bitmap(&source).unwrap();
                log.accumulate(slot, &h).unwrap();
            }
            if step % 7 == 0 {
                if let Some(t) = log.take(slot) {
                    seen.merge(&t).unwrap();
                }
            }
        }
        log.accumulate(slot, &DirtyBitmap::harvest_atomic_bitmap(&source).unwrap())
            .unwrap();
        seen.merge(&log.take(slot).unwrap()).unwrap();
        assert_eq!(seen, expected);
        assert!(log.take(slot).unwrap().is_clean());
    }

    #[test]
    fn concurrent_harvest_and_take_lose_nothing() {
        let source = Arc::new(AtomicBitmap::new(
            PAGES * 0x1000,
            NonZeroUsize::new(0x1000).unwrap(),
        ));
        let log = Arc::new(DirtyLog::new());
        let slot = SlotId(1);
        log.accumulate(slot, &DirtyBitmap::new(PAGES)).unwrap();
        let harvester = {
            let (source, log) = (Arc::clone(&source), Arc::clone(&log));
            std::thread::spawn(move || {
                for page in 0..PAGES {
                    source.set_bit(page);
                    if page % 10 == 0 {
                        let h = DirtyBitmap::harvest_atomic_bitmap(&source).unwrap();
                        log.accumulate(slot, &h).unwrap();
                    }
                }
                let h = DirtyBitmap::harvest_atomic_bitmap(&source).unwrap();
                log.accumulate(slot, &h).unwrap();
            })
        };
        let mut seen = DirtyBitmap::new(PAGES);
        let mut takes = 0usize;
        while !harvester.is_finished() {
            let t = log.take(slot).unwrap();
            // Each page is dirtied once, so no two takes may report the same page.
            for p in t.pages_iter() {
                assert!(!seen.is_dirty(p), "page {p} reported twice");
            }
            seen.merge(&t).unwrap();
            takes += 1;
        }
        harvester.join().unwrap();
        seen.merge(&log.take(slot).unwrap()).unwrap();
        assert_eq!(seen.count(), PAGES);
        assert!(log.epoch(slot).unwrap().0 >= takes as u64);
    }

    #[test]
    fn accumulate_rejects_resized_slot() {
        let log = DirtyLog::new();
        log.accumulate(SlotId(0), &DirtyBitmap::new(64)).unwrap();
        let err = log
            .accumulate(SlotId(0), &DirtyBitmap::new(65))
            .unwrap_err();
        assert!(matches!(
            err,
            Error::Accumulate {
                slot: SlotId(0),
                pages: 64,
                other: 65
            }
        ));
        assert_eq!(
            err.to_string(),
            "accumulating 65 pages into slot 0 which has 64 pages"
        );
    }

    #[test]
    fn accumulate_pages_marks_and_checks_the_size() {
        let log = DirtyLog::new();
        log.accumulate_pages(SlotId(4), 100, [0, 99, 100, 64])
            .unwrap();
        assert_eq!(log.pending_count(SlotId(4)), 3);
        let err = log.accumulate_pages(SlotId(4), 101, [1]).unwrap_err();
        assert!(matches!(
            err,
            Error::Accumulate {
                slot: SlotId(4),
                pages: 100,
                other: 101
            }
        ));
        // Nothing marked by the refused call.
        assert_eq!(log.pending_count(SlotId(4)), 3);
    }

    #[test]
    fn slots_are_independent() {
        let log = DirtyLog::new();
        log.accumulate(SlotId(0), &DirtyBitmap::from_words(&[1], 1).unwrap())
            .unwrap();
        log.accumulate(SlotId(1), &DirtyBitmap::from_words(&[3], 2).unwrap())
            .unwrap();
        assert_eq!(log.take(SlotId(0)).unwrap().count(), 1);
        assert_eq!(log.pending_count(SlotId(1)), 2);
        assert_eq!(log.epoch(SlotId(1)), Some(Epoch(0)));
        assert_eq!(log.pending_count(SlotId(9)), 0);
        assert_eq!(log.remove(SlotId(1)).unwrap().count(), 2);
        assert!(log.remove(SlotId(1)).is_none());
    }
}
