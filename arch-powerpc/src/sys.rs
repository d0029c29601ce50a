//! The raw `ioctl` and `mmap` calls of this crate, each in its own unsafe
//! block with the invariants that make it sound.
//!
//! The request numbers are PowerPC's ([`crate::ioctls`]). Every wrapper
//! checks the direction and size encoded in the number against the argument
//! it is given, so a wrong pairing is an `EINVAL` error, never memory the
//! kernel may read or write out of bounds. On x86_64 hosts the tests call
//! these only on non-KVM file descriptors, where the kernel answers `ENOTTY`.

use crate::ioctls::{
    IOC_NONE, IOC_READ, IOC_WRITE, KVM_CLEAR_DIRTY_LOG, KVM_GET_DEVICE_ATTR, KVM_GET_DIRTY_LOG,
    KVM_GET_ONE_REG, KVM_HAS_DEVICE_ATTR, KVM_PPC_GET_HTAB_FD, KVM_RESET_DIRTY_RINGS,
    KVM_SET_DEVICE_ATTR, KVM_SET_ONE_REG, KVM_SET_USER_MEMORY_REGION,
};
use crate::uapi::{
    kvm_clear_dirty_log, kvm_create_device, kvm_device_attr, kvm_dirty_log, kvm_enable_cap,
    kvm_get_htab_fd, kvm_guest_debug, kvm_irq_level, kvm_irqfd, kvm_one_reg, kvm_regs, kvm_run,
    kvm_sregs, kvm_userspace_memory_region,
};
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

/// UAPI structs the kernel reads or writes whole, and nothing through them:
/// integers (and file descriptor numbers) only, no pointers, no padding, so
/// any bytes the kernel writes make a valid value.
///
/// # Safety
///
/// Implement only for `#[repr(C)]` integer-only structs without padding
/// whose ioctls do not dereference addresses stored in them.
pub(crate) unsafe trait Plain: Copy {}

// SAFETY: integers only, no padding (size 392 = 49 u64s); KVM_GET/SET_REGS
// copy the struct and nothing else.
unsafe impl Plain for kvm_regs {}
// SAFETY: integers and integer unions, explicit padding; KVM_GET/SET_SREGS
// copy the struct and nothing else.
unsafe impl Plain for kvm_sregs {}
// SAFETY: integers only; KVM_SET_GUEST_DEBUG copies the struct.
unsafe impl Plain for kvm_guest_debug {}
// SAFETY: integers only; the vCPU capabilities this crate enables (PAPR,
// IRQ_XICS, PPC_IRQ_XIVE) take integers and file descriptor numbers in
// `args`, never addresses. On a VM fd, `DirtyLogArch::enable_vm_cap` passes
// any capability with the caller's `args`: every VM capability PowerPC's
// KVM accepts (the generic HALT_POLL, MANUAL_DIRTY_LOG_PROTECT2 and
// DIRTY_LOG_RING*, which it refuses, and PPC_ENABLE_HCALL, PPC_SMT,
// PPC_NESTED_HV, PPC_SECURE_GUEST, PPC_DAWR1) reads them as integers too.
unsafe impl Plain for kvm_enable_cap {}
// SAFETY: two u32; KVM_IRQ_LINE copies the struct.
unsafe impl Plain for kvm_irq_level {}
// SAFETY: integers and file descriptor numbers; KVM_IRQFD copies the struct.
unsafe impl Plain for kvm_irqfd {}
// SAFETY: three u32; KVM_CREATE_DEVICE reads and writes back the struct.
unsafe impl Plain for kvm_create_device {}
// SAFETY: a byte array and a u64; KVM_PPC_RTAS_DEFINE_TOKEN copies the
// struct (the name is inline, not a pointer).
unsafe impl Plain for crate::uapi::kvm_rtas_token_args {}
// SAFETY: a u32; KVM_PPC_ALLOCATE_HTAB reads and writes back the order.
unsafe impl Plain for u32 {}
// SAFETY: four u64; KVM_PPC_GET_HTAB_FD copies the struct and returns a
// new fd, following no address.
unsafe impl Plain for kvm_get_htab_fd {}

