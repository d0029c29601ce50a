//! Laying out guest RAM around holes: discontiguous RAM as data, not arch code.

use crate::{Error, Result};
use vm_memory::GuestAddress;

/// The alignment the layout helpers require of RAM sizes and holes: 4 KiB,
/// the smallest page size any KVM host uses.
///
/// ```
/// use kvmkit_memory::{pc_layout, LAYOUT_ALIGN};
/// assert!(pc_layout(LAYOUT_ALIGN).is_ok());
/// assert!(pc_layout(LAYOUT_ALIGN + 1).is_err());
/// ```
pub const LAYOUT_ALIGN: u64 = 0x1000;

/// A range of guest physical addresses that holds no RAM, for example the
/// legacy VGA/BIOS area of a PC or a 32-bit PCI MMIO window.
///
/// ```
/// use kvmkit_memory::Hole;
/// use vm_memory::GuestAddress;
/// let vga = Hole::new(GuestAddress(0xa_0000), 0x6_0000);
/// assert_eq!(vga.end(), 0x10_0000);
/// assert!(vga.contains(GuestAddress(0xb_8000)));
/// assert!(!vga.contains(GuestAddress(0x10_0000)));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Hole {
    start: GuestAddress,
    len: u64,
}

impl Hole {
    /// A hole of `len` bytes at `start`; [`ram_layout`] checks it.
    pub const fn new(start: GuestAddress, len: u64) -> Self {
        Hole { start, len }
    }

    /// The first address of the hole.
    pub const fn start(&self) -> GuestAddress {
        self.start
    }

    /// The size of the hole in bytes.
    pub const fn len(&self) -> u64 {
        self.len
    }

    /// True for a hole of zero bytes (which [`ram_layout`] refuses).
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first address after the hole (saturating at `u64::MAX`).
    pub const fn end(&self) -> u64 {
        self.start.0.saturating_add(self.len)
    }

    /// True when `addr` is inside the hole.
    pub const fn contains(&self, addr: GuestAddress) -> bool {
        addr.0 >= self.start.0 && addr.0 < self.end()
    }

    fn check(&self) -> Result<()> {
        let aligned = self.start.0 % LAYOUT_ALIGN == 0 && self.len % LAYOUT_ALIGN == 0;
        if self.len == 0 || !aligned || self.start.0.checked_add(self.len).is_none() {
            return Err(Error::InvalidHole {
                start: self.start.0,
                len: self.len,
            });
        }
        Ok(())
    }
}

/// Places `ram_bytes` of RAM from guest address 0 upwards, skipping `holes`.
///
/// Returns the RAM ranges as `(start, len)` pairs in address order, the form
/// `vm_memory::GuestMemoryMmap::from_ranges` and [`crate::SlotTable::add_ram`]
/// take. Their sizes add up to exactly `ram_bytes`: RAM that would fall in a
/// hole continues after it. Holes above the end of RAM are not used.
///
/// Fails when `ram_bytes` is zero or not 4 KiB-aligned, a hole is empty,
/// unaligned or overflowing, two holes overlap, or the RAM would run past the
/// end of the 64-bit address space.
///
/// ```
/// use kvmkit_memory::{ram_layout, Hole};
/// use vm_memory::GuestAddress;
/// let hole = Hole::new(GuestAddress(0x8000), 0x4000);
/// let ranges = ram_layout(0xa000, &[hole]).unwrap();
/// assert_eq!(ranges, vec![(GuestAddress(0), 0x8000), (GuestAddress(0xc000), 0x2000)]);
/// ```
pub fn ram_layout(ram_bytes: u64, holes: &[Hole]) -> Result<Vec<(GuestAddress, u64)>> {
    if ram_bytes == 0 || ram_bytes % LAYOUT_ALIGN != 0 {
        return Err(Error::RamSize { ram_bytes });
    }
    let mut sorted = holes.to_vec();
    sorted.sort_by_key(|h| h.start);
    for h in &sorted {
        h.check()?;
    }
    for pair in sorted.windows(2) {
        if let [a, b] = pair {
            if b.start.0 < a.end() {
                return Err(Error::OverlappingHoles {
                    start: a.start.0,
                    end: a.end(),
                    other_start: b.start.0,
                    other_end: b.end(),
                });
            }
        }
    }

    let mut ranges = Vec::new();
    let mut cursor = 0u64;
    let mut left = ram_bytes;
    for h in &sorted {
        if left == 0 {
            break;
        }
        if cursor < h.start.0 {
            let chunk = left.min(h.start.0 - cursor);
            ranges.push((GuestAddress(cursor), chunk));
            left -= chunk;
        }
        cursor = cursor.max(h.end());
    }
    if left > 0 {
        if cursor.checked_add(left).is_none() {
            return Err(Error::AddressOverflow {
                gpa: cursor,
                len: left,
            });
        }
        ranges.push((GuestAddress(cursor), left));
    }
    Ok(ranges)
}

