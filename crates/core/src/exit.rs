//! The typed exit of `KVM_RUN`.

use crate::Arch;

/// Why a vCPU left `KVM_RUN`, decoded from its `kvm_run` area by the arch backend.
///
/// The portable exits (MMIO, HLT, shutdown, system events, errors) are variants
/// of their own; exits only one architecture has (x86 port I/O, PowerPC
/// hypercalls, s390x SIE intercepts) are carried in [`VcpuExit::Arch`] as the
/// arch's own type and handled by [`Arch::handle_arch_exit`].
#[derive(Debug)]
#[non_exhaustive]
pub enum VcpuExit<'a, A: Arch> {
    /// A guest read of MMIO space: fill `data`, it is returned to the guest.
    MmioRead {
        /// The guest physical address.
        addr: u64,
        /// The bytes to fill (1 to 8).
        data: &'a mut [u8],
    },
    /// A guest write to MMIO space (or to a read-only memory slot).
    MmioWrite {
        /// The guest physical address.
        addr: u64,
        /// The bytes written (1 to 8).
        data: &'a [u8],
    },
    /// The guest halted (`KVM_EXIT_HLT`; only without an in-kernel LAPIC on x86).
    Hlt,
    /// The guest shut down (`KVM_EXIT_SHUTDOWN`; on x86 a triple fault).
    Shutdown,
    /// The guest asked for a system event (`KVM_EXIT_SYSTEM_EVENT`).
    SystemEvent {
        /// The event kind.
        kind: SystemEventKind,
        /// The first data word (the legacy `flags`), 0 when absent.
        flags: u64,
    },
    /// KVM failed to handle the exit itself (`KVM_EXIT_INTERNAL_ERROR`).
    InternalError {
        /// `KVM_INTERNAL_ERROR_*` sub-error.
        suberror: u32,
        /// How many data words the kernel gave.
        ndata: u32,
        /// The first data words.
        data: [u64; 4],
    },
    /// Entering the guest failed (`KVM_EXIT_FAIL_ENTRY`).
    FailEntry {
        /// The hardware failure reason.
        reason: u64,
        /// The host CPU it happened on.
        cpu: u32,
    },
    /// A guest-debug event: single step or breakpoint (`KVM_EXIT_DEBUG`).
    Debug {
        /// The guest program counter (x86 RIP, PowerPC NIP, s390x PSW address).
        pc: u64,
    },
    /// The vCPU's dirty ring is full or past its soft limit
    /// (`KVM_EXIT_DIRTY_RING_FULL`): harvest the rings and call
    /// `KVM_RESET_DIRTY_RINGS` before running it again, or it exits again.
    DirtyRingFull,
    /// The guest can take an interrupt now (`KVM_EXIT_IRQ_WINDOW_OPEN`).
    IrqWindowOpen,
    /// `KVM_RUN` returned early because the vCPU was kicked (EINTR or
    /// `immediate_exit`), or the kernel asked to re-enter (`KVM_EXIT_INTR`).
    Interrupted,
    /// An exit only this architecture has.
    Arch(A::ArchExit<'a>),
    /// An exit reason this decoder does not know.
    Unknown {
        /// The raw `exit_reason`.
        reason: u32,
    },
}

/// `KVM_SYSTEM_EVENT_*`: what the guest asked the platform for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum SystemEventKind {
    /// Power off.
    Shutdown,
    /// Reset.
    Reset,
    /// The guest crashed.
    Crash,
    /// Wake-up from suspend.
    Wakeup,
    /// Suspend.
    Suspend,
    /// Another kind.
    Other(u32),
}

impl SystemEventKind {
    /// Decodes the `type` field of `kvm_run.system_event`.
    ///
    /// ```
    /// use kvmkit_core::SystemEventKind;
    /// assert_eq!(SystemEventKind::from_raw(2), SystemEventKind::Reset);
    /// assert_eq!(SystemEventKind::from_raw(99), SystemEventKind::Other(99));
    /// ```
    pub fn from_raw(raw: u32) -> Self {
        match raw {
            1 => SystemEventKind::Shutdown,
            2 => SystemEventKind::Reset,
            3 => SystemEventKind::Crash,
            4 => SystemEventKind::Wakeup,
            5 => SystemEventKind::Suspend,
            n => SystemEventKind::Other(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_event_types_decode_as_the_uapi_numbers_them() {
        // KVM_SYSTEM_EVENT_SHUTDOWN 1, _RESET 2, _CRASH 3, _WAKEUP 4,
        // _SUSPEND 5 (linux/kvm.h); others (_SEV_TERM 6, newer ones) are
        // kept by number.
        let kinds: Vec<SystemEventKind> = (0..=7).map(SystemEventKind::from_raw).collect();
        assert_eq!(
            kinds,
            [
                SystemEventKind::Other(0),
                SystemEventKind::Shutdown,
                SystemEventKind::Reset,
                SystemEventKind::Crash,
                SystemEventKind::Wakeup,
                SystemEventKind::Suspend,
                SystemEventKind::Other(6),
                SystemEventKind::Other(7),
            ]
        );
        assert_eq!(
            SystemEventKind::from_raw(u32::MAX),
            SystemEventKind::Other(u32::MAX)
        );
    }
}
