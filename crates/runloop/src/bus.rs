//! The buses exits are dispatched to.

use kvmkit_core::Arch;
use std::fmt;
use std::sync::Arc;
use vm_device::bus::{Bus, BusRange, MmioAddress};
use vm_device::DeviceMmio;

/// An MMIO device on the bus.
pub type MmioDevice = Arc<dyn DeviceMmio + Send + Sync>;

/// The MMIO space: vm-device's bus keyed by guest-physical ranges.
///
/// Accesses no device claims read as all ones and are reported by the run
/// loop as [`crate::VcpuEvent::UnhandledAccess`], never fatal.
#[derive(Default)]
pub struct MmioBus {
    bus: Bus<MmioAddress, MmioDevice>,
}

impl fmt::Debug for MmioBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmioBus").finish_non_exhaustive()
    }
}

impl MmioBus {
    /// An empty bus.
    pub fn new() -> Self {
        MmioBus::default()
    }

    /// Registers `device` at `base .. base + len`; overlapping and empty
    /// ranges are refused.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use kvmkit_runloop::MmioBus;
    /// use vm_device::{MutDeviceMmio, bus::{MmioAddress, MmioAddressOffset}};
    ///
    /// struct Reg(u64);
    /// impl MutDeviceMmio for Reg {
    ///     fn mmio_read(&mut self, _: MmioAddress, _: MmioAddressOffset, d: &mut [u8]) {
    ///         d.copy_from_slice(&self.0.to_le_bytes()[..d.len()]);
    ///     }
    ///     fn mmio_write(&mut self, _: MmioAddress, _: MmioAddressOffset, d: &[u8]) {
    ///         let mut b = [0u8; 8];
    ///         b[..d.len()].copy_from_slice(d);
    ///         self.0 = u64::from_le_bytes(b);
    ///     }
    /// }
    /// let mut bus = MmioBus::new();
    /// bus.register(0xd000_0000, 0x1000, Arc::new(Mutex::new(Reg(0)))).unwrap();
    /// assert!(bus.register(0xd000_0800, 0x10, Arc::new(Mutex::new(Reg(0)))).is_err());
    /// assert!(bus.write(0xd000_0000, &[5, 0, 0, 0]));
    /// let mut d = [0u8; 4];
    /// assert!(bus.read(0xd000_0000, &mut d));
    /// assert_eq!(d, [5, 0, 0, 0]);
    /// assert!(!bus.read(0xe000_0000, &mut d));
    /// assert_eq!(d, [0xff; 4]);
    /// ```
    pub fn register(
        &mut self,
        base: u64,
        len: u64,
        device: MmioDevice,
    ) -> Result<(), vm_device::bus::Error> {
        let range = BusRange::new(MmioAddress(base), len)?;
        self.bus.register(range, device)
    }

    /// Reads at `addr`; false (and all ones) when no device claims the access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.bus.check_access(MmioAddress(addr), data.len()) {
            Ok((range, dev)) => {
                dev.mmio_read(range.base(), addr - range.base().0, data);
                true
            }
            Err(_) => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Writes at `addr`; false when no device claims the access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.bus.check_access(MmioAddress(addr), data.len()) {
            Ok((range, dev)) => {
                dev.mmio_write(range.base(), addr - range.base().0, data);
                true
            }
            Err(_) => false,
        }
    }
}

/// Every device space of a VM: MMIO, which all architectures have, and the
/// architecture's own (`A::ArchIo`: x86's port I/O bus).
pub struct Buses<A: Arch> {
    /// The MMIO bus.
    pub mmio: MmioBus,
    /// The arch-only device space.
    pub arch: A::ArchIo,
}

impl<A: Arch> Buses<A> {
    /// Buses from an MMIO bus and the arch's device space.
    pub fn new(mmio: MmioBus, arch: A::ArchIo) -> Self {
        Buses { mmio, arch }
    }
}

impl<A: Arch> Default for Buses<A>
where
    A::ArchIo: Default,
{
    fn default() -> Self {
        Buses {
            mmio: MmioBus::new(),
            arch: A::ArchIo::default(),
        }
    }
}

impl<A: Arch> fmt::Debug for Buses<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buses")
            .field("arch", &A::NAME)
            .field("mmio", &self.mmio)
            .finish_non_exhaustive()
    }
}
