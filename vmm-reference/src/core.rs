//! The architecture-independent core of the VMM: run the vCPUs and wait for
//! the VM's end, whatever the architecture and whatever runs the vCPUs.

use crate::devices::PlatformEvent;
use crate::Result;
use kvmkit_core::{Arch, RunVcpu, SystemEventKind};
use kvmkit_runloop::{Buses, RunLoop, VcpuEvent, VcpuReport};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

/// How long a pause request waits for every vCPU to leave `KVM_RUN`.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmmExit {
    /// The guest powered off (ACPI S5, or a KVM system event).
    PowerOff,
    /// The guest reset (i8042 pulse, or a KVM system event).
    Reset,
    /// The user quit (Ctrl-A x, or SIGINT/SIGTERM/SIGHUP).
    Quit,
    /// A vCPU halted with nothing left to wake it.
    Halted,
    /// The guest shut down on a fault (x86: a triple fault).
    TripleFault {
        /// The vCPU.
        vcpu: u32,
        /// Its program counter, when it could be read.
        pc: Option<u64>,
    },
    /// The VM was migrated: the destination runs the guest now.
    Migrated,
    /// KVM could not run a vCPU.
    KvmFailure {
        /// The vCPU.
        vcpu: u32,
        /// Its program counter, when it could be read.
        pc: Option<u64>,
        /// What happened.
        what: String,
    },
}

impl VmmExit {
    /// The process exit status: 0 for a clean end, 3 for a triple fault, 4 for
    /// a KVM failure.
    pub fn code(&self) -> i32 {
        match self {
            VmmExit::PowerOff
            | VmmExit::Reset
            | VmmExit::Quit
            | VmmExit::Halted
            | VmmExit::Migrated => 0,
            VmmExit::TripleFault { .. } => 3,
            VmmExit::KvmFailure { .. } => 4,
        }
    }

    /// A one-line message for abnormal ends; `pc_name` is what the
    /// architecture calls its program counter (`RIP`, `NIP`…).
    pub fn message(&self, pc_name: &str) -> Option<String> {
        let pc = |r: &Option<u64>| r.map_or("unknown".to_string(), |r| format!("{r:#x}"));
        match self {
            VmmExit::TripleFault { vcpu, pc: r } => Some(format!(
                "guest triple fault on vCPU {vcpu} at {pc_name} {}",
                pc(r)
            )),
            VmmExit::KvmFailure { vcpu, pc: r, what } => Some(format!(
                "KVM failed to run vCPU {vcpu} at {pc_name} {}: {what}",
                pc(r)
            )),
            _ => None,
        }
    }
}

/// Set by SIGINT, SIGTERM or SIGHUP (see `vmm.rs`): the user wants out.
pub(crate) static QUIT_SIGNAL: AtomicBool = AtomicBool::new(false);

/// The machine's run state, as a control API reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    /// The vCPUs run guest code.
    Running,
    /// The vCPUs wait outside `KVM_RUN` until resumed.
    Paused,
    /// The VM ended (power-off, reset, quit); the VMM is exiting.
    Shutdown,
    /// KVM failed to run a vCPU; the VMM is exiting.
    InternalError,
    /// Waiting for an incoming migration (`--incoming`); no vCPU runs yet.
    InMigrate,
}

/// The run state shared between the machine loop (which writes it) and
/// control APIs (which read it without a round trip to the loop).
///
/// ```
/// use kvmkit_vmm_reference::{MachineStatus, RunStatus};
/// let s = MachineStatus::new();
/// assert_eq!(s.get(), RunStatus::Running);
/// s.set(RunStatus::Paused);
/// assert_eq!(s.get(), RunStatus::Paused);
/// ```
#[derive(Debug)]
pub struct MachineStatus(AtomicU8);

impl MachineStatus {
    /// A machine about to run.
    pub fn new() -> Self {
        MachineStatus(AtomicU8::new(0))
    }

    /// The current state.
    pub fn get(&self) -> RunStatus {
        match self.0.load(Ordering::SeqCst) {
            0 => RunStatus::Running,
            1 => RunStatus::Paused,
            2 => RunStatus::Shutdown,
            4 => RunStatus::InMigrate,
            _ => RunStatus::InternalError,
        }
    }

    /// Records a new state.
    pub fn set(&self, s: RunStatus) {
        let v = match s {
            RunStatus::Running => 0,
            RunStatus::Paused => 1,
            RunStatus::Shutdown => 2,
            RunStatus::InternalError => 3,
            RunStatus::InMigrate => 4,
        };
        self.0.store(v, Ordering::SeqCst);
    }
}

