//! Kicking a vCPU out of `KVM_RUN` from another thread.
//!
//! A kick marks the vCPU pending and sends [`kick_signal`] to the thread that
//! runs it. The signal's handler, on that thread, sets `immediate_exit` in the
//! thread's current `kvm_run` area, so the kick is never lost: a vCPU inside
//! `KVM_RUN` returns with `EINTR`, one about to enter returns at once, and one
//! busy in userspace sees the pending mark before it enters again.
//!
//! A vCPU that sees the pending mark still enters `KVM_RUN`, with
//! `immediate_exit` set, rather than returning on its own: the kernel
//! finishes the I/O of the exit the vCPU was handling before it looks at
//! `immediate_exit` (x86 completes port I/O and MMIO, PowerPC MMIO loads,
//! hypercall, OSI and EPR results; s390x keeps no I/O in the kernel, the
//! results a VMM writes into `kvm_run` are loaded at the next real entry),
//! then returns `EINTR` without running the guest.

use crate::sys;
use std::cell::{Cell, RefCell};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, Weak};

thread_local! {
    /// `immediate_exit` of the `kvm_run` area this thread runs, or null.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(ptr::null_mut()) };
    /// Kick targets naming this thread, unregistered when the thread ends.
    static EXIT_GUARD: RefCell<ThreadExitGuard> = const { RefCell::new(ThreadExitGuard(Vec::new())) };
}

/// The signal that kicks vCPU threads: `SIGRTMIN`.
///
/// A VMM embedding kvmkit must leave this signal unblocked on vCPU threads and
/// must not install another handler for it.
pub fn kick_signal() -> i32 {
    libc::SIGRTMIN()
}

extern "C" fn on_kick_signal(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // A `const` thread-local Cell without destructor: async-signal-safe.
    let p = IMMEDIATE_EXIT.with(|c| c.get());
    if !p.is_null() {
        // SAFETY: the pointer is set by `bind_current_thread` to the
        // `immediate_exit` byte of a `kvm_run` mapping owned by a live `Vcpu`
        // and cleared (on this thread) before that mapping goes away. It is a
        // valid, aligned u8 accessed only atomically by this crate.
        let flag = unsafe { AtomicU8::from_ptr(p) };
        flag.store(1, Ordering::SeqCst);
    }
}

static INSTALL: Once = Once::new();
static INSTALL_FAILED: AtomicBool = AtomicBool::new(false);

/// Installs the kick signal handler once per process.
pub(crate) fn install_handler() -> std::io::Result<()> {
    INSTALL.call_once(|| {
        if vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick_signal).is_err() {
            INSTALL_FAILED.store(true, Ordering::SeqCst);
        }
    });
    if INSTALL_FAILED.load(Ordering::SeqCst) {
        Err(std::io::Error::other(
            "sigaction failed for the kick signal",
        ))
    } else {
        Ok(())
    }
}

/// Where a kick goes: the thread running the vCPU.
#[derive(Debug, Default)]
struct Target {
    thread: Option<libc::pthread_t>,
}

/// State shared between a vCPU and its kickers.
#[derive(Debug, Default)]
pub(crate) struct KickShared {
    pending: AtomicBool,
    target: Mutex<Target>,
}

impl KickShared {
    fn target(&self) -> MutexGuard<'_, Target> {
        // A panic while holding this lock leaves a plain Option behind: usable.
        self.target.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when a kick is pending.
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }

    /// Consumes a pending kick.
    pub(crate) fn take_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst) && self.pending.swap(false, Ordering::SeqCst)
    }

    /// Points kicks at the calling thread and its signal handler at `immediate_exit`.
    ///
    /// # Safety
    ///
    /// `immediate_exit` must point into a `kvm_run` mapping that stays valid
    /// until [`KickShared::unbind`] is called on this thread, or the thread ends.
    pub(crate) unsafe fn bind_current_thread(self: &Arc<Self>, immediate_exit: *mut u8) {
        IMMEDIATE_EXIT.with(|c| c.set(immediate_exit));
        let me = sys::current_thread();
        let mut t = self.target();
        if t.thread != Some(me) {
            t.thread = Some(me);
            drop(t);
            EXIT_GUARD.with(|g| {
                let mut g = g.borrow_mut();
                g.0.retain(|w| w.strong_count() > 0);
                g.0.push(Arc::downgrade(self));
            });
        }
    }

    /// True when the calling thread's handler already points at `immediate_exit`.
    pub(crate) fn handler_points_at(immediate_exit: *mut u8) -> bool {
        IMMEDIATE_EXIT.with(|c| c.get() == immediate_exit)
    }

    /// Forgets the thread and, if the calling thread's handler points at
    /// `immediate_exit`, clears that pointer.
    pub(crate) fn unbind(&self, immediate_exit: *mut u8) {
        self.target().thread = None;
        IMMEDIATE_EXIT.with(|c| {
            if c.get() == immediate_exit {
                c.set(ptr::null_mut());
            }
        });
    }

    fn kick(&self) {
        self.pending.store(true, Ordering::SeqCst);
        let t = self.target();
        if let Some(thread) = t.thread {
            // The lock is held while signalling: the thread-exit guard takes
            // it before the thread can end. ESRCH cannot happen; any error
            // leaves the pending mark, which the vCPU sees before re-entering.
            let _ = sys::signal_thread(thread, kick_signal());
        }
    }
}

/// Unregisters this thread from every kick target when the thread ends.
struct ThreadExitGuard(Vec<Weak<KickShared>>);

impl Drop for ThreadExitGuard {
    fn drop(&mut self) {
        let me = sys::current_thread();
        for w in self.0.drain(..) {
            if let Some(shared) = w.upgrade() {
                let mut t = shared.target();
                if t.thread == Some(me) {
                    t.thread = None;
                }
            }
        }
    }
}

/// A handle that kicks one vCPU out of `KVM_RUN`; cheap to clone, `Send + Sync`.
///
/// ```
/// use kvmkit_core::Kicker;
/// // A kicker not bound to a KVM vCPU (for scripted backends): kicks are
/// // recorded and consumed by `take_pending`.
/// let k = Kicker::new();
/// k.kick();
/// assert!(k.take_pending());
/// assert!(!k.take_pending());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Kicker {
    shared: Arc<KickShared>,
}

impl Kicker {
    /// A kicker bound to no vCPU thread yet.
    pub fn new() -> Self {
        Kicker::default()
    }

    pub(crate) fn from_shared(shared: Arc<KickShared>) -> Self {
        Kicker { shared }
    }

    /// Kicks the vCPU: its current or next `run` returns
    /// [`crate::VcpuExit::Interrupted`].
    pub fn kick(&self) {
        self.shared.kick();
    }

    /// Consumes a pending kick (for backends that are not `Vcpu`).
    pub fn take_pending(&self) -> bool {
        self.shared.take_pending()
    }
}
