//! VM-wide and per-vCPU configuration of the x86_64 backend.

use crate::CpuidPolicy;

/// Which interrupt controller KVM emulates.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum IrqchipMode {
    /// None: the VMM handles interrupts itself; `hlt` exits to userspace.
    /// The right choice for tiny test guests.
    #[default]
    None,
    /// In-kernel PIC, IOAPIC and LAPICs (`KVM_CREATE_IRQCHIP`).
    Kernel,
    /// In-kernel LAPICs only; the IOAPIC (and PIC) are emulated in userspace
    /// (`KVM_CAP_SPLIT_IRQCHIP` with this many IOAPIC routes).
    Split {
        /// Routes reserved for the userspace IOAPIC (24 for one IOAPIC).
        ioapic_pins: u32,
    },
}

/// VM-wide set-up (`Arch::init_vm`).
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// The interrupt controller.
    pub irqchip: IrqchipMode,
    /// Create the in-kernel PIT (i8254); only with `IrqchipMode::Kernel`.
    pub pit: bool,
    /// Guest-physical address of the three pages KVM needs for the TSS
    /// (`KVM_SET_TSS_ADDR`); must not overlap RAM or MMIO.
    pub tss_address: u64,
    /// Guest-physical address of the identity-map page
    /// (`KVM_SET_IDENTITY_MAP_ADDR`), just below the TSS by default.
    pub identity_map_address: u64,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            irqchip: IrqchipMode::None,
            pit: false,
            tss_address: 0xfffb_d000,
            identity_map_address: 0xfffb_c000,
        }
    }
}

/// Per-vCPU initialisation (`Arch::init_vcpu`).
#[derive(Clone, Debug)]
pub struct VcpuConfig {
    /// How to build this vCPU's CPUID from `KVM_GET_SUPPORTED_CPUID`;
    /// `None` leaves KVM's default (an empty CPUID table).
    pub cpuid: Option<CpuidPolicy>,
    /// Write the boot MSRs ([`crate::boot_msr_entries`]).
    pub boot_msrs: bool,
    /// Program the LAPIC's LINT0 as ExtINT and LINT1 as NMI, as firmware
    /// does (needs an in-kernel LAPIC).
    pub lapic_lints: bool,
}

impl Default for VcpuConfig {
    fn default() -> Self {
        VcpuConfig {
            cpuid: Some(CpuidPolicy::default()),
            boot_msrs: true,
            lapic_lints: false,
        }
    }
}
