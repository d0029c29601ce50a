//! Word-wise iterators over a [`DirtyBitmap`](crate::DirtyBitmap).
//!
//! Zero words are skipped whole and set bits are found with `trailing_zeros`; runs of
//! ones are measured with `trailing_ones`, so all-ones words cost one step each.

use vm_memory::GuestAddress;

use crate::bitmap::PAGE_SIZE;

const BITS: usize = u64::BITS as usize;

/// Dirty page indices in ascending order; see [`DirtyBitmap::pages_iter`](crate::DirtyBitmap::pages_iter).
///
/// ```
/// let bm = kvmkit_dirty_log::DirtyBitmap::from_words(&[0b101], 3)?;
/// let pages: kvmkit_dirty_log::DirtyPages<'_> = bm.pages_iter();
/// assert_eq!(pages.collect::<Vec<_>>(), vec![0, 2]);
/// # Ok::<(), kvmkit_dirty_log::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct DirtyPages<'a> {
    words: &'a [u64],
    index: usize,
    current: u64,
}

impl<'a> DirtyPages<'a> {
    pub(crate) fn new(words: &'a [u64]) -> Self {
        Self {
            words,
            index: 0,
            current: words.first().copied().unwrap_or(0),
        }
    }
}

impl Iterator for DirtyPages<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.current == 0 {
            self.index += 1;
            self.current = *self.words.get(self.index)?;
        }
        let bit = self.current.trailing_zeros() as usize;
        // Clear the lowest set bit.
        self.current &= self.current - 1;
        Some(self.index * BITS + bit)
    }
}

/// Maximal runs of dirty pages as `(first_page, count)`; see
/// [`DirtyBitmap::ranges`](crate::DirtyBitmap::ranges).
///
/// ```
/// let bm = kvmkit_dirty_log::DirtyBitmap::from_words(&[0b1101], 4)?;
/// let ranges: kvmkit_dirty_log::DirtyRanges<'_> = bm.ranges();
/// assert_eq!(ranges.collect::<Vec<_>>(), vec![(0, 1), (2, 2)]);
/// # Ok::<(), kvmkit_dirty_log::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct DirtyRanges<'a> {
    words: &'a [u64],
    index: usize,
    /// Bits of `words[index]` not yet reported.
    current: u64,
}

impl<'a> DirtyRanges<'a> {
    pub(crate) fn new(words: &'a [u64]) -> Self {
        Self {
            words,
            index: 0,
            current: words.first().copied().unwrap_or(0),
        }
    }
}

impl Iterator for DirtyRanges<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        while self.current == 0 {
            self.index += 1;
            self.current = *self.words.get(self.index)?;
        }
        let start_bit = self.current.trailing_zeros() as usize;
        let first = self.index * BITS + start_bit;
        let ones = (self.current >> start_bit).trailing_ones() as usize;
        let end_bit = start_bit + ones;
        if end_bit < BITS {
            // The run ends inside this word: drop the reported bits.
            self.current &= u64::MAX << end_bit;
            return Some((first, ones));
        }
        // The run reaches the top of the word: extend it through following words.
        let mut count = ones;
        self.current = 0;
        while let Some(&word) = self.words.get(self.index + 1) {
            self.index += 1;
            if word == u64::MAX {
                count += BITS;
                continue;
            }
            let t = word.trailing_ones() as usize;
            count += t;
            // t < 64 here, so the shift is in range.
            self.current = word & (u64::MAX << t);
            break;
        }
        Some((first, count))
    }
}

/// Dirty guest-physical ranges `(start, len_bytes)` of a slot; see
/// [`DirtyBitmap::gpa_ranges`](crate::DirtyBitmap::gpa_ranges).
///
/// ```
/// use vm_memory::GuestAddress;
/// let bm = kvmkit_dirty_log::DirtyBitmap::from_words(&[1], 1)?;
/// let r: kvmkit_dirty_log::DirtyGpaRanges<'_> = bm.gpa_ranges(GuestAddress(0x8000));
/// assert_eq!(r.collect::<Vec<_>>(), vec![(GuestAddress(0x8000), 0x1000)]);
/// # Ok::<(), kvmkit_dirty_log::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct DirtyGpaRanges<'a> {
    ranges: DirtyRanges<'a>,
    base: GuestAddress,
}

