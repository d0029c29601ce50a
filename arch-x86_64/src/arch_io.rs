//! The devices x86-only exits are dispatched to: `Arch::ArchIo` of x86_64.

use crate::PortIoBus;
use std::fmt;
use std::sync::Arc;

/// Receives the EOIs of level-triggered interrupts that KVM forwards to
/// userspace (`KVM_EXIT_IOAPIC_EOI`, split irqchip only): the userspace
/// IOAPIC, i.e. [`crate::SplitIrqchip`].
pub trait EoiHandler: Send + Sync {
    /// The guest's LAPIC ended the interrupt with vector `vector`.
    fn end_of_interrupt(&self, vector: u8);
}

/// What x86-only exits reach: the port I/O bus (`KVM_EXIT_IO`) and, with the
/// split irqchip, the userspace IOAPIC's EOI handler
/// (`KVM_EXIT_IOAPIC_EOI`). It is [`kvmkit_core::Arch::ArchIo`] for
/// [`crate::X86_64`].
///
/// A VMM without split irqchip builds it from its port I/O bus
/// (`X86Io::from(pio)` or `pio.into()`); with split irqchip it adds the
/// chip: `X86Io::new(pio).with_eoi_handler(chip)`. An EOI exit without a
/// handler is reported as unhandled.
///
/// ```
/// use kvmkit_arch_x86_64::{EoiHandler, PortIoBus, X86Io};
/// use std::sync::{atomic::{AtomicU8, Ordering}, Arc};
///
/// struct LastEoi(AtomicU8);
/// impl EoiHandler for LastEoi {
///     fn end_of_interrupt(&self, v: u8) { self.0.store(v, Ordering::Relaxed) }
/// }
/// let last = Arc::new(LastEoi(AtomicU8::new(0)));
/// let io = X86Io::new(PortIoBus::new()).with_eoi_handler(last.clone());
/// io.eoi_handler().unwrap().end_of_interrupt(0x41);
/// assert_eq!(last.0.load(Ordering::Relaxed), 0x41);
/// let plain: X86Io = PortIoBus::new().into();
/// assert!(plain.eoi_handler().is_none());
/// ```
#[derive(Default)]
pub struct X86Io {
    pio: PortIoBus,
    eoi: Option<Arc<dyn EoiHandler>>,
}

impl fmt::Debug for X86Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X86Io")
            .field("pio", &self.pio)
            .field("eoi_handler", &self.eoi.is_some())
            .finish()
    }
}

impl From<PortIoBus> for X86Io {
    fn from(pio: PortIoBus) -> Self {
        X86Io::new(pio)
    }
}

impl X86Io {
    /// The port I/O bus, without EOI handler.
    pub fn new(pio: PortIoBus) -> Self {
        X86Io { pio, eoi: None }
    }

    /// Sends `KVM_EXIT_IOAPIC_EOI` to `handler`.
    pub fn with_eoi_handler(mut self, handler: Arc<dyn EoiHandler>) -> Self {
        self.eoi = Some(handler);
        self
    }

    /// The port I/O bus.
    pub fn pio(&self) -> &PortIoBus {
        &self.pio
    }

    /// The port I/O bus, to register more devices.
    pub fn pio_mut(&mut self) -> &mut PortIoBus {
        &mut self.pio
    }

    /// The EOI handler, if any.
    pub fn eoi_handler(&self) -> Option<&Arc<dyn EoiHandler>> {
        self.eoi.as_ref()
    }
}

impl<T: EoiHandler + ?Sized> EoiHandler for Arc<T> {
    fn end_of_interrupt(&self, vector: u8) {
        (**self).end_of_interrupt(vector)
    }
}
