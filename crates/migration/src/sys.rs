//! The crate's only calls into libc.

/// The host's page size in bytes (0 if it cannot be read).
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions; it only reads a
    // constant of the running kernel.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(0)
}
