//! PowerPC's own `_IOC` encoding and the ioctl numbers this crate issues.
//!
//! PowerPC's `asm/ioctl.h` has 13 size bits and 3 direction bits, with
//! `_IOC_NONE` = 1, `_IOC_READ` = 2 and `_IOC_WRITE` = 4 at bit 29: `KVM_RUN`
//! is `0x2000ae80` here, where x86 and s390x have `0xae80`. The numbers are
//! computed from the struct sizes of [`crate::uapi`] and compared with the
//! ppc64le header by `tests/uapi.rs`.

use crate::uapi::{
    kvm_clear_dirty_log, kvm_create_device, kvm_device_attr, kvm_dirty_log, kvm_enable_cap,
    kvm_fpu, kvm_get_htab_fd, kvm_guest_debug, kvm_irq_level, kvm_irqfd, kvm_one_reg, kvm_regs,
    kvm_rtas_token_args, kvm_sregs, kvm_userspace_memory_region,
};
use std::mem::size_of;

/// `KVMIO`, the KVM ioctl type byte.
pub const KVMIO: u32 = 0xAE;
/// PowerPC's `_IOC_NONE`.
pub const IOC_NONE: u32 = 1;
/// PowerPC's `_IOC_READ`.
pub const IOC_READ: u32 = 2;
/// PowerPC's `_IOC_WRITE`.
pub const IOC_WRITE: u32 = 4;

const IOC_SIZE_BITS: u32 = 13;
const IOC_DIR_SHIFT: u32 = 29;
const IOC_SIZE_SHIFT: u32 = 16;

/// PowerPC's `_IOC(dir, type, nr, size)`.
///
/// Fails to compile (in `const` use) when `size` does not fit the 13 size
/// bits.
///
/// ```
/// use kvmkit_arch_powerpc::{ioc, IOC_NONE, KVMIO};
/// assert_eq!(ioc(IOC_NONE, KVMIO, 0x80, 0), 0x2000_ae80); // KVM_RUN
/// ```
pub const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    assert!(size < (1 << IOC_SIZE_BITS), "ioctl argument too large");
    // The assert above bounds `size` below 2^13.
    #[allow(clippy::cast_possible_truncation)]
    let size = size as u32;
    (dir << IOC_DIR_SHIFT) | (size << IOC_SIZE_SHIFT) | (ty << 8) | nr
}

const fn io(nr: u32) -> u32 {
    ioc(IOC_NONE, KVMIO, nr, 0)
}
const fn ior<T>(nr: u32) -> u32 {
    ioc(IOC_READ, KVMIO, nr, size_of::<T>())
}
const fn iow<T>(nr: u32) -> u32 {
    ioc(IOC_WRITE, KVMIO, nr, size_of::<T>())
}
const fn iowr<T>(nr: u32) -> u32 {
    ioc(IOC_READ | IOC_WRITE, KVMIO, nr, size_of::<T>())
}

macro_rules! ioctls {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        $(
            $(#[$doc])*
            pub const $name: u32 = $value;
        )*
        /// Every ioctl number this crate issues, by the kernel's macro name,
        /// in PowerPC's encoding.
        ///
        /// ```
        /// let n = kvmkit_arch_powerpc::ioctl_numbers();
        /// assert!(n.contains(&("KVM_RUN", 0x2000_ae80)));
        /// ```
        pub fn ioctl_numbers() -> Vec<(&'static str, u32)> {
            vec![$((stringify!($name), $name)),*]
        }
    };
}

