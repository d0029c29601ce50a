#![doc = include_str!("../README.md")]

mod arch;
mod arch_io;
mod boot;
mod config;
mod cpuid;
mod debug;
mod dirty;
mod error;
mod exit;
mod facts;
mod host;
mod ioapic;
mod irq;
mod msrs;
mod pio;
mod platform;
mod profile;
mod routing;
mod snapshot;
mod split;
mod state;
mod sys;
mod vcpu_state;
mod vm_state;

pub use arch::{X86System, X86Vcpu, X86Vm, X86_64};
pub use arch_io::{EoiHandler, X86Io};
pub use boot::{BootSetup, GdtLayout, BOOT_GDT_ADDR, BOOT_PAGE_TABLES_ADDR, BOOT_PAGE_TABLES_SIZE};
pub use config::{IrqchipMode, VcpuConfig, VmConfig};
pub use cpuid::{filter_cpuid, CpuidPolicy};
pub use debug::GuestDebugBuilder;
pub use error::{Error, Result};
pub use exit::{decode_exit, IoDirection, X86Exit, EXIT_REASONS};
pub use facts::uapi_facts;
pub use ioapic::{
    Ioapic, IoapicState, IoapicStateError, RedirectionEntry, IOAPIC_MAX_PINS, IOAPIC_VERSION,
    MSI_ADDRESS_BASE,
};
pub use kvmkit_core::CapabilityValue;
pub use msrs::{boot_msr_entries, msr_one_reg_id};
pub use pio::PortIoBus;
pub use platform::{
    e820_map, write_acpi_tables, write_linux_boot_params, write_mptable, write_pvh_start_info,
    AcpiConfig, E820Entry, E820Kind, LinuxBoot, MmioDevice, PlatformError, PmRegisters, PvhBoot,
    ResetRegister, SerialPort, ACPI_END, ACPI_SCI_IRQ, ACPI_START, BIOS_SIZE, BIOS_START,
    BOOT_STACK_TOP, CMDLINE_ADDR, CMDLINE_MAX_SIZE, E820_RESERVED, EBDA_START, HIGH_RAM_START,
    IOAPIC_ADDR, IOAPIC_SIZE, LAPIC_ADDR, LAPIC_SIZE, LOW_RAM_END, MAX_MP_VCPUS, MPTABLE_START,
    PCI_HOLE_SIZE, PCI_HOLE_START, PM1_CNT_SLP_EN, PM1_CNT_SLP_TYP_SHIFT, PVH_INFO_ADDR,
    PVH_INFO_END, PVH_MEMMAP_ADDR, ZERO_PAGE_ADDR,
};
pub use profile::{
    abi_profile, abi_profile_for, CpuidProfile, CpuidRegister, FeatureWord, ProfileMismatch,
    X86AbiProfile, PROFILE_VERSION,
};
pub use routing::{pc_gsi_routes, pc_routing_table, IOAPIC_PINS};
pub use split::SplitIrqchip;
pub use state::{
    IrqchipState, Omission, Omitted, StatePiece, X86VcpuState, X86VmState, STATE_VERSION,
};
pub use sys::{
    ioctl_numbers, KVM_CLEAR_DIRTY_LOG, KVM_GET_DIRTY_LOG, KVM_GET_ONE_REG, KVM_RESET_DIRTY_RINGS,
    KVM_RUN, KVM_SET_ONE_REG,
};
pub use vm_state::{restore_vm_state, restore_vm_state_with, save_vm_state, ClockRestore};

/// kvm-bindings, re-exported for the register types of this crate's `Arch`.
pub use kvm_bindings;
