#![doc = include_str!("../README.md")]

mod error;
mod handle;
mod kvm;
mod layout;
mod mapping;
mod region;
mod rules;
mod table;

pub use error::{Error, Result};
pub use handle::GuestMemoryHandle;
pub use layout::{pc_layout, ram_layout, Hole, PcHoles, LAYOUT_ALIGN};
pub use region::{Backing, RegionConfig, Slot};
pub use table::{SlotTable, FALLBACK_MAX_SLOTS, PAGE_SIZE};
