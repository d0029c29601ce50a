//! The seam between the QMP layer and the VMM: what the commands need
//! from the machine, as a trait the VMM implements (and tests mock).
//!
//! A new command family (migration, snapshots) extends this seam with its
//! own trait and registers its commands with the
//! [`Dispatcher`](super::Dispatcher); nothing here changes.

use super::args::QapiEnum;
use std::sync::Arc;
use vm_memory::GuestMemoryMmap;

/// QEMU's `RunState`: the states `query-status` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// The guest runs.
    Running,
    /// Paused by `stop`.
    Paused,
    /// The guest shut down (power-off, reset, quit); the VMM is exiting.
    Shutdown,
    /// An error stops the guest for good; the VMM is exiting.
    InternalError,
    /// Paused for a debugger.
    Debug,
    /// Paused waiting for an incoming migration.
    InMigrate,
    /// Paused after a completed outgoing migration.
    PostMigrate,
    /// Paused to finish a migration.
    FinishMigrate,
    /// Paused to save the VM's state.
    SaveVm,
    /// Paused to restore the VM's state.
    RestoreVm,
}

impl QapiEnum for RunState {
    const VALUES: &'static [(&'static str, Self)] = &[
        ("debug", RunState::Debug),
        ("inmigrate", RunState::InMigrate),
        ("internal-error", RunState::InternalError),
        ("paused", RunState::Paused),
        ("postmigrate", RunState::PostMigrate),
        ("finish-migrate", RunState::FinishMigrate),
        ("restore-vm", RunState::RestoreVm),
        ("running", RunState::Running),
        ("save-vm", RunState::SaveVm),
        ("shutdown", RunState::Shutdown),
    ];

    fn name(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Shutdown => "shutdown",
            RunState::InternalError => "internal-error",
            RunState::Debug => "debug",
            RunState::InMigrate => "inmigrate",
            RunState::PostMigrate => "postmigrate",
            RunState::FinishMigrate => "finish-migrate",
            RunState::SaveVm => "save-vm",
            RunState::RestoreVm => "restore-vm",
        }
    }
}

impl RunState {
    /// QEMU's `runstate_needs_reset`: the guest cannot continue.
    ///
    /// ```
    /// use kvmkit_vmm_reference::qmp::RunState;
    /// assert!(RunState::Shutdown.needs_reset());
    /// assert!(!RunState::Paused.needs_reset());
    /// ```
    pub fn needs_reset(self) -> bool {
        matches!(self, RunState::Shutdown | RunState::InternalError)
    }
}

/// One vCPU, for `query-cpus-fast`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuInfo {
    /// Its index (the KVM vCPU id).
    pub index: u32,
    /// The host thread running it (Linux TID), 0 if not yet started.
    pub thread_id: i64,
    /// Its socket in the CPU topology.
    pub socket_id: u32,
    /// Its core in the socket.
    pub core_id: u32,
    /// Its thread in the core.
    pub thread_in_core: u32,
}

/// How `calc-dirty-rate` measures (QEMU's `DirtyRateMeasureMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirtyRateMode {
    /// Hash sampled pages before and after (needs only guest memory).
    PageSampling,
    /// Count pages in KVM's per-vCPU dirty rings.
    DirtyRing,
    /// Count pages in KVM's dirty bitmaps.
    DirtyBitmap,
}

impl QapiEnum for DirtyRateMode {
    const VALUES: &'static [(&'static str, Self)] = &[
        ("page-sampling", DirtyRateMode::PageSampling),
        ("dirty-ring", DirtyRateMode::DirtyRing),
        ("dirty-bitmap", DirtyRateMode::DirtyBitmap),
    ];

    fn name(self) -> &'static str {
        match self {
            DirtyRateMode::PageSampling => "page-sampling",
            DirtyRateMode::DirtyRing => "dirty-ring",
            DirtyRateMode::DirtyBitmap => "dirty-bitmap",
        }
    }
}

/// Pages a dirty-log backend counted over a measurement.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DirtyCount {
    /// Pages dirtied in the whole guest.
    pub pages: u64,
    /// Pages dirtied per vCPU, for backends that know (the dirty ring).
    pub per_vcpu: Option<Vec<u64>>,
}

/// A KVM dirty-log measurement in progress, for the `dirty-bitmap` and
/// `dirty-ring` modes: created with logging on, finished once.
pub trait DirtyPageCounter: Send {
    /// Harvests what the guest dirtied since the counter was created,
    /// turns logging off and returns the counts.
    fn finish(self: Box<Self>) -> Result<DirtyCount, MachineError>;
}

/// An operation the machine refused or could not do; the message is the
/// QMP error description.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MachineError(pub String);

/// What the QMP commands need from the machine.
pub trait Machine: Send + Sync {
    /// The run state.
    fn run_state(&self) -> RunState;

    /// Pauses every vCPU and returns once none runs guest code (`stop`);
    /// the machine emits `STOP` itself. Already paused or shut down: done,
    /// no event.
    fn stop(&self) -> Result<(), MachineError>;

    /// Resumes the vCPUs (`cont`); the machine emits `RESUME`. Already
    /// running: done, no event. The caller has refused states that need a
    /// reset.
    fn cont(&self) -> Result<(), MachineError>;

    /// Presses the ACPI power button (`system_powerdown`).
    fn power_button(&self) -> Result<(), MachineError>;

    /// Ends the VMM (`quit`); returns at once, the machine emits `SHUTDOWN`
    /// when it ends.
    fn quit(&self);

    /// The vCPUs, in index order.
    fn vcpus(&self) -> Vec<VcpuInfo>;

    /// The QAPI `SysEmuTarget` of the guest (`x86_64`…).
    fn target(&self) -> &'static str;

    /// Guest RAM, for page sampling.
    fn guest_memory(&self) -> Arc<GuestMemoryMmap>;

    /// Starts a KVM dirty-log measurement for `mode` (`DirtyRing` or
    /// `DirtyBitmap`), or says why it cannot.
    fn start_dirty_count(
        &self,
        mode: DirtyRateMode,
    ) -> Result<Box<dyn DirtyPageCounter>, MachineError>;
}
