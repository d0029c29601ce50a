//! The UAPI macros this crate uses, with the kernel's names and values.
//! Ioctl numbers are in `crate::sys`, capabilities in `crate::caps`.

/// `KVM_API_VERSION`.
pub const KVM_API_VERSION: u32 = 12;
/// `KVM_VM_S390_UCONTROL`: the `KVM_CREATE_VM` type of a user-controlled VM.
pub const KVM_VM_S390_UCONTROL: u64 = 1;
/// `SYNC_REGS_SIZE_BYTES`: the size of `kvm_run.s`.
pub const SYNC_REGS_SIZE_BYTES: u32 = 2048;

// Exit reasons.
pub const KVM_EXIT_UNKNOWN: u32 = 0;
pub const KVM_EXIT_DEBUG: u32 = 4;
pub const KVM_EXIT_HLT: u32 = 5;
pub const KVM_EXIT_MMIO: u32 = 6;
pub const KVM_EXIT_IRQ_WINDOW_OPEN: u32 = 7;
pub const KVM_EXIT_SHUTDOWN: u32 = 8;
pub const KVM_EXIT_FAIL_ENTRY: u32 = 9;
pub const KVM_EXIT_INTR: u32 = 10;
pub const KVM_EXIT_S390_SIEIC: u32 = 13;
pub const KVM_EXIT_S390_RESET: u32 = 14;
pub const KVM_EXIT_INTERNAL_ERROR: u32 = 17;
pub const KVM_EXIT_S390_UCONTROL: u32 = 20;
pub const KVM_EXIT_S390_TSCH: u32 = 22;
pub const KVM_EXIT_SYSTEM_EVENT: u32 = 24;
pub const KVM_EXIT_S390_STSI: u32 = 25;
pub const KVM_EXIT_DIRTY_RING_FULL: u32 = 31;

/// `KVM_DIRTY_LOG_PAGE_OFFSET`: 0 on s390x. `asm/kvm.h` does not define it,
/// so `linux/kvm.h` falls back to 0, which is how the kernel says this
/// architecture has no dirty ring (`KVM_CAP_DIRTY_LOG_RING` is refused).
/// Not `kvmkit_core::DIRTY_LOG_PAGE_OFFSET` (64, x86's value).
pub const KVM_DIRTY_LOG_PAGE_OFFSET: u64 = 0;

// `kvm_run.s390_reset_flags` (KVM_EXIT_S390_RESET).
pub const KVM_S390_RESET_POR: u64 = 1;
pub const KVM_S390_RESET_CLEAR: u64 = 2;
pub const KVM_S390_RESET_SUBSYSTEM: u64 = 4;
pub const KVM_S390_RESET_CPU_INIT: u64 = 8;
pub const KVM_S390_RESET_IPL: u64 = 16;

// `kvm_run.system_event.type`.
pub const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
pub const KVM_SYSTEM_EVENT_RESET: u32 = 2;
pub const KVM_SYSTEM_EVENT_CRASH: u32 = 3;

// `kvm_run.kvm_valid_regs` / `kvm_dirty_regs` bits.
pub const KVM_SYNC_PREFIX: u64 = 1 << 0;
pub const KVM_SYNC_GPRS: u64 = 1 << 1;
pub const KVM_SYNC_ACRS: u64 = 1 << 2;
pub const KVM_SYNC_CRS: u64 = 1 << 3;
pub const KVM_SYNC_ARCH0: u64 = 1 << 4;
pub const KVM_SYNC_PFAULT: u64 = 1 << 5;
pub const KVM_SYNC_VRS: u64 = 1 << 6;
pub const KVM_SYNC_RICCB: u64 = 1 << 7;
pub const KVM_SYNC_FPRS: u64 = 1 << 8;
pub const KVM_SYNC_GSCB: u64 = 1 << 9;
pub const KVM_SYNC_BPBC: u64 = 1 << 10;
pub const KVM_SYNC_ETOKEN: u64 = 1 << 11;
pub const KVM_SYNC_DIAG318: u64 = 1 << 12;

