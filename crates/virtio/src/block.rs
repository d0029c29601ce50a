//! virtio-blk (device id 2) on a raw image file.

use crate::device::{Activation, Memory, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::sys;
use crate::{Error, Result};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_SIZE_MAX,
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

/// The virtio-blk sector: offsets and the capacity count in these.
pub const SECTOR_BYTES: u64 = 512;
/// The size of the request queue.
pub const BLOCK_QUEUE_SIZE: u16 = 256;
/// `seg_max`: data descriptors per request (the queue size less the header
/// and the status descriptors).
pub const BLOCK_SEG_MAX: u32 = BLOCK_QUEUE_SIZE as u32 - 2;
/// `size_max`: the largest descriptor of a request, in bytes.
pub const BLOCK_SIZE_MAX: u32 = 1 << 20;

const ID_BYTES: usize = VIRTIO_BLK_ID_BYTES as usize;
const HEADER_BYTES: usize = 16;
const CONFIG_BYTES: usize = 24;
const DEVICE_ID: u32 = 2;

/// A request that cannot even be answered: no writable status byte.
#[derive(Debug)]
struct Malformed;

/// The image and what the device tells the driver about it.
struct Disk {
    file: File,
    path: PathBuf,
    read_only: bool,
    capacity: u64,
    id: [u8; ID_BYTES],
}

/// A virtio block device backed by a raw image file.
///
/// Requests are served synchronously in the thread that processes the queue
/// (the worker, or a vCPU on a `QueueNotify` exit), with `pread`/`pwrite`
/// straight between the file and guest memory: no bounce buffer. Supported:
/// `IN`, `OUT`, `FLUSH` (`fdatasync`), `GET_ID`; anything else completes with
/// `VIRTIO_BLK_S_UNSUPP`.
///
/// ```
/// use std::sync::Arc;
/// use kvmkit_virtio::{Block, VirtioDevice};
/// use vm_memory::GuestMemoryMmap;
/// use vmm_sys_util::tempfile::TempFile;
///
/// let disk = TempFile::new().unwrap();
/// disk.as_file().set_len(8 * 512).unwrap();
/// let blk: Block<Arc<GuestMemoryMmap>> = Block::open(disk.as_path(), true).unwrap();
/// assert_eq!(blk.capacity_sectors(), 8);
/// assert_eq!(blk.device_type(), 2);
/// assert!(Block::<Arc<GuestMemoryMmap>>::open("/nonexistent/disk.img", false)
///     .unwrap_err().to_string().contains("/nonexistent/disk.img"));
/// ```
pub struct Block<M> {
    disk: Disk,
    config: [u8; CONFIG_BYTES],
    active: Option<Activation<M>>,
    descs: Vec<Descriptor>,
}

impl<M> fmt::Debug for Block<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("path", &self.disk.path)
            .field("read_only", &self.disk.read_only)
            .field("capacity_sectors", &self.disk.capacity)
            .field("active", &self.active.is_some())
            .finish_non_exhaustive()
    }
}

impl<M: Memory> Block<M> {
    /// Opens the raw image at `path`, read-write or read-only (then the
    /// device offers `VIRTIO_BLK_F_RO` and fails writes with
    /// `VIRTIO_BLK_S_IOERR`, as Linux expects). The capacity is the file
    /// size rounded down to whole sectors; a block device works too.
    pub fn open(path: impl AsRef<Path>, read_only: bool) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(&path)
            .map_err(|source| Error::OpenDisk {
                path: path.clone(),
                source,
            })?;
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|source| Error::SizeDisk {
                path: path.clone(),
                source,
            })?;
        // The default serial: the image's device and inode, as Firecracker
        // does, so it is stable across runs.
        let mut id = [0u8; ID_BYTES];
        if let Ok(meta) = file.metadata() {
            let s = format!("{:x}{:x}", meta.dev(), meta.ino());
            let n = s.len().min(ID_BYTES);
            id[..n].copy_from_slice(&s.as_bytes()[..n]);
        }
        let capacity = size / SECTOR_BYTES;
        let mut config = [0u8; CONFIG_BYTES];
        config[0..8].copy_from_slice(&capacity.to_le_bytes());
        config[8..12].copy_from_slice(&BLOCK_SIZE_MAX.to_le_bytes());
        config[12..16].copy_from_slice(&BLOCK_SEG_MAX.to_le_bytes());
        Ok(Block {
            disk: Disk {
                file,
                path,
                read_only,
                capacity,
                id,
            },
            config,
            active: None,
            descs: Vec::with_capacity(usize::from(BLOCK_QUEUE_SIZE)),
        })
    }

    /// Sets the 20-byte serial `GET_ID` returns (shorter ids are padded
    /// with NULs, longer ones cut).
    pub fn with_id(mut self, id: &[u8]) -> Self {
        let n = id.len().min(ID_BYTES);
        self.disk.id = [0; ID_BYTES];
        self.disk.id[..n].copy_from_slice(&id[..n]);
        self
    }

    /// The image's path.
    pub fn path(&self) -> &Path {
        &self.disk.path
    }

    /// Whether the device is read-only.
    pub fn read_only(&self) -> bool {
        self.disk.read_only
    }

    /// The capacity in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.disk.capacity
    }
}