ioctls! {
    /// `_IO(KVMIO, 0x00)`
    KVM_GET_API_VERSION = io(0x00);
    /// `_IO(KVMIO, 0x01)`: the argument is the VM type (`KVM_VM_PPC_HV`, `KVM_VM_PPC_PR`).
    KVM_CREATE_VM = io(0x01);
    /// `_IO(KVMIO, 0x03)`
    KVM_CHECK_EXTENSION = io(0x03);
    /// `_IO(KVMIO, 0x04)`
    KVM_GET_VCPU_MMAP_SIZE = io(0x04);
    /// `_IO(KVMIO, 0x41)`
    KVM_CREATE_VCPU = io(0x41);
    /// `_IOW(KVMIO, 0x42, struct kvm_dirty_log)`: the kernel reads the
    /// struct and writes the slot's bitmap through its pointer.
    KVM_GET_DIRTY_LOG = iow::<kvm_dirty_log>(0x42);
    /// `_IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)`
    KVM_SET_USER_MEMORY_REGION = iow::<kvm_userspace_memory_region>(0x46);
    /// `_IOW(KVMIO, 0x61, struct kvm_irq_level)`
    KVM_IRQ_LINE = iow::<kvm_irq_level>(0x61);
    /// `_IOW(KVMIO, 0x76, struct kvm_irqfd)`
    KVM_IRQFD = iow::<kvm_irqfd>(0x76);
    /// `_IO(KVMIO, 0x80)`
    KVM_RUN = io(0x80);
    /// `_IOR(KVMIO, 0x81, struct kvm_regs)`
    KVM_GET_REGS = ior::<kvm_regs>(0x81);
    /// `_IOW(KVMIO, 0x82, struct kvm_regs)`
    KVM_SET_REGS = iow::<kvm_regs>(0x82);
    /// `_IOR(KVMIO, 0x83, struct kvm_sregs)`
    KVM_GET_SREGS = ior::<kvm_sregs>(0x83);
    /// `_IOW(KVMIO, 0x84, struct kvm_sregs)`
    KVM_SET_SREGS = iow::<kvm_sregs>(0x84);
    /// `_IOR(KVMIO, 0x8c, struct kvm_fpu)`: not implemented by PowerPC's KVM
    /// (`ENOTSUPP`); named for completeness, FP state goes through ONE_REG.
    KVM_GET_FPU = ior::<kvm_fpu>(0x8c);
    /// `_IOW(KVMIO, 0x8d, struct kvm_fpu)`: see `KVM_GET_FPU`.
    KVM_SET_FPU = iow::<kvm_fpu>(0x8d);
    /// `_IOW(KVMIO, 0x9b, struct kvm_guest_debug)`
    KVM_SET_GUEST_DEBUG = iow::<kvm_guest_debug>(0x9b);
    /// `_IOW(KVMIO, 0xa3, struct kvm_enable_cap)`
    KVM_ENABLE_CAP = iow::<kvm_enable_cap>(0xa3);
    /// `_IOWR(KVMIO, 0xa7, __u32)`: allocate (or reset) the guest hash page table.
    KVM_PPC_ALLOCATE_HTAB = iowr::<u32>(0xa7);
    /// `_IOW(KVMIO, 0xaa, struct kvm_get_htab_fd)`: a stream over the
    /// KVM-HV guest hash page table (a VM ioctl; returns a new fd).
    KVM_PPC_GET_HTAB_FD = iow::<kvm_get_htab_fd>(0xaa);
    /// `_IOW(KVMIO, 0xac, struct kvm_rtas_token_args)` (a VM ioctl; the vCPU
    /// ioctl `KVM_SET_ONE_REG` shares its `nr` but not its size).
    KVM_PPC_RTAS_DEFINE_TOKEN = iow::<kvm_rtas_token_args>(0xac);
    /// `_IOW(KVMIO, 0xab, struct kvm_one_reg)`
    KVM_GET_ONE_REG = iow::<kvm_one_reg>(0xab);
    /// `_IOW(KVMIO, 0xac, struct kvm_one_reg)`
    KVM_SET_ONE_REG = iow::<kvm_one_reg>(0xac);
    /// `_IOWR(KVMIO, 0xc0, struct kvm_clear_dirty_log)`: refused by
    /// PowerPC's KVM (`ENOTTY`, no `KVM_GENERIC_DIRTYLOG_READ_PROTECT`).
    KVM_CLEAR_DIRTY_LOG = iowr::<kvm_clear_dirty_log>(0xc0);
    /// `_IO(KVMIO, 0xc7)`: refused by PowerPC's KVM (`EINVAL`: no dirty
    /// ring can be enabled).
    KVM_RESET_DIRTY_RINGS = io(0xc7);
    /// `_IOWR(KVMIO, 0xe0, struct kvm_create_device)`
    KVM_CREATE_DEVICE = iowr::<kvm_create_device>(0xe0);
    /// `_IOW(KVMIO, 0xe1, struct kvm_device_attr)`
    KVM_SET_DEVICE_ATTR = iow::<kvm_device_attr>(0xe1);
    /// `_IOW(KVMIO, 0xe2, struct kvm_device_attr)`
    KVM_GET_DEVICE_ATTR = iow::<kvm_device_attr>(0xe2);
    /// `_IOW(KVMIO, 0xe3, struct kvm_device_attr)`
    KVM_HAS_DEVICE_ATTR = iow::<kvm_device_attr>(0xe3);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powerpc_encoding_not_the_hosts() {
        assert_eq!(KVM_RUN, 0x2000_ae80);
        assert_eq!(KVM_RUN, 536_915_584);
        // _IOR(KVMIO, 0x81, 392 bytes): READ=2 at bit 29.
        assert_eq!(KVM_GET_REGS, 0x4188_ae81);
        // _IOW(KVMIO, 0xab, 16 bytes): WRITE=4 at bit 29.
        assert_eq!(KVM_GET_ONE_REG, 0x8010_aeab);
        assert_eq!(KVM_CREATE_DEVICE, 0xc00c_aee0);
        // The dirty-log ioctls: x86 and s390x have 0x4010ae42, 0xc018aec0
        // and 0xaec7.
        assert_eq!(KVM_GET_DIRTY_LOG, 0x8010_ae42);
        assert_eq!(KVM_CLEAR_DIRTY_LOG, 0xc018_aec0);
        assert_eq!(KVM_RESET_DIRTY_RINGS, 0x2000_aec7);
        let n = ioctl_numbers();
        assert_eq!(n.len(), 29);
        assert_eq!(KVM_PPC_GET_HTAB_FD, 0x8020_aeaa);
        let mut seen = std::collections::HashSet::new();
        assert!(n.iter().all(|(_, v)| seen.insert(*v)), "numbers are unique");
    }

    /// The encoders evaluated at run time (the constants above are
    /// evaluated by the compiler) give the numbers of the ppc64le
    /// `linux/kvm.h`, as `powerpc64le-linux-gnu-gcc` computes them.
    #[test]
    fn encoders_at_run_time_give_the_header_numbers() {
        use std::hint::black_box;
        assert_eq!(io(black_box(0x80)), 0x2000_ae80); // KVM_RUN
        assert_eq!(io(black_box(0x01)), 0x2000_ae01); // KVM_CREATE_VM
        assert_eq!(iowr::<u32>(black_box(0xa7)), 0xc004_aea7); // KVM_PPC_ALLOCATE_HTAB
        assert_eq!(iow::<kvm_get_htab_fd>(black_box(0xaa)), 0x8020_aeaa);
        assert_eq!(iow::<kvm_device_attr>(black_box(0xe2)), 0x8018_aee2);
        assert_eq!(iow::<kvm_regs>(black_box(0x82)), 0x8188_ae82); // KVM_SET_REGS
        assert_eq!(ior::<kvm_regs>(black_box(0x81)), 0x4188_ae81); // KVM_GET_REGS

        // KVM_SET_ONE_REG and KVM_PPC_RTAS_DEFINE_TOKEN share nr 0xac and
        // differ only in the size field.
        assert_eq!(iow::<kvm_one_reg>(black_box(0xac)), 0x8010_aeac);
        assert_eq!(iow::<kvm_rtas_token_args>(black_box(0xac)), 0x8080_aeac);
    }

    #[test]
    fn ioc_places_each_field_in_powerpc_bits() {
        // The largest size the 13 size bits hold, and every direction.
        let n = ioc(
            std::hint::black_box(IOC_READ | IOC_WRITE),
            KVMIO,
            0xff,
            0x1fff,
        );
        assert_eq!(n >> IOC_DIR_SHIFT, IOC_READ | IOC_WRITE);
        assert_eq!((n >> IOC_SIZE_SHIFT) & 0x1fff, 0x1fff);
        assert_eq!((n >> 8) & 0xff, KVMIO);
        assert_eq!(n & 0xff, 0xff);
        assert_eq!(n, 0xdfff_aeff);
        // Size bits never spill into the direction bits.
        assert_eq!(
            ioc(IOC_NONE, KVMIO, 0, std::hint::black_box(0x1fff)) >> 29,
            1
        );
    }

    #[test]
    #[should_panic(expected = "ioctl argument too large")]
    fn ioc_refuses_a_size_beyond_13_bits() {
        // x86's 14 size bits would take 8 KiB; PowerPC's stop below it.
        let _ = ioc(IOC_WRITE, KVMIO, 0, std::hint::black_box(1 << 13));
    }
}
