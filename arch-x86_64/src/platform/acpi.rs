//! ACPI tables for a legacy-PC guest: RSDP, XSDT, FADT (with FACS), MADT
//! and DSDT, built with the `acpi_tables` crate.

use super::dsdt::dsdt_aml;
use super::error::{PlatformError, Result};
use super::layout::{ACPI_END, ACPI_START, IOAPIC_ADDR, LAPIC_ADDR};
use super::mem::{align_up, write_table};
use super::mptable::MAX_MP_VCPUS;
use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags, FADT};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{GuestAddress, GuestMemory, Permissions};

/// The IRQ (and GSI) of the ACPI system control interrupt, as the FADT's
/// `SCI_INT` and a level-triggered, active-high override in the MADT.
///
/// ```
/// assert_eq!(kvmkit_arch_x86_64::ACPI_SCI_IRQ, 9);
/// ```
pub const ACPI_SCI_IRQ: u8 = 9;

/// `SLP_EN` in the PM1 control register: OSPM sets it together with
/// `SLP_TYP` to enter a sleep state (S5: power off).
///
/// ```
/// use kvmkit_arch_x86_64::{PM1_CNT_SLP_EN, PM1_CNT_SLP_TYP_SHIFT};
/// // What Linux writes to PM1a_CNT to power off with `\_S5_` = {5, 0}:
/// let value: u16 = (5 << PM1_CNT_SLP_TYP_SHIFT) | PM1_CNT_SLP_EN;
/// assert_eq!(value, 0x3400);
/// ```
pub const PM1_CNT_SLP_EN: u16 = 1 << 13;

/// The shift of the 3-bit `SLP_TYP` field in the PM1 control register.
///
/// ```
/// let pm1_cnt: u16 = 0x3400;
/// assert_eq!((pm1_cnt >> kvmkit_arch_x86_64::PM1_CNT_SLP_TYP_SHIFT) & 7, 5);
/// ```
pub const PM1_CNT_SLP_TYP_SHIFT: u32 = 10;

/// The OEM id of every table.
const OEM_ID: [u8; 6] = *b"KVMKIT";
/// The OEM table id of every table.
const OEM_TABLE_ID: [u8; 8] = *b"KVMKITVM";
const OEM_REVISION: u32 = 1;

/// DSDT revision 2: 64-bit AML integers.
const DSDT_REVISION: u8 = 2;
/// MADT revision 5 (ACPI 6.3).
const MADT_REVISION: u8 = 5;
/// MADT flags: PCAT_COMPAT, a dual 8259 is present.
const MADT_PCAT_COMPAT: u32 = 1;
/// MADT header: the SDT header plus local APIC address and flags.
const MADT_HEADER_LEN: u32 = 44;
/// MPS INTI flags: active high (bits 1:0 = 01), level triggered (bits 3:2 = 11).
const MPS_INTI_HIGH_LEVEL: u16 = 0x0d;
/// MPS INTI flags: active high, edge triggered.
const MPS_INTI_HIGH_EDGE: u16 = 0x05;

/// IAPC_BOOT_ARCH: LEGACY_DEVICES (ISA devices such as the 8250 UARTs and
/// the RTC), 8042 (the i8042 controller), VGA Not Present (no VGA: Linux
/// must not probe the VGA hole).
const IAPC_BOOT_ARCH: u16 = (1 << 0) | (1 << 1) | (1 << 2);
/// PM1 event block length: status and enable, 2 bytes each.
const PM1_EVT_LEN: u8 = 4;
/// PM1 control block length.
const PM1_CNT_LEN: u8 = 2;
/// Latencies above 100 and 1000 us: C2 and C3 not supported.
const P_LVL2_LAT: u16 = 101;
const P_LVL3_LAT: u16 = 1001;

/// A 16550 serial port, described in the DSDT as `COMn` with `_HID`
/// `PNP0501`.
///
/// ```
/// let com1 = kvmkit_arch_x86_64::SerialPort { base: 0x3f8, irq: 4 };
/// assert_eq!(com1.irq, 4);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SerialPort {
    /// The first of its 8 I/O ports.
    pub base: u16,
    /// Its IRQ: ISA IRQs (below 16) become `IRQNoFlags`, others an
    /// extended interrupt descriptor.
    pub irq: u32,
}

