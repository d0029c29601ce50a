//! What the run loop tells the VM's owner.

use kvmkit_core::{SystemEventKind, VcpuId};

/// Something a vCPU did that its owner must know about.
///
/// Guest behaviour is an event, never an error and never a panic. Events marked
/// *final* end the vCPU's thread; the others are reports and the vCPU goes on.
#[derive(Debug)]
#[non_exhaustive]
pub enum VcpuEvent {
    /// The guest executed `hlt` with no in-kernel LAPIC to wait for
    /// interrupts. Final.
    Halted,
    /// The guest shut down (`KVM_EXIT_SHUTDOWN`; on x86 a triple fault). Final.
    Shutdown,
    /// The guest asked for power-off, reset or similar. Final.
    SystemEvent {
        /// What it asked for.
        kind: SystemEventKind,
        /// The event's first data word.
        flags: u64,
    },
    /// KVM could not handle an exit (e.g. emulation failure). Final.
    InternalError {
        /// `KVM_INTERNAL_ERROR_*`.
        suberror: u32,
        /// The first data words KVM gave.
        data: Vec<u64>,
    },
    /// Entering the guest failed. Final.
    FailEntry {
        /// The hardware reason.
        reason: u64,
    },
    /// The arch hook ended the vCPU. Final.
    ArchStop {
        /// Why.
        reason: String,
    },
    /// The vCPU's dirty ring is full and the hook that empties it is missing
    /// ([`crate::NO_DIRTY_RING_HOOK`]) or failed. Final: the vCPU cannot
    /// run again before its ring is harvested and reset.
    DirtyRingFull {
        /// Why the ring could not be emptied, with the hook error's causes.
        reason: String,
    },
    /// `KVM_RUN` or exit decoding failed. Final.
    Error(kvmkit_core::Error),
    /// The vCPU stopped because [`crate::RunLoop::stop`] asked it to. Final.
    Stopped,
    /// A guest-debug exit (single step, breakpoint): the vCPU waits as if
    /// paused until [`crate::RunLoop::resume`].
    Debug {
        /// The guest program counter.
        pc: u64,
    },
    /// The guest touched an address no device claims; reads got all ones.
    /// Reported for the first few per vCPU, then only counted.
    UnhandledAccess {
        /// `"mmio"`, or the arch's space (`"pio"`…).
        space: &'static str,
        /// The address.
        addr: u64,
        /// Whether it was a write.
        write: bool,
    },
    /// The guest exited for a reason the decoder does not know; the vCPU goes on.
    UnknownExit {
        /// The raw `exit_reason`.
        reason: u32,
    },
}

impl VcpuEvent {
    /// True when the event ends the vCPU's thread.
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            VcpuEvent::Debug { .. }
                | VcpuEvent::UnhandledAccess { .. }
                | VcpuEvent::UnknownExit { .. }
        )
    }
}

/// An event with the vCPU it came from and, for final events, the guest's
/// program counter at that moment (when it could be read).
#[derive(Debug)]
pub struct VcpuReport {
    /// The vCPU.
    pub vcpu: VcpuId,
    /// What happened.
    pub event: VcpuEvent,
    /// The guest program counter, for final events.
    pub pc: Option<u64>,
}
