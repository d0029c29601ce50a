//! The raw ioctls and the `kvm_run` mapping of this crate, with s390x's
//! `_IOC` encoding.
//!
//! s390x uses the asm-generic encoding (like x86): direction in bits 30-31
//! (`_IOC_NONE` 0, `_IOC_WRITE` 1, `_IOC_READ` 2), a 14-bit size in bits
//! 16-29, the type (`KVMIO`, 0xAE) in bits 8-15 and the number in bits 0-7.
//! It is computed here, never borrowed from the host's headers, and every
//! number is compared with the s390x header in `tests/uapi.rs`.
//!
//! Every `unsafe` block of the crate that talks to the kernel is in this
//! file. The wrappers are safe where the argument types make them so: the
//! size encoded in each request is checked against the Rust type passed.

use crate::uapi::*;
use std::fs::File;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd};
use std::ptr::NonNull;

/// `KVMIO`, the ioctl type of KVM.
pub const KVMIO: u64 = 0xAE;
/// `_IOC_NONE`.
pub const IOC_NONE: u64 = 0;
/// `_IOC_WRITE`: userspace writes, the kernel reads.
pub const IOC_WRITE: u64 = 1;
/// `_IOC_READ`: the kernel writes, userspace reads.
pub const IOC_READ: u64 = 2;

const IOC_SIZEBITS: u64 = 14;
const IOC_SIZESHIFT: u64 = 16;
const IOC_DIRSHIFT: u64 = 30;

/// s390x's (the asm-generic) `_IOC(dir, type, nr, size)`.
///
/// ```
/// use kvmkit_arch_s390x::sys::{ioc, IOC_WRITE, KVMIO};
/// // _IOW(KVMIO, 0x96, struct kvm_s390_psw)
/// assert_eq!(ioc(IOC_WRITE, KVMIO, 0x96, 16), 0x4010_ae96);
/// ```
pub const fn ioc(dir: u64, ty: u64, nr: u64, size: u64) -> u64 {
    assert!(size < (1 << IOC_SIZEBITS), "ioctl argument too large");
    (dir << IOC_DIRSHIFT) | (size << IOC_SIZESHIFT) | (ty << 8) | nr
}

/// The argument size encoded in an ioctl request.
pub const fn ioc_size(req: u64) -> u64 {
    (req >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)
}

const fn io(nr: u64) -> u64 {
    ioc(IOC_NONE, KVMIO, nr, 0)
}

const fn ior(nr: u64, size: usize) -> u64 {
    ioc(IOC_READ, KVMIO, nr, size as u64)
}

const fn iow(nr: u64, size: usize) -> u64 {
    ioc(IOC_WRITE, KVMIO, nr, size as u64)
}

const fn iowr(nr: u64, size: usize) -> u64 {
    ioc(IOC_READ | IOC_WRITE, KVMIO, nr, size as u64)
}

/// `KVM_GET_API_VERSION` = `_IO(KVMIO, 0x00)`.
pub const KVM_GET_API_VERSION: u64 = io(0x00);
/// `KVM_CREATE_VM` = `_IO(KVMIO, 0x01)`.
pub const KVM_CREATE_VM: u64 = io(0x01);
/// `KVM_CHECK_EXTENSION` = `_IO(KVMIO, 0x03)`.
pub const KVM_CHECK_EXTENSION: u64 = io(0x03);
/// `KVM_GET_VCPU_MMAP_SIZE` = `_IO(KVMIO, 0x04)`.
pub const KVM_GET_VCPU_MMAP_SIZE: u64 = io(0x04);
/// `KVM_CREATE_VCPU` = `_IO(KVMIO, 0x41)`.
pub const KVM_CREATE_VCPU: u64 = io(0x41);
/// `KVM_GET_DIRTY_LOG` = `_IOW(KVMIO, 0x42, struct kvm_dirty_log)`: the
/// kernel reads the struct and writes the slot's bitmap through its pointer.
pub const KVM_GET_DIRTY_LOG: u64 = iow(0x42, size_of::<kvm_dirty_log>());
/// `KVM_SET_USER_MEMORY_REGION` = `_IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)`.
pub const KVM_SET_USER_MEMORY_REGION: u64 = iow(0x46, size_of::<kvm_userspace_memory_region>());
/// `KVM_SET_GSI_ROUTING` = `_IOW(KVMIO, 0x6a, struct kvm_irq_routing)`.
pub const KVM_SET_GSI_ROUTING: u64 = iow(0x6a, size_of::<kvm_irq_routing>());
/// `KVM_IRQFD` = `_IOW(KVMIO, 0x76, struct kvm_irqfd)`.
pub const KVM_IRQFD: u64 = iow(0x76, size_of::<kvm_irqfd>());
/// `KVM_RUN` = `_IO(KVMIO, 0x80)`.
pub const KVM_RUN: u64 = io(0x80);
/// `KVM_GET_REGS` = `_IOR(KVMIO, 0x81, struct kvm_regs)`.
pub const KVM_GET_REGS: u64 = ior(0x81, size_of::<kvm_regs>());
/// `KVM_SET_REGS` = `_IOW(KVMIO, 0x82, struct kvm_regs)`.
pub const KVM_SET_REGS: u64 = iow(0x82, size_of::<kvm_regs>());
/// `KVM_GET_SREGS` = `_IOR(KVMIO, 0x83, struct kvm_sregs)`.
pub const KVM_GET_SREGS: u64 = ior(0x83, size_of::<kvm_sregs>());
/// `KVM_SET_SREGS` = `_IOW(KVMIO, 0x84, struct kvm_sregs)`.
pub const KVM_SET_SREGS: u64 = iow(0x84, size_of::<kvm_sregs>());
/// `KVM_GET_FPU` = `_IOR(KVMIO, 0x8c, struct kvm_fpu)`.
pub const KVM_GET_FPU: u64 = ior(0x8c, size_of::<kvm_fpu>());
/// `KVM_SET_FPU` = `_IOW(KVMIO, 0x8d, struct kvm_fpu)`.
pub const KVM_SET_FPU: u64 = iow(0x8d, size_of::<kvm_fpu>());
/// `KVM_S390_SET_INITIAL_PSW` = `_IOW(KVMIO, 0x96, struct kvm_s390_psw)`.
pub const KVM_S390_SET_INITIAL_PSW: u64 = iow(0x96, size_of::<kvm_s390_psw>());
/// `KVM_S390_INITIAL_RESET` = `_IO(KVMIO, 0x97)`.
pub const KVM_S390_INITIAL_RESET: u64 = io(0x97);
/// `KVM_SET_GUEST_DEBUG` = `_IOW(KVMIO, 0x9b, struct kvm_guest_debug)`.
pub const KVM_SET_GUEST_DEBUG: u64 = iow(0x9b, size_of::<kvm_guest_debug>());
/// `KVM_ENABLE_CAP` = `_IOW(KVMIO, 0xa3, struct kvm_enable_cap)`.
pub const KVM_ENABLE_CAP: u64 = iow(0xa3, size_of::<kvm_enable_cap>());
/// `KVM_GET_ONE_REG` = `_IOW(KVMIO, 0xab, struct kvm_one_reg)`.
pub const KVM_GET_ONE_REG: u64 = iow(0xab, size_of::<kvm_one_reg>());
/// `KVM_SET_ONE_REG` = `_IOW(KVMIO, 0xac, struct kvm_one_reg)`.
pub const KVM_SET_ONE_REG: u64 = iow(0xac, size_of::<kvm_one_reg>());
/// `KVM_S390_IRQ` = `_IOW(KVMIO, 0xb4, struct kvm_s390_irq)`.
pub const KVM_S390_IRQ: u64 = iow(0xb4, size_of::<kvm_s390_irq>());
/// `KVM_S390_NORMAL_RESET` = `_IO(KVMIO, 0xc3)`.
pub const KVM_S390_NORMAL_RESET: u64 = io(0xc3);
/// `KVM_S390_CLEAR_RESET` = `_IO(KVMIO, 0xc4)`.
pub const KVM_S390_CLEAR_RESET: u64 = io(0xc4);
/// `KVM_CLEAR_DIRTY_LOG` = `_IOWR(KVMIO, 0xc0, struct kvm_clear_dirty_log)`:
/// not an ioctl of s390x's KVM (`ENOTTY`).
pub const KVM_CLEAR_DIRTY_LOG: u64 = iowr(0xc0, size_of::<kvm_clear_dirty_log>());
/// `KVM_RESET_DIRTY_RINGS` = `_IO(KVMIO, 0xc7)`: `EINVAL` on s390x (no dirty
/// ring can be enabled).
pub const KVM_RESET_DIRTY_RINGS: u64 = io(0xc7);
/// `KVM_CREATE_DEVICE` = `_IOWR(KVMIO, 0xe0, struct kvm_create_device)`.
pub const KVM_CREATE_DEVICE: u64 = iowr(0xe0, size_of::<kvm_create_device>());
/// `KVM_SET_DEVICE_ATTR` = `_IOW(KVMIO, 0xe1, struct kvm_device_attr)`.
pub const KVM_SET_DEVICE_ATTR: u64 = iow(0xe1, size_of::<kvm_device_attr>());
/// `KVM_GET_DEVICE_ATTR` = `_IOW(KVMIO, 0xe2, struct kvm_device_attr)`: the
/// kernel reads the struct and writes the attribute's value at its `addr`.
pub const KVM_GET_DEVICE_ATTR: u64 = iow(0xe2, size_of::<kvm_device_attr>());
/// `KVM_HAS_DEVICE_ATTR` = `_IOW(KVMIO, 0xe3, struct kvm_device_attr)`.
pub const KVM_HAS_DEVICE_ATTR: u64 = iow(0xe3, size_of::<kvm_device_attr>());

