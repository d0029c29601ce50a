//! The portable interrupt-controller trait.

use crate::{Error, Result};
use vmm_sys_util::eventfd::EventFd;

/// A message-signalled interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Msi {
    /// The address the device writes.
    pub address: u64,
    /// The data it writes.
    pub data: u32,
    /// The requester id, where the platform uses one.
    pub devid: Option<u32>,
}

/// What a device needs from an interrupt controller, whatever the architecture:
/// x86's PIC/IOAPIC/LAPIC (in-kernel or split), PowerPC's XICS, s390x's FLIC.
///
/// `irq` is the controller's interrupt number (a GSI on x86, an interrupt
/// source number on XICS, an adapter/ISC number on FLIC). Operations a
/// controller does not have return [`Error::Unsupported`]; none pretends.
pub trait InterruptController: Send + Sync {
    /// The controller's name for messages, e.g. `in-kernel IOAPIC`.
    fn name(&self) -> &'static str;

    /// How many interrupt numbers the controller has.
    fn irq_count(&self) -> u32;

    /// Sets the level of a level-triggered line, or with `true` then `false`
    /// pulses an edge-triggered one (`KVM_IRQ_LINE` or the arch's equivalent).
    fn set_irq(&self, irq: u32, level: bool) -> Result<()>;

    /// Delivers a message-signalled interrupt (`KVM_SIGNAL_MSI`).
    fn signal_msi(&self, msi: Msi) -> Result<()>;

    /// Makes writes to `fd` raise `irq` inside the kernel (`KVM_IRQFD`); with
    /// `resample`, the line is level-triggered and `resample` is signalled
    /// when the guest acknowledges it.
    fn register_irqfd(&self, fd: &EventFd, irq: u32, resample: Option<&EventFd>) -> Result<()>;

    /// Undoes [`InterruptController::register_irqfd`].
    fn unregister_irqfd(&self, fd: &EventFd, irq: u32) -> Result<()>;
}

/// Checks `irq` against `count`.
///
/// ```
/// use kvmkit_irq::check_range;
/// assert!(check_range(3, 24).is_ok());
/// assert_eq!(check_range(24, 24).unwrap_err().to_string(),
///            "interrupt 24 is out of range: this controller has 24");
/// ```
pub fn check_range(irq: u32, count: u32) -> Result<()> {
    if irq < count {
        Ok(())
    } else {
        Err(Error::OutOfRange { irq, count })
    }
}
