//! The crate's error type.

/// A boxed error from the VMM side of a migration (dirty log, vCPUs, devices).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the migration crate. Each names the operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Writing to the stream failed (the connection dropped, the disk is full…).
    #[error("writing the migration stream failed after {offset} bytes")]
    Write {
        /// Bytes written before the failure.
        offset: u64,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading the stream failed.
    #[error("reading the migration stream failed at byte {offset}")]
    Read {
        /// Where the stream was read.
        offset: u64,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The stream ended in the middle of its header or of a frame.
    #[error("the migration stream is truncated: it ends at byte {offset}, inside {what}")]
    Truncated {
        /// Where it ended.
        offset: u64,
        /// What was being read (`the header`, `a PAGES frame`…).
        what: String,
    },
    /// The stream does not start with this crate's magic.
    #[error("not a kvmkit migration stream (magic {found:02x?})")]
    BadMagic {
        /// The first bytes found.
        found: [u8; 8],
    },
    /// The stream has a format version this build does not read.
    #[error("migration stream format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version in the stream.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// A frame's checksum does not match its contents.
    #[error(
        "{tag} frame at byte {offset} is corrupted: CRC32 {found:#010x}, expected {expected:#010x}"
    )]
    Checksum {
        /// The frame's tag.
        tag: String,
        /// Where the frame starts.
        offset: u64,
        /// The checksum in the stream.
        found: u32,
        /// The checksum of the bytes read.
        expected: u32,
    },
    /// A frame's header is invalid (unknown tag, length over the limit…).
    #[error("invalid frame at byte {offset}: {detail}")]
    BadFrame {
        /// Where the frame starts.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// A frame came where the protocol does not allow it.
    #[error("unexpected {found} frame at byte {offset}: expected {expected}")]
    UnexpectedFrame {
        /// Where the frame starts.
        offset: u64,
        /// The tag found.
        found: String,
        /// What the protocol expected there.
        expected: &'static str,
    },
    /// Guest memory could not be read or written.
    #[error("guest memory access at {gpa:#x} (+{len:#x}) failed: {detail}")]
    GuestMemory {
        /// The guest physical address.
        gpa: u64,
        /// The length.
        len: u64,
        /// What failed.
        detail: String,
    },
    /// The destination's guest memory layout differs from the source's.
    #[error("memory layout mismatch: the stream has {stream}, this VM has {local}")]
    Layout {
        /// The stream's layout.
        stream: String,
        /// The local layout.
        local: String,
    },
    /// Encoding or decoding a JSON frame failed.
    #[error("{what} frame is not valid JSON")]
    Json {
        /// Which frame.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The destination refused the migration; the source keeps running.
    #[error("the destination refused the migration: {0}")]
    Refused(String),
    /// The ABI profile in the stream does not match this host or VM.
    #[error("ABI profile check failed: {0}")]
    Profile(#[source] BoxError),
    /// A VMM-side step (dirty log, pausing, state) failed.
    #[error("{step} failed")]
    Vmm {
        /// The step, e.g. `harvesting the dirty log`.
        step: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// The migration was cancelled (`migrate_cancel`).
    #[error("the migration was cancelled")]
    Cancelled,
    /// A snapshot file could not be created, written or opened.
    #[error("{op} the snapshot file {path} failed")]
    SnapshotFile {
        /// The operation, e.g. `creating`.
        op: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The crate's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