/// An MMIO device (such as virtio-mmio, `_HID` `LNRO0005`), described in
/// the DSDT as `VRnn` with a memory range and an edge-triggered,
/// active-high interrupt.
///
/// ```
/// let blk = kvmkit_arch_x86_64::MmioDevice {
///     hid: "LNRO0005",
///     uid: 0,
///     base: 0xd000_0000,
///     len: 0x1000,
///     irq: 5,
/// };
/// assert_eq!(blk.hid, "LNRO0005");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDevice {
    /// `_HID`: an ACPI (`LNRO0005`) or PNP id, 7 or 8 upper-case letters
    /// and digits.
    pub hid: &'static str,
    /// `_UID`, unique among devices of the same `_HID`.
    pub uid: u32,
    /// The MMIO base.
    pub base: u64,
    /// The MMIO length in bytes (not 0). A range below 4 GiB is a
    /// `Memory32Fixed`, one above a `QWordMemory`.
    pub len: u64,
    /// The GSI.
    pub irq: u32,
}

/// The fixed-hardware power-management registers the VMM emulates, as
/// I/O ports.
///
/// ```
/// use kvmkit_arch_x86_64::PmRegisters;
/// let pm = PmRegisters { pm1a_evt: 0x600, pm1a_cnt: 0x604, sleep_s5_typ: 5 };
/// assert_eq!(pm.sleep_s5_typ, 5);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PmRegisters {
    /// PM1a event block: 4 ports, status (16 bits) then enable (16 bits).
    pub pm1a_evt: u16,
    /// PM1a control block: 2 ports (16 bits).
    pub pm1a_cnt: u16,
    /// The `SLP_TYP` value of S5 (0 to 7), in `\_S5_`: powering off writes
    /// `sleep_s5_typ << 10 | 1 << 13` to PM1a control.
    pub sleep_s5_typ: u8,
}

/// The FADT's reset register: an I/O port and the byte that resets.
///
/// ```
/// // The PCI reset control register at 0xcf9, full reset.
/// let reset = kvmkit_arch_x86_64::ResetRegister { port: 0xcf9, value: 0x6 };
/// assert_eq!(reset.value, 6);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetRegister {
    /// The I/O port.
    pub port: u16,
    /// The value OSPM writes to reset.
    pub value: u8,
}

/// The machine [`write_acpi_tables`] describes.
///
/// ```
/// use kvmkit_arch_x86_64::{AcpiConfig, PmRegisters, ResetRegister, SerialPort};
/// let config = AcpiConfig {
///     nr_vcpus: 2,
///     serial_ports: vec![SerialPort { base: 0x3f8, irq: 4 }],
///     mmio_devices: vec![],
///     pm: PmRegisters { pm1a_evt: 0x600, pm1a_cnt: 0x604, sleep_s5_typ: 5 },
///     reset: ResetRegister { port: 0xcf9, value: 6 },
/// };
/// assert_eq!(config.nr_vcpus, 2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiConfig {
    /// vCPUs, 1 to 254: APIC ids `0..nr_vcpus`; the IOAPIC takes id
    /// `nr_vcpus`.
    pub nr_vcpus: u32,
    /// Serial ports, at most 15 (`COM1` to `COMF`).
    pub serial_ports: Vec<SerialPort>,
    /// MMIO devices, at most 256 (`VR00` to `VRFF`).
    pub mmio_devices: Vec<MmioDevice>,
    /// The PM1a registers and the S5 sleep type.
    pub pm: PmRegisters,
    /// The reset register.
    pub reset: ResetRegister,
}

/// The serialised bytes of an `acpi_tables` object.
fn bytes_of(table: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    table.to_aml_bytes(&mut v);
    v
}

/// A 32-bit address from one known to be below 4 GiB (the BIOS region and
/// the APIC windows).
fn addr32(gpa: u64) -> u32 {
    u32::try_from(gpa).unwrap_or(u32::MAX)
}

