//! Framebuffer damage from a dirty bitmap.

use crate::bitmap::PAGE_SIZE;
use crate::{DirtyBitmap, Error, Result};

/// A damaged rectangle of a framebuffer, in pixels.
///
/// ```
/// let r = kvmkit_dirty_log::Rect { x: 0, y: 2, width: 640, height: 3 };
/// assert_eq!(r.y + r.height, 5);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rect {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in rows.
    pub height: u32,
}

/// Damage rectangles of a linear framebuffer from the dirty pages of its slot.
///
/// The framebuffer starts at page `fb_base_page` of the slot `bitmap` covers (page aligned),
/// has `height_px` rows of `width_px` pixels of `bytes_per_px` bytes, `stride_bytes` apart.
/// A row is damaged if any page holding one of its pixel bytes is dirty; the result is
/// full-width row bands, adjacent damaged rows merged into one band, top to bottom.
/// Pages past the end of the bitmap count as clean.
///
/// ```
/// use kvmkit_dirty_log::{damage_rects, DirtyBitmap, Rect};
///
/// // 1024x768 at 32 bpp: one row is exactly one 4 KiB page.
/// let mut bm = DirtyBitmap::new(768);
/// bm.set(10);
/// bm.set(11);
/// bm.set(700);
/// let rects = damage_rects(&bm, 0, 1024, 768, 4, 4096)?;
/// assert_eq!(rects, vec![
///     Rect { x: 0, y: 10, width: 1024, height: 2 },
///     Rect { x: 0, y: 700, width: 1024, height: 1 },
/// ]);
/// # Ok::<(), kvmkit_dirty_log::Error>(())
/// ```
pub fn damage_rects(
    bitmap: &DirtyBitmap,
    fb_base_page: usize,
    width_px: u32,
    height_px: u32,
    bytes_per_px: u32,
    stride_bytes: u32,
) -> Result<Vec<Rect>> {
    let geometry = || Error::DamageRects {
        width_px,
        height_px,
        bytes_per_px,
        stride_bytes,
    };
    let row_bytes =
        usize::try_from(u64::from(width_px) * u64::from(bytes_per_px)).map_err(|_| geometry())?;
    let stride = stride_bytes as usize;
    if bytes_per_px == 0 || row_bytes > stride {
        return Err(geometry());
    }
    // The whole framebuffer must be addressable.
    (height_px as usize)
        .checked_mul(stride)
        .ok_or_else(geometry)?;
    let page = usize::try_from(PAGE_SIZE).map_err(|_| geometry())?;
    let mut out: Vec<Rect> = Vec::new();
    if width_px == 0 {
        return Ok(out);
    }
    for y in 0..height_px {
        let start = y as usize * stride;
        let first = fb_base_page.saturating_add(start / page);
        let end = fb_base_page.saturating_add((start + row_bytes - 1) / page + 1);
        if !bitmap.any_dirty(first, end) {
            continue;
        }
        match out.last_mut() {
            Some(r) if r.y + r.height == y => r.height += 1,
            _ => out.push(Rect {
                x: 0,
                y,
                width: width_px,
                height: 1,
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn band(y: u32, height: u32, width: u32) -> Rect {
        Rect {
            x: 0,
            y,
            width,
            height,
        }
    }

    #[test]
    fn clean_and_empty() {
        let bm = DirtyBitmap::new(1000);
        assert!(damage_rects(&bm, 0, 1024, 768, 4, 4096).unwrap().is_empty());
        let all = DirtyBitmap::from_words(&[u64::MAX; 16], 1024).unwrap();
        assert!(damage_rects(&all, 0, 0, 768, 4, 4096).unwrap().is_empty());
        assert!(damage_rects(&all, 0, 1024, 0, 4, 4096).unwrap().is_empty());
        assert!(damage_rects(&DirtyBitmap::new(0), 0, 8, 8, 4, 32)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn all_dirty_is_one_band() {
        let all = DirtyBitmap::from_words(&[u64::MAX; 16], 1024).unwrap();
        assert_eq!(
            damage_rects(&all, 0, 1024, 768, 4, 4096).unwrap(),
            vec![band(0, 768, 1024)]
        );
    }

    #[test]
    fn rows_spanning_pages() {
        // 800x600 at 32 bpp: 3200-byte rows, each page holds parts of two rows.
        let mut bm = DirtyBitmap::new(600);
        // Page 1 holds bytes 4096..8192: rows 1 (3200..6400) and 2 (6400..9600).
        bm.set(1);
        let rects = damage_rects(&bm, 0, 800, 600, 4, 3200).unwrap();
        assert_eq!(rects, vec![band(1, 2, 800)]);
        // Page 0 holds rows 0 and 1: the bands merge.
        bm.set(0);
        let rects = damage_rects(&bm, 0, 800, 600, 4, 3200).unwrap();
        assert_eq!(rects, vec![band(0, 3, 800)]);
    }

    #[test]
    fn padding_only_page_is_no_damage() {
        // Rows of 1000 bytes with a 8192-byte stride: page 1 holds only padding of row 0.
        let mut bm = DirtyBitmap::new(64);
        bm.set(1);
        assert!(damage_rects(&bm, 0, 250, 8, 4, 8192).unwrap().is_empty());
        bm.set(2);
        assert_eq!(
            damage_rects(&bm, 0, 250, 8, 4, 8192).unwrap(),
            vec![band(1, 1, 250)]
        );
    }

    #[test]
    fn base_page_offset_and_past_end() {
        let mut bm = DirtyBitmap::new(200);
        bm.set(100 + 5);
        bm.set(5); // Before the framebuffer: ignored.
        let rects = damage_rects(&bm, 100, 1024, 768, 4, 4096).unwrap();
        // Pages past the bitmap (the framebuffer has 768 pages) are clean.
        assert_eq!(rects, vec![band(5, 1, 1024)]);
    }

    #[test]
    fn separate_bands() {
        let mut bm = DirtyBitmap::new(768);
        for p in [0, 2, 3, 767] {
            bm.set(p);
        }
        assert_eq!(
            damage_rects(&bm, 0, 1024, 768, 4, 4096).unwrap(),
            vec![band(0, 1, 1024), band(2, 2, 1024), band(767, 1, 1024)]
        );
    }

    #[test]
    fn bad_geometry() {
        let bm = DirtyBitmap::new(1);
        let err = damage_rects(&bm, 0, 1024, 768, 4, 4095).unwrap_err();
        assert!(matches!(
            err,
            Error::DamageRects {
                stride_bytes: 4095,
                ..
            }
        ));
        assert!(damage_rects(&bm, 0, 1024, 768, 0, 4096).is_err());
    }
}
