//! Writing a table into guest memory, all or nothing.

use super::error::{PlatformError, Result};
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

/// Writes `bytes` at `gpa` after checking that guest memory covers the whole
/// range, so a table that does not fit is an error before any byte is
/// written. `what` names the table in the error.
pub(super) fn write_table<M: GuestMemory + ?Sized>(
    mem: &M,
    what: &'static str,
    gpa: u64,
    bytes: &[u8],
) -> Result<()> {
    let addr = GuestAddress(gpa);
    if !mem.check_range(addr, bytes.len(), Permissions::Write) {
        return Err(PlatformError::NoRoom {
            what,
            gpa,
            len: bytes.len(),
        });
    }
    mem.write_slice(bytes, addr)
        .map_err(|source| PlatformError::Write { what, gpa, source })
}

/// The 8-bit checksum byte that makes `bytes` plus it sum to zero.
pub(super) fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

/// `value` rounded up to a multiple of `align` (a power of two), or `None`
/// on overflow.
pub(super) fn align_up(value: u64, align: u64) -> Option<u64> {
    Some(value.checked_add(align - 1)? & !(align - 1))
}

/// The low and high 32 bits of `value`.
pub(super) fn split_u64(value: u64) -> (u32, u32) {
    let low = u32::try_from(value & 0xffff_ffff).unwrap_or(u32::MAX);
    let high = u32::try_from(value >> 32).unwrap_or(u32::MAX);
    (low, high)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn write_checks_the_whole_range_first() {
        let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x1000), 0x1000)]).unwrap();
        let e = write_table(&m, "thing", 0x1ff0, &[1; 32]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "guest memory has no room for the thing (32 bytes) at 0x1ff0"
        );
        // Nothing was written before the error.
        assert_eq!(m.read_obj::<u64>(GuestAddress(0x1ff0)).unwrap(), 0);
        write_table(&m, "thing", 0x1ff0, &[1; 16]).unwrap();
        assert_eq!(m.read_obj::<u8>(GuestAddress(0x1fff)).unwrap(), 1);
    }

    #[test]
    fn helpers() {
        let mut v = vec![1u8, 2, 3];
        v.push(checksum(&v));
        assert_eq!(v.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        assert_eq!(checksum(&[]), 0);
        assert_eq!(align_up(0x41, 0x40), Some(0x80));
        assert_eq!(align_up(0x40, 0x40), Some(0x40));
        assert_eq!(align_up(u64::MAX, 16), None);
        assert_eq!(split_u64(0x1_2345_6789), (0x2345_6789, 1));
    }
}
