#![doc = include_str!("../README.md")]

mod error;
mod pages;
mod precopy;
mod probe;
mod snapshot;
mod stream;
mod sys;

pub use error::{BoxError, Error, Result};
pub use pages::{apply_pages, send_ranges, RamRange, SendStats, PAGES_PER_FRAME, PAGE_SIZE};
pub use precopy::{
    migrate, receive, unix_time_ns, EndInfo, MigrationDestination, MigrationSource, Policy,
    Progress, Received, Status,
};
pub use snapshot::{load_snapshot, save_snapshot, Snapshot, SnapshotRange, SnapshotStats};
pub use stream::{
    from_json, Frame, FrameReader, FrameWriter, Tag, HEADER_LEN, MAGIC, MAX_FRAME_PAYLOAD, VERSION,
};
