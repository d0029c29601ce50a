//! The in-kernel irqchip as a `kvmkit_irq::InterruptController`.

use crate::{IrqchipMode, X86Vm, IOAPIC_PINS};
use kvm_bindings::{kvm_msi, KVM_MSI_VALID_DEVID};
use kvmkit_irq::{check_range, Error, InterruptController, Msi, Result};
use vmm_sys_util::eventfd::EventFd;

fn ioctl(ioctl: &'static str, irq: u32) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |e| Error::Ioctl {
        ioctl,
        irq,
        source: std::io::Error::from_raw_os_error(e.errno()),
    }
}

/// x86's in-kernel interrupt controllers: with `IrqchipMode::Kernel`, GSIs
/// 0–23 reach the PIC and IOAPIC; with `IrqchipMode::Split` only MSIs (and
/// irqfds routed to MSIs) do, lines belong to the userspace IOAPIC.
impl InterruptController for X86Vm {
    fn name(&self) -> &'static str {
        match self.irqchip() {
            IrqchipMode::Kernel => "in-kernel PIC and IOAPIC",
            IrqchipMode::Split { .. } => "split irqchip (in-kernel LAPIC)",
            IrqchipMode::None => "no irqchip",
        }
    }

    fn irq_count(&self) -> u32 {
        match self.irqchip() {
            IrqchipMode::Kernel => IOAPIC_PINS,
            _ => 0,
        }
    }

    /// Wraps `KVM_IRQ_LINE`.
    fn set_irq(&self, irq: u32, level: bool) -> Result<()> {
        if self.irqchip() != IrqchipMode::Kernel {
            return Err(Error::Unsupported {
                operation: "KVM_IRQ_LINE",
                controller: self.name(),
            });
        }
        check_range(irq, IOAPIC_PINS)?;
        self.vm_fd()
            .set_irq_line(irq, level)
            .map_err(ioctl("KVM_IRQ_LINE", irq))
    }

    /// Wraps `KVM_SIGNAL_MSI`.
    fn signal_msi(&self, msi: Msi) -> Result<()> {
        if self.irqchip() == IrqchipMode::None {
            return Err(Error::Unsupported {
                operation: "MSI",
                controller: self.name(),
            });
        }
        let k = kvm_msi {
            address_lo: (msi.address & 0xffff_ffff) as u32,
            address_hi: (msi.address >> 32) as u32,
            data: msi.data,
            flags: if msi.devid.is_some() {
                KVM_MSI_VALID_DEVID
            } else {
                0
            },
            devid: msi.devid.unwrap_or(0),
            ..Default::default()
        };
        self.vm_fd()
            .signal_msi(k)
            .map(|_| ())
            .map_err(ioctl("KVM_SIGNAL_MSI", msi.data))
    }

    /// Wraps `KVM_IRQFD` (with `KVM_IRQFD_FLAG_RESAMPLE` when `resample` is given).
    fn register_irqfd(&self, fd: &EventFd, irq: u32, resample: Option<&EventFd>) -> Result<()> {
        match resample {
            Some(r) => self.vm_fd().register_irqfd_with_resample(fd, r, irq),
            None => self.vm_fd().register_irqfd(fd, irq),
        }
        .map_err(ioctl("KVM_IRQFD", irq))
    }

    /// Wraps `KVM_IRQFD` with `KVM_IRQFD_FLAG_DEASSIGN`.
    fn unregister_irqfd(&self, fd: &EventFd, irq: u32) -> Result<()> {
        self.vm_fd()
            .unregister_irqfd(fd, irq)
            .map_err(ioctl("KVM_IRQFD", irq))
    }
}
