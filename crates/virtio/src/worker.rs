//! The per-device worker thread: epolls the queue ioeventfds and the
//! device's own fds and processes what they report.

use crate::device::{Memory, VirtioDevice};
use crate::{Error, MmioTransport, Result};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const STOP: u64 = u64::MAX;
const DEVICE_FD: u64 = 1 << 32;

/// A thread serving one device: it waits (epoll) on the transport's queue
/// eventfds (those a VMM registers as ioeventfds), on the device's own fds
/// (virtio-net's tap, edge-triggered), and on a stop eventfd, and calls
/// [`MmioTransport::process_queue`] / [`MmioTransport::process_event`].
///
/// Dropping the worker stops it too; [`Worker::stop`] also reports how the
/// thread ended.
///
/// ```
/// use std::sync::Arc;
/// use kvmkit_virtio::{Block, MmioTransport, Worker};
/// use vm_memory::{GuestAddress, GuestMemoryMmap};
/// use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
/// use vmm_sys_util::tempfile::TempFile;
///
/// let disk = TempFile::new().unwrap();
/// let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap());
/// let irq = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
/// let blk = Arc::new(MmioTransport::new(Block::open(disk.as_path(), true).unwrap(), mem, irq).unwrap());
/// let worker = Worker::spawn(blk.clone()).unwrap();
/// blk.queue_event(0).unwrap().write(1).unwrap(); // ignored: the driver is not ready
/// worker.stop().unwrap();
/// ```
#[derive(Debug)]
pub struct Worker {
    stop: EventFd,
    thread: Option<JoinHandle<Result<()>>>,
    device: &'static str,
}

impl Worker {
    /// Starts the worker thread (named after the device) for `transport`.
    pub fn spawn<D, M>(transport: Arc<MmioTransport<D, M>>) -> Result<Self>
    where
        D: VirtioDevice<M> + 'static,
        M: Memory,
    {
        let device = transport.name();
        let setup = |source| Error::WorkerSetup { device, source };
        let stop = EventFd::new(EFD_NONBLOCK).map_err(setup)?;
        let epoll = Epoll::new().map_err(setup)?;
        epoll
            .ctl(
                ControlOperation::Add,
                stop.as_raw_fd(),
                EpollEvent::new(EventSet::IN, STOP),
            )
            .map_err(setup)?;
        for ev in transport.ioevents() {
            epoll
                .ctl(
                    ControlOperation::Add,
                    ev.fd.as_raw_fd(),
                    EpollEvent::new(EventSet::IN, u64::from(ev.datamatch)),
                )
                .map_err(setup)?;
        }
        for (i, fd) in (0u64..).zip(transport.device_event_fds()) {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN | EventSet::EDGE_TRIGGERED, DEVICE_FD | i),
                )
                .map_err(setup)?;
        }
        let thread = std::thread::Builder::new()
            .name(device.to_string())
            .spawn(move || run(&transport, &epoll))
            .map_err(|source| Error::SpawnWorker { device, source })?;
        Ok(Worker {
            stop,
            thread: Some(thread),
            device,
        })
    }

    /// Stops the thread and waits for it; returns its error if it failed.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let device = self.device;
        self.stop
            .write(1)
            .map_err(|source| Error::StopWorker { device, source })?;
        thread
            .join()
            .map_err(|_| Error::WorkerPanicked { device })?
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn run<D: VirtioDevice<M>, M: Memory>(t: &MmioTransport<D, M>, epoll: &Epoll) -> Result<()> {
    let mut events = [EpollEvent::default(); 16];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(Error::WorkerWait {
                    device: t.name(),
                    source,
                })
            }
        };
        for ev in events.iter().take(n) {
            match ev.data() {
                STOP => return Ok(()),
                d if d & DEVICE_FD != 0 => {
                    if let Ok(i) = usize::try_from(d & !DEVICE_FD) {
                        t.process_event(i);
                    }
                }
                q => {
                    let Ok(q) = u16::try_from(q) else { continue };
                    if let Some(fd) = t.queue_event(q) {
                        // Clears the count; EAGAIN (already read) is fine.
                        let _ = fd.read();
                    }
                    t.process_queue(q);
                }
            }
        }
    }
}
