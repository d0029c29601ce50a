//! Saving and restoring the VM-wide state of an x86_64 VM: the in-kernel
//! PIC and IOAPIC, the PIT, and the kvmclock.

use crate::profile::check_version;
use crate::state::{IrqchipState, Omission, Omitted, StatePiece};
use crate::{Error, IrqchipMode, Result, X86Vm, X86VmState, STATE_VERSION};
use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, KVM_CLOCK_REALTIME, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use kvmkit_core::Capability;
use std::time::{SystemTime, UNIX_EPOCH};

/// How the VM clock (kvmclock) continues after a restore.
///
/// ```
/// use kvmkit_arch_x86_64::ClockRestore;
/// assert_eq!(ClockRestore::default(), ClockRestore::Continue);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClockRestore {
    /// The clock continues from the saved value: the time the VM was
    /// stopped does not exist for the guest (a snapshot restored days later
    /// resumes as if no time had passed; the guest's NTP corrects its wall
    /// clock). The saved TSC values behave the same way.
    #[default]
    Continue,
    /// The clock advances by the real time elapsed since the save, from the
    /// host real time saved with it (`KVM_CLOCK_REALTIME`): for live
    /// migration, where the guest's clock should not fall behind by the
    /// downtime. Uses the kernel's own adjustment where it offers it
    /// (`KVM_CAP_ADJUST_CLOCK` lists `KVM_CLOCK_REALTIME`), else computes the
    /// same from the host's `CLOCK_REALTIME`.
    AddElapsedRealtime,
}

/// The `kvm_clock_data` to hand `KVM_SET_CLOCK`: the flags `KVM_GET_CLOCK`
/// returned (`KVM_CLOCK_TSC_STABLE`, `KVM_CLOCK_HOST_TSC`) are facts about
/// the source host, and kernels before 5.16 refuse any flag, so only
/// `KVM_CLOCK_REALTIME` is passed on, and only when the policy wants the
/// elapsed real time added and this kernel does it (`host_flags`, the
/// `KVM_CAP_ADJUST_CLOCK` value). `now_realtime_ns` is the host's
/// `CLOCK_REALTIME`, for the computation on older kernels.
pub(crate) fn clock_to_set(
    saved: &kvm_clock_data,
    policy: ClockRestore,
    host_flags: u32,
    now_realtime_ns: u64,
) -> Result<kvm_clock_data> {
    let mut c = kvm_clock_data {
        clock: saved.clock,
        ..Default::default()
    };
    if policy == ClockRestore::AddElapsedRealtime {
        if saved.flags & KVM_CLOCK_REALTIME == 0 {
            return Err(Error::ClockWithoutRealtime { flags: saved.flags });
        }
        if host_flags & KVM_CLOCK_REALTIME != 0 {
            c.flags = KVM_CLOCK_REALTIME;
            c.realtime = saved.realtime;
        } else {
            // What the kernel does: never step the clock backwards.
            c.clock = saved
                .clock
                .saturating_add(now_realtime_ns.saturating_sub(saved.realtime));
        }
    }
    Ok(c)
}

fn get_chip(vm: &X86Vm, chip_id: u32) -> Result<kvm_irqchip> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    vm.vm_fd()
        .get_irqchip(&mut chip)
        .map_err(Error::ioctl("KVM_GET_IRQCHIP"))?;
    Ok(chip)
}

fn not_in_kernel(piece: StatePiece, detail: &str) -> Omitted {
    Omitted {
        piece,
        reason: Omission::NotInKernel {
            detail: detail.to_string(),
        },
    }
}

