#![doc = include_str!("../README.md")]

mod bitmap;
mod damage;
mod error;
mod iter;
mod log;
mod rate;

pub use bitmap::{DirtyBitmap, PAGE_SIZE};
pub use damage::{damage_rects, Rect};
pub use error::{Error, Result};
pub use iter::{DirtyGpaRanges, DirtyPages, DirtyRanges};
pub use log::{DirtyLog, Epoch};
pub use rate::DirtyRateSampler;
