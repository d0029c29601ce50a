//! Errors of the run loop.

/// Errors of the run loop's control operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Spawning a vCPU thread failed.
    #[error("cannot spawn the thread for vCPU {vcpu}")]
    SpawnThread {
        /// The vCPU id.
        vcpu: u32,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Not every running vCPU acknowledged a pause in time.
    #[error("pause timed out after {waited_ms} ms: {paused} of {running} vCPUs paused")]
    PauseTimeout {
        /// How long the caller waited.
        waited_ms: u128,
        /// vCPUs that acknowledged.
        paused: usize,
        /// vCPUs still running guest code.
        running: usize,
    },
    /// The run loop was already stopped.
    #[error("the run loop is stopping or stopped")]
    Stopped,
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
