//! Interrupt injection on s390x: floating and vCPU interrupts, FLIC adapters,
//! irqfds and adapter routes.

use std::fmt;
use std::mem::{align_of, size_of};

/// `struct kvm_s390_io_info`: an I/O interruption.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_s390_io_info {
    pub subchannel_id: u16,
    pub subchannel_nr: u16,
    pub io_int_parm: u32,
    pub io_int_word: u32,
}

/// `struct kvm_s390_ext_info`: an external interruption's parameters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_s390_ext_info {
    pub ext_params: u32,
    pub pad: u32,
    pub ext_params2: u64,
}

/// `struct kvm_s390_pgm_info`: a program interruption.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_s390_pgm_info {
    pub trans_exc_code: u64,
    pub mon_code: u64,
    pub per_address: u64,
    pub data_exc_code: u32,
    pub code: u16,
    pub mon_class_nr: u16,
    pub per_code: u8,
    pub per_atmid: u8,
    pub exc_access_id: u8,
    pub per_access_id: u8,
    pub op_access_id: u8,
    pub flags: u8,
    pub pad: [u8; 2],
}

/// The union `u` of `struct kvm_s390_irq`, with the members this crate uses.
#[repr(C)]
#[derive(Clone, Copy)]
pub union kvm_s390_irq_u {
    pub io: kvm_s390_io_info,
    pub ext: kvm_s390_ext_info,
    pub pgm: kvm_s390_pgm_info,
    pub reserved: [u8; 64],
}

impl fmt::Debug for kvm_s390_irq_u {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("kvm_s390_irq_u").finish_non_exhaustive()
    }
}

/// `struct kvm_s390_irq` (`KVM_S390_IRQ`, and the records of
/// `KVM_DEV_FLIC_ENQUEUE`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvm_s390_irq {
    pub type_: u64,
    pub u: kvm_s390_irq_u,
}

impl Default for kvm_s390_irq {
    fn default() -> Self {
        kvm_s390_irq {
            type_: 0,
            u: kvm_s390_irq_u { reserved: [0; 64] },
        }
    }
}

/// `struct kvm_s390_io_adapter` (`KVM_DEV_FLIC_ADAPTER_REGISTER`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_s390_io_adapter {
    pub id: u32,
    pub isc: u8,
    pub maskable: u8,
    pub swap: u8,
    pub flags: u8,
}

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

/// `struct kvm_irq_routing_s390_adapter`: where an adapter route sets its
/// indicator and summary bits before injecting the adapter interrupt.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct kvm_irq_routing_s390_adapter {
    pub ind_addr: u64,
    pub summary_addr: u64,
    pub ind_offset: u64,
    pub summary_offset: u32,
    pub adapter_id: u32,
}

/// The union `u` of `struct kvm_irq_routing_entry`, with the s390x member.
#[repr(C)]
#[derive(Clone, Copy)]
pub union kvm_irq_routing_entry_u {
    pub adapter: kvm_irq_routing_s390_adapter,
    pub pad: [u32; 8],
}

impl fmt::Debug for kvm_irq_routing_entry_u {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("kvm_irq_routing_entry_u")
            .finish_non_exhaustive()
    }
}

/// `struct kvm_irq_routing_entry`: one GSI route.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kvm_irq_routing_entry {
    pub gsi: u32,
    pub type_: u32,
    pub flags: u32,
    pub pad: u32,
    pub u: kvm_irq_routing_entry_u,
}

/// `struct kvm_irq_routing`: the header of `KVM_SET_GSI_ROUTING`'s argument,
/// followed in memory by `nr` entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct kvm_irq_routing {
    pub nr: u32,
    pub flags: u32,
    /// The flexible array member.
    pub entries: [kvm_irq_routing_entry; 0],
}

const _: () = assert!(size_of::<kvm_s390_io_info>() == 12);
const _: () = assert!(size_of::<kvm_s390_ext_info>() == 16);
const _: () = assert!(size_of::<kvm_s390_pgm_info>() == 40);
const _: () = assert!(size_of::<kvm_s390_irq>() == 72);
const _: () = assert!(size_of::<kvm_s390_io_adapter>() == 8);
const _: () = assert!(size_of::<kvm_irqfd>() == 32);
const _: () = assert!(size_of::<kvm_irq_routing_s390_adapter>() == 32);
const _: () = assert!(size_of::<kvm_irq_routing_entry>() == 48);
const _: () = assert!(size_of::<kvm_irq_routing>() == 8);
const _: () = assert!(align_of::<kvm_irq_routing>() == 8);
