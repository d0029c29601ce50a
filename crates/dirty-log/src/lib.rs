#![doc = include_str!("../README.md")]

mod backend;
mod bitmap;
mod damage;
mod error;
mod host;
mod iter;
mod log;
mod rate;
mod ring;
mod stats;
mod sys;
mod tracker;

pub use backend::{Backend, Preference, DEFAULT_RING_BYTES, MIN_RING_BYTES, RING_ENTRY_BYTES};
pub use bitmap::{DirtyBitmap, PAGE_SIZE};
pub use damage::{damage_rects, Rect};
pub use error::{Error, Result};
pub use host::HostWrites;
pub use iter::{DirtyGpaRanges, DirtyPages, DirtyRanges};
pub use log::{DirtyLog, Epoch};
pub use rate::DirtyRateSampler;
pub use stats::{HarvestStats, TrackerStats};
pub use tracker::{DirtyTracker, RingFullHook, DEFAULT_CLEAR_CHUNK_PAGES};
