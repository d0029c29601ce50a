//! The in-kernel XICS and XIVE interrupt controllers, behind
//! `kvmkit_irq::InterruptController`.
//!
//! Interrupt `irq` of the trait is source `irq` of the controller, global
//! number `irq_base + irq` (the number in the device tree's `interrupts`
//! properties and the GSI of `KVM_IRQ_LINE` and `KVM_IRQFD`, which PowerPC's
//! KVM maps one to one onto source numbers).

use crate::ioctls::{KVM_CREATE_DEVICE, KVM_ENABLE_CAP, KVM_IRQFD, KVM_IRQ_LINE};
use crate::sys::{self, AttrValue};
use crate::uapi::*;
use crate::{Error, IrqchipKind, Result, VmConfig};
use kvmkit_core::Capability;
use kvmkit_irq::{check_range, InterruptController, Msi};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use vmm_sys_util::eventfd::EventFd;

/// The lowest interrupt source number KVM's XICS accepts
/// (`KVMPPC_XICS_FIRST_IRQ` of Linux's `book3s_xics.h`; below are IPIs).
pub const XICS_FIRST_IRQ: u32 = 16;
/// One past the highest source number KVM's XICS accepts
/// (`KVMPPC_XICS_NR_IRQS`, 2^20).
pub const XICS_NR_IRQS: u32 = 1 << 20;

/// The XICS source attribute value of a source after reset, as QEMU sets it:
/// server 0, priority 0xff (masked), level-sensitive or not.
///
/// ```
/// use kvmkit_arch_powerpc::{xics_source_reset_state, uapi::*};
/// assert_eq!(xics_source_reset_state(false), (0xff << KVM_XICS_PRIORITY_SHIFT) | KVM_XICS_MASKED);
/// assert_ne!(xics_source_reset_state(true) & KVM_XICS_LEVEL_SENSITIVE, 0);
/// ```
pub const fn xics_source_reset_state(level_sensitive: bool) -> u64 {
    let mut s = (0xff << KVM_XICS_PRIORITY_SHIFT) | KVM_XICS_MASKED;
    if level_sensitive {
        s |= KVM_XICS_LEVEL_SENSITIVE;
    }
    s
}

/// The `KVM_IRQ_LINE` level for raising (`true`) or lowering a source, with
/// PowerPC's semantics: a level-sensitive source is asserted with
/// `KVM_INTERRUPT_SET_LEVEL` and deasserted with `KVM_INTERRUPT_UNSET`; a
/// message-signalled (edge) source is fired with `KVM_INTERRUPT_SET` and has
/// nothing to lower (`None`).
///
/// ```
/// use kvmkit_arch_powerpc::{irq_line_level, uapi::*};
/// assert_eq!(irq_line_level(true, true), Some(KVM_INTERRUPT_SET_LEVEL as u32));
/// assert_eq!(irq_line_level(true, false), Some(KVM_INTERRUPT_UNSET as u32));
/// assert_eq!(irq_line_level(false, true), Some(KVM_INTERRUPT_SET as u32));
/// assert_eq!(irq_line_level(false, false), None);
/// ```
// The three levels are u32 constants (-1U, -2U, -3U) in the header.
#[allow(clippy::cast_possible_truncation)]
pub const fn irq_line_level(level_sensitive: bool, level: bool) -> Option<u32> {
    match (level_sensitive, level) {
        (true, true) => Some(KVM_INTERRUPT_SET_LEVEL as u32),
        (true, false) => Some(KVM_INTERRUPT_UNSET as u32),
        (false, true) => Some(KVM_INTERRUPT_SET as u32),
        (false, false) => None,
    }
}

