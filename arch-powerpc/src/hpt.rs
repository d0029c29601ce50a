//! The KVM-HV guest hash page table (HPT) as saved state.
//!
//! Under KVM-HV the guest's HPT lives in the kernel (allocated by
//! `KVM_PPC_ALLOCATE_HTAB` or on the first run); KVM-PR keeps it in guest
//! memory, where SDR1 points. `KVM_PPC_GET_HTAB_FD` opens a stream over it.
//! Reading gives records (`struct kvm_get_htab_header`, then `n_valid`
//! HPTEs of two big-endian doublewords, then `n_invalid` invalid entries
//! the stream does not spell out): a first pass over the whole table, then
//! only the entries changed since. Writing (`KVM_GET_HTAB_WRITE`) takes the
//! same records. QEMU migrates pseries guests this way; here the stream is
//! read to the end of the first pass plus the changes, which are none when
//! the vCPUs are stopped, and kept as the table's valid entries.
//!
//! The parsing and the encoding are pure and tested on any host from bytes
//! laid out as the kernel lays them out; the ioctl and the reads and writes
//! of the stream have not run on a PowerPC host.

use crate::uapi::kvm_get_htab_header;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::mem::size_of;

/// The size of one HPTE in the stream and in the table.
pub const HPTE_BYTES: usize = 16;
/// The smallest HPT order `KVM_PPC_ALLOCATE_HTAB` accepts (256 KiB).
pub const HPT_ORDER_MIN: u32 = 18;
/// The largest HPT order `KVM_PPC_ALLOCATE_HTAB` accepts.
pub const HPT_ORDER_MAX: u32 = 46;
/// How many reads after the first pass may still return changed entries
/// before the save gives up: with the vCPUs stopped there are none.
pub(crate) const MAX_READS_AFTER_FIRST_PASS: usize = 16;

const HEADER_BYTES: usize = size_of::<kvm_get_htab_header>();

/// One valid hash page table entry: its index in the table and its two
/// doublewords as the architecture defines them (not in host byte order).
///
/// ```
/// let e = kvmkit_arch_powerpc::Hpte { index: 8, v: 0x4000_0000_0000_0001, r: 0x196 };
/// assert_eq!(e.v & 1, 1); // HPTE_V_VALID
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hpte {
    /// The entry's index (PTEG × 8 + slot).
    pub index: u32,
    /// The first doubleword (AVPN, flags, valid bit).
    pub v: u64,
    /// The second doubleword (real page number, protection).
    pub r: u64,
}

/// A KVM-HV guest hash page table: its size and its valid entries.
///
/// ```
/// use kvmkit_arch_powerpc::{HashPageTable, Hpte};
/// let t = HashPageTable { order: 18, entries: vec![Hpte { index: 0, v: 1, r: 2 }] };
/// assert_eq!(t.len(), 1 << 14); // 256 KiB of 16-byte entries
/// assert!(t.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashPageTable {
    /// log2 of the table's size in bytes (`KVM_PPC_ALLOCATE_HTAB`'s order).
    pub order: u32,
    /// The valid entries, by increasing index.
    pub entries: Vec<Hpte>,
}

/// A hash page table stream or saved table that does not make sense.
///
/// ```
/// use kvmkit_arch_powerpc::HptError;
/// let e = HptError::BadOrder { order: 50 };
/// assert_eq!(e.to_string(), "hash page table order 50 is outside 18..=46");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HptError {
    /// A record runs past the end of what the read returned.
    #[error(
        "hash page table record at byte {offset} needs {needed} bytes, the read returned {len}"
    )]
    Truncated {
        /// Where the record starts.
        offset: usize,
        /// Its end.
        needed: usize,
        /// The bytes read.
        len: usize,
    },
    /// The first pass left a gap: a record did not start where the
    /// previous one ended.
    #[error("hash page table record at entry {index} leaves a gap after entry {expected}")]
    Gap {
        /// The record's first entry.
        index: u64,
        /// Where it should have started.
        expected: u64,
    },
    /// A record reaches past the end of the table.
    #[error("hash page table record reaches entry {end}, the table has {entries}")]
    OutOfRange {
        /// The entry after the record's last.
        end: u64,
        /// The table's entries.
        entries: u64,
    },
    /// The first pass covered a number of entries that is no table size.
    #[error("the first pass covered {entries} hash page table entries, not a power of two")]
    BadSize {
        /// The entries covered.
        entries: u64,
    },
    /// An order `KVM_PPC_ALLOCATE_HTAB` refuses.
    #[error("hash page table order {order} is outside 18..=46")]
    BadOrder {
        /// The order.
        order: u32,
    },
    /// Saved entries out of order, repeated, or beyond the table.
    #[error("saved hash page table entry {index} is repeated, out of order or beyond the table")]
    BadEntry {
        /// The entry's index.
        index: u32,
    },
    /// The table kept changing after the first pass: a vCPU is running.
    #[error("the hash page table still changed after {reads} reads past the first pass: stop the vCPUs before saving")]
    StillChanging {
        /// The reads after the first pass.
        reads: usize,
    },
}

