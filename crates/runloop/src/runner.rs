//! One thread per vCPU, and the handle that controls them.

use crate::control::Control;
use crate::{dispatch_exit, Buses, Dispatch, Error, Result, RunState, VcpuEvent, VcpuReport};
use kvmkit_core::{Arch, Kicker, RunVcpu, VcpuId};
use std::fmt;
use std::marker::PhantomData;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How many unhandled accesses per vCPU are reported as events; the rest are
/// only counted, so a guest hammering an empty address cannot flood the owner.
const UNHANDLED_REPORTS: u32 = 16;

/// The loop of one vCPU: run, dispatch, obey the control state, report.
pub struct VcpuLoop<A: Arch, V: RunVcpu<A>> {
    vcpu: V,
    buses: Arc<Buses<A>>,
    control: Arc<Control>,
    events: Sender<VcpuReport>,
    unhandled: u64,
}

impl<A: Arch, V: RunVcpu<A>> fmt::Debug for VcpuLoop<A, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VcpuLoop")
            .field("vcpu", &self.vcpu.id())
            .field("unhandled", &self.unhandled)
            .finish_non_exhaustive()
    }
}

impl<A: Arch, V: RunVcpu<A>> VcpuLoop<A, V> {
    fn report(&self, event: VcpuEvent, pc: Option<u64>) {
        // The owner may have dropped the receiver: nothing left to tell.
        let _ = self.events.send(VcpuReport {
            vcpu: self.vcpu.id(),
            event,
            pc,
        });
    }

    /// Runs until a final event; returns the vCPU, how many unhandled
    /// accesses it made, and the final report (sent by the caller once the
    /// vCPU counts as ended).
    fn run(mut self) -> (V, u64, Sender<VcpuReport>, VcpuReport) {
        // True after an exit was handled until the next entry: KVM completes
        // the exit's I/O (the data of an `in` or MMIO read, RIP past an
        // `out`) only when the vCPU enters again.
        let mut exit_unfinished = false;
        let last = loop {
            match self.control.state() {
                RunState::Running => {}
                // Before parking or handing the vCPU back (its registers may
                // be read or saved), let KVM finish the last exit: with a
                // kick pending, `run` enters with `immediate_exit` set,
                // completes the I/O and returns `Interrupted` at once.
                RunState::Paused | RunState::Stopping if exit_unfinished => {
                    self.vcpu.kicker().kick();
                }
                RunState::Paused => {
                    self.control.park(false);
                    continue;
                }
                RunState::Stopping => break (VcpuEvent::Stopped, None),
            }
            let d = match self.vcpu.run() {
                Ok(exit) => dispatch_exit(exit, &self.buses),
                Err(e) => Dispatch::Final(VcpuEvent::Error(e)),
            };
            exit_unfinished = !matches!(d, Dispatch::Interrupted);
            match d {
                Dispatch::Continue | Dispatch::Interrupted => {}
                Dispatch::Report(ev) => {
                    if matches!(ev, VcpuEvent::UnhandledAccess { .. }) {
                        self.unhandled += 1;
                        if self.unhandled <= u64::from(UNHANDLED_REPORTS) {
                            self.report(ev, None);
                        }
                    } else {
                        self.report(ev, None);
                    }
                }
                Dispatch::Debug(pc) => {
                    self.report(VcpuEvent::Debug { pc }, Some(pc));
                    self.control.park(true);
                }
                Dispatch::DirtyRingFull => {
                    if let Err(e) = self.buses.dirty_ring_full(self.vcpu.id()) {
                        let event = VcpuEvent::DirtyRingFull {
                            reason: error_chain(&*e),
                        };
                        break (event, self.vcpu.program_counter().ok());
                    }
                }
                Dispatch::Final(ev) => break (ev, self.vcpu.program_counter().ok()),
            }
        };
        let report = VcpuReport {
            vcpu: self.vcpu.id(),
            event: last.0,
            pc: last.1,
        };
        (self.vcpu, self.unhandled, self.events, report)
    }
}

/// `e` and its sources, joined with `": "`.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The vCPU threads of one VM and their control.
///
/// `start` spawns one thread per vCPU; [`RunLoop::pause`] returns once every
/// vCPU is out of `KVM_RUN` and waiting; [`RunLoop::resume`] lets them go on;
/// [`RunLoop::stop`] ends and joins them, handing the vCPUs back (for state
/// saving). Events arrive on the receiver `start` returns.
pub struct RunLoop<A: Arch, V: RunVcpu<A> + 'static> {
    control: Arc<Control>,
    kickers: Vec<Kicker>,
    threads: Vec<(VcpuId, JoinHandle<(V, u64)>)>,
    _arch: PhantomData<fn() -> A>,
}