/// Checks the interrupt-controller part of `config`.
pub(crate) fn validate(config: &VmConfig) -> Result<()> {
    if config.irqchip == IrqchipKind::None {
        return Ok(());
    }
    let end = config
        .irq_base
        .checked_add(config.irq_count)
        .filter(|&e| e <= XICS_NR_IRQS);
    if config.irq_count == 0 || config.irq_base < XICS_FIRST_IRQ || end.is_none() {
        return Err(Error::IrqchipConfig(format!(
            "sources {:#x} + {} must lie in {XICS_FIRST_IRQ:#x}..{XICS_NR_IRQS:#x} and not be empty",
            config.irq_base, config.irq_count
        )));
    }
    if let Some(bad) = config
        .level_sensitive
        .iter()
        .find(|&&i| i >= config.irq_count)
    {
        return Err(Error::IrqchipConfig(format!(
            "level-sensitive source {bad} is not below the source count {}",
            config.irq_count
        )));
    }
    Ok(())
}

/// An in-kernel XICS or XIVE of one VM.
///
/// Created by `Kvm::create_vm` as [`VmConfig::irqchip`] says; take it from
/// [`crate::PpcVm::irqchip`]. All methods issue real ioctls on the VM and
/// device file descriptors (PowerPC hosts only).
///
/// ```no_run
/// use kvmkit_arch_powerpc::{Ppc64, VmConfig};
/// use kvmkit_irq::InterruptController;
/// use vmm_sys_util::eventfd::EventFd;
/// let kvm = kvmkit_core::Kvm::<Ppc64>::new().unwrap();
/// let vm = kvm
///     .create_vm(&VmConfig { level_sensitive: vec![0], ..VmConfig::default() })
///     .unwrap();
/// let xics = vm.arch_fd().irqchip().unwrap();
/// assert_eq!(xics.global_irq(0), Some(0x1000)); // for the device tree
/// xics.set_irq(0, true).unwrap(); // LSI: asserted until lowered
/// let efd = EventFd::new(0).unwrap();
/// xics.register_irqfd(&efd, 1, None).unwrap(); // MSI source 1 fires on writes
/// ```
pub struct PpcIrqChip {
    kind: IrqchipKind,
    vm: Arc<OwnedFd>,
    dev: OwnedFd,
    base: u32,
    level_sensitive: Vec<bool>,
}

impl fmt::Debug for PpcIrqChip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PpcIrqChip")
            .field("kind", &self.kind)
            .field("dev", &self.dev.as_raw_fd())
            .field("base", &self.base)
            .field("count", &self.level_sensitive.len())
            .finish()
    }
}

impl PpcIrqChip {
    /// Wraps `KVM_CREATE_DEVICE` (XICS or XIVE), sets the number of servers
    /// and resets every source; `None` when `config` asks for no irqchip.
    pub(crate) fn create(vm: &Arc<OwnedFd>, config: &VmConfig) -> Result<Option<PpcIrqChip>> {
        validate(config)?;
        let (ty, ctrl_group, nr_servers_attr, source_group) = match config.irqchip {
            IrqchipKind::None => return Ok(None),
            IrqchipKind::Xics => (
                KVM_DEV_TYPE_XICS,
                KVM_DEV_XICS_GRP_CTRL,
                KVM_DEV_XICS_NR_SERVERS,
                KVM_DEV_XICS_GRP_SOURCES,
            ),
            IrqchipKind::Xive => (
                KVM_DEV_TYPE_XIVE,
                KVM_DEV_XIVE_GRP_CTRL,
                KVM_DEV_XIVE_NR_SERVERS,
                KVM_DEV_XIVE_GRP_SOURCE,
            ),
        };
        let mut cd = kvm_create_device {
            type_: u32_of(ty),
            fd: 0,
            flags: 0,
        };
        sys::ioctl_plain(vm.as_fd(), KVM_CREATE_DEVICE, &mut cd)
            .map_err(Error::ioctl("KVM_CREATE_DEVICE"))?;
        let raw = i32::try_from(cd.fd).map_err(|_| Error::Ioctl {
            ioctl: "KVM_CREATE_DEVICE",
            source: std::io::Error::from_raw_os_error(libc::EBADF),
        })?;
        let mut lsi = vec![false; config.irq_count as usize];
        for &i in &config.level_sensitive {
            lsi[i as usize] = true;
        }
        let chip = PpcIrqChip {
            kind: config.irqchip,
            vm: vm.clone(),
            dev: sys::owned_fd(raw),
            base: config.irq_base,
            level_sensitive: lsi,
        };
        let ctrl_group = u32_of(ctrl_group);
        if let Some(n) = config.nr_servers {
            if sys::has_device_attr(chip.dev.as_fd(), ctrl_group, nr_servers_attr) {
                sys::set_device_attr(
                    chip.dev.as_fd(),
                    ctrl_group,
                    nr_servers_attr,
                    AttrValue::U32(n),
                )
                .map_err(Error::ioctl("KVM_SET_DEVICE_ATTR(NR_SERVERS)"))?;
            }
        }
        for (i, &lsi) in chip.level_sensitive.iter().enumerate() {
            let global = u64::from(chip.base) + i as u64;
            let state = match chip.kind {
                IrqchipKind::Xive if lsi => KVM_XIVE_LEVEL_SENSITIVE,
                IrqchipKind::Xive => 0,
                _ => xics_source_reset_state(lsi),
            };
            sys::set_device_attr(
                chip.dev.as_fd(),
                u32_of(source_group),
                global,
                AttrValue::U64(state),
            )
            .map_err(Error::ioctl("KVM_SET_DEVICE_ATTR(source)"))?;
        }
        Ok(Some(chip))
    }