/// The holes of a PC's physical address space, with the usual defaults.
///
/// `legacy` is the VGA window and BIOS area between 640 KiB and 1 MiB;
/// `pci` is the 32-bit PCI MMIO window below 4 GiB (which also holds the
/// IOAPIC, LAPIC, the x86 TSS pages and the BIOS flash). Both are data:
/// change them to match the machine the VMM builds.
///
/// ```
/// use kvmkit_memory::PcHoles;
/// use vm_memory::GuestAddress;
/// const GIB: u64 = 1 << 30;
/// let ranges = PcHoles::default().layout(4 * GIB).unwrap();
/// assert_eq!(ranges, vec![
///     (GuestAddress(0), 0xa_0000),                       // [0, 640 KiB)
///     (GuestAddress(0x10_0000), 3 * GIB - 0x10_0000),    // [1 MiB, 3 GiB)
///     (GuestAddress(4 * GIB), GIB + 0x6_0000),           // the rest, from 4 GiB
/// ]);
/// let total: u64 = ranges.iter().map(|r| r.1).sum();
/// assert_eq!(total, 4 * GIB);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PcHoles {
    /// The legacy hole, by default `[0xa0000, 0x100000)`.
    pub legacy: Hole,
    /// The 32-bit PCI hole, by default `[3 GiB, 4 GiB)`.
    pub pci: Hole,
}

impl PcHoles {
    /// The default legacy hole: `[640 KiB, 1 MiB)`.
    pub const LEGACY: Hole = Hole::new(GuestAddress(0xa_0000), 0x6_0000);
    /// The default 32-bit PCI hole: `[3 GiB, 4 GiB)`.
    pub const PCI: Hole = Hole::new(GuestAddress(0xc000_0000), 0x4000_0000);

    /// Both holes, in address order.
    pub const fn holes(&self) -> [Hole; 2] {
        [self.legacy, self.pci]
    }

    /// [`ram_layout`] of `ram_bytes` around these holes.
    pub fn layout(&self, ram_bytes: u64) -> Result<Vec<(GuestAddress, u64)>> {
        ram_layout(ram_bytes, &self.holes())
    }
}

impl Default for PcHoles {
    fn default() -> Self {
        PcHoles {
            legacy: Self::LEGACY,
            pci: Self::PCI,
        }
    }
}

