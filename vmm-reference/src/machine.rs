//! The reference VMM's side of the QMP seam: [`qmp::Machine`] on top of
//! the machine loop's control channel, the ACPI power button, the vCPU
//! threads and guest memory.

use crate::core::{ControlRequest, MachineStatus, RunStatus, PAUSE_TIMEOUT};
use crate::devices::{AcpiPm, LevelIrq};
use crate::qmp::{self, DirtyRateMode, MachineError, QapiEnum, RunState, VcpuInfo};
use kvmkit_core::{RunVcpu, VcpuExit, VcpuId};
use kvmkit_irq::InterruptController;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vm_memory::GuestMemoryMmap;

/// A GSI driven through an interrupt controller: the ACPI SCI.
pub(crate) struct GsiLine {
    pub(crate) irq: Arc<dyn InterruptController>,
    pub(crate) gsi: u32,
}

impl std::fmt::Debug for GsiLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GsiLine")
            .field("controller", &self.irq.name())
            .field("gsi", &self.gsi)
            .finish()
    }
}

impl LevelIrq for GsiLine {
    fn set_level(&self, level: bool) {
        if let Err(e) = self.irq.set_irq(self.gsi, level) {
            // The guest cannot be told; the host can.
            eprintln!("vmm-reference: cannot set GSI {} to {level}: {e}", self.gsi);
        }
    }
}

/// A vCPU that records the host thread running it (for `query-cpus-fast`).
pub(crate) struct ThreadTracked<V> {
    pub(crate) vcpu: V,
    pub(crate) tid: Arc<AtomicI64>,
}

fn gettid() -> i64 {
    // SAFETY: gettid has no arguments and cannot fail; it only returns
    // the calling thread's id.
    i64::from(unsafe { libc::gettid() })
}

impl<A: kvmkit_core::Arch, V: RunVcpu<A>> RunVcpu<A> for ThreadTracked<V> {
    fn id(&self) -> VcpuId {
        self.vcpu.id()
    }

    fn run(&mut self) -> kvmkit_core::Result<VcpuExit<'_, A>> {
        if self.tid.load(Ordering::Relaxed) == 0 {
            self.tid.store(gettid(), Ordering::Relaxed);
        }
        self.vcpu.run()
    }

    fn kicker(&self) -> kvmkit_core::Kicker {
        self.vcpu.kicker()
    }

    fn program_counter(&self) -> kvmkit_core::Result<u64> {
        self.vcpu.program_counter()
    }
}

/// How long `query-cpus-fast` waits for a vCPU thread that has not entered
/// the guest yet (only right after start).
const TID_WAIT: Duration = Duration::from_secs(1);

/// The reference VMM as the QMP layer sees it.
pub(crate) struct VmmMachine {
    pub(crate) requests: Sender<ControlRequest>,
    pub(crate) status: Arc<MachineStatus>,
    pub(crate) power: Arc<Mutex<AcpiPm<GsiLine>>>,
    pub(crate) tids: Vec<Arc<AtomicI64>>,
    pub(crate) memory: Arc<GuestMemoryMmap>,
    pub(crate) target: &'static str,
}

impl std::fmt::Debug for VmmMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmmMachine")
            .field("status", &self.status.get())
            .field("vcpus", &self.tids.len())
            .finish_non_exhaustive()
    }
}

impl VmmMachine {
    /// Sends a pause or resume request and waits for the machine loop.
    fn request(
        &self,
        make: fn(Sender<Result<(), kvmkit_runloop::Error>>) -> ControlRequest,
        what: &str,
    ) -> Result<(), MachineError> {
        let (tx, rx) = channel();
        let gone = || MachineError(format!("cannot {what} the vCPUs: the VM is shutting down"));
        self.requests.send(make(tx)).map_err(|_| gone())?;
        match rx.recv_timeout(PAUSE_TIMEOUT + Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(MachineError(format!("cannot {what} the vCPUs: {e}"))),
            Err(_) => Err(gone()),
        }
    }
}

impl qmp::Machine for VmmMachine {
    fn run_state(&self) -> RunState {
        match self.status.get() {
            RunStatus::Running => RunState::Running,
            RunStatus::Paused => RunState::Paused,
            RunStatus::Shutdown => RunState::Shutdown,
            RunStatus::InternalError => RunState::InternalError,
        }
    }

    fn stop(&self) -> Result<(), MachineError> {
        if matches!(
            self.status.get(),
            RunStatus::Shutdown | RunStatus::InternalError
        ) {
            // QEMU: stopping a machine that is not live changes nothing.
            return Ok(());
        }
        self.request(ControlRequest::Pause, "pause")
    }

    fn cont(&self) -> Result<(), MachineError> {
        self.request(ControlRequest::Resume, "resume")
    }

    fn power_button(&self) -> Result<(), MachineError> {
        self.power
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .press_power_button();
        Ok(())
    }

    fn quit(&self) {
        // A machine loop that is gone has ended already.
        let _ = self.requests.send(ControlRequest::Quit);
    }

    fn vcpus(&self) -> Vec<VcpuInfo> {
        let deadline = Instant::now() + TID_WAIT;
        while self.tids.iter().any(|t| t.load(Ordering::Relaxed) == 0)
            && Instant::now() < deadline
            && self.status.get() == RunStatus::Running
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        (0u32..)
            .zip(&self.tids)
            .map(|(i, t)| VcpuInfo {
                index: i,
                thread_id: t.load(Ordering::Relaxed),
                // One socket of N cores, as the CPUID topology says.
                socket_id: 0,
                core_id: i,
                thread_in_core: 0,
            })
            .collect()
    }

    fn target(&self) -> &'static str {
        self.target
    }

    fn guest_memory(&self) -> Arc<GuestMemoryMmap> {
        self.memory.clone()
    }

    fn start_dirty_count(
        &self,
        mode: DirtyRateMode,
    ) -> Result<Box<dyn qmp::DirtyPageCounter>, MachineError> {
        Err(MachineError(format!(
            "mode {} is not available in this build, use page-sampling instead",
            mode.name()
        )))
    }
}
