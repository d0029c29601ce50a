//! Guest debugging on s390x: single step and PER-based breakpoints.

use crate::uapi::{
    kvm_hw_breakpoint, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP,
    KVM_HW_BP, KVM_HW_WP_WRITE,
};

/// The argument of `KVM_SET_GUEST_DEBUG` for s390x (`Arch::GuestDebug`):
/// the control bits and the breakpoint array `kvm_guest_debug_arch.hw_bp`
/// points at while the ioctl runs.
///
/// KVM implements them with PER (program-event recording): instruction
/// fetch ranges for breakpoints, storage-alteration ranges for write
/// watchpoints.
///
/// ```
/// use kvmkit_arch_s390x::GuestDebug;
/// let d = GuestDebug::new().single_step(true).hw_breakpoint(0x10000);
/// assert_eq!(d.control(), 0x0001_0003); // ENABLE | SINGLESTEP | USE_HW_BP
/// assert_eq!(d.breakpoints().len(), 1);
/// assert_eq!(GuestDebug::new().control(), 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestDebug {
    single_step: bool,
    breakpoints: Vec<kvm_hw_breakpoint>,
}

impl GuestDebug {
    /// Debugging off.
    pub fn new() -> Self {
        Self::default()
    }

    /// Exit after every guest instruction.
    #[must_use]
    pub fn single_step(mut self, on: bool) -> Self {
        self.single_step = on;
        self
    }

    /// Adds an instruction breakpoint at a guest address (KVM allows 50
    /// breakpoints and watchpoints in all; it refuses more).
    #[must_use]
    pub fn hw_breakpoint(mut self, addr: u64) -> Self {
        self.breakpoints.push(kvm_hw_breakpoint {
            addr,
            phys_addr: addr,
            len: 1,
            type_: KVM_HW_BP,
            pad: [0; 7],
        });
        self
    }

    /// Adds a write watchpoint over `len` bytes at `addr`; `phys_addr` is
    /// `addr`, right while the guest runs without DAT (as at boot).
    #[must_use]
    pub fn write_watchpoint(mut self, addr: u64, len: u64) -> Self {
        self.breakpoints.push(kvm_hw_breakpoint {
            addr,
            phys_addr: addr,
            len,
            type_: KVM_HW_WP_WRITE,
            pad: [0; 7],
        });
        self
    }

    /// `kvm_guest_debug.control`: 0 when nothing was asked.
    pub fn control(&self) -> u32 {
        if !self.single_step && self.breakpoints.is_empty() {
            return 0;
        }
        let mut c = KVM_GUESTDBG_ENABLE;
        if self.single_step {
            c |= KVM_GUESTDBG_SINGLESTEP;
        }
        if !self.breakpoints.is_empty() {
            c |= KVM_GUESTDBG_USE_HW_BP;
        }
        c
    }

    /// The breakpoints and watchpoints, in the kernel's format.
    pub fn breakpoints(&self) -> &[kvm_hw_breakpoint] {
        &self.breakpoints
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchpoints_and_breakpoints() {
        let d = GuestDebug::new().write_watchpoint(0x2000, 8);
        assert_eq!(d.control(), KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP);
        assert_eq!(d.breakpoints()[0].type_, KVM_HW_WP_WRITE);
        assert_eq!(d.breakpoints()[0].len, 8);
        let d = GuestDebug::new().single_step(true);
        assert_eq!(d.control(), KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP);
        assert_eq!(d.clone().single_step(false).control(), 0);
        let d = GuestDebug::new()
            .hw_breakpoint(0x1_0000)
            .hw_breakpoint(0x1_0010);
        assert_eq!(d.breakpoints().len(), 2);
        assert_eq!(d.breakpoints()[1].type_, KVM_HW_BP);
        assert_eq!(d.control(), KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP);
    }
}
