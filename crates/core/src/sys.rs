//! The raw thread and signal calls of this crate.

use std::io;

/// The calling thread's pthread id.
pub(crate) fn current_thread() -> libc::pthread_t {
    // SAFETY: pthread_self has no preconditions and cannot fail.
    unsafe { libc::pthread_self() }
}

/// Sends `signal` to `thread`.
///
/// The caller guarantees `thread` has not terminated: kick targets are
/// unregistered by a thread-exit guard before their thread ends.
pub(crate) fn signal_thread(thread: libc::pthread_t, signal: i32) -> io::Result<()> {
    // SAFETY: `thread` is a live thread of this process (see above); the
    // signal has a handler installed before any thread is registered.
    let ret = unsafe { libc::pthread_kill(thread, signal) };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}
