//! VM-wide and per-vCPU configuration of the s390x backend.

/// VM-wide set-up (`Arch::init_vm`): which s390x capabilities to enable on
/// the VM with `KVM_ENABLE_CAP`. A requested capability the kernel lacks is
/// an error naming it.
///
/// ```
/// let c = kvmkit_arch_s390x::VmConfig::default();
/// assert!(c.irqchip && !c.user_sigp && !c.user_stsi);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    /// `KVM_CAP_S390_IRQCHIP`: the in-kernel interrupt controller, needed for
    /// irqfds and adapter routes (the FLIC works without it).
    pub irqchip: bool,
    /// `KVM_CAP_S390_USER_SIGP`: SIGP orders that change CPU state (stop,
    /// restart, set prefix…) exit to userspace instead of being handled by
    /// KVM. Leave off unless the VMM implements them.
    pub user_sigp: bool,
    /// `KVM_CAP_S390_USER_STSI`: `STSI` exits to userspace
    /// (`S390Exit::Stsi`) after KVM stored the SYSIB, so the VMM can amend it.
    pub user_stsi: bool,
    /// Create a user-controlled VM (`KVM_VM_S390_UCONTROL`, needs
    /// `CAP_SYS_ADMIN` and `KVM_CAP_S390_UCONTROL`): guest page faults exit
    /// to userspace as `S390Exit::Ucontrol`.
    pub ucontrol: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            irqchip: true,
            user_sigp: false,
            user_stsi: false,
            ucontrol: false,
        }
    }
}

/// How a vCPU is reset when it is initialised.
///
/// ```
/// use kvmkit_arch_s390x::{VcpuConfig, VcpuReset};
/// let c = VcpuConfig { reset: VcpuReset::Clear }; // needs KVM_CAP_S390_VCPU_RESETS
/// assert_ne!(c, VcpuConfig::default());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VcpuReset {
    /// No reset: KVM's state after `KVM_CREATE_VCPU` (which is already the
    /// initial-reset state).
    None,
    /// `KVM_S390_INITIAL_RESET`: the architected initial CPU reset (PSW,
    /// prefix, CPU timer, clock comparator, control registers to their
    /// reset values). Works on every KVM.
    #[default]
    Initial,
    /// `KVM_S390_NORMAL_RESET` (needs `KVM_CAP_S390_VCPU_RESETS`).
    Normal,
    /// `KVM_S390_CLEAR_RESET`: initial reset that also clears the registers
    /// (needs `KVM_CAP_S390_VCPU_RESETS`).
    Clear,
}

/// Per-vCPU initialisation (`Arch::init_vcpu`).
///
/// ```
/// use kvmkit_arch_s390x::{VcpuConfig, VcpuReset};
/// assert_eq!(VcpuConfig::default().reset, VcpuReset::Initial);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VcpuConfig {
    /// The reset applied after creation.
    pub reset: VcpuReset,
}
