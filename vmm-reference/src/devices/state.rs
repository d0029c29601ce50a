//! The saved state of the platform devices, for snapshots (issue #6).
//!
//! Each device has a serde state struct, a `state()` method that saves it
//! and a `restore()` method that checks it and puts the device in it,
//! keeping what belongs to the live VMM (interrupt lines, output, clock).
//! [`DevicesState`] groups them under a format version.

use super::{AcpiPmState, CmosState, I8042PortState, SerialPortState};
use kvmkit_arch_x86_64::{IoapicState, IoapicStateError};
use serde::{Deserialize, Serialize};

/// Why a saved device state was refused, or what failed while a device was
/// put in it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceStateError {
    /// The state was saved in a format this build does not read.
    #[error("device state version {found} is not supported: this VMM reads version {supported}")]
    Version {
        /// The saved version.
        found: u32,
        /// [`DevicesState::VERSION`].
        supported: u32,
    },
    /// More bytes in the serial receive FIFO than it holds.
    #[error(
        "saved serial state has {len} bytes in its receive FIFO, the UART holds at most {max}"
    )]
    SerialFifo {
        /// The saved FIFO length.
        len: usize,
        /// The FIFO's size.
        max: usize,
    },
    /// A serial register value the UART cannot be in.
    #[error("saved serial state has {register} {value:#04x}: {reason}")]
    SerialRegister {
        /// The register's name (`IER`, `IIR`, `LSR`).
        register: &'static str,
        /// Its saved value.
        value: u8,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// vm-superio refused the state, or the restored UART could not signal
    /// its pending interrupt (a write to its eventfd failed).
    #[error("cannot restore the serial port")]
    SerialRestore(#[source] vm_superio::serial::Error<std::io::Error>),
    /// The NVRAM is not 128 bytes.
    #[error("saved CMOS state has {len} bytes of NVRAM, the CMOS has 128")]
    CmosNvram {
        /// The saved length.
        len: usize,
    },
    /// The index does not fit its 7 bits.
    #[error("saved CMOS state selects register {index:#x}, the index has 7 bits")]
    CmosIndex {
        /// The saved index.
        index: u8,
    },
    /// A PM1 register value the PM block cannot be in.
    #[error("saved ACPI PM state has {register} {value:#06x}: {reason}")]
    AcpiPmRegister {
        /// The register's name (`PM1a_STS`, `PM1a_CNT`).
        register: &'static str,
        /// Its saved value.
        value: u16,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The userspace IOAPIC's state was refused or could not be applied.
    #[error("cannot restore the userspace IOAPIC")]
    Ioapic(#[source] IoapicStateError),
}

/// The saved state of every platform device of the reference VMM, with a
/// format version, for the VMM's snapshot.
///
/// Restore order, in the new process, once the VM, its vCPUs and the
/// devices are built as on the source:
/// 1. the vCPUs' state (with their LAPICs) and the VM's (in-kernel
///    irqchip, clock): an interrupt delivered before them would be lost;
/// 2. with the split irqchip, `SplitIrqchip::restore(ioapic)`: it installs
///    the GSI routes the serial irqfd and the SCI go through;
/// 3. the devices: [`SerialPortState`] (may signal its irqfd),
///    [`AcpiPmState`] (may raise the SCI), [`CmosState`],
///    [`I8042PortState`].
///
/// [`DevicesState::check`] refuses a bad state before any device is
/// touched; each device's `restore` checks its part again.
///
/// ```
/// use kvmkit_vmm_reference::devices::{
///     AcpiPmState, CmosState, DevicesState, I8042PortState, SerialPortState,
/// };
/// let s = DevicesState::new(
///     SerialPortState::default(),
///     CmosState { index: 0, nvram: vec![0; 128] },
///     AcpiPmState { status: 0, enable: 0, control: 1 },
///     I8042PortState {},
///     None,
/// );
/// let json = serde_json::to_string(&s).unwrap();
/// let back: DevicesState = serde_json::from_str(&json).unwrap();
/// back.check()?;
/// assert_eq!(back, s);
/// # Ok::<(), kvmkit_vmm_reference::devices::DeviceStateError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesState {
    /// The format version: [`DevicesState::VERSION`] when saved by this
    /// build.
    pub version: u32,
    /// COM1.
    pub serial: SerialPortState,
    /// The CMOS RTC and NVRAM.
    pub cmos: CmosState,
    /// The ACPI PM1a registers.
    pub acpi_pm: AcpiPmState,
    /// The i8042 (nothing).
    pub i8042: I8042PortState,
    /// The userspace IOAPIC with the split irqchip; `None` with the
    /// in-kernel irqchip, whose IOAPIC is in the VM's state
    /// (`KVM_GET_IRQCHIP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ioapic: Option<IoapicState>,
}

impl DevicesState {
    /// The format version this build writes and reads.
    pub const VERSION: u32 = 1;

    /// The devices' states under the current [`DevicesState::VERSION`].
    ///
    /// ```
    /// # use kvmkit_vmm_reference::devices::*;
    /// let s = DevicesState::new(
    ///     SerialPortState::default(),
    ///     CmosState { index: 0, nvram: vec![0; 128] },
    ///     AcpiPmState { status: 0, enable: 0, control: 1 },
    ///     I8042PortState {},
    ///     None,
    /// );
    /// assert_eq!(s.version, DevicesState::VERSION);
    /// ```
    pub fn new(
        serial: SerialPortState,
        cmos: CmosState,
        acpi_pm: AcpiPmState,
        i8042: I8042PortState,
        ioapic: Option<IoapicState>,
    ) -> Self {
        DevicesState {
            version: DevicesState::VERSION,
            serial,
            cmos,
            acpi_pm,
            i8042,
            ioapic,
        }
    }

    /// Checks the version and every device's state, without a device, so
    /// that a bad snapshot is refused before any device is touched. A state
    /// that passes can still fail on a device of another shape (an IOAPIC
    /// with another pin count) or on the host (an eventfd write,
    /// `KVM_SET_GSI_ROUTING`).
    ///
    /// ```
    /// # use kvmkit_vmm_reference::devices::*;
    /// let mut s = DevicesState::new(
    ///     SerialPortState::default(),
    ///     CmosState { index: 0, nvram: vec![0; 128] },
    ///     AcpiPmState { status: 0, enable: 0, control: 1 },
    ///     I8042PortState {},
    ///     None,
    /// );
    /// s.version = 2;
    /// assert!(matches!(s.check(), Err(DeviceStateError::Version { found: 2, supported: 1 })));
    /// ```
    pub fn check(&self) -> Result<(), DeviceStateError> {
        if self.version != DevicesState::VERSION {
            return Err(DeviceStateError::Version {
                found: self.version,
                supported: DevicesState::VERSION,
            });
        }
        self.serial.check()?;
        self.cmos.check()?;
        self.acpi_pm.check()?;
        if let Some(io) = &self.ioapic {
            io.check().map_err(DeviceStateError::Ioapic)?;
        }
        Ok(())
    }
}

/// Serde for a byte buffer as a hex string (`"68690a"`): compact and
/// readable in a JSON snapshot.
pub(super) mod hex_bytes {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Write as _;

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let mut hex = String::with_capacity(v.len() * 2);
        for b in v {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{b:02x}");
        }
        s.serialize_str(&hex)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() % 2 != 0 {
            return Err(D::Error::custom(format!(
                "hex bytes of odd length {}",
                s.len()
            )));
        }
        let digit = |c: u8| {
            char::from(c)
                .to_digit(16)
                .ok_or_else(|| D::Error::custom(format!("{:?} is not a hex digit", char::from(c))))
        };
        s.as_bytes()
            .chunks_exact(2)
            .map(|p| Ok(u8::try_from(digit(p[0])? << 4 | digit(p[1])?).unwrap_or(0)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::{AcpiPm, Cmos, EventSink, I8042Port};
    use std::sync::mpsc::channel;
    use std::sync::Arc;

    fn sample() -> DevicesState {
        let (tx, _rx) = channel();
        let sink = Arc::new(EventSink::new(tx));
        let serial = SerialPortState {
            in_buffer: b"ls\n".to_vec(),
            line_status: 0x61,
            ..Default::default()
        };
        DevicesState::new(
            serial,
            Cmos::new(256 << 20, 0).state(),
            AcpiPm::new(sink.clone()).state(),
            I8042Port::new(sink).lock().unwrap().state(),
            None,
        )
    }

    #[test]
    fn round_trips_through_json_and_checks() {
        let s = sample();
        s.check().unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""in_buffer":"6c730a""#), "{json}");
        assert!(
            !json.contains("ioapic"),
            "absent with the in-kernel irqchip"
        );
        let back: DevicesState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let mut with_ioapic = s.clone();
        let table = vec![kvmkit_arch_x86_64::RedirectionEntry::RESET; 24];
        with_ioapic.ioapic = Some(IoapicState {
            id: 0,
            ioregsel: 0,
            irr: 0,
            lines: 1 << 9,
            table,
        });
        let json = serde_json::to_string(&with_ioapic).unwrap();
        let back: DevicesState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, with_ioapic);
        back.check().unwrap();
    }

    #[test]
    fn bad_states_are_refused() {
        let mut s = sample();
        s.version = 0;
        let e = s.check().unwrap_err();
        assert_eq!(
            e.to_string(),
            "device state version 0 is not supported: this VMM reads version 1"
        );
        let mut s = sample();
        s.cmos.nvram.push(0);
        assert!(matches!(
            s.check(),
            Err(DeviceStateError::CmosNvram { len: 129 })
        ));
        let mut s = sample();
        s.serial.in_buffer = vec![b'x'; 65];
        assert!(matches!(
            s.check(),
            Err(DeviceStateError::SerialFifo { len: 65, max: 64 })
        ));
        let mut s = sample();
        s.acpi_pm.control = 0;
        assert!(matches!(
            s.check(),
            Err(DeviceStateError::AcpiPmRegister { .. })
        ));
        let mut s = sample();
        s.ioapic = Some(IoapicState {
            id: 0,
            ioregsel: 0,
            irr: 0,
            lines: 0,
            table: Vec::new(),
        });
        let e = s.check().unwrap_err();
        assert!(matches!(e, DeviceStateError::Ioapic(_)));
        let src = std::error::Error::source(&e).unwrap().to_string();
        assert!(src.contains("0 pins"), "{src}");
        // Unknown fields are refused, not dropped.
        let json = serde_json::to_string(&sample()).unwrap();
        let j = json.replacen('{', r#"{"hpet":{},"#, 1);
        assert!(serde_json::from_str::<DevicesState>(&j).is_err());
    }

    #[test]
    fn hex_bytes_refuse_what_is_not_hex() {
        let json = serde_json::to_string(&sample()).unwrap();
        for bad in ["\"6c730\"", "\"6c73zz\"", "\"+c730a\"", "[108]"] {
            let j = json.replace("\"6c730a\"", bad);
            assert!(serde_json::from_str::<DevicesState>(&j).is_err(), "{bad}");
        }
        let j = json.replace("\"6c730a\"", "\"6C730A\"");
        let back: DevicesState = serde_json::from_str(&j).unwrap();
        assert_eq!(back.serial.in_buffer, b"ls\n");
    }
}
