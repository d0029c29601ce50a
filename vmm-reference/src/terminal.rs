//! Raw mode for an interactive serial console, restored on every exit path.

use std::io;
use std::sync::Mutex;

/// The terminal settings to put back, process-wide so that the panic hook and
/// signal paths can restore them too.
static SAVED: Mutex<Option<libc::termios>> = Mutex::new(None);

fn tcgetattr(fd: i32) -> io::Result<libc::termios> {
    // SAFETY: termios is plain old data; zeroed is a valid value to overwrite.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid, writable termios; `fd` is checked by the call.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(t)
}

fn tcsetattr(fd: i32, t: &libc::termios) -> io::Result<()> {
    // SAFETY: `t` is a valid termios; `fd` is checked by the call.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// True when stdin is a terminal.
pub fn stdin_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

/// Puts stdin in raw mode while alive; dropping it (or [`restore`]) puts the
/// saved settings back.
#[derive(Debug)]
pub struct RawMode(());

impl RawMode {
    /// Enters raw mode if stdin is a terminal; `None` if it is not.
    pub fn enter() -> io::Result<Option<RawMode>> {
        if !stdin_is_tty() {
            return Ok(None);
        }
        let orig = tcgetattr(libc::STDIN_FILENO)?;
        let mut raw = orig;
        // SAFETY: `raw` is a valid termios.
        unsafe { libc::cfmakeraw(&mut raw) };
        // Keep output post-processing so the host terminal renders "\n" well.
        raw.c_oflag |= libc::OPOST;
        *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(orig);
        let prev_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            prev_hook(info);
        }));
        tcsetattr(libc::STDIN_FILENO, &raw)?;
        Ok(Some(RawMode(())))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Restores the terminal settings saved by [`RawMode::enter`], once.
pub fn restore() {
    let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(t) = saved {
        let _ = tcsetattr(libc::STDIN_FILENO, &t);
    }
}
