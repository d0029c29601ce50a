//! The generic vCPU handle.

use crate::kick::{install_handler, KickShared};
use crate::{
    kick_signal, Arch, Error, Kicker, Result, RunOutcome, VcpuExit, VcpuId,
    KVM_RUN_IMMEDIATE_EXIT_OFFSET,
};
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// Something the run loop can run: a KVM [`Vcpu`], or a scripted backend in tests.
pub trait RunVcpu<A: Arch>: Send {
    /// The vCPU id.
    fn id(&self) -> VcpuId;
    /// Enters the guest until the next exit and returns it decoded.
    fn run(&mut self) -> Result<VcpuExit<'_, A>>;
    /// A handle that makes the current or next `run` return
    /// [`VcpuExit::Interrupted`].
    fn kicker(&self) -> Kicker;
    /// The guest's program counter, for reports about where it stopped.
    fn program_counter(&self) -> Result<u64>;
}

/// The `immediate_exit` byte of a vCPU's own `kvm_run` mapping.
struct ImmediateExit(NonNull<u8>);

// SAFETY: the pointer targets the vCPU's kvm_run mapping, which moves with the
// `Vcpu` that owns both; it is only accessed atomically.
unsafe impl Send for ImmediateExit {}

/// A vCPU of a [`crate::Vm`], generic over the architecture.
///
/// Register access goes through the architecture's own types; [`Vcpu::run`]
/// returns the decoded exit. See the crate docs for an example.
pub struct Vcpu<A: Arch> {
    id: VcpuId,
    fd: A::VcpuFd,
    kick: Arc<KickShared>,
    immediate_exit: ImmediateExit,
    /// The thread kicks currently go to (set by `run`).
    bound_thread: Option<libc::pthread_t>,
}

impl<A: Arch> fmt::Debug for Vcpu<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vcpu")
            .field("arch", &A::NAME)
            .field("id", &self.id)
            .field("fd", &self.fd)
            .finish()
    }
}

impl<A: Arch> Vcpu<A> {
    pub(crate) fn new(id: VcpuId, mut fd: A::VcpuFd) -> Result<Self> {
        install_handler().map_err(|source| Error::KickSignal {
            signal: kick_signal(),
            source,
        })?;
        let run = A::kvm_run(&mut fd);
        let ptr = run
            .get_mut(KVM_RUN_IMMEDIATE_EXIT_OFFSET)
            .map(NonNull::from)
            .ok_or(Error::DecodeExit {
                vcpu: id.0,
                source: crate::DecodeError::Truncated {
                    reason: 0,
                    len: run.len(),
                    needed: KVM_RUN_IMMEDIATE_EXIT_OFFSET + 1,
                },
            })?;
        Ok(Vcpu {
            id,
            fd,
            kick: Arc::default(),
            immediate_exit: ImmediateExit(ptr),
            bound_thread: None,
        })
    }

    /// The vCPU id.
    pub fn id(&self) -> VcpuId {
        self.id
    }

    /// The arch backend's vCPU fd, for arch-only calls (e.g. x86 MSRs).
    pub fn arch_fd(&self) -> &A::VcpuFd {
        &self.fd
    }

    /// Wraps `KVM_GET_REGS`.
    pub fn get_regs(&self) -> Result<A::Regs> {
        A::get_regs(&self.fd).map_err(Error::arch)
    }

    /// Wraps `KVM_SET_REGS`.
    pub fn set_regs(&self, regs: &A::Regs) -> Result<()> {
        A::set_regs(&self.fd, regs).map_err(Error::arch)
    }

    /// Wraps `KVM_GET_SREGS`.
    pub fn get_sregs(&self) -> Result<A::Sregs> {
        A::get_sregs(&self.fd).map_err(Error::arch)
    }

    /// Wraps `KVM_SET_SREGS`.
    pub fn set_sregs(&self, sregs: &A::Sregs) -> Result<()> {
        A::set_sregs(&self.fd, sregs).map_err(Error::arch)
    }

    /// Wraps `KVM_GET_FPU`.
    pub fn get_fpu(&self) -> Result<A::Fpu> {
        A::get_fpu(&self.fd).map_err(Error::arch)
    }

    /// Wraps `KVM_SET_FPU`.
    pub fn set_fpu(&self, fpu: &A::Fpu) -> Result<()> {
        A::set_fpu(&self.fd, fpu).map_err(Error::arch)
    }

    /// The guest's program counter (x86 RIP, PowerPC NIP, s390x PSW address).
    pub fn program_counter(&self) -> Result<u64> {
        A::program_counter(&self.fd).map_err(Error::arch)
    }

    /// Wraps `KVM_GET_ONE_REG`: reads register `id` into `data`, returns its size.
    pub fn get_one_reg(&self, id: u64, data: &mut [u8]) -> Result<usize> {
        A::get_one_reg(&self.fd, id, data).map_err(Error::arch)
    }

