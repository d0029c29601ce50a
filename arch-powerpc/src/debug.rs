//! Building PowerPC's `kvm_guest_debug`.

use crate::uapi::*;

/// The kinds of hardware debug events (`KVMPPC_DEBUG_*`).
///
/// ```
/// use kvmkit_arch_powerpc::{GuestDebugBuilder, HwBreakpoint};
/// let d = GuestDebugBuilder::new().hw_breakpoint(0x40, HwBreakpoint::Execute).unwrap().build();
/// assert_eq!((d.arch.bp[0].addr, d.arch.bp[0].type_), (0x40, 2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HwBreakpoint {
    /// Break on executing the address.
    Execute,
    /// Break on reading it.
    WatchRead,
    /// Break on writing it.
    WatchWrite,
    /// Break on reading or writing it.
    WatchReadWrite,
}

/// Builds the argument of `KVM_SET_GUEST_DEBUG` for PowerPC.
///
/// Software breakpoints (`KVM_GUESTDBG_USE_SW_BP`): the debugger writes the
/// instruction KVM reports in `KVM_REG_PPC_DEBUG_INST` at the address; KVM
/// exits with `KVM_EXIT_DEBUG` when the guest executes it (Book3S HV and PR).
/// Hardware breakpoints and watchpoints (`bp[]`) are BookE's; at most 16.
///
/// ```
/// use kvmkit_arch_powerpc::{GuestDebugBuilder, HwBreakpoint, uapi::*};
/// let d = GuestDebugBuilder::new().software_breakpoints().build();
/// assert_eq!(d.control as u64, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP);
/// let d = GuestDebugBuilder::new().hw_breakpoint(0x1000, HwBreakpoint::WatchWrite).unwrap().build();
/// assert_eq!(d.arch.bp[0].type_ as u64, KVMPPC_DEBUG_WATCH_WRITE);
/// ```
#[derive(Clone, Debug, Default)]
pub struct GuestDebugBuilder {
    single_step: bool,
    software: bool,
    hw: Vec<(u64, HwBreakpoint)>,
}

fn u32_of(v: u64) -> u32 {
    u32::try_from(v).expect("guest-debug flags fit 32 bits")
}

impl GuestDebugBuilder {
    /// Nothing enabled: `build` returns all zero (debugging off).
    pub fn new() -> Self {
        Self::default()
    }

    /// Single-step (`KVM_GUESTDBG_SINGLESTEP`; KVM-PR and BookE).
    #[must_use]
    pub fn single_step(mut self) -> Self {
        self.single_step = true;
        self
    }

    /// Software breakpoints (`KVM_GUESTDBG_USE_SW_BP`).
    #[must_use]
    pub fn software_breakpoints(mut self) -> Self {
        self.software = true;
        self
    }

    /// Adds a hardware breakpoint or watchpoint; the 17th is refused.
    pub fn hw_breakpoint(mut self, addr: u64, kind: HwBreakpoint) -> Result<Self, Self> {
        if self.hw.len() >= 16 {
            return Err(self);
        }
        self.hw.push((addr, kind));
        Ok(self)
    }

    /// The ioctl argument.
    pub fn build(&self) -> kvm_guest_debug {
        let mut d = kvm_guest_debug::default();
        if !self.single_step && !self.software && self.hw.is_empty() {
            return d;
        }
        let mut control = KVM_GUESTDBG_ENABLE;
        if self.single_step {
            control |= KVM_GUESTDBG_SINGLESTEP;
        }
        if self.software {
            control |= KVM_GUESTDBG_USE_SW_BP;
        }
        if !self.hw.is_empty() {
            control |= KVM_GUESTDBG_USE_HW_BP;
        }
        d.control = u32_of(control);
        for (slot, &(addr, kind)) in d.arch.bp.iter_mut().zip(&self.hw) {
            slot.addr = addr;
            slot.type_ = u32_of(match kind {
                HwBreakpoint::Execute => KVMPPC_DEBUG_BREAKPOINT,
                HwBreakpoint::WatchRead => KVMPPC_DEBUG_WATCH_READ,
                HwBreakpoint::WatchWrite => KVMPPC_DEBUG_WATCH_WRITE,
                HwBreakpoint::WatchReadWrite => KVMPPC_DEBUG_WATCH_READ | KVMPPC_DEBUG_WATCH_WRITE,
            });
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_sixteen_max() {
        assert_eq!(GuestDebugBuilder::new().build(), kvm_guest_debug::default());
        let mut b = GuestDebugBuilder::new().single_step();
        for i in 0..16 {
            b = b.hw_breakpoint(i * 4, HwBreakpoint::Execute).unwrap();
        }
        assert!(b.clone().hw_breakpoint(0, HwBreakpoint::WatchRead).is_err());
        let d = b.clone().build();
        assert_eq!(
            u64::from(d.control),
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP | KVM_GUESTDBG_USE_HW_BP
        );
        assert_eq!(d.arch.bp[15].addr, 60);
        let d = GuestDebugBuilder::new()
            .hw_breakpoint(8, HwBreakpoint::WatchReadWrite)
            .unwrap()
            .hw_breakpoint(9, HwBreakpoint::WatchRead)
            .unwrap()
            .build();
        assert_eq!(u64::from(d.arch.bp[0].type_), 12);
        assert_eq!(u64::from(d.arch.bp[1].type_), KVMPPC_DEBUG_WATCH_READ);
        // A write watchpoint: the kernel's type 4, with HW breakpoints on.
        let d = GuestDebugBuilder::new()
            .hw_breakpoint(0x7000, HwBreakpoint::WatchWrite)
            .unwrap()
            .build();
        assert_eq!(u64::from(d.arch.bp[0].type_), KVMPPC_DEBUG_WATCH_WRITE);
        assert_eq!(KVMPPC_DEBUG_WATCH_WRITE, 4);
        assert_eq!(d.arch.bp[0].addr, 0x7000);
        assert_eq!(
            u64::from(d.control),
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP
        );
        let d = GuestDebugBuilder::new().software_breakpoints().build();
        assert_eq!(
            u64::from(d.control),
            KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP
        );
    }
}