    /// XICS or XIVE.
    pub fn kind(&self) -> IrqchipKind {
        self.kind
    }

    /// The device file descriptor (`KVM_CREATE_DEVICE`'s), for attributes
    /// this crate does not set (XIVE queue and source configuration…).
    pub fn device_fd(&self) -> BorrowedFd<'_> {
        self.dev.as_fd()
    }

    /// The global number of source 0 (`VmConfig::irq_base`).
    pub fn irq_base(&self) -> u32 {
        self.base
    }

    /// The global number of source `irq` (for the device tree), if it exists.
    pub fn global_irq(&self, irq: u32) -> Option<u32> {
        check_range(irq, self.irq_count()).ok()?;
        Some(self.base + irq)
    }

    /// Whether source `irq` is level-sensitive.
    pub fn is_level_sensitive(&self, irq: u32) -> bool {
        self.level_sensitive
            .get(irq as usize)
            .copied()
            .unwrap_or(false)
    }

    /// Connects a vCPU to the controller as interrupt server `server`:
    /// `KVM_ENABLE_CAP(KVM_CAP_IRQ_XICS)` or `(KVM_CAP_PPC_IRQ_XIVE)` on the
    /// vCPU with the device fd.
    pub(crate) fn connect_vcpu(&self, vcpu: BorrowedFd<'_>, server: u32) -> Result<()> {
        let (cap, name) = match self.kind {
            IrqchipKind::Xive => (
                Capability::PPC_IRQ_XIVE,
                "KVM_ENABLE_CAP(KVM_CAP_PPC_IRQ_XIVE)",
            ),
            _ => (Capability::IRQ_XICS, "KVM_ENABLE_CAP(KVM_CAP_IRQ_XICS)"),
        };
        let dev = u64::try_from(self.dev.as_raw_fd()).unwrap_or(u64::MAX);
        let mut ec = kvm_enable_cap::new(cap.number(), [dev, u64::from(server), 0, 0]);
        sys::ioctl_plain(vcpu, KVM_ENABLE_CAP, &mut ec).map_err(Error::ioctl(name))?;
        Ok(())
    }

    fn irqfd(
        &self,
        fd: &EventFd,
        irq: u32,
        flags: u32,
        resample: Option<&EventFd>,
    ) -> Result<(), kvmkit_irq::Error> {
        let gsi = self.checked_global(irq)?;
        let mut arg = kvm_irqfd {
            fd: fd_u32(fd.as_raw_fd()),
            gsi,
            flags,
            resamplefd: resample.map_or(0, |r| fd_u32(r.as_raw_fd())),
            pad: [0; 16],
        };
        if resample.is_some() {
            arg.flags |= u32_of(KVM_IRQFD_FLAG_RESAMPLE);
        }
        sys::ioctl_plain(self.vm.as_fd(), KVM_IRQFD, &mut arg)
            .map(|_| ())
            .map_err(|source| kvmkit_irq::Error::Ioctl {
                ioctl: "KVM_IRQFD",
                irq,
                source,
            })
    }

    fn checked_global(&self, irq: u32) -> Result<u32, kvmkit_irq::Error> {
        check_range(irq, self.irq_count())?;
        Ok(self.base + irq)
    }
}