// ONE_REG ids.
pub const KVM_REG_S390: u64 = 0x5000_0000_0000_0000;
pub const KVM_REG_SIZE_SHIFT: u32 = 52;
pub const KVM_REG_SIZE_MASK: u64 = 0x00f0_0000_0000_0000;
pub const KVM_REG_SIZE_U32: u64 = 0x0020_0000_0000_0000;
pub const KVM_REG_SIZE_U64: u64 = 0x0030_0000_0000_0000;
pub const KVM_REG_S390_TODPR: u64 = KVM_REG_S390 | KVM_REG_SIZE_U32 | 0x1;
/// The vCPU's TOD epoch difference. Not in a vCPU snapshot: restoring the
/// VM's TOD clock (`KVM_S390_VM_TOD`) sets every vCPU's epoch.
pub const KVM_REG_S390_EPOCHDIFF: u64 = KVM_REG_S390 | KVM_REG_SIZE_U64 | 0x2;
pub const KVM_REG_S390_CPU_TIMER: u64 = KVM_REG_S390 | KVM_REG_SIZE_U64 | 0x3;
pub const KVM_REG_S390_CLOCK_COMP: u64 = KVM_REG_S390 | KVM_REG_SIZE_U64 | 0x4;
pub const KVM_REG_S390_PFTOKEN: u64 = KVM_REG_S390 | KVM_REG_SIZE_U64 | 0x5;
pub const KVM_REG_S390_PFCOMPARE: u64 = KVM_REG_S390 | KVM_REG_SIZE_U64 | 0x6;
pub const KVM_REG_S390_PFSELECT: u64 = KVM_REG_S390 | KVM_REG_SIZE_U64 | 0x7;
pub const KVM_REG_S390_PP: u64 = KVM_REG_S390 | KVM_REG_SIZE_U64 | 0x8;
pub const KVM_REG_S390_GBEA: u64 = KVM_REG_S390 | KVM_REG_SIZE_U64 | 0x9;

// Guest debug.
pub const KVM_GUESTDBG_ENABLE: u32 = 0x0000_0001;
pub const KVM_GUESTDBG_SINGLESTEP: u32 = 0x0000_0002;
pub const KVM_GUESTDBG_USE_HW_BP: u32 = 0x0001_0000;
pub const KVM_HW_BP: u8 = 1;
pub const KVM_HW_WP_WRITE: u8 = 2;
pub const KVM_SINGLESTEP: u8 = 4;

// Interrupt types (`kvm_s390_irq.type`).
pub const KVM_S390_PROGRAM_INT: u32 = 0xfffe_0001;
pub const KVM_S390_INT_SERVICE: u32 = 0xffff_2401;
pub const KVM_S390_INT_IO_MIN: u32 = 0x0000_0000;
pub const KVM_S390_INT_IO_MAX: u32 = 0xfffd_ffff;
pub const KVM_S390_INT_IO_AI_MASK: u32 = 0x0400_0000;

// The FLIC device and its attribute groups.
pub const KVM_DEV_TYPE_FLIC: u32 = 6;
pub const KVM_DEV_FLIC_GET_ALL_IRQS: u32 = 1;
pub const KVM_DEV_FLIC_ENQUEUE: u32 = 2;
pub const KVM_DEV_FLIC_CLEAR_IRQS: u32 = 3;
pub const KVM_DEV_FLIC_ADAPTER_REGISTER: u32 = 6;
pub const KVM_S390_FLIC_MAX_BUFFER: u32 = 0x200_0000;

// Irqfds and routes.
pub const KVM_IRQFD_FLAG_DEASSIGN: u32 = 1 << 0;
pub const KVM_IRQ_ROUTING_S390_ADAPTER: u32 = 3;

// VM attributes (`KVM_SET_DEVICE_ATTR` / `KVM_GET_DEVICE_ATTR` on the VM fd).
pub const KVM_S390_VM_TOD: u32 = 1;
pub const KVM_S390_VM_CPU_MODEL: u32 = 3;
pub const KVM_S390_VM_TOD_LOW: u64 = 0;
pub const KVM_S390_VM_TOD_HIGH: u64 = 1;
pub const KVM_S390_VM_TOD_EXT: u64 = 2;
pub const KVM_S390_VM_CPU_PROCESSOR: u64 = 0;
pub const KVM_S390_VM_CPU_PROCESSOR_FEAT: u64 = 2;
pub const KVM_S390_VM_CPU_FEAT_NR_BITS: u32 = 1024;