fn einval(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

fn dir(req: u32) -> u32 {
    req >> 29
}

fn size(req: u32) -> usize {
    ((req >> 16) & 0x1fff) as usize
}

fn ret(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Issues `_IO` ioctl `req` with the integer argument `arg` (a capability, a
/// VM type, a vCPU id…) and returns the kernel's non-negative result.
pub(crate) fn ioctl_val(fd: BorrowedFd<'_>, req: u32, arg: u64) -> io::Result<libc::c_int> {
    if dir(req) != IOC_NONE {
        return Err(einval("not an _IO ioctl"));
    }
    let arg = libc::c_ulong::try_from(arg).map_err(|_| einval("argument too large"))?;
    // SAFETY: `req` is an `_IO` ioctl (checked above): its argument is an
    // integer the kernel does not dereference, so no memory is shared.
    ret(unsafe { libc::ioctl(fd.as_raw_fd(), libc::c_ulong::from(req), arg) })
}

/// Issues `_IOR`/`_IOW`/`_IOWR` ioctl `req` on `arg`, whose size must be the
/// one encoded in `req`; the kernel reads and/or writes exactly that struct.
pub(crate) fn ioctl_plain<T: Plain>(
    fd: BorrowedFd<'_>,
    req: u32,
    arg: &mut T,
) -> io::Result<libc::c_int> {
    if dir(req) & (IOC_READ | IOC_WRITE) == 0 || size(req) != size_of::<T>() {
        return Err(einval("ioctl argument does not match its number"));
    }
    let p: *mut T = arg;
    // SAFETY: `p` is a valid, exclusive `T` of exactly the size encoded in
    // `req` (checked above); `T: Plain` means the kernel accesses only those
    // bytes and any bytes it writes form a valid `T`.
    ret(unsafe { libc::ioctl(fd.as_raw_fd(), libc::c_ulong::from(req), p) })
}

/// Takes ownership of a file descriptor an ioctl just returned.
pub(crate) fn owned_fd(raw: libc::c_int) -> OwnedFd {
    // SAFETY: `raw` was just returned by the kernel as a new descriptor
    // (KVM_CREATE_VM, KVM_CREATE_VCPU, KVM_CREATE_DEVICE) that nothing else
    // owns or will close.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

/// The size in bytes of ONE_REG register `id` (`KVM_REG_SIZE`).
pub(crate) fn reg_size(id: u64) -> usize {
    1usize << ((id & crate::uapi::KVM_REG_SIZE_MASK) >> crate::uapi::KVM_REG_SIZE_SHIFT)
}

/// Wraps `KVM_GET_ONE_REG`: the kernel writes `reg_size(id)` bytes into `data`.
pub(crate) fn get_one_reg(fd: BorrowedFd<'_>, id: u64, data: &mut [u8]) -> io::Result<usize> {
    let len = reg_size(id);
    if data.len() < len {
        return Err(einval("register buffer too small"));
    }
    let mut reg = kvm_one_reg {
        id,
        addr: data.as_mut_ptr() as u64,
    };
    let p: *mut kvm_one_reg = &mut reg;
    // SAFETY: `reg` is a valid kvm_one_reg of the size KVM_GET_ONE_REG
    // encodes; the kernel writes `reg_size(id)` bytes at `reg.addr`, which
    // points into `data`, exclusively borrowed and at least that long.
    ret(unsafe { libc::ioctl(fd.as_raw_fd(), libc::c_ulong::from(KVM_GET_ONE_REG), p) })?;
    Ok(len)
}

/// Wraps `KVM_SET_ONE_REG`: the kernel reads `reg_size(id)` bytes of `data`.
pub(crate) fn set_one_reg(fd: BorrowedFd<'_>, id: u64, data: &[u8]) -> io::Result<usize> {
    let len = reg_size(id);
    if data.len() < len {
        return Err(einval("register buffer too small"));
    }
    let reg = kvm_one_reg {
        id,
        addr: data.as_ptr() as u64,
    };
    let p: *const kvm_one_reg = &reg;
    // SAFETY: `reg` is a valid kvm_one_reg; the kernel only reads
    // `reg_size(id)` bytes at `reg.addr`, which points into `data`, borrowed
    // for the call and at least that long.
    ret(unsafe { libc::ioctl(fd.as_raw_fd(), libc::c_ulong::from(KVM_SET_ONE_REG), p) })?;
    Ok(len)
}

/// A device attribute value: the kernel reads as many bytes as the
/// attribute has (4 or 8 for every attribute this crate sets) from the start
/// of an 8-byte buffer holding the value in native byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttrValue {
    /// A `__u32` attribute.
    U32(u32),
    /// A `__u64` attribute.
    U64(u64),
}

impl AttrValue {
    fn buffer(self) -> u64 {
        let mut b = [0u8; 8];
        match self {
            AttrValue::U32(v) => b[..4].copy_from_slice(&v.to_ne_bytes()),
            AttrValue::U64(v) => b.copy_from_slice(&v.to_ne_bytes()),
        }
        u64::from_ne_bytes(b)
    }
}

/// Wraps `KVM_SET_DEVICE_ATTR` on a device fd.
pub(crate) fn set_device_attr(
    fd: BorrowedFd<'_>,
    group: u32,
    attr: u64,
    value: AttrValue,
) -> io::Result<()> {
    let buf = value.buffer();
    let a = kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr: std::ptr::from_ref(&buf) as u64,
    };
    let p: *const kvm_device_attr = &a;
    // SAFETY: `a` is a valid kvm_device_attr; the kernel reads the attribute
    // value, at most 8 bytes for the XICS and XIVE attributes this crate
    // sets, from `a.addr`, an 8-byte aligned u64 alive for the call.
    ret(unsafe { libc::ioctl(fd.as_raw_fd(), libc::c_ulong::from(KVM_SET_DEVICE_ATTR), p) })?;
    Ok(())
}

/// Wraps `KVM_GET_DEVICE_ATTR` on a device fd for a 64-bit attribute (an
/// XICS source's state).
pub(crate) fn get_device_attr_u64(fd: BorrowedFd<'_>, group: u32, attr: u64) -> io::Result<u64> {
    let mut value = 0u64;
    let a = kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr: std::ptr::from_mut(&mut value) as u64,
    };
    let p: *const kvm_device_attr = &a;
    // SAFETY: `a` is a valid kvm_device_attr; for the 64-bit attributes this
    // is called with (`KVM_DEV_XICS_GRP_SOURCES`) the kernel writes 8 bytes
    // at `a.addr`, which is `value`, an aligned u64 exclusively borrowed for
    // the call.
    ret(unsafe { libc::ioctl(fd.as_raw_fd(), libc::c_ulong::from(KVM_GET_DEVICE_ATTR), p) })?;
    Ok(value)
}

/// Wraps `KVM_PPC_GET_HTAB_FD` on a VM fd: a stream over the guest hash page
/// table, for reading or (with `KVM_GET_HTAB_WRITE` in `flags`) writing.
pub(crate) fn get_htab_fd(vm: BorrowedFd<'_>, flags: u64) -> io::Result<OwnedFd> {
    let mut arg = kvm_get_htab_fd {
        flags,
        start_index: 0,
        reserved: [0; 2],
    };
    let fd = ioctl_plain(vm, KVM_PPC_GET_HTAB_FD, &mut arg)?;
    Ok(owned_fd(fd))
}

/// Wraps `KVM_HAS_DEVICE_ATTR` on a device fd: true when the kernel has it.
pub(crate) fn has_device_attr(fd: BorrowedFd<'_>, group: u32, attr: u64) -> bool {
    let a = kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr: 0,
    };
    let p: *const kvm_device_attr = &a;
    // SAFETY: `a` is a valid kvm_device_attr; KVM_HAS_DEVICE_ATTR only reads
    // it and never follows `addr` (which is 0).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::c_ulong::from(KVM_HAS_DEVICE_ATTR), p) };
    r == 0
}