impl<M: Memory> VirtioDevice<M> for Block<M> {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn name(&self) -> &'static str {
        "virtio-blk"
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[BLOCK_QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut f = VIRTIO_F_VERSION_1
            | 1 << VIRTIO_BLK_F_FLUSH
            | 1 << VIRTIO_BLK_F_SEG_MAX
            | 1 << VIRTIO_BLK_F_SIZE_MAX;
        if self.disk.read_only {
            f |= 1 << VIRTIO_BLK_F_RO;
        }
        f
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // Nothing is writable: no VIRTIO_BLK_F_CONFIG_WCE.
    }

    fn activate(&mut self, activation: Activation<M>) -> Result<()> {
        if !activation.queues.first().is_some_and(QueueT::ready) {
            return Err(Error::QueueMissing {
                device: "virtio-blk",
                queue: 0,
            });
        }
        self.active = Some(activation);
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
    }

    fn process_queue(&mut self, index: u16) -> Result<()> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        let Some(q) = a.queues.get_mut(usize::from(index)) else {
            return Ok(());
        };
        let mem = a.mem.memory();
        let mut used = false;
        let mut result = Ok(());
        loop {
            let chain = match q.iter(&*mem) {
                Ok(mut it) => it.next(),
                Err(source) => {
                    result = Err(Error::QueueAccess {
                        queue: index,
                        source,
                    });
                    break;
                }
            };
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            let len = match self.disk.handle(&*mem, chain, &mut self.descs) {
                Ok(len) => len,
                Err(Malformed) => {
                    let _ = q.add_used(&*mem, head, 0);
                    result = Err(Error::MalformedChain { queue: index, head });
                    used = true;
                    break;
                }
            };
            if let Err(source) = q.add_used(&*mem, head, len) {
                result = Err(Error::QueueAccess {
                    queue: index,
                    source,
                });
                break;
            }
            used = true;
        }
        if used && q.needs_notification(&*mem).unwrap_or(true) {
            a.interrupt.signal_used_queue().map_err(Error::Interrupt)?;
        }
        result
    }
}

/// Reads `data.len()` bytes of `config` at `offset`, zero past its end.
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

/// Calls `f(addr, len)` for the guest ranges covering bytes
/// `skip .. skip + len` of the buffers `descs` describe.
pub(crate) fn for_each_range<E>(
    descs: &[Descriptor],
    mut skip: u64,
    mut len: u64,
    mut f: impl FnMut(GuestAddress, usize) -> Result<(), E>,
    overflow: E,
) -> Result<(), E> {
    for d in descs {
        if len == 0 {
            break;
        }
        let dlen = u64::from(d.len());
        if skip >= dlen {
            skip -= dlen;
            continue;
        }
        let n = (dlen - skip).min(len);
        let Some(addr) = d.addr().checked_add(skip) else {
            return Err(overflow);
        };
        let Ok(n_usize) = usize::try_from(n) else {
            return Err(overflow);
        };
        f(addr, n_usize)?;
        skip = 0;
        len -= n;
    }
    if len == 0 {
        Ok(())
    } else {
        Err(overflow)
    }
}

fn io_err(_: impl Sized) -> u32 {
    VIRTIO_BLK_S_IOERR
}

/// Which way [`transfer`] moves bytes.
#[derive(Clone, Copy)]
enum Dir {
    /// File to guest memory (`IN`).
    FileToGuest,
    /// Guest memory to file (`OUT`).
    GuestToFile,
}