impl HashPageTable {
    /// The number of entries of a table of this order.
    pub fn len(&self) -> u64 {
        entries_of(self.order)
    }

    /// True for a table of no entries (never, for a valid order).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the order and that the entries are in range and in order, as
    /// a restore does before writing anything.
    pub fn validate(&self) -> Result<(), HptError> {
        if !(HPT_ORDER_MIN..=HPT_ORDER_MAX).contains(&self.order) {
            return Err(HptError::BadOrder { order: self.order });
        }
        let mut next = 0u64;
        for e in &self.entries {
            if u64::from(e.index) < next || u64::from(e.index) >= self.len() {
                return Err(HptError::BadEntry { index: e.index });
            }
            next = u64::from(e.index) + 1;
        }
        Ok(())
    }

    /// The records `KVM_GET_HTAB_WRITE` takes for this table, to write into
    /// a freshly allocated (all invalid) table: runs of consecutive valid
    /// entries, each a header in host byte order and its HPTEs big-endian.
    ///
    /// ```
    /// use kvmkit_arch_powerpc::{HashPageTable, Hpte};
    /// let t = HashPageTable { order: 18, entries: vec![Hpte { index: 4, v: 1, r: 2 }] };
    /// let b = t.write_records();
    /// assert_eq!(b.len(), 8 + 16);
    /// assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 4); // index
    /// assert_eq!(u16::from_ne_bytes(b[4..6].try_into().unwrap()), 1); // n_valid
    /// assert_eq!(b[8..16], 1u64.to_be_bytes());
    /// ```
    pub fn write_records(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * HPTE_BYTES + HEADER_BYTES);
        let mut run: Vec<&Hpte> = Vec::new();
        let flush = |out: &mut Vec<u8>, run: &mut Vec<&Hpte>| {
            if let Some(first) = run.first() {
                let n = u16::try_from(run.len()).expect("runs are cut at u16::MAX");
                out.extend(first.index.to_ne_bytes());
                out.extend(n.to_ne_bytes());
                out.extend(0u16.to_ne_bytes());
                for e in run.iter() {
                    out.extend(e.v.to_be_bytes());
                    out.extend(e.r.to_be_bytes());
                }
                run.clear();
            }
        };
        for e in &self.entries {
            let follows = run
                .last()
                .is_some_and(|l| u64::from(l.index) + 1 == u64::from(e.index));
            if !follows || run.len() == usize::from(u16::MAX) {
                flush(&mut out, &mut run);
            }
            run.push(e);
        }
        flush(&mut out, &mut run);
        out
    }
}

/// Entries of a table of `order`: 2^order bytes of 16-byte HPTEs.
fn entries_of(order: u32) -> u64 {
    order
        .checked_sub(4)
        .and_then(|s| 1u64.checked_shl(s))
        .unwrap_or(0)
}

/// Reassembles the table from the records of a `KVM_PPC_GET_HTAB_FD`
/// stream, read by read.
#[derive(Debug, Default)]
pub(crate) struct HptReader {
    valid: BTreeMap<u32, (u64, u64)>,
    /// The entry after the last record's, in the first pass.
    next: u64,
    /// The table's entries, once the first pass is over.
    entries: Option<u64>,
    /// Reads after the first pass that still returned records.
    reads_after: usize,
}

