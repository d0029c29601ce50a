//! The architecture-independent core of the VMM: run the vCPUs and wait for
//! the VM's end, whatever the architecture and whatever runs the vCPUs.

use crate::devices::PlatformEvent;
use crate::Result;
use kvmkit_core::{Arch, RunVcpu, SystemEventKind};
use kvmkit_runloop::{Buses, RunLoop, VcpuEvent, VcpuReport};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

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
            VmmExit::PowerOff | VmmExit::Reset | VmmExit::Quit | VmmExit::Halted => 0,
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
    let (tx, rx) = channel::<Msg>();
    let (run_loop, reports) = RunLoop::start(vcpus, buses)?;
    forward(reports, tx.clone(), Msg::Vcpu);
    forward(platform, tx, Msg::Platform);
    let exit = wait_for_end(&rx, run_loop.live_vcpus());
    let vcpus = run_loop.stop().into_iter().map(|(v, _)| v).collect();
    Ok((exit, vcpus))
}

enum Msg {
    Vcpu(VcpuReport),
    Platform(PlatformEvent),
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

fn wait_for_end(rx: &Receiver<Msg>, mut live: usize) -> VmmExit {
    // KVMKIT_DEBUG=1 reports what the guest touched that no device claims.
    let debug = std::env::var("KVMKIT_DEBUG").is_ok_and(|v| v == "1");
    loop {
        if QUIT_SIGNAL.load(Ordering::SeqCst) {
            return VmmExit::Quit;
        }
        let msg = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return VmmExit::Quit,
        };
        match msg {
            Msg::Platform(PlatformEvent::Quit) => return VmmExit::Quit,
            Msg::Platform(PlatformEvent::PowerOff) => return VmmExit::PowerOff,
            Msg::Platform(PlatformEvent::Reset) => return VmmExit::Reset,
            Msg::Vcpu(r) => {
                let vcpu = r.vcpu.0;
                let pc = r.pc;
                let fail = |what: String| VmmExit::KvmFailure { vcpu, pc, what };
                match r.event {
                    VcpuEvent::Shutdown => return VmmExit::TripleFault { vcpu, pc },
                    VcpuEvent::SystemEvent { kind, .. } => {
                        return match kind {
                            SystemEventKind::Reset => VmmExit::Reset,
                            SystemEventKind::Shutdown => VmmExit::PowerOff,
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
                            return VmmExit::Halted;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