impl Default for MachineStatus {
    fn default() -> Self {
        MachineStatus::new()
    }
}

/// Why the VM ended, in the terms of QEMU's `ShutdownCause`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownCause {
    /// An error prevents further use of the guest (KVM failed to run a vCPU).
    HostError,
    /// The control API asked the VMM to quit (QMP `quit`).
    HostQmpQuit,
    /// SIGINT, SIGTERM or SIGHUP.
    HostSignal,
    /// The user quit on the console (Ctrl-A x).
    HostUi,
    /// The guest powered off (ACPI S5, a KVM system event) or halted for good.
    GuestShutdown,
    /// The guest reset (i8042, triple fault, a KVM system event); this VMM
    /// ends on reset, like QEMU with `-no-reboot`.
    GuestReset,
}

impl ShutdownCause {
    /// True when the guest asked for the end.
    pub fn by_guest(self) -> bool {
        matches!(
            self,
            ShutdownCause::GuestShutdown | ShutdownCause::GuestReset
        )
    }
}

/// What the machine loop tells a [`MachineObserver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineEvent {
    /// Every vCPU is paused.
    Stopped,
    /// The vCPUs run again.
    Resumed,
    /// The VM ended; the vCPUs are being stopped and the VMM exits.
    Shutdown(ShutdownCause),
}

/// Receives [`MachineEvent`]s (a control API's event stream); called on the
/// machine loop's thread, so it must not block.
pub trait MachineObserver: Send + Sync {
    /// Called once per event, in order.
    fn machine_event(&self, event: MachineEvent);
}

/// A request from a control API to the machine loop.
#[derive(Debug)]
pub enum ControlRequest {
    /// Pause every vCPU; the reply comes once all are out of `KVM_RUN`
    /// (already paused: at once, no event).
    Pause(Sender<std::result::Result<(), kvmkit_runloop::Error>>),
    /// Resume the vCPUs (already running: at once, no event).
    Resume(Sender<std::result::Result<(), kvmkit_runloop::Error>>),
    /// End the VM ([`ShutdownCause::HostQmpQuit`]).
    Quit,
    /// Save the state of the paused VM with the control's state saver (see
    /// [`MachineControl::with_state_saver`]); refused while running.
    SaveState(Sender<std::result::Result<serde_json::Value, String>>),
    /// The VM was migrated away: end it ([`VmmExit::Migrated`]).
    Migrated,
}

/// Saves the state of a paused VM: given the vCPUs (a `&mut Vec<V>` of the
/// machine's vCPU type, as `Any`), returns the whole state as JSON.
pub type StateSaver = Arc<
    dyn Fn(&mut dyn std::any::Any) -> std::result::Result<serde_json::Value, String> + Send + Sync,
>;

/// How a control API is plugged into [`run_machine_with`]: where its
/// requests come from, who hears about state changes, and the shared state.
pub struct MachineControl {
    requests: Option<Receiver<ControlRequest>>,
    observer: Option<Arc<dyn MachineObserver>>,
    status: Arc<MachineStatus>,
    saver: Option<StateSaver>,
}

impl std::fmt::Debug for MachineControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineControl")
            .field("requests", &self.requests.is_some())
            .field("observer", &self.observer.is_some())
            .field("status", &self.status.get())
            .finish()
    }
}

impl MachineControl {
    /// No control API: nothing asks, nobody listens.
    pub fn none() -> Self {
        MachineControl {
            requests: None,
            observer: None,
            status: Arc::new(MachineStatus::new()),
            saver: None,
        }
    }

    /// A control channel: returns the control for [`run_machine_with`] and
    /// the sender for requests.
    pub fn channel(
        status: Arc<MachineStatus>,
        observer: Option<Arc<dyn MachineObserver>>,
    ) -> (Self, Sender<ControlRequest>) {
        let (tx, rx) = channel();
        (
            MachineControl {
                requests: Some(rx),
                observer,
                status,
                saver: None,
            },
            tx,
        )
    }

    /// Adds the saver [`ControlRequest::SaveState`] calls.
    #[must_use]
    pub fn with_state_saver(mut self, saver: StateSaver) -> Self {
        self.saver = Some(saver);
        self
    }

    fn notify(&self, e: MachineEvent) {
        if let Some(o) = &self.observer {
            o.machine_event(e);
        }
    }
}