/// The standard PC layout of `ram_bytes` of RAM: `[0, 640 KiB)`, then from
/// 1 MiB up to 3 GiB, then the rest from 4 GiB ([`PcHoles::default`]).
///
/// ```
/// use kvmkit_memory::pc_layout;
/// use vm_memory::GuestAddress;
/// let ranges = pc_layout(16 << 20).unwrap();
/// assert_eq!(ranges, vec![
///     (GuestAddress(0), 0xa_0000),
///     (GuestAddress(0x10_0000), (16 << 20) - 0xa_0000),
/// ]);
/// ```
pub fn pc_layout(ram_bytes: u64) -> Result<Vec<(GuestAddress, u64)>> {
    PcHoles::default().layout(ram_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn total(r: &[(GuestAddress, u64)]) -> u64 {
        r.iter().map(|(_, l)| l).sum()
    }

    #[test]
    fn small_ram_fits_below_the_legacy_hole() {
        assert_eq!(
            pc_layout(0x8_0000).unwrap(),
            vec![(GuestAddress(0), 0x8_0000)]
        );
        // Exactly 640 KiB: one range, nothing above the hole.
        assert_eq!(
            pc_layout(0xa_0000).unwrap(),
            vec![(GuestAddress(0), 0xa_0000)]
        );
    }

    #[test]
    fn ram_continues_above_one_mib() {
        let r = pc_layout(MIB).unwrap();
        assert_eq!(
            r,
            vec![
                (GuestAddress(0), 0xa_0000),
                (GuestAddress(MIB), MIB - 0xa_0000)
            ]
        );
        assert_eq!(total(&r), MIB);
    }

    #[test]
    fn large_ram_splits_around_the_pci_hole() {
        let r = pc_layout(8 * GIB).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[1], (GuestAddress(MIB), 3 * GIB - MIB));
        assert_eq!(r[2].0, GuestAddress(4 * GIB));
        assert_eq!(total(&r), 8 * GIB);
        // Exactly filling up to the PCI hole leaves nothing above 4 GiB.
        let r = pc_layout(3 * GIB - MIB + 0xa_0000).unwrap();
        assert_eq!(r.len(), 2);
        let (GuestAddress(start), len) = r[1];
        assert_eq!(start + len, 3 * GIB);
    }

    #[test]
    fn hole_bounds_are_parameters() {
        let holes = PcHoles {
            pci: Hole::new(GuestAddress(0xe000_0000), 0x2000_0000),
            ..PcHoles::default()
        };
        let r = holes.layout(4 * GIB).unwrap();
        assert_eq!(r[1], (GuestAddress(MIB), 0xe000_0000 - MIB));
        assert_eq!(r[2].0, GuestAddress(4 * GIB));
        assert_eq!(total(&r), 4 * GIB);
        // No holes at all: one range.
        assert_eq!(
            ram_layout(2 * MIB, &[]).unwrap(),
            vec![(GuestAddress(0), 2 * MIB)]
        );
        // Holes given out of order are sorted; a hole at 0 shifts RAM up.
        let r = ram_layout(
            0x3000,
            &[
                Hole::new(GuestAddress(0x4000), 0x1000),
                Hole::new(GuestAddress(0), 0x1000),
            ],
        )
        .unwrap();
        assert_eq!(
            r,
            vec![(GuestAddress(0x1000), 0x3000)],
            "RAM ends at 0x4000, so the second hole is unused"
        );
    }

    #[test]
    fn bad_input_is_refused() {
        for ram in [0, 0x1001] {
            let e = pc_layout(ram).unwrap_err();
            assert!(matches!(e, Error::RamSize { ram_bytes } if ram_bytes == ram));
        }
        let e = ram_layout(0x1000, &[Hole::new(GuestAddress(0x800), 0x1000)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "memory hole at 0x800 of size 0x1000 is empty, not 4 KiB-aligned or runs past the end of the address space"
        );
        assert!(matches!(
            ram_layout(0x1000, &[Hole::new(GuestAddress(0x1000), 0)]),
            Err(Error::InvalidHole { .. })
        ));
        assert!(matches!(
            ram_layout(0x1000, &[Hole::new(GuestAddress(u64::MAX - 0xfff), 0x2000)]),
            Err(Error::InvalidHole { .. })
        ));
        let e = ram_layout(
            0x1000,
            &[
                Hole::new(GuestAddress(0x2000), 0x2000),
                Hole::new(GuestAddress(0x3000), 0x1000),
            ],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "memory holes [0x2000, 0x4000) and [0x3000, 0x4000) overlap"
        );
        // A hole reaching the top of the address space leaves no room for
        // the rest of the RAM.
        let top = Hole::new(GuestAddress(0x1000), u64::MAX - 0x1fff);
        let e = ram_layout(0x3000, &[top]).unwrap_err();
        assert!(matches!(e, Error::AddressOverflow { .. }), "{e}");
    }

    #[test]
    fn hole_accessors() {
        let h = PcHoles::PCI;
        assert_eq!(h.start(), GuestAddress(3 * GIB));
        assert_eq!(h.len(), GIB);
        assert_eq!(h.end(), 4 * GIB);
        assert!(!h.is_empty());
        assert_eq!(PcHoles::default().holes(), [PcHoles::LEGACY, PcHoles::PCI]);
    }
}