/// Every ioctl number this crate issues, by the kernel's macro name, in
/// s390x's encoding.
///
/// ```
/// let n = kvmkit_arch_s390x::sys::ioctl_numbers();
/// assert!(n.iter().any(|&(name, nr)| name == "KVM_S390_INITIAL_RESET" && nr == 0xae97));
/// ```
pub fn ioctl_numbers() -> Vec<(&'static str, u64)> {
    vec![
        ("KVM_GET_API_VERSION", KVM_GET_API_VERSION),
        ("KVM_CREATE_VM", KVM_CREATE_VM),
        ("KVM_CHECK_EXTENSION", KVM_CHECK_EXTENSION),
        ("KVM_GET_VCPU_MMAP_SIZE", KVM_GET_VCPU_MMAP_SIZE),
        ("KVM_CREATE_VCPU", KVM_CREATE_VCPU),
        ("KVM_GET_DIRTY_LOG", KVM_GET_DIRTY_LOG),
        ("KVM_SET_USER_MEMORY_REGION", KVM_SET_USER_MEMORY_REGION),
        ("KVM_SET_GSI_ROUTING", KVM_SET_GSI_ROUTING),
        ("KVM_IRQFD", KVM_IRQFD),
        ("KVM_RUN", KVM_RUN),
        ("KVM_GET_REGS", KVM_GET_REGS),
        ("KVM_SET_REGS", KVM_SET_REGS),
        ("KVM_GET_SREGS", KVM_GET_SREGS),
        ("KVM_SET_SREGS", KVM_SET_SREGS),
        ("KVM_GET_FPU", KVM_GET_FPU),
        ("KVM_SET_FPU", KVM_SET_FPU),
        ("KVM_S390_SET_INITIAL_PSW", KVM_S390_SET_INITIAL_PSW),
        ("KVM_S390_INITIAL_RESET", KVM_S390_INITIAL_RESET),
        ("KVM_SET_GUEST_DEBUG", KVM_SET_GUEST_DEBUG),
        ("KVM_ENABLE_CAP", KVM_ENABLE_CAP),
        ("KVM_GET_ONE_REG", KVM_GET_ONE_REG),
        ("KVM_SET_ONE_REG", KVM_SET_ONE_REG),
        ("KVM_S390_IRQ", KVM_S390_IRQ),
        ("KVM_S390_NORMAL_RESET", KVM_S390_NORMAL_RESET),
        ("KVM_S390_CLEAR_RESET", KVM_S390_CLEAR_RESET),
        ("KVM_CLEAR_DIRTY_LOG", KVM_CLEAR_DIRTY_LOG),
        ("KVM_RESET_DIRTY_RINGS", KVM_RESET_DIRTY_RINGS),
        ("KVM_CREATE_DEVICE", KVM_CREATE_DEVICE),
        ("KVM_SET_DEVICE_ATTR", KVM_SET_DEVICE_ATTR),
        ("KVM_GET_DEVICE_ATTR", KVM_GET_DEVICE_ATTR),
        ("KVM_HAS_DEVICE_ATTR", KVM_HAS_DEVICE_ATTR),
    ]
}