/// Runs `vcpus` on `buses` until the guest or a device ends the VM
/// (`platform` carries power-off, reset and quit requests), then stops every
/// vCPU and returns why the VM ended with the vCPUs (for state saving).
///
/// Generic over the architecture and the vCPU backend: the reference VMM runs
/// KVM vCPUs through it, and the portability test runs scripted powerpc and
/// s390x vCPUs through the same code.
pub fn run_machine<A: Arch, V: RunVcpu<A> + 'static>(
    vcpus: Vec<V>,
    buses: Arc<Buses<A>>,
    platform: Receiver<PlatformEvent>,
) -> Result<(VmmExit, Vec<V>)> {
    run_machine_with(vcpus, buses, platform, MachineControl::none())
}

/// [`run_machine`] with a control API: `control`'s requests pause, resume
/// or end the VM, its observer hears of every state change (pause, resume,
/// the end and its [`ShutdownCause`]) and its [`MachineStatus`] follows the
/// state.
pub fn run_machine_with<A: Arch, V: RunVcpu<A> + 'static>(
    vcpus: Vec<V>,
    buses: Arc<Buses<A>>,
    platform: Receiver<PlatformEvent>,
    mut control: MachineControl,
) -> Result<(VmmExit, Vec<V>)> {
    let (tx, rx) = channel::<Msg>();
    let (run_loop, reports) = RunLoop::start(vcpus, buses.clone())?;
    forward(reports, tx.clone(), Msg::Vcpu);
    if let Some(requests) = control.requests.take() {
        forward(requests, tx.clone(), Msg::Control);
    }
    forward(platform, tx.clone(), Msg::Platform);
    let mut machine = Running {
        run_loop,
        buses,
        tx,
    };
    let (exit, cause) = wait_for_end(&rx, &mut machine, &control);
    control.status.set(match exit {
        VmmExit::KvmFailure { .. } => RunStatus::InternalError,
        _ => RunStatus::Shutdown,
    });
    control.notify(MachineEvent::Shutdown(cause));
    let vcpus = machine
        .run_loop
        .stop()
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    Ok((exit, vcpus))
}

/// The run loop with what restarting it needs.
struct Running<A: Arch, V: RunVcpu<A> + 'static> {
    run_loop: RunLoop<A, V>,
    buses: Arc<Buses<A>>,
    tx: Sender<Msg>,
}

impl<A: Arch, V: RunVcpu<A> + 'static> Running<A, V> {
    /// Saves the paused VM's state: the vCPU threads end (KVM finishes
    /// their last exits), the saver reads the vCPUs, and new threads take
    /// them over, still paused.
    fn save_state(
        &mut self,
        control: &MachineControl,
    ) -> std::result::Result<serde_json::Value, String> {
        if control.status.get() != RunStatus::Paused {
            return Err("the VM must be paused to save its state".to_string());
        }
        let Some(saver) = &control.saver else {
            return Err("this machine cannot save its state".to_string());
        };
        let (paused, reports) =
            RunLoop::start_paused(Vec::new(), self.buses.clone()).map_err(|e| e.to_string())?;
        drop(reports);
        let old = std::mem::replace(&mut self.run_loop, paused);
        let mut vcpus: Vec<V> = old.stop().into_iter().map(|(v, _)| v).collect();
        let state = saver(&mut vcpus);
        match RunLoop::start_paused(vcpus, self.buses.clone()) {
            Ok((run_loop, reports)) => {
                self.run_loop = run_loop;
                forward(reports, self.tx.clone(), Msg::Vcpu);
                state
            }
            Err(e) => Err(format!("cannot restart the vCPUs after saving: {e}")),
        }
    }
}

enum Msg {
    Vcpu(VcpuReport),
    Platform(PlatformEvent),
    Control(ControlRequest),
}

/// Pauses (`pause`) or resumes the vCPUs for a control request; a request
/// that finds the machine already there changes nothing and reports nothing.
fn pause_or_resume<A: Arch, V: RunVcpu<A> + 'static>(
    run_loop: &RunLoop<A, V>,
    control: &MachineControl,
    pause: bool,
) -> std::result::Result<(), kvmkit_runloop::Error> {
    let now = control.status.get();
    if pause {
        if now != RunStatus::Running {
            return Ok(());
        }
        if let Err(e) = run_loop.pause(PAUSE_TIMEOUT) {
            // Leave the machine as it was: running.
            let _ = run_loop.resume();
            return Err(e);
        }
        control.status.set(RunStatus::Paused);
        control.notify(MachineEvent::Stopped);
    } else {
        if now != RunStatus::Paused {
            return Ok(());
        }
        run_loop.resume()?;
        control.status.set(RunStatus::Running);
        control.notify(MachineEvent::Resumed);
    }
    Ok(())
}

