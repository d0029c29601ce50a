//! The DSDT's AML: serial ports and MMIO devices under `\_SB`, and `\_S5_`.

use super::acpi::{AcpiConfig, MmioDevice, SerialPort};
use super::error::{PlatformError, Result};
use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Device, EISAName, Interrupt, Memory32Fixed, Name, Package,
    Path, ResourceTemplate, Scope, IO, ZERO,
};
use acpi_tables::{Aml, AmlSink};

/// Serial ports the DSDT can name: `COM1` to `COMF`.
pub(super) const MAX_SERIAL_PORTS: usize = 15;
/// MMIO devices the DSDT can name: `VR00` to `VRFF`.
pub(super) const MAX_MMIO_DEVICES: usize = 256;
/// The largest `SLP_TYP` value (a 3-bit field of PM1 control).
const MAX_SLEEP_TYPE: u8 = 7;

/// A small IRQ descriptor without flags (ASL `IRQNoFlags () {n}`): ISA
/// edge-triggered, active-high, exclusive. acpi_tables only has the
/// extended interrupt descriptor.
struct IrqNoFlags {
    mask: u16,
}

impl Aml for IrqNoFlags {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.byte(0x22); // small item 0x4 (IRQ), 2 bytes of data
        sink.word(self.mask);
    }
}

/// The AML of one 16550 serial port, device `name`.
fn serial_aml(name: &str, uid: u32, port: &SerialPort, out: &mut Vec<u8>) {
    let hid = EISAName::new("PNP0501");
    let io = IO::new(port.base, port.base, 1, 8);
    // ISA IRQs as the classic IRQNoFlags; anything above 15 as an
    // extended interrupt.
    let irq: Box<dyn Aml> = match u16::try_from(port.irq) {
        Ok(irq) if irq < 16 => Box::new(IrqNoFlags { mask: 1 << irq }),
        _ => Box::new(Interrupt::new(true, true, false, false, port.irq)),
    };
    let crs = ResourceTemplate::new(vec![&io, irq.as_ref()]);
    let hid = Name::new("_HID".into(), &hid);
    let uid = Name::new("_UID".into(), &uid);
    let crs = Name::new("_CRS".into(), &crs);
    Device::new(Path::new(name), vec![&hid, &uid, &crs]).to_aml_bytes(out);
}