    /// Wraps `KVM_SET_ONE_REG`: writes register `id` from `data`, returns its size.
    pub fn set_one_reg(&self, id: u64, data: &[u8]) -> Result<usize> {
        A::set_one_reg(&self.fd, id, data).map_err(Error::arch)
    }

    /// Wraps `KVM_SET_GUEST_DEBUG`.
    pub fn set_guest_debug(&self, debug: &A::GuestDebug) -> Result<()> {
        A::set_guest_debug(&self.fd, debug).map_err(Error::arch)
    }

    /// Saves all of this vCPU's state.
    pub fn save_state(&self) -> Result<A::VcpuState> {
        A::save_vcpu_state(&self.fd).map_err(Error::arch)
    }

    /// Restores state saved by [`Vcpu::save_state`].
    pub fn restore_state(&self, state: &A::VcpuState) -> Result<()> {
        A::restore_vcpu_state(&self.fd, state).map_err(Error::arch)
    }

    /// Writes the boot structures into `mem` and points the vCPU at the entry.
    pub fn setup_boot<M: vm_memory::GuestMemory>(
        &self,
        mem: &M,
        boot: &A::BootSetup,
    ) -> Result<()> {
        A::setup_boot(&self.fd, mem, boot).map_err(Error::arch)
    }

    /// A handle that kicks this vCPU out of `KVM_RUN` from any thread.
    pub fn kicker(&self) -> Kicker {
        Kicker::from_shared(self.kick.clone())
    }

    /// Wraps `KVM_RUN`: enters the guest and returns the decoded exit.
    ///
    /// A kick makes it return [`VcpuExit::Interrupted`], also when the kick
    /// came before the call. A kick that came while the caller was handling
    /// an exit still enters `KVM_RUN`, with `kvm_run.immediate_exit` set:
    /// the kernel first finishes that exit's I/O (an `in` or MMIO read gets
    /// the data the caller put in `kvm_run`, the guest moves past an `out`,
    /// a PowerPC hypercall gets its return values) and then returns `EINTR`
    /// without running the guest. So a vCPU stopped by a kick is never left
    /// halfway through an instruction. (If finishing the I/O needs another
    /// exit, as a `rep ins` does on x86, that exit is returned first and the
    /// kick stays pending for the next call.)
    pub fn run(&mut self) -> Result<VcpuExit<'_, A>> {
        let ie = self.immediate_exit.0.as_ptr();
        let me = crate::sys::current_thread();
        if self.bound_thread != Some(me) || !KickShared::handler_points_at(ie) {
            // SAFETY: `ie` points into `self.fd`'s kvm_run mapping, which lives
            // as long as `self`; `Drop` unbinds before the mapping goes.
            unsafe { self.kick.bind_current_thread(ie) };
            self.bound_thread = Some(me);
        }
        if self.kick.is_pending() {
            // The signal may not have reached this thread yet (or reached
            // it while it was bound to another vCPU): make sure the kernel
            // sees the kick at entry.
            self.immediate_exit().store(1, Ordering::SeqCst);
        }
        match A::run(&mut self.fd).map_err(Error::arch)? {
            RunOutcome::Interrupted => {
                self.consume_kick();
                Ok(VcpuExit::Interrupted)
            }
            RunOutcome::Exited => {
                let id = self.id.0;
                A::decode_exit(A::kvm_run(&mut self.fd))
                    .map_err(|source| Error::DecodeExit { vcpu: id, source })
            }
        }
    }
}

impl<A: Arch> Vcpu<A> {
    /// This vCPU's `kvm_run.immediate_exit`.
    fn immediate_exit(&self) -> &AtomicU8 {
        // SAFETY: a valid u8 in this vCPU's kvm_run mapping, which lives as
        // long as `self` (and so outlives the returned borrow); it is only
        // accessed atomically, here and by the kick signal handler.
        unsafe { AtomicU8::from_ptr(self.immediate_exit.0.as_ptr()) }
    }

    /// Clears `immediate_exit`, then the pending mark: a kick racing with this
    /// leaves at least one of them set, so it is seen before the next entry.
    fn consume_kick(&self) {
        self.immediate_exit().store(0, Ordering::SeqCst);
        self.kick.take_pending();
    }
}

impl<A: Arch> RunVcpu<A> for Vcpu<A> {
    fn id(&self) -> VcpuId {
        self.id
    }

    fn run(&mut self) -> Result<VcpuExit<'_, A>> {
        Vcpu::run(self)
    }

    fn kicker(&self) -> Kicker {
        Vcpu::kicker(self)
    }

    fn program_counter(&self) -> Result<u64> {
        Vcpu::program_counter(self)
    }
}

impl<A: Arch> Drop for Vcpu<A> {
    fn drop(&mut self) {
        self.kick.unbind(self.immediate_exit.0.as_ptr());
    }
}