fn forward<T: Send + 'static>(rx: Receiver<T>, tx: Sender<Msg>, wrap: fn(T) -> Msg) {
    std::thread::spawn(move || {
        while let Ok(m) = rx.recv() {
            if tx.send(wrap(m)).is_err() {
                break;
            }
        }
    });
}

/// Waits for the VM's end, serving control requests meanwhile; returns the
/// end and its cause.
fn wait_for_end<A: Arch, V: RunVcpu<A> + 'static>(
    rx: &Receiver<Msg>,
    machine: &mut Running<A, V>,
    control: &MachineControl,
) -> (VmmExit, ShutdownCause) {
    // KVMKIT_DEBUG=1 reports what the guest touched that no device claims.
    let debug = std::env::var("KVMKIT_DEBUG").is_ok_and(|v| v == "1");
    let mut live = machine.run_loop.live_vcpus();
    loop {
        if QUIT_SIGNAL.load(Ordering::SeqCst) {
            return (VmmExit::Quit, ShutdownCause::HostSignal);
        }
        let msg = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                return (VmmExit::Quit, ShutdownCause::HostError)
            }
        };
        match msg {
            Msg::Platform(PlatformEvent::Quit) => return (VmmExit::Quit, ShutdownCause::HostUi),
            Msg::Platform(PlatformEvent::PowerOff) => {
                return (VmmExit::PowerOff, ShutdownCause::GuestShutdown)
            }
            Msg::Platform(PlatformEvent::Reset) => {
                return (VmmExit::Reset, ShutdownCause::GuestReset)
            }
            Msg::Control(ControlRequest::Quit) => {
                return (VmmExit::Quit, ShutdownCause::HostQmpQuit)
            }
            Msg::Control(ControlRequest::Pause(reply)) => {
                // The requester may have given up waiting: nothing to tell.
                let _ = reply.send(pause_or_resume(&machine.run_loop, control, true));
            }
            Msg::Control(ControlRequest::Resume(reply)) => {
                let _ = reply.send(pause_or_resume(&machine.run_loop, control, false));
            }
            Msg::Control(ControlRequest::SaveState(reply)) => {
                let _ = reply.send(machine.save_state(control));
            }
            Msg::Control(ControlRequest::Migrated) => {
                return (VmmExit::Migrated, ShutdownCause::HostQmpQuit)
            }
            Msg::Vcpu(r) => {
                let vcpu = r.vcpu.0;
                let pc = r.pc;
                let fail = |what: String| {
                    (
                        VmmExit::KvmFailure { vcpu, pc, what },
                        ShutdownCause::HostError,
                    )
                };
                match r.event {
                    VcpuEvent::Shutdown => {
                        return (VmmExit::TripleFault { vcpu, pc }, ShutdownCause::GuestReset)
                    }
                    VcpuEvent::SystemEvent { kind, .. } => {
                        return match kind {
                            SystemEventKind::Reset => (VmmExit::Reset, ShutdownCause::GuestReset),
                            SystemEventKind::Shutdown => {
                                (VmmExit::PowerOff, ShutdownCause::GuestShutdown)
                            }
                            k => fail(format!("system event {k:?}")),
                        }
                    }
                    VcpuEvent::InternalError { suberror, data } => {
                        return fail(format!("internal error {suberror} {data:x?}"))
                    }
                    VcpuEvent::FailEntry { reason } => {
                        return fail(format!("entry failed, reason {reason:#x}"))
                    }
                    VcpuEvent::Error(e) => return fail(e.to_string()),
                    VcpuEvent::ArchStop { reason } => return fail(reason),
                    ref e @ (VcpuEvent::UnhandledAccess { .. } | VcpuEvent::UnknownExit { .. })
                        if debug =>
                    {
                        eprintln!("vmm-reference: vCPU {vcpu}: {e:?}");
                    }
                    VcpuEvent::Halted => {
                        live = live.saturating_sub(1);
                        if live == 0 {
                            return (VmmExit::Halted, ShutdownCause::GuestShutdown);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
