//! The saved state of an x86_64 vCPU.

use kvm_bindings::{
    kvm_debugregs, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_regs, kvm_sregs, kvm_vcpu_events,
};

/// Everything `Arch::save_vcpu_state` reads from an x86_64 vCPU.
#[derive(Clone, Debug, Default)]
pub struct X86VcpuState {
    /// General-purpose registers.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers.
    pub sregs: kvm_sregs,
    /// x87 / SSE state.
    pub fpu: kvm_fpu,
    /// MSRs that read back, as (index, value).
    pub msrs: Vec<(u32, u64)>,
    /// The in-kernel LAPIC, when the VM has one.
    pub lapic: Option<kvm_lapic_state>,
    /// Runnable, halted, waiting for SIPI…
    pub mp_state: Option<kvm_mp_state>,
    /// Pending exceptions, interrupts, NMIs.
    pub vcpu_events: Option<kvm_vcpu_events>,
    /// Debug registers.
    pub debugregs: Option<kvm_debugregs>,
}
