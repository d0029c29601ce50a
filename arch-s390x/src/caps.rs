//! The KVM capabilities this crate checks or enables, by the kernel's names.
//!
//! Generic ones come from [`kvmkit_core::Capability`]; the s390x-only ones
//! are defined here. All are compared with `linux/kvm.h` for s390x in
//! `tests/uapi.rs`.

use kvmkit_core::Capability;

/// `KVM_CAP_S390_UCONTROL`: user-controlled (ucontrol) VMs.
pub const S390_UCONTROL: Capability = Capability::new(73, "KVM_CAP_S390_UCONTROL");
/// `KVM_CAP_S390_USER_SIGP`: SIGP orders that need userspace exit to it.
pub const S390_USER_SIGP: Capability = Capability::new(106, "KVM_CAP_S390_USER_SIGP");
/// `KVM_CAP_S390_USER_STSI`: `STSI` exits to userspace after KVM stored the SYSIB.
pub const S390_USER_STSI: Capability = Capability::new(109, "KVM_CAP_S390_USER_STSI");
/// `KVM_CAP_S390_INJECT_IRQ`: `KVM_S390_IRQ` on vCPU fds.
pub const S390_INJECT_IRQ: Capability = Capability::new(113, "KVM_CAP_S390_INJECT_IRQ");
/// `KVM_CAP_S390_VCPU_RESETS`: `KVM_S390_NORMAL_RESET` and `KVM_S390_CLEAR_RESET`.
pub const S390_VCPU_RESETS: Capability = Capability::new(179, "KVM_CAP_S390_VCPU_RESETS");

/// Every capability this crate relies on, generic and s390x-only, for the
/// header check.
///
/// ```
/// let names: Vec<&str> = kvmkit_arch_s390x::caps::all().iter().map(|c| c.name()).collect();
/// assert!(names.contains(&"KVM_CAP_S390_IRQCHIP"));
/// ```
pub fn all() -> Vec<Capability> {
    vec![
        Capability::USER_MEMORY,
        Capability::SET_GUEST_DEBUG,
        Capability::IRQ_ROUTING,
        Capability::IRQFD,
        Capability::S390_PSW,
        Capability::ENABLE_CAP,
        Capability::ONE_REG,
        Capability::SYNC_REGS,
        Capability::DEVICE_CTRL,
        Capability::ENABLE_CAP_VM,
        Capability::S390_IRQCHIP,
        Capability::CHECK_EXTENSION_VM,
        Capability::MAX_VCPU_ID,
        Capability::MAX_VCPUS,
        Capability::NR_VCPUS,
        Capability::IMMEDIATE_EXIT,
        Capability::MANUAL_DIRTY_LOG_PROTECT2,
        Capability::DIRTY_LOG_RING,
        Capability::DIRTY_LOG_RING_ACQ_REL,
        S390_UCONTROL,
        S390_USER_SIGP,
        S390_USER_STSI,
        S390_INJECT_IRQ,
        S390_VCPU_RESETS,
    ]
}
