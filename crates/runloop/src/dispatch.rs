//! Turning one decoded exit into bus accesses and events.

use crate::{Buses, VcpuEvent, NO_DIRTY_RING_HOOK};
use kvmkit_core::{Arch, ArchExitOutcome, VcpuExit};

/// What the run loop does after an exit.
#[derive(Debug)]
#[non_exhaustive]
pub enum Dispatch {
    /// Handled: enter the guest again.
    Continue,
    /// The vCPU was kicked: check the control state, then enter again.
    Interrupted,
    /// Report this (non-final) event and enter again.
    Report(VcpuEvent),
    /// A guest-debug exit at this program counter: report it and wait.
    Debug(u64),
    /// Report this final event and end the vCPU.
    Final(VcpuEvent),
    /// The vCPU's dirty ring is full and a hook is installed: call
    /// [`Buses::dirty_ring_full`] with the vCPU's id and enter again only
    /// when it succeeded (on failure, end the vCPU with
    /// [`VcpuEvent::DirtyRingFull`]).
    DirtyRingFull,
}

/// Dispatches one exit: MMIO to `buses.mmio`, arch-only exits to the arch
/// hook with `buses.arch`, the rest to events.
///
/// A full dirty ring becomes [`Dispatch::DirtyRingFull`] when `buses` has a
/// hook to empty it, else the final [`VcpuEvent::DirtyRingFull`]: entering
/// again with a full ring would only exit again.
///
/// ```
/// use kvmkit_arch_x86_64::X86_64;
/// use kvmkit_core::VcpuExit;
/// use kvmkit_runloop::{dispatch_exit, Buses, Dispatch, VcpuEvent};
/// let buses = Buses::<X86_64>::default();
/// let mut data = [0u8; 4];
/// let d = dispatch_exit(VcpuExit::MmioRead { addr: 0x1000, data: &mut data }, &buses);
/// assert!(matches!(d, Dispatch::Report(VcpuEvent::UnhandledAccess { space: "mmio", addr: 0x1000, write: false })));
/// assert_eq!(data, [0xff; 4]);
/// assert!(matches!(dispatch_exit::<X86_64>(VcpuExit::Hlt, &buses), Dispatch::Final(VcpuEvent::Halted)));
/// ```
pub fn dispatch_exit<A: Arch>(exit: VcpuExit<'_, A>, buses: &Buses<A>) -> Dispatch {
    match exit {
        VcpuExit::MmioRead { addr, data } => {
            if buses.mmio.read(addr, data) {
                Dispatch::Continue
            } else {
                unhandled("mmio", addr, false)
            }
        }
        VcpuExit::MmioWrite { addr, data } => {
            if buses.mmio.write(addr, data) {
                Dispatch::Continue
            } else {
                unhandled("mmio", addr, true)
            }
        }
        VcpuExit::Arch(exit) => match A::handle_arch_exit(&buses.arch, exit) {
            ArchExitOutcome::Handled => Dispatch::Continue,
            ArchExitOutcome::Unhandled { space, addr, write } => unhandled(space, addr, write),
            ArchExitOutcome::Stop { reason } => Dispatch::Final(VcpuEvent::ArchStop { reason }),
            ArchExitOutcome::SystemEvent { kind } => {
                Dispatch::Final(VcpuEvent::SystemEvent { kind, flags: 0 })
            }
            _ => Dispatch::Continue,
        },
        VcpuExit::Interrupted => Dispatch::Interrupted,
        VcpuExit::IrqWindowOpen => Dispatch::Continue,
        VcpuExit::Hlt => Dispatch::Final(VcpuEvent::Halted),
        VcpuExit::Shutdown => Dispatch::Final(VcpuEvent::Shutdown),
        VcpuExit::SystemEvent { kind, flags } => {
            Dispatch::Final(VcpuEvent::SystemEvent { kind, flags })
        }
        VcpuExit::InternalError {
            suberror,
            ndata,
            data,
        } => Dispatch::Final(VcpuEvent::InternalError {
            suberror,
            data: data[..data.len().min(ndata as usize)].to_vec(),
        }),
        VcpuExit::FailEntry { reason, .. } => Dispatch::Final(VcpuEvent::FailEntry { reason }),
        VcpuExit::Debug { pc } => Dispatch::Debug(pc),
        VcpuExit::DirtyRingFull => {
            if buses.has_dirty_ring_full() {
                Dispatch::DirtyRingFull
            } else {
                Dispatch::Final(VcpuEvent::DirtyRingFull {
                    reason: NO_DIRTY_RING_HOOK.to_string(),
                })
            }
        }
        VcpuExit::Unknown { reason } => Dispatch::Report(VcpuEvent::UnknownExit { reason }),
        _ => Dispatch::Continue,
    }
}

fn unhandled(space: &'static str, addr: u64, write: bool) -> Dispatch {
    Dispatch::Report(VcpuEvent::UnhandledAccess { space, addr, write })
}
