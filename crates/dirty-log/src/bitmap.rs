//! [`DirtyBitmap`]: one bit per 4 KiB page of a slot.

use vm_memory::bitmap::{AtomicBitmap, Bitmap};
use vm_memory::GuestAddress;

use crate::iter::{DirtyGpaRanges, DirtyPages, DirtyRanges};
use crate::{Error, Result};

/// Bytes per page tracked by a [`DirtyBitmap`] (KVM's dirty log granularity).
pub const PAGE_SIZE: u64 = 0x1000;

const BITS: usize = u64::BITS as usize;

/// A per-slot dirty bitmap of 4 KiB pages.
///
/// Laid out as KVM lays out a `KVM_GET_DIRTY_LOG` bitmap: `u64` words, bit `i % 64` of
/// word `i / 64` is page `i` of the slot. Bits past the last page are always zero.
///
/// ```
/// use kvmkit_dirty_log::DirtyBitmap;
///
/// let bm = DirtyBitmap::from_words(&[0b1011], 4)?;
/// assert_eq!(bm.count(), 3);
/// assert!(bm.is_dirty(3));
/// assert_eq!(bm.ranges().collect::<Vec<_>>(), vec![(0, 2), (3, 1)]);
/// # Ok::<(), kvmkit_dirty_log::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirtyBitmap {
    words: Vec<u64>,
    pages: usize,
}

/// Words needed for `pages` pages.
fn words_for(pages: usize) -> usize {
    pages.div_ceil(BITS)
}

impl DirtyBitmap {
    /// A clean bitmap of `pages` pages.
    ///
    /// ```
    /// let bm = kvmkit_dirty_log::DirtyBitmap::new(100);
    /// assert_eq!((bm.pages(), bm.count()), (100, 0));
    /// ```
    pub fn new(pages: usize) -> Self {
        Self {
            words: vec![0; words_for(pages)],
            pages,
        }
    }

    /// A clean bitmap for a slot of `len` bytes (rounded up to whole pages).
    ///
    /// ```
    /// let bm = kvmkit_dirty_log::DirtyBitmap::for_len(0x1001);
    /// assert_eq!(bm.pages(), 2);
    /// ```
    pub fn for_len(len: u64) -> Self {
        let pages = len.div_ceil(PAGE_SIZE);
        // A slot longer than the address space cannot be mapped; saturate.
        Self::new(usize::try_from(pages).unwrap_or(usize::MAX))
    }

    /// A bitmap of `pages` pages from KVM-layout words; bits past `pages` are ignored.
    ///
    /// ```
    /// let bm = kvmkit_dirty_log::DirtyBitmap::from_words(&[u64::MAX], 3)?;
    /// assert_eq!(bm.count(), 3);
    /// assert!(kvmkit_dirty_log::DirtyBitmap::from_words(&[0, 0], 3).is_err());
    /// # Ok::<(), kvmkit_dirty_log::Error>(())
    /// ```
    pub fn from_words(words: &[u64], pages: usize) -> Result<Self> {
        Self::from_vec(words.to_vec(), pages)
    }

    /// Like [`DirtyBitmap::from_words`], taking ownership of the words.
    ///
    /// ```
    /// let bm = kvmkit_dirty_log::DirtyBitmap::from_vec(vec![1, 1], 65)?;
    /// assert_eq!(bm.pages_iter().collect::<Vec<_>>(), vec![0, 64]);
    /// # Ok::<(), kvmkit_dirty_log::Error>(())
    /// ```
    pub fn from_vec(words: Vec<u64>, pages: usize) -> Result<Self> {
        let expected = words_for(pages);
        if words.len() != expected {
            return Err(Error::FromWords {
                pages,
                expected,
                words: words.len(),
            });
        }
        let mut bm = Self { words, pages };
        bm.mask_tail();
        Ok(bm)
    }

    /// The words, for a backend to fill in place (e.g. by `KVM_GET_DIRTY_LOG`);
    /// call [`DirtyBitmap::mask_tail`] afterwards.
    pub(crate) fn words_mut(&mut self) -> &mut [u64] {
        &mut self.words
    }

    /// Clears the bits past the last page, restoring the invariant.
    pub(crate) fn mask_tail(&mut self) {
        let tail = self.pages % BITS;
        if tail != 0 {
            if let Some(last) = self.words.last_mut() {
                *last &= (1u64 << tail) - 1;
            }
        }
    }