impl HptReader {
    /// Takes the bytes of one read: whole records (the kernel never splits
    /// one across reads).
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<(), HptError> {
        if self.entries.is_some() && !bytes.is_empty() {
            self.reads_after += 1;
            if self.reads_after > MAX_READS_AFTER_FIRST_PASS {
                return Err(HptError::StillChanging {
                    reads: self.reads_after,
                });
            }
        }
        let mut at = 0;
        while at < bytes.len() {
            let header = bytes
                .get(at..at + HEADER_BYTES)
                .ok_or(HptError::Truncated {
                    offset: at,
                    needed: at + HEADER_BYTES,
                    len: bytes.len(),
                })?;
            let index = u32::from_ne_bytes(header[0..4].try_into().expect("4 bytes"));
            let n_valid = u16::from_ne_bytes(header[4..6].try_into().expect("2 bytes"));
            let n_invalid = u16::from_ne_bytes(header[6..8].try_into().expect("2 bytes"));
            let body = at + HEADER_BYTES;
            let end = body + usize::from(n_valid) * HPTE_BYTES;
            let hptes = bytes.get(body..end).ok_or(HptError::Truncated {
                offset: at,
                needed: end,
                len: bytes.len(),
            })?;
            self.record(index, hptes, n_invalid)?;
            at = end;
        }
        Ok(())
    }

    fn record(&mut self, index: u32, hptes: &[u8], n_invalid: u16) -> Result<(), HptError> {
        let first = u64::from(index);
        let n_valid = (hptes.len() / HPTE_BYTES) as u64;
        let end = first + n_valid + u64::from(n_invalid);
        match self.entries {
            None if first < self.next => {
                // The kernel wrapped: this record is the first change after
                // the first pass, which covered `next` entries.
                self.entries = Some(self.next);
                self.reads_after = 1;
            }
            None if first > self.next => {
                return Err(HptError::Gap {
                    index: first,
                    expected: self.next,
                });
            }
            _ => {}
        }
        match self.entries {
            None => self.next = end,
            Some(entries) if end > entries => return Err(HptError::OutOfRange { end, entries }),
            Some(_) => {}
        }
        for (i, chunk) in (first..).zip(hptes.chunks_exact(HPTE_BYTES)) {
            let v = u64::from_be_bytes(chunk[..8].try_into().expect("8 bytes"));
            let r = u64::from_be_bytes(chunk[8..].try_into().expect("8 bytes"));
            self.valid.insert(table_index(i)?, (v, r));
        }
        for i in first + n_valid..end {
            self.valid.remove(&table_index(i)?);
        }
        Ok(())
    }

    /// The table once a read returned nothing: `None` when the stream was
    /// empty (a radix guest, or no table allocated).
    pub(crate) fn finish(self) -> Result<Option<HashPageTable>, HptError> {
        let entries = self.entries.unwrap_or(self.next);
        if entries == 0 {
            return Ok(None);
        }
        if !entries.is_power_of_two() {
            return Err(HptError::BadSize { entries });
        }
        let order = entries.trailing_zeros() + 4;
        let table = HashPageTable {
            order,
            entries: self
                .valid
                .into_iter()
                .map(|(index, (v, r))| Hpte { index, v, r })
                .collect(),
        };
        table.validate()?;
        Ok(Some(table))
    }
}