/// Wraps `KVM_SET_USER_MEMORY_REGION`.
///
/// # Safety
///
/// `region.userspace_addr .. + memory_size` must stay mapped for as long as
/// the slot exists: the guest reads and writes it.
pub(crate) unsafe fn set_user_memory_region(
    fd: BorrowedFd<'_>,
    region: &kvm_userspace_memory_region,
) -> io::Result<()> {
    let p: *const kvm_userspace_memory_region = region;
    // SAFETY: `region` is a valid struct of the encoded size, only read by
    // the kernel; the host range it names stays mapped (the caller's
    // contract above).
    ret(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::c_ulong::from(KVM_SET_USER_MEMORY_REGION),
            p,
        )
    })?;
    Ok(())
}

/// The host's page size, the unit of KVM's memory slots and dirty bitmaps:
/// 64 KiB on most ppc64 distributions, 4 KiB on others. 4 KiB (the
/// smallest Linux page, so the largest bitmap) if `sysconf` fails.
pub(crate) fn host_page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it touches no
    // memory of this process.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n)
        .ok()
        .filter(|n| n.is_power_of_two())
        .unwrap_or(4096)
}

/// Wraps `KVM_GET_DIRTY_LOG`: the kernel copies the bitmap of `slot` into
/// `bitmap`, as it keeps it (see `crate::dirty`).
///
/// # Safety
///
/// `bitmap` must have at least the slot's `ceil(npages / 64)` words
/// (`npages` in host pages): the kernel writes that many and does not know
/// the buffer's length.
pub(crate) unsafe fn get_dirty_log(
    fd: BorrowedFd<'_>,
    slot: u32,
    bitmap: &mut [u64],
) -> io::Result<()> {
    let log = kvm_dirty_log {
        slot,
        padding1: 0,
        dirty_bitmap: bitmap.as_mut_ptr() as u64,
    };
    let p: *const kvm_dirty_log = &log;
    // SAFETY: `log` is a valid kvm_dirty_log of the size KVM_GET_DIRTY_LOG
    // encodes, only read by the kernel; it writes the slot's bitmap at
    // `log.dirty_bitmap`, which is `bitmap`, exclusively borrowed for the
    // call and at least that long (the caller's contract above).
    ret(unsafe { libc::ioctl(fd.as_raw_fd(), libc::c_ulong::from(KVM_GET_DIRTY_LOG), p) })?;
    Ok(())
}