/// Moves the guest range `addr .. addr + len` from or to `file` at
/// `*offset`, slice by host slice, advancing `*offset`.
fn transfer<G: GuestMemory>(
    mem: &G,
    addr: GuestAddress,
    len: usize,
    dir: Dir,
    file: &File,
    offset: &mut u64,
) -> Result<(), u32> {
    let access = match dir {
        Dir::FileToGuest => Permissions::Write,
        Dir::GuestToFile => Permissions::Read,
    };
    let mut done = 0usize;
    for slice in mem.get_slices(addr, len, access).map_err(io_err)? {
        let slice = slice.map_err(io_err)?;
        let mut off = 0usize;
        while off < slice.len() {
            let sub = slice.offset(off).map_err(io_err)?;
            let r = match dir {
                Dir::FileToGuest => sys::pread_volatile(file, &sub, *offset),
                Dir::GuestToFile => sys::pwrite_volatile(file, &sub, *offset),
            };
            match r {
                // End of file: the image shrank under us.
                Ok(0) => return Err(VIRTIO_BLK_S_IOERR),
                Ok(n) => {
                    off += n;
                    *offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(VIRTIO_BLK_S_IOERR),
            }
        }
        done += slice.len();
    }
    if done == len {
        Ok(())
    } else {
        Err(VIRTIO_BLK_S_IOERR)
    }
}

impl Disk {
    /// Serves one request; returns the used length, or `Malformed` when
    /// there is nowhere to put a status.
    fn handle<G: GuestMemory>(
        &self,
        mem: &G,
        chain: DescriptorChain<&G>,
        descs: &mut Vec<Descriptor>,
    ) -> Result<u32, Malformed> {
        descs.clear();
        descs.extend(chain);
        let Some(last) = descs.last() else {
            return Err(Malformed);
        };
        // A chain the iterator cut short (a loop, an index past the table,
        // a descriptor outside memory, more than 4 GiB) ends in NEXT.
        if last.has_next() || !last.is_write_only() || last.len() == 0 {
            return Err(Malformed);
        }
        let status_addr = last
            .addr()
            .checked_add(u64::from(last.len()) - 1)
            .ok_or(Malformed)?;
        if !mem.check_range(status_addr, 1, Permissions::Write) {
            return Err(Malformed);
        }
        let (status, used) = match self.execute(mem, descs) {
            Ok(used) => (VIRTIO_BLK_S_OK, used),
            Err(status) => (status, 1),
        };
        let status = u8::try_from(status).unwrap_or(u8::MAX);
        mem.write_obj(status, status_addr).map_err(|_| Malformed)?;
        Ok(used)
    }

    /// Executes the request; returns the used length or an error status.
    fn execute<G: GuestMemory>(&self, mem: &G, descs: &[Descriptor]) -> Result<u32, u32> {
        // Device-readable buffers first, then device-writable ones.
        let first_w = descs
            .iter()
            .position(Descriptor::is_write_only)
            .unwrap_or(descs.len());
        let (readable, writable) = descs.split_at(first_w);
        if writable.iter().any(|d| !d.is_write_only()) {
            return Err(VIRTIO_BLK_S_IOERR);
        }
        let too_many = descs.len() > BLOCK_SEG_MAX as usize + 2;
        if too_many || descs.iter().any(|d| d.len() > BLOCK_SIZE_MAX) {
            return Err(VIRTIO_BLK_S_IOERR);
        }
        let r_total: u64 = readable.iter().map(|d| u64::from(d.len())).sum();
        let w_total: u64 = writable.iter().map(|d| u64::from(d.len())).sum();
        let mut header = [0u8; HEADER_BYTES];
        let mut pos = 0usize;
        for_each_range(
            readable,
            0,
            HEADER_BYTES as u64,
            |addr, n| {
                mem.read_slice(&mut header[pos..pos + n], addr)
                    .map_err(io_err)?;
                pos += n;
                Ok(())
            },
            VIRTIO_BLK_S_IOERR,
        )?;
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut sector_bytes = [0u8; 8];
        sector_bytes.copy_from_slice(&header[8..16]);
        let sector = u64::from_le_bytes(sector_bytes);
        let data_in = w_total - 1; // the status byte is the last one
        let data_out = r_total - HEADER_BYTES as u64;
        match kind {
            VIRTIO_BLK_T_IN => {
                let mut offset = self.check_io(sector, data_in)?;
                for_each_range(
                    writable,
                    0,
                    data_in,
                    |addr, n| transfer(mem, addr, n, Dir::FileToGuest, &self.file, &mut offset),
                    VIRTIO_BLK_S_IOERR,
                )?;
                u32::try_from(data_in + 1).map_err(io_err)
            }
            VIRTIO_BLK_T_OUT => {
                if self.read_only {
                    return Err(VIRTIO_BLK_S_IOERR);
                }
                let mut offset = self.check_io(sector, data_out)?;
                for_each_range(
                    readable,
                    HEADER_BYTES as u64,
                    data_out,
                    |addr, n| transfer(mem, addr, n, Dir::GuestToFile, &self.file, &mut offset),
                    VIRTIO_BLK_S_IOERR,
                )?;
                Ok(1)
            }
            VIRTIO_BLK_T_FLUSH => {
                if !self.read_only {
                    self.file.sync_data().map_err(io_err)?;
                }
                Ok(1)
            }
            VIRTIO_BLK_T_GET_ID => {
                let n = data_in.min(ID_BYTES as u64);
                let mut pos = 0usize;
                for_each_range(
                    writable,
                    0,
                    n,
                    |addr, len| {
                        mem.write_slice(&self.id[pos..pos + len], addr)
                            .map_err(io_err)?;
                        pos += len;
                        Ok(())
                    },
                    VIRTIO_BLK_S_IOERR,
                )?;
                u32::try_from(n + 1).map_err(io_err)
            }
            _ => Err(VIRTIO_BLK_S_UNSUPP),
        }
    }

    /// Checks an I/O of `len` bytes at `sector`: whole sectors, inside the
    /// disk. Returns the byte offset.
    fn check_io(&self, sector: u64, len: u64) -> Result<u64, u32> {
        if len % SECTOR_BYTES != 0 {
            return Err(VIRTIO_BLK_S_IOERR);
        }
        let offset = sector.checked_mul(SECTOR_BYTES).ok_or(VIRTIO_BLK_S_IOERR)?;
        let end = offset.checked_add(len).ok_or(VIRTIO_BLK_S_IOERR)?;
        if end > self.capacity * SECTOR_BYTES {
            return Err(VIRTIO_BLK_S_IOERR);
        }
        Ok(offset)
    }
}

#[cfg(test)]
// Test constants (virtio status values, descriptor flags) fit their casts.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::testutil::{activation, mem, Broken, Counter, Driver, Mem, R, W};
    use crate::InterruptStatus;
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT};
    use vmm_sys_util::tempfile::TempFile;

    const HDR: u64 = 0x10_0000;
    const STATUS: u64 = 0x10_0800;
    const BUF: u64 = 0x10_1000;
    const SECTORS: u64 = 64;

    struct Env {
        file: TempFile,
        mem: Mem,
        blk: Block<Mem>,
        irq: Arc<Counter>,
    }

    fn env(read_only: bool) -> Env {
        let file = TempFile::new().unwrap();
        let pattern: Vec<u8> = (0..SECTORS * SECTOR_BYTES)
            .map(|i| (i % 251) as u8)
            .collect();
        file.as_file().write_all_at(&pattern, 0).unwrap();
        let mem = mem();
        let blk = Block::open(file.as_path(), read_only).unwrap();
        Env {
            file,
            mem,
            blk,
            irq: Arc::new(Counter::default()),
        }
    }

    impl Env {
        fn start<'a>(&mut self, mem: &'a Mem) -> Driver<'a> {
            let d = Driver::new(mem, 0, 16);
            let (a, irq) = activation(&self.mem, vec![d.queue()]);
            self.irq = irq;
            self.blk.activate(a).unwrap();
            d
        }

        fn header(&self, kind: u32, sector: u64) {
            self.mem.write_obj(kind, GuestAddress(HDR)).unwrap();
            self.mem.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
            self.mem.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
            self.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        }

        fn status(&self) -> u8 {
            self.mem.read_obj(GuestAddress(STATUS)).unwrap()
        }

        fn file_bytes(&self, offset: u64, len: usize) -> Vec<u8> {
            let mut v = vec![0; len];
            self.file.as_file().read_exact_at(&mut v, offset).unwrap();
            v
        }
    }

    fn standard(kind: u16, data_len: u32) -> Vec<(u64, u32, u16)> {
        vec![(HDR, 16, R), (BUF, data_len, kind), (STATUS, 1, W)]
    }

    #[test]
    fn read_request_fills_guest_memory() {
        let mut e = env(false);
        let mem = e.mem.clone();
        let mut d = e.start(&mem);
        e.header(VIRTIO_BLK_T_IN, 2);
        let head = d.post(&standard(W, 4096));
        e.blk.process_queue(0).unwrap();
        assert_eq!(e.status(), VIRTIO_BLK_S_OK as u8);
        assert_eq!(d.used_idx(), 1);
        assert_eq!(d.used(0), (u32::from(head), 4097));
        let mut got = vec![0u8; 4096];
        mem.read_slice(&mut got, GuestAddress(BUF)).unwrap();
        assert_eq!(got, e.file_bytes(1024, 4096));
        assert_eq!(e.irq.count(), 1);
    }

    #[test]
    fn write_request_reaches_the_file() {
        let mut e = env(false);
        let mem = e.mem.clone();
        let mut d = e.start(&mem);
        mem.write_slice(&[0xab; 1024], GuestAddress(BUF)).unwrap();
        e.header(VIRTIO_BLK_T_OUT, 5);
        d.post(&standard(R, 1024));
        e.blk.process_queue(0).unwrap();
        assert_eq!(e.status(), VIRTIO_BLK_S_OK as u8);
        assert_eq!(d.used(0).1, 1);
        assert_eq!(e.file_bytes(5 * 512, 1024), vec![0xab; 1024]);
        assert_ne!(e.file_bytes(4 * 512, 1), vec![0xab]);
    }

    #[test]
    fn flush_and_get_id() {
        let mut e = env(false);
        e.blk = Block::open(e.file.as_path(), false)
            .unwrap()
            .with_id(b"kvmkit-disk-0");
        let mem = e.mem.clone();
        let mut d = e.start(&mem);
        e.header(VIRTIO_BLK_T_FLUSH, 0);
        d.post(&[(HDR, 16, R), (STATUS, 1, W)]);
        e.blk.process_queue(0).unwrap();
        assert_eq!(e.status(), VIRTIO_BLK_S_OK as u8);

        e.header(VIRTIO_BLK_T_GET_ID, 0);
        d.post(&standard(W, 20));
        e.blk.process_queue(0).unwrap();
        assert_eq!(e.status(), VIRTIO_BLK_S_OK as u8);
        assert_eq!(d.used(1).1, 21);
        let mut id = [0u8; 20];
        mem.read_slice(&mut id, GuestAddress(BUF)).unwrap();
        assert_eq!(&id[..13], b"kvmkit-disk-0");
        assert_eq!(&id[13..], &[0; 7]);
    }

    #[test]
    fn get_id_into_a_short_buffer_writes_what_fits() {
        let mut e = env(false);
        let mem = e.mem.clone();
        let mut d = e.start(&mem);
        e.header(VIRTIO_BLK_T_GET_ID, 0);
        d.post(&standard(W, 8));
        e.blk.process_queue(0).unwrap();
        assert_eq!(e.status(), VIRTIO_BLK_S_OK as u8);
        assert_eq!(d.used(0).1, 9);
    }

    #[test]
    fn read_only_device_refuses_writes() {
        let mut e = env(true);
        assert!(e.blk.read_only());
        assert_ne!(
            VirtioDevice::<Mem>::features(&e.blk) & 1 << VIRTIO_BLK_F_RO,
            0
        );
        let mem = e.mem.clone();
        let mut d = e.start(&mem);
        let before = e.file_bytes(0, 512);
        mem.write_slice(&[0xcd; 512], GuestAddress(BUF)).unwrap();
        e.header(VIRTIO_BLK_T_OUT, 0);
        d.post(&standard(R, 512));
        e.blk.process_queue(0).unwrap();
        assert_eq!(e.status(), VIRTIO_BLK_S_IOERR as u8);
        assert_eq!(e.file_bytes(0, 512), before);
        // Reads and flushes still work.
        e.header(VIRTIO_BLK_T_IN, 0);
        d.post(&standard(W, 512));
        e.blk.process_queue(0).unwrap();
        assert_eq!(e.status(), VIRTIO_BLK_S_OK as u8);
        e.header(VIRTIO_BLK_T_FLUSH, 0);
        d.post(&[(HDR, 16, R), (STATUS, 1, W)]);
        e.blk.process_queue(0).unwrap();
        assert_eq!(e.status(), VIRTIO_BLK_S_OK as u8);
    }

    #[test]
    fn config_space_and_features() {
        let e = env(false);
        let mut cap = [0u8; 8];
        VirtioDevice::<Mem>::read_config(&e.blk, 0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), SECTORS);
        let mut w = [0u8; 4];
        VirtioDevice::<Mem>::read_config(&e.blk, 12, &mut w);
        assert_eq!(u32::from_le_bytes(w), BLOCK_SEG_MAX);
        VirtioDevice::<Mem>::read_config(&e.blk, 8, &mut w);
        assert_eq!(u32::from_le_bytes(w), BLOCK_SIZE_MAX);
        VirtioDevice::<Mem>::read_config(&e.blk, 1000, &mut w);
        assert_eq!(w, [0; 4]);
        VirtioDevice::<Mem>::read_config(&e.blk, u64::MAX, &mut w);
        assert_eq!(w, [0; 4]);
        let f = VirtioDevice::<Mem>::features(&e.blk);
        assert_ne!(f & VIRTIO_F_VERSION_1, 0);
        assert_ne!(f & 1 << VIRTIO_BLK_F_FLUSH, 0);
        assert_eq!(f & 1 << VIRTIO_BLK_F_RO, 0);
        assert!(format!("{:?}", e.blk).contains("capacity_sectors: 64"));
    }

    #[test]
    fn open_errors_name_the_path() {
        let err = Block::<Mem>::open("/nonexistent/kvmkit.img", false).unwrap_err();
        assert!(matches!(err, Error::OpenDisk { .. }));
        assert!(err.to_string().contains("/nonexistent/kvmkit.img"));
    }

    /// Requests the device answers with an error status.
    fn expect_status(bufs: &[(u64, u32, u16)], kind: u32, sector: u64, want: u32) {
        let mut e = env(false);
        let mem = e.mem.clone();
        let mut d = e.start(&mem);
        e.header(kind, sector);
        d.post(bufs);
        e.blk.process_queue(0).unwrap();
        assert_eq!(
            e.status(),
            want as u8,
            "{bufs:x?} type {kind} sector {sector}"
        );
        assert_eq!(d.used_idx(), 1);
        assert_eq!(e.irq.count(), 1);
    }

    #[test]
    fn unknown_request_type_is_unsupported() {
        expect_status(&standard(W, 512), 0x1234, 0, VIRTIO_BLK_S_UNSUPP);
    }

    #[test]
    fn read_past_the_end_is_an_io_error() {
        expect_status(
            &standard(W, 512),
            VIRTIO_BLK_T_IN,
            SECTORS,
            VIRTIO_BLK_S_IOERR,
        );
        expect_status(
            &standard(W, 1024),
            VIRTIO_BLK_T_IN,
            SECTORS - 1,
            VIRTIO_BLK_S_IOERR,
        );
        expect_status(
            &standard(R, 512),
            VIRTIO_BLK_T_OUT,
            SECTORS,
            VIRTIO_BLK_S_IOERR,
        );
    }

    #[test]
    fn sector_overflow_is_an_io_error() {
        expect_status(
            &standard(W, 512),
            VIRTIO_BLK_T_IN,
            u64::MAX,
            VIRTIO_BLK_S_IOERR,
        );
        expect_status(
            &standard(W, 512),
            VIRTIO_BLK_T_IN,
            u64::MAX / 512,
            VIRTIO_BLK_S_IOERR,
        );
    }

    #[test]
    fn partial_sector_is_an_io_error() {
        expect_status(&standard(W, 100), VIRTIO_BLK_T_IN, 0, VIRTIO_BLK_S_IOERR);
        expect_status(&standard(R, 513), VIRTIO_BLK_T_OUT, 0, VIRTIO_BLK_S_IOERR);
    }

    #[test]
    fn data_outside_guest_memory_is_an_io_error() {
        let outside = 0x4000_0000;
        let bufs = [(HDR, 16, R), (outside, 512, W), (STATUS, 1, W)];
        expect_status(&bufs, VIRTIO_BLK_T_IN, 0, VIRTIO_BLK_S_IOERR);
        let bufs = [(HDR, 16, R), (outside, 512, R), (STATUS, 1, W)];
        expect_status(&bufs, VIRTIO_BLK_T_OUT, 0, VIRTIO_BLK_S_IOERR);
        // Straddling the end of memory.
        let end = crate::testutil::MEM_BYTES as u64 - 256;
        let bufs = [(HDR, 16, R), (end, 512, W), (STATUS, 1, W)];
        expect_status(&bufs, VIRTIO_BLK_T_IN, 0, VIRTIO_BLK_S_IOERR);
        // An address that overflows with its length.
        let bufs = [(HDR, 16, R), (u64::MAX - 100, 512, W), (STATUS, 1, W)];
        expect_status(&bufs, VIRTIO_BLK_T_IN, 0, VIRTIO_BLK_S_IOERR);
        // The header itself outside memory.
        let bufs = [(outside, 16, R), (BUF, 512, W), (STATUS, 1, W)];
        expect_status(&bufs, VIRTIO_BLK_T_IN, 0, VIRTIO_BLK_S_IOERR);
    }

    #[test]
    fn oversized_requests_are_io_errors() {
        // One descriptor above size_max.
        let bufs = [(HDR, 16, R), (BUF, BLOCK_SIZE_MAX + 512, W), (STATUS, 1, W)];
        expect_status(&bufs, VIRTIO_BLK_T_IN, 0, VIRTIO_BLK_S_IOERR);
        // A descriptor of almost 4 GiB.
        let bufs = [(HDR, 16, R), (BUF, u32::MAX - 100, W), (STATUS, 1, W)];
        expect_status(&bufs, VIRTIO_BLK_T_IN, 0, VIRTIO_BLK_S_IOERR);
    }

    #[test]
    fn short_header_is_an_io_error() {
        let bufs = [(HDR, 8, R), (BUF, 512, W), (STATUS, 1, W)];
        expect_status(&bufs, VIRTIO_BLK_T_IN, 0, VIRTIO_BLK_S_IOERR);
        // No header at all: only the status.
        expect_status(&[(STATUS, 1, W)], VIRTIO_BLK_T_IN, 0, VIRTIO_BLK_S_IOERR);
    }

    #[test]
    fn readable_after_writable_is_an_io_error() {
        let bufs = [(HDR, 16, R), (BUF, 512, W), (BUF, 512, R), (STATUS, 1, W)];
        expect_status(&bufs, VIRTIO_BLK_T_IN, 0, VIRTIO_BLK_S_IOERR);
    }

    #[test]
    fn any_framing_works() {
        // Header and data in one descriptor; data and status in one.
        let mut e = env(false);
        let mem = e.mem.clone();
        let mut d = e.start(&mem);
        e.header(VIRTIO_BLK_T_OUT, 1);
        mem.write_slice(&[0x5a; 512], GuestAddress(HDR + 16))
            .unwrap();
        d.post(&[(HDR, 16 + 512, R), (STATUS, 1, W)]);
        e.blk.process_queue(0).unwrap();
        assert_eq!(e.status(), VIRTIO_BLK_S_OK as u8);
        assert_eq!(e.file_bytes(512, 512), vec![0x5a; 512]);

        e.header(VIRTIO_BLK_T_IN, 1);
        mem.write_obj(0xffu8, GuestAddress(BUF + 512)).unwrap();
        d.post(&[(HDR, 8, R), (HDR + 8, 8, R), (BUF, 513, W)]);
        e.blk.process_queue(0).unwrap();
        let st: u8 = mem.read_obj(GuestAddress(BUF + 512)).unwrap();
        assert_eq!(st, VIRTIO_BLK_S_OK as u8);
        let mut got = vec![0u8; 512];
        mem.read_slice(&mut got, GuestAddress(BUF)).unwrap();
        assert_eq!(got, vec![0x5a; 512]);
    }

    /// Requests with nowhere to write a status: the chain comes back with
    /// length 0 and the device reports an error (the transport then sets
    /// DEVICE_NEEDS_RESET).
    fn expect_malformed(post: impl FnOnce(&mut Driver<'_>, &Mem)) {
        let mut e = env(false);
        let mem = e.mem.clone();
        let mut d = e.start(&mem);
        e.header(VIRTIO_BLK_T_IN, 0);
        post(&mut d, &mem);
        let err = e.blk.process_queue(0).unwrap_err();
        assert!(
            matches!(
                err,
                Error::MalformedChain { .. } | Error::QueueAccess { .. }
            ),
            "{err}"
        );
        // Nothing was read into the guest and nothing hangs.
        let st: u8 = mem.read_obj(GuestAddress(STATUS)).unwrap();
        assert_eq!(st, 0xff);
    }

    #[test]
    fn data_buffer_where_the_status_should_be() {
        expect_malformed(|d, _| {
            d.post(&[(HDR, 16, R), (BUF, 512, R)]);
        });
        expect_malformed(|d, _| {
            d.post(&[(HDR, 16, R), (BUF, 512, W), (STATUS, 1, R)]);
        });
        expect_malformed(|d, _| {
            d.post(&[(HDR, 16, R), (BUF, 512, W), (STATUS, 0, W)]);
        });
    }

    #[test]
    fn status_outside_guest_memory() {
        expect_malformed(|d, _| {
            d.post(&[(HDR, 16, R), (BUF, 512, W), (0x4000_0000, 1, W)]);
        });
        expect_malformed(|d, _| {
            d.post(&[(HDR, 16, R), (BUF, 512, W), (u64::MAX, 1, W)]);
        });
    }

    #[test]
    fn descriptor_loop_terminates() {
        expect_malformed(|d, _| {
            let next = VRING_DESC_F_NEXT as u16;
            d.post_raw(
                0,
                &[
                    Descriptor::new(HDR, 16, next, 1),
                    Descriptor::new(BUF, 512, W | next, 2),
                    Descriptor::new(STATUS, 1, W | next, 0),
                ],
            );
        });
        expect_malformed(|d, _| {
            let next = VRING_DESC_F_NEXT as u16;
            d.post_raw(0, &[Descriptor::new(STATUS, 1, W | next, 0)]);
        });
    }

    #[test]
    fn next_index_out_of_range() {
        expect_malformed(|d, _| {
            let next = VRING_DESC_F_NEXT as u16;
            d.post_raw(
                0,
                &[
                    Descriptor::new(HDR, 16, next, 1),
                    Descriptor::new(STATUS, 1, W | next, 999),
                ],
            );
        });
    }

    #[test]
    fn head_index_out_of_range() {
        expect_malformed(|d, _| d.make_available(999));
    }

    #[test]
    fn chain_longer_than_4_gib() {
        expect_malformed(|d, _| {
            d.post(&[
                (HDR, 16, R),
                (BUF, u32::MAX, W),
                (BUF, u32::MAX, W),
                (STATUS, 1, W),
            ]);
        });
    }

    #[test]
    fn nested_indirect_table() {
        expect_malformed(|d, mem| {
            let table = 0x18_0000;
            let indirect = VRING_DESC_F_INDIRECT as u16;
            // The indirect table points at another one: nesting is forbidden.
            let raw = RawDescriptor::from(Descriptor::new(table, 16, indirect, 0));
            mem.write_obj(raw, GuestAddress(table)).unwrap();
            d.post_raw(0, &[Descriptor::new(table, 16, indirect, 0)]);
        });
    }

    #[test]
    fn avail_index_far_ahead() {
        let mut e = env(false);
        let mem = e.mem.clone();
        let d = e.start(&mem);
        d.mock.avail().idx().store(100);
        let err = e.blk.process_queue(0).unwrap_err();
        assert!(matches!(err, Error::QueueAccess { .. }), "{err}");
    }

    #[test]
    fn many_requests_in_one_notification() {
        let mut e = env(false);
        let mem = e.mem.clone();
        let mut d = e.start(&mem);
        e.header(VIRTIO_BLK_T_IN, 0);
        for _ in 0..5 {
            d.post(&standard(W, 512));
        }
        e.blk.process_queue(0).unwrap();
        assert_eq!(d.used_idx(), 5);
        assert_eq!(e.irq.count(), 1);
    }

    #[test]
    fn idle_reset_and_unknown_queues_are_harmless() {
        let mut e = env(false);
        // Before activation.
        e.blk.process_queue(0).unwrap();
        let mem = e.mem.clone();
        let mut d = e.start(&mem);
        e.blk.process_queue(7).unwrap();
        e.header(VIRTIO_BLK_T_IN, 0);
        d.post(&standard(W, 512));
        VirtioDevice::<Mem>::reset(&mut e.blk);
        e.blk.process_queue(0).unwrap();
        assert_eq!(d.used_idx(), 0);
    }

    #[test]
    fn activation_without_a_ready_queue_fails() {
        let mut e = env(false);
        let mut q = Queue::new(16).unwrap();
        q.set_ready(false);
        let (a, _) = activation(&e.mem, vec![q]);
        assert!(matches!(
            e.blk.activate(a),
            Err(Error::QueueMissing { queue: 0, .. })
        ));
        let (a, _) = activation(&e.mem, vec![]);
        assert!(e.blk.activate(a).is_err());
    }

    #[test]
    fn broken_interrupt_line_is_reported() {
        let mut e = env(false);
        let mem = e.mem.clone();
        let mut d = Driver::new(&mem, 0, 16);
        let (mut a, _) = activation(&e.mem, vec![d.queue()]);
        a.interrupt = InterruptStatus::new(Arc::new(Broken));
        e.blk.activate(a).unwrap();
        e.header(VIRTIO_BLK_T_IN, 0);
        d.post(&standard(W, 512));
        assert!(matches!(e.blk.process_queue(0), Err(Error::Interrupt(_))));
        assert_eq!(e.status(), VIRTIO_BLK_S_OK as u8);
    }

    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::Queue;
}
