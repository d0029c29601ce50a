//! Errors of the boot-data builders; each names the table and address.

/// Errors of the boot-data builders ([`crate::write_linux_boot_params`],
/// [`crate::write_pvh_start_info`], [`crate::write_mptable`],
/// [`crate::write_acpi_tables`]).
///
/// ```
/// use kvmkit_arch_x86_64::PlatformError;
/// let e = PlatformError::NoRoom { what: "MP table", gpa: 0xf0000, len: 16 };
/// assert_eq!(e.to_string(), "guest memory has no room for the MP table (16 bytes) at 0xf0000");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// Guest memory does not cover a table's whole range.
    #[error("guest memory has no room for the {what} ({len} bytes) at {gpa:#x}")]
    NoRoom {
        /// The table, e.g. `zero page`.
        what: &'static str,
        /// Its guest physical address.
        gpa: u64,
        /// Its size in bytes.
        len: usize,
    },
    /// Writing a table into guest memory failed.
    #[error("cannot write the {what} at {gpa:#x}")]
    Write {
        /// The table, e.g. `DSDT`.
        what: &'static str,
        /// Its guest physical address.
        gpa: u64,
        /// The cause.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// A memory map has more entries than the table that carries it holds.
    #[error("the {what} holds at most {max} memory map entries, got {entries}")]
    TooManyE820Entries {
        /// The table, e.g. `zero page`.
        what: &'static str,
        /// Entries given.
        entries: usize,
        /// Entries the table holds.
        max: usize,
    },
    /// The command line is longer than the kernel (or the reserved area) takes.
    #[error("the command line at {gpa:#x} has {len} bytes, the limit is {max}")]
    CmdlineTooLong {
        /// Its guest physical address.
        gpa: u64,
        /// Its length, without the NUL.
        len: usize,
        /// The limit, without the NUL.
        max: usize,
    },
    /// The initrd ends above the highest address the kernel accepts.
    #[error("the initrd at {gpa:#x} ({size:#x} bytes) ends above {max:#x}, the kernel's initrd_addr_max")]
    InitrdTooHigh {
        /// Its guest physical address.
        gpa: u64,
        /// Its size.
        size: u64,
        /// The highest address the kernel takes.
        max: u64,
    },
    /// A range given as `(gpa, len)` wraps past the end of the address space.
    #[error("the {what} at {gpa:#x} ({len:#x} bytes) wraps around the address space")]
    RangeOverflow {
        /// What the range is, e.g. `initrd`.
        what: &'static str,
        /// Its start.
        gpa: u64,
        /// Its length.
        len: u64,
    },
    /// A table must be below 4 GiB (its pointer is 32 bits wide).
    #[error("the {what} at {gpa:#x} must be below 4 GiB")]
    Above4G {
        /// The table.
        what: &'static str,
        /// Its guest physical address.
        gpa: u64,
    },
    /// A table must start on an alignment boundary.
    #[error("the {what} at {gpa:#x} must be {align}-byte aligned")]
    Misaligned {
        /// The table.
        what: &'static str,
        /// Its guest physical address.
        gpa: u64,
        /// The alignment.
        align: u64,
    },
    /// The vCPU count is 0 or more than the tables can describe.
    #[error("the {what} describes 1 to {max} vCPUs, got {nr_vcpus}")]
    VcpuCount {
        /// The table, e.g. `MP table`.
        what: &'static str,
        /// The count given.
        nr_vcpus: u32,
        /// The largest count supported.
        max: u32,
    },
    /// More devices of one kind than the DSDT names can number.
    #[error("the DSDT holds at most {max} {what}, got {count}")]
    TooManyDevices {
        /// The kind, e.g. `serial ports`.
        what: &'static str,
        /// The count given.
        count: usize,
        /// The largest count supported.
        max: usize,
    },
    /// A device's `_HID` is not a 7- or 8-character ACPI/PNP id.
    #[error(
        "the _HID {hid:?} of MMIO device {uid} is not a 7- or 8-character upper-case ACPI/PNP id"
    )]
    InvalidHid {
        /// The id given.
        hid: &'static str,
        /// The device's `_UID`.
        uid: u32,
    },
    /// An MMIO device has an empty or wrapping range.
    #[error("MMIO device {hid} {uid} at {base:#x} has an invalid length {len:#x}")]
    InvalidMmioRange {
        /// The device's `_HID`.
        hid: &'static str,
        /// The device's `_UID`.
        uid: u32,
        /// Its base.
        base: u64,
        /// Its length.
        len: u64,
    },
    /// The `\_S5_` sleep type does not fit the 3-bit `SLP_TYP` field.
    #[error("the S5 sleep type {typ} does not fit the 3-bit SLP_TYP field")]
    SleepType {
        /// The value given.
        typ: u8,
    },
    /// The ACPI tables do not fit their area of the BIOS region.
    #[error("the ACPI tables need {len} bytes from {start:#x}, more than the {max} bytes before {end:#x}")]
    AcpiTooLarge {
        /// Bytes needed.
        len: u64,
        /// Where the tables start.
        start: u64,
        /// Bytes available.
        max: u64,
        /// Where the area ends.
        end: u64,
    },
}

/// The result type of the boot-data builders.
pub(crate) type Result<T, E = PlatformError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_table_and_address() {
        let cases: Vec<(PlatformError, &str)> = vec![
            (
                PlatformError::TooManyE820Entries {
                    what: "zero page",
                    entries: 200,
                    max: 128,
                },
                "the zero page holds at most 128 memory map entries, got 200",
            ),
            (
                PlatformError::CmdlineTooLong {
                    gpa: 0x20000,
                    len: 3000,
                    max: 2047,
                },
                "the command line at 0x20000 has 3000 bytes, the limit is 2047",
            ),
            (
                PlatformError::Above4G {
                    what: "MP config table",
                    gpa: 0x1_0000_0000,
                },
                "the MP config table at 0x100000000 must be below 4 GiB",
            ),
            (
                PlatformError::SleepType { typ: 9 },
                "the S5 sleep type 9 does not fit the 3-bit SLP_TYP field",
            ),
        ];
        for (e, msg) in cases {
            assert_eq!(e.to_string(), msg);
        }
    }
}