/// True for an ACPI (`LNRO0005`) or PNP (`PNP0501`) id: 7 or 8 upper-case
/// letters and digits.
fn valid_hid(hid: &str) -> bool {
    (hid.len() == 7 || hid.len() == 8)
        && hid
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// The AML of one MMIO device (virtio-mmio and the like), device `name`.
fn mmio_aml(name: &str, dev: &MmioDevice, out: &mut Vec<u8>) -> Result<()> {
    if !valid_hid(dev.hid) {
        return Err(PlatformError::InvalidHid {
            hid: dev.hid,
            uid: dev.uid,
        });
    }
    let last = dev
        .len
        .checked_sub(1)
        .and_then(|l| dev.base.checked_add(l))
        .ok_or(PlatformError::InvalidMmioRange {
            hid: dev.hid,
            uid: dev.uid,
            base: dev.base,
            len: dev.len,
        })?;
    // Memory32Fixed below 4 GiB, a QWordMemory range above.
    let mem: Box<dyn Aml> = match (u32::try_from(dev.base), u32::try_from(dev.len)) {
        (Ok(base), Ok(len)) if u32::try_from(last).is_ok() => {
            Box::new(Memory32Fixed::new(true, base, len))
        }
        _ => Box::new(AddressSpace::<u64>::new_memory(
            AddressSpaceCacheable::NotCacheable,
            true,
            dev.base,
            last,
            None,
        )),
    };
    let irq = Interrupt::new(true, true, false, false, dev.irq);
    let crs = ResourceTemplate::new(vec![mem.as_ref(), &irq]);
    let hid = Name::new("_HID".into(), &dev.hid);
    let uid = Name::new("_UID".into(), &dev.uid);
    let crs = Name::new("_CRS".into(), &crs);
    Device::new(Path::new(name), vec![&hid, &uid, &crs]).to_aml_bytes(out);
    Ok(())
}

/// The DSDT's AML body (without the table header).
pub(super) fn dsdt_aml(config: &AcpiConfig) -> Result<Vec<u8>> {
    if config.serial_ports.len() > MAX_SERIAL_PORTS {
        return Err(PlatformError::TooManyDevices {
            what: "serial ports",
            count: config.serial_ports.len(),
            max: MAX_SERIAL_PORTS,
        });
    }
    if config.mmio_devices.len() > MAX_MMIO_DEVICES {
        return Err(PlatformError::TooManyDevices {
            what: "MMIO devices",
            count: config.mmio_devices.len(),
            max: MAX_MMIO_DEVICES,
        });
    }
    let typ = config.pm.sleep_s5_typ;
    if typ > MAX_SLEEP_TYPE {
        return Err(PlatformError::SleepType { typ });
    }

    let mut devices = Vec::new();
    for (uid, port) in (1u32..).zip(&config.serial_ports) {
        // "COM1".."COMF": four characters, as AML names must be.
        serial_aml(&format!("COM{uid:X}"), uid, port, &mut devices);
    }
    for (i, dev) in config.mmio_devices.iter().enumerate() {
        // "VR00".."VRFF".
        mmio_aml(&format!("VR{i:02X}"), dev, &mut devices)?;
    }

    let mut aml = Scope::raw("\\_SB_".into(), devices);
    // \_S5_: Package { SLP_TYPa, SLP_TYPb }, which OSPM writes to PM1a/b
    // control with SLP_EN to power off.
    let s5 = Package::new(vec![&typ, &ZERO]);
    Name::new("\\_S5_".into(), &s5).to_aml_bytes(&mut aml);
    Ok(aml)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::acpi::{PmRegisters, ResetRegister};

    fn config() -> AcpiConfig {
        AcpiConfig {
            nr_vcpus: 1,
            serial_ports: vec![SerialPort {
                base: 0x3f8,
                irq: 4,
            }],
            mmio_devices: vec![],
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

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn serial_port_resources() {
        let aml = dsdt_aml(&config()).unwrap();
        // IO (Decode16, 0x3f8, 0x3f8, 1, 8), IRQNoFlags () {4}, EndTag.
        assert!(contains(
            &aml,
            &[0x47, 1, 0xf8, 3, 0xf8, 3, 1, 8, 0x22, 0x10, 0, 0x79, 0]
        ));
        // EISAID ("PNP0501") = 0x0105d041.
        assert!(contains(&aml, &[0x0c, 0x41, 0xd0, 0x05, 0x01]));
        assert!(contains(&aml, b"COM1"));
        // Name (\_S5_, Package (2) { 5, Zero }).
        assert!(contains(
            &aml,
            &[0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 5, 2, 0x0a, 5, 0]
        ));
        // A GSI beyond the ISA range becomes an extended interrupt.
        let mut c = config();
        c.serial_ports[0].irq = 20;
        let aml = dsdt_aml(&c).unwrap();
        assert!(contains(&aml, &[0x89, 6, 0, 0x03, 1, 20, 0, 0, 0]));
    }

    #[test]
    fn mmio_resources_below_and_above_4g() {
        let mut c = config();
        c.mmio_devices = vec![
            MmioDevice {
                hid: "LNRO0005",
                uid: 0,
                base: 0xd000_0000,
                len: 0x1000,
                irq: 5,
            },
            MmioDevice {
                hid: "LNRO0005",
                uid: 1,
                base: 0x1_0000_0000,
                len: 0x1000,
                irq: 6,
            },
        ];
        let aml = dsdt_aml(&c).unwrap();
        assert!(contains(&aml, b"VR00"));
        assert!(contains(&aml, b"VR01"));
        assert!(contains(&aml, b"LNRO0005\0"));
        // Memory32Fixed (ReadWrite, 0xd0000000, 0x1000).
        assert!(contains(
            &aml,
            &[0x86, 9, 0, 1, 0, 0, 0, 0xd0, 0, 0x10, 0, 0]
        ));
        // QWordMemory: descriptor 0x8a, min 4 GiB.
        assert!(contains(&aml, &[0x8a, 0x2b, 0]));
        assert!(contains(&aml, &[0, 0, 0, 0, 1, 0, 0, 0]));
        // Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {5}.
        assert!(contains(&aml, &[0x89, 6, 0, 0x03, 1, 5, 0, 0, 0]));
    }

    #[test]
    fn invalid_configs_are_errors() {
        let mut c = config();
        c.pm.sleep_s5_typ = 8;
        assert!(matches!(
            dsdt_aml(&c).unwrap_err(),
            PlatformError::SleepType { typ: 8 }
        ));

        let mut c = config();
        c.serial_ports = vec![c.serial_ports[0]; 16];
        assert_eq!(
            dsdt_aml(&c).unwrap_err().to_string(),
            "the DSDT holds at most 15 serial ports, got 16"
        );
        c.serial_ports.pop();
        let aml = dsdt_aml(&c).unwrap();
        assert!(contains(&aml, b"COMF"));

        let dev = MmioDevice {
            hid: "LNRO0005",
            uid: 7,
            base: 0xd000_0000,
            len: 0x200,
            irq: 5,
        };
        let mut c = config();
        c.mmio_devices = vec![dev; 257];
        assert!(matches!(
            dsdt_aml(&c).unwrap_err(),
            PlatformError::TooManyDevices { max: 256, .. }
        ));
        c.mmio_devices.pop();
        assert!(contains(&dsdt_aml(&c).unwrap(), b"VRFF"));

        for hid in [
            "lnro0005",
            "LNRO00051",
            "PNP050",
            "LNRO-005",
            "LNRO\u{0}005",
        ] {
            c.mmio_devices = vec![MmioDevice { hid, ..dev }];
            assert!(
                matches!(
                    dsdt_aml(&c).unwrap_err(),
                    PlatformError::InvalidHid { uid: 7, .. }
                ),
                "{hid:?}"
            );
        }
        for (base, len) in [(0xd000_0000, 0), (u64::MAX, 2)] {
            c.mmio_devices = vec![MmioDevice { base, len, ..dev }];
            assert_eq!(
                dsdt_aml(&c).unwrap_err().to_string(),
                format!("MMIO device LNRO0005 7 at {base:#x} has an invalid length {len:#x}")
            );
        }
        // A range ending exactly at the top of the address space is fine.
        c.mmio_devices = vec![MmioDevice {
            base: u64::MAX - 0xfff,
            len: 0x1000,
            ..dev
        }];
        dsdt_aml(&c).unwrap();
    }
}
