//! VM and vCPU configuration for PowerPC.

use crate::uapi::{KVM_VM_PPC_HV, KVM_VM_PPC_PR};

/// Which KVM implementation runs the VM: the `KVM_CREATE_VM` type argument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VmType {
    /// 0: the kernel picks (KVM-HV when its module is loaded, else KVM-PR).
    #[default]
    Default,
    /// `KVM_VM_PPC_HV` (1): hardware virtualisation on a bare-metal
    /// (powernv) host; the guest runs at full speed, its PVR is the host's.
    Hv,
    /// `KVM_VM_PPC_PR` (2): "problem state" emulation; runs inside another
    /// guest too (nested) and lets the PVR be chosen.
    Pr,
}

impl VmType {
    /// The `KVM_CREATE_VM` argument.
    ///
    /// ```
    /// use kvmkit_arch_powerpc::VmType;
    /// assert_eq!((VmType::Default.raw(), VmType::Hv.raw(), VmType::Pr.raw()), (0, 1, 2));
    /// ```
    pub const fn raw(self) -> u64 {
        match self {
            VmType::Default => 0,
            VmType::Hv => KVM_VM_PPC_HV,
            VmType::Pr => KVM_VM_PPC_PR,
        }
    }

    /// The type for a raw `KVM_CREATE_VM` argument, if it is one.
    ///
    /// ```
    /// use kvmkit_arch_powerpc::VmType;
    /// assert_eq!(VmType::from_raw(2), Some(VmType::Pr));
    /// assert_eq!(VmType::from_raw(3), None);
    /// ```
    pub const fn from_raw(raw: u64) -> Option<Self> {
        match raw {
            0 => Some(VmType::Default),
            KVM_VM_PPC_HV => Some(VmType::Hv),
            KVM_VM_PPC_PR => Some(VmType::Pr),
            _ => None,
        }
    }

    /// The kernel's name, for messages.
    ///
    /// ```
    /// assert_eq!(kvmkit_arch_powerpc::VmType::Hv.name(), "KVM_VM_PPC_HV");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            VmType::Default => "the default VM type",
            VmType::Hv => "KVM_VM_PPC_HV",
            VmType::Pr => "KVM_VM_PPC_PR",
        }
    }
}

/// The in-kernel interrupt controller of the VM.
///
/// ```
/// use kvmkit_arch_powerpc::{IrqchipKind, VmConfig};
/// let c = VmConfig { irqchip: IrqchipKind::None, ..VmConfig::default() };
/// assert_ne!(c, VmConfig::default()); // XICS by default
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IrqchipKind {
    /// None: the VMM injects external interrupts itself.
    None,
    /// XICS (`KVM_DEV_TYPE_XICS`): the PAPR interrupt controller every
    /// pseries Linux drives; on POWER9 and later KVM-HV emulates it on XIVE.
    #[default]
    Xics,
    /// XIVE native (`KVM_DEV_TYPE_XIVE`, POWER9 and later, KVM-HV): this
    /// crate creates the device, its sources and the vCPU connections; the
    /// guest side (CAS negotiation, `H_INT_*` hypercalls, TIMA/ESB mappings,
    /// the device-tree node) is the VMM's to provide.
    Xive,
}

/// The first interrupt source number of the XICS/XIVE sources, as QEMU's
/// spapr numbers them (`XICS_IRQ_BASE`); 0..0x1000 are reserved for IPIs.
pub const IRQ_BASE: u32 = 0x1000;

/// VM-wide set-up parameters.
///
/// ```
/// use kvmkit_arch_powerpc::{IrqchipKind, VmConfig, VmType, IRQ_BASE};
/// let c = VmConfig::default();
/// assert_eq!((c.vm_type, c.irqchip, c.irq_base, c.irq_count), (VmType::Default, IrqchipKind::Xics, IRQ_BASE, 256));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    /// The VM type, passed to `KVM_CREATE_VM` (`Default` lets the kernel pick).
    pub vm_type: VmType,
    /// The in-kernel interrupt controller.
    pub irqchip: IrqchipKind,
    /// Interrupt server (vCPU) numbers the controller must cover
    /// (`KVM_DEV_XICS_NR_SERVERS` / `KVM_DEV_XIVE_NR_SERVERS`), when the
    /// kernel has that attribute; `None` keeps the kernel's default.
    pub nr_servers: Option<u32>,
    /// The global number of source 0 ([`IRQ_BASE`]).
    pub irq_base: u32,
    /// How many sources the controller has: sources `0..irq_count`, global
    /// numbers `irq_base..irq_base + irq_count`.
    pub irq_count: u32,
    /// The sources (relative to `irq_base`) that are level-sensitive (LSI);
    /// the others are message-signalled (edge).
    pub level_sensitive: Vec<u32>,
    /// Allocate a hash page table of 2^order bytes
    /// (`KVM_PPC_ALLOCATE_HTAB`); `None` lets KVM-HV allocate its default
    /// on first run (KVM-PR keeps the HPT in guest memory: leave it `None`).
    pub hpt_order: Option<u32>,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            vm_type: VmType::Default,
            irqchip: IrqchipKind::Xics,
            nr_servers: None,
            irq_base: IRQ_BASE,
            irq_count: 256,
            level_sensitive: Vec::new(),
            hpt_order: None,
        }
    }
}

/// Per-vCPU initialisation parameters.
///
/// ```
/// let c = kvmkit_arch_powerpc::VcpuConfig::default();
/// assert!(c.papr && c.pvr.is_none() && c.arch_compat.is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuConfig {
    /// Processor version to present (`kvm_sregs.pvr`). KVM-PR accepts any
    /// it can emulate; KVM-HV accepts only the host's (use `arch_compat`).
    pub pvr: Option<u32>,
    /// Architecture compatibility level (`KVM_REG_PPC_ARCH_COMPAT`, a
    /// logical PVR such as 0x0f000005 for POWER9 mode), KVM-HV.
    pub arch_compat: Option<u32>,
    /// Run the vCPU as a PAPR (pseries) guest: `KVM_ENABLE_CAP
    /// (KVM_CAP_PPC_PAPR)`, so hypercalls reach KVM and userspace.
    pub papr: bool,
}

impl Default for VcpuConfig {
    fn default() -> Self {
        VcpuConfig {
            pvr: None,
            arch_compat: None,
            papr: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_types_round_trip() {
        for t in [VmType::Default, VmType::Hv, VmType::Pr] {
            assert_eq!(VmType::from_raw(t.raw()), Some(t));
        }
        assert_eq!(VmType::from_raw(9), None);
        assert_eq!(VmType::Pr.name(), "KVM_VM_PPC_PR");
        assert_eq!(VmType::Default.name(), "the default VM type");
        assert!(VcpuConfig::default().papr);
    }
}