/// The MADT for `nr_vcpus` (1 to 254) vCPUs.
fn madt(nr_vcpus: u8) -> Vec<u8> {
    let mut madt = Sdt::new(
        *b"APIC",
        MADT_HEADER_LEN,
        MADT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    madt.write_u32(36, addr32(LAPIC_ADDR));
    madt.write_u32(40, MADT_PCAT_COMPAT);
    for id in 0..nr_vcpus {
        let lapic = ProcessorLocalApic::new(id, id, EnabledStatus::Enabled);
        madt.append_slice(&bytes_of(&lapic));
    }
    let ioapic = IoApic::new(nr_vcpus, addr32(IOAPIC_ADDR), 0);
    madt.append_slice(&bytes_of(&ioapic));
    // Interrupt source overrides (type 2): ISA IRQ 0, the PIT, is GSI 2;
    // the SCI is level-triggered, active-high.
    for (irq, gsi, flags) in [
        (0u8, 2u32, 0u16),
        (ACPI_SCI_IRQ, u32::from(ACPI_SCI_IRQ), MPS_INTI_HIGH_LEVEL),
    ] {
        let mut iso = vec![2, 10, 0, irq];
        iso.extend_from_slice(&gsi.to_le_bytes());
        iso.extend_from_slice(&flags.to_le_bytes());
        madt.append_slice(&iso);
    }
    // Local APIC NMI (type 4): all processors (0xff), LINT1.
    let [lo, hi] = MPS_INTI_HIGH_EDGE.to_le_bytes();
    madt.append_slice(&[4, 6, 0xff, lo, hi, 1]);
    madt.as_slice().to_vec()
}

/// The FADT pointing at the DSDT and FACS.
fn fadt(config: &AcpiConfig, dsdt: u64, facs: u64) -> Vec<u8> {
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        // PWR_BUTTON clear: the power button is the fixed-feature one
        // (PWRBTN_STS/PWRBTN_EN in PM1a), which the VMM presses.
        .flag(Flags::SlpButton)
        .flag(Flags::FixRtc)
        .flag(Flags::ResetRegSup);
    // Both the 32-bit and the 64-bit pointers, equal: every table is
    // below 4 GiB, and OSPMs of any age find them.
    f.firmware_ctrl = addr32(facs).into();
    f.x_firmware_ctrl = facs.into();
    f.dsdt = addr32(dsdt).into();
    f.x_dsdt = dsdt.into();
    f.sci_int = u16::from(ACPI_SCI_IRQ).into();
    // SMI_CMD 0: no SMM, the platform is always in ACPI mode.
    f.smi_cmd = 0.into();
    f.pm1a_evt_blk = u32::from(config.pm.pm1a_evt).into();
    f.pm1a_cnt_blk = u32::from(config.pm.pm1a_cnt).into();
    f.pm1_evt_len = PM1_EVT_LEN;
    f.pm1_cnt_len = PM1_CNT_LEN;
    f.x_pm1a_evt_blk = GAS::new(
        AddressSpace::SystemIo,
        PM1_EVT_LEN * 8,
        0,
        AccessSize::Undefined,
        u64::from(config.pm.pm1a_evt),
    );
    f.x_pm1a_cnt_blk = GAS::new(
        AddressSpace::SystemIo,
        PM1_CNT_LEN * 8,
        0,
        AccessSize::Undefined,
        u64::from(config.pm.pm1a_cnt),
    );
    f.p_lvl2_lat = P_LVL2_LAT.into();
    f.p_lvl3_lat = P_LVL3_LAT.into();
    f.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    f.reset_reg = GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(config.reset.port),
    );
    f.reset_value = config.reset.value;
    bytes_of(&f.finalize())
}

/// Where each table goes in `[ACPI_START, ACPI_END)`.
#[derive(Debug)]
struct Placement {
    facs: u64,
    xsdt: u64,
    fadt: u64,
    madt: u64,
    dsdt: u64,
    end: u64,
}

/// Places the tables one after the other from [`ACPI_START`]: RSDP, FACS
/// (64-byte aligned), XSDT, FADT, MADT, DSDT (16-byte aligned).
fn place(xsdt_len: usize, madt_len: usize, dsdt_len: usize) -> Option<Placement> {
    let after = |at: u64, len: usize, align: u64| align_up(at.checked_add(len as u64)?, align);
    let facs = after(ACPI_START, Rsdp::len(), 64)?;
    let xsdt = after(facs, FACS::len(), 16)?;
    let fadt = after(xsdt, xsdt_len, 16)?;
    let madt = after(fadt, FADT::len(), 16)?;
    let dsdt = after(madt, madt_len, 16)?;
    let end = dsdt.checked_add(dsdt_len as u64)?;
    Some(Placement {
        facs,
        xsdt,
        fadt,
        madt,
        dsdt,
        end,
    })
}

