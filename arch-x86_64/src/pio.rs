//! The port I/O bus x86 exits are dispatched to.

use std::fmt;
use std::sync::Arc;
use vm_device::bus::{Bus, BusRange, PioAddress};
use vm_device::DevicePio;

/// A port I/O device on the bus.
pub type PioDevice = Arc<dyn DevicePio + Send + Sync>;

/// The x86 port I/O space: vm-device's bus keyed by port ranges.
///
/// It is `Arch::ArchIo` for [`crate::X86_64`]: the run loop hands it every
/// `KVM_EXIT_IO`. Accesses no device claims read as all ones and are
/// reported, never fatal.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use kvmkit_arch_x86_64::PortIoBus;
/// use vm_device::{MutDevicePio, bus::{PioAddress, PioAddressOffset}};
///
/// struct Latch(u8);
/// impl MutDevicePio for Latch {
///     fn pio_read(&mut self, _: PioAddress, _: PioAddressOffset, data: &mut [u8]) { data[0] = self.0 }
///     fn pio_write(&mut self, _: PioAddress, _: PioAddressOffset, data: &[u8]) { self.0 = data[0] }
/// }
/// let mut bus = PortIoBus::new();
/// bus.register(0x80, 1, Arc::new(Mutex::new(Latch(0)))).unwrap();
/// assert!(bus.write(0x80, &[7]));
/// let mut b = [0u8];
/// assert!(bus.read(0x80, &mut b));
/// assert_eq!(b, [7]);
/// assert!(!bus.read(0x81, &mut b));
/// assert_eq!(b, [0xff]);
/// ```
#[derive(Default)]
pub struct PortIoBus {
    bus: Bus<PioAddress, PioDevice>,
}

impl fmt::Debug for PortIoBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortIoBus").finish_non_exhaustive()
    }
}

impl PortIoBus {
    /// An empty bus.
    pub fn new() -> Self {
        PortIoBus::default()
    }

    /// Registers `device` for ports `base .. base + len`; overlapping ranges
    /// and empty ranges are refused.
    pub fn register(
        &mut self,
        base: u16,
        len: u16,
        device: PioDevice,
    ) -> Result<(), vm_device::bus::Error> {
        let range = BusRange::new(PioAddress(base), len)?;
        self.bus.register(range, device)
    }

    /// Reads `data.len()` bytes at `port`; false (and all ones) when no
    /// device claims the whole access.
    pub fn read(&self, port: u16, data: &mut [u8]) -> bool {
        match self.bus.check_access(PioAddress(port), data.len()) {
            Ok((range, dev)) => {
                dev.pio_read(range.base(), port - range.base().0, data);
                true
            }
            Err(_) => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Writes `data` at `port`; false when no device claims the access.
    pub fn write(&self, port: u16, data: &[u8]) -> bool {
        match self.bus.check_access(PioAddress(port), data.len()) {
            Ok((range, dev)) => {
                dev.pio_write(range.base(), port - range.base().0, data);
                true
            }
            Err(_) => false,
        }
    }
}
