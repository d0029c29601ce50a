//! The e820 memory map: guest RAM plus the ranges a PC reserves.

use super::layout::E820_RESERVED;

/// The type of an e820 range, with Linux's numbering (`E820_TYPE_*`), which
/// the PVH memory map shares.
///
/// ```
/// use kvmkit_arch_x86_64::E820Kind;
/// assert_eq!(E820Kind::Ram as u32, 1);
/// assert_eq!(E820Kind::Unusable.linux_type(), 5);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum E820Kind {
    /// Usable RAM (`E820_TYPE_RAM`, 1).
    Ram = 1,
    /// Reserved: not RAM, not to be used (`E820_TYPE_RESERVED`, 2).
    Reserved = 2,
    /// RAM holding ACPI tables, reclaimable after boot (`E820_TYPE_ACPI`, 3).
    Acpi = 3,
    /// ACPI non-volatile storage (`E820_TYPE_NVS`, 4).
    Nvs = 4,
    /// RAM with errors (`E820_TYPE_UNUSABLE`, 5).
    Unusable = 5,
}

impl E820Kind {
    /// The type number Linux (and the PVH memory map) use.
    ///
    /// ```
    /// assert_eq!(kvmkit_arch_x86_64::E820Kind::Reserved.linux_type(), 2);
    /// ```
    pub const fn linux_type(self) -> u32 {
        self as u32
    }
}

/// One range of the e820 memory map.
///
/// ```
/// use kvmkit_arch_x86_64::{E820Entry, E820Kind};
/// let e = E820Entry { addr: 0x10_0000, size: 0x10_0000, kind: E820Kind::Ram };
/// assert_eq!(e.end(), 0x20_0000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct E820Entry {
    /// The first guest physical address.
    pub addr: u64,
    /// The size in bytes.
    pub size: u64,
    /// The type.
    pub kind: E820Kind,
}

impl E820Entry {
    /// The first address past the range (saturating at `u64::MAX`).
    ///
    /// ```
    /// use kvmkit_arch_x86_64::{E820Entry, E820Kind};
    /// let e = E820Entry { addr: 0, size: 0xa_0000, kind: E820Kind::Ram };
    /// assert_eq!(e.end(), 0xa_0000);
    /// ```
    pub const fn end(&self) -> u64 {
        self.addr.saturating_add(self.size)
    }
}

