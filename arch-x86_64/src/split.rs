//! The split irqchip: in-kernel LAPICs, the IOAPIC in userspace.

use crate::{EoiHandler, Ioapic, IoapicState, IoapicStateError};
use kvmkit_irq::{Error, GsiRouting, InterruptController, Msi, Result};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use vmm_sys_util::eventfd::EventFd;

/// x86's interrupt controller with `IrqchipMode::Split`: the LAPICs are in
/// the kernel, the IOAPIC is the userspace [`Ioapic`] this struct owns.
///
/// It is the [`InterruptController`] devices use in split mode:
/// - `set_irq(gsi, level)` drives IOAPIC pin `gsi`, which sends the MSI
///   of its redirection entry (`KVM_SIGNAL_MSI`);
/// - `signal_msi` goes straight to the LAPICs (`KVM_SIGNAL_MSI`);
/// - `register_irqfd(fd, gsi, resample)` registers a KVM irqfd on `gsi`,
///   whose MSI route the IOAPIC keeps in step with the redirection entry
///   (so the irqfd delivers what the guest programmed, and nothing while the
///   entry is masked). KVM refuses resample fds without its own IOAPIC, so
///   the IOAPIC signals `resample` itself on the EOI of the pin's vector,
///   as QEMU does.
///
/// The VMM puts [`SplitIrqchip::ioapic`] on the MMIO bus at
/// [`crate::IOAPIC_ADDR`] (4 KiB) and gives the chip to the arch I/O hook
/// ([`crate::X86Io::with_eoi_handler`]) so that `KVM_EXIT_IOAPIC_EOI`
/// reaches the IOAPIC.
///
/// `C` is the VM: an [`crate::X86Vm`] (a clone of the VM's handle) in a
/// VMM, a recording double in tests.
///
/// ```no_run
/// use kvmkit_arch_x86_64::{SplitIrqchip, X86Io, PortIoBus};
/// use kvmkit_irq::InterruptController;
/// use std::sync::Arc;
/// # fn f(vm: &kvmkit_core::Vm<kvmkit_arch_x86_64::X86_64>) -> Result<(), Box<dyn std::error::Error>> {
/// // The VM was created with `IrqchipMode::Split { ioapic_pins: 24 }`.
/// let chip = Arc::new(SplitIrqchip::new(vm.arch_fd().clone(), 24)?);
/// // For `MmioBus::register(IOAPIC_ADDR, IOAPIC_SIZE, ioapic)`:
/// let ioapic: Arc<dyn vm_device::DeviceMmio + Send + Sync> = chip.ioapic();
/// let io = X86Io::new(PortIoBus::new()).with_eoi_handler(chip.clone());
/// chip.set_irq(4, true)?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SplitIrqchip<C> {
    ioapic: Arc<Mutex<Ioapic<C>>>,
    vm: C,
}

impl<C: InterruptController + GsiRouting + Clone> SplitIrqchip<C> {
    /// A split irqchip over `vm` with an IOAPIC of `pins` pins (the
    /// `ioapic_pins` the VM was created with; 24 on a PC).
    pub fn new(vm: C, pins: u32) -> Result<Self> {
        Ok(SplitIrqchip {
            ioapic: Arc::new(Mutex::new(Ioapic::new(pins, vm.clone())?)),
            vm,
        })
    }