fn table_index(i: u64) -> Result<u32, HptError> {
    u32::try_from(i).map_err(|_| HptError::OutOfRange {
        end: i,
        entries: u64::from(u32::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One record as the kernel's `kvm_htab_read` writes it: the header in
    /// host order (`__copy_to_user` of the struct), the HPTEs as
    /// `cpu_to_be64` doublewords.
    fn record(index: u32, valid: &[(u64, u64)], n_invalid: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(index.to_ne_bytes());
        b.extend(u16::try_from(valid.len()).unwrap().to_ne_bytes());
        b.extend(n_invalid.to_ne_bytes());
        for (v, r) in valid {
            b.extend(v.to_be_bytes());
            b.extend(r.to_be_bytes());
        }
        b
    }

    const V: u64 = 0x4000_0000_1234_0001; // HPTE_V_VALID
    const R: u64 = 0x0000_0000_0010_0196;

    #[test]
    fn a_first_pass_becomes_the_table() {
        // A 256 KiB table (16384 entries): entries 0-1 valid, then invalid
        // runs of at most 0xffff.
        let mut r = HptReader::default();
        let mut read = record(0, &[(V, R), (V + 0x80, R + 0x1000)], 100);
        read.extend(record(102, &[(V + 0x100, R)], 16384 - 103));
        r.feed(&read).unwrap();
        r.feed(&[]).unwrap();
        let t = r.finish().unwrap().unwrap();
        assert_eq!(t.order, 18);
        assert_eq!(
            t.entries,
            vec![
                Hpte {
                    index: 0,
                    v: V,
                    r: R
                },
                Hpte {
                    index: 1,
                    v: V + 0x80,
                    r: R + 0x1000
                },
                Hpte {
                    index: 102,
                    v: V + 0x100,
                    r: R
                },
            ]
        );
        // Written back as two runs of valid entries.
        let w = t.write_records();
        assert_eq!(w.len(), 2 * 8 + 3 * 16);
        let mut again = HptReader::default();
        // The write records have no invalid runs: check them by parsing.
        again.feed(&w[..8 + 32]).unwrap();
        assert_eq!(again.valid.len(), 2);
        assert_eq!(u32::from_ne_bytes(w[40..44].try_into().unwrap()), 102);
    }

    #[test]
    fn changes_after_the_first_pass_are_applied() {
        let mut r = HptReader::default();
        r.feed(&record(0, &[(V, R)], 16383)).unwrap();
        // Second pass: entry 0 was invalidated, entry 9 became valid.
        let mut read = record(0, &[], 1);
        read.extend(record(9, &[(V, R)], 0));
        r.feed(&read).unwrap();
        let t = r.finish().unwrap().unwrap();
        assert_eq!(
            t.entries,
            vec![Hpte {
                index: 9,
                v: V,
                r: R
            }]
        );
    }

    #[test]
    fn malformed_streams_are_refused() {
        let mut r = HptReader::default();
        let e = r.feed(&record(0, &[(V, R)], 0)[..20]).unwrap_err();
        assert_eq!(
            e,
            HptError::Truncated {
                offset: 0,
                needed: 24,
                len: 20
            }
        );
        assert!(r.feed(&[0; 5]).is_err());
        let mut r = HptReader::default();
        r.feed(&record(0, &[], 10)).unwrap();
        assert_eq!(
            r.feed(&record(12, &[], 1)).unwrap_err(),
            HptError::Gap {
                index: 12,
                expected: 10
            }
        );
        let mut r = HptReader::default();
        r.feed(&record(0, &[], 3000)).unwrap();
        assert_eq!(r.finish().unwrap_err(), HptError::BadSize { entries: 3000 });
        let mut r = HptReader::default();
        r.feed(&record(0, &[], 1024)).unwrap();
        r.feed(&record(0, &[], 1)).unwrap(); // wraps: the table has 1024 entries
        assert_eq!(
            r.feed(&record(1000, &[], 100)).unwrap_err(),
            HptError::OutOfRange {
                end: 1100,
                entries: 1024
            }
        );
        // 1024 entries is order 14: too small for KVM.
        let mut r = HptReader::default();
        r.feed(&record(0, &[], 1024)).unwrap();
        assert_eq!(r.finish().unwrap_err(), HptError::BadOrder { order: 14 });
    }

    #[test]
    fn an_empty_stream_is_no_table_and_a_busy_one_gives_up() {
        assert_eq!(HptReader::default().finish().unwrap(), None);
        let mut r = HptReader::default();
        r.feed(&record(0, &[], 16384)).unwrap();
        for _ in 0..MAX_READS_AFTER_FIRST_PASS {
            r.feed(&record(5, &[(V, R)], 0)).unwrap();
        }
        assert_eq!(
            r.feed(&record(5, &[(V, R)], 0)).unwrap_err(),
            HptError::StillChanging {
                reads: MAX_READS_AFTER_FIRST_PASS + 1
            }
        );
    }

    #[test]
    fn saved_tables_are_checked_and_long_runs_cut() {
        let bad = HashPageTable {
            order: 18,
            entries: vec![
                Hpte {
                    index: 5,
                    v: 1,
                    r: 1,
                },
                Hpte {
                    index: 5,
                    v: 1,
                    r: 1,
                },
            ],
        };
        assert_eq!(bad.validate(), Err(HptError::BadEntry { index: 5 }));
        let beyond = HashPageTable {
            order: 18,
            entries: vec![Hpte {
                index: 1 << 14,
                v: 1,
                r: 1,
            }],
        };
        assert!(beyond.validate().is_err());
        assert!(HashPageTable {
            order: 47,
            entries: vec![]
        }
        .validate()
        .is_err());
        let t = HashPageTable {
            order: 24,
            entries: (0..70_000)
                .map(|index| Hpte { index, v: V, r: R })
                .collect(),
        };
        assert!(!t.is_empty());
        let w = t.write_records();
        assert_eq!(w.len(), 2 * 8 + 70_000 * 16);
        let second = 8 + usize::from(u16::MAX) * 16;
        assert_eq!(u16::from_ne_bytes(w[4..6].try_into().unwrap()), u16::MAX);
        assert_eq!(
            u32::from_ne_bytes(w[second..second + 4].try_into().unwrap()),
            u32::from(u16::MAX)
        );
    }
}