/// Wraps `KVM_CLEAR_DIRTY_LOG` for `num_pages` pages of `slot` from
/// `first_page`; `bitmap` must cover them (`EINVAL` before the kernel is
/// called otherwise).
pub(crate) fn clear_dirty_log(
    fd: BorrowedFd<'_>,
    slot: u32,
    first_page: u64,
    num_pages: u32,
    bitmap: &[u64],
) -> io::Result<()> {
    if bitmap_words(num_pages) > bitmap.len() {
        return Err(einval("dirty bitmap shorter than num_pages"));
    }
    let log = kvm_clear_dirty_log {
        slot,
        num_pages,
        first_page,
        dirty_bitmap: bitmap.as_ptr() as u64,
    };
    let p: *const kvm_clear_dirty_log = &log;
    // SAFETY: `log` is a valid kvm_clear_dirty_log of the encoded size; the
    // kernel only reads `ceil(num_pages / 64)` words at `log.dirty_bitmap`,
    // and `bitmap` has at least that many (checked above) for the call.
    ret(unsafe { libc::ioctl(fd.as_raw_fd(), libc::c_ulong::from(KVM_CLEAR_DIRTY_LOG), p) })?;
    Ok(())
}

/// The words of a bitmap of `num_pages` bits.
pub(crate) fn bitmap_words(num_pages: u32) -> usize {
    usize::try_from(num_pages.div_ceil(64)).unwrap_or(usize::MAX)
}

/// Wraps `KVM_RESET_DIRTY_RINGS`: how many ring entries were reset.
pub(crate) fn reset_dirty_rings(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let n = ioctl_val(fd, KVM_RESET_DIRTY_RINGS, 0)?;
    Ok(n.unsigned_abs())
}

/// A vCPU's shared `kvm_run` mapping, unmapped on drop.
#[derive(Debug)]
pub(crate) struct RunMap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; it is only
// accessed through `&mut self` (or atomically by the kick of kvmkit-core).
unsafe impl Send for RunMap {}

