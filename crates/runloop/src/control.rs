//! The shared run state of all vCPU threads of a run loop.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The run state the owner sets for all vCPUs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RunState {
    /// vCPUs run guest code.
    Running,
    /// vCPUs wait outside `KVM_RUN` until resumed.
    Paused,
    /// vCPUs end their threads.
    Stopping,
}

const RUNNING: u8 = 0;
const PAUSED: u8 = 1;
const STOPPING: u8 = 2;

#[derive(Debug, Default)]
struct Counts {
    /// vCPU threads that started and have not ended.
    live: usize,
    /// Of those, how many wait outside `KVM_RUN`.
    parked: usize,
    /// Bumped by every resume; debug-parked vCPUs wait for a change.
    generation: u64,
}

/// Shared between the owner and every vCPU thread.
#[derive(Debug, Default)]
pub(crate) struct Control {
    state: AtomicU8,
    counts: Mutex<Counts>,
    cv: Condvar,
}

impl Control {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state, read on every exit: one atomic load.
    pub(crate) fn state(&self) -> RunState {
        match self.state.load(Ordering::SeqCst) {
            RUNNING => RunState::Running,
            PAUSED => RunState::Paused,
            _ => RunState::Stopping,
        }
    }

    pub(crate) fn set(&self, s: RunState) {
        let v = match s {
            RunState::Running => RUNNING,
            RunState::Paused => PAUSED,
            RunState::Stopping => STOPPING,
        };
        let mut c = self.counts();
        // Stopping is final.
        if self.state.load(Ordering::SeqCst) != STOPPING {
            self.state.store(v, Ordering::SeqCst);
        }
        if s == RunState::Running {
            c.generation += 1;
        }
        drop(c);
        self.cv.notify_all();
    }

    pub(crate) fn vcpu_started(&self) {
        self.counts().live += 1;
    }

    pub(crate) fn vcpu_ended(&self) {
        self.counts().live -= 1;
        self.cv.notify_all();
    }

    /// Waits while paused (or, with `debug`, until the next resume).
    pub(crate) fn park(&self, debug: bool) {
        let mut c = self.counts();
        let gen = c.generation;
        c.parked += 1;
        self.cv.notify_all();
        loop {
            let s = self.state();
            let done = match s {
                RunState::Stopping => true,
                RunState::Paused => false,
                RunState::Running => !debug || c.generation != gen,
            };
            if done {
                break;
            }
            c = self.cv.wait(c).unwrap_or_else(|e| e.into_inner());
        }
        c.parked -= 1;
    }

    /// Waits until every live vCPU is parked; returns (parked, live) on timeout.
    pub(crate) fn wait_parked(&self, timeout: Duration) -> Result<(), (usize, usize)> {
        let deadline = Instant::now() + timeout;
        let mut c = self.counts();
        while c.parked < c.live {
            let now = Instant::now();
            if now >= deadline {
                return Err((c.parked, c.live));
            }
            c = self
                .cv
                .wait_timeout(c, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }

    pub(crate) fn live(&self) -> usize {
        self.counts().live
    }
}
