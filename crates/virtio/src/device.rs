//! The contract between the transport and a device model.

use crate::{InterruptStatus, Result};
use std::os::fd::RawFd;
use virtio_queue::Queue;
use vm_memory::GuestAddressSpace;

/// Feature bit 32: the device is a virtio 1.x ("modern") device. The
/// transport always offers it and refuses `FEATURES_OK` without it.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// What devices need of guest memory: vm-memory's [`GuestAddressSpace`]
/// that can move to a worker thread. Implemented for every such type, e.g.
/// `Arc<GuestMemoryMmap>` or kvmkit-memory's `GuestMemoryHandle`.
///
/// ```
/// use std::sync::Arc;
/// use vm_memory::{GuestAddress, GuestMemoryMmap};
/// fn needs<M: kvmkit_virtio::Memory>(_: &M) {}
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
/// needs(&Arc::new(mem));
/// ```
pub trait Memory: GuestAddressSpace + Send + Sync + 'static {}

impl<M: GuestAddressSpace + Send + Sync + 'static> Memory for M {}

/// What a device gets when the driver sets `DRIVER_OK`.
#[derive(Debug)]
pub struct Activation<M> {
    /// Guest memory.
    pub mem: M,
    /// One queue per [`VirtioDevice::queue_max_sizes`] entry; queues the
    /// driver did not make ready are present with `ready() == false`. Ready
    /// queues have been checked: power-of-two size, aligned rings inside
    /// guest memory.
    pub queues: Vec<Queue>,
    /// The interrupt: the device calls
    /// [`InterruptStatus::signal_used_queue`] after adding used buffers.
    pub interrupt: InterruptStatus,
    /// The features the driver accepted (always with
    /// [`VIRTIO_F_VERSION_1`]).
    pub features: u64,
}

/// A virtio device model behind a transport.
///
/// The transport owns the device behind a mutex and calls these methods
/// from whichever thread touches it: a vCPU (register accesses, `QueueNotify`
/// writes that no ioeventfd caught) or the [`crate::Worker`] (ioeventfds and
/// the device's own fds). A method returning an error puts the device in
/// `DEVICE_NEEDS_RESET`; nothing a guest does may make one panic.
///
/// ```
/// use kvmkit_virtio::{Activation, Memory, Result, VirtioDevice, VIRTIO_F_VERSION_1};
/// use virtio_queue::{Queue, QueueOwnedT, QueueT};
///
/// /// Completes every buffer untouched (a "null" device of type 0x42).
/// #[derive(Default)]
/// struct Sink<M> { active: Option<Activation<M>> }
///
/// impl<M: Memory> VirtioDevice<M> for Sink<M> {
///     fn device_type(&self) -> u32 { 0x42 }
///     fn name(&self) -> &'static str { "sink" }
///     fn queue_max_sizes(&self) -> &[u16] { &[16] }
///     fn features(&self) -> u64 { VIRTIO_F_VERSION_1 }
///     fn read_config(&self, _: u64, data: &mut [u8]) { data.fill(0) }
///     fn write_config(&mut self, _: u64, _: &[u8]) {}
///     fn activate(&mut self, a: Activation<M>) -> Result<()> { self.active = Some(a); Ok(()) }
///     fn reset(&mut self) { self.active = None }
///     fn process_queue(&mut self, _: u16) -> Result<()> {
///         let Some(a) = self.active.as_mut() else { return Ok(()) };
///         let mem = a.mem.memory();
///         let q = &mut a.queues[0];
///         while let Some(chain) = q.pop_descriptor_chain(&*mem) {
///             let _ = q.add_used(&*mem, chain.head_index(), 0);
///         }
///         let _ = a.interrupt.signal_used_queue();
///         Ok(())
///     }
/// }
/// # use vm_memory::GuestAddressSpace;
/// # let _ = Sink::<std::sync::Arc<vm_memory::GuestMemoryMmap>>::default();
/// ```
pub trait VirtioDevice<M: Memory>: Send {
    /// The virtio device id (1 net, 2 block, …).
    fn device_type(&self) -> u32;

    /// A short name for messages and thread names, e.g. `virtio-blk`.
    fn name(&self) -> &'static str;

    /// The maximum size of each queue: powers of two, at most 32768.
    fn queue_max_sizes(&self) -> &[u16];

    /// The features the device offers (the transport adds
    /// [`VIRTIO_F_VERSION_1`]).
    fn features(&self) -> u64;

    /// Reads the device-specific configuration space at `offset`; bytes
    /// past its end read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes the device-specific configuration space; what the device does
    /// not allow is ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// Starts the device: the driver set `DRIVER_OK`.
    fn activate(&mut self, activation: Activation<M>) -> Result<()>;

    /// Returns the device to its initial state, dropping its queues: the
    /// driver wrote 0 to `Status`.
    fn reset(&mut self);

    /// Processes queue `index`: the driver notified it. Called only between
    /// activation and reset; an index the device has no queue for, or a
    /// queue not ready, is ignored.
    fn process_queue(&mut self, index: u16) -> Result<()>;

    /// Fds of the device's own (a tap), which its worker polls
    /// edge-triggered for input and reports through
    /// [`VirtioDevice::process_event`] with their position in this list.
    fn event_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    /// Fd number `index` of [`VirtioDevice::event_fds`] became readable.
    fn process_event(&mut self, index: usize) -> Result<()> {
        let _ = index;
        Ok(())
    }
}