/// Builds the e820 map of a guest whose RAM is `ram`, as `(gpa, len)`
/// ranges (for example `kvmkit_memory::pc_layout`'s result).
///
/// The result is sorted and non-overlapping. It lists the RAM, minus the
/// always-reserved ranges of [`crate::E820_RESERVED`] (the EBDA at the top
/// of low RAM, the BIOS region, the IOAPIC and local APIC pages), plus those
/// reserved ranges. Overlapping or adjacent RAM ranges are merged; empty
/// ones are dropped; a range running past the end of the address space is
/// cut at `u64::MAX`. Holes such as the legacy VGA area and the 32-bit PCI
/// hole are simply absent, as they are absent from `ram`.
///
/// ```
/// use kvmkit_arch_x86_64::{e820_map, E820Entry, E820Kind};
/// let map = e820_map(&[(0, 0xa_0000), (0x10_0000, 0x1ff0_0000)]);
/// let ram = |addr, size| E820Entry { addr, size, kind: E820Kind::Ram };
/// let res = |addr, size| E820Entry { addr, size, kind: E820Kind::Reserved };
/// assert_eq!(
///     map,
///     vec![
///         ram(0, 0x9_fc00),
///         res(0x9_fc00, 0x400),
///         res(0xe_0000, 0x2_0000),
///         ram(0x10_0000, 0x1ff0_0000),
///         res(0xfec0_0000, 0x1000),
///         res(0xfee0_0000, 0x1000),
///     ]
/// );
/// ```
pub fn e820_map(ram: &[(u64, u64)]) -> Vec<E820Entry> {
    // RAM as sorted, merged half-open intervals.
    let mut spans: Vec<(u64, u64)> = ram
        .iter()
        .filter(|(_, len)| *len > 0)
        .map(|&(gpa, len)| (gpa, gpa.saturating_add(len)))
        .collect();
    spans.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    // Carve the reserved ranges out of RAM.
    for &(rgpa, rlen) in &E820_RESERVED {
        let (rstart, rend) = (rgpa, rgpa + rlen);
        merged = merged
            .into_iter()
            .flat_map(|(start, end)| {
                let below = (start < rstart).then(|| (start, end.min(rstart)));
                let above = (end > rend).then(|| (start.max(rend), end));
                [below, above]
            })
            .flatten()
            .filter(|(start, end)| start < end)
            .collect();
    }
    let mut map: Vec<E820Entry> = merged
        .into_iter()
        .map(|(start, end)| E820Entry {
            addr: start,
            size: end - start,
            kind: E820Kind::Ram,
        })
        .chain(E820_RESERVED.iter().map(|&(addr, size)| E820Entry {
            addr,
            size,
            kind: E820Kind::Reserved,
        }))
        .collect();
    map.sort_unstable_by_key(|e| e.addr);
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::layout::*;

    const GIB: u64 = 1 << 30;

    fn check_sorted_disjoint(map: &[E820Entry]) {
        assert!(map.iter().all(|e| e.size > 0));
        for w in map.windows(2) {
            assert!(w[0].end() <= w[1].addr, "{:x?} overlaps {:x?}", w[0], w[1]);
        }
    }

    fn ram_bytes(map: &[E820Entry]) -> u64 {
        map.iter()
            .filter(|e| e.kind == E820Kind::Ram)
            .map(|e| e.size)
            .sum()
    }

    fn overlaps(e: &E820Entry, start: u64, end: u64) -> bool {
        e.addr < end && start < e.end()
    }

    #[test]
    fn map_of_512_mib() {
        // kvmkit_memory::pc_layout(512 MiB).
        let ram = [(0, 0xa_0000), (0x10_0000, (512 << 20) - 0xa_0000)];
        let map = e820_map(&ram);
        check_sorted_disjoint(&map);
        assert_eq!(map.len(), 6);
        assert_eq!(ram_bytes(&map), (512 << 20) - 0x400);
        assert_eq!(
            map[0],
            E820Entry {
                addr: 0,
                size: EBDA_START,
                kind: E820Kind::Ram
            }
        );
        let high = map[3];
        assert_eq!((high.addr, high.end()), (HIGH_RAM_START, 0x2006_0000));
        assert!(map
            .iter()
            .any(|e| e.addr == BIOS_START && e.kind == E820Kind::Reserved));
    }

    #[test]
    fn map_above_4_gib_keeps_the_pci_hole_out() {
        // kvmkit_memory::pc_layout(5 GiB): [0, 640K), [1M, 3G), [4G, 4G + 2G + 384K).
        let below = 3 * GIB - HIGH_RAM_START;
        let above = 5 * GIB - 0xa_0000 - below;
        let ram = [(4 * GIB, above), (0, 0xa_0000), (HIGH_RAM_START, below)];
        let map = e820_map(&ram);
        check_sorted_disjoint(&map);
        assert_eq!(ram_bytes(&map), 5 * GIB - 0x400);
        for e in map.iter().filter(|e| e.kind == E820Kind::Ram) {
            assert!(!overlaps(e, PCI_HOLE_START, PCI_HOLE_START + PCI_HOLE_SIZE));
            assert!(!overlaps(e, LOW_RAM_END, HIGH_RAM_START));
        }
        let last = map.last().unwrap();
        assert_eq!(
            (last.addr, last.end(), last.kind),
            (4 * GIB, 4 * GIB + above, E820Kind::Ram)
        );
        let reserved: Vec<u64> = map
            .iter()
            .filter(|e| e.kind == E820Kind::Reserved)
            .map(|e| e.addr)
            .collect();
        assert_eq!(
            reserved,
            vec![EBDA_START, BIOS_START, IOAPIC_ADDR, LAPIC_ADDR]
        );
    }

    #[test]
    fn ram_over_reserved_ranges_is_carved_and_merged() {
        // One flat range over everything, a duplicate, an empty one and one
        // that runs off the end of the address space.
        let ram = [
            (0, 5 * GIB),
            (0x1000, 0x1000),
            (0x5000, 0),
            (u64::MAX - 0xfff, 0x2000),
        ];
        let map = e820_map(&ram);
        check_sorted_disjoint(&map);
        for &(gpa, len) in &E820_RESERVED {
            for e in map.iter().filter(|e| e.kind == E820Kind::Ram) {
                assert!(!overlaps(e, gpa, gpa + len), "{e:x?}");
            }
        }
        let kinds: Vec<E820Kind> = map.iter().map(|e| e.kind).collect();
        use E820Kind::{Ram, Reserved};
        assert_eq!(
            kinds,
            vec![Ram, Reserved, Ram, Reserved, Ram, Reserved, Ram, Reserved, Ram, Ram]
        );
        assert_eq!(map.last().unwrap().end(), u64::MAX);
    }

    #[test]
    fn no_ram_still_lists_the_reserved_ranges() {
        let map = e820_map(&[]);
        assert_eq!(map.len(), E820_RESERVED.len());
        assert!(map.iter().all(|e| e.kind == E820Kind::Reserved));
    }
}
