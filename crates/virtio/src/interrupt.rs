//! The device's interrupt: the VMM-supplied line and the transport's
//! `InterruptStatus` register.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use vmm_sys_util::eventfd::EventFd;

/// `InterruptStatus` bit 0: the device used a buffer in at least one queue.
pub const INT_USED_RING: u32 = 1;
/// `InterruptStatus` bit 1: the configuration space (or device status) changed.
pub const INT_CONFIG: u32 = 2;

/// The interrupt line a VMM gives a virtio device.
///
/// The usual implementation is an [`EventFd`] registered as an irqfd
/// (`KVM_IRQFD`) for the device's GSI, so raising it never leaves the kernel.
///
/// ```
/// use kvmkit_virtio::Interrupt;
/// use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
/// let irq = EventFd::new(EFD_NONBLOCK).unwrap();
/// irq.trigger().unwrap();
/// assert_eq!(irq.read().unwrap(), 1);
/// ```
pub trait Interrupt: Send + Sync {
    /// Raises the interrupt (an edge, or a level the guest's
    /// `InterruptACK` write lowers through the transport).
    fn trigger(&self) -> io::Result<()>;
}

impl Interrupt for EventFd {
    fn trigger(&self) -> io::Result<()> {
        self.write(1)
    }
}

struct Inner {
    status: AtomicU32,
    config_generation: AtomicU32,
    line: Arc<dyn Interrupt>,
}

/// The `InterruptStatus` register of a transport and the line behind it;
/// cheap to clone, shared by the transport and its device.
///
/// ```
/// use std::sync::Arc;
/// use kvmkit_virtio::{InterruptStatus, INT_USED_RING};
/// use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
/// let fd = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
/// let irq = InterruptStatus::new(fd.clone());
/// irq.signal_used_queue().unwrap();
/// assert_eq!(irq.status(), INT_USED_RING);
/// assert_eq!(fd.read().unwrap(), 1);
/// irq.ack(INT_USED_RING);
/// assert_eq!(irq.status(), 0);
/// ```
#[derive(Clone)]
pub struct InterruptStatus {
    inner: Arc<Inner>,
}

impl fmt::Debug for InterruptStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InterruptStatus")
            .field("status", &self.status())
            .field("config_generation", &self.config_generation())
            .finish_non_exhaustive()
    }
}

impl InterruptStatus {
    /// A status register with no bits set, raising `line`.
    pub fn new(line: Arc<dyn Interrupt>) -> Self {
        InterruptStatus {
            inner: Arc::new(Inner {
                status: AtomicU32::new(0),
                config_generation: AtomicU32::new(0),
                line,
            }),
        }
    }

    /// Sets [`INT_USED_RING`] and raises the line.
    pub fn signal_used_queue(&self) -> io::Result<()> {
        self.inner.status.fetch_or(INT_USED_RING, Ordering::SeqCst);
        self.inner.line.trigger()
    }

    /// Bumps `ConfigGeneration`, sets [`INT_CONFIG`] and raises the line.
    pub fn signal_config_change(&self) -> io::Result<()> {
        self.inner.config_generation.fetch_add(1, Ordering::SeqCst);
        self.inner.status.fetch_or(INT_CONFIG, Ordering::SeqCst);
        self.inner.line.trigger()
    }

    /// The `InterruptStatus` register.
    pub fn status(&self) -> u32 {
        self.inner.status.load(Ordering::SeqCst)
    }

    /// The `ConfigGeneration` register.
    pub fn config_generation(&self) -> u32 {
        self.inner.config_generation.load(Ordering::SeqCst)
    }

    /// `InterruptACK`: clears `bits`.
    pub fn ack(&self, bits: u32) {
        self.inner.status.fetch_and(!bits, Ordering::SeqCst);
    }

    pub(crate) fn clear(&self) {
        self.inner.status.store(0, Ordering::SeqCst);
    }
}
