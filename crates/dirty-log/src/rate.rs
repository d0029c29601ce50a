//! [`DirtyRateSampler`]: dirty pages per second per slot.

use std::collections::BTreeMap;
use std::time::Instant;

use kvmkit_core::SlotId;

#[derive(Debug, Clone, Copy)]
struct SlotRate {
    last: Instant,
    /// Pages harvested since `last` that no rate has counted yet.
    pending: usize,
    rate: Option<f64>,
}

/// Dirty rate per slot, in pages per second, from successive harvests.
///
/// The caller passes each harvest's page count and the time it was taken; the first
/// harvest of a slot only sets the baseline. Harvests at the same instant are added to the
/// next interval.
///
/// ```
/// use std::time::{Duration, Instant};
/// use kvmkit_core::SlotId;
/// use kvmkit_dirty_log::DirtyRateSampler;
///
/// let t0 = Instant::now();
/// let mut s = DirtyRateSampler::new();
/// assert_eq!(s.sample(SlotId(0), 0, t0), None);
/// assert_eq!(s.sample(SlotId(0), 500, t0 + Duration::from_millis(500)), Some(1000.0));
/// assert_eq!(s.rate(SlotId(0)), Some(1000.0));
/// ```
#[derive(Debug, Default, Clone)]
pub struct DirtyRateSampler {
    slots: BTreeMap<SlotId, SlotRate>,
}

impl DirtyRateSampler {
    /// A sampler with no slots.
    ///
    /// ```
    /// assert_eq!(kvmkit_dirty_log::DirtyRateSampler::new().total_rate(), 0.0);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a harvest of `pages` dirty pages of `slot` at `at`, returning the rate since
    /// the previous harvest, or `None` for the first harvest or no elapsed time.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use kvmkit_core::SlotId;
    /// let t0 = Instant::now();
    /// let mut s = kvmkit_dirty_log::DirtyRateSampler::new();
    /// s.sample(SlotId(1), 0, t0);
    /// assert_eq!(s.sample(SlotId(1), 30, t0 + Duration::from_secs(3)), Some(10.0));
    /// ```
    pub fn sample(&mut self, slot: SlotId, pages: usize, at: Instant) -> Option<f64> {
        let Some(state) = self.slots.get_mut(&slot) else {
            self.slots.insert(
                slot,
                SlotRate {
                    last: at,
                    pending: 0,
                    rate: None,
                },
            );
            return None;
        };
        let pending = state.pending.saturating_add(pages);
        let elapsed = at.saturating_duration_since(state.last).as_secs_f64();
        if elapsed <= 0.0 {
            state.pending = pending;
            return None;
        }
        let rate = pending as f64 / elapsed;
        *state = SlotRate {
            last: at,
            pending: 0,
            rate: Some(rate),
        };
        Some(rate)
    }

    /// The latest rate of `slot`, if two harvests at different times were recorded.
    ///
    /// ```
    /// use kvmkit_core::SlotId;
    /// assert_eq!(kvmkit_dirty_log::DirtyRateSampler::new().rate(SlotId(0)), None);
    /// ```
    pub fn rate(&self, slot: SlotId) -> Option<f64> {
        self.slots.get(&slot).and_then(|s| s.rate)
    }

    /// The sum of the latest rates of all slots.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use kvmkit_core::SlotId;
    /// let t0 = Instant::now();
    /// let t1 = t0 + Duration::from_secs(1);
    /// let mut s = kvmkit_dirty_log::DirtyRateSampler::new();
    /// for (slot, pages) in [(SlotId(0), 5), (SlotId(1), 7)] {
    ///     s.sample(slot, 0, t0);
    ///     s.sample(slot, pages, t1);
    /// }
    /// assert_eq!(s.total_rate(), 12.0);
    /// ```
    pub fn total_rate(&self) -> f64 {
        self.slots.values().filter_map(|s| s.rate).sum()
    }

    /// Forgets `slot` (for example when it is removed).
    ///
    /// ```
    /// use kvmkit_core::SlotId;
    /// let mut s = kvmkit_dirty_log::DirtyRateSampler::new();
    /// s.sample(SlotId(0), 0, std::time::Instant::now());
    /// s.remove(SlotId(0));
    /// ```
    pub fn remove(&mut self, slot: SlotId) {
        self.slots.remove(&slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn successive_harvests() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = DirtyRateSampler::new();
        assert_eq!(s.sample(SlotId(0), 1000, t0), None);
        assert_eq!(s.rate(SlotId(0)), None);
        assert_eq!(s.sample(SlotId(0), 100, t0 + ms(100)), Some(1000.0));
        assert_eq!(s.sample(SlotId(0), 0, t0 + ms(600)), Some(0.0));
        assert_eq!(s.rate(SlotId(0)), Some(0.0));
    }

    #[test]
    fn zero_elapsed_carries_pages_over() {
        let t0 = Instant::now();
        let mut s = DirtyRateSampler::new();
        s.sample(SlotId(0), 0, t0);
        assert_eq!(s.sample(SlotId(0), 10, t0), None);
        // Time going backwards counts as no elapsed time.
        let t1 = t0 + Duration::from_secs(2);
        s.sample(SlotId(2), 0, t1);
        assert_eq!(s.sample(SlotId(2), 1, t0), None);
        assert_eq!(
            s.sample(SlotId(0), 10, t0 + Duration::from_secs(2)),
            Some(10.0)
        );
    }

    #[test]
    fn per_slot_and_total() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut s = DirtyRateSampler::new();
        s.sample(SlotId(0), 0, t0);
        s.sample(SlotId(1), 0, t0);
        s.sample(SlotId(0), 3, t1);
        assert_eq!(s.total_rate(), 3.0);
        s.sample(SlotId(1), 4, t1);
        assert_eq!(s.total_rate(), 7.0);
        s.remove(SlotId(0));
        assert_eq!(s.total_rate(), 4.0);
        assert_eq!(s.rate(SlotId(0)), None);
    }
}