/// Reads the VM-wide state: with `IrqchipMode::Kernel` the PIC pair and the
/// IOAPIC (`KVM_GET_IRQCHIP`), the PIT when the VM has one
/// (`KVM_GET_PIT2`), and the kvmclock (`KVM_GET_CLOCK`, with
/// `KVM_CAP_ADJUST_CLOCK`). The vCPUs should be stopped, as for
/// `Arch::save_vcpu_state`.
///
/// ```
/// use kvmkit_arch_x86_64::{save_vm_state, IrqchipMode, StatePiece, VmConfig, X86_64};
/// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
/// let vm = kvm
///     .create_vm(&VmConfig { irqchip: IrqchipMode::Kernel, pit: true, ..Default::default() })
///     .unwrap();
/// let s = save_vm_state(vm.arch_fd()).unwrap();
/// assert!(s.irqchip.is_some() && s.pit.is_some() && s.clock.is_some());
/// let plain = kvm.create_vm(&VmConfig::default()).unwrap();
/// let s = save_vm_state(plain.arch_fd()).unwrap();
/// assert!(s.irqchip.is_none() && s.omission(StatePiece::Irqchip).is_some());
/// ```
pub fn save_vm_state(vm: &X86Vm) -> Result<X86VmState> {
    let mut omitted = Vec::new();
    let irqchip = match vm.irqchip() {
        IrqchipMode::Kernel => Some(IrqchipState {
            pic_master: get_chip(vm, KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: get_chip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: get_chip(vm, KVM_IRQCHIP_IOAPIC)?,
        }),
        IrqchipMode::None => {
            omitted.push(not_in_kernel(StatePiece::Irqchip, "IrqchipMode::None"));
            None
        }
        IrqchipMode::Split { .. } => {
            omitted.push(not_in_kernel(
                StatePiece::Irqchip,
                "split irqchip: the IOAPIC is the userspace Ioapic, saved with the devices",
            ));
            None
        }
    };
    let pit = if vm.has_pit() {
        Some(
            vm.vm_fd()
                .get_pit2()
                .map_err(Error::ioctl("KVM_GET_PIT2"))?,
        )
    } else {
        omitted.push(not_in_kernel(StatePiece::Pit, "the VM has no PIT"));
        None
    };
    let clock = if vm.check_extension(Capability::ADJUST_CLOCK) > 0 {
        Some(
            vm.vm_fd()
                .get_clock()
                .map_err(Error::ioctl("KVM_GET_CLOCK"))?,
        )
    } else {
        omitted.push(Omitted {
            piece: StatePiece::Clock,
            reason: Omission::MissingCapability {
                capability: Capability::ADJUST_CLOCK.name().to_string(),
            },
        });
        None
    };
    Ok(X86VmState {
        version: STATE_VERSION,
        irqchip,
        pit,
        clock,
        omitted,
    })
}

/// [`restore_vm_state_with`] and [`ClockRestore::Continue`]: the guest's
/// clock continues from where it was saved.
///
/// Restore in this order: guest memory, then this, then each vCPU's state
/// (`Vcpu::restore_state`), then run. Setting the clock last before the
/// vCPUs run keeps the time between restore and run short.
///
/// ```
/// use kvmkit_arch_x86_64::{restore_vm_state, save_vm_state, IrqchipMode, VmConfig, X86_64};
/// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
/// let cfg = VmConfig { irqchip: IrqchipMode::Kernel, ..Default::default() };
/// let old = kvm.create_vm(&cfg).unwrap();
/// let saved = save_vm_state(old.arch_fd()).unwrap();
/// let new = kvm.create_vm(&cfg).unwrap();
/// restore_vm_state(new.arch_fd(), &saved).unwrap();
/// let clock = new.arch_fd().vm_fd().get_clock().unwrap().clock;
/// assert!(clock >= saved.clock.unwrap().clock, "the clock continues");
/// ```
pub fn restore_vm_state(vm: &X86Vm, state: &X86VmState) -> Result<()> {
    restore_vm_state_with(vm, state, ClockRestore::Continue)
}

/// Writes back VM-wide state saved by [`save_vm_state`]: the PIC pair and
/// IOAPIC (`KVM_SET_IRQCHIP`), the PIT (`KVM_SET_PIT2`; each channel
/// restarts its current count period), then the clock (`KVM_SET_CLOCK`,
/// as `clock` says).
///
/// Refuses, before writing anything, a state of another format version or
/// one holding a piece this VM has no place for (an irqchip state on a VM
/// without `IrqchipMode::Kernel`, a PIT state on a VM without PIT, a clock
/// without `KVM_CAP_ADJUST_CLOCK`).
///
/// ```
/// use kvmkit_arch_x86_64::{restore_vm_state_with, save_vm_state, ClockRestore, IrqchipMode, VmConfig, X86_64};
/// # let Some(kvm) = kvmkit_test_support::kvm_or_skip!(X86_64) else { return };
/// let kernel = VmConfig { irqchip: IrqchipMode::Kernel, ..Default::default() };
/// let saved = save_vm_state(kvm.create_vm(&kernel).unwrap().arch_fd()).unwrap();
/// let plain = kvm.create_vm(&VmConfig::default()).unwrap();
/// let e = restore_vm_state_with(plain.arch_fd(), &saved, ClockRestore::Continue).unwrap_err();
/// assert!(e.to_string().contains("holds the in-kernel PIC and IOAPIC"), "{e}");
/// ```
pub fn restore_vm_state_with(vm: &X86Vm, state: &X86VmState, clock: ClockRestore) -> Result<()> {
    check_version("VM", state.version)?;
    if state.irqchip.is_some() && vm.irqchip() != IrqchipMode::Kernel {
        return Err(Error::StateDoesNotFit {
            piece: StatePiece::Irqchip,
            detail: format!("this VM's irqchip is {:?}", vm.irqchip()),
        });
    }
    if state.pit.is_some() && !vm.has_pit() {
        return Err(Error::StateDoesNotFit {
            piece: StatePiece::Pit,
            detail: "this VM has no PIT".into(),
        });
    }
    let adjust_clock = vm.check_extension(Capability::ADJUST_CLOCK);
    let clock = match &state.clock {
        Some(_) if adjust_clock <= 0 => {
            return Err(Error::StateDoesNotFit {
                piece: StatePiece::Clock,
                detail: "this kernel lacks KVM_CAP_ADJUST_CLOCK".into(),
            })
        }
        Some(saved) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            Some(clock_to_set(
                saved,
                clock,
                adjust_clock.unsigned_abs(),
                now,
            )?)
        }
        None => None,
    };
    if let Some(chip) = &state.irqchip {
        for c in [&chip.pic_master, &chip.pic_slave, &chip.ioapic] {
            vm.vm_fd()
                .set_irqchip(c)
                .map_err(Error::ioctl("KVM_SET_IRQCHIP"))?;
        }
    }
    if let Some(pit) = &state.pit {
        vm.vm_fd()
            .set_pit2(pit)
            .map_err(Error::ioctl("KVM_SET_PIT2"))?;
    }
    if let Some(c) = &clock {
        vm.vm_fd()
            .set_clock(c)
            .map_err(Error::ioctl("KVM_SET_CLOCK"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::{KVM_CLOCK_HOST_TSC, KVM_CLOCK_TSC_STABLE};

    fn saved(flags: u32) -> kvm_clock_data {
        kvm_clock_data {
            clock: 5_000_000_000,
            flags,
            realtime: 1_000_000_000_000,
            host_tsc: 77,
            ..Default::default()
        }
    }

    #[test]
    fn continue_drops_the_source_hosts_flags() {
        let s = saved(KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC);
        let c = clock_to_set(&s, ClockRestore::Continue, 0xe, 2_000_000_000_000).unwrap();
        assert_eq!(
            c,
            kvm_clock_data {
                clock: s.clock,
                ..Default::default()
            }
        );
    }

    #[test]
    fn elapsed_realtime_by_the_kernel_or_by_hand() {
        let s = saved(KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME);
        let now = s.realtime + 3_000_000_000;
        // The kernel offers KVM_CLOCK_REALTIME: it adds the elapsed time itself.
        let c = clock_to_set(&s, ClockRestore::AddElapsedRealtime, 0xe, now).unwrap();
        assert_eq!(
            (c.clock, c.flags, c.realtime),
            (s.clock, KVM_CLOCK_REALTIME, s.realtime)
        );
        // An older kernel (ADJUST_CLOCK = KVM_CLOCK_TSC_STABLE): computed here.
        let c = clock_to_set(&s, ClockRestore::AddElapsedRealtime, 2, now).unwrap();
        assert_eq!((c.clock, c.flags), (s.clock + 3_000_000_000, 0));
        // A host clock behind the source's never steps the clock back.
        let c = clock_to_set(&s, ClockRestore::AddElapsedRealtime, 2, 0).unwrap();
        assert_eq!(c.clock, s.clock);
        // Without the saved real time there is nothing to add.
        let e = clock_to_set(&saved(2), ClockRestore::AddElapsedRealtime, 0xe, now).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot advance the VM clock by the elapsed real time: the saved clock has no KVM_CLOCK_REALTIME timestamp (flags 0x2)"
        );
    }
}