impl RunMap {
    /// Maps `len` bytes of `fd` at offset 0, shared and read-write (the
    /// vCPU's `kvm_run` area).
    pub(crate) fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<RunMap> {
        if len < size_of::<kvm_run>() {
            return Err(einval("kvm_run mapping smaller than struct kvm_run"));
        }
        // SAFETY: a fresh mapping chosen by the kernel (no address hint), so
        // it aliases no Rust object; `fd` is open for the call.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| einval("mmap returned null"))?;
        Ok(RunMap { ptr, len })
    }

    /// `kvm_run.immediate_exit`, shared with the kick of kvmkit-core.
    pub(crate) fn immediate_exit(&self) -> &AtomicU8 {
        let p = self
            .ptr
            .as_ptr()
            .wrapping_add(offset_of!(kvm_run, immediate_exit));
        // SAFETY: a u8 inside the mapping (at least `size_of::<kvm_run>()`
        // bytes, checked by `new`; offset 1), alive as long as `self` and so
        // as the returned borrow; only accessed atomically while shared.
        unsafe { AtomicU8::from_ptr(p) }
    }

    /// `kvm_run.exit_reason`.
    pub(crate) fn exit_reason(&self) -> u32 {
        let p = self
            .ptr
            .as_ptr()
            .wrapping_add(offset_of!(kvm_run, exit_reason))
            .cast::<u32>();
        // SAFETY: an aligned u32 (offset 8 of the page-aligned mapping)
        // inside the mapping (checked by `new`), alive as long as `self`;
        // read atomically.
        let v = unsafe { AtomicU32::from_ptr(p) };
        v.load(Ordering::SeqCst)
    }

    /// The mapping as bytes.
    pub(crate) fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live read-write mapping of `len` bytes owned by
        // `self` until drop, and `&mut self` makes this borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for RunMap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping `new` created, and no
        // borrow of it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ioctls::{KVM_CHECK_EXTENSION, KVM_GET_REGS, KVM_GET_SREGS};
    use std::os::fd::AsFd;

    /// Runs `f` on a thread of its own on which every ioctl whose number is
    /// in `requests` returns 0 without reaching any driver (see
    /// [`with_ioctls_answered`]): a PowerPC KVM that accepted the call.
    pub(crate) fn with_ioctls_accepted<R: Send>(
        requests: &[u32],
        f: impl FnOnce() -> R + Send,
    ) -> R {
        let answers: Vec<(u32, i32)> = requests.iter().map(|&r| (r, 0)).collect();
        with_ioctls_answered(&answers, f)
    }

