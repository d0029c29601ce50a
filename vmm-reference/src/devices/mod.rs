//! The legacy platform devices of the reference VMM.
//!
//! Each follows vm-superio's pattern: generic over small traits, knowing
//! nothing of KVM, buses or threads; `*Port` wrappers adapt them to
//! vm-device's port I/O traits.
//!
//! For snapshots each has a serde state (`*State`), a `state()` and a
//! `restore()`; [`DevicesState`] groups them under a format version.

mod acpi_pm;
mod cmos;
mod i8042;
mod serial;
mod state;

pub use acpi_pm::{AcpiPm, AcpiPmState, LevelIrq, NoIrq};
pub use cmos::HostClock;
pub use cmos::{Clock, Cmos, CmosState};
pub use i8042::{I8042Port, I8042PortState};
pub use serial::{EventFdTrigger, SerialOut, SerialPort, SerialPortState};
pub use state::{DeviceStateError, DevicesState};

use std::sync::mpsc::Sender;
use std::sync::Mutex;

/// What a platform device asks of the VMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformEvent {
    /// Reset (i8042 pulse, ACPI reset register): the VMM ends, exit code 0.
    Reset,
    /// Power off (ACPI S5): the VMM ends, exit code 0.
    PowerOff,
    /// The user asked to quit (Ctrl-A x on the console).
    Quit,
}

/// Where devices send [`PlatformEvent`]s.
#[derive(Debug)]
pub struct EventSink(Mutex<Sender<PlatformEvent>>);

impl EventSink {
    /// A sink sending on `tx`.
    pub fn new(tx: Sender<PlatformEvent>) -> Self {
        EventSink(Mutex::new(tx))
    }

    /// Sends `e`; a VMM that is already gone does not care.
    pub fn send(&self, e: PlatformEvent) {
        let tx = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let _ = tx.send(e);
    }
}
