//! The UAPI constants this crate uses, each with its kernel name in a table
//! so that `tests/uapi.rs` can compare it with the header.

use kvmkit_core::Capability;

macro_rules! named {
    ($(#[$doc:meta])* $table:ident: $ty:ty { $($(#[$cdoc:meta])* $name:ident = $value:expr,)* }) => {
        $(
            $(#[$cdoc])*
            #[doc = concat!("`", stringify!($name), "`")]
            pub const $name: $ty = $value;
        )*
        $(#[$doc])*
        pub const $table: &[(&str, $ty)] = &[$((stringify!($name), $name)),*];
    };
}

named! {
    /// Every `KVM_EXIT_*` value the decoder knows, by the kernel's name.
    EXIT_REASONS: u32 {
        KVM_EXIT_UNKNOWN = 0,
        KVM_EXIT_DEBUG = 4,
        KVM_EXIT_HLT = 5,
        KVM_EXIT_MMIO = 6,
        KVM_EXIT_IRQ_WINDOW_OPEN = 7,
        KVM_EXIT_SHUTDOWN = 8,
        KVM_EXIT_FAIL_ENTRY = 9,
        KVM_EXIT_INTR = 10,
        KVM_EXIT_DCR = 15,
        KVM_EXIT_NMI = 16,
        KVM_EXIT_INTERNAL_ERROR = 17,
        KVM_EXIT_OSI = 18,
        KVM_EXIT_PAPR_HCALL = 19,
        KVM_EXIT_WATCHDOG = 21,
        KVM_EXIT_EPR = 23,
        KVM_EXIT_SYSTEM_EVENT = 24,
        KVM_EXIT_DIRTY_RING_FULL = 31,
    }
}

named! {
    /// ONE_REG id encoding and the PowerPC ONE_REG ids this crate names
    /// (FPRs, VRs and VSRs are computed by [`crate::fpr`], [`crate::vr`],
    /// [`crate::vsr`]).
    ONE_REG_IDS: u64 {
        KVM_REG_PPC = 0x1000_0000_0000_0000,
        KVM_REG_SIZE_SHIFT = 52,
        KVM_REG_SIZE_MASK = 0x00f0_0000_0000_0000,
        KVM_REG_SIZE_U32 = 0x0020_0000_0000_0000,
        KVM_REG_SIZE_U64 = 0x0030_0000_0000_0000,
        KVM_REG_SIZE_U128 = 0x0040_0000_0000_0000,
        KVM_REG_PPC_HIOR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0x1,
        KVM_REG_PPC_DABR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0x8,
        KVM_REG_PPC_DSCR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0x9,
        KVM_REG_PPC_PURR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xa,
        KVM_REG_PPC_SPURR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xb,
        KVM_REG_PPC_DAR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xc,
        KVM_REG_PPC_DSISR = KVM_REG_PPC | KVM_REG_SIZE_U32 | 0xd,
        KVM_REG_PPC_AMR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xe,
        KVM_REG_PPC_UAMOR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xf,
        KVM_REG_PPC_MMCR0 = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0x10,
        KVM_REG_PPC_MMCR1 = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0x11,
        KVM_REG_PPC_MMCRA = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0x12,
        KVM_REG_PPC_SIAR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0x15,
        KVM_REG_PPC_SDAR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0x16,
        KVM_REG_PPC_PMC1 = KVM_REG_PPC | KVM_REG_SIZE_U32 | 0x18,
        KVM_REG_PPC_PMC6 = KVM_REG_PPC | KVM_REG_SIZE_U32 | 0x1d,
        KVM_REG_PPC_FPR0 = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0x20,
        KVM_REG_PPC_FPR31 = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0x3f,
        KVM_REG_PPC_VR0 = KVM_REG_PPC | KVM_REG_SIZE_U128 | 0x40,
        KVM_REG_PPC_VR31 = KVM_REG_PPC | KVM_REG_SIZE_U128 | 0x5f,
        KVM_REG_PPC_VSR0 = KVM_REG_PPC | KVM_REG_SIZE_U128 | 0x60,
        KVM_REG_PPC_VSR31 = KVM_REG_PPC | KVM_REG_SIZE_U128 | 0x7f,
        KVM_REG_PPC_FPSCR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0x80,
        KVM_REG_PPC_VSCR = KVM_REG_PPC | KVM_REG_SIZE_U32 | 0x81,
        KVM_REG_PPC_DEBUG_INST = KVM_REG_PPC | KVM_REG_SIZE_U32 | 0x8b,
        KVM_REG_PPC_TB_OFFSET = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0x9c,
        KVM_REG_PPC_IAMR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0x9f,
        KVM_REG_PPC_FSCR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xa3,
        KVM_REG_PPC_PSPB = KVM_REG_PPC | KVM_REG_SIZE_U32 | 0xa4,
        KVM_REG_PPC_EBBHR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xa5,
        KVM_REG_PPC_EBBRR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xa6,
        KVM_REG_PPC_BESCR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xa7,
        KVM_REG_PPC_TAR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xa8,
        KVM_REG_PPC_DAWR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xaa,
        KVM_REG_PPC_DAWRX = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xab,
        KVM_REG_PPC_CIABR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xac,
        KVM_REG_PPC_VTB = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xae,
        KVM_REG_PPC_PID = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xb2,
        KVM_REG_PPC_VRSAVE = KVM_REG_PPC | KVM_REG_SIZE_U32 | 0xb4,
        KVM_REG_PPC_LPCR_64 = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xb5,
        KVM_REG_PPC_PPR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xb6,
        KVM_REG_PPC_ARCH_COMPAT = KVM_REG_PPC | KVM_REG_SIZE_U32 | 0xb7,
        KVM_REG_PPC_SPRG9 = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xba,
        KVM_REG_PPC_TIDR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xbc,
        KVM_REG_PPC_PSSCR = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xbd,
        KVM_REG_PPC_DEC_EXPIRY = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xbe,
        KVM_REG_PPC_ONLINE = KVM_REG_PPC | KVM_REG_SIZE_U32 | 0xbf,
        KVM_REG_PPC_ICP_STATE = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0x8c,
    }
}

named! {
    /// Other UAPI values this crate uses: API version, VM types, device
    /// types and attributes, interrupt levels, irqfd and guest-debug flags.
    OTHER_CONSTANTS: u64 {
        KVM_API_VERSION = 12,
        KVM_VM_PPC_HV = 1,
        KVM_VM_PPC_PR = 2,
        KVM_DEV_TYPE_XICS = 3,
        KVM_DEV_TYPE_XIVE = 9,
        KVM_DEV_XICS_GRP_SOURCES = 1,
        KVM_DEV_XICS_GRP_CTRL = 2,
        KVM_DEV_XICS_NR_SERVERS = 1,
        KVM_XICS_DESTINATION_SHIFT = 0,
        KVM_XICS_PRIORITY_SHIFT = 32,
        KVM_XICS_DESTINATION_MASK = 0xffff_ffff,
        KVM_XICS_PRIORITY_MASK = 0xff,
        KVM_XICS_LEVEL_SENSITIVE = 1 << 40,
        KVM_XICS_MASKED = 1 << 41,
        KVM_XICS_PENDING = 1 << 42,
        KVM_XICS_PRESENTED = 1 << 43,
        KVM_XICS_QUEUED = 1 << 44,
        KVM_GET_HTAB_BOLTED_ONLY = 1,
        KVM_GET_HTAB_WRITE = 2,
        KVM_DEV_XIVE_GRP_CTRL = 1,
        KVM_DEV_XIVE_RESET = 1,
        KVM_DEV_XIVE_NR_SERVERS = 3,
        KVM_DEV_XIVE_GRP_SOURCE = 2,
        KVM_XIVE_LEVEL_SENSITIVE = 1 << 0,
        KVM_INTERRUPT_SET = 0xffff_ffff,
        KVM_INTERRUPT_UNSET = 0xffff_fffe,
        KVM_INTERRUPT_SET_LEVEL = 0xffff_fffd,
        KVM_IRQFD_FLAG_DEASSIGN = 1 << 0,
        KVM_IRQFD_FLAG_RESAMPLE = 1 << 1,
        KVM_GUESTDBG_ENABLE = 0x1,
        KVM_GUESTDBG_SINGLESTEP = 0x2,
        KVM_GUESTDBG_USE_SW_BP = 0x0001_0000,
        KVM_GUESTDBG_USE_HW_BP = 0x0002_0000,
        KVMPPC_DEBUG_BREAKPOINT = 1 << 1,
        KVMPPC_DEBUG_WATCH_WRITE = 1 << 2,
        KVMPPC_DEBUG_WATCH_READ = 1 << 3,
        KVM_RUN_PPC_NMI_DISP_MASK = 3,
        KVM_RUN_PPC_NMI_DISP_FULLY_RECOV = 1,
        KVM_RUN_PPC_NMI_DISP_LIMITED_RECOV = 2,
        KVM_RUN_PPC_NMI_DISP_NOT_RECOV = 3,
        /// 0 on PowerPC: `asm/kvm.h` does not define it, so `linux/kvm.h`
        /// falls back to 0, which is how the kernel says this architecture
        /// has no dirty ring (`KVM_CAP_DIRTY_LOG_RING` is refused). Not
        /// `kvmkit_core::DIRTY_LOG_PAGE_OFFSET` (64, x86's value).
        KVM_DIRTY_LOG_PAGE_OFFSET = 0,
    }
}

/// `KVM_CAP_PPC_OSI`
pub const CAP_PPC_OSI: Capability = Capability::new(52, "KVM_CAP_PPC_OSI");
/// `KVM_CAP_PPC_GET_PVINFO`
pub const CAP_PPC_GET_PVINFO: Capability = Capability::new(57, "KVM_CAP_PPC_GET_PVINFO");
/// `KVM_CAP_PPC_IRQ_LEVEL`
pub const CAP_PPC_IRQ_LEVEL: Capability = Capability::new(58, "KVM_CAP_PPC_IRQ_LEVEL");
/// `KVM_CAP_PPC_SMT`
pub const CAP_PPC_SMT: Capability = Capability::new(64, "KVM_CAP_PPC_SMT");
/// `KVM_CAP_PPC_EPR`
pub const CAP_PPC_EPR: Capability = Capability::new(86, "KVM_CAP_PPC_EPR");
/// `KVM_CAP_PPC_ALLOC_HTAB`
pub const CAP_PPC_ALLOC_HTAB: Capability = Capability::new(80, "KVM_CAP_PPC_ALLOC_HTAB");
/// `KVM_CAP_PPC_HTAB_FD`: `KVM_PPC_GET_HTAB_FD`. Checked on a VM fd it is
/// 1 for a KVM-HV VM and 0 for a KVM-PR one.
pub const CAP_PPC_HTAB_FD: Capability = Capability::new(84, "KVM_CAP_PPC_HTAB_FD");
/// `KVM_CAP_PPC_RTAS`
pub const CAP_PPC_RTAS: Capability = Capability::new(91, "KVM_CAP_PPC_RTAS");
/// `KVM_CAP_PPC_ENABLE_HCALL`
pub const CAP_PPC_ENABLE_HCALL: Capability = Capability::new(104, "KVM_CAP_PPC_ENABLE_HCALL");
/// `KVM_CAP_PPC_FWNMI`
pub const CAP_PPC_FWNMI: Capability = Capability::new(146, "KVM_CAP_PPC_FWNMI");

/// Every `KVM_CAP_*` this crate uses or names: the generic ones from
/// `kvmkit_core::Capability` and the PowerPC-only ones above.
pub const CAPABILITIES: &[Capability] = &[
    Capability::USER_MEMORY,
    Capability::NR_VCPUS,
    Capability::MAX_VCPUS,
    Capability::MAX_VCPU_ID,
    Capability::SET_GUEST_DEBUG,
    Capability::IRQFD,
    Capability::IRQFD_RESAMPLE,
    Capability::ENABLE_CAP,
    Capability::ENABLE_CAP_VM,
    Capability::CHECK_EXTENSION_VM,
    Capability::PPC_PAPR,
    Capability::ONE_REG,
    Capability::DEVICE_CTRL,
    Capability::IRQ_XICS,
    Capability::PPC_IRQ_XIVE,
    Capability::IMMEDIATE_EXIT,
    Capability::MANUAL_DIRTY_LOG_PROTECT2,
    Capability::DIRTY_LOG_RING,
    Capability::DIRTY_LOG_RING_ACQ_REL,
    CAP_PPC_OSI,
    CAP_PPC_GET_PVINFO,
    CAP_PPC_IRQ_LEVEL,
    CAP_PPC_SMT,
    CAP_PPC_EPR,
    CAP_PPC_ALLOC_HTAB,
    CAP_PPC_HTAB_FD,
    CAP_PPC_RTAS,
    CAP_PPC_ENABLE_HCALL,
    CAP_PPC_FWNMI,
];
