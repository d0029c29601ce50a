//! Boot data for Linux and PVH guests on a PC-like machine: the memory map
//! ([`layout`] constants and the e820 map), the Linux zero page, the PVH
//! start info, the MP table and the ACPI tables.
//!
//! Every builder is a pure function of its arguments that writes into any
//! `vm_memory::GuestMemory`, checking that the whole table fits before it
//! writes a byte; none needs `/dev/kvm`. linux-loader supplies the zero-page
//! and start-info structs, acpi_tables the ACPI tables and AML.

mod acpi;
mod dsdt;
mod e820;
mod error;
mod layout;
mod linux;
mod mem;
mod mptable;
mod pvh;

pub use acpi::{
    write_acpi_tables, AcpiConfig, MmioDevice, PmRegisters, ResetRegister, SerialPort,
    ACPI_SCI_IRQ, PM1_CNT_SLP_EN, PM1_CNT_SLP_TYP_SHIFT,
};
pub use e820::{e820_map, E820Entry, E820Kind};
pub use error::PlatformError;
pub use layout::*;
pub use linux::{write_linux_boot_params, LinuxBoot};
pub use mptable::{write_mptable, MAX_MP_VCPUS};
pub use pvh::{write_pvh_start_info, PvhBoot};
