#![doc = include_str!("../README.md")]

mod bus;
mod control;
mod dispatch;
mod error;
mod event;
mod runner;

pub use bus::{Buses, DirtyRingFullHook, MmioBus, MmioDevice, NO_DIRTY_RING_HOOK};
pub use control::RunState;
pub use dispatch::{dispatch_exit, Dispatch};
pub use error::{Error, Result};
pub use event::{VcpuEvent, VcpuReport};
pub use runner::{RunLoop, VcpuLoop};
