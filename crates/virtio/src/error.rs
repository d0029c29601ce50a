//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Errors of virtio devices and their transport.
///
/// Guest behaviour is never an error of this type reaching the VMM: a
/// malformed request completes with an error status, and a broken queue puts
/// the device in `DEVICE_NEEDS_RESET` (see the README's threat model).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening a disk image failed.
    #[error("cannot open disk image {path}")]
    OpenDisk {
        /// The image.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Finding the size of a disk image failed.
    #[error("cannot find the size of disk image {path}")]
    SizeDisk {
        /// The image.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A tap name does not fit `IFNAMSIZ` or contains a NUL byte.
    #[error("tap name {name:?} is invalid: at most 15 bytes and no NUL")]
    TapName {
        /// The name.
        name: String,
    },
    /// Opening `/dev/net/tun` failed.
    #[error("cannot open /dev/net/tun for tap {name}")]
    OpenTun {
        /// The tap's name.
        name: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A tun ioctl failed.
    #[error("{ioctl} failed on tap {name}")]
    TapIoctl {
        /// The ioctl, e.g. `TUNSETIFF`.
        ioctl: &'static str,
        /// The tap's name.
        name: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A device asked for a queue size virtio does not allow.
    #[error("queue {queue} maximum size {size} is not a power of two in 1..=32768")]
    QueueMaxSize {
        /// The queue index.
        queue: u16,
        /// The size asked.
        size: u16,
    },
    /// A device has more queues than the transport supports.
    #[error("{count} queues is more than the transport supports ({max})")]
    QueueCount {
        /// Queues the device asked for.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Creating a queue's notification eventfd failed.
    #[error("cannot create the notification eventfd of queue {queue}")]
    CreateQueueEventFd {
        /// The queue index.
        queue: u16,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The driver's queue configuration is unusable (checked at `DRIVER_OK`).
    #[error("queue {queue} is set up wrongly by the driver")]
    QueueSetup {
        /// The queue index.
        queue: u16,
        /// The cause.
        #[source]
        source: virtio_queue::Error,
    },
    /// The driver's queue lies outside guest memory (checked at `DRIVER_OK`).
    #[error("queue {queue} rings are not in guest memory")]
    QueueMemory {
        /// The queue index.
        queue: u16,
    },
    /// A device was activated without a queue it needs.
    #[error("{device} needs queue {queue}, which the driver did not make ready")]
    QueueMissing {
        /// The device, e.g. `virtio-blk`.
        device: &'static str,
        /// The queue index.
        queue: u16,
    },
    /// Accessing a virtqueue failed (a broken avail ring, an unwritable used ring).
    #[error("access to queue {queue} failed")]
    QueueAccess {
        /// The queue index.
        queue: u16,
        /// The cause.
        #[source]
        source: virtio_queue::Error,
    },
    /// A request could not be completed: no place to write its status.
    #[error("descriptor chain {head} on queue {queue} is malformed")]
    MalformedChain {
        /// The queue index.
        queue: u16,
        /// The head descriptor index.
        head: u16,
    },
    /// Raising the device's interrupt failed.
    #[error("cannot raise the device interrupt")]
    Interrupt(#[source] io::Error),
    /// Creating the worker's epoll instance or stop eventfd failed.
    #[error("cannot set up the epoll loop of the {device} worker")]
    WorkerSetup {
        /// The device, e.g. `virtio-net`.
        device: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Spawning the worker thread failed.
    #[error("cannot spawn the {device} worker thread")]
    SpawnWorker {
        /// The device.
        device: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `epoll_wait` failed in the worker.
    #[error("epoll_wait failed in the {device} worker")]
    WorkerWait {
        /// The device.
        device: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Stopping the worker failed (the stop eventfd could not be written).
    #[error("cannot stop the {device} worker")]
    StopWorker {
        /// The device.
        device: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The worker thread panicked.
    #[error("the {device} worker thread panicked")]
    WorkerPanicked {
        /// The device.
        device: &'static str,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
