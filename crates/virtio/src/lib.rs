#![doc = include_str!("../README.md")]

mod block;
mod device;
mod error;
mod interrupt;
mod mmio;
mod net;
mod sys;
mod tap;
mod worker;

#[cfg(test)]
mod testutil;

pub use block::{Block, BLOCK_QUEUE_SIZE, BLOCK_SEG_MAX, BLOCK_SIZE_MAX, SECTOR_BYTES};
pub use device::{Activation, Memory, VirtioDevice, VIRTIO_F_VERSION_1};
pub use error::{Error, Result};
pub use interrupt::{Interrupt, InterruptStatus, INT_CONFIG, INT_USED_RING};
pub use mmio::{status, IoEvent, MmioTransport, MMIO_LEN, NOTIFY_OFFSET};
pub use net::{random_mac, Net, NetBackend, NetStats, NET_QUEUE_SIZE, VNET_HDR_LEN};
pub use tap::Tap;
pub use worker::Worker;
