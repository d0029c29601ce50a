//! The reference VMM's side of the QMP seam: [`qmp::Machine`] on top of
//! the machine loop's control channel, the ACPI power button, the vCPU
//! threads and guest memory.

use crate::core::{ControlRequest, MachineStatus, RunStatus, PAUSE_TIMEOUT};
use crate::devices::{AcpiPm, LevelIrq};
use crate::qmp::{self, DirtyCount, DirtyRateMode, MachineError, QapiEnum, RunState, VcpuInfo};
use crate::HostArch;
use kvmkit_core::{RunVcpu, SlotId, VcpuExit, VcpuId};
use kvmkit_dirty_log::DirtyTracker;
use kvmkit_irq::InterruptController;
use kvmkit_memory::SlotTable;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
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

/// KVM's dirty log and the slot table whose logging it turns on and off.
pub(crate) struct DirtySource {
    pub(crate) tracker: Arc<DirtyTracker<HostArch>>,
    pub(crate) table: Arc<Mutex<SlotTable<HostArch>>>,
}

impl DirtySource {
    fn table(&self) -> MutexGuard<'_, SlotTable<HostArch>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Turns logging on for every writable slot and forgets what the first
    /// harvest reports (with `KVM_DIRTY_LOG_INITIALLY_SET`, every page), as
    /// QEMU does before a dirty-bitmap measurement.
    fn start(self) -> Result<TrackerCount, MachineError> {
        let err = |what: &str, e: kvmkit_dirty_log::Error| {
            MachineError(format!("cannot {what} dirty logging: {e}"))
        };
        let mut slots = Vec::new();
        {
            let mut table = self.table();
            let ids: Vec<SlotId> = table
                .iter()
                .filter(|s| !s.is_read_only())
                .map(|s| s.id())
                .collect();
            for id in ids {
                if let Err(e) = self.tracker.enable_logging(&mut table, id) {
                    for &done in &slots {
                        let _ = self.tracker.disable_logging(&mut table, done);
                    }
                    return Err(err("start", e));
                }
                slots.push(id);
            }
        }
        let count = TrackerCount {
            source: self,
            slots,
        };
        count
            .source
            .tracker
            .harvest()
            .map_err(|e| err("start", e))?;
        for &id in &count.slots {
            let _ = count.source.tracker.take(id);
        }
        Ok(count)
    }
}

/// A dirty-log measurement in progress: logging is on for `slots`.
struct TrackerCount {
    source: DirtySource,
    slots: Vec<SlotId>,
}

impl TrackerCount {
    /// Turns logging off again (also when the measurement is dropped
    /// unfinished); returns the pages dirtied meanwhile.
    fn stop(&mut self) -> Result<u64, MachineError> {
        let mut table = self.source.table();
        let mut pages = 0u64;
        let mut first_err = None;
        for id in self.slots.drain(..) {
            match self.source.tracker.disable_logging(&mut table, id) {
                Ok(bitmap) => pages += bitmap.count() as u64,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            None => Ok(pages),
            Some(e) => Err(MachineError(format!("cannot stop dirty logging: {e}"))),
        }
    }
}

impl Drop for TrackerCount {
    fn drop(&mut self) {
        if !self.slots.is_empty() {
            let _ = self.stop();
        }
    }
}

impl qmp::DirtyPageCounter for TrackerCount {
    fn finish(mut self: Box<Self>) -> Result<DirtyCount, MachineError> {
        let pages = self.stop()?;
        // The tracker counts pages per slot, not per vCPU.
        Ok(DirtyCount {
            pages,
            per_vcpu: None,
        })
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
    /// KVM's dirty log, or why there is none.
    pub(crate) dirty: Result<DirtySource, String>,
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
    /// Refuses run-state changes while the VM waits for its incoming state
    /// (it runs once the migration completes).
    fn not_in_migrate(&self) -> Result<(), MachineError> {
        if self.status.get() == RunStatus::InMigrate {
            return Err(MachineError(
                "the VM is waiting for an incoming migration; it runs once the migration completes"
                    .to_string(),
            ));
        }
        Ok(())
    }

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
            RunStatus::InMigrate => RunState::InMigrate,
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
        self.not_in_migrate()?;
        self.request(ControlRequest::Pause, "pause")
    }

    fn cont(&self) -> Result<(), MachineError> {
        self.not_in_migrate()?;
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
        let source = self
            .dirty
            .as_ref()
            .map_err(|why| MachineError(format!("mode {} is not available: {why}", mode.name())))?;
        // As QEMU: the ring mode needs the ring, the bitmap mode its absence.
        if source.tracker.backend().is_ring() != (mode == DirtyRateMode::DirtyRing) {
            return Err(MachineError(format!(
                "mode {} is not enabled, use other method instead.",
                mode.name()
            )));
        }
        let source = DirtySource {
            tracker: source.tracker.clone(),
            table: source.table.clone(),
        };
        Ok(Box::new(source.start()?))
    }
}