    /// The IOAPIC, for the MMIO bus (an `Arc<Mutex<_>>` is a vm-device
    /// `DeviceMmio`).
    pub fn ioapic(&self) -> Arc<Mutex<Ioapic<C>>> {
        self.ioapic.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Ioapic<C>> {
        // The IOAPIC's state stays consistent across a panic elsewhere: use it.
        self.ioapic.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Routes GSI `gsi` (at or above the IOAPIC's pins) to `msi`, or removes
    /// its route with `None`, for irqfds of MSI-capable devices.
    pub fn set_msi_route(&self, gsi: u32, msi: Option<Msi>) -> Result<()> {
        self.lock().set_msi_route(gsi, msi)
    }

    /// The first error a guest access to the IOAPIC ran into since the last
    /// call ([`Ioapic::take_error`]).
    pub fn take_error(&self) -> Option<Error> {
        self.lock().take_error()
    }

    /// The saved state of the IOAPIC ([`Ioapic::state`]); the LAPICs' is
    /// in the vCPUs' state. The chip holds no other state of its own.
    ///
    /// ```no_run
    /// # use kvmkit_arch_x86_64::{SplitIrqchip, X86Vm};
    /// # fn f(chip: &SplitIrqchip<X86Vm>) {
    /// let json = serde_json::to_string(&chip.state()).unwrap();
    /// # }
    /// ```
    pub fn state(&self) -> IoapicState {
        self.lock().state()
    }

    /// Puts the IOAPIC in `state` ([`Ioapic::restore`]: checked first,
    /// routes installed again, pending lines delivered). Call it after the
    /// vCPUs' LAPIC state is restored.
    ///
    /// ```no_run
    /// # use kvmkit_arch_x86_64::{IoapicState, SplitIrqchip, X86Vm};
    /// # fn f(chip: &SplitIrqchip<X86Vm>, saved: &IoapicState) -> Result<(), Box<dyn std::error::Error>> {
    /// chip.restore(saved)?;
    /// # Ok(()) }
    /// ```
    pub fn restore(&self, state: &IoapicState) -> std::result::Result<(), IoapicStateError> {
        self.lock().restore(state)
    }
}

impl<C: InterruptController + GsiRouting + Clone> InterruptController for SplitIrqchip<C> {
    fn name(&self) -> &'static str {
        "split irqchip (userspace IOAPIC, in-kernel LAPIC)"
    }

    fn irq_count(&self) -> u32 {
        self.lock().pins()
    }

    /// Drives the userspace IOAPIC's pin `irq`.
    fn set_irq(&self, irq: u32, level: bool) -> Result<()> {
        self.lock().set_irq(irq, level)
    }

    /// Wraps `KVM_SIGNAL_MSI` (through `C`).
    fn signal_msi(&self, msi: Msi) -> Result<()> {
        self.vm.signal_msi(msi)
    }

    /// Wraps `KVM_IRQFD` (through `C`), without KVM's resample flag; the
    /// IOAPIC signals `resample` on the EOI of GSI `irq`'s vector.
    fn register_irqfd(&self, fd: &EventFd, irq: u32, resample: Option<&EventFd>) -> Result<()> {
        let resample = resample
            .map(|r| {
                r.try_clone().map_err(|source| Error::Ioctl {
                    ioctl: "dup of the resample fd",
                    irq,
                    source,
                })
            })
            .transpose()?;
        self.vm.register_irqfd(fd, irq, None)?;
        if let Some(r) = resample {
            self.lock().add_resample(irq, fd, r);
        }
        Ok(())
    }

    /// Wraps `KVM_IRQFD` with `KVM_IRQFD_FLAG_DEASSIGN` and forgets the
    /// irqfd's resample fd.
    fn unregister_irqfd(&self, fd: &EventFd, irq: u32) -> Result<()> {
        self.lock().remove_resample(irq, fd);
        self.vm.unregister_irqfd(fd, irq)
    }
}

impl<C: InterruptController + GsiRouting + Clone> EoiHandler for SplitIrqchip<C> {
    fn end_of_interrupt(&self, vector: u8) {
        let mut io = self.lock();
        let r = io.end_of_interrupt(vector);
        if let Err(e) = r {
            io.keep_error(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioapic::tests::Lapics;
    use std::os::fd::AsRawFd;
    use vm_device::bus::MmioAddress;
    use vm_device::DeviceMmio;

    fn write_reg(dev: &dyn DeviceMmio, reg: u32, v: u32) {
        dev.mmio_write(MmioAddress(0xfec0_0000), 0, &reg.to_le_bytes());
        dev.mmio_write(MmioAddress(0xfec0_0000), 0x10, &v.to_le_bytes());
    }

    #[test]
    fn lines_go_through_the_ioapic_and_eois_come_back() {
        let l = Lapics::default();
        let chip = SplitIrqchip::new(l.clone(), 24).unwrap();
        assert_eq!(chip.irq_count(), 24);
        assert!(chip.name().contains("split"));
        let dev = chip.ioapic();
        write_reg(&*dev, 0x10 + 2 * 11, 0x5b | 1 << 15);
        chip.set_irq(11, true).unwrap();
        assert_eq!(l.take()[0].data, 0x805b);
        chip.end_of_interrupt(0x5b);
        assert_eq!(l.take().len(), 1, "re-delivered after the EOI");
        chip.set_irq(11, false).unwrap();
        chip.signal_msi(Msi {
            address: 0xfee0_0000,
            data: 0x70,
            devid: None,
        })
        .unwrap();
        assert_eq!(l.take()[0].data, 0x70);
        assert!(chip.set_irq(30, true).is_err());
        chip.set_msi_route(30, Some(Msi::default())).unwrap();
        assert_eq!(l.last_table().routes(30).count(), 1);
        assert!(chip.take_error().is_none());
        chip.end_of_interrupt(0x5b);
        assert!(l.take().is_empty(), "deasserted: no re-delivery");
        *l.fail.lock().unwrap() = true;
        chip.set_irq(11, true).unwrap_err();
        *l.fail.lock().unwrap() = false;
        chip.end_of_interrupt(0x5b);
        assert!(chip.take_error().is_none(), "the EOI's re-delivery worked");
        assert_eq!(l.take().len(), 1);
        *l.fail.lock().unwrap() = true;
        chip.end_of_interrupt(0x5b);
        assert!(chip.take_error().is_some(), "a failed re-delivery is kept");
    }

    #[test]
    fn state_and_restore_go_to_the_ioapic() {
        let l = Lapics::default();
        let chip = SplitIrqchip::new(l.clone(), 24).unwrap();
        write_reg(&*chip.ioapic(), 0x10 + 2 * 4, 0x34);
        let state = chip.state();
        assert_eq!(state.table[4].vector(), 0x34);
        let l2 = Lapics::default();
        let fresh = SplitIrqchip::new(l2.clone(), 24).unwrap();
        fresh.restore(&state).unwrap();
        assert_eq!(fresh.state(), state);
        assert_eq!(l2.last_table().routes(4).count(), 1);
        fresh.set_irq(4, true).unwrap();
        assert_eq!(l2.take()[0].data, 0x34);
        let small = SplitIrqchip::new(Lapics::default(), 8).unwrap();
        assert!(matches!(
            small.restore(&state),
            Err(IoapicStateError::PinCountMismatch {
                pins: 24,
                expected: 8
            })
        ));
    }

    #[test]
    fn irqfds_register_without_kernel_resample() {
        let l = Lapics::default();
        let chip = SplitIrqchip::new(l.clone(), 24).unwrap();
        write_reg(&*chip.ioapic(), 0x10 + 2 * 6, 0x56 | 1 << 15);
        let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let rs = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        chip.register_irqfd(&fd, 6, Some(&rs)).unwrap();
        assert_eq!(*l.irqfds.lock().unwrap(), [(fd.as_raw_fd(), 6, false)]);
        chip.end_of_interrupt(0x56);
        assert_eq!(rs.read().unwrap(), 1, "the IOAPIC signals the resample fd");
        chip.unregister_irqfd(&fd, 6).unwrap();
        assert!(l.irqfds.lock().unwrap().is_empty());
        chip.end_of_interrupt(0x56);
        assert!(rs.read().is_err());
    }
}