/// The size of the register a ONE_REG id names (`KVM_REG_SIZE`).
///
/// ```
/// use kvmkit_arch_s390x::{sys::one_reg_size, uapi};
/// assert_eq!(one_reg_size(uapi::KVM_REG_S390_TODPR), 4);
/// assert_eq!(one_reg_size(uapi::KVM_REG_S390_CPU_TIMER), 8);
/// ```
pub const fn one_reg_size(id: u64) -> usize {
    1 << ((id & KVM_REG_SIZE_MASK) >> KVM_REG_SIZE_SHIFT)
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Issues an ioctl whose argument is an integer (or unused).
///
/// # Safety
///
/// `req` must be a request of `fd` that does not treat `val` as a pointer.
unsafe fn ioctl_val(fd: &File, req: u64, val: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: the caller guarantees `req` reads and writes no user memory
    // through `val`; `fd` is an open file for the call's duration.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::Ioctl, val) })
}

/// The request's encoded argument size must be the size of the Rust type.
fn check_size<T>(req: u64) -> io::Result<()> {
    if ioc_size(req) == size_of::<T>() as u64 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    }
}

/// Issues an `_IOW` ioctl: the kernel reads a `T` at `arg`.
///
/// # Safety
///
/// The kernel must read nothing through `arg` but the `size_of::<T>()`
/// bytes the request encodes (checked), nor through pointers inside `T`
/// beyond what the caller keeps valid for the call.
unsafe fn ioctl_ref<T>(fd: &File, req: u64, arg: &T) -> io::Result<libc::c_int> {
    check_size::<T>(req)?;
    let p: *const T = arg;
    // SAFETY: `p` is valid for `size_of::<T>()` bytes, which is what the
    // request encodes (checked above); the caller vouches for any pointer
    // inside `T`.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::Ioctl, p) })
}

/// Issues an `_IOR`/`_IOWR` ioctl: the kernel writes a `T` at `arg`.
///
/// # Safety
///
/// Every bit pattern the kernel may write must be a valid `T` (plain
/// integers and arrays of them).
unsafe fn ioctl_mut<T>(fd: &File, req: u64, arg: &mut T) -> io::Result<libc::c_int> {
    check_size::<T>(req)?;
    let p: *mut T = arg;
    // SAFETY: `p` is valid and exclusive for `size_of::<T>()` bytes, which is
    // what the request encodes (checked above), so the kernel writes within
    // it; the caller guarantees any bytes are a valid `T`.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::Ioctl, p) })
}

/// Wraps a new file descriptor returned by an ioctl.
fn own_fd(fd: libc::c_int) -> File {
    // SAFETY: `fd` was just returned by the kernel as a new descriptor of
    // this process that nothing else owns.
    unsafe { File::from_raw_fd(fd) }
}

/// Opens `/dev/kvm` read-write (std opens it close-on-exec).
pub(crate) fn open_kvm() -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
}

/// Wraps `KVM_GET_API_VERSION`.
pub(crate) fn get_api_version(kvm: &File) -> io::Result<i32> {
    // SAFETY: KVM_GET_API_VERSION takes no argument.
    unsafe { ioctl_val(kvm, KVM_GET_API_VERSION, 0) }
}

/// Wraps `KVM_CHECK_EXTENSION` on `/dev/kvm` or a VM fd.
pub(crate) fn check_extension(fd: &File, cap: u32) -> io::Result<i32> {
    // SAFETY: KVM_CHECK_EXTENSION takes the capability number as an integer.
    unsafe { ioctl_val(fd, KVM_CHECK_EXTENSION, libc::c_ulong::from(cap)) }
}