    /// Runs `f` on a thread of its own on which each ioctl `(request,
    /// errno)` of `answers` never reaches a driver: a seccomp filter answers
    /// it, with 0 when `errno` is 0 (writing nothing back), else failing
    /// with `errno`. This is how a host of another architecture stands in
    /// for a PowerPC KVM. The filter ends with the thread.
    ///
    /// Never accept an ioctl whose result is a new file descriptor: the
    /// code would take ownership of fd 0.
    pub(crate) fn with_ioctls_answered<R: Send>(
        answers: &[(u32, i32)],
        f: impl FnOnce() -> R + Send,
    ) -> R {
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                answer_ioctls(answers);
                f()
            });
            t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// Installs, on the calling thread only, a seccomp filter that answers
    /// `ioctl(_, request, _)` as `answers` say.
    fn answer_ioctls(answers: &[(u32, i32)]) {
        let stmt = |code: u32, k: u32| libc::sock_filter {
            code: u16::try_from(code).expect("BPF opcodes fit 16 bits"),
            jt: 0,
            jf: 0,
            k,
        };
        let jeq = |k: u32, jt: usize, jf: usize| libc::sock_filter {
            code: u16::try_from(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K)
                .expect("BPF opcodes fit 16 bits"),
            jt: u8::try_from(jt).expect("a short list of requests"),
            jf: u8::try_from(jf).expect("a short list of requests"),
            k,
        };
        let ret = libc::BPF_RET | libc::BPF_K;
        let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
        // struct seccomp_data: nr at 0, args[1] (the request) at 24; its
        // low 32 bits come first on a little-endian host.
        let request_low = if cfg!(target_endian = "little") {
            24
        } else {
            28
        };
        let ioctl_nr = u32::try_from(libc::SYS_ioctl).expect("a small number");
        let n = answers.len();
        // 0: load nr; 1: not ioctl -> allow (at 3 + n); 2: load request;
        // 3 + i: request i -> its answer (at 4 + n + i); 3 + n: allow;
        // 4 + n + i: answer i.
        let mut prog = vec![
            stmt(load, 0),
            jeq(ioctl_nr, 0, n + 1),
            stmt(load, request_low),
        ];
        prog.extend(answers.iter().map(|&(r, _)| jeq(r, n, 0)));
        prog.push(stmt(ret, libc::SECCOMP_RET_ALLOW));
        prog.extend(answers.iter().map(|&(_, errno)| {
            let errno = u32::try_from(errno).expect("an errno is positive");
            stmt(
                ret,
                libc::SECCOMP_RET_ERRNO | (errno & libc::SECCOMP_RET_DATA),
            )
        }));
        let fprog = libc::sock_fprog {
            len: u16::try_from(prog.len()).expect("a short program"),
            filter: prog.as_mut_ptr(),
        };
        // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only and
        // affects only the calling thread (which ends with the test).
        let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        assert_eq!(r, 0, "PR_SET_NO_NEW_PRIVS: {}", io::Error::last_os_error());
        let p: *const libc::sock_fprog = &fprog;
        // SAFETY: `fprog` points at `prog`, a valid BPF program of `len`
        // instructions, both alive for the call (the kernel copies them);
        // without SECCOMP_FILTER_FLAG_TSYNC the filter binds this thread only.
        let r = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, p) };
        assert_eq!(r, 0, "seccomp filter: {}", io::Error::last_os_error());
    }

    #[test]
    fn the_seccomp_stand_in_answers_only_the_listed_ioctls_on_its_thread() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let (listed, other) = with_ioctls_accepted(&[KVM_GET_REGS], || {
            let mut regs = kvm_regs::default();
            (
                ioctl_plain(f.as_fd(), KVM_GET_REGS, &mut regs).map_err(|e| e.raw_os_error()),
                ioctl_val(f.as_fd(), KVM_CHECK_EXTENSION, 1).map_err(|e| e.raw_os_error()),
            )
        });
        assert_eq!(listed, Ok(0));
        assert_eq!(other, Err(Some(libc::ENOTTY)));
        // An answer with an errno fails with it.
        let e = with_ioctls_answered(&[(KVM_GET_SREGS, libc::EINTR), (KVM_GET_REGS, 0)], || {
            let mut sregs = kvm_sregs::default();
            ioctl_plain(f.as_fd(), KVM_GET_SREGS, &mut sregs).unwrap_err()
        });
        assert_eq!(e.raw_os_error(), Some(libc::EINTR));
        // Other threads never had the filter.
        let mut regs = kvm_regs::default();
        let e = ioctl_plain(f.as_fd(), KVM_GET_REGS, &mut regs).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
    }

    #[test]
    fn numbers_and_arguments_must_pair() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let mut regs = kvm_regs::default();
        let e = ioctl_plain(f.as_fd(), KVM_GET_SREGS, &mut regs).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = ioctl_val(f.as_fd(), KVM_GET_REGS, 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        // Matching pairs reach the kernel, which knows no KVM on /dev/null.
        let e = ioctl_plain(f.as_fd(), KVM_GET_REGS, &mut regs).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
        let e = ioctl_val(f.as_fd(), KVM_CHECK_EXTENSION, 1).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
        assert!(!has_device_attr(f.as_fd(), 1, 1));
        let e = set_device_attr(f.as_fd(), 1, 1, AttrValue::U32(1)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
    }

    #[test]
    fn one_reg_buffers_are_checked_first() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let id = crate::uapi::KVM_REG_PPC_VSR0;
        assert_eq!(reg_size(id), 16);
        assert_eq!(reg_size(crate::uapi::KVM_REG_PPC_DSISR), 4);
        let mut small = [0u8; 8];
        let e = get_one_reg(f.as_fd(), id, &mut small).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = set_one_reg(f.as_fd(), id, &small).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let mut big = [0u8; 16];
        let e = get_one_reg(f.as_fd(), id, &mut big).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
        let e = set_one_reg(f.as_fd(), id, &big).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
    }

    #[test]
    fn dirty_log_calls_check_their_bitmaps_first() {
        let f = std::fs::File::open("/dev/null").unwrap();
        // 65 pages need 2 words: one is refused before the kernel.
        let e = clear_dirty_log(f.as_fd(), 0, 0, 65, &[0]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = clear_dirty_log(f.as_fd(), 0, 0, 65, &[0, 0]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
        assert_eq!(bitmap_words(0), 0);
        assert_eq!(bitmap_words(64), 1);
        assert_eq!(bitmap_words(u32::MAX), 1 << 26);
        let mut bitmap = [0u64; 4];
        // SAFETY: /dev/null is not a VM fd: the kernel answers ENOTTY and
        // writes nothing.
        let e = unsafe { get_dirty_log(f.as_fd(), 0, &mut bitmap) }.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
        let e = reset_dirty_rings(f.as_fd()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
        let page = host_page_size();
        assert!(page.is_power_of_two() && page >= 4096, "{page}");
    }

    #[test]
    fn attribute_reads_and_the_htab_stream_reach_the_kernel() {
        // Number and argument pair (no InvalidInput): /dev/null's ENOTTY
        // comes from the kernel.
        let f = std::fs::File::open("/dev/null").unwrap();
        let e = get_device_attr_u64(f.as_fd(), 1, 0x1000).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
        let e = get_htab_fd(f.as_fd(), crate::uapi::KVM_GET_HTAB_WRITE).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
    }

    #[test]
    fn owned_fd_takes_the_descriptor_it_is_given() {
        use std::io::Read;
        use std::os::fd::{AsRawFd, IntoRawFd};
        let raw = std::fs::File::open("/dev/zero").unwrap().into_raw_fd();
        let fd = owned_fd(raw);
        assert_eq!(fd.as_raw_fd(), raw);
        // It is the file that was opened: /dev/zero reads zeros.
        let mut b = [0xffu8; 4];
        std::fs::File::from(fd).read_exact(&mut b).unwrap();
        assert_eq!(b, [0; 4]);
    }

    #[test]
    fn errors_of_other_kinds_have_no_errno() {
        assert_eq!(crate::Error::RtasName("x".into()).errno(), None);
    }

    #[test]
    fn attr_values_start_the_buffer() {
        let b = AttrValue::U32(0x1234_5678).buffer().to_ne_bytes();
        assert_eq!(b[..4], 0x1234_5678u32.to_ne_bytes());
        assert_eq!(b[4..], [0; 4]);
        assert_eq!(AttrValue::U64(7).buffer(), 7);
    }

    #[test]
    fn run_map_of_a_file() {
        let path = std::env::temp_dir().join(format!("kvmkit-ppc-runmap-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(4096).unwrap();
        let mut m = RunMap::new(f.as_fd(), 4096).unwrap();
        m.bytes()[8] = 19;
        assert_eq!(m.bytes().len(), 4096);
        // The mapping is the file's: what the kernel (here a plain write)
        // puts at offset 8 is the exit reason, a native-endian u32, and
        // immediate_exit is the byte at offset 1.
        std::os::unix::fs::FileExt::write_all_at(&f, &0x1234_5678u32.to_ne_bytes(), 8).unwrap();
        assert_eq!(m.exit_reason(), 0x1234_5678);
        std::os::unix::fs::FileExt::write_all_at(&f, &[1], 1).unwrap();
        assert_eq!(m.immediate_exit().load(Ordering::SeqCst), 1);
        m.immediate_exit().store(0, Ordering::SeqCst);
        let mut b = [9u8; 1];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, 1).unwrap();
        assert_eq!(b, [0]);
        drop(m);
        assert!(RunMap::new(f.as_fd(), 0).is_err());
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(RunMap::new(null.as_fd(), 4096).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
