//! Errors of the QMP server and client (not QMP error replies: see
//! [`crate::qmp::QmpError`]).

use std::path::PathBuf;

/// Errors setting up the QMP socket, or of the `vmm-reference qmp` client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket path is taken by something that is not a socket.
    #[error("cannot use {path} as the API socket: it exists and is not a socket")]
    SocketPathTaken {
        /// The path.
        path: PathBuf,
    },
    /// Binding the listening socket failed.
    #[error("cannot bind the API socket {path}: {source}")]
    BindSocket {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Spawning one of the server's threads failed.
    #[error("cannot spawn the QMP {what} thread: {source}")]
    SpawnThread {
        /// Which thread.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The client could not connect.
    #[error("cannot connect to the QMP socket {path}: {source}")]
    Connect {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading from or writing to the QMP socket failed.
    #[error("QMP connection failed while {doing}: {source}")]
    Io {
        /// What the client was doing.
        doing: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server said something that is not QMP.
    #[error("the QMP server sent {detail}")]
    Protocol {
        /// What was wrong.
        detail: String,
    },
    /// The command failed: the server's error class and description.
    #[error("{class}: {desc}")]
    Command {
        /// The QMP error class (`GenericError`, `CommandNotFound`…).
        class: String,
        /// The server's description.
        desc: String,
    },
    /// A migration watched by the client failed or was cancelled: its
    /// status and the VMM's `error-desc`.
    #[error("migration {status}: {desc}")]
    Migration {
        /// `failed` or `cancelled`.
        status: String,
        /// Why, as the VMM said.
        desc: String,
    },
    /// The VMM closed the connection before it said the watched migration
    /// completed.
    #[error(
        "the VMM closed the QMP connection before the migration completed (last status: {last})"
    )]
    MigrationLost {
        /// The last status `query-migrate` reported.
        last: String,
    },
}

/// The result type of the QMP module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