fn u32_of(v: u64) -> u32 {
    u32::try_from(v).expect("UAPI constant fits 32 bits")
}

fn fd_u32(fd: i32) -> u32 {
    u32::try_from(fd).unwrap_or(u32::MAX)
}

impl InterruptController for PpcIrqChip {
    fn name(&self) -> &'static str {
        match self.kind {
            IrqchipKind::Xive => "in-kernel XIVE",
            _ => "in-kernel XICS",
        }
    }

    fn irq_count(&self) -> u32 {
        u32::try_from(self.level_sensitive.len()).unwrap_or(u32::MAX)
    }

    /// Wraps `KVM_IRQ_LINE` with PowerPC's levels ([`irq_line_level`]):
    /// lowering a message-signalled source does nothing.
    fn set_irq(&self, irq: u32, level: bool) -> Result<(), kvmkit_irq::Error> {
        let global = self.checked_global(irq)?;
        let Some(level) = irq_line_level(self.is_level_sensitive(irq), level) else {
            return Ok(());
        };
        let mut arg = kvm_irq_level { irq: global, level };
        sys::ioctl_plain(self.vm.as_fd(), KVM_IRQ_LINE, &mut arg)
            .map(|_| ())
            .map_err(|source| kvmkit_irq::Error::Ioctl {
                ioctl: "KVM_IRQ_LINE",
                irq,
                source,
            })
    }

    /// PowerPC's KVM has no `KVM_SIGNAL_MSI`: on pseries an MSI is a XICS
    /// source the VMM allocated to the device; raise it with `set_irq`.
    fn signal_msi(&self, _msi: Msi) -> Result<(), kvmkit_irq::Error> {
        Err(kvmkit_irq::Error::Unsupported {
            operation: "MSI",
            controller: self.name(),
        })
    }

    /// Wraps `KVM_IRQFD`; with `resample`, `KVM_IRQFD_FLAG_RESAMPLE`.
    fn register_irqfd(
        &self,
        fd: &EventFd,
        irq: u32,
        resample: Option<&EventFd>,
    ) -> Result<(), kvmkit_irq::Error> {
        self.irqfd(fd, irq, 0, resample)
    }

    /// Wraps `KVM_IRQFD` with `KVM_IRQFD_FLAG_DEASSIGN`.
    fn unregister_irqfd(&self, fd: &EventFd, irq: u32) -> Result<(), kvmkit_irq::Error> {
        self.irqfd(fd, irq, u32_of(KVM_IRQFD_FLAG_DEASSIGN), None)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn config(kind: IrqchipKind) -> VmConfig {
        VmConfig {
            irqchip: kind,
            irq_count: 4,
            level_sensitive: vec![2],
            ..VmConfig::default()
        }
    }

    /// A chip over non-KVM fds: every ioctl fails with ENOTTY.
    pub(crate) fn fake(kind: IrqchipKind) -> PpcIrqChip {
        let vm = Arc::new(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
        PpcIrqChip {
            kind,
            vm,
            dev: OwnedFd::from(std::fs::File::open("/dev/null").unwrap()),
            base: 0x1000,
            level_sensitive: vec![false, false, true, false],
        }
    }

    #[test]
    fn levels_follow_powerpc_semantics() {
        assert_eq!(irq_line_level(true, true), Some(0xffff_fffd));
        assert_eq!(irq_line_level(true, false), Some(0xffff_fffe));
        assert_eq!(irq_line_level(false, true), Some(0xffff_ffff));
        assert_eq!(irq_line_level(false, false), None);
        let edge = xics_source_reset_state(false);
        assert_eq!(edge, 0xff << 32 | KVM_XICS_MASKED);
        assert_eq!(
            xics_source_reset_state(true),
            edge | KVM_XICS_LEVEL_SENSITIVE
        );
    }

    #[test]
    fn configs_are_checked() {
        assert!(validate(&config(IrqchipKind::Xics)).is_ok());
        assert!(validate(&VmConfig {
            irqchip: IrqchipKind::None,
            irq_count: 0,
            ..VmConfig::default()
        })
        .is_ok());
        for bad in [
            VmConfig {
                irq_count: 0,
                ..config(IrqchipKind::Xics)
            },
            VmConfig {
                irq_base: 2,
                ..config(IrqchipKind::Xics)
            },
            VmConfig {
                irq_base: XICS_NR_IRQS - 2,
                ..config(IrqchipKind::Xive)
            },
            VmConfig {
                irq_base: u32::MAX,
                ..config(IrqchipKind::Xive)
            },
            VmConfig {
                level_sensitive: vec![4],
                ..config(IrqchipKind::Xics)
            },
        ] {
            let e = validate(&bad).unwrap_err();
            assert!(
                e.to_string().starts_with("invalid interrupt controller"),
                "{e}"
            );
        }
    }

    #[test]
    fn create_names_the_failing_ioctl() {
        let vm = Arc::new(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
        assert!(PpcIrqChip::create(&vm, &config(IrqchipKind::None))
            .unwrap()
            .is_none());
        for kind in [IrqchipKind::Xics, IrqchipKind::Xive] {
            let e = PpcIrqChip::create(&vm, &config(kind)).unwrap_err();
            assert_eq!(e.to_string(), "KVM_CREATE_DEVICE failed");
            assert_eq!(e.errno(), Some(libc::ENOTTY));
        }
        let e = PpcIrqChip::create(
            &vm,
            &VmConfig {
                irq_count: 0,
                ..config(IrqchipKind::Xics)
            },
        )
        .unwrap_err();
        assert!(matches!(e, Error::IrqchipConfig(_)));
    }

    #[test]
    fn controller_ops_reach_the_kernel_with_ppc_numbers() {
        let chip = fake(IrqchipKind::Xics);
        assert_eq!(chip.name(), "in-kernel XICS");
        assert_eq!(chip.kind(), IrqchipKind::Xics);
        assert_eq!(chip.irq_count(), 4);
        assert_eq!(chip.global_irq(3), Some(0x1003));
        assert_eq!(chip.irq_base(), 0x1000);
        assert_eq!(chip.global_irq(4), None);
        assert!(chip.is_level_sensitive(2) && !chip.is_level_sensitive(1));
        assert!(!chip.is_level_sensitive(99));
        assert!(format!("{chip:?}").contains("Xics"));
        let _ = chip.device_fd();
        // Lowering an edge source needs no ioctl at all.
        assert!(chip.set_irq(0, false).is_ok());
        let e = chip.set_irq(2, true).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("KVM_IRQ_LINE failed for interrupt 2"));
        assert!(matches!(
            chip.set_irq(4, true),
            Err(kvmkit_irq::Error::OutOfRange { irq: 4, count: 4 })
        ));
        let e = chip.signal_msi(Msi::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "MSI is not supported by the in-kernel XICS interrupt controller"
        );
        let fd = EventFd::new(0).unwrap();
        let rs = EventFd::new(0).unwrap();
        let e = chip.register_irqfd(&fd, 1, Some(&rs)).unwrap_err();
        assert!(e.to_string().starts_with("KVM_IRQFD failed"));
        assert!(chip.unregister_irqfd(&fd, 1).is_err());
        assert!(chip.register_irqfd(&fd, 9, None).is_err());
        let e = chip.connect_vcpu(chip.device_fd(), 0).unwrap_err();
        assert_eq!(e.to_string(), "KVM_ENABLE_CAP(KVM_CAP_IRQ_XICS) failed");
        let xive = fake(IrqchipKind::Xive);
        assert_eq!(xive.name(), "in-kernel XIVE");
        let e = xive.connect_vcpu(xive.device_fd(), 0).unwrap_err();
        assert_eq!(e.to_string(), "KVM_ENABLE_CAP(KVM_CAP_PPC_IRQ_XIVE) failed");
    }
}