/// Wraps `KVM_GET_VCPU_MMAP_SIZE`.
pub(crate) fn get_vcpu_mmap_size(kvm: &File) -> io::Result<usize> {
    // SAFETY: KVM_GET_VCPU_MMAP_SIZE takes no argument.
    let n = unsafe { ioctl_val(kvm, KVM_GET_VCPU_MMAP_SIZE, 0) }?;
    usize::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Wraps `KVM_CREATE_VM` with a machine type (0, or `KVM_VM_S390_UCONTROL`).
pub(crate) fn create_vm(kvm: &File, ty: u64) -> io::Result<File> {
    // SAFETY: KVM_CREATE_VM takes the machine type as an integer.
    let fd = unsafe { ioctl_val(kvm, KVM_CREATE_VM, ty) }?;
    Ok(own_fd(fd))
}

/// Wraps `KVM_CREATE_VCPU`.
pub(crate) fn create_vcpu(vm: &File, id: u32) -> io::Result<File> {
    // SAFETY: KVM_CREATE_VCPU takes the vCPU id as an integer.
    let fd = unsafe { ioctl_val(vm, KVM_CREATE_VCPU, libc::c_ulong::from(id)) }?;
    Ok(own_fd(fd))
}

/// Wraps `KVM_SET_USER_MEMORY_REGION`.
///
/// # Safety
///
/// `region.userspace_addr .. + memory_size` must stay mapped for as long as
/// the slot exists: the guest reads and writes it.
pub(crate) unsafe fn set_user_memory_region(
    vm: &File,
    region: &kvm_userspace_memory_region,
) -> io::Result<()> {
    // SAFETY: the struct has no pointer the kernel dereferences now; the
    // mapping it names is the caller's to keep alive (see above).
    unsafe { ioctl_ref(vm, KVM_SET_USER_MEMORY_REGION, region) }.map(drop)
}

/// Wraps `KVM_ENABLE_CAP` on a VM or vCPU fd.
pub(crate) fn enable_cap(fd: &File, cap: &kvm_enable_cap) -> io::Result<()> {
    // SAFETY: kvm_enable_cap holds only integers and the kernel reads the
    // struct. `DirtyLogArch::enable_vm_cap` passes any capability with the
    // caller's `args`, but every VM capability s390x's KVM accepts (the
    // generic HALT_POLL, MANUAL_DIRTY_LOG_PROTECT2 and DIRTY_LOG_RING*,
    // which it refuses, and S390_IRQCHIP, S390_USER_SIGP, S390_VECTOR_REGISTERS,
    // S390_RI, S390_GS, S390_AIS, S390_HPAGE_1M, S390_USER_STSI,
    // S390_USER_INSTR0, S390_CPU_TOPOLOGY) reads them as integers, never as
    // addresses.
    unsafe { ioctl_ref(fd, KVM_ENABLE_CAP, cap) }.map(drop)
}

/// The host's page size, the unit of KVM's memory slots and dirty bitmaps
/// (4 KiB on s390x). 4 KiB, the smallest Linux page and so the largest
/// bitmap, if `sysconf` fails.
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
/// `bitmap` must have at least the slot's `ceil(npages / 64)` words: the
/// kernel writes that many and does not know the buffer's length.
pub(crate) unsafe fn get_dirty_log(vm: &File, slot: u32, bitmap: &mut [u64]) -> io::Result<()> {
    let log = kvm_dirty_log {
        slot,
        padding1: 0,
        dirty_bitmap: bitmap.as_mut_ptr() as u64,
    };
    // SAFETY: the kernel reads `log` and writes the slot's bitmap at
    // `log.dirty_bitmap`, which is `bitmap`, exclusively borrowed for the
    // call and at least that long (the caller's contract above).
    unsafe { ioctl_ref(vm, KVM_GET_DIRTY_LOG, &log) }.map(drop)
}

/// The words of a bitmap of `num_pages` bits.
pub(crate) fn bitmap_words(num_pages: u32) -> usize {
    usize::try_from(num_pages.div_ceil(64)).unwrap_or(usize::MAX)
}

/// Wraps `KVM_CLEAR_DIRTY_LOG` for `num_pages` pages of `slot` from
/// `first_page`; `bitmap` must cover them (`EINVAL` before the kernel is
/// called otherwise).
pub(crate) fn clear_dirty_log(
    vm: &File,
    slot: u32,
    first_page: u64,
    num_pages: u32,
    bitmap: &[u64],
) -> io::Result<()> {
    if bitmap_words(num_pages) > bitmap.len() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let log = kvm_clear_dirty_log {
        slot,
        num_pages,
        first_page,
        dirty_bitmap: bitmap.as_ptr() as u64,
    };
    // SAFETY: the kernel reads `log` and then only `ceil(num_pages / 64)`
    // words at `log.dirty_bitmap`; `bitmap` has at least that many (checked
    // above) and outlives the call.
    unsafe { ioctl_ref(vm, KVM_CLEAR_DIRTY_LOG, &log) }.map(drop)
}

/// Wraps `KVM_RESET_DIRTY_RINGS`: how many ring entries were reset.
pub(crate) fn reset_dirty_rings(vm: &File) -> io::Result<u32> {
    // SAFETY: KVM_RESET_DIRTY_RINGS takes no argument.
    let n = unsafe { ioctl_val(vm, KVM_RESET_DIRTY_RINGS, 0) }?;
    Ok(n.unsigned_abs())
}

/// Wraps `KVM_RUN`.
pub(crate) fn run(vcpu: &File) -> io::Result<()> {
    // SAFETY: KVM_RUN takes no argument; it writes only the vCPU's own
    // kvm_run mapping, which `RunMapping` keeps mapped while the fd lives.
    unsafe { ioctl_val(vcpu, KVM_RUN, 0) }.map(drop)
}

/// Wraps an `_IO` vCPU reset: `KVM_S390_INITIAL_RESET`,
/// `KVM_S390_NORMAL_RESET` or `KVM_S390_CLEAR_RESET`.
pub(crate) fn vcpu_reset(vcpu: &File, req: u64) -> io::Result<()> {
    if ![
        KVM_S390_INITIAL_RESET,
        KVM_S390_NORMAL_RESET,
        KVM_S390_CLEAR_RESET,
    ]
    .contains(&req)
    {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `req` is one of the three reset ioctls, which take no argument.
    unsafe { ioctl_val(vcpu, req, 0) }.map(drop)
}

/// Wraps `KVM_GET_REGS`.
pub(crate) fn get_regs(vcpu: &File) -> io::Result<kvm_regs> {
    let mut r = kvm_regs::default();
    // SAFETY: kvm_regs is integers only: any bytes are valid.
    unsafe { ioctl_mut(vcpu, KVM_GET_REGS, &mut r) }?;
    Ok(r)
}

/// Wraps `KVM_SET_REGS`.
pub(crate) fn set_regs(vcpu: &File, r: &kvm_regs) -> io::Result<()> {
    // SAFETY: kvm_regs holds no pointer.
    unsafe { ioctl_ref(vcpu, KVM_SET_REGS, r) }.map(drop)
}

/// Wraps `KVM_GET_SREGS`.
pub(crate) fn get_sregs(vcpu: &File) -> io::Result<kvm_sregs> {
    let mut r = kvm_sregs::default();
    // SAFETY: kvm_sregs is integers only: any bytes are valid.
    unsafe { ioctl_mut(vcpu, KVM_GET_SREGS, &mut r) }?;
    Ok(r)
}

/// Wraps `KVM_SET_SREGS`.
pub(crate) fn set_sregs(vcpu: &File, r: &kvm_sregs) -> io::Result<()> {
    // SAFETY: kvm_sregs holds no pointer.
    unsafe { ioctl_ref(vcpu, KVM_SET_SREGS, r) }.map(drop)
}

/// Wraps `KVM_GET_FPU`.
pub(crate) fn get_fpu(vcpu: &File) -> io::Result<kvm_fpu> {
    let mut r = kvm_fpu::default();
    // SAFETY: kvm_fpu is integers only: any bytes are valid.
    unsafe { ioctl_mut(vcpu, KVM_GET_FPU, &mut r) }?;
    Ok(r)
}

/// Wraps `KVM_SET_FPU`.
pub(crate) fn set_fpu(vcpu: &File, r: &kvm_fpu) -> io::Result<()> {
    // SAFETY: kvm_fpu holds no pointer.
    unsafe { ioctl_ref(vcpu, KVM_SET_FPU, r) }.map(drop)
}

/// Wraps `KVM_GET_ONE_REG`: the kernel writes the register (its
/// `one_reg_size(id)` bytes) into `data`.
pub(crate) fn get_one_reg(vcpu: &File, id: u64, data: &mut [u8]) -> io::Result<usize> {
    let size = one_reg_size(id);
    if data.len() < size {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let reg = kvm_one_reg {
        id,
        addr: data.as_mut_ptr() as u64,
    };
    // SAFETY: the kernel writes `one_reg_size(id)` bytes at `reg.addr`
    // (the size is part of the id), and `data` is an exclusive buffer at
    // least that long that outlives the call.
    unsafe { ioctl_ref(vcpu, KVM_GET_ONE_REG, &reg) }?;
    Ok(size)
}

/// Wraps `KVM_SET_ONE_REG`: the kernel reads the register from `data`.
pub(crate) fn set_one_reg(vcpu: &File, id: u64, data: &[u8]) -> io::Result<usize> {
    let size = one_reg_size(id);
    if data.len() < size {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let reg = kvm_one_reg {
        id,
        addr: data.as_ptr() as u64,
    };
    // SAFETY: the kernel reads `one_reg_size(id)` bytes at `reg.addr`, and
    // `data` is at least that long and outlives the call.
    unsafe { ioctl_ref(vcpu, KVM_SET_ONE_REG, &reg) }?;
    Ok(size)
}

/// Wraps `KVM_SET_GUEST_DEBUG`; `hw_bp` becomes the breakpoint array the
/// kernel reads (`arch.nr_hw_bp`, `arch.hw_bp` are set from it).
pub(crate) fn set_guest_debug(
    vcpu: &File,
    control: u32,
    hw_bp: &[kvm_hw_breakpoint],
) -> io::Result<()> {
    let nr_hw_bp =
        u32::try_from(hw_bp.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let dbg = kvm_guest_debug {
        control,
        pad: 0,
        arch: kvm_guest_debug_arch {
            nr_hw_bp,
            pad: 0,
            hw_bp: if hw_bp.is_empty() {
                0
            } else {
                hw_bp.as_ptr() as u64
            },
        },
    };
    // SAFETY: the kernel reads the struct and `nr_hw_bp` breakpoints at
    // `hw_bp`, which is `hw_bp.len()` valid entries that outlive the call.
    unsafe { ioctl_ref(vcpu, KVM_SET_GUEST_DEBUG, &dbg) }.map(drop)
}

/// Wraps `KVM_S390_SET_INITIAL_PSW`.
pub(crate) fn set_initial_psw(vcpu: &File, psw: &kvm_s390_psw) -> io::Result<()> {
    // SAFETY: kvm_s390_psw holds no pointer.
    unsafe { ioctl_ref(vcpu, KVM_S390_SET_INITIAL_PSW, psw) }.map(drop)
}

/// Wraps `KVM_S390_IRQ` (a vCPU-local interrupt).
pub(crate) fn s390_irq(vcpu: &File, irq: &kvm_s390_irq) -> io::Result<()> {
    // SAFETY: kvm_s390_irq holds no pointer.
    unsafe { ioctl_ref(vcpu, KVM_S390_IRQ, irq) }.map(drop)
}

/// Wraps `KVM_CREATE_DEVICE`; returns the device fd.
pub(crate) fn create_device(vm: &File, ty: u32) -> io::Result<File> {
    let mut cd = kvm_create_device {
        type_: ty,
        fd: 0,
        flags: 0,
    };
    // SAFETY: kvm_create_device is integers only; the kernel writes `fd`.
    unsafe { ioctl_mut(vm, KVM_CREATE_DEVICE, &mut cd) }?;
    let fd = libc::c_int::try_from(cd.fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    Ok(own_fd(fd))
}

/// Wraps `KVM_SET_DEVICE_ATTR`; `addr` points at `data` (0 for `None`).
///
/// # Safety
///
/// `group` and `attr` must name an attribute that reads no more than
/// `size_of::<T>()` bytes at `addr` (none for `None`) and writes nothing
/// there.
unsafe fn set_device_attr<T>(
    dev: &File,
    group: u32,
    attr: u64,
    data: Option<&T>,
) -> io::Result<()> {
    let a = kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr: data.map_or(0, |d| std::ptr::from_ref(d) as u64),
    };
    // SAFETY: the caller guarantees the attribute reads at most
    // `size_of::<T>()` bytes at `addr`, which `data` provides for the call.
    unsafe { ioctl_ref(dev, KVM_SET_DEVICE_ATTR, &a) }.map(drop)
}

/// Wraps `KVM_GET_DEVICE_ATTR`; the kernel writes the value at `out`.
///
/// # Safety
///
/// `group` and `attr` must name an attribute of `fd` that writes no more
/// than `size_of::<T>()` bytes at `addr`, and any bytes it writes must be a
/// valid `T` (integers and arrays of them).
unsafe fn get_device_attr<T>(fd: &File, group: u32, attr: u64, out: &mut T) -> io::Result<()> {
    let a = kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr: std::ptr::from_mut(out) as u64,
    };
    // SAFETY: the kernel reads `a` and writes the attribute's value at
    // `a.addr`, which is `out`, exclusively borrowed for the call; the
    // caller guarantees the value fits `T` and any bytes form a valid `T`.
    unsafe { ioctl_ref(fd, KVM_GET_DEVICE_ATTR, &a) }.map(drop)
}

/// Wraps `KVM_HAS_DEVICE_ATTR`: true when `fd` has the attribute.
pub(crate) fn has_device_attr(fd: &File, group: u32, attr: u64) -> bool {
    let a = kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr: 0,
    };
    // SAFETY: KVM_HAS_DEVICE_ATTR only reads the struct and never follows
    // `addr` (which is 0).
    unsafe { ioctl_ref(fd, KVM_HAS_DEVICE_ATTR, &a) }.is_ok()
}

/// `KVM_GET_DEVICE_ATTR(KVM_S390_VM_TOD, KVM_S390_VM_TOD_EXT)` on the VM fd:
/// the guest TOD clock and its epoch index.
pub(crate) fn get_tod_ext(vm: &File) -> io::Result<kvm_s390_vm_tod_clock> {
    let mut tod = kvm_s390_vm_tod_clock::default();
    // SAFETY: KVM_S390_VM_TOD_EXT writes one struct kvm_s390_vm_tod_clock
    // (16 bytes, integers only) at `addr`.
    unsafe { get_device_attr(vm, KVM_S390_VM_TOD, KVM_S390_VM_TOD_EXT, &mut tod) }?;
    Ok(tod)
}

/// `KVM_GET_DEVICE_ATTR(KVM_S390_VM_TOD, KVM_S390_VM_TOD_HIGH)`: the epoch
/// index of kernels without `KVM_S390_VM_TOD_EXT`.
pub(crate) fn get_tod_high(vm: &File) -> io::Result<u8> {
    let mut high = 0u8;
    // SAFETY: KVM_S390_VM_TOD_HIGH writes one u8 at `addr`.
    unsafe { get_device_attr(vm, KVM_S390_VM_TOD, KVM_S390_VM_TOD_HIGH, &mut high) }?;
    Ok(high)
}

/// `KVM_GET_DEVICE_ATTR(KVM_S390_VM_TOD, KVM_S390_VM_TOD_LOW)`: the guest
/// TOD clock of kernels without `KVM_S390_VM_TOD_EXT`.
pub(crate) fn get_tod_low(vm: &File) -> io::Result<u64> {
    let mut low = 0u64;
    // SAFETY: KVM_S390_VM_TOD_LOW writes one u64 at `addr`.
    unsafe { get_device_attr(vm, KVM_S390_VM_TOD, KVM_S390_VM_TOD_LOW, &mut low) }?;
    Ok(low)
}

/// `KVM_SET_DEVICE_ATTR(KVM_S390_VM_TOD, KVM_S390_VM_TOD_EXT)`: sets the
/// guest TOD clock (and every vCPU's epoch).
pub(crate) fn set_tod_ext(vm: &File, tod: &kvm_s390_vm_tod_clock) -> io::Result<()> {
    // SAFETY: KVM_S390_VM_TOD_EXT reads one struct kvm_s390_vm_tod_clock at
    // `addr` and writes nothing there.
    unsafe { set_device_attr(vm, KVM_S390_VM_TOD, KVM_S390_VM_TOD_EXT, Some(tod)) }
}

/// `KVM_SET_DEVICE_ATTR(KVM_S390_VM_TOD, KVM_S390_VM_TOD_LOW)`: sets the
/// guest TOD clock on kernels without `KVM_S390_VM_TOD_EXT` (epoch 0).
pub(crate) fn set_tod_low(vm: &File, tod: u64) -> io::Result<()> {
    // SAFETY: KVM_S390_VM_TOD_LOW reads one u64 at `addr`.
    unsafe { set_device_attr(vm, KVM_S390_VM_TOD, KVM_S390_VM_TOD_LOW, Some(&tod)) }
}

/// `KVM_GET_DEVICE_ATTR(KVM_S390_VM_CPU_MODEL, KVM_S390_VM_CPU_PROCESSOR)`:
/// the CPU model the VM's guest sees.
pub(crate) fn get_cpu_processor(vm: &File) -> io::Result<kvm_s390_vm_cpu_processor> {
    let mut p = kvm_s390_vm_cpu_processor::ZERO;
    // SAFETY: KVM_S390_VM_CPU_PROCESSOR writes one struct
    // kvm_s390_vm_cpu_processor (integers only) at `addr`.
    unsafe { get_device_attr(vm, KVM_S390_VM_CPU_MODEL, KVM_S390_VM_CPU_PROCESSOR, &mut p) }?;
    Ok(p)
}

/// `KVM_GET_DEVICE_ATTR(KVM_S390_VM_CPU_MODEL,
/// KVM_S390_VM_CPU_PROCESSOR_FEAT)`: the CPU features the guest gets.
pub(crate) fn get_cpu_processor_feat(vm: &File) -> io::Result<kvm_s390_vm_cpu_feat> {
    let mut f = kvm_s390_vm_cpu_feat::default();
    // SAFETY: KVM_S390_VM_CPU_PROCESSOR_FEAT writes one struct
    // kvm_s390_vm_cpu_feat (16 u64) at `addr`.
    unsafe {
        get_device_attr(
            vm,
            KVM_S390_VM_CPU_MODEL,
            KVM_S390_VM_CPU_PROCESSOR_FEAT,
            &mut f,
        )
    }?;
    Ok(f)
}

/// `KVM_GET_DEVICE_ATTR(KVM_DEV_FLIC_GET_ALL_IRQS)`: the kernel copies the
/// pending floating interruptions into `buf` as `struct kvm_s390_irq`
/// records and returns how many; `ENOMEM` when `buf` may be too small.
pub(crate) fn flic_get_all_irqs(flic: &File, buf: &mut [u8]) -> io::Result<usize> {
    let a = kvm_device_attr {
        flags: 0,
        group: KVM_DEV_FLIC_GET_ALL_IRQS,
        attr: buf.len() as u64,
        addr: buf.as_mut_ptr() as u64,
    };
    // SAFETY: KVM_DEV_FLIC_GET_ALL_IRQS writes at most `attr` bytes (whole
    // records, fewer than fit) at `addr`, which is `buf`, exclusively
    // borrowed for the call and `attr` bytes long; bytes are plain data.
    let n = unsafe { ioctl_ref(flic, KVM_GET_DEVICE_ATTR, &a) }?;
    usize::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `KVM_SET_DEVICE_ATTR(KVM_DEV_FLIC_ENQUEUE)` of the `struct kvm_s390_irq`
/// records in `records` (a whole number of them, at most
/// `KVM_S390_FLIC_MAX_BUFFER` bytes: `EINVAL` before the kernel otherwise).
pub(crate) fn flic_enqueue_records(flic: &File, records: &[u8]) -> io::Result<()> {
    if records.len() % size_of::<kvm_s390_irq>() != 0
        || records.len() > KVM_S390_FLIC_MAX_BUFFER as usize
    {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let a = kvm_device_attr {
        flags: 0,
        group: KVM_DEV_FLIC_ENQUEUE,
        attr: records.len() as u64,
        addr: records.as_ptr() as u64,
    };
    // SAFETY: KVM_DEV_FLIC_ENQUEUE reads `attr` bytes at `addr`, which is
    // `records`, that long and alive for the call; it writes nothing there.
    unsafe { ioctl_ref(flic, KVM_SET_DEVICE_ATTR, &a) }.map(drop)
}

/// `KVM_SET_DEVICE_ATTR(KVM_DEV_FLIC_ENQUEUE)` of one floating interruption.
pub(crate) fn flic_enqueue(flic: &File, irq: &kvm_s390_irq) -> io::Result<()> {
    let len = size_of::<kvm_s390_irq>() as u64;
    // SAFETY: KVM_DEV_FLIC_ENQUEUE reads `attr` bytes (one kvm_s390_irq, a
    // plain struct) at `addr` and writes nothing there.
    unsafe { set_device_attr(flic, KVM_DEV_FLIC_ENQUEUE, len, Some(irq)) }
}

/// `KVM_SET_DEVICE_ATTR(KVM_DEV_FLIC_ADAPTER_REGISTER)`.
pub(crate) fn flic_register_adapter(flic: &File, a: &kvm_s390_io_adapter) -> io::Result<()> {
    // SAFETY: KVM_DEV_FLIC_ADAPTER_REGISTER reads one kvm_s390_io_adapter at
    // `addr` and writes nothing there.
    unsafe { set_device_attr(flic, KVM_DEV_FLIC_ADAPTER_REGISTER, 0, Some(a)) }
}

/// `KVM_SET_DEVICE_ATTR(KVM_DEV_FLIC_CLEAR_IRQS)`.
pub(crate) fn flic_clear_irqs(flic: &File) -> io::Result<()> {
    // SAFETY: KVM_DEV_FLIC_CLEAR_IRQS reads nothing at `addr` (0).
    unsafe { set_device_attr::<()>(flic, KVM_DEV_FLIC_CLEAR_IRQS, 0, None) }
}

/// Wraps `KVM_IRQFD`.
pub(crate) fn irqfd(vm: &File, arg: &kvm_irqfd) -> io::Result<()> {
    // SAFETY: kvm_irqfd holds file descriptor numbers, no pointer.
    unsafe { ioctl_ref(vm, KVM_IRQFD, arg) }.map(drop)
}

/// Wraps `KVM_SET_GSI_ROUTING`: `table` is a `kvm_irq_routing` header
/// followed by `nr` entries, in native byte order.
pub(crate) fn set_gsi_routing(vm: &File, table: &[u8]) -> io::Result<()> {
    let einval = || io::Error::from_raw_os_error(libc::EINVAL);
    let hdr = size_of::<kvm_irq_routing>();
    let nr = table
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or_else(einval)?;
    let needed = usize::try_from(nr)
        .ok()
        .and_then(|n| n.checked_mul(size_of::<kvm_irq_routing_entry>()))
        .and_then(|n| n.checked_add(hdr))
        .ok_or_else(einval)?;
    if table.len() < needed {
        return Err(einval());
    }
    let p = table.as_ptr();
    // SAFETY: the kernel reads the 8-byte header and then `nr` entries
    // after it; `table` holds at least that many bytes (checked above) and
    // outlives the call.
    check(unsafe { libc::ioctl(vm.as_raw_fd(), KVM_SET_GSI_ROUTING as libc::Ioctl, p) }).map(drop)
}

/// A vCPU's `kvm_run` mapping.
///
/// Shared access (`&self`) reads and writes through the raw pointer; a
/// slice over the whole area is only lent out from `&mut self`, so the two
/// never overlap. The type is `Send` but not `Sync`: one thread at a time.
#[derive(Debug)]
pub(crate) struct RunMapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; moving it
// to another thread moves that ownership. It is not `Sync`.
unsafe impl Send for RunMapping {}

impl RunMapping {
    /// Maps `len` bytes of a vCPU fd at offset 0, shared, read-write.
    pub(crate) fn new(vcpu: &File, len: usize) -> io::Result<RunMapping> {
        // SAFETY: a fresh mapping chosen by the kernel (null hint) of a
        // vCPU fd; it overlaps no existing Rust object.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(RunMapping { ptr, len })
    }

    /// The whole area, exclusively borrowed.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `len` bytes are mapped at `ptr` for the life of `self`,
        // and `&mut self` excludes every other access from this process
        // (the `&self` methods need a shared borrow).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Copies `out.len()` bytes at `off` out of the area; false when out of range.
    pub(crate) fn read(&self, off: usize, out: &mut [u8]) -> bool {
        if off.checked_add(out.len()).is_none_or(|end| end > self.len) {
            return false;
        }
        let src = self.ptr.as_ptr().wrapping_add(off);
        // SAFETY: `off .. off + out.len()` is inside the mapping (checked);
        // no slice over the mapping is alive while `&self` is borrowed, and
        // `out` is a distinct Rust buffer.
        unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) };
        true
    }

    /// Copies `data` into the area at `off`; false when out of range.
    pub(crate) fn write(&self, off: usize, data: &[u8]) -> bool {
        if off.checked_add(data.len()).is_none_or(|end| end > self.len) {
            return false;
        }
        let dst = self.ptr.as_ptr().wrapping_add(off);
        // SAFETY: as in `read`: in range, and no Rust reference to the
        // mapping is alive; the kernel only writes it during KVM_RUN, which
        // needs `&mut` of the owning vCPU.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        true
    }
}

impl Drop for RunMapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`, and no
        // borrow of it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Runs `f` on a thread of its own on which every ioctl whose number is
    /// in `requests` returns 0 without reaching any driver: a seccomp filter
    /// answers it with "errno 0". This is how this host stands in for an
    /// s390x KVM that accepted a call (writing nothing back). The filter
    /// ends with the thread.
    ///
    /// Never list an ioctl whose result is a new file descriptor
    /// (`KVM_CREATE_DEVICE`, `KVM_CREATE_VCPU`): the code would take
    /// ownership of fd 0.
    pub(crate) fn with_ioctls_accepted<R: Send>(
        requests: &[u64],
        f: impl FnOnce() -> R + Send,
    ) -> R {
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                accept_ioctls(requests);
                f()
            });
            t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// Installs, on the calling thread only, a seccomp filter that answers
    /// `ioctl(_, req, _)` with 0 for each `req` in `requests`.
    fn accept_ioctls(requests: &[u64]) {
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
        let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
        // struct seccomp_data: nr at 0, args[1] (the request) at 24; its
        // low 32 bits (all of an ioctl number) come first on a
        // little-endian host.
        let request_low = if cfg!(target_endian = "little") {
            24
        } else {
            28
        };
        let ioctl_nr = u32::try_from(libc::SYS_ioctl).expect("a small number");
        let n = requests.len();
        // 0: load nr; 1: not ioctl -> allow (at 3 + n); 2: load request;
        // 3..3+n: a match -> errno 0 (at 4 + n); 3 + n: allow.
        let mut prog = vec![
            stmt(load, 0),
            jeq(ioctl_nr, 0, n + 1),
            stmt(load, request_low),
        ];
        prog.extend(requests.iter().enumerate().map(|(i, &r)| {
            jeq(
                u32::try_from(r).expect("ioctl numbers are 32 bits"),
                n - i,
                0,
            )
        }));
        prog.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
        prog.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO));
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
        let f = File::open("/dev/null").unwrap();
        let (tod, other) = with_ioctls_accepted(&[KVM_GET_DEVICE_ATTR], || {
            (
                get_tod_ext(&f).map_err(|e| e.raw_os_error()),
                get_regs(&f).is_err(),
            )
        });
        // Nothing was written back: the zeroed struct.
        assert_eq!(tod.map(|t| (t.epoch_idx, t.tod)), Ok((0, 0)));
        assert!(other, "KVM_GET_REGS was not listed");
        // Other threads never had the filter.
        assert_eq!(
            get_tod_ext(&f).unwrap_err().raw_os_error(),
            Some(libc::ENOTTY)
        );
    }

    #[test]
    fn numbers_match_the_s390x_header() {
        // Values printed by s390x-linux-gnu-gcc from the 6.1 header; the
        // live comparison is tests/uapi.rs.
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(KVM_GET_REGS, 0x8080_ae81);
        assert_eq!(KVM_SET_SREGS, 0x40c0_ae84);
        assert_eq!(KVM_S390_SET_INITIAL_PSW, 0x4010_ae96);
        assert_eq!(KVM_S390_IRQ, 0x4048_aeb4);
        assert_eq!(KVM_CREATE_DEVICE, 0xc00c_aee0);
        assert_eq!(ioc_size(KVM_SET_FPU), 136);
        // The encoders at run time (the constants are built at compile time).
        let nr = std::hint::black_box(0x96);
        assert_eq!(ioc(IOC_WRITE, KVMIO, nr, 16), KVM_S390_SET_INITIAL_PSW);
        assert_eq!(io(std::hint::black_box(0x80)), KVM_RUN);
        assert_eq!(ior(0x81, std::hint::black_box(128)), KVM_GET_REGS);
        assert_eq!(iow(0x82, std::hint::black_box(128)), KVM_SET_REGS);
        assert_eq!(iowr(0xe0, std::hint::black_box(12)), KVM_CREATE_DEVICE);
        assert_eq!(one_reg_size(KVM_REG_S390_GBEA), 8);
        // The dirty-log ioctls: the generic encoding, as on x86.
        assert_eq!(KVM_GET_DIRTY_LOG, 0x4010_ae42);
        assert_eq!(KVM_CLEAR_DIRTY_LOG, 0xc018_aec0);
        assert_eq!(KVM_RESET_DIRTY_RINGS, 0xaec7);
        assert_eq!(ioctl_numbers().len(), 31);
        assert_eq!(KVM_GET_DEVICE_ATTR, 0x4018_aee2);
        assert_eq!(KVM_HAS_DEVICE_ATTR, 0x4018_aee3);
    }

    #[test]
    fn invalid_fds_fail_with_errors_not_panics() {
        // A file that is not a KVM fd: every ioctl fails with ENOTTY.
        let f = File::open("/dev/null").unwrap();
        assert!(get_api_version(&f).is_err());
        assert!(check_extension(&f, 1).is_err());
        assert!(get_vcpu_mmap_size(&f).is_err());
        assert!(create_vm(&f, 0).is_err());
        assert!(create_vcpu(&f, 0).is_err());
        assert!(run(&f).is_err());
        assert!(get_regs(&f).is_err());
        assert!(set_regs(&f, &kvm_regs::default()).is_err());
        assert!(get_sregs(&f).is_err());
        assert!(set_sregs(&f, &kvm_sregs::default()).is_err());
        assert!(get_fpu(&f).is_err());
        assert!(set_fpu(&f, &kvm_fpu::default()).is_err());
        assert!(set_initial_psw(&f, &kvm_s390_psw::default()).is_err());
        assert!(s390_irq(&f, &kvm_s390_irq::default()).is_err());
        assert!(create_device(&f, KVM_DEV_TYPE_FLIC).is_err());
        assert!(irqfd(&f, &kvm_irqfd::default()).is_err());
        assert!(enable_cap(&f, &kvm_enable_cap::default()).is_err());
        assert!(set_guest_debug(&f, 0, &[]).is_err());
        assert!(set_guest_debug(&f, 1, &[kvm_hw_breakpoint::default()]).is_err());
        for req in [
            KVM_S390_INITIAL_RESET,
            KVM_S390_NORMAL_RESET,
            KVM_S390_CLEAR_RESET,
        ] {
            assert!(vcpu_reset(&f, req).is_err());
        }
        // Not a reset: refused before reaching the kernel.
        let e = vcpu_reset(&f, KVM_RUN).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        let mut buf = [0u8; 8];
        assert!(get_one_reg(&f, KVM_REG_S390_CPU_TIMER, &mut buf).is_err());
        assert!(set_one_reg(&f, KVM_REG_S390_CPU_TIMER, &buf).is_err());
        // Too short for the register: refused before the kernel.
        let e = get_one_reg(&f, KVM_REG_S390_CPU_TIMER, &mut buf[..4]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        assert!(set_one_reg(&f, KVM_REG_S390_CPU_TIMER, &buf[..4]).is_err());
        assert!(flic_clear_irqs(&f).is_err());
        // Snapshots: the TOD clock, the CPU model, the FLIC's interrupts.
        assert!(!has_device_attr(&f, KVM_S390_VM_TOD, KVM_S390_VM_TOD_EXT));
        assert!(get_tod_ext(&f).is_err());
        assert!(get_tod_high(&f).is_err());
        assert!(get_tod_low(&f).is_err());
        assert!(set_tod_ext(&f, &kvm_s390_vm_tod_clock::default()).is_err());
        assert!(set_tod_low(&f, 0).is_err());
        assert!(get_cpu_processor(&f).is_err());
        assert!(get_cpu_processor_feat(&f).is_err());
        let mut irqs = [0u8; 72];
        assert_eq!(
            flic_get_all_irqs(&f, &mut irqs).unwrap_err().raw_os_error(),
            Some(libc::ENOTTY)
        );
        assert_eq!(
            flic_enqueue_records(&f, &irqs).unwrap_err().raw_os_error(),
            Some(libc::ENOTTY)
        );
        // Not whole records: refused before the kernel.
        assert_eq!(
            flic_enqueue_records(&f, &irqs[..70])
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EINVAL)
        );
        assert!(flic_enqueue(&f, &kvm_s390_irq::default()).is_err());
        assert!(flic_register_adapter(&f, &kvm_s390_io_adapter::default()).is_err());
        // The dirty log: a short CLEAR bitmap is refused before the kernel.
        let e = clear_dirty_log(&f, 0, 0, 65, &[0]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        let e = clear_dirty_log(&f, 0, 0, 65, &[0, 0]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
        assert_eq!((bitmap_words(0), bitmap_words(64)), (0, 1));
        assert_eq!(bitmap_words(u32::MAX), 1 << 26);
        let mut bitmap = [0u64; 2];
        // SAFETY: /dev/null is not a VM fd: the kernel answers ENOTTY and
        // writes nothing.
        let e = unsafe { get_dirty_log(&f, 0, &mut bitmap) }.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTTY));
        assert!(reset_dirty_rings(&f).is_err());
        let page = host_page_size();
        assert!(page.is_power_of_two() && page >= 4096, "{page}");
        // SAFETY: as above; the region names no mapping the kernel uses.
        let r = unsafe { set_user_memory_region(&f, &kvm_userspace_memory_region::default()) };
        assert!(r.is_err());
        // A routing table shorter than its `nr` is refused before the kernel.
        let mut table = vec![0u8; 8];
        table[..4].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(
            set_gsi_routing(&f, &table).unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
        assert!(set_gsi_routing(&f, &[]).is_err());
        assert!(set_gsi_routing(&f, &[0u8; 8]).is_err());
        // /dev/null cannot be mapped shared read-write as a kvm_run area.
        assert!(RunMapping::new(&f, 4096).is_err());
    }

    #[test]
    fn size_mismatch_is_refused() {
        let f = File::open("/dev/null").unwrap();
        let mut x = 0u32;
        // SAFETY: refused by the size check before any ioctl is issued.
        let e = unsafe { ioctl_mut(&f, KVM_GET_REGS, &mut x) }.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn run_mapping_reads_and_writes_in_range() {
        // An anonymous shared mapping stands in for a vCPU fd's.
        let f = tempfile();
        f.set_len(4096).unwrap();
        let mut m = RunMapping::new(&f, 4096).unwrap();
        assert_eq!(m.as_mut_slice().len(), 4096);
        assert!(m.write(40, &0x1234u64.to_be_bytes()));
        let mut b = [0u8; 8];
        assert!(m.read(40, &mut b));
        assert_eq!(u64::from_be_bytes(b), 0x1234);
        assert_eq!(m.as_mut_slice()[47], 0x34);
        assert!(!m.read(4090, &mut b));
        assert!(!m.write(usize::MAX, &b));
    }

    fn tempfile() -> File {
        vmm_sys_util::tempfile::TempFile::new().unwrap().into_file()
    }
}