/// Writes the ACPI tables for `config` into the BIOS region and returns the
/// RSDP's address, [`crate::ACPI_START`], for the zero page's
/// `acpi_rsdp_addr` or the PVH start info's `rsdp_paddr`.
///
/// From [`crate::ACPI_START`] (`0xe0000`, where a legacy scan finds the
/// RSDP too) up to at most [`crate::ACPI_END`]:
///
/// - RSDP, revision 2, pointing at the XSDT, both checksums;
/// - FACS (64-byte aligned), which a FADT without `HW_REDUCED_ACPI` needs;
/// - XSDT listing the FADT and the MADT;
/// - FADT revision 6.5, not hardware-reduced: `SCI_INT` 9, `SMI_CMD` 0
///   (always in ACPI mode), PM1a event (4 bytes) and control (2 bytes)
///   blocks as given, also as `X_` generic addresses; no PM timer, no GPE
///   blocks; `FIRMWARE_CTRL`/`X_FIRMWARE_CTRL` and `DSDT`/`X_DSDT`;
///   `RESET_REG` (system I/O, 8 bits) with `RESET_VALUE`; flags `WBINVD`,
///   `PROC_C1`, `SLP_BUTTON` (no sleep button), `FIX_RTC`, `RESET_REG_SUP`;
///   `PWR_BUTTON` clear: the power button is the fixed-feature one, its
///   status and enable bits in the PM1a event block, its event the SCI;
///   `IAPC_BOOT_ARCH` legacy devices, 8042, VGA not present; C2/C3
///   latencies marking them unsupported;
/// - MADT revision 5: local APIC at [`crate::LAPIC_ADDR`], `PCAT_COMPAT`,
///   one enabled local APIC per vCPU (ACPI id = APIC id = index), one IOAPIC
///   (id `nr_vcpus`, at [`crate::IOAPIC_ADDR`], GSI base 0), interrupt
///   source overrides IRQ 0 → GSI 2 and IRQ 9 → GSI 9 level/active-high,
///   a local APIC NMI on LINT1 of all processors;
/// - DSDT revision 2: `\_SB_.COMn` per serial port (`PNP0501`, `_UID` n,
///   8 I/O ports and its IRQ), `\_SB_.VRnn` per MMIO device (`_HID`,
///   `_UID`, memory range, interrupt), and `\_S5_` =
///   `Package () { sleep_s5_typ, 0 }`.
///
/// The output depends only on `config`. The VMM must route GSI 0 (the PIT)
/// to IOAPIC pin 2 to match the override, and deliver the SCI on GSI 9.
///
/// # Errors
///
/// [`PlatformError::VcpuCount`] for 0 or more than 254 vCPUs, the DSDT's
/// errors ([`PlatformError::TooManyDevices`], [`PlatformError::InvalidHid`],
/// [`PlatformError::InvalidMmioRange`], [`PlatformError::SleepType`]),
/// [`PlatformError::AcpiTooLarge`] if the tables pass [`crate::ACPI_END`],
/// [`PlatformError::NoRoom`] if guest memory does not cover them (nothing is
/// written then).
///
/// ```
/// use kvmkit_arch_x86_64::{
///     write_acpi_tables, AcpiConfig, MmioDevice, PmRegisters, ResetRegister, SerialPort,
/// };
/// use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
///
/// let bios = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0xe_0000), 0x2_0000)]).unwrap();
/// let config = AcpiConfig {
///     nr_vcpus: 2,
///     serial_ports: vec![SerialPort { base: 0x3f8, irq: 4 }],
///     mmio_devices: vec![MmioDevice {
///         hid: "LNRO0005",
///         uid: 0,
///         base: 0xd000_0000,
///         len: 0x1000,
///         irq: 5,
///     }],
///     pm: PmRegisters { pm1a_evt: 0x600, pm1a_cnt: 0x604, sleep_s5_typ: 5 },
///     reset: ResetRegister { port: 0xcf9, value: 6 },
/// };
/// let rsdp = write_acpi_tables(&bios, &config).unwrap();
/// assert_eq!(rsdp, 0xe_0000);
/// let mut sig = [0u8; 8];
/// bios.read_slice(&mut sig, GuestAddress(rsdp)).unwrap();
/// assert_eq!(&sig, b"RSD PTR ");
/// ```
pub fn write_acpi_tables<M: GuestMemory + ?Sized>(mem: &M, config: &AcpiConfig) -> Result<u64> {
    let nr_vcpus = u8::try_from(config.nr_vcpus)
        .ok()
        .filter(|&n| n > 0 && u32::from(n) <= MAX_MP_VCPUS)
        .ok_or(PlatformError::VcpuCount {
            what: "MADT",
            nr_vcpus: config.nr_vcpus,
            max: MAX_MP_VCPUS,
        })?;
    let madt = madt(nr_vcpus);
    let mut dsdt = Sdt::new(
        *b"DSDT",
        36,
        DSDT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    dsdt.append_slice(&dsdt_aml(config)?);
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let xsdt_len = bytes_of(&xsdt).len() + 2 * 8;

    let too_large = |len: u64| PlatformError::AcpiTooLarge {
        len,
        start: ACPI_START,
        max: ACPI_END - ACPI_START,
        end: ACPI_END,
    };
    let at = place(xsdt_len, madt.len(), dsdt.len()).ok_or(too_large(u64::MAX))?;
    if at.end > ACPI_END {
        return Err(too_large(at.end - ACPI_START));
    }
    let total = usize::try_from(at.end - ACPI_START).unwrap_or(usize::MAX);
    if !mem.check_range(GuestAddress(ACPI_START), total, Permissions::Write) {
        return Err(PlatformError::NoRoom {
            what: "ACPI tables",
            gpa: ACPI_START,
            len: total,
        });
    }

    let fadt = fadt(config, at.dsdt, at.facs);
    xsdt.add_entry(at.fadt);
    xsdt.add_entry(at.madt);
    let xsdt = bytes_of(&xsdt);
    debug_assert_eq!(xsdt.len(), xsdt_len);
    let rsdp = bytes_of(&Rsdp::new(OEM_ID, at.xsdt));

    write_table(mem, "RSDP", ACPI_START, &rsdp)?;
    write_table(mem, "FACS", at.facs, &bytes_of(&FACS::new()))?;
    write_table(mem, "XSDT", at.xsdt, &xsdt)?;
    write_table(mem, "FADT", at.fadt, &fadt)?;
    write_table(mem, "MADT", at.madt, &madt)?;
    write_table(mem, "DSDT", at.dsdt, dsdt.as_slice())?;
    Ok(ACPI_START)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryMmap};

    fn bios() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0xe_0000), 0x2_0000)]).unwrap()
    }

    fn config(nr_vcpus: u32) -> AcpiConfig {
        AcpiConfig {
            nr_vcpus,
            serial_ports: vec![
                SerialPort {
                    base: 0x3f8,
                    irq: 4,
                },
                SerialPort {
                    base: 0x2f8,
                    irq: 3,
                },
            ],
            mmio_devices: (0..4u32)
                .map(|i| MmioDevice {
                    hid: "LNRO0005",
                    uid: i,
                    base: 0xd000_0000 + u64::from(i) * 0x1000,
                    len: 0x1000,
                    irq: 5 + i,
                })
                .collect(),
            pm: PmRegisters {
                pm1a_evt: 0x600,
                pm1a_cnt: 0x604,
                sleep_s5_typ: 5,
            },
            reset: ResetRegister {
                port: 0xcf9,
                value: 6,
            },
        }
    }

    fn read(m: &GuestMemoryMmap, gpa: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        m.read_slice(&mut v, GuestAddress(gpa)).unwrap();
        v
    }

    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    /// Reads the SDT at `gpa`, checks its signature and checksum.
    fn table(m: &GuestMemoryMmap, gpa: u64, sig: &[u8; 4]) -> Vec<u8> {
        let header = read(m, gpa, 36);
        assert_eq!(&header[0..4], sig);
        let len = usize::try_from(u32_at(&header, 4)).unwrap();
        let t = read(m, gpa, len);
        assert_eq!(sum(&t), 0, "{} checksum", String::from_utf8_lossy(sig));
        assert_eq!(&t[10..16], b"KVMKIT");
        t
    }

    struct Tables {
        fadt: Vec<u8>,
        madt: Vec<u8>,
        dsdt: Vec<u8>,
        facs: Vec<u8>,
    }

    /// Follows RSDP → XSDT → FADT/MADT → DSDT/FACS, checking every checksum.
    fn walk(m: &GuestMemoryMmap, rsdp_at: u64) -> Tables {
        let rsdp = read(m, rsdp_at, 36);
        assert_eq!(&rsdp[0..8], b"RSD PTR ");
        assert_eq!(rsdp[15], 2, "RSDP revision");
        assert_eq!(sum(&rsdp[0..20]), 0, "RSDP checksum");
        assert_eq!(sum(&rsdp), 0, "RSDP extended checksum");
        assert_eq!(u32_at(&rsdp, 20), 36);
        let xsdt = table(m, u64_at(&rsdp, 24), b"XSDT");
        assert_eq!(xsdt.len(), 36 + 16);
        let fadt = table(m, u64_at(&xsdt, 36), b"FACP");
        let madt = table(m, u64_at(&xsdt, 44), b"APIC");
        let dsdt = table(m, u64_at(&fadt, 140), b"DSDT");
        let facs_at = u64_at(&fadt, 132);
        assert_eq!(facs_at % 64, 0);
        let facs = read(m, facs_at, 64);
        assert_eq!(&facs[0..4], b"FACS");
        assert_eq!(u32_at(&facs, 4), 64);
        Tables {
            fadt,
            madt,
            dsdt,
            facs,
        }
    }

    #[test]
    fn tables_chain_with_valid_checksums() {
        let m = bios();
        let rsdp = write_acpi_tables(&m, &config(4)).unwrap();
        assert_eq!(rsdp, 0xe_0000);
        let t = walk(&m, rsdp);
        assert_eq!(t.facs.len(), 64);
        assert_eq!(t.dsdt[8], 2);
        // Every table stays in [ACPI_START, ACPI_END).
        let fadt_dsdt = u64_at(&t.fadt, 140);
        assert!(fadt_dsdt + t.dsdt.len() as u64 <= ACPI_END);
    }

    #[test]
    fn fadt_fields() {
        let m = bios();
        let t = walk(&m, write_acpi_tables(&m, &config(1)).unwrap());
        let f = &t.fadt;
        assert_eq!(f.len(), 276);
        assert_eq!((f[8], f[131]), (6, 5)); // revision 6.5
        assert_eq!(u64::from(u32_at(f, 36)), u64_at(f, 132)); // FIRMWARE_CTRL
        assert_eq!(u64::from(u32_at(f, 40)), u64_at(f, 140)); // DSDT
        assert_eq!(u16_at(f, 46), 9); // SCI_INT
        assert_eq!(u32_at(f, 48), 0); // SMI_CMD
        assert_eq!(u32_at(f, 56), 0x600); // PM1a_EVT_BLK
        assert_eq!(u32_at(f, 64), 0x604); // PM1a_CNT_BLK
        assert_eq!(u32_at(f, 76), 0); // PM_TMR_BLK
        assert_eq!((f[88], f[89], f[91], f[92]), (4, 2, 0, 0)); // lengths
        assert_eq!(u16_at(f, 96), 101);
        assert_eq!(u16_at(f, 98), 1001);
        assert_eq!(u16_at(f, 109), 0x7); // IAPC_BOOT_ARCH
        let flags = u32_at(f, 112);
        // WBINVD, PROC_C1, SLP_BUTTON, FIX_RTC, RESET_REG_SUP; PWR_BUTTON
        // (bit 4) clear: a fixed-feature power button.
        let want = [0, 2, 5, 6, 10];
        assert_eq!(flags, want.iter().map(|b| 1u32 << b).sum::<u32>());
        assert_eq!(flags & (1 << 20), 0, "not hardware-reduced");
        // RESET_REG: system I/O, 8 bits, byte access, port 0xcf9; value 6.
        assert_eq!(&f[116..120], &[1, 8, 0, 1]);
        assert_eq!(u64_at(f, 120), 0xcf9);
        assert_eq!(f[128], 6);
        // X_PM1a_EVT_BLK and X_PM1a_CNT_BLK.
        assert_eq!(&f[148..152], &[1, 32, 0, 0]);
        assert_eq!(u64_at(f, 152), 0x600);
        assert_eq!(&f[172..176], &[1, 16, 0, 0]);
        assert_eq!(u64_at(f, 176), 0x604);
        assert_eq!(u64_at(f, 208 + 4), 0); // X_PM_TMR_BLK
    }

    #[derive(Debug, PartialEq)]
    enum Entry {
        Lapic { uid: u8, id: u8, flags: u32 },
        IoApic { id: u8, addr: u32, gsi_base: u32 },
        Override { irq: u8, gsi: u32, flags: u16 },
        Nmi { uid: u8, flags: u16, lint: u8 },
    }

    fn madt_entries(madt: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut off = 44;
        while off < madt.len() {
            let (kind, len) = (madt[off], usize::from(madt[off + 1]));
            let e = &madt[off..off + len];
            out.push(match (kind, len) {
                (0, 8) => Entry::Lapic {
                    uid: e[2],
                    id: e[3],
                    flags: u32_at(e, 4),
                },
                (1, 12) => Entry::IoApic {
                    id: e[2],
                    addr: u32_at(e, 4),
                    gsi_base: u32_at(e, 8),
                },
                (2, 10) => Entry::Override {
                    irq: e[3],
                    gsi: u32_at(e, 4),
                    flags: u16_at(e, 8),
                },
                (4, 6) => Entry::Nmi {
                    uid: e[2],
                    flags: u16_at(e, 3),
                    lint: e[5],
                },
                other => panic!("unexpected MADT entry {other:?}"),
            });
            off += len;
        }
        assert_eq!(off, madt.len());
        out
    }

    #[test]
    fn madt_entries_parse_back() {
        for nr in [1u8, 4, 254] {
            let m = bios();
            let t = walk(&m, write_acpi_tables(&m, &config(u32::from(nr))).unwrap());
            assert_eq!(t.madt[8], 5);
            assert_eq!(u32_at(&t.madt, 36), 0xfee0_0000);
            assert_eq!(u32_at(&t.madt, 40), 1);
            let mut want: Vec<Entry> = (0..nr)
                .map(|i| Entry::Lapic {
                    uid: i,
                    id: i,
                    flags: 1,
                })
                .collect();
            want.push(Entry::IoApic {
                id: nr,
                addr: 0xfec0_0000,
                gsi_base: 0,
            });
            want.push(Entry::Override {
                irq: 0,
                gsi: 2,
                flags: 0,
            });
            want.push(Entry::Override {
                irq: 9,
                gsi: 9,
                flags: 0xd,
            });
            want.push(Entry::Nmi {
                uid: 0xff,
                flags: 5,
                lint: 1,
            });
            assert_eq!(madt_entries(&t.madt), want);
        }
    }

    #[test]
    fn deterministic() {
        let (a, b) = (bios(), bios());
        write_acpi_tables(&a, &config(4)).unwrap();
        write_acpi_tables(&b, &config(4)).unwrap();
        assert_eq!(read(&a, 0xe_0000, 0x1_0000), read(&b, 0xe_0000, 0x1_0000));
    }

    #[test]
    fn errors() {
        let m = bios();
        for nr in [0, 255] {
            assert_eq!(
                write_acpi_tables(&m, &config(nr)).unwrap_err().to_string(),
                format!("the MADT describes 1 to 254 vCPUs, got {nr}")
            );
        }
        let mut c = config(1);
        c.pm.sleep_s5_typ = 9;
        assert!(matches!(
            write_acpi_tables(&m, &c).unwrap_err(),
            PlatformError::SleepType { typ: 9 }
        ));

        // Memory that ends inside the tables: nothing is written.
        let small = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0xe_0000), 0x200)]).unwrap();
        let e = write_acpi_tables(&small, &config(4)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("guest memory has no room for the ACPI tables ("),
            "{e}"
        );
        assert!(e.to_string().ends_with(" bytes) at 0xe0000"));
        assert_eq!(read_small(&small), vec![0; 8]);
    }

    fn read_small(m: &GuestMemoryMmap) -> Vec<u8> {
        let mut v = vec![0u8; 8];
        m.read_slice(&mut v, GuestAddress(0xe_0000)).unwrap();
        v
    }

    #[test]
    fn placement_overflow_and_limit() {
        assert!(place(52, usize::MAX, 0).is_none());
        let at = place(52, 100, 0x1_0000).unwrap();
        assert!(at.end > ACPI_END);
        assert_eq!(at.facs, 0xe_0040);
        assert_eq!(at.xsdt, 0xe_0080);
        assert_eq!(at.fadt, 0xe_00c0);
        assert_eq!(at.madt, 0xe_01e0);
        assert_eq!(at.dsdt, 0xe_0250);
    }
}
