//! The raw system calls of this crate: positioned I/O straight into guest
//! memory, and the tun ioctls.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use vm_memory::bitmap::BitmapSlice;
use vm_memory::VolatileSlice;

/// `_IOW('T', 202, int)`: attach to (or create) a tun/tap interface.
pub(crate) const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `_IOW('T', 208, unsigned int)`: the offloads the kernel may hand us.
pub(crate) const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// `_IOW('T', 216, int)`: the size of the vnet header prefixed to frames.
pub(crate) const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
/// A tap (Ethernet) rather than a tun (IP) interface.
pub(crate) const IFF_TAP: u16 = 0x0002;
/// No packet-information prefix.
pub(crate) const IFF_NO_PI: u16 = 0x1000;
/// Frames carry a `virtio_net_hdr`.
pub(crate) const IFF_VNET_HDR: u16 = 0x4000;
/// `IFNAMSIZ`, with the terminating NUL.
pub(crate) const IFNAMSIZ: usize = 16;

/// `struct ifreq` as `TUNSETIFF` reads and writes it: the name, then the
/// union of which only `ifr_flags` is used, padded to the kernel's 40 bytes.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct IfReq {
    /// `ifr_name`, NUL-terminated.
    pub name: [u8; IFNAMSIZ],
    /// `ifr_flags`.
    pub flags: u16,
    pad: [u8; 22],
}

const _: () = assert!(std::mem::size_of::<IfReq>() == 40);

fn offset_arg(offset: u64) -> io::Result<libc::off64_t> {
    libc::off64_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(ret: isize) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}

/// Reads from `file` at `offset` straight into `slice` (guest memory) with
/// `pread64`, marking what was written dirty; returns the bytes read.
pub(crate) fn pread_volatile<B: BitmapSlice>(
    file: &File,
    slice: &VolatileSlice<'_, B>,
    offset: u64,
) -> io::Result<usize> {
    let off = offset_arg(offset)?;
    let guard = slice.ptr_guard_mut();
    // SAFETY: `guard` keeps the mapping behind `slice` alive and points at
    // `guard.len()` writable bytes of guest memory; the kernel writes at
    // most that many. Guest memory is plain bytes, so any content is valid,
    // and it is only ever accessed volatilely by us.
    let ret = unsafe {
        libc::pread64(
            file.as_raw_fd(),
            guard.as_ptr().cast::<libc::c_void>(),
            guard.len(),
            off,
        )
    };
    let n = check(ret)?;
    slice.bitmap().mark_dirty(0, n);
    Ok(n)
}

/// Writes `slice` (guest memory) to `file` at `offset` with `pwrite64`;
/// returns the bytes written.
pub(crate) fn pwrite_volatile<B: BitmapSlice>(
    file: &File,
    slice: &VolatileSlice<'_, B>,
    offset: u64,
) -> io::Result<usize> {
    let off = offset_arg(offset)?;
    let guard = slice.ptr_guard();
    // SAFETY: `guard` keeps the mapping behind `slice` alive and points at
    // `guard.len()` readable bytes; the kernel only reads them.
    let ret = unsafe {
        libc::pwrite64(
            file.as_raw_fd(),
            guard.as_ptr().cast::<libc::c_void>(),
            guard.len(),
            off,
        )
    };
    check(ret)
}

/// `TUNSETIFF` on an open `/dev/net/tun`; the kernel writes the interface's
/// actual name back into `req`.
pub(crate) fn tun_set_iff(tun: &File, req: &mut IfReq) -> io::Result<()> {
    // SAFETY: `tun` is an open `/dev/net/tun`, for which TUNSETIFF reads and
    // writes a `struct ifreq`; `req` is a live, exclusively borrowed 40-byte
    // `#[repr(C)]` ifreq, the kernel's size on 64-bit hosts.
    let ret = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, std::ptr::from_mut(req)) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An ioctl on a tap taking a pointer to an `int`-sized value
/// (`TUNSETVNETHDRSZ`, `TUNSETOFFLOAD` takes it by value).
pub(crate) fn tun_set_vnet_hdr_sz(tap: &File, size: libc::c_int) -> io::Result<()> {
    // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer, which
    // points at `size`, alive for the call.
    let ret = unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETVNETHDRSZ, &raw const size) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `TUNSETOFFLOAD`: which offloads (`TUN_F_*`) the tap may use.
pub(crate) fn tun_set_offload(tap: &File, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value (no memory is
    // accessed); `tap` is an attached tap fd.
    let ret = unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETOFFLOAD, libc::c_ulong::from(flags)) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Moves the calling thread into the network namespace `ns` (a file under
/// `/run/netns`), for the real-tap test.
#[cfg(test)]
pub(crate) fn setns_net(ns: &File) -> io::Result<()> {
    // SAFETY: setns takes an fd and a flag and touches no memory of ours;
    // it only changes the calling thread's namespace.
    let ret = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
