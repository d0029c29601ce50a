//! The generic `linux/kvm.h` argument structs this crate passes, as laid
//! out on ppc64.

use std::mem::{align_of, size_of};

/// `struct kvm_userspace_memory_region` (`KVM_SET_USER_MEMORY_REGION`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_userspace_memory_region {
    pub slot: u32,
    pub flags: u32,
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    pub userspace_addr: u64,
}
const _: () = assert!(size_of::<kvm_userspace_memory_region>() == 32);

/// `struct kvm_one_reg` (`KVM_GET_ONE_REG` / `KVM_SET_ONE_REG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_one_reg {
    pub id: u64,
    pub addr: u64,
}
const _: () = assert!(size_of::<kvm_one_reg>() == 16);

/// `struct kvm_enable_cap` (`KVM_ENABLE_CAP`, on a VM or a vCPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct kvm_enable_cap {
    pub cap: u32,
    pub flags: u32,
    pub args: [u64; 4],
    pub pad: [u8; 64],
}
const _: () = assert!(size_of::<kvm_enable_cap>() == 104 && align_of::<kvm_enable_cap>() == 8);

impl kvm_enable_cap {
    /// `cap` with the given arguments, flags and padding zero.
    pub const fn new(cap: u32, args: [u64; 4]) -> Self {
        kvm_enable_cap {
            cap,
            flags: 0,
            args,
            pad: [0; 64],
        }
    }
}

impl Default for kvm_enable_cap {
    fn default() -> Self {
        Self::new(0, [0; 4])
    }
}

/// `struct kvm_create_device` (`KVM_CREATE_DEVICE`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_create_device {
    pub type_: u32,
    pub fd: u32,
    pub flags: u32,
}
const _: () = assert!(size_of::<kvm_create_device>() == 12);

/// `struct kvm_device_attr` (`KVM_SET_DEVICE_ATTR` and friends).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_device_attr {
    pub flags: u32,
    pub group: u32,
    pub attr: u64,
    pub addr: u64,
}
const _: () = assert!(size_of::<kvm_device_attr>() == 24);

/// `struct kvm_irq_level` (`KVM_IRQ_LINE`); `irq` shares its word with the
/// `status` of `KVM_IRQ_LINE_STATUS` (an anonymous union in C).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_irq_level {
    pub irq: u32,
    pub level: u32,
}
const _: () = assert!(size_of::<kvm_irq_level>() == 8);

/// `struct kvm_irqfd` (`KVM_IRQFD`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_irqfd {
    pub fd: u32,
    pub gsi: u32,
    pub flags: u32,
    pub resamplefd: u32,
    pub pad: [u8; 16],
}
const _: () = assert!(size_of::<kvm_irqfd>() == 32);

/// `struct kvm_rtas_token_args` of `asm/kvm.h` (`KVM_PPC_RTAS_DEFINE_TOKEN`):
/// a NUL-terminated RTAS service name and the token the guest calls it by.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct kvm_rtas_token_args {
    pub name: [u8; 120],
    pub token: u64,
}
const _: () = assert!(size_of::<kvm_rtas_token_args>() == 128);

/// `struct kvm_dirty_log` (`KVM_GET_DIRTY_LOG`): `dirty_bitmap` is the
/// user address of the bitmap (in C a union of `void *` and `__u64
/// padding2`, 8 bytes on ppc64 either way).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_dirty_log {
    pub slot: u32,
    pub padding1: u32,
    pub dirty_bitmap: u64,
}
const _: () = assert!(size_of::<kvm_dirty_log>() == 16 && align_of::<kvm_dirty_log>() == 8);

/// `struct kvm_clear_dirty_log` (`KVM_CLEAR_DIRTY_LOG`): `dirty_bitmap` as
/// in [`kvm_dirty_log`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_clear_dirty_log {
    pub slot: u32,
    pub num_pages: u32,
    pub first_page: u64,
    pub dirty_bitmap: u64,
}
const _: () =
    assert!(size_of::<kvm_clear_dirty_log>() == 24 && align_of::<kvm_clear_dirty_log>() == 8);

/// `struct kvm_get_htab_fd` of `asm/kvm.h` (`KVM_PPC_GET_HTAB_FD`): opens a
/// stream over the KVM-HV guest hash page table, for reading or (with
/// `KVM_GET_HTAB_WRITE`) writing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_get_htab_fd {
    pub flags: u64,
    pub start_index: u64,
    pub reserved: [u64; 2],
}
const _: () = assert!(size_of::<kvm_get_htab_fd>() == 32 && align_of::<kvm_get_htab_fd>() == 8);

/// `struct kvm_get_htab_header` of `asm/kvm.h`: one record of the hash page
/// table stream, followed by `n_valid` HPTEs of 16 bytes (then `n_invalid`
/// invalid HPTEs that the stream does not spell out).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_get_htab_header {
    pub index: u32,
    pub n_valid: u16,
    pub n_invalid: u16,
}
const _: () = assert!(size_of::<kvm_get_htab_header>() == 8);