    /// Harvests a vm-memory [`AtomicBitmap`] word by word, clearing it atomically
    /// (`get_and_reset`), so that no write marked concurrently is lost.
    ///
    /// The vm-memory bitmap must track 4 KiB pages (its `len` is its `byte_size` in pages).
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use vm_memory::bitmap::AtomicBitmap;
    ///
    /// let page = NonZeroUsize::new(0x1000).expect("non-zero");
    /// let vmm = AtomicBitmap::new(0x10_0000, page);
    /// vmm.set_addr_range(0x2000, 0x1800);
    /// let bm = kvmkit_dirty_log::DirtyBitmap::harvest_atomic_bitmap(&vmm)?;
    /// assert_eq!(bm.ranges().collect::<Vec<_>>(), vec![(2, 2)]);
    /// assert!(!vmm.is_bit_set(2));
    /// # Ok::<(), kvmkit_dirty_log::Error>(())
    /// ```
    pub fn harvest_atomic_bitmap(bitmap: &AtomicBitmap) -> Result<Self> {
        let pages = bitmap.len();
        let page_bytes = usize::try_from(PAGE_SIZE).unwrap_or(usize::MAX);
        if bitmap.byte_size().div_ceil(page_bytes) != pages {
            return Err(Error::HarvestAtomicBitmap {
                byte_size: bitmap.byte_size(),
                pages,
            });
        }
        Self::from_vec(bitmap.get_and_reset(), pages)
    }

    /// ORs in the pages a vm-memory [`Bitmap`] marks dirty, for the slot this bitmap covers.
    ///
    /// Works with any vm-memory bitmap or bitmap slice whose offset 0 is the slot's first
    /// byte, such as `slot.region().bitmap()` of a `GuestRegionMmap<AtomicBitmap>`. The
    /// vm-memory bitmap is only read; it is queried once per page.
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use vm_memory::bitmap::{AtomicBitmap, Bitmap};
    ///
    /// let vmm = AtomicBitmap::new(0x4000, NonZeroUsize::new(0x1000).expect("non-zero"));
    /// vmm.mark_dirty(0x3000, 1);
    /// let mut bm = kvmkit_dirty_log::DirtyBitmap::from_words(&[1], 4)?;
    /// bm.merge_vm_memory(&vmm.slice_at(0));
    /// assert_eq!(bm.pages_iter().collect::<Vec<_>>(), vec![0, 3]);
    /// # Ok::<(), kvmkit_dirty_log::Error>(())
    /// ```
    pub fn merge_vm_memory<B: Bitmap>(&mut self, bitmap: &B) {
        let mut offset = 0usize;
        let step = usize::try_from(PAGE_SIZE).unwrap_or(usize::MAX);
        for page in 0..self.pages {
            if bitmap.dirty_at(offset) {
                self.words[page / BITS] |= 1 << (page % BITS);
            }
            offset = offset.saturating_add(step);
        }
    }

