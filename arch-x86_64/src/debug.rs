//! Guest debugging: single step and hardware breakpoints.

use kvm_bindings::{
    kvm_guest_debug, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP,
};

/// Builds the `kvm_guest_debug` argument of `KVM_SET_GUEST_DEBUG`.
///
/// ```
/// use kvmkit_arch_x86_64::GuestDebugBuilder;
/// let d = GuestDebugBuilder::new().single_step(true).hw_breakpoint(0x1000).unwrap().build();
/// assert_eq!(d.control & 0x3, 0x3);
/// assert_eq!(d.arch.debugreg[0], 0x1000);
/// assert_eq!(d.arch.debugreg[7] & 1, 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct GuestDebugBuilder {
    single_step: bool,
    breakpoints: Vec<u64>,
}

impl GuestDebugBuilder {
    /// Debugging off.
    pub fn new() -> Self {
        Self::default()
    }

    /// Exit after every guest instruction.
    pub fn single_step(mut self, on: bool) -> Self {
        self.single_step = on;
        self
    }

    /// Adds an execution breakpoint at a guest linear address; at most four
    /// (DR0–DR3), the fifth is refused.
    pub fn hw_breakpoint(mut self, addr: u64) -> Result<Self, Self> {
        if self.breakpoints.len() >= 4 {
            return Err(self);
        }
        self.breakpoints.push(addr);
        Ok(self)
    }

    /// The ioctl argument; all zero (debugging off) when nothing was asked.
    pub fn build(&self) -> kvm_guest_debug {
        let mut d = kvm_guest_debug::default();
        if !self.single_step && self.breakpoints.is_empty() {
            return d;
        }
        d.control = KVM_GUESTDBG_ENABLE;
        if self.single_step {
            d.control |= KVM_GUESTDBG_SINGLESTEP;
        }
        if !self.breakpoints.is_empty() {
            d.control |= KVM_GUESTDBG_USE_HW_BP;
            let mut dr7 = 1u64 << 10; // reserved, reads as one
            for (i, &a) in self.breakpoints.iter().enumerate() {
                d.arch.debugreg[i] = a;
                dr7 |= 1 << (2 * i); // Ln: local enable; RW=00 (execute), LEN=00
            }
            d.arch.debugreg[7] = dr7;
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_four_breakpoints_max() {
        assert_eq!(GuestDebugBuilder::new().build().control, 0);
        let mut b = GuestDebugBuilder::new();
        for a in 0..4 {
            b = b.hw_breakpoint(a * 16).unwrap();
        }
        assert!(b.clone().hw_breakpoint(0x100).is_err());
        let d = b.build();
        assert_eq!(d.control, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP);
        assert_eq!(d.arch.debugreg[7], 0x455);
        assert_eq!(d.arch.debugreg[3], 48);
    }
}