impl<'a> DirtyGpaRanges<'a> {
    pub(crate) fn new(ranges: DirtyRanges<'a>, base: GuestAddress) -> Self {
        Self { ranges, base }
    }
}

impl Iterator for DirtyGpaRanges<'_> {
    type Item = (GuestAddress, u64);

    fn next(&mut self) -> Option<(GuestAddress, u64)> {
        let (first, count) = self.ranges.next()?;
        // usize -> u64 is lossless on every supported host.
        let start = self.base.0.wrapping_add(first as u64 * PAGE_SIZE);
        Some((GuestAddress(start), count as u64 * PAGE_SIZE))
    }
}

#[cfg(test)]
mod tests {
    use crate::DirtyBitmap;
    use vm_memory::GuestAddress;

    /// The bit-by-bit reference.
    fn naive_ranges(bm: &DirtyBitmap) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = Vec::new();
        for p in 0..bm.pages() {
            if bm.is_dirty(p) {
                match out.last_mut() {
                    Some((f, c)) if *f + *c == p => *c += 1,
                    _ => out.push((p, 1)),
                }
            }
        }
        out
    }

    fn check(words: &[u64], pages: usize) {
        let bm = DirtyBitmap::from_words(words, pages).unwrap();
        let naive: Vec<usize> = (0..pages).filter(|p| bm.is_dirty(*p)).collect();
        assert_eq!(bm.pages_iter().collect::<Vec<_>>(), naive, "{words:x?}");
        assert_eq!(
            bm.ranges().collect::<Vec<_>>(),
            naive_ranges(&bm),
            "{words:x?}"
        );
        assert_eq!(bm.count(), naive.len());
    }

    #[test]
    fn ranges_spanning_words() {
        let bm = DirtyBitmap::from_words(&[0xf << 60, u64::MAX, 0b111, 0, 1 << 63], 320).unwrap();
        assert_eq!(bm.ranges().collect::<Vec<_>>(), vec![(60, 71), (319, 1)]);
        // A run ending exactly on a word boundary followed by a run in the next word.
        let bm = DirtyBitmap::from_words(&[1 << 63, 0b10], 128).unwrap();
        assert_eq!(bm.ranges().collect::<Vec<_>>(), vec![(63, 1), (65, 1)]);
        // A run that ends at the last word.
        let bm = DirtyBitmap::from_words(&[1 << 63, u64::MAX], 128).unwrap();
        assert_eq!(bm.ranges().collect::<Vec<_>>(), vec![(63, 65)]);
    }

    #[test]
    fn last_partial_word() {
        let bm = DirtyBitmap::from_words(&[0, u64::MAX], 70).unwrap();
        assert_eq!(bm.ranges().collect::<Vec<_>>(), vec![(64, 6)]);
        assert_eq!(bm.pages_iter().last(), Some(69));
    }

    #[test]
    fn single_bits_and_patterns() {
        check(&[], 0);
        check(&[0], 64);
        check(&[u64::MAX], 64);
        check(&[1], 1);
        check(&[0x5555_5555_5555_5555, 0xaaaa_aaaa_aaaa_aaaa], 128);
        check(&[0x8000_0000_0000_0001; 3], 192);
        check(
            &[u64::MAX, 0, u64::MAX, u64::MAX, 0x7fff_ffff_ffff_ffff],
            320,
        );
        check(&[0xffff_0000_ffff_0000, u64::MAX, 0xff], 140);
        // A pseudo-random sweep against the reference.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200 {
            let mut words = Vec::new();
            for _ in 0..5 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Mix in runs: sometimes all ones or all zeros.
                words.push(match x % 5 {
                    0 => 0,
                    1 => u64::MAX,
                    _ => x,
                });
            }
            check(&words, 5 * 64 - usize::try_from(x % 64).unwrap());
        }
    }

    #[test]
    fn gpa_ranges_scale_by_page() {
        let bm = DirtyBitmap::from_words(&[0b1, 1 << 63], 128).unwrap();
        let r: Vec<_> = bm.gpa_ranges(GuestAddress(0x1_0000_0000)).collect();
        assert_eq!(
            r,
            vec![
                (GuestAddress(0x1_0000_0000), 0x1000),
                (GuestAddress(0x1_0000_0000 + 127 * 0x1000), 0x1000)
            ]
        );
        assert_eq!(DirtyBitmap::new(5).gpa_ranges(GuestAddress(0)).count(), 0);
    }
}