    /// ORs `other` into this bitmap; both must cover the same number of pages.
    ///
    /// ```
    /// use kvmkit_dirty_log::DirtyBitmap;
    /// let mut a = DirtyBitmap::from_words(&[0b01], 2)?;
    /// a.merge(&DirtyBitmap::from_words(&[0b10], 2)?)?;
    /// assert_eq!(a.count(), 2);
    /// assert!(a.merge(&DirtyBitmap::new(3)).is_err());
    /// # Ok::<(), kvmkit_dirty_log::Error>(())
    /// ```
    pub fn merge(&mut self, other: &DirtyBitmap) -> Result<()> {
        if other.pages != self.pages {
            return Err(Error::Merge {
                pages: self.pages,
                other: other.pages,
            });
        }
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= *b;
        }
        Ok(())
    }

    /// Marks page `page` dirty; pages past the end are ignored.
    ///
    /// ```
    /// let mut bm = kvmkit_dirty_log::DirtyBitmap::new(2);
    /// bm.set(1);
    /// bm.set(2);
    /// assert_eq!(bm.count(), 1);
    /// ```
    pub fn set(&mut self, page: usize) {
        if page < self.pages {
            self.words[page / BITS] |= 1 << (page % BITS);
        }
    }

    /// Clears every page, keeping the size.
    ///
    /// ```
    /// let mut bm = kvmkit_dirty_log::DirtyBitmap::from_words(&[3], 2)?;
    /// bm.clear();
    /// assert!(bm.is_clean());
    /// # Ok::<(), kvmkit_dirty_log::Error>(())
    /// ```
    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    /// Whether page `page` is dirty; pages past the end are clean.
    ///
    /// ```
    /// let bm = kvmkit_dirty_log::DirtyBitmap::from_words(&[2], 2)?;
    /// assert!(!bm.is_dirty(0) && bm.is_dirty(1) && !bm.is_dirty(99));
    /// # Ok::<(), kvmkit_dirty_log::Error>(())
    /// ```
    pub fn is_dirty(&self, page: usize) -> bool {
        page < self.pages && self.words[page / BITS] & (1 << (page % BITS)) != 0
    }

    /// Whether any page in `first..end` is dirty (word-wise); pages past the end are clean.
    ///
    /// ```
    /// let bm = kvmkit_dirty_log::DirtyBitmap::from_words(&[0, 1 << 3], 128)?;
    /// assert!(bm.any_dirty(60, 68));
    /// assert!(!bm.any_dirty(0, 67));
    /// # Ok::<(), kvmkit_dirty_log::Error>(())
    /// ```
    pub fn any_dirty(&self, first: usize, end: usize) -> bool {
        let end = end.min(self.pages);
        if first >= end {
            return false;
        }
        let (fw, lw) = (first / BITS, (end - 1) / BITS);
        let lo_mask = u64::MAX << (first % BITS);
        let hi_mask = u64::MAX >> (BITS - 1 - (end - 1) % BITS);
        if fw == lw {
            return self.words[fw] & lo_mask & hi_mask != 0;
        }
        self.words[fw] & lo_mask != 0
            || self.words[fw + 1..lw].iter().any(|w| *w != 0)
            || self.words[lw] & hi_mask != 0
    }

    /// Number of dirty pages.
    ///
    /// ```
    /// let bm = kvmkit_dirty_log::DirtyBitmap::from_words(&[u64::MAX, 1], 65)?;
    /// assert_eq!(bm.count(), 65);
    /// # Ok::<(), kvmkit_dirty_log::Error>(())
    /// ```
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether no page is dirty.
    ///
    /// ```
    /// assert!(kvmkit_dirty_log::DirtyBitmap::new(64).is_clean());
    /// ```
    pub fn is_clean(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// Pages this bitmap covers.
    ///
    /// ```
    /// assert_eq!(kvmkit_dirty_log::DirtyBitmap::new(65).pages(), 65);
    /// ```
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// The KVM-layout words.
    ///
    /// ```
    /// assert_eq!(kvmkit_dirty_log::DirtyBitmap::new(65).words(), &[0, 0]);
    /// ```
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Iterates over dirty page indices in ascending order, word by word.
    ///
    /// ```
    /// let bm = kvmkit_dirty_log::DirtyBitmap::from_words(&[1 << 63, 1], 65)?;
    /// assert_eq!(bm.pages_iter().collect::<Vec<_>>(), vec![63, 64]);
    /// # Ok::<(), kvmkit_dirty_log::Error>(())
    /// ```
    pub fn pages_iter(&self) -> DirtyPages<'_> {
        DirtyPages::new(&self.words)
    }

    /// Iterates over maximal runs of dirty pages as `(first_page, count)`, word by word.
    ///
    /// ```
    /// let bm = kvmkit_dirty_log::DirtyBitmap::from_words(&[1 << 63, 3], 66)?;
    /// assert_eq!(bm.ranges().collect::<Vec<_>>(), vec![(63, 3)]);
    /// # Ok::<(), kvmkit_dirty_log::Error>(())
    /// ```
    pub fn ranges(&self) -> DirtyRanges<'_> {
        DirtyRanges::new(&self.words)
    }

    /// Iterates over dirty guest-physical ranges `(start, len_bytes)` of a slot at `base`.
    ///
    /// ```
    /// use vm_memory::GuestAddress;
    /// let bm = kvmkit_dirty_log::DirtyBitmap::from_words(&[0b110], 3)?;
    /// let r: Vec<_> = bm.gpa_ranges(GuestAddress(0x10_0000)).collect();
    /// assert_eq!(r, vec![(GuestAddress(0x10_1000), 0x2000)]);
    /// # Ok::<(), kvmkit_dirty_log::Error>(())
    /// ```
    pub fn gpa_ranges(&self, base: GuestAddress) -> DirtyGpaRanges<'_> {
        DirtyGpaRanges::new(self.ranges(), base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroUsize;

    #[test]
    fn empty_bitmap() {
        let bm = DirtyBitmap::new(0);
        assert_eq!(bm.words().len(), 0);
        assert_eq!(bm.count(), 0);
        assert!(bm.is_clean());
        assert!(!bm.is_dirty(0));
        assert!(!bm.any_dirty(0, 10));
        assert_eq!(bm.pages_iter().count(), 0);
        assert_eq!(bm.ranges().count(), 0);
        assert!(DirtyBitmap::from_words(&[], 0).is_ok());
    }

    #[test]
    fn from_words_checks_length_and_masks_tail() {
        let err = DirtyBitmap::from_words(&[0], 65).unwrap_err();
        assert!(matches!(
            err,
            Error::FromWords {
                pages: 65,
                expected: 2,
                words: 1
            }
        ));
        assert!(err.to_string().starts_with("building a bitmap of 65 pages"));
        let bm = DirtyBitmap::from_words(&[u64::MAX, u64::MAX], 70).unwrap();
        assert_eq!(bm.count(), 70);
        assert!(bm.is_dirty(69));
        assert!(!bm.is_dirty(70));
        assert_eq!(bm.words()[1], 0x3f);
    }

    #[test]
    fn all_ones() {
        let bm = DirtyBitmap::from_words(&[u64::MAX; 4], 256).unwrap();
        assert_eq!(bm.count(), 256);
        assert_eq!(bm.ranges().collect::<Vec<_>>(), vec![(0, 256)]);
        assert_eq!(
            bm.pages_iter().collect::<Vec<_>>(),
            (0..256).collect::<Vec<_>>()
        );
        assert!(bm.any_dirty(255, 256));
    }

    #[test]
    fn merge_and_mismatch() {
        let mut a = DirtyBitmap::from_words(&[1, 0], 100).unwrap();
        let b = DirtyBitmap::from_words(&[0, 1 << 35], 100).unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a.pages_iter().collect::<Vec<_>>(), vec![0, 99]);
        let err = a.merge(&DirtyBitmap::new(99)).unwrap_err();
        assert!(matches!(
            err,
            Error::Merge {
                pages: 100,
                other: 99
            }
        ));
    }

    #[test]
    fn set_clear_for_len() {
        let mut bm = DirtyBitmap::for_len(0);
        assert_eq!(bm.pages(), 0);
        bm.set(0);
        assert!(bm.is_clean());
        let mut bm = DirtyBitmap::for_len(PAGE_SIZE * 64 + 1);
        assert_eq!(bm.pages(), 65);
        bm.set(64);
        assert!(bm.is_dirty(64));
        bm.clear();
        assert!(bm.is_clean());
        assert_eq!(bm.pages(), 65);
    }

    #[test]
    fn any_dirty_edges() {
        let bm = DirtyBitmap::from_words(&[1 << 63, 0, 1], 130).unwrap();
        assert!(bm.any_dirty(63, 64));
        assert!(!bm.any_dirty(0, 63));
        assert!(!bm.any_dirty(64, 128));
        assert!(bm.any_dirty(64, 129));
        assert!(bm.any_dirty(0, 1000));
        assert!(!bm.any_dirty(129, 1000));
        assert!(!bm.any_dirty(5, 5));
        assert!(!bm.any_dirty(6, 5));
    }

    #[test]
    fn harvest_atomic_bitmap_clears_source() {
        let page = NonZeroUsize::new(0x1000).unwrap();
        // 70 pages: the last word is partial.
        let vmm = AtomicBitmap::new(70 * 0x1000, page);
        vmm.set_bit(0);
        vmm.set_bit(63);
        vmm.set_bit(64);
        vmm.set_bit(69);
        let bm = DirtyBitmap::harvest_atomic_bitmap(&vmm).unwrap();
        assert_eq!(bm.pages(), 70);
        assert_eq!(
            bm.ranges().collect::<Vec<_>>(),
            vec![(0, 1), (63, 2), (69, 1)]
        );
        assert!((0..70).all(|i| !vmm.is_bit_set(i)));
    }

    #[test]
    fn harvest_atomic_bitmap_rejects_other_page_size() {
        let vmm = AtomicBitmap::new(0x10000, NonZeroUsize::new(0x200).unwrap());
        let err = DirtyBitmap::harvest_atomic_bitmap(&vmm).unwrap_err();
        assert!(matches!(err, Error::HarvestAtomicBitmap { pages: 128, .. }));
    }

    #[test]
    fn merge_vm_memory_slice() {
        let vmm = AtomicBitmap::new(130 * 0x1000, NonZeroUsize::new(0x1000).unwrap());
        vmm.mark_dirty(64 * 0x1000 - 1, 2);
        vmm.mark_dirty(129 * 0x1000, 1);
        let mut bm = DirtyBitmap::new(130);
        bm.set(5);
        bm.merge_vm_memory(&vmm.slice_at(0));
        assert_eq!(bm.pages_iter().collect::<Vec<_>>(), vec![5, 63, 64, 129]);
        // Read only: the vm-memory bitmap keeps its bits.
        assert!(vmm.is_bit_set(63));
        // The no-op bitmap marks nothing.
        let mut clean = DirtyBitmap::new(10);
        clean.merge_vm_memory(&());
        assert!(clean.is_clean());
    }
}
