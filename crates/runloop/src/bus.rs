//! The buses exits are dispatched to.

use kvmkit_core::{Arch, BoxError, VcpuId};
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

/// What the run loop calls when a vCPU's dirty ring is full
/// (`KVM_EXIT_DIRTY_RING_FULL`), with the vCPU's id.
///
/// It must return only once the rings were harvested and
/// `KVM_RESET_DIRTY_RINGS` was issued (for example
/// `kvmkit_dirty_log::DirtyTracker::ring_full_hook`): the vCPU enters the
/// guest again right after `Ok`. An `Err` ends the vCPU with
/// [`crate::VcpuEvent::DirtyRingFull`].
pub type DirtyRingFullHook = Arc<dyn Fn(VcpuId) -> Result<(), BoxError> + Send + Sync>;

/// Every device space of a VM: MMIO, which all architectures have, and the
/// architecture's own (`A::ArchIo`: x86's port I/O bus); plus the hook that
/// empties a full dirty ring.
pub struct Buses<A: Arch> {
    /// The MMIO bus.
    pub mmio: MmioBus,
    /// The arch-only device space.
    pub arch: A::ArchIo,
    dirty_ring_full: Option<DirtyRingFullHook>,
}

impl<A: Arch> Buses<A> {
    /// Buses from an MMIO bus and the arch's device space, without a dirty
    /// ring hook.
    pub fn new(mmio: MmioBus, arch: A::ArchIo) -> Self {
        Buses {
            mmio,
            arch,
            dirty_ring_full: None,
        }
    }

    /// Installs the hook that harvests the dirty rings when a vCPU's ring
    /// is full; without one, a full ring ends the vCPU with
    /// [`crate::VcpuEvent::DirtyRingFull`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use kvmkit_arch_x86_64::X86_64;
    /// use kvmkit_core::VcpuId;
    /// use kvmkit_runloop::Buses;
    /// let buses = Buses::<X86_64>::default().with_dirty_ring_full(Arc::new(|_vcpu| Ok(())));
    /// assert!(buses.dirty_ring_full(VcpuId(0)).is_ok());
    /// ```
    #[must_use]
    pub fn with_dirty_ring_full(mut self, hook: DirtyRingFullHook) -> Self {
        self.dirty_ring_full = Some(hook);
        self
    }

    /// True when a dirty ring hook is installed.
    ///
    /// ```
    /// use kvmkit_arch_x86_64::X86_64;
    /// assert!(!kvmkit_runloop::Buses::<X86_64>::default().has_dirty_ring_full());
    /// ```
    pub fn has_dirty_ring_full(&self) -> bool {
        self.dirty_ring_full.is_some()
    }

    /// Calls the dirty ring hook for `vcpu`; fails with
    /// [`NO_DIRTY_RING_HOOK`] when none is installed.
    ///
    /// ```
    /// use kvmkit_arch_x86_64::X86_64;
    /// use kvmkit_core::VcpuId;
    /// use kvmkit_runloop::{Buses, NO_DIRTY_RING_HOOK};
    /// let e = Buses::<X86_64>::default().dirty_ring_full(VcpuId(1)).unwrap_err();
    /// assert_eq!(e.to_string(), NO_DIRTY_RING_HOOK);
    /// ```
    pub fn dirty_ring_full(&self, vcpu: VcpuId) -> Result<(), BoxError> {
        match &self.dirty_ring_full {
            Some(hook) => hook(vcpu),
            None => Err(NO_DIRTY_RING_HOOK.into()),
        }
    }
}

/// Why a vCPU whose dirty ring filled up ends when no hook is installed.
pub const NO_DIRTY_RING_HOOK: &str = "dirty ring full but nothing harvests it";

impl<A: Arch> Default for Buses<A>
where
    A::ArchIo: Default,
{
    fn default() -> Self {
        Buses::new(MmioBus::new(), A::ArchIo::default())
    }
}

impl<A: Arch> fmt::Debug for Buses<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buses")
            .field("arch", &A::NAME)
            .field("mmio", &self.mmio)
            .field("dirty_ring_full", &self.dirty_ring_full.is_some())
            .finish_non_exhaustive()
    }
}