impl<A: Arch, V: RunVcpu<A> + 'static> fmt::Debug for RunLoop<A, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunLoop")
            .field("arch", &A::NAME)
            .field("state", &self.control.state())
            .field("vcpus", &self.threads.len())
            .finish()
    }
}

impl<A: Arch, V: RunVcpu<A> + 'static> RunLoop<A, V> {
    /// Spawns a thread named `vcpu N` for each vCPU and starts them running.
    pub fn start(vcpus: Vec<V>, buses: Arc<Buses<A>>) -> Result<(Self, Receiver<VcpuReport>)> {
        Self::start_in(vcpus, buses, RunState::Running)
    }

    /// Like [`RunLoop::start`], but the vCPUs wait, paused, until
    /// [`RunLoop::resume`]: no guest code runs before. For a VM whose state
    /// is restored (a snapshot, an incoming migration) or inspected first.
    pub fn start_paused(
        vcpus: Vec<V>,
        buses: Arc<Buses<A>>,
    ) -> Result<(Self, Receiver<VcpuReport>)> {
        Self::start_in(vcpus, buses, RunState::Paused)
    }

    fn start_in(
        vcpus: Vec<V>,
        buses: Arc<Buses<A>>,
        state: RunState,
    ) -> Result<(Self, Receiver<VcpuReport>)> {
        let (tx, rx) = channel();
        let control = Control::default();
        control.set(state);
        let mut rl = RunLoop {
            control: Arc::new(control),
            kickers: Vec::new(),
            threads: Vec::new(),
            _arch: PhantomData,
        };
        for vcpu in vcpus {
            let id = vcpu.id();
            rl.kickers.push(vcpu.kicker());
            let lp = VcpuLoop {
                vcpu,
                buses: buses.clone(),
                control: rl.control.clone(),
                events: tx.clone(),
                unhandled: 0,
            };
            rl.control.vcpu_started();
            let control = rl.control.clone();
            let handle = std::thread::Builder::new()
                .name(format!("vcpu {id}"))
                .spawn(move || {
                    let (vcpu, unhandled, events, last) = lp.run();
                    control.vcpu_ended();
                    // The owner may have dropped the receiver: nothing left to tell.
                    let _ = events.send(last);
                    (vcpu, unhandled)
                });
            match handle {
                Ok(h) => rl.threads.push((id, h)),
                Err(source) => {
                    rl.control.vcpu_ended();
                    return Err(Error::SpawnThread { vcpu: id.0, source });
                }
            }
        }
        Ok((rl, rx))
    }

    /// The current run state.
    pub fn state(&self) -> RunState {
        self.control.state()
    }

    /// How many vCPU threads are still live.
    pub fn live_vcpus(&self) -> usize {
        self.control.live()
    }

    /// Kicks every vCPU out of `KVM_RUN` once (they re-enter if running).
    pub fn kick_all(&self) {
        for k in &self.kickers {
            k.kick();
        }
    }

    /// Pauses every vCPU and waits until each is out of `KVM_RUN`, at most
    /// `timeout`; returns how long it took.
    pub fn pause(&self, timeout: Duration) -> Result<Duration> {
        if self.state() == RunState::Stopping {
            return Err(Error::Stopped);
        }
        let t0 = Instant::now();
        self.control.set(RunState::Paused);
        self.kick_all();
        self.control
            .wait_parked(timeout)
            .map_err(|(paused, live)| Error::PauseTimeout {
                waited_ms: timeout.as_millis(),
                paused,
                running: live - paused,
            })?;
        Ok(t0.elapsed())
    }

    /// Lets paused (and debug-stopped) vCPUs run again.
    pub fn resume(&self) -> Result<()> {
        if self.state() == RunState::Stopping {
            return Err(Error::Stopped);
        }
        self.control.set(RunState::Running);
        Ok(())
    }

    /// Stops every vCPU, joins the threads and returns the vCPUs with the
    /// number of unhandled accesses each made.
    pub fn stop(mut self) -> Vec<(V, u64)> {
        self.stop_threads()
    }

    fn stop_threads(&mut self) -> Vec<(V, u64)> {
        self.control.set(RunState::Stopping);
        self.kick_all();
        self.threads
            .drain(..)
            .filter_map(|(_, h)| h.join().ok())
            .collect()
    }
}

impl<A: Arch, V: RunVcpu<A> + 'static> Drop for RunLoop<A, V> {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop_threads();
        }
    }
}
